"""Semantic and routing drift against a reference baseline, torch-free.

The live path, per layer: `Projection.fit` on one half of the baseline's pooled hidden
states, project the other half as the reference, `calibrate` a threshold per method and
window size on that reference, then `score_window` each projected window against it.
`js_divergence` compares expert loads. `report_html` renders Evidently's report of one
window for a person.

Attributes load on first use: `Projection` and `js_divergence` need only numpy; the methods
import Evidently, which takes seconds.
"""

from typing import TYPE_CHECKING

from observe.lazy import lazy_attributes

_WHERE = {
    "Projection": "observe.drift.projection",
    "METHODS": "observe.drift.methods",
    "DEFAULT_METHOD": "observe.drift.methods",
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
    from observe.drift.calibration import calibrate
    from observe.drift.divergence import js_divergence
    from observe.drift.methods import DEFAULT_METHOD, METHODS, drift_score, raw_score
    from observe.drift.projection import Projection
    from observe.drift.report import report_html
    from observe.drift.score import DriftScore, score_window

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "DriftScore",
    "Projection",
    "calibrate",
    "drift_score",
    "js_divergence",
    "raw_score",
    "report_html",
    "score_window",
]
