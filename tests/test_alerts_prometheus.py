"""The rule files in a real Prometheus: the committed one loads and evaluates without error,
and, with `for = "0s"`, every rule fires on live series that break its bounds.

The series come from prometheus_client's own HTTP server, one per catalogue metric a rule
reads, with the catalogue's labels; each holds a value the rule's promtool probes say
fires it. Prometheus scrapes and evaluates every second; the test polls the rules API until
each rule has been evaluated, and checks states, never times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_server import StartPrometheus

from observe.alerts.config import AlertsConfig, RuleOverride
from observe.alerts.defaults import DEFAULT_RULES
from observe.alerts.files import RULES_FILE, write_alert_files
from observe.alerts.promtool_tests import SHARE_TOTAL, Probe, probes
from observe.alerts.rules import Rule
from observe.alerts.signals import Quantile, Rate, Share, Value
from observe.catalogue import BY_NAME
from observe.generate import ROOT


def _feed(rule: Rule, registry: CollectorRegistry) -> tuple[Probe, Callable[[], None]]:
    """Makes the rule's metrics in `registry` and returns the first probe that fires it, and
    what moves them once to its value (counters rise by it each call)."""
    probe = next(p for p in probes(rule, steps=1) if rule.violated(p.value))
    value = probe.value
    signal = rule.signal
    metrics = [BY_NAME[name] for name in signal.metrics]
    values = dict.fromkeys(metrics[0].all_labels, "0")

    def gauge(name: str, to: float) -> None:
        prometheus_name = BY_NAME[name].prometheus_name
        Gauge(prometheus_name, "", values.keys(), registry=registry).labels(**values).set(to)

    if isinstance(signal, Value):
        gauge(signal.metric, value)
        return probe, lambda: None
    if isinstance(signal, Quantile):
        histogram = Histogram(
            metrics[0].prometheus_name, "", values.keys(), buckets=signal.buckets, registry=registry
        ).labels(**values)
        return probe, lambda: histogram.observe(value)
    counters = [
        Counter(m.prometheus_name, "", values.keys(), registry=registry).labels(**values)
        for m in metrics
    ]
    if isinstance(signal, Rate):
        return probe, lambda: counters[0].inc(value)
    assert isinstance(signal, Share)
    part = round(value * SHARE_TOTAL)
    rises = [(c, n) for c, n in zip(counters, (part, SHARE_TOTAL - part), strict=True) if n]

    def rise() -> None:
        for counter, n in rises:
            counter.inc(n)

    return probe, rise


@pytest.mark.slow
def test_every_rule_loads_evaluates_and_fires_in_prometheus(
    prometheus: StartPrometheus, tmp_path: Path
) -> None:
    immediate = AlertsConfig(rules={r.name: RuleOverride(for_="0s") for r in DEFAULT_RULES})
    write_alert_files(immediate, tmp_path / "immediate")
    registry = CollectorRegistry()
    fed = {rule.name: _feed(rule, registry) for rule in immediate.alert_rules()}
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    committed = ROOT / "alerts" / RULES_FILE
    rule_files = [committed, tmp_path / "immediate" / RULES_FILE]
    names = {rule.name for rule in DEFAULT_RULES}
    try:
        with prometheus([f"127.0.0.1:{server.server_port}"], rule_files=rule_files) as api:
            deadline = time.monotonic() + 90
            while True:
                for _, feed in fed.values():
                    feed()
                groups = {g["file"]: g["rules"] for g in api.get("/api/v1/rules")["groups"]}
                loaded = [r for rules in groups.values() for r in rules]
                firing = {r["name"] for r in groups.get(str(rule_files[1]), [])
                          if r["state"] == "firing"}  # fmt: skip
                evaluated = all(r["health"] != "unknown" for r in loaded)
                if (evaluated and firing == names) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            alerts = api.get("/api/v1/alerts")["alerts"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert set(groups) == {str(p) for p in rule_files}
    for file, rules in groups.items():
        assert {r["name"] for r in rules} == names, file
        errors = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
        assert not errors, (file, errors)
    assert firing == names
    fired = {a["labels"]["alertname"]: a for a in alerts if a["state"] == "firing"}
    for rule in immediate.alert_rules():
        labels = fired[rule.name]["labels"]
        assert labels["severity"] == rule.severity and labels["job"] == "observe"
        assert set(rule.signal.labels) <= set(labels), rule.name
        assert rule.violated(float(fired[rule.name]["value"])), rule.name
