"""Hooks on an MoE model's routers and attention layers, accumulating on the device.

Attributes load on first use: the torch-free parts (`MonitorConfig`, `RoutingStats`,
`WindowSink`) can be imported without torch.
"""

from typing import TYPE_CHECKING

from observe.lazy import lazy_attributes

_WHERE = {
    "METRICS": "observe.hooks.config",
    "MonitorConfig": "observe.hooks.config",
    "LayerStats": "observe.hooks.stats",
    "RoutingStats": "observe.hooks.stats",
    "Window": "observe.hooks.stats",
    "WindowSink": "observe.hooks.worker",
    "Monitor": "observe.hooks.monitor",
    "attach": "observe.hooks.monitor",
    "RouterAdapter": "observe.hooks.adapters",
    "RouterReading": "observe.hooks.adapters",
    "register_adapter": "observe.hooks.adapters",
    "unregister_adapter": "observe.hooks.adapters",
}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)

if TYPE_CHECKING:
    from observe.hooks.adapters import (
        RouterAdapter,
        RouterReading,
        register_adapter,
        unregister_adapter,
    )
    from observe.hooks.config import METRICS, MonitorConfig
    from observe.hooks.monitor import Monitor, attach
    from observe.hooks.stats import LayerStats, RoutingStats, Window
    from observe.hooks.worker import WindowSink

__all__ = [
    "METRICS",
    "LayerStats",
    "Monitor",
    "MonitorConfig",
    "RouterAdapter",
    "RouterReading",
    "RoutingStats",
    "Window",
    "WindowSink",
    "attach",
    "register_adapter",
    "unregister_adapter",
]
