"""One monitored run end to end: the store, delivery, OpenTelemetry and the monitor's sinks.

This is the application side of observe: `observe train`, `observe infer`, the demo, the
HF `ObserveCallback` and users' own loops (`observe.session`) open a session, attach
monitors through it, and close it, which flushes everything with a time limit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from opentelemetry.metrics import MeterProvider
from torch import nn

from observe.alerts.background import BackgroundEvaluator
from observe.catalogue import MODEL_LABEL, RANK_LABEL, RUN_LABEL, WORLD_SIZE_LABEL
from observe.distributed import Placement, placement, shared_run_id
from observe.errors import ObserveError
from observe.hooks.adapters import RouterAdapter
from observe.hooks.config import MonitorConfig
from observe.hooks.monitor import Monitor, attach
from observe.hooks.worker import WindowSink
from observe.lifetime import Closeable, Deadline
from observe.settings import Settings, load_settings
from observe.store.baselines import npz_bytes
from observe.store.engine import resolve_url
from observe.store.liveness import this_process
from observe.store.records import Batch, HiddenSample, RunEnd, WindowSample
from observe.store.spools import open_delivery
from observe.store.storable import check, problem
from observe.store.writer import Store
from observe.telemetry.array_family import AnyFamily
from observe.telemetry.expert_families import ExpertFamilies
from observe.telemetry.freshness import register_freshness
from observe.telemetry.health import register_health
from observe.telemetry.layer_families import LayerFamilies
from observe.telemetry.limits import LabelLimiter
from observe.telemetry.provider import Telemetry
from observe.telemetry.store_exporter import ExpertLoadSink, StoreExporter

if TYPE_CHECKING:
    # Drift loads Evidently (pandas, scikit-learn): only runs that score drift pay for it.
    from observe.drift.baseline import Baseline
    from observe.drift.config import DriftConfig
    from observe.drift.live import DriftOutput, DriftSink

logger = logging.getLogger("observe")


class MonitoringSession(Closeable):
    """Everything one monitored run needs; the store is checked before anything starts.

    In a distributed run (observe/distributed.py) each rank opens its own session: all
    share one run id, and each sends its series, labelled with its rank, under it. What is
    the run's once — its row (start, heartbeats, end), its config, its expert load per
    window, kept hidden-state samples, drift results and alert evaluation — rank 0 alone
    records.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        model: str,
        config: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        where: Placement | None = None,
    ) -> None:
        """`where`: this process's place in a distributed run, by default what
        torch.distributed or torchrun's variables say."""
        # As the store would, but before it is opened: nothing is left behind.
        check("model name", model, identifier=True)
        self.settings = settings
        self.model = model
        self.placement = where if where is not None else placement()
        self.run_id = shared_run_id(model, self.placement, run_id)
        check("run id", self.run_id, identifier=True)
        # Only rank 0 speaks for the run: the others would make `lost` mean any rank.
        self.leads = self.placement is None or self.placement.leads
        url = resolve_url(settings.db_url)
        # Opened here, synchronously: a wrong URL or password fails before training starts.
        self._store = Store.open(url)
        # Kept with the run: whether its routing counts are estimates (router sampling).
        self._monitor_config = settings.monitor
        if self.leads:
            self._store.start_run(
                self.run_id,
                model,
                {**(config or {}), "monitor": _monitor_record(settings.monitor)},
            )
        self.delivery = open_delivery(url, settings.spool_dir, settings.spool_max_bytes)
        self.limiter = LabelLimiter(settings.label_limit)
        labels = {RUN_LABEL: self.run_id, MODEL_LABEL: model}
        if self.placement is not None:
            labels[RANK_LABEL] = str(self.placement.rank)
            labels[WORLD_SIZE_LABEL] = str(self.placement.world_size)
        self._experts = ExpertFamilies(settings.prometheus_detail, labels, self.limiter)
        self._layers = LayerFamilies(labels, self.limiter)
        self._store_exporter = StoreExporter(
            self.delivery, self.run_id, self._stored_families, heartbeats=self.leads
        )
        try:
            self.telemetry = Telemetry(
                settings,
                run_id=self.run_id,
                model=model,
                exporters=[self._store_exporter],
                placement=self.placement,
                arrays=(self._layers, self._experts),
            )
        except BaseException:
            # E.g. the /metrics port is taken: the run is recorded as failed, not running.
            if self.leads:
                self.delivery.submit(self._end("failed"))
            self.delivery.close(settings.close_timeout_s)
            self._store.close()
            raise
        self._meter = self.telemetry.meter()
        register_health(
            self._meter, self.delivery, self.limiter, self._store_exporter, self.telemetry.otlp
        )
        # Every rank's windows reach expert_load, whose rows are the run's: the store adds
        # each rank's tokens to a (step, layer, expert) row. Under a global reduction only
        # rank 0 has windows, of every rank's tokens. Per-rank figures are in the series.
        self._sinks: tuple[WindowSink, ...] = (
            self._layers,
            self._experts,
            ExpertLoadSink(self.delivery, self.run_id),
        )
        self._monitors: list[Monitor] = []
        self._drift: list[DriftSink] = []
        self._freshness = False
        self._closed = False
        interval_s = settings.alerts.evaluation_interval_s
        self._alerts = (
            BackgroundEvaluator(settings.alerts.alert_rules(), url, self.run_id, interval_s)
            if interval_s > 0 and self.leads
            else None
        )

    def _stored_families(self) -> list[AnyFamily]:
        """What each store export takes as arrays: the per-expert families once per window,
        the per-layer ones every time (`LayerFamilies` says why)."""
        return [*self._experts.stored(), *self._layers.families()]

    @property
    def store(self) -> Store:
        """The run's store, for baselines; not for use from other threads."""
        return self._store

    @property
    def meter_provider(self) -> MeterProvider:
        """Hand this to the workload so its own figures join the run's."""
        return self.telemetry.provider

    @property
    def metrics_port(self) -> int | None:
        return self.telemetry.metrics_port

    def attach(
        self,
        model: nn.Module,
        config: MonitorConfig | None = None,
        *,
        adapter: RouterAdapter | None = None,
        sinks: Sequence[WindowSink] = (),
        drift: DriftConfig | None = None,
        baseline: Baseline | None = None,
        trained_until: dt.datetime | None = None,
    ) -> Monitor:
        """`observe.attach` whose windows reach this run's Prometheus and store (and
        `sinks`); `config` replaces the settings' `[monitor]` table.

        With `drift` (or a `baseline`), each window is scored against `baseline`, by default
        the session model's active baseline in the store. `trained_until` (by default the
        baseline's) feeds the knowledge-freshness gauge.
        """
        # The store keeps layers' module names (hidden-state samples, drift results): one
        # it cannot keep is refused now, not when the run ends.
        for name, _ in model.named_modules():
            if found := problem("module name", name):
                raise ObserveError(f"{found}, or rename the module")
        drift_sink = None
        if drift is not None or baseline is not None:
            from observe.drift.baseline import Baseline

            baseline = baseline or Baseline.load(self._store, model=self.model)
            trained_until = trained_until or baseline.trained_until
            drift_sink = self._drift_sink(baseline, drift)
        if trained_until is not None and not self._freshness:
            register_freshness(self._meter, trained_until)
            self._freshness = True
        monitor = attach(
            model,
            config or self.settings.monitor,
            adapter=adapter,
            sinks=(*self._sinks, *sinks),
            drift=drift_sink,
        )
        self._record_monitor_config(monitor.config)
        # Only the caller's steps flush windows: the limit fits the model before the first.
        self._layers.fit(monitor)
        self._experts.fit(monitor)
        self._monitors.append(monitor)
        return monitor

    def _record_monitor_config(self, config: MonitorConfig) -> None:
        if config == self._monitor_config or not self.leads:
            return
        try:
            self._store.update_run_config(self.run_id, {"monitor": _monitor_record(config)})
        except ObserveError as exc:
            # The figures are still right; only the run's record of how they were taken is
            # behind. Monitoring goes on.
            logger.warning(
                "observe: could not record run %s's monitor config: %s", self.run_id, exc
            )
        else:
            self._monitor_config = config

    def _drift_sink(self, baseline: Baseline, config: DriftConfig | None) -> DriftSink:
        from observe.drift.live import DriftSink
        from observe.telemetry.drift_instruments import DriftInstruments, register_drift_windows
        from observe.telemetry.store_exporter import DriftResultWriter

        if self._drift:
            raise ObserveError(
                "this session already scores drift for a monitor: open a session per model"
            )
        # Drift results carry no rank: rank 0's are the run's; every rank's gauges show.
        outputs: tuple[DriftOutput, ...] = (DriftInstruments(self._meter),)
        if self.leads:
            outputs += (DriftResultWriter(self.delivery, self.run_id),)
        sink = DriftSink(baseline, config or self.settings.drift, outputs)
        register_drift_windows(self._meter, sink)
        self._drift.append(sink)
        return sink

    @property
    def drift(self) -> DriftSink | None:
        """The session's drift scoring, once a monitor was attached with drift."""
        return self._drift[0] if self._drift else None

    def close(self, status: str = "finished") -> None:
        """Flushes monitors and waits (at most `prometheus_linger_s`) for Prometheus to read
        the final values; then, within `close_timeout_s` whatever the network does, exports
        a last time and delivers.

        The run's end travels through the spool after everything it measured: what the
        store did not take in time waits there, and a later delivery to the store records it.
        In a distributed run every rank closes (its monitors reduce together); only rank 0
        records the run's end and its kept samples.
        """
        if self._closed:
            return
        end = self._end(status)  # first: a wrong status fails before anything stops
        self._closed = True
        for monitor in self._monitors:
            monitor.close()  # and its drift sink, which scores what is queued
        self.telemetry.await_final_scrape()
        deadline = Deadline(self.settings.close_timeout_s)
        # The last export, the kept samples and the end only go to the spool, which no
        # network holds up; delivering them and the last evaluation share what is left.
        self.telemetry.shutdown(deadline.left())
        if self.leads:
            self._keep_hidden_samples()
            self.delivery.submit(end)
        self.delivery.close(deadline.left())
        if self._alerts is not None:
            # After delivery: the last evaluation sees every sample of the run.
            self._alerts.shutdown(deadline.left())
        self._store.close()

    def _end(self, status: str) -> Batch:
        process = this_process()
        end = RunEnd(status, dt.datetime.now(dt.UTC), process.host, process.pid)
        return Batch(self.run_id, end=end)

    def _keep_hidden_samples(self) -> None:
        """Each monitor's sample of the run, so that a baseline can be made from it later,
        and the last drift-scored window's, for reports: a batch per layer, so that a large
        model's samples need no single spool line of their size."""
        samples = (
            (name, rows)
            for monitor in self._monitors
            for name, rows in monitor.hidden_states().items()
            if len(rows)
        )
        for layer, (name, rows) in enumerate(samples):
            data = npz_bytes(sample_ND=rows.numpy().astype(np.float16))
            self.delivery.submit(
                Batch(self.run_id, hidden_samples=(HiddenSample(layer, name, data),))
            )
        for sink in self._drift:
            for name, latest in sink.latest_samples.items():
                window = WindowSample(
                    latest.layer,
                    name,
                    latest.first_step,
                    latest.last_step,
                    npz_bytes(sample_ND=latest.rows_ND.astype(np.float16)),
                )
                self.delivery.submit(Batch(self.run_id, window_samples=(window,)))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close("finished" if exc_type is None else "failed")


def _monitor_record(config: MonitorConfig) -> dict[str, Any]:
    """A monitor config as JSON values, for the run's record in the store."""
    return {**dataclasses.asdict(config), "metrics": sorted(config.metrics)}


def session(
    model: str,
    *,
    config_file: str | os.PathLike[str] | None = None,
    run_config: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> MonitoringSession:
    """A monitoring session with the settings the CLI would use: `observe.toml` (or
    `config_file`), then `OBSERVE_*`, then `overrides` (any `Settings` field).

    with observe.session(model="my-moe") as session:
        monitor = session.attach(model)
    """
    settings = load_settings(config_file, overrides=overrides)
    return MonitoringSession(settings, model=model, config=run_config)
