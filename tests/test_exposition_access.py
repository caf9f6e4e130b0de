"""/metrics over TLS with basic auth: Prometheus scrapes a run with the right credentials
and is refused with wrong ones; a client without them gets a 401 challenge, and one that
speaks plain HTTP, or stalls its handshake, gets nothing and holds up no other scrape."""

from __future__ import annotations

import base64
import http.client
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from certificates import SERVER_NAME, TlsFiles
from prometheus_client import CollectorRegistry, Counter
from prometheus_server import StartPrometheus

from observe.collectors import secured_scrape
from observe.hooks import MonitorConfig
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.telemetry.basic_auth import CHALLENGE
from observe.telemetry.endpoint_config import MetricsEndpointConfig
from observe.telemetry.exposition import MetricsEndpoint
from observe.telemetry.provider import FinalScrape
from observe.workload.config import get_config
from observe.workload.model import MoETransformer

USERNAME = "prometheus"
PASSWORD = "correct horse battery staple"


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def serve(tls_files: TlsFiles, **config: Any) -> MetricsEndpoint:
    """An endpoint over TLS with basic auth, serving one counter."""
    registry = CollectorRegistry()
    Counter("observe_test_requests", "A series to find.", registry=registry).inc()
    access = MetricsEndpointConfig(
        cert_file=tls_files.cert,
        key_file=tls_files.key,
        username=USERNAME,
        password=PASSWORD,
        **config,
    )
    return MetricsEndpoint(
        registry,
        "127.0.0.1",
        0,
        tls=access.server_context(),
        credentials=access.credentials(),
    )


@pytest.fixture
def endpoint(tls_files: TlsFiles) -> Iterator[MetricsEndpoint]:
    served = serve(tls_files)
    yield served
    served.close()


def trusting(tls_files: TlsFiles, client_certificate: bool = False) -> ssl.SSLContext:
    """A client's TLS that trusts the test CA (and checks the server's name)."""
    context = ssl.create_default_context(cafile=tls_files.ca)
    if client_certificate:
        context.load_cert_chain(tls_files.client_cert, tls_files.client_key)
    return context


def get(
    endpoint: MetricsEndpoint, context: ssl.SSLContext, authorization: str | None = None
) -> tuple[int, http.client.HTTPMessage, str]:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", endpoint.port, context=context, timeout=10
    )
    try:
        headers = {} if authorization is None else {"Authorization": authorization}
        connection.request("GET", "/metrics", headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        connection.close()


def test_the_right_credentials_read_metrics_and_any_other_request_is_challenged(
    endpoint: MetricsEndpoint, tls_files: TlsFiles
) -> None:
    context = trusting(tls_files)
    status, _, body = get(endpoint, context, basic(USERNAME, PASSWORD))
    assert status == 200 and "observe_test_requests_total 1.0" in body
    refused = [
        None,
        basic(USERNAME, "wrong"),
        basic(USERNAME, PASSWORD + "x"),
        basic("someone", PASSWORD),
        basic(USERNAME.upper(), PASSWORD),
        "Bearer " + PASSWORD,
        "Basic not-base64!",
        "Basic " + base64.b64encode(PASSWORD.encode()).decode(),  # no username
    ]
    for authorization in refused:
        status, headers, body = get(endpoint, context, authorization)
        assert status == 401, authorization
        assert headers["WWW-Authenticate"] == CHALLENGE
        assert "observe_test_requests" not in body and PASSWORD not in body
    # The scheme is case-insensitive (RFC 9110); refused requests count as no scrape.
    status, _, _ = get(endpoint, context, "basic " + basic(USERNAME, PASSWORD).split()[1])
    assert status == 200
    assert endpoint.scrapes == 2


def test_plain_http_to_the_tls_port_gets_no_answer(
    endpoint: MetricsEndpoint, tls_files: TlsFiles
) -> None:
    plain = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=10)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        plain.request("GET", "/metrics", headers={"Authorization": basic(USERNAME, PASSWORD)})
        plain.getresponse().read()
    plain.close()
    assert get(endpoint, trusting(tls_files), basic(USERNAME, PASSWORD))[0] == 200
    assert endpoint.scrapes == 1


def test_a_client_that_stalls_its_handshake_holds_up_no_other_scrape(
    endpoint: MetricsEndpoint, tls_files: TlsFiles
) -> None:
    """prometheus_client's own TLS server shakes hands in its accepting thread: there, the
    scrape after a silent connection would wait for that connection's handshake."""
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=10):
        status, _, body = get(endpoint, trusting(tls_files), basic(USERNAME, PASSWORD))
    assert status == 200 and "observe_test_requests_total" in body


def test_a_client_ca_admits_only_clients_with_its_certificates(tls_files: TlsFiles) -> None:
    endpoint = serve(tls_files, client_ca_file=tls_files.ca)
    try:
        # TLS 1.3 ends the client's handshake before the server has checked it: the
        # refusal comes on the first read or write.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            get(endpoint, trusting(tls_files), basic(USERNAME, PASSWORD))
        status, _, _ = get(
            endpoint, trusting(tls_files, client_certificate=True), basic(USERNAME, PASSWORD)
        )
        assert status == 200
        assert endpoint.scrapes == 1
    finally:
        endpoint.close()


@pytest.mark.slow
def test_prometheus_scrapes_a_run_over_tls_with_basic_auth(
    tmp_path: Path,
    tls_files: TlsFiles,
    prometheus: StartPrometheus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The scrape configuration collectors/prometheus.yml shows, with Prometheus's client
    certificate too: the run's last window arrives, and a job with a wrong password is down
    with a 401."""
    password_file = tmp_path / "metrics.password"
    password_file.write_text(PASSWORD + "\n")  # as an editor leaves it: both sides strip it
    scrape = secured_scrape(ca_file=str(tls_files.ca), password_file=str(password_file))
    assert scrape["tls_config"]["server_name"] == SERVER_NAME  # a name the certificate holds
    scrape["tls_config"].update(
        cert_file=str(tls_files.client_cert), key_file=str(tls_files.client_key)
    )
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'observe.db'}",
        prometheus_port=0,
        prometheus_linger_s=60,
        spool_dir=tmp_path / "spool",
        # No window is flushed before the run ends: only the final flush has the tokens.
        monitor=MonitorConfig(flush_every=100),
        metrics=MetricsEndpointConfig(
            cert_file=tls_files.cert,
            key_file=tls_files.key,
            client_ca_file=tls_files.ca,
            username=scrape["basic_auth"]["username"],
            password_file=password_file,
        ),
    )
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    caplog.set_level(logging.INFO, logger="observe")
    session = MonitoringSession(settings, model="tiny")
    target = f"127.0.0.1:{session.metrics_port}"
    assert f"https://{target}/metrics (basic auth)" in caplog.text
    intruder = {
        **scrape,
        "job_name": "wrong-password",
        "basic_auth": {"username": scrape["basic_auth"]["username"], "password": "wrong"},
        "static_configs": [{"targets": [target]}],
    }
    with prometheus([target], scrape=scrape, other_jobs=[intruder]) as server:
        assert server.wait_for('up{job="observe"}', 1) == 1
        assert server.wait_for('up{job="wrong-password"}', 0) == 0
        [refused] = [
            t
            for t in server.get("/api/v1/targets")["activeTargets"]
            if t["labels"]["job"] == "wrong-password"
        ]
        assert "401" in refused["lastError"], refused
        monitor = session.attach(model)
        with torch.no_grad():
            for _ in range(3):
                model(torch.randint(3, 250, (2, 8)))
                monitor.step()
        session.close()
        stats = monitor.snapshot()
        total = sum(layer.tokens * model.config.top_k for layer in stats.layers)
        promql = (
            f'sum(last_over_time(observe_moe_expert_tokens_total{{run="{session.run_id}"}}[5m]))'
        )
        assert total > 0
        assert server.wait_for(promql, total) == total
    assert session.telemetry.final_scrape is FinalScrape.READ
    assert PASSWORD not in caplog.text
