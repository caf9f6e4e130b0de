"""`observe alerts status|history|check`: a monitored run whose evaluator records a firing
alert, read back from the store; and a real Prometheus's alert states, read through its
rules API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_runner import invoke
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_server import StartPrometheus, free_port

from observe.alerts.config import AlertsConfig
from observe.alerts.defaults import SEMANTIC_DRIFT_RULE
from observe.alerts.files import RULES_FILE, write_alert_files
from observe.catalogue import SEMANTIC_DRIFTED_WINDOWS
from observe.hooks.config import MonitorConfig
from observe.pipeline import MonitoringSession
from observe.settings import load_settings

# Load imbalance is at least 1: over 0, it fires at once. Critical, so `check` exits 1. The
# interval is past the test's length: only the evaluation at close runs, deterministically.
CONFIG = """
[alerts]
evaluation_interval_s = 3600

[alerts.rules.ObserveLoadImbalance]
value = 0
for = "0s"
severity = "critical"
"""


@pytest.fixture(scope="module")
def monitored_run(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> tuple[Path, str]:
    import torch

    from observe.workload.config import get_config
    from observe.workload.model import MoETransformer

    where = tmp_path_factory.mktemp("alerts")
    config = where / "observe.toml"
    config.write_text(CONFIG)
    settings = load_settings(
        config,
        environ={},
        overrides={
            "db_url": f"sqlite:///{where / 'observe.db'}",
            "spool_dir": where / "spool",
            "prometheus_port": None,
        },
    )
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    rng = np.random.default_rng(0)
    with MonitoringSession(settings, model="tiny") as session, torch.no_grad():
        monitor = session.attach(model)
        for _ in range(2):
            model(torch.from_numpy(rng.integers(3, 250, size=(8, 16))))
            monitor.step()
    return config, session.run_id


def run_cli(config: Path, *args: str) -> tuple[int, str]:
    db = f"sqlite:///{config.parent / 'observe.db'}"
    return invoke("--config", config, "alerts", *args, "--db-url", db)


def test_a_monitored_runs_evaluator_records_the_alert_it_fired(
    monitored_run: tuple[Path, str],
) -> None:
    config, run_id = monitored_run
    code, output = run_cli(config, "history", "--json")
    assert code == 0, output
    events = json.loads(output)
    assert {(e["alert"], e["state"], e["run"]) for e in events} == {
        ("ObserveLoadImbalance", "firing", run_id)
    }
    assert all(e["labels"]["run"] == run_id and e["severity"] == "critical" for e in events)
    assert all(e["annotations"]["summary"] for e in events)


def test_status_from_the_store_shows_it_firing_since_it_was_recorded(
    monitored_run: tuple[Path, str],
) -> None:
    config, run_id = monitored_run
    code, output = run_cli(config, "status", "--json", "--run", run_id)
    assert code == 0, output
    rows = json.loads(output)
    firing = [r for r in rows if r["rule"] == "ObserveLoadImbalance"]
    assert firing and all(r["state"] == "firing" and r["value"] >= 1 for r in firing)
    _, history = run_cli(config, "history", "--json", "--run", run_id)
    assert {r["since"] for r in firing} <= {e["time"] for e in json.loads(history)}
    assert {r["rule"] for r in rows} >= {"ObserveSemanticDrift", "ObserveLoadImbalance"}
    code, output = run_cli(config, "status")  # the latest run, as a table
    assert code == 0 and "ObserveLoadImbalance" in output and "firing" in output


def test_check_exits_1_while_a_critical_rule_fires(monitored_run: tuple[Path, str]) -> None:
    config, run_id = monitored_run
    code, output = run_cli(config, "check", "--run", run_id)
    assert code == 1 and "ObserveLoadImbalance firing" in output


def test_bad_input_is_exit_2_with_one_line(monitored_run: tuple[Path, str]) -> None:
    config, _ = monitored_run
    code, output = run_cli(config, "history", "--since", "yesterday")
    assert code == 2 and "cannot read the duration" in output
    code, output = run_cli(config, "status", "--run", "nope")
    assert code == 2 and "no run 'nope'" in output


def test_an_unreachable_prometheus_is_exit_2_with_the_reason() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for verb in ("status", "check"):
        code, output = invoke("alerts", verb, "--prometheus", url)
        assert code == 2, output
        assert f"cannot reach Prometheus at {url}" in output and "Traceback" not in output


def _wait_for_state(url: str, rule: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        code, output = invoke("alerts", "status", "--prometheus", url, "--json")
        assert code == 0, output
        rows = [r for r in json.loads(output) if r["rule"] == rule]
        if all(r["state"] == state for r in rows) or time.monotonic() > deadline:
            return rows[0]
        time.sleep(0.5)


def test_status_and_check_read_a_real_prometheus(
    prometheus: StartPrometheus, tmp_path: Path
) -> None:
    write_alert_files(AlertsConfig(), tmp_path / "rules")
    registry = CollectorRegistry()
    labels = dict.fromkeys(SEMANTIC_DRIFTED_WINDOWS.all_labels, "0")
    gauge = Gauge(SEMANTIC_DRIFTED_WINDOWS.prometheus_name, "", labels.keys(), registry=registry)
    drift = gauge.labels(**labels)
    drift.set(3)  # the third scored window in a row over its threshold
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        with prometheus(
            [f"127.0.0.1:{server.server_port}"], rule_files=[tmp_path / "rules" / RULES_FILE]
        ) as api:
            row = _wait_for_state(api.url, SEMANTIC_DRIFT_RULE.name, "firing")
            assert row["state"] == "firing" and row["value"] == 3 and row["since"]
            assert row["labels"]["job"] == "observe" and row["severity"] == "critical"
            code, output = invoke("alerts", "check", "--prometheus", api.url)
            assert code == 1 and f"{SEMANTIC_DRIFT_RULE.name} firing" in output
            drift.set(0)
            row = _wait_for_state(api.url, SEMANTIC_DRIFT_RULE.name, "ok")
            assert row["state"] == "ok"
            code, output = invoke("alerts", "check", "--prometheus", api.url)
            assert code == 0 and "no critical alert firing" in output
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_background_evaluator_records_while_the_run_goes_on(tmp_path: Path) -> None:
    """Evaluated every 0.2 s: the firing event is in the store before the run ends."""
    import torch

    from observe.store.alerting import alert_events
    from observe.store.engine import connect
    from observe.workload.config import get_config
    from observe.workload.model import MoETransformer

    config = tmp_path / "observe.toml"
    config.write_text(CONFIG.replace("evaluation_interval_s = 3600", "evaluation_interval_s = 0.2"))
    url = f"sqlite:///{tmp_path / 'observe.db'}"
    settings = load_settings(
        config,
        environ={},
        overrides={
            "db_url": url,
            "spool_dir": tmp_path / "spool",
            "prometheus_port": None,
            "export_interval_s": 0.2,
        },
    )
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    with MonitoringSession(settings, model="tiny") as session, torch.no_grad():
        monitor = session.attach(model, MonitorConfig(flush_every=1))
        model(torch.randint(3, 250, (8, 16)))
        monitor.step()
        engine = connect(url)
        deadline = time.monotonic() + 60
        try:
            while not [e for e in alert_events(engine, run_id=session.run_id)
                       if e.alert == "ObserveLoadImbalance" and e.state == "firing"]:  # fmt: skip
                assert time.monotonic() < deadline, "the evaluator recorded nothing in a minute"
                time.sleep(0.2)
        finally:
            engine.dispose()
