"""Hooks on an MoE model's routers and attention layers, accumulating on the device."""

from observe.hooks.adapters import (
    RouterAdapter,
    RouterReading,
    register_adapter,
    unregister_adapter,
)
from observe.hooks.config import METRICS, MonitorConfig
from observe.hooks.export import WindowSink
from observe.hooks.monitor import Monitor, attach
from observe.hooks.stats import LayerStats, Snapshot

__all__ = [
    "METRICS",
    "LayerStats",
    "Monitor",
    "MonitorConfig",
    "RouterAdapter",
    "RouterReading",
    "Snapshot",
    "WindowSink",
    "attach",
    "register_adapter",
    "unregister_adapter",
]
