"""A reference baseline: what a model's traffic looked like when it was fine-tuned.

Per attention layer: a projection to at most 64 dimensions, fitted on a held-out part of
the sample, the rest of the sample projected, and each drift method's threshold calibrated
on same-distribution windows of it: at `window_rows`, and for the methods live drift scores
at every smaller size a live window can have, so that serving never calibrates. Per MoE
layer: the expert distribution.

baseline = Baseline.capture(monitor, model="my-moe")   # at the end of fine-tuning
baseline = baseline.save(store)                         # the model's active baseline
baseline = Baseline.load(store, model="my-moe")         # what live drift compares with
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from observe.drift.calibration import calibrate, window_sizes
from observe.drift.config import METHODS, DriftConfig
from observe.drift.projection import Projection
from observe.errors import ObserveError
from observe.store import baselines as stored

if TYPE_CHECKING:
    from observe.hooks.monitor import Monitor
    from observe.store.writer import Store

# Share of each layer's sample that fits the projection and is never compared with.
PROJECTION_SHARE = 0.25
# Fewer rows than this per layer cannot give a projection (from half of these at least) and a
# reference from which calibration can draw two windows of the methods' fewest rows.
MIN_ROWS = 128


@dataclass(frozen=True)
class HiddenStateBaseline:
    layer: int
    name: str
    projection: Projection
    # The sample's other rows, projected: what windows are compared with.
    reference_NK: np.ndarray
    # Calibrated score threshold per drift method and window rows (`window_sizes`): every
    # method at the baseline's window_rows, the live methods at the smaller sizes too.
    thresholds: Mapping[str, Mapping[int, float]]


@dataclass(frozen=True)
class ExpertBaseline:
    layer: int
    name: str
    # Share of (token, expert) assignments per expert; sums to 1.
    distribution_E: np.ndarray


@dataclass(frozen=True)
class Baseline:
    model: str
    window_rows: int
    hidden_states: tuple[HiddenStateBaseline, ...]
    experts: tuple[ExpertBaseline, ...]
    checkpoint: str | None = None
    domain: str | None = None
    trained_until: datetime | None = None
    run_id: str | None = None
    # Set once stored.
    id: int | None = None

    @classmethod
    def from_samples(
        cls,
        samples: Mapping[str, np.ndarray],
        expert_tokens: Mapping[str, Sequence[int]],
        *,
        model: str,
        window_rows: int,
        methods: Sequence[str] = METHODS,
        live_methods: Sequence[str] = DriftConfig().methods,
        seed: int = 0,
        checkpoint: str | None = None,
        domain: str | None = None,
        trained_until: datetime | None = None,
        run_id: str | None = None,
    ) -> Baseline:
        """A baseline from each attention layer's sample of pooled hidden states (rows ×
        hidden width) and each MoE layer's tokens per expert. `methods` are calibrated at
        `window_rows`; `live_methods`, those live drift will score, at every window size
        too. A live window of a size not calibrated here is calibrated when first met: a
        second of the drift thread's time per size for the classifier."""
        rng = np.random.default_rng(seed)
        fitted = []
        for name, rows_ND in samples.items():
            if len(rows_ND) < MIN_ROWS:
                raise ObserveError(
                    f"layer {name!r} sampled {len(rows_ND)} sequences, fewer than the "
                    f"{MIN_ROWS} a baseline needs: run more steps, or raise the monitor's "
                    "reservoir_size"
                )
            order = rng.permutation(len(rows_ND))
            held_out = max(MIN_ROWS // 2, int(len(rows_ND) * PROJECTION_SHARE))
            projection = Projection.fit(rows_ND[order[:held_out]])
            fitted.append((name, projection, projection.apply(rows_ND[order[held_out:]])))
        # Thresholds are calibrated for windows this size: half the smallest reference at most.
        window_rows = min([window_rows, *(len(ref) // 2 for _, _, ref in fitted)])
        hidden = []
        for layer, (name, projection, reference_NK) in enumerate(fitted):
            every_size = window_sizes(window_rows, len(reference_NK))
            thresholds = {
                m: {
                    rows: calibrate(m, reference_NK, rows, seed=seed)
                    for rows in (every_size if m in live_methods else [window_rows])
                }
                for m in dict.fromkeys([*methods, *live_methods])
            }
            hidden.append(HiddenStateBaseline(layer, name, projection, reference_NK, thresholds))
        experts = []
        for layer, (name, tokens_E) in enumerate(expert_tokens.items()):
            counts_E = np.asarray(tokens_E, dtype=np.float64)
            total = counts_E.sum()
            if total <= 0:
                raise ObserveError(
                    f"MoE layer {name!r} routed no token: a baseline needs traffic through "
                    "every monitored layer"
                )
            experts.append(ExpertBaseline(layer, name, counts_E / total))
        return cls(
            model=model,
            window_rows=window_rows,
            hidden_states=tuple(hidden),
            experts=tuple(experts),
            checkpoint=checkpoint,
            domain=domain,
            trained_until=trained_until,
            run_id=run_id,
        )

    @classmethod
    def capture(
        cls,
        monitor: Monitor,
        *,
        model: str,
        methods: Sequence[str] = METHODS,
        live_methods: Sequence[str] = DriftConfig().methods,
        checkpoint: str | None = None,
        domain: str | None = None,
        trained_until: datetime | None = None,
        run_id: str | None = None,
    ) -> Baseline:
        """A baseline from what `monitor` sampled since it attached (its reservoir); see
        `from_samples` for `methods` and `live_methods`."""
        samples = {name: rows.numpy() for name, rows in monitor.hidden_states().items()}
        routing = monitor.snapshot()
        return cls.from_samples(
            samples,
            {s.name: s.tokens_per_expert for s in routing.layers},
            model=model,
            window_rows=monitor.config.window_sample_size,
            methods=methods,
            live_methods=live_methods,
            seed=monitor.config.seed,
            checkpoint=checkpoint,
            domain=domain,
            trained_until=trained_until,
            run_id=run_id,
        )

    def save(self, store: Store, *, activate: bool = True) -> Baseline:
        """Stores this baseline (the model's active one unless `activate` is False);
        returns it with its id."""
        layers = [
            stored.BaselineLayerData(
                "hidden_states",
                h.layer,
                h.name,
                stored.npz_bytes(
                    mean_D=h.projection.mean_D,
                    components_KD=h.projection.components_KD,
                    reference_NK=h.reference_NK,
                ),
                dict(h.thresholds),
            )
            for h in self.hidden_states
        ] + [
            stored.BaselineLayerData(
                "experts", e.layer, e.name, stored.npz_bytes(distribution_E=e.distribution_E), {}
            )
            for e in self.experts
        ]
        baseline_id = stored.save_baseline(
            store.engine,
            model=self.model,
            checkpoint=self.checkpoint,
            domain=self.domain,
            trained_until=self.trained_until,
            run_id=self.run_id,
            window_rows=self.window_rows,
            layers=layers,
            activate=activate,
        )
        return replace(self, id=baseline_id)

    @classmethod
    def load(
        cls, store: Store, *, baseline_id: int | None = None, model: str | None = None
    ) -> Baseline:
        """Baseline `baseline_id`, or `model`'s active one."""
        info = stored.find_baseline(store.engine, baseline_id=baseline_id, model=model)
        hidden, experts = [], []
        for row in stored.baseline_layers(store.engine, info.id):
            arrays = stored.npz_arrays(row.data)
            if row.kind == "hidden_states":
                projection = Projection(arrays["mean_D"], arrays["components_KD"])
                hidden.append(
                    HiddenStateBaseline(
                        row.layer,
                        row.name,
                        projection,
                        arrays["reference_NK"],
                        dict(row.thresholds),
                    )
                )
            else:
                experts.append(ExpertBaseline(row.layer, row.name, arrays["distribution_E"]))
        return cls(
            model=info.model,
            window_rows=info.window_rows,
            hidden_states=tuple(hidden),
            experts=tuple(experts),
            checkpoint=info.checkpoint,
            domain=info.domain,
            trained_until=info.trained_until,
            run_id=info.run_id,
            id=info.id,
        )
