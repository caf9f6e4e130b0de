"""The demo: fine-tune on one domain, then serve traffic that shifts to another, monitored.

Two monitored runs, one for training and one for serving, each with its store records and
`/metrics` endpoint, run exactly as `observe train` and `observe infer` run them. It ends
by writing the monitoring files (Prometheus's configuration, the alert rules, the Grafana
dashboards and their provisioning) beside its checkpoint, and says how to start them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from observe import jobs
from observe.generate import write_monitoring
from observe.settings import Settings
from observe.workload.job_config import DemoConfig


@dataclass(frozen=True)
class DemoResult:
    training: jobs.Training
    serving: jobs.Serving
    # The directory holding prometheus.yml, alerts/ and dashboards/.
    monitoring: Path

    def format(self) -> str:
        where = self.monitoring.resolve()
        return "\n".join(
            [
                self.training.format(),
                self.serving.format(),
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
    monitoring = write_monitoring(Path(out_dir) / "monitoring", settings.alerts)
    return DemoResult(training, serving, monitoring.parent)
