"""Threads that leave SIGINT and SIGTERM to the main thread.

The kernel hands a process-directed signal to any thread that does not block it. Python
runs signal handlers in the main thread only, and a signal that lands on another thread
does not wake a main thread blocked in `sleep` or a wait: Ctrl-C and SIGTERM then seem
ignored until that wait ends. Every thread observe starts blocks both, so they always
reach the main thread.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from observe.thread_names import name_os_thread

_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def blocked() -> Iterator[None]:
    """Threads started inside, by observe or by a library (the OpenTelemetry SDK's
    readers), block SIGINT and SIGTERM: a new thread inherits its starter's mask, which is
    restored on the way out."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start(thread: threading.Thread) -> None:
    """Starts `thread` with SIGINT and SIGTERM blocked in it, under its name for the OS too."""
    with blocked():
        thread.start()
    name_os_thread(thread)
