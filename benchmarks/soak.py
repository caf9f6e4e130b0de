"""A long monitored training run through a store outage and a network partition.

The reference model trains for `--minutes` with observe attached through a session whose
store is a PostgreSQL cluster of the benchmark's own, reached through a loopback proxy. A
third of the way in the cluster stops for `--outage-s` (connections refused); two thirds
in the proxy stalls for `--partition-s` (connections open, nothing answered). An identical
model without hooks takes a step after each monitored step, so both step-time
distributions come from the same minutes of the same noisy machine.

Printed: RSS over time, step times with and without the monitor (overall and per phase),
and the rows the session handed to its spool beside the rows the store holds for the run
once delivery caught up, which must be equal (none lost, none twice).
`benchmarks/README.md` keeps the last figures.

    .venv/bin/python benchmarks/soak.py [--minutes 20] [--outage-s 30] [--partition-s 30]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
import torch

# The throwaway cluster and the stalling proxy are the tests' own: pytest puts tests/ on
# the path, and so does this script.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pg_cluster import PgCluster, throwaway_cluster
from stall_proxy import StallProxy
from workload_step import train_step

from observe.hooks.config import MonitorConfig
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.store.schema import (
    DRIFT_RESULTS,
    EXPERT_LOAD,
    HIDDEN_SAMPLES,
    HISTOGRAMS,
    RUNS,
    SAMPLE_BLOCKS,
    SAMPLES,
    SERIES,
    WINDOW_SAMPLES,
)
from observe.workload.config import CONFIGS
from observe.workload.model import MoETransformer

# Every table a run's rows land in.
# Tables with a run column; sample rows belong to their run through their series.
RUN_TABLES = (EXPERT_LOAD, DRIFT_RESULTS, HIDDEN_SAMPLES, WINDOW_SAMPLES, SAMPLE_BLOCKS)
SERIES_TABLES = (SAMPLES, HISTOGRAMS)
NORMAL, OUTAGE, PARTITION = "normal", "outage", "partition"
# Bound on waiting for the spool to drain once both faults are over.
CATCH_UP_S = 600.0


@dataclass
class Faults:
    """Stops the cluster, then stalls the proxy, on a thread of its own; `phase()` says
    which fault is on now."""

    cluster: PgCluster
    proxy: StallProxy
    duration_s: float
    outage_s: float
    partition_s: float
    started: float = field(default_factory=time.monotonic)
    _phase: str = NORMAL
    _stop: threading.Event = field(default_factory=threading.Event)

    def phase(self) -> str:
        return self._phase

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="soak-faults", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        self._at(self.duration_s / 3)
        self._phase = OUTAGE
        self.cluster.stop()
        self._at(self.duration_s / 3 + self.outage_s)
        self.cluster.start()
        self._phase = NORMAL
        self._at(2 * self.duration_s / 3)
        self._phase = PARTITION
        self.proxy.stall()
        self._at(2 * self.duration_s / 3 + self.partition_s)
        self.proxy.resume()
        self._phase = NORMAL

    def _at(self, offset_s: float) -> None:
        self._stop.wait(max(0.0, self.started + offset_s - time.monotonic()))


@dataclass
class StepTimes:
    monitored: dict[str, list[float]] = field(default_factory=dict)
    bare: dict[str, list[float]] = field(default_factory=dict)

    def add(self, phase: str, monitored_s: float, bare_s: float) -> None:
        self.monitored.setdefault(phase, []).append(monitored_s)
        self.bare.setdefault(phase, []).append(bare_s)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def stored_rows(url: str, run_id: str) -> tuple[int, str]:
    """Rows the store holds for `run_id` over every run table, and the run's status."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = sum(
                connection.execute(
                    sa.select(sa.func.count()).where(table.c.run_id == run_id)
                ).scalar_one()
                for table in RUN_TABLES
            ) + sum(
                connection.execute(
                    sa.select(sa.func.count())
                    .select_from(table.join(SERIES, SERIES.c.id == table.c.series_id))
                    .where(SERIES.c.run_id == run_id)
                ).scalar_one()
                for table in SERIES_TABLES
            )
            status = connection.execute(
                sa.select(RUNS.c.status).where(RUNS.c.id == run_id)
            ).scalar_one()
        return int(rows), str(status)
    finally:
        engine.dispose()


def quantiles(times: list[float]) -> tuple[float, float, float, float]:
    """p50, p90, p99 and max, in milliseconds."""
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return cuts[49] * 1e3, cuts[89] * 1e3, cuts[98] * 1e3, max(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--partition-s", type=float, default=30.0)
    parser.add_argument("--model-size", choices=sorted(CONFIGS), default="tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rss-every-s", type=float, default=60.0)
    args = parser.parse_args()
    duration_s = args.minutes * 60
    if duration_s / 3 < max(args.outage_s, args.partition_s) + 5:
        parser.error("--minutes is too short for the faults: each needs a third of the run")

    torch.manual_seed(0)
    torch.set_num_threads(1)  # the monitored and the bare model take turns on one core
    config = CONFIGS[args.model_size]
    monitored = MoETransformer(config)
    bare = copy.deepcopy(monitored)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (monitored, bare)]
    tokens = torch.randint(0, config.vocab_size, (64, args.batch_size, args.seq_len + 1))

    with (
        throwaway_cluster() as cluster,
        StallProxy(("127.0.0.1", cluster.port)) as proxy,
        tempfile.TemporaryDirectory() as spool_dir,
    ):
        direct_url = cluster.url()
        settings = Settings(
            db_url=direct_url.replace(f":{cluster.port}/", f":{proxy.port}/"),
            spool_dir=Path(spool_dir),
            prometheus_port=0,
            prometheus_linger_s=0,
            monitor=MonitorConfig(flush_every=10),
        )
        session = MonitoringSession(settings, model=f"soak-{args.model_size}")
        monitor = session.attach(monitored)
        times = StepTimes()
        rss = [(0.0, rss_mib())]
        faults = Faults(cluster, proxy, duration_s, args.outage_s, args.partition_s)
        faults_thread = faults.start()
        step = 0
        while (elapsed := time.monotonic() - faults.started) < duration_s:
            x = tokens[step % len(tokens)]
            phase = faults.phase()
            monitored_s = train_step(monitored, optimizers[0], x)
            started = time.perf_counter()
            monitor.step()
            monitored_s += time.perf_counter() - started
            times.add(phase, monitored_s, train_step(bare, optimizers[1], x))
            if elapsed - rss[-1][0] >= args.rss_every_s:
                rss.append((elapsed, rss_mib()))
            step += 1
        faults.stop()
        faults_thread.join()
        rss.append((time.monotonic() - faults.started, rss_mib()))

        # Both faults are over: delivery catches up before the session closes, so the
        # close limit does not leave rows spooled for a later run.
        caught_up = time.monotonic() + CATCH_UP_S
        while session.delivery.stats().spooled_bytes and time.monotonic() < caught_up:
            time.sleep(1)
        run_id = session.run_id
        session.close()
        stats = session.delivery.stats()
        stored, status = stored_rows(direct_url, run_id)

    print(
        f"torch {torch.__version__}, model {args.model_size}, batch {args.batch_size}×"
        f"{args.seq_len}, {args.minutes:g} min, outage {args.outage_s:g} s at 1/3, partition "
        f"{args.partition_s:g} s at 2/3, {step} steps"
    )
    print("\nRSS over time")
    print(f"{'minute':>8} {'RSS MiB':>9}")
    for at, mib in rss:
        print(f"{at / 60:>8.1f} {mib:>9.1f}")
    # From the first sample after start-up, when the model, optimiser and pools exist.
    print(f"growth since minute {rss[1][0] / 60:.1f}: {rss[-1][1] - rss[1][1]:+.1f} MiB")

    print("\nStep time (ms), monitored beside bare, alternating steps")
    print(f"{'phase':<10} {'steps':>6} {'p50':>13} {'p90':>13} {'p99':>13} {'max':>15} {'p50×':>6}")
    phases = [NORMAL, OUTAGE, PARTITION]
    everything = StepTimes(
        {"all": [t for p in phases for t in times.monitored.get(p, [])]},
        {"all": [t for p in phases for t in times.bare.get(p, [])]},
    )
    for phase, source in [*((p, times) for p in phases), ("all", everything)]:
        if len(source.monitored.get(phase, [])) < 2:
            continue
        ours, base = quantiles(source.monitored[phase]), quantiles(source.bare[phase])
        cells = " ".join(f"{o:>6.1f}/{b:<6.1f}" for o, b in zip(ours, base, strict=True))
        print(f"{phase:<10} {len(source.monitored[phase]):>6} {cells} {ours[0] / base[0]:>6.3f}")
    print(
        f"\nmonitor overhead on the training thread: {monitor.overhead_seconds:.1f} s "
        f"({monitor.overhead_seconds / duration_s:.2%} of the run)"
    )
    print(
        f"\nrows handed to the spool {stats.accepted_samples:,}, stored {stored:,} "
        f"({'equal' if stored == stats.accepted_samples else 'NOT EQUAL'}); dropped "
        f"{stats.dropped_samples}, rejected {stats.rejected_samples}, left spooled "
        f"{stats.spooled_samples}; run status {status}"
    )


if __name__ == "__main__":
    main()
