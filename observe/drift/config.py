"""What live drift scores: the methods, and how far it may fall behind. Light to import:
settings and the CLI read it without loading Evidently."""

from __future__ import annotations

from dataclasses import dataclass

from observe.errors import ObserveError

# Evidently's embedding drift methods, by the names observe uses for them.
METHODS = ("classifier", "mmd", "distance", "ratio")
DEFAULT_METHOD = "classifier"


@dataclass(frozen=True)
class DriftConfig:
    """Which drift methods score each window, against which baseline."""

    # Semantic drift methods, each scored per attention layer and window.
    methods: tuple[str, ...] = (DEFAULT_METHOD,)
    # Windows waiting to be scored; past this, new windows are skipped and counted.
    queue_size: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise ObserveError(
                f"drift methods {list(self.methods)} are not right: choose one or more of "
                f"{', '.join(METHODS)}"
            )
        if self.queue_size < 1:
            raise ObserveError(f"drift queue_size={self.queue_size} must be at least 1")
