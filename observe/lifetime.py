"""Objects that own threads, hooks or connections, and release them in `close()` in time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from observe import signals


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


def run_within(deadline: Deadline, call: Callable[[], object]) -> bool:
    """`call()`, waited for until `deadline`: False when it had not returned by then.

    It runs on a daemon thread, which goes on after a False and is abandoned at exit: psycopg
    cannot interrupt a query to a server that stopped answering, so a close that must
    return in time cannot make the call itself. What `call` raises is raised here.
    """
    raised: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, name="observe-close", daemon=True)
    signals.start(thread)
    thread.join(deadline.left())
    if thread.is_alive():
        return False
    if raised:
        raise raised[0]
    return True
