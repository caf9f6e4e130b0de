"""Semantic drift, routing drift and knowledge freshness against reference baselines.

The live path, per layer: `Baseline` fits a `Projection` on a held-out part of the
baseline's pooled hidden states once and `calibrate`s a threshold per method and window
size on the rest; `DriftSink` then gathers flushed windows into drift windows of the baseline's
size, projects each and `score_window`s it.
`js_divergence` compares expert loads. `report_html` renders Evidently's report of one
window for a person.

Attributes load on first use: `DriftConfig`, `Projection` and `js_divergence` need at most
numpy; the methods import Evidently, which takes seconds.
"""

from typing import TYPE_CHECKING

from observe.lazy import lazy_attributes

_WHERE = {
    "Baseline": "observe.drift.baseline",
    "DriftConfig": "observe.drift.config",
    "METHODS": "observe.drift.config",
    "DEFAULT_METHOD": "observe.drift.config",
    "DriftSink": "observe.drift.live",
    "Projection": "observe.drift.projection",
    "raw_score": "observe.drift.methods",
    "drift_score": "observe.drift.methods",
    "calibrate": "observe.drift.calibration",
    "DriftScore": "observe.drift.score",
    "score_window": "observe.drift.score",
    "js_divergence": "observe.drift.divergence",
    "report_html": "observe.drift.report",
}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)

if TYPE_CHECKING:
    from observe.drift.baseline import Baseline
    from observe.drift.calibration import calibrate
    from observe.drift.config import DEFAULT_METHOD, METHODS, DriftConfig
    from observe.drift.divergence import js_divergence
    from observe.drift.live import DriftSink
    from observe.drift.methods import drift_score, raw_score
    from observe.drift.projection import Projection
    from observe.drift.report import report_html
    from observe.drift.score import DriftScore, score_window

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "Baseline",
    "DriftConfig",
    "DriftScore",
    "DriftSink",
    "Projection",
    "calibrate",
    "drift_score",
    "js_divergence",
    "raw_score",
    "report_html",
    "score_window",
]
