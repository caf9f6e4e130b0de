"""Runs the app on uvicorn until SIGTERM or Ctrl-C, then drains within a bound."""

from __future__ import annotations

import contextlib
import errno
import math
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from observe.errors import ObserveError

# uvicorn's own default.
_BACKLOG = 2048


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is an error that says so
    (uvicorn would log it and exit); port 0 takes a free one."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ObserveError(f"cannot resolve --host {host!r} ({exc}): pass an address") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ObserveError(
                f"port {port} on {host} is taken: pass another --port, or 0 for a free one"
            ) from None
        raise ObserveError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    # Listening from here: a client that connects before uvicorn starts waits, not refused.
    sock.listen(_BACKLOG)
    return sock


class Server(uvicorn.Server):
    """uvicorn answering `app` until SIGTERM or Ctrl-C (in the main thread) or `stop()`;
    `on_stop` runs then, and in-flight requests have `drain_s` to finish."""

    def __init__(
        self, app: FastAPI, drain_s: float, on_stop: Callable[[], None] = lambda: None
    ) -> None:
        super().__init__(
            uvicorn.Config(
                app,
                timeout_graceful_shutdown=math.ceil(drain_s),
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        self.on_stop = on_stop

    def stop(self) -> None:
        """Stops it as SIGTERM would, from any thread."""
        self.on_stop()
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_stop()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # SIGTERM and Ctrl-C are how a service stops: drain, then return to the caller, who
        # closes the run as finished. uvicorn would raise the signal again afterwards, and
        # the process would die before the run is recorded.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        stops = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
