"""Commands that need no model, the drift core and generating files (dashboards, alerts)
load no torch; lazy attributes resolve."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import observe

NO_TORCH = """
import sys
from typer.testing import CliRunner
import observe, observe.catalogue, observe.settings, observe.store.writer, observe.store.queries
import observe.hooks.stats, observe.hooks.config, observe.telemetry.layer_families
import observe.drift.projection, observe.drift.score, observe.drift.calibration
import observe.drift.divergence, observe.drift.report
import observe.alerts.files, observe.alerts.promtool, observe.dashboards, observe.generate
import observe.alerts.evaluate, observe.alerts.prometheus_api, observe.store.alerting
# Rendering every generated file: dashboards, provisioning and alert files included.
assert all(render() for render in observe.generate.GENERATED.values())
from observe.cli import app
runner = CliRunner()
for args in (["--help"], ["db", "upgrade"], ["runs"], ["runs", "--json"], ["db", "current"],
             ["train", "--help"], ["query", "observe_moe_expert_tokens"], ["alerts", "list"],
             ["alerts", "list", "--json"], ["alerts", "write", sys.argv[1]],
             ["alerts", "status"], ["alerts", "status", "--json"], ["alerts", "history"],
             ["alerts", "check"]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
# PATH is empty: no promtool, so `alerts test` explains how to get it.
result = runner.invoke(app, ["alerts", "test"])
assert result.exit_code == 2 and "promtool" in result.output, result.output
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded[:5]
print("no torch")
"""


def test_the_cli_the_store_the_drift_core_and_generating_load_no_torch(tmp_path: Path) -> None:
    env = {"OBSERVE_DB_URL": f"sqlite:///{tmp_path / 'observe.db'}", "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(tmp_path / "alerts")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no torch"


@pytest.mark.parametrize(
    "package", ["observe", "observe.hooks", "observe.workload", "observe.drift"]
)
def test_every_lazy_attribute_resolves(package: str) -> None:
    module = importlib.import_module(package)
    names = [n for n in module.__all__ if not n.startswith("__")]
    assert set(names) <= set(dir(module))
    for name in names:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018


def test_the_drop_in_names_are_exported() -> None:
    assert {"session", "MonitoringSession", "Settings", "attach"} <= set(observe.__all__)
