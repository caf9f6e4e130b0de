"""A run's `/metrics` endpoint, which counts the scrapes it answers.

prometheus_client's WSGI app serves the run's registry from a thread of its own. Each
scrape collects the registry after it begins, so a scrape begun after the run's final
flush reads the final values: `wait_for_next_scrape` is how a closing run knows that
Prometheus has them.

Families rendered from arrays (`ExpertFamilies.render`, `LayerFamilies.render`) join the
registry's text in the format the scraper asked for, before OpenMetrics' closing `# EOF`;
the body is compressed after, when the scraper accepts gzip.

With TLS, each connection's handshake runs in that connection's own thread, within
`CONNECTION_TIMEOUT_S`: prometheus_client's own server shakes hands in its accepting
thread, where one client that connects and sends nothing stops every scrape after it.
"""

from __future__ import annotations

import gzip
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from observe import signals
from observe.errors import ObserveError
from observe.telemetry.basic_auth import BasicAuth, Credentials

logger = logging.getLogger("observe")

Headers = list[tuple[str, str]]
# Exposition text of more families: OpenMetrics (True) or Prometheus text format (False).
Render = Callable[[bool], bytes]
_EOF = b"# EOF\n"


# Seconds a connection may wait on its client at each read or write, the TLS handshake
# included: a client gone quiet frees its thread instead of holding it for good. Prometheus
# sends its request at once and reads the answer as it comes.
CONNECTION_TIMEOUT_S = 30.0


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

    timeout = CONNECTION_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _MetricsServer(ThreadingWSGIServer):
    """Serves over `tls` when set, shaking hands in each connection's own thread."""

    tls: ssl.SSLContext | None = None

    def server_activate(self) -> None:
        super().server_activate()
        if self.tls is not None:
            # Accepting only wraps each connection; `finish_request` shakes hands.
            self.socket = self.tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(CONNECTION_TIMEOUT_S)
            try:
                request.do_handshake()
            except OSError as exc:
                # Plain HTTP, an untrusted client certificate, a client that went quiet:
                # the client sees its own error; a server log would only echo scanners.
                logger.debug("observe: /metrics TLS handshake failed (%s)", exc)
                return
        super().finish_request(request, client_address)


class MetricsEndpoint:
    """Serves `registry`, and what `arrays` renders, on `host:port` (0 picks a free port)
    until `close`: over `tls` when given, and to clients that send `credentials` (HTTP
    basic auth) when given."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        credentials: Credentials | None = None,
        arrays: Sequence[Render] = (),
    ) -> None:
        self._metrics = make_wsgi_app(registry, disable_compression=True)
        # Only for a scrape that failed on text that is no valid Unicode: checking every
        # label of every scrape would cost each of them for a case that never comes.
        self._encodable_metrics = make_wsgi_app(
            _EncodableOnly(registry, set()), disable_compression=True
        )
        self._arrays = tuple(arrays)
        self._changed = threading.Condition()
        # Scrapes begun, and the newest of them whose response has been written.
        self._begun = 0
        self._answered = 0
        self.scrapes = 0
        self._server: ThreadingWSGIServer
        try:
            # The host's own address family: "::1" needs IPv6.
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            server = type(
                "MetricsServer", (_MetricsServer,), {"address_family": family, "tls": tls}
            )
            app: WSGIApplication = self._app
            if credentials is not None:
                # In front of the counting: a refused request is no scrape.
                app = BasicAuth(app, credentials)
            self._server = make_server(host, port, app, server, _QuietHandler)
        except OSError as exc:
            raise ObserveError(
                f"cannot serve /metrics on {host}:{port} ({exc.strerror}): pass another "
                "--prometheus-port, or 0 to pick a free one"
            ) from exc
        self.scheme = "http" if tls is None else "https"
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

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
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
        if status.startswith("200"):
            body, headers = self._complete(environ, body, headers)
        # With its length, the scraper tells a cut response from a whole one.
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return self._answer(body, scrape)

    def _complete(
        self, environ: WSGIEnvironment, body: bytes, headers: Headers
    ) -> tuple[bytes, Headers]:
        """The registry's `body` with the array families' text, compressed if accepted."""
        if self._arrays:
            content_type = dict(headers).get("Content-Type", "")
            openmetrics = content_type.startswith("application/openmetrics-text")
            arrays = b"".join(render(openmetrics) for render in self._arrays)
            body = body.removesuffix(_EOF) + arrays + _EOF if openmetrics else body + arrays
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            # The fastest level: a 64 × 256 model's text shrinks tenfold all the same.
            body = gzip.compress(body, compresslevel=1)
            headers = [*headers, ("Content-Encoding", "gzip")]
        return body, headers

    def _answer(self, body: bytes, scrape: int) -> Iterator[bytes]:
        yield body
        # The server asks for more only once it has written the body: the scraper has it.
        with self._changed:
            self.scrapes += 1
            self._answered = max(self._answered, scrape)
            self._changed.notify_all()
