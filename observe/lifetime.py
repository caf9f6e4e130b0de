"""Objects that own threads, hooks or connections, and release them in `close()` in time."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Self


class Closeable:
    """`with thing:` closes it on the way out, exception or not."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Deadline:
    """One time limit that the steps of a close share: each waits at most what is left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self._end - time.monotonic())
