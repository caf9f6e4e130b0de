"""Semantic drift, routing drift and knowledge freshness against reference baselines.

`observe.drift.Baseline` captures, saves and loads baselines; `DriftConfig` says what live
drift scores. Attributes load on first use: Evidently is imported only where drift runs.
"""

from typing import TYPE_CHECKING

from observe.lazy import lazy_attributes

_WHERE = {
    "Baseline": "observe.drift.baseline",
    "DriftConfig": "observe.drift.config",
    "METHODS": "observe.drift.config",
    "DriftSink": "observe.drift.live",
}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)

if TYPE_CHECKING:
    from observe.drift.baseline import Baseline
    from observe.drift.config import METHODS, DriftConfig
    from observe.drift.live import DriftSink

__all__ = ["METHODS", "Baseline", "DriftConfig", "DriftSink"]
