"""The baseline's principal components: hidden states in, a few whitened dimensions out.

Shapes: N rows (pooled hidden states, one per sequence), D features (the model's hidden size),
K kept components.

Drift methods compare windows of rows in the K-dimensional space, so they cost the same for
any model size and are scored in one unit: a projected baseline has mean 0 and variance 1
along every component (whitened). Whitening is why the `distance` and `mmd` scores can use
fixed constants (see `observe.drift.methods`), and it keeps Evidently's classifier (SGD, which
is sensitive to feature scale) well conditioned whatever the scale of the model's states.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np

from observe.errors import ObserveError

# Components with less than this share of the first one's standard deviation are numerical
# noise (repeated rows, a constant feature); whitening them would blow the noise up.
_RANK_TOLERANCE = 1e-5
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True, eq=False)
class Projection:
    """Centre on the baseline's mean, then project onto its whitened principal axes.

    `components_KD` holds the axes, each divided by the baseline's standard deviation along
    it. Both arrays are float32 and read-only.
    """

    mean_D: np.ndarray
    components_KD: np.ndarray

    def __post_init__(self) -> None:
        for name in ("mean_D", "components_KD"):
            value = np.array(getattr(self, name), dtype=np.float32)
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        mean_D, components_KD = self.mean_D, self.components_KD
        if mean_D.ndim != 1 or components_KD.ndim != 2 or components_KD.shape[0] < 1:
            raise ObserveError(
                f"a projection needs a mean of shape (D,) and components of shape (K, D) with "
                f"K ≥ 1, got {mean_D.shape} and {components_KD.shape}: fit it with "
                "Projection.fit"
            )
        if components_KD.shape[1] != mean_D.shape[0]:
            raise ObserveError(
                f"projection components have {components_KD.shape[1]} features but the mean "
                f"has {mean_D.shape[0]}: fit it with Projection.fit"
            )
        if not (np.isfinite(mean_D).all() and np.isfinite(components_KD).all()):
            raise ObserveError("the projection holds NaN or inf: refit it on finite rows")

    @property
    def dims(self) -> int:
        """K, the number of components rows are projected onto."""
        return int(self.components_KD.shape[0])

    @classmethod
    def fit(cls, rows_ND: np.ndarray, max_dims: int = 64) -> Projection:
        """PCA of the baseline by SVD, keeping K = min(max_dims, N - 1, D) components.

        K is smaller when the baseline spans fewer dimensions (repeated rows): the
        directions it does not vary along carry no information to whiten.

        Fit on one part of the baseline and use the other, projected, as the reference and
        calibration sample: rows a PCA was fitted on come out whiter than any later rows,
        which would then look drifted (see `observe.drift.calibration`).
        """
        if max_dims < 1:
            raise ObserveError(f"max_dims={max_dims} must be at least 1")
        rows = np.asarray(rows_ND, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] < 1:
            raise ObserveError(f"the baseline must be a 2-D array of rows, got shape {rows.shape}")
        if not np.isfinite(rows).all():
            raise ObserveError("the baseline holds NaN or inf: drop those rows before fitting")
        if rows.shape[0] < 2:
            raise ObserveError(
                f"the baseline has {rows.shape[0]} row: a projection needs at least 2"
            )
        mean_D = rows.mean(axis=0)
        _, s_K, vt_KD = np.linalg.svd(rows - mean_D, full_matrices=False)
        keep = min(max_dims, rows.shape[0] - 1, rows.shape[1])
        keep = min(keep, int(np.count_nonzero(s_K > s_K[0] * _RANK_TOLERANCE)))
        if keep == 0:
            raise ObserveError(
                "every baseline row is the same: collect a baseline from varied inputs"
            )
        std_K = s_K[:keep] / np.sqrt(rows.shape[0] - 1)
        return cls(mean_D, vt_KD[:keep] / std_K[:, None])

    def apply(self, rows_ND: np.ndarray) -> np.ndarray:
        """Rows projected to (N, K) float32."""
        rows = np.asarray(rows_ND, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.mean_D.shape[0]:
            raise ObserveError(
                f"rows of shape {rows.shape} do not fit a projection fitted on "
                f"{self.mean_D.shape[0]} features: pass (N, {self.mean_D.shape[0]}) rows of "
                "the same model and layer, or refit the baseline"
            )
        projected_NK: np.ndarray = (rows - self.mean_D) @ self.components_KD.T
        return projected_NK

    def to_bytes(self) -> bytes:
        """An .npz archive of the two arrays (no pickle), for the store."""
        buffer = io.BytesIO()
        np.savez(buffer, mean_D=self.mean_D, components_KD=self.components_KD)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Projection:
        """The projection `to_bytes` wrote."""
        # np.load guesses the format from the first bytes: anything but a zip is not ours.
        if not data.startswith(_ZIP_MAGIC):
            raise ObserveError(
                "these bytes are not a saved drift projection (not an .npz archive): "
                "refit the baseline"
            )
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                return cls(archive["mean_D"], archive["components_KD"])
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
            raise ObserveError(
                f"these bytes are not a saved drift projection ({error}): refit the baseline"
            ) from error
