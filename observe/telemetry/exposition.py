"""A run's `/metrics` endpoint, which counts the scrapes it answers.

prometheus_client's WSGI app serves the run's registry from a thread of its own. Each
scrape collects the registry after it begins, so a scrape begun after the run's final
flush reads the final values: `wait_for_next_scrape` is how a closing run knows that
Prometheus has them.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from observe import signals
from observe.errors import ObserveError

logger = logging.getLogger("observe")

Headers = list[tuple[str, str]]
StartResponse = Callable[..., Any]


class _EncodableOnly(Collector):
    """A registry's samples but those whose labels are no valid Unicode (a lone surrogate
    in a user's attribute, from a file name that is not UTF-8): one would fail the whole
    scrape. Each metric that loses samples is logged once."""

    def __init__(self, registry: Any, warned: set[str]) -> None:
        self._registry = registry
        self._warned = warned

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            kept = [sample for sample in family.samples if _encodable(sample)]
            if len(kept) < len(family.samples) and family.name not in self._warned:
                self._warned.add(family.name)
                logger.warning(
                    "observe: /metrics leaves out series of %s whose labels are not valid "
                    "Unicode (a lone surrogate): pass UTF-8 text as attribute values",
                    family.name,
                )
            family.samples = kept
            yield family

    def restricted_registry(self, names: Iterable[str]) -> _EncodableOnly:
        return _EncodableOnly(self._registry.restricted_registry(names), self._warned)


def _encodable(sample: Sample) -> bool:
    try:
        "".join((*sample.labels, *sample.labels.values())).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _QuietHandler(WSGIRequestHandler):
    """Logs no request line: Prometheus scrapes every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsEndpoint:
    """Serves `registry` on `host:port` (0 picks a free port) until `close`."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._metrics = make_wsgi_app(registry)
        # Only for a scrape that failed on text that is no valid Unicode: checking every
        # label of every scrape would cost each of them for a case that never comes.
        self._encodable_metrics = make_wsgi_app(_EncodableOnly(registry, set()))
        self._changed = threading.Condition()
        # Scrapes begun, and the newest of them whose response has been written.
        self._begun = 0
        self._answered = 0
        self.scrapes = 0
        self._server: ThreadingWSGIServer
        try:
            # The host's own address family: "::1" needs IPv6.
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            server = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
            self._server = make_server(host, port, self._app, server, _QuietHandler)
        except OSError as exc:
            raise ObserveError(
                f"cannot serve /metrics on {host}:{port} ({exc.strerror}): pass another "
                "--prometheus-port, or 0 to pick a free one"
            ) from exc
        self.port: int = self._server.server_port
        signals.start(
            threading.Thread(target=self._server.serve_forever, name="observe-metrics", daemon=True)
        )

    def wait_for_next_scrape(self, timeout_s: float) -> bool:
        """Whether a scrape that begins after this call is answered within `timeout_s`."""
        with self._changed:
            mark = self._begun
            return self._changed.wait_for(lambda: self._answered > mark, timeout_s)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "GET" or environ["PATH_INFO"] == "/favicon.ico":
            return self._metrics(environ, start_response)
        with self._changed:
            self._begun += 1
            scrape = self._begun
        replied: list[tuple[str, Headers]] = []

        def reply(status: str, headers: Headers, *_: object) -> None:
            replied.append((status, headers))

        try:
            body = b"".join(self._metrics(environ, reply))
        except UnicodeEncodeError:
            body = b"".join(self._encodable_metrics(environ, reply))
        [(status, headers)] = replied
        # With its length, the scraper tells a cut response from a whole one.
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return self._answer(body, scrape)

    def _answer(self, body: bytes, scrape: int) -> Iterator[bytes]:
        yield body
        # The server asks for more only once it has written the body: the scraper has it.
        with self._changed:
            self.scrapes += 1
            self._answered = max(self._answered, scrape)
            self._changed.notify_all()
