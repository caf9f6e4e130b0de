"""observe: observability and drift monitoring for Mixture-of-Experts language models.

with observe.session(model="my-moe") as session:  # /metrics, the store, settings as the CLI
    monitor = session.attach(model)
    ... monitor.step() after each training or serving step ...
stats = monitor.snapshot()

`observe.attach(model)` alone hooks a model without any telemetry. Attributes load on first
use: `import observe` loads no torch until a model is attached.
"""

from typing import TYPE_CHECKING

from observe.errors import ObserveError
from observe.lazy import lazy_attributes

__version__ = "0.1.0"

_WHERE = {
    "LayerStats": "observe.hooks.stats",
    "RoutingStats": "observe.hooks.stats",
    "Window": "observe.hooks.stats",
    "MonitorConfig": "observe.hooks.config",
    "WindowSink": "observe.hooks.worker",
    "Monitor": "observe.hooks.monitor",
    "attach": "observe.hooks.monitor",
    "RouterAdapter": "observe.hooks.adapters",
    "RouterReading": "observe.hooks.adapters",
    "register_adapter": "observe.hooks.adapters",
    "unregister_adapter": "observe.hooks.adapters",
    "Settings": "observe.settings",
    "MonitoringSession": "observe.pipeline",
    "session": "observe.pipeline",
}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)

if TYPE_CHECKING:
    from observe.hooks.adapters import (
        RouterAdapter,
        RouterReading,
        register_adapter,
        unregister_adapter,
    )
    from observe.hooks.config import MonitorConfig
    from observe.hooks.monitor import Monitor, attach
    from observe.hooks.stats import LayerStats, RoutingStats, Window
    from observe.hooks.worker import WindowSink
    from observe.pipeline import MonitoringSession, session
    from observe.settings import Settings

__all__ = [
    "LayerStats",
    "Monitor",
    "MonitorConfig",
    "MonitoringSession",
    "ObserveError",
    "RouterAdapter",
    "RouterReading",
    "RoutingStats",
    "Settings",
    "Window",
    "WindowSink",
    "__version__",
    "attach",
    "register_adapter",
    "session",
    "unregister_adapter",
]
