"""On-call, proved end to end: Prometheus, started with collectors/prometheus.yml and the
generated rules, scrapes a real monitored workload that fine-tunes on one domain, serves
traffic that shifts to another, then serves the checkpoint over HTTP (`observe serve`) to
clients. Every dashboard panel's query and every rule's signal returns series, every rule
loads without error, and the drift and cache-miss alerts fire.

Short `for` (0s) and one-second scrape and evaluation intervals are the test's only
changes to the shipped configuration. Queries run over the whole run (query_range): a
finished run's series go stale once its /metrics endpoint closes.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_server import Prometheus, StartPrometheus, free_port
from served_process import SERVE, served_url

from observe import jobs
from observe.alerts.config import AlertsConfig, RuleOverride
from observe.alerts.defaults import RULES_BY_NAME
from observe.alerts.files import RULES_FILE, write_alert_files
from observe.catalogue import (
    SERVER_COMPLETION_TOKENS,
    SERVER_PROMPT_TOKENS,
    SERVER_REQUEST_LATENCY,
    SERVER_REQUESTS,
    SERVER_TIME_TO_FIRST_TOKEN,
)
from observe.dashboards import prometheus_queries
from observe.drift.config import DriftConfig
from observe.generate import ROOT
from observe.hooks.config import MonitorConfig
from observe.settings import Settings
from observe.workload.job_config import (
    FineTuneConfig,
    GenerationSettings,
    ServeConfig,
    TrainConfig,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

FIRING = ("ObserveSemanticDrift", "ObserveCacheMissRate")
SERVER_FIGURES = (
    SERVER_REQUESTS,
    SERVER_REQUEST_LATENCY,
    SERVER_TIME_TO_FIRST_TOKEN,
    SERVER_PROMPT_TOKENS,
    SERVER_COMPLETION_TOKENS,
)
# A bound on any wait on the served model: past it, it hung.
BOUND_S = 60.0


def query_range(server: Prometheus, promql: str, start: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode(
        {"query": promql, "start": start, "end": time.time(), "step": "1"}
    )
    return list(server.get(f"/api/v1/query_range?{params}")["result"])


def wait_until(check: Any, what: str, timeout_s: float = 60) -> None:
    """Polls `check` (a bounded wait: only a hang fails it)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def ask(url: str, model: str, round_: int) -> None:
    """One round of clients: whole and streamed answers on both routes, and refusals."""
    completion = {"model": model, "prompt": f"round {round_}", "max_tokens": 4}
    chat = {"model": model, "messages": [{"role": "user", "content": f"round {round_}"}],
            "max_tokens": 4}  # fmt: skip
    with httpx.Client(base_url=url, timeout=BOUND_S) as client:
        for path, body in (("/completions", completion), ("/chat/completions", chat)):
            assert client.post(path, json=body).status_code == 200
            with client.stream("POST", path, json={**body, "stream": True}) as stream:
                assert stream.status_code == 200 and stream.read()
        assert client.post("/completions", json={**completion, "model": "gpt-4"}).status_code == 404
        assert client.post("/completions", json={**completion, "max_tokens": 0}).status_code == 400


def serve_over_http(
    checkpoint: Path, metrics_port: int, env: dict[str, str], server: Prometheus
) -> None:
    """`observe serve` of the checkpoint, asked by clients until Prometheus has scraped
    enough of its figures for every panel that reads them, then stopped as a service is."""
    shown = [
        q for q in prometheus_queries()
        if any(m.prometheus_name in q.expr for m in SERVER_FIGURES)
    ]  # fmt: skip
    assert {q.panel for q in shown} >= {"Requests per second", "Error ratio",
                                        "Time to first token"}  # fmt: skip
    command = [*SERVE, "--checkpoint", str(checkpoint), "--port", "0", "--no-drift"]
    env = {**os.environ, **env, "OBSERVE_PROMETHEUS_PORT": str(metrics_port)}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = served_url(process, BOUND_S)
        rounds = itertools.count()

        def scraped() -> bool:
            ask(url, checkpoint.name, next(rounds))
            return all(server.query(q.expr) for q in shown)

        wait_until(scraped, "Prometheus to hold every served-model panel's series")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(BOUND_S)
    assert process.returncode == 0


def test_every_panel_rule_and_alert_works_on_a_real_run(
    tmp_path: Path, prometheus: StartPrometheus
) -> None:
    alerts = AlertsConfig(rules={name: RuleOverride(for_="0s") for name in RULES_BY_NAME})
    write_alert_files(alerts, tmp_path / "alerts")
    train_port, serve_port, http_port = free_port(), free_port(), free_port()
    targets = [f"127.0.0.1:{port}" for port in (train_port, serve_port, http_port)]
    with prometheus(
        targets,
        rule_files=[tmp_path / "alerts" / RULES_FILE],
        base_config=ROOT / "collectors" / "prometheus.yml",
    ) as server:
        # Ready is not yet scraping: Prometheus applies its targets some seconds after start,
        # and a training run over by then would never be scraped.
        wait_until(lambda: server.query("up"), "Prometheus to start scraping")
        started = time.time()
        common: dict[str, Any] = {
            "db_url": f"sqlite:///{tmp_path / 'observe.db'}",
            "spool_dir": tmp_path / "spool",
            "export_interval_s": 1.0,
            "monitor": MonitorConfig(flush_every=2),
            "drift": DriftConfig(queue_size=100),
            "alerts": alerts,
        }
        training = jobs.train(
            Settings(prometheus_port=train_port, **common),
            # A capacity limit, so that the dropped-tokens panel has series too.
            FineTuneConfig(model_size="tiny", domain="medical", docs=300, capacity_factor=1.0),
            # Long enough for several scrapes of the training run on a loaded machine.
            TrainConfig(steps=60, batch_size=8, seed=0),
            tmp_path / "medical",
            progress=False,
        )
        serving = jobs.serve(
            Settings(prometheus_port=serve_port, **common),
            training.result.model,
            "medical",
            # Long enough for several scrapes even on a loaded machine: a rate needs two
            # points of each series.
            ServeConfig(
                traffic="medical;finance",
                requests=3000,
                repeat_share=0.3,
                concurrency=32,
                max_batch_size=32,
                seed=3,
            ),
            GenerationSettings(max_new_tokens=2),
            drift=DriftConfig(queue_size=100),
            trained_until=training.result.trained_until,
        )
        assert any(d.drifted for d in serving.drift)  # the run itself saw the shift
        serve_over_http(
            tmp_path / "medical",
            http_port,
            {"OBSERVE_DB_URL": common["db_url"], "OBSERVE_SPOOL_DIR": str(common["spool_dir"])},
            server,
        )

        rules = server.get("/api/v1/rules")["groups"]
        loaded = [r for group in rules for r in group["rules"]]
        assert {r["name"] for r in loaded} == set(RULES_BY_NAME)
        assert all(r["health"] == "ok" for r in loaded), [
            (r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"
        ]

        queries = prometheus_queries()
        assert {q.dashboard for q in queries} >= {"observe-oncall", "observe-experts",
                                                  "observe-training"}  # fmt: skip
        empty = [
            (q.dashboard, q.panel, q.expr)
            for q in queries
            if not query_range(server, q.expr, started)
        ]
        assert not empty, json.dumps(empty, indent=1)
        quiet = [
            rule.name
            for rule in alerts.alert_rules()
            if not query_range(server, rule.signal.promql(rule.selector), started)
        ]
        assert not quiet, quiet

        for name in FIRING:
            wait_until(
                lambda name=name: query_range(
                    server, f'ALERTS{{alertname="{name}",alertstate="firing"}}', started
                ),
                f"{name} to fire",
            )
