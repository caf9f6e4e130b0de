"""The series budget: which routing families, at what detail, a run's /metrics shows.

Layer × expert series outgrow a Prometheus long before they outgrow the store. Operators
choose a detail (`Settings.prometheus_detail`); the store keeps expert-level detail at every
level, and OTLP gets what /metrics shows.
"""

from __future__ import annotations

from observe import catalogue
from observe.catalogue import Metric
from observe.errors import ObserveError

# Per-layer summaries only: entropy, imbalance, dead experts, quantiles of expert share, the
# layer × entropy-slot heatmap.
LAYER = "layer"
# And a series per expert of its tokens (the default).
EXPERT = "expert"
# And the expert × entropy-slot heatmap: layers × experts × slots series.
EXPERT_SLOT = "expert_slot"
DETAILS = (LAYER, EXPERT, EXPERT_SLOT)

_SHOWN: dict[str, tuple[Metric, ...]] = {
    LAYER: (catalogue.ENTROPY_ASSIGNMENTS, catalogue.EXPERT_SHARE),
    EXPERT: (catalogue.ENTROPY_ASSIGNMENTS, catalogue.EXPERT_SHARE, catalogue.EXPERT_TOKENS),
    EXPERT_SLOT: (
        catalogue.ENTROPY_ASSIGNMENTS,
        catalogue.EXPERT_SHARE,
        catalogue.EXPERT_TOKENS,
        catalogue.EXPERT_ENTROPY_ASSIGNMENTS,
    ),
}
# What the store keeps whatever the detail: the families with a series per expert.
STORED = (catalogue.EXPERT_TOKENS, catalogue.EXPERT_ENTROPY_ASSIGNMENTS)


def shown(detail: str) -> tuple[Metric, ...]:
    """The array families /metrics (and OTLP) show at `detail`."""
    check_detail(detail)
    return _SHOWN[detail]


def check_detail(detail: str) -> None:
    if detail not in DETAILS:
        raise ObserveError(
            f"prometheus_detail={detail!r} is not a detail: choose {', '.join(DETAILS)} "
            f'("layer" cuts per-expert series to per-layer summaries; the store keeps them)'
        )
