"""The generated alert files: deterministic, accepted by the real promtool, their tests pass
and fail when a rule or an expectation is broken; the Grafana file is well formed; and
`observe alerts list|test|write` show and use the rules as configured."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_runner import invoke

from observe.alerts.config import AlertsConfig, RuleOverride
from observe.alerts.defaults import DEFAULT_RULES, SEMANTIC_DRIFT_RULE
from observe.alerts.files import (
    GRAFANA_FILE,
    RULES_FILE,
    TESTS_DIR,
    alert_files,
    write_alert_files,
)
from observe.alerts.promtool import check_and_test
from observe.generate import GENERATED, ROOT
from observe.grafana_ids import PROMETHEUS_UID

ALERTS = ROOT / "alerts"
RENDER = (
    "import json; from observe.alerts.config import AlertsConfig;"
    "from observe.alerts.files import alert_files; print(json.dumps(alert_files(AlertsConfig())))"
)


def test_generation_is_deterministic_across_processes() -> None:
    """Same bytes in a fresh interpreter (another hash salt, another dict history)."""
    other = subprocess.run(
        [sys.executable, "-c", RENDER], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(other.stdout) == alert_files(AlertsConfig())


def test_alerts_holds_exactly_the_generated_files() -> None:
    """A renamed or removed rule leaves no test behind for promtool to trip on."""
    on_disk = {str(p.relative_to(ROOT)) for p in ALERTS.rglob("*") if p.is_file()}
    assert on_disk == {path for path in GENERATED if path.startswith("alerts/")}
    tests = {p.stem for p in (ALERTS / TESTS_DIR).glob("*.yml")}
    assert tests == {rule.name for rule in DEFAULT_RULES}


def test_promtool_checks_the_rules_and_every_test_passes() -> None:
    passed, output = check_and_test(ALERTS)
    assert passed, output
    assert f"SUCCESS: {len(DEFAULT_RULES)} rules found" in output
    assert output.count("SUCCESS") == 1 + len(DEFAULT_RULES)


def test_every_rule_is_tested_firing_and_quiet_and_ranges_on_both_sides() -> None:
    for rule in DEFAULT_RULES:
        document = yaml.safe_load((ALERTS / TESTS_DIR / f"{rule.name}.yml").read_text())
        (test,) = document["tests"]
        final = test["alert_rule_test"][-1]
        fired = {a["exp_labels"]["instance"] for a in final["exp_alerts"]}
        probes = {s["series"].split('instance="')[1].split('"')[0] for s in test["input_series"]}
        assert fired and probes - fired, rule.name
        assert all("__name__" not in a["exp_labels"] for a in final["exp_alerts"])
        if hasattr(rule, "low"):
            values = {float(p.removeprefix("probe-")) for p in fired}
            assert min(values) < rule.low and max(values) > rule.high, rule.name  # type: ignore[attr-defined]


def _copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(ALERTS, tmp_path / "alerts"))


def test_a_broken_expectation_fails_promtool(tmp_path: Path) -> None:
    alerts = _copy(tmp_path)
    path = alerts / TESTS_DIR / "ObserveCacheMissRate.yml"
    document = yaml.safe_load(path.read_text())
    expected = document["tests"][0]["alert_rule_test"][-1]["exp_alerts"]
    expected[0]["exp_labels"]["severity"] = "critical"
    path.write_text(yaml.safe_dump(document))
    passed, output = check_and_test(alerts)
    assert not passed
    assert "alertname: ObserveCacheMissRate" in output and "FAILED" in output


def test_a_broken_rule_fails_its_tests(tmp_path: Path) -> None:
    """A bound moved in the rule file but not in Python: the probes catch it."""
    alerts = _copy(tmp_path)
    rules = alerts / RULES_FILE
    text = rules.read_text()
    assert "observe_moe_load_imbalance > 2\n" in text
    rules.write_text(
        text.replace("observe_moe_load_imbalance > 2\n", "observe_moe_load_imbalance > 4\n")
    )
    passed, output = check_and_test(alerts)
    assert not passed and "alertname: ObserveLoadImbalance" in output


def test_a_drift_alert_on_one_window_fails_the_probes(tmp_path: Path) -> None:
    """Paging on a single window over its threshold, the false alarm the rule's count of
    windows in a row keeps away, fires on the probe at the bound."""
    alerts = _copy(tmp_path)
    rules = alerts / RULES_FILE
    document = yaml.safe_load(rules.read_text())
    (drift,) = [r for r in document["groups"][0]["rules"] if r["alert"] == SEMANTIC_DRIFT_RULE.name]
    assert drift["expr"] == SEMANTIC_DRIFT_RULE.expr
    drift["expr"] = "observe_drift_semantic_drifted_windows > 0"
    rules.write_text(yaml.safe_dump(document))
    passed, output = check_and_test(alerts)
    assert not passed and f"alertname: {SEMANTIC_DRIFT_RULE.name}" in output
    assert "probe-1" in output


def test_the_drift_probes_fire_from_the_second_window_in_a_row() -> None:
    document = yaml.safe_load((ALERTS / TESTS_DIR / f"{SEMANTIC_DRIFT_RULE.name}.yml").read_text())
    (test,) = document["tests"]
    fired = {a["exp_labels"]["instance"] for a in test["alert_rule_test"][-1]["exp_alerts"]}
    assert fired == {"probe-2"}
    probes = {s["series"].split('instance="')[1].split('"')[0] for s in test["input_series"]}
    assert probes == {"probe-0", "probe-1", "probe-2"}


def test_an_invalid_rule_file_fails_the_check(tmp_path: Path) -> None:
    alerts = _copy(tmp_path)
    rules = alerts / RULES_FILE
    rules.write_text(rules.read_text().replace("for: 5m", "for: five minutes", 1))
    passed, output = check_and_test(alerts)
    assert not passed and "five minutes" in output


def test_the_grafana_file_provisions_each_rule_on_its_bounds() -> None:
    document = yaml.safe_load((ALERTS / GRAFANA_FILE).read_text())
    assert document["apiVersion"] == 1
    (group,) = document["groups"]
    assert {"orgId", "name", "folder", "interval", "rules"} <= set(group)
    rules = {r["title"]: r for r in group["rules"]}
    assert list(rules) == [rule.name for rule in DEFAULT_RULES]
    assert len({r["uid"] for r in rules.values()}) == len(rules)
    for rule in DEFAULT_RULES:
        provisioned = rules[rule.name]
        assert not {"folderUID", "orgID", "ruleGroup"} & set(provisioned)
        assert provisioned["for"] == rule.for_
        assert provisioned["labels"] == {"severity": str(rule.severity)}
        assert provisioned["annotations"]["runbook_url"] == rule.runbook_url
        query, reduce, condition = provisioned["data"]
        assert provisioned["condition"] == condition["refId"] == "C"
        assert query["datasourceUid"] == PROMETHEUS_UID
        assert query["model"]["expr"] == rule.signal.promql(rule.selector)
        assert reduce["model"] == {
            "expression": "A",
            "reducer": "last",
            "type": "reduce",
            "refId": "B",
        }
        (evaluator,) = [c["evaluator"] for c in condition["model"]["conditions"]]
        if hasattr(rule, "low"):
            assert evaluator == {"type": "outside_range", "params": [rule.low, rule.high]}  # type: ignore[attr-defined]
        else:
            assert evaluator == {"type": "gt", "params": [rule.value]}  # type: ignore[attr-defined]


def test_the_runbook_has_a_section_per_rule_url() -> None:
    runbook = (ALERTS / "README.md").read_text()
    for rule in DEFAULT_RULES:
        anchor = rule.runbook_url.split("#")[1]
        assert f"\n## {rule.name}\n" in runbook and anchor == rule.name.lower()
        assert rule.expr in runbook


@pytest.mark.parametrize("for_", ["0s", "1m"])
def test_short_for_still_makes_tests_that_pass(tmp_path: Path, for_: str) -> None:
    config = AlertsConfig(rules={r.name: RuleOverride(for_=for_) for r in DEFAULT_RULES})
    write_alert_files(config, tmp_path)
    passed, output = check_and_test(tmp_path)
    assert passed, output


# -- the CLI -------------------------------------------------------------------------------


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "observe.toml"
    path.write_text(text)
    return path


def test_alerts_list_json_shows_every_rule_as_configured(tmp_path: Path) -> None:
    config = _toml(
        tmp_path, '[alerts]\nrun = ["prod"]\n[alerts.rules.ObserveRoutingEntropy]\nlow = 0.6\n'
    )
    code, output = invoke("--config", config, "alerts", "list", "--json")
    assert code == 0, output
    listed = {r["name"]: r for r in json.loads(output)}
    assert list(listed) == [rule.name for rule in DEFAULT_RULES]
    entropy = listed["ObserveRoutingEntropy"]
    assert (entropy["kind"], entropy["low"], entropy["high"]) == ("range", 0.6, 0.75)
    series = 'observe_moe_routing_entropy{run="prod"}'
    assert entropy["expr"] == f"{series} < 0.6 or {series} > 0.75"
    drift = listed["ObserveSemanticDrift"]
    assert (drift["kind"], drift["op"], drift["value"], drift["severity"], drift["for"]) == (
        "threshold", ">", 1, "critical", SEMANTIC_DRIFT_RULE.for_
    )  # fmt: skip
    assert drift["metrics"] == ["observe_drift_semantic_drifted_windows"]
    code, table = invoke("--config", config, "alerts", "list")
    words = " ".join(table.split())  # lines wrap at the terminal's width
    assert code == 0 and "ObserveRoutingEntropy warning, for 10m:" in words
    assert "observe_moe_routing_entropy outside 0.6–0.75" in words


def test_overrides_change_the_written_expression_and_for(tmp_path: Path) -> None:
    config = _toml(
        tmp_path,
        '[alerts]\nmodel = ["mixtral"]\n'
        '[alerts.rules.ObserveSemanticDrift]\nvalue = 3\nfor = "2m"\n',
    )
    code, output = invoke("--config", config, "alerts", "write", tmp_path / "out")
    assert code == 0, output
    written = yaml.safe_load((tmp_path / "out" / RULES_FILE).read_text())
    drift = next(r for r in written["groups"][0]["rules"] if r["alert"] == "ObserveSemanticDrift")
    assert drift["expr"] == 'observe_drift_semantic_drifted_windows{model="mixtral"} > 3'
    assert drift["for"] == "2m"
    passed, promtool_output = check_and_test(tmp_path / "out")
    assert passed, promtool_output


def test_alerts_test_runs_promtool_on_the_configured_rules(tmp_path: Path) -> None:
    config = _toml(tmp_path, '[alerts.rules.ObserveDeadExperts]\nfor = "90s"\n')
    code, output = invoke("--config", config, "alerts", "test")
    assert code == 0, output
    assert "ObserveDeadExperts.yml" in output
    assert f"{len(DEFAULT_RULES)} rules checked and tested" in output


def test_alerts_test_without_promtool_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    code, output = invoke("alerts", "test")
    assert code == 2
    assert "promtool is not on PATH" in output and "apt-get install prometheus" in output
    assert "Traceback" not in output


def test_a_bad_override_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = _toml(tmp_path, "[alerts.rules.ObserveCacheMissRate]\nlow = 0.3\n")
    code, output = invoke("--config", config, "alerts", "list")
    assert code == 2
    assert "ObserveCacheMissRate: low = 0.3 must be below high = 0.25" in output
    assert "Traceback" not in output


def test_prometheus_configurations_load_their_rules(tmp_path: Path) -> None:
    """The committed collectors/prometheus.yml and the copy the demo writes both pass
    `promtool check config`, which loads the rule files they name."""
    from observe.alerts.promtool import promtool
    from observe.generate import ROOT, write_monitoring

    written = write_monitoring(tmp_path / "monitoring", AlertsConfig())
    for config in (ROOT / "collectors" / "prometheus.yml", written):
        result = subprocess.run(
            [promtool(), "check", "config", str(config)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(AlertsConfig().alert_rules())} rules found" in result.stdout
