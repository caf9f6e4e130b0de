"""observe: observability and drift monitoring for Mixture-of-Experts language models.

with observe.session(model="my-moe") as session:  # /metrics, the store, settings as the CLI
    monitor = session.attach(model)
    ... monitor.step() after each training or serving step ...
stats = monitor.snapshot()

`observe.attach(model)` alone hooks a model without any telemetry. Attributes load on first
use: `import observe` loads no torch until a model is attached.
"""

from typing import TYPE_CHECKING

from observe import hooks as _hooks
from observe.errors import ObserveError
from observe.lazy import lazy_attributes

__version__ = "0.1.0"

# The hooks' public names, from observe.hooks (itself lazy), and the session's.
_WHERE = {
    **{name: "observe.hooks" for name in _hooks.__all__ if name != "METRICS"},
    "Settings": "observe.settings",
    "MonitoringSession": "observe.pipeline",
    "session": "observe.pipeline",
}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)

if TYPE_CHECKING:
    from observe.hooks import (
        LayerStats,
        Monitor,
        MonitorConfig,
        RouterAdapter,
        RouterReading,
        RoutingStats,
        Window,
        WindowSink,
        attach,
        register_adapter,
        unregister_adapter,
    )
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
