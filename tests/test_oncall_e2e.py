"""On-call, proved end to end: Prometheus, started with collectors/prometheus.yml and the
generated rules, scrapes a real monitored workload that fine-tunes on one domain and then
serves traffic that shifts to another. Every dashboard panel's query and every rule's signal
returns series, every rule loads without error, and the drift and cache-miss alerts fire.

Short `for` (0s) and one-second scrape and evaluation intervals are the test's only
changes to the shipped configuration. Queries run over the whole run (query_range): a
finished run's series go stale once its /metrics endpoint closes.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from prometheus_server import Prometheus, StartPrometheus, free_port

from observe import jobs
from observe.alerts.config import AlertsConfig, RuleOverride
from observe.alerts.defaults import RULES_BY_NAME
from observe.alerts.files import RULES_FILE, write_alert_files
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


def test_every_panel_rule_and_alert_works_on_a_real_run(
    tmp_path: Path, prometheus: StartPrometheus
) -> None:
    alerts = AlertsConfig(rules={name: RuleOverride(for_="0s") for name in RULES_BY_NAME})
    write_alert_files(alerts, tmp_path / "alerts")
    train_port, serve_port = free_port(), free_port()
    targets = [f"127.0.0.1:{train_port}", f"127.0.0.1:{serve_port}"]
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
