"""Files generated from code and committed: `make generate` writes them, a test compares.

python -m observe.generate          # write every generated file
python -m observe.generate --check  # exit 1 listing the files that are out of date
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from observe.alerts.config import AlertsConfig
from observe.alerts.files import GRAFANA_FILE, alert_files
from observe.collectors import render_prometheus_config
from observe.dashboards import dashboard_files
from observe.dashboards.provisioning import provisioning_files
from observe.docs import render_metrics_doc

ROOT = Path(__file__).resolve().parents[1]


def _alert_file(path: str) -> str:
    # The committed alert files are the defaults', whatever observe.toml lies around.
    return alert_files(AlertsConfig())[path]


GENERATED: dict[str, Callable[[], str]] = {
    "docs/metrics.md": render_metrics_doc,
    "collectors/prometheus.yml": render_prometheus_config,
    **dashboard_files(),
    **provisioning_files(),
    **{f"alerts/{p}": functools.partial(_alert_file, p) for p in alert_files(AlertsConfig())},
    # Where a stock Grafana pointed at dashboards/provisioning/ finds the alert rules.
    "dashboards/provisioning/alerting/observe.yml": functools.partial(_alert_file, GRAFANA_FILE),
}


def write_monitoring(directory: Path, alerts: AlertsConfig) -> Path:
    """Prometheus's configuration, the alert rules (for `alerts`) and the dashboards with
    their Grafana provisioning, in `directory`, laid out as in the repository; returns the
    Prometheus configuration's path. Start Grafana from `directory`."""
    files: dict[str, str] = {
        "prometheus.yml": render_prometheus_config("alerts", ranks=1),
        **{f"alerts/{path}": text for path, text in alert_files(alerts).items()},
        **{path: render() for path, render in GENERATED.items() if path.startswith("dashboards/")},
    }
    for path, text in files.items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return directory / "prometheus.yml"


def stale(root: Path = ROOT) -> list[str]:
    """Generated files whose committed content differs from what the code renders."""
    return [
        path
        for path, render in GENERATED.items()
        if not (root / path).exists() or (root / path).read_text(encoding="utf-8") != render()
    ]


def write(root: Path = ROOT) -> None:
    for path, render in GENERATED.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description="Write or check observe's generated files.")
    parser.add_argument("--check", action="store_true", help="only report stale files")
    if parser.parse_args().check:
        outdated = stale()
        if outdated:
            print("out of date (run `make generate`):", *outdated, sep="\n  ")
            sys.exit(1)
        return
    write()


if __name__ == "__main__":
    main()
