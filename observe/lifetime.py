"""Objects that own threads, hooks or connections, and release them in `close()`."""

from __future__ import annotations

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
