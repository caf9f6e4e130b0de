"""What a monitor measures, how often it flushes, and how much it samples."""

from __future__ import annotations

from dataclasses import dataclass

from observe.errors import ObserveError

METRICS = frozenset(
    {"routing", "router_losses", "entropy_histogram", "dropped_tokens", "hidden_states"}
)
MAX_ENTROPY_SLOTS = 256


@dataclass(frozen=True)
class MonitorConfig:
    # Steps between copies of the device sums to the host.
    flush_every: int = 10
    # Which measurements run: a subset of METRICS.
    metrics: frozenset[str] = METRICS
    # Share of forward passes whose routing, and whose hidden states, are measured.
    router_sample_rate: float = 1.0
    hidden_state_sample_rate: float = 1.0
    # Pooled sequence states kept per attention layer, whatever the run's length.
    reservoir_size: int = 1024
    # Pooled sequence states kept per attention layer and flush window (drift's input).
    window_sample_size: int = 512
    # Columns of the experts × routing-entropy histogram.
    entropy_slots: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - METRICS)
        if unknown:
            raise ObserveError(
                f"unknown metrics {unknown}: choose from {', '.join(sorted(METRICS))}"
            )
        if self.flush_every < 1:
            raise ObserveError(f"flush_every={self.flush_every} must be at least 1 step")
        if not 1 <= self.entropy_slots <= MAX_ENTROPY_SLOTS:
            raise ObserveError(
                f"entropy_slots={self.entropy_slots} must be between 1 and {MAX_ENTROPY_SLOTS}"
            )
        for name in ("router_sample_rate", "hidden_state_sample_rate"):
            rate = getattr(self, name)
            if not 0 < rate <= 1:
                raise ObserveError(f"{name}={rate} must be in (0, 1]: 1 measures every forward")
        for name in ("reservoir_size", "window_sample_size"):
            if getattr(self, name) < 1:
                raise ObserveError(f"{name}={getattr(self, name)} must be at least 1")
