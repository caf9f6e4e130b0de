"""What a monitor measures, how often it flushes, how much it samples, and whose figures
it reports in a distributed run."""

from __future__ import annotations

from dataclasses import dataclass

from observe.errors import ObserveError

METRICS = frozenset(
    {"routing", "router_losses", "entropy_histogram", "dropped_tokens", "hidden_states"}
)
MAX_ENTROPY_SLOTS = 256
# Whose figures a monitor reports in a distributed run: each rank its own, or every rank
# the sums over all ranks (observe/hooks/reduction.py).
REDUCTIONS = ("local", "global")


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
    # "global": every flush sums the window over all ranks of torch.distributed's default
    # group, in one collective; every rank's snapshot() then holds the run's figures and
    # only rank 0's sinks get windows. Every rank must then step, flush, snapshot and close
    # its monitor together.
    reduce: str = "local"
    # False: a model (or a pipeline stage of one) without an MoE router is attached anyway,
    # measuring nothing of routing; under "global" it takes part in every reduction with
    # zeros, so that the ranks that hold routers do not wait for it for ever.
    require_routers: bool = True

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
        if self.reduce not in REDUCTIONS:
            raise ObserveError(
                f"reduce={self.reduce!r}: choose 'local' (each rank's own figures) or "
                "'global' (sums over every rank)"
            )
        for name in ("reservoir_size", "window_sample_size"):
            if getattr(self, name) < 1:
                raise ObserveError(f"{name}={getattr(self, name)} must be at least 1")
