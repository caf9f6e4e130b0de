"""One window's semantic drift against the baseline: the call the live path makes per layer.

Shapes: N rows in the current window, M in the projected baseline, K dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from observe.drift.config import METHODS
from observe.drift.methods import drift_score, raw_score
from observe.errors import ObserveError


@dataclass(frozen=True)
class DriftScore:
    # One of METHODS.
    method: str
    # In [0, 1]: `drift_score` of `raw`.
    score: float
    # Evidently's value, in the method's own units (ROC AUC, MMD², distance, share).
    raw: float
    # The calibrated score above which the window has drifted, in [0, 1].
    threshold: float

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ObserveError(
                f"unknown drift method {self.method!r}: choose from {', '.join(METHODS)}"
            )
        for name in ("score", "threshold"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ObserveError(f"a drift {name} must be in [0, 1], got {value}")

    @property
    def drifted(self) -> bool:
        return self.score > self.threshold


def score_window(
    method: str,
    current_NK: np.ndarray,
    reference_MK: np.ndarray,
    threshold: float,
    *,
    seed: int = 0,
) -> DriftScore:
    """Score a projected window against the projected baseline with `method`.

    `threshold` is what `calibrate` returned for this method and this window's rows; the
    reference is subsampled to the window's rows with `seed` (see `paired_frames`).
    """
    raw = raw_score(method, current_NK, reference_MK, seed=seed)
    return DriftScore(method, drift_score(method, raw), raw, threshold)
