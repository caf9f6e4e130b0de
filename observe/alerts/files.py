"""The alert files, by path under `alerts/`: the Prometheus rule file, its promtool tests,
the Grafana provisioning file and the runbook, all made from one `AlertsConfig`."""

from __future__ import annotations

from pathlib import Path

from observe.alerts.config import AlertsConfig
from observe.alerts.grafana import render_grafana_alerting
from observe.alerts.prometheus import render_rule_file
from observe.alerts.promtool_tests import render_test_file
from observe.alerts.runbook import render_runbook

# `collectors/prometheus.yml` (observe/collectors.py) loads it.
RULES_FILE = "observe.rules.yml"
TESTS_DIR = "tests"
GRAFANA_FILE = "grafana-alerting.yml"
RUNBOOK_FILE = "README.md"


def alert_files(config: AlertsConfig) -> dict[str, str]:
    """Each file's path (relative, `/`-separated) and content."""
    rules = config.alert_rules()
    files = {RULES_FILE: render_rule_file(rules)}
    for rule in rules:
        files[f"{TESTS_DIR}/{rule.name}.yml"] = render_test_file(rule, f"../{RULES_FILE}")
    files[GRAFANA_FILE] = render_grafana_alerting(rules, config.grafana_datasource_uid)
    files[RUNBOOK_FILE] = render_runbook(
        rules,
        rules_file=RULES_FILE,
        tests_dir=TESTS_DIR,
        grafana_file=GRAFANA_FILE,
        datasource=config.grafana_datasource_uid,
    )
    return files


def write_alert_files(config: AlertsConfig, directory: Path) -> list[Path]:
    written = []
    for path, text in alert_files(config).items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
