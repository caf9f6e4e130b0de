"""observe: observability and drift monitoring for Mixture-of-Experts language models.

monitor = observe.attach(model)
... monitor.step() after each training or serving step ...
stats = monitor.snapshot()
monitor.close()
"""

from observe.errors import ObserveError
from observe.hooks import (
    LayerStats,
    Monitor,
    MonitorConfig,
    RouterAdapter,
    RouterReading,
    Snapshot,
    WindowSink,
    attach,
    register_adapter,
    unregister_adapter,
)

__version__ = "0.1.0"

__all__ = [
    "LayerStats",
    "Monitor",
    "MonitorConfig",
    "ObserveError",
    "RouterAdapter",
    "RouterReading",
    "Snapshot",
    "WindowSink",
    "__version__",
    "attach",
    "register_adapter",
    "unregister_adapter",
]
