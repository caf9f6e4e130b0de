"""The demo: fine-tune on one domain, then serve traffic that shifts to another, monitored.

Two monitored runs, one for training and one for serving, each with its store records and
`/metrics` endpoint, run exactly as `observe train` and `observe infer` run them. It ends
with the serving run's alert states, evaluated on the store, and writes the monitoring
files (Prometheus's configuration, the alert rules, the Grafana dashboards and their
provisioning) beside its checkpoint, saying how to start them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from observe import jobs
from observe.alerts.evaluate import AlertRow, status_rows
from observe.generate import write_monitoring
from observe.settings import Settings
from observe.store.engine import connect, resolve_url
from observe.workload.job_config import DemoConfig


@dataclass(frozen=True)
class DemoResult:
    training: jobs.Training
    serving: jobs.Serving
    # Every alert rule's state on the serving run, as the store has it.
    alerts: list[AlertRow]
    # The directory holding prometheus.yml, alerts/ and dashboards/.
    monitoring: Path

    def format(self) -> str:
        return f"{self.training.format()}\n{self.serving.format()}"

    def next_steps(self) -> str:
        where = self.monitoring.resolve()
        return "\n".join(
            [
                f"monitoring files in {where}: prometheus.yml, alerts/, dashboards/",
                "watch the next run with Prometheus and Grafana (serving metrics on the default "
                "port):",
                f"  prometheus --config.file={where}/prometheus.yml",
                f"  cd {where} && grafana server --homepath /usr/share/grafana "
                'cfg:default.paths.provisioning="$PWD/dashboards/provisioning"',
            ]
        )


def run_demo(
    config: DemoConfig,
    out_dir: str | os.PathLike[str],
    settings: Settings,
    *,
    progress: bool = True,
) -> DemoResult:
    monitor = dataclasses.replace(settings.monitor, window_sample_size=config.drift_window)
    settings = dataclasses.replace(settings, monitor=monitor)
    training = jobs.train(settings, config.fine_tune, config.train, out_dir, progress=progress)
    serving = jobs.serve(
        settings,
        training.result.model,
        Path(out_dir).name,
        config.serve,
        config.generation,
        drift=settings.drift,
        trained_until=training.result.trained_until,
    )
    engine = connect(resolve_url(settings.db_url))
    try:
        alerts = status_rows(engine, settings.alerts.alert_rules(), run_id=serving.run_id)
    finally:
        engine.dispose()
    monitoring = write_monitoring(Path(out_dir) / "monitoring", settings.alerts)
    return DemoResult(training, serving, alerts, monitoring.parent)
