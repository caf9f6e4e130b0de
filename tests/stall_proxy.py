"""A loopback TCP proxy that can stall: a network partition that refuses nothing.

`StallProxy(("127.0.0.1", 5432))` listens on a free loopback port and forwards each
connection to the target. `stall()` stops forwarding in both directions while every
connection stays open and new ones are still accepted: the proxy's kernel acknowledges
bytes and answers keepalive probes, so neither TCP keepalives nor tcp_user_timeout fire,
yet nothing arrives. That is the fault a client's own timeouts cannot see, as behind a
proxy or load balancer whose far side hung.

`resume()` forwards again, in order, what was held during the stall: TCP acknowledged
those bytes to their sender, so dropping them would corrupt the stream rather than model
a network that heals. A connection that a side closed during the stall is closed on the
other side only then.

Tests import it as `stall_proxy` (pytest puts tests/ on the path); benchmarks put tests/
on their path too.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

from observe.lifetime import Closeable

_CHUNK = 64 * 1024
# How often the accepting thread checks whether the proxy closed.
_POLL_S = 0.1
_CONNECT_TIMEOUT_S = 5.0


class StallProxy(Closeable):
    """Forwards 127.0.0.1:`port` to `target` until `stall()`; `close()` ends every thread."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        # Guards everything below; pumps wait on it while stalled.
        self._state = threading.Condition()
        self._stalled = False
        self._closed = False
        self._accepted = 0
        # Open connections and live threads; what ended is dropped at the next accept.
        self._links: list[_Link] = []
        self._threads: list[threading.Thread] = []
        self._accepting = self._start(self._accept, "accept")

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        with self._state:
            return self._accepted

    def stall(self) -> None:
        """Stops forwarding; a chunk already being sent still arrives."""
        with self._state:
            self._stalled = True

    def resume(self) -> None:
        """Forwards again, starting with what was held."""
        with self._state:
            self._stalled = False
            self._state.notify_all()

    def close(self) -> None:
        """Closes the listener and every connection, and waits for every thread."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            self._state.notify_all()
        self._accepting.join()
        self._listener.close()
        with self._state:
            links, threads = list(self._links), list(self._threads)
        for link in links:
            link.cut()
        for thread in threads:
            thread.join()
        for link in links:
            link.close()

    def _accept(self) -> None:
        while True:
            with self._state:
                if self._closed:
                    return
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            try:
                server = socket.create_connection(self.target, timeout=_CONNECT_TIMEOUT_S)
            except OSError:
                client.close()  # the target refuses: so does the proxy
                continue
            client.settimeout(None)
            server.settimeout(None)
            link = _Link(client, server)
            with self._state:
                if self._closed:
                    link.close()
                    return
                self._accepted += 1
                self._links = [*(x for x in self._links if not x.done), link]
                self._threads = [t for t in self._threads if t.is_alive()]
            self._start(self._pump, "to-target", link, client, server)
            self._start(self._pump, "to-client", link, server, client)

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket) -> None:
        """Copies `source` to `sink` chunk by chunk, each one only while not stalled."""
        try:
            while True:
                data = source.recv(_CHUNK)
                if not self._flowing():
                    return
                if not data:
                    sink.shutdown(socket.SHUT_WR)  # the sender closed: pass it on
                    return
                sink.sendall(data)
        except OSError:
            link.cut()  # a side reset: end the other direction too
        finally:
            link.pump_done()

    def _flowing(self) -> bool:
        """Waits while stalled; False once the proxy closed."""
        with self._state:
            self._state.wait_for(lambda: not self._stalled or self._closed)
            return not self._closed

    def _start(self, target: Callable[..., None], role: str, *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=f"stall-proxy-{role}", daemon=True)
        with self._state:
            self._threads.append(thread)
        thread.start()
        return thread


class _Link:
    """A client's connection and the proxy's to the target; closed when both pumps end."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self._sockets = (client, server)
        self._lock = threading.Lock()
        self._pumps_left = 2

    @property
    def done(self) -> bool:
        with self._lock:
            return self._pumps_left == 0

    def cut(self) -> None:
        """Wakes both pumps: their next recv or send fails or ends."""
        for s in self._sockets:
            with contextlib.suppress(OSError):  # already closed
                s.shutdown(socket.SHUT_RDWR)

    def pump_done(self) -> None:
        with self._lock:
            self._pumps_left -= 1
            last = self._pumps_left == 0
        if last:
            self.close()

    def close(self) -> None:
        for s in self._sockets:
            s.close()
