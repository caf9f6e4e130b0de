"""observe's scaling targets in one run: cost against layers × experts and against steps,
/metrics at the largest size, and dense ingest into PostgreSQL beside raw COPY.

For each size (`--sizes`, layers × experts), `synthetic.measure` runs at `--steps` and at
10× as many, each in a process of its own, so that a run's RSS growth is its own and not
the allocator handing back an earlier run's memory. Then `store_ingest.dense_ingest` writes
`--windows` windows of layers × experts × 16 slots (the expert × slot heatmap at a
monitor's default `entropy_slots`) end to end to a database of its own on `--pg-url`, each
beside a raw binary COPY of the same rows in the same process.

Printed: a table with a row per size: the run at `--steps` as `synthetic.py` shows it and
the monitor's whole time on the calling thread per window (past a bound on the calls held,
folds run in the hooks rather than the flush), each cost per layer × expert series, and
each cost at 10× the steps over at `--steps`; a table of ingest samples/s; and a verdict
per target, met or MISSED:

- linear in layers × experts: every cost per series at the largest size at most 2× its
  cost per series at the second-smallest size (the smallest one's costs are mostly fixed;
  of two sizes, the smaller);
- flat in steps: every cost at 10× the steps at most 1.5× at `--steps`, or, for a time,
  within 5 ms of it, at every size: an export or scrape of a few milliseconds moves by a
  scheduler's time slice on these shared cores, with steps or without;
- at the largest size (64 × 256 by default), in both runs: every layer × expert series on
  `/metrics`, none folded into `otel_metric_overflow`, the scrape under 0.1 s;
- ingest at the largest size: at least 1,000,000 samples/s end to end and at least 2/3 of
  raw COPY's rate (`store_ingest.DENSE_SAMPLES_S`, `DENSE_SHARE_OF_RAW`).

It exits 0 whether or not the targets are met; `benchmarks/README.md` keeps the last table.

    .venv/bin/python benchmarks/scaling.py            # 4 sizes up to 64 × 256, about 5 minutes
    .venv/bin/python benchmarks/scaling.py --quick    # 4 × 8 and 16 × 64, about 1.5 minutes

Options: `--sizes 4x8,16x64,…`, `--steps` (the shorter run), `--windows` (ingest windows
timed per size), `--pg-url`, `--threads` (torch threads in each measured run).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from store_ingest import DenseIngest, dense_ingest, scratch_database
from synthetic import COLUMNS, Figures, markdown, measure, parse_sizes

from observe.hooks.config import MonitorConfig

SIZES = "4x8,16x64,32x128,64x256"
QUICK_SIZES, QUICK_STEPS, QUICK_WINDOWS = "4x8,16x64", 10, 2
LONGER = 10  # the second run's steps, in multiples of --steps
LINEAR = 2.0  # a cost per series at the largest size over at the reference size, at most
FLAT = 1.5  # a cost at LONGER × the steps over at the steps, at most
NOISE_S = 0.005  # or a time at LONGER × the steps at most this much over at the steps
SCRAPE_S = 0.1
SLOTS = MonitorConfig().entropy_slots


@dataclass(frozen=True)
class Cost:
    """A cost that should grow with layers × experts and not with steps."""

    name: str
    of: Callable[[Figures], float]
    unit: str  # per series, in the table
    scale: float  # from `of`'s unit (seconds, bytes) to `unit`
    noise: float = 0.0  # in `of`'s unit: a rise this small counts as flat in steps


COSTS = (
    Cost("flush", lambda f: f.flush_s, "µs", 1e6, NOISE_S),
    Cost("calling thread", lambda f: f.calling_s, "µs", 1e6, NOISE_S),
    Cost("worker", lambda f: f.worker_s, "µs", 1e6, NOISE_S),
    Cost("export", lambda f: f.export_s, "µs", 1e6, NOISE_S),
    Cost("scrape", lambda f: f.scrape_s, "µs", 1e6, NOISE_S),
    Cost("/metrics", lambda f: f.scrape_bytes, "bytes", 1),
    Cost("RSS", lambda f: f.rss_growth_bytes, "KiB", 1 / 1024),
)


@dataclass(frozen=True)
class Size:
    """One size's figures: `measure` at the steps and at LONGER × as many, and ingest."""

    base: Figures
    longer: Figures
    ingest: DenseIngest

    @property
    def name(self) -> str:
        return f"{self.base.layers} × {self.base.experts}"

    @property
    def series(self) -> int:
        return self.base.layers * self.base.experts

    def per_series(self, cost: Cost) -> float:
        return cost.of(self.base) / self.series

    def over_steps(self, cost: Cost) -> float:
        """The cost at LONGER × the steps over at the steps: 1 when flat in steps."""
        return _ratio(cost.of(self.longer), cost.of(self.base))

    def rise(self, cost: Cost) -> float:
        """The cost at LONGER × the steps less at the steps, in `cost.of`'s unit."""
        return cost.of(self.longer) - cost.of(self.base)

    def flat(self, cost: Cost) -> bool:
        return self.over_steps(cost) <= FLAT or self.rise(cost) <= cost.noise


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


def _measure_alone(threads: int, layers: int, experts: int, steps: int) -> Figures:
    torch.set_num_threads(threads)
    return measure(layers, experts, steps=steps)


def cost_table(sizes: list[Size]) -> str:
    # synthetic.py's columns for the run at the steps, but the hooks' share: with routers
    # only it measures nothing real.
    columns: dict[str, Callable[[Size], str]] = {
        header: _of_base(cell) for header, cell in COLUMNS.items() if header != "hook share"
    }
    columns["calling thread s/window"] = lambda size: f"{size.base.calling_s:.4f}"
    for cost in COSTS:
        columns[f"{cost.name} {cost.unit}/series"] = _per_series_cell(cost)
    for cost in COSTS:
        columns[f"{cost.name} {LONGER}×/1× steps"] = _over_steps_cell(cost)
    return markdown(columns, sizes)


def _of_base(cell: Callable[[Figures], str]) -> Callable[[Size], str]:
    return lambda size: cell(size.base)


def _per_series_cell(cost: Cost) -> Callable[[Size], str]:
    return lambda size: f"{size.per_series(cost) * cost.scale:,.1f}"


def _over_steps_cell(cost: Cost) -> Callable[[Size], str]:
    return lambda size: f"{size.over_steps(cost):.2f}"


def ingest_table(sizes: list[Size]) -> str:
    def spread(rates: list[float]) -> str:
        return f"{min(rates):,.0f}–{max(rates):,.0f}"

    columns: dict[str, Callable[[Size], str]] = {
        "layers × experts × slots": lambda s: f"{s.name} × {SLOTS}",
        "samples/window": lambda s: f"{s.ingest.samples_per_window:,}",
        "end to end samples/s (min–max)": lambda s: (
            f"{s.ingest.median_end_to_end:,.0f} ({spread(s.ingest.end_to_end)})"
        ),
        "raw COPY, bare table (min–max)": lambda s: (
            f"{s.ingest.median_raw_copy:,.0f} ({spread(s.ingest.raw_copy)})"
        ),
        "end to end / raw COPY, bare": lambda s: (
            f"{s.ingest.median_end_to_end / s.ingest.median_raw_copy:.2f}"
        ),
        "end to end / raw COPY of the block": lambda s: (
            f"{s.ingest.median_end_to_end / statistics.median(s.ingest.raw_copy_block):.2f}"
        ),
        "first window s": lambda s: f"{s.ingest.first_window_s:.1f}",
    }
    return markdown(columns, sizes)


def verdicts(sizes: list[Size], steps: int) -> list[str]:
    by_series = sorted(sizes, key=lambda s: s.series)
    largest = by_series[-1]
    lines = []
    if len(by_series) > 1:
        reference = by_series[1] if len(by_series) > 2 else by_series[0]
        ratios = {c.name: _ratio(largest.per_series(c), reference.per_series(c)) for c in COSTS}
        shown = ", ".join(f"{name} {ratio:.2f}×" for name, ratio in ratios.items())
        lines.append(
            f"linear in layers × experts (each cost per series at {largest.name} ≤ {LINEAR:g}× "
            f"at {reference.name}): {shown}: {_met(max(ratios.values()) <= LINEAR)}"
        )
    shown = []
    for cost in COSTS:
        worst = max(sizes, key=lambda s: s.over_steps(cost))
        rise = worst.rise(cost)
        within = f", {rise * 1e3:+.1f} ms" if cost.noise and worst.over_steps(cost) > FLAT else ""
        shown.append(f"{cost.name} {worst.over_steps(cost):.2f}× ({worst.name}{within})")
    flat = all(s.flat(c) for s in sizes for c in COSTS)
    lines.append(
        f"flat in steps (each cost at {LONGER * steps} steps ≤ {FLAT:g}× at {steps}, or a time "
        f"within {NOISE_S * 1e3:g} ms, every size; the worst): {', '.join(shown)}: {_met(flat)}"
    )
    runs = (largest.base, largest.longer)
    complete = all(f.expert_series == largest.series and not f.overflow for f in runs)
    fast = all(f.scrape_s < SCRAPE_S for f in runs)
    lines.append(
        f"/metrics at {largest.name} ({steps} and {LONGER * steps} steps): "
        f"{' and '.join(f'{f.expert_series:,}' for f in runs)} of {largest.series:,} "
        f"expert series, overflow {' and '.join(str(f.overflow) for f in runs)}, scrape "
        f"{' and '.join(f'{f.scrape_s:.3f}' for f in runs)} s (target < {SCRAPE_S:g} s): "
        f"{_met(complete and fast)}"
    )
    lines += [f"ingest at {largest.name} × {SLOTS}: {v}" for v in largest.ingest.verdicts()]
    return lines


def _met(met: bool) -> str:
    return "met" if met else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=SIZES, help="LxE,LxE,…")
    parser.add_argument("--steps", type=int, default=20, help="the shorter run's steps")
    parser.add_argument("--windows", type=int, default=5, help="ingest windows timed per size")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_SIZES}")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.steps, args.windows = (
            parse_sizes(QUICK_SIZES),
            QUICK_STEPS,
            QUICK_WINDOWS,
        )
    started, load = time.perf_counter(), os.getloadavg()[0]

    def progress(what: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {what}", file=sys.stderr, flush=True)

    figures: dict[tuple[int, int, int], Figures] = {}
    # A fresh interpreter for every run: spawned, not forked with this one's memory.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, max_tasks_per_child=1) as pool:
        for layers, experts in args.sizes:
            for steps in (args.steps, LONGER * args.steps):
                progress(f"{layers} × {experts}, {steps} steps")
                run = pool.submit(_measure_alone, args.threads, layers, experts, steps)
                figures[layers, experts, steps] = run.result()
    sizes: list[Size] = []
    server_version = ""
    for layers, experts in args.sizes:
        progress(f"{layers} × {experts} × {SLOTS}: ingest, {args.windows} windows")
        with scratch_database(args.pg_url) as database, tempfile.TemporaryDirectory() as spool:
            ingest = dense_ingest(database.url, layers, experts, SLOTS, args.windows, Path(spool))
            server_version = database.server_version
        sizes.append(
            Size(
                figures[layers, experts, args.steps],
                figures[layers, experts, LONGER * args.steps],
                ingest,
            )
        )
    elapsed = time.perf_counter() - started

    print(
        f"torch {torch.__version__}, {args.threads} thread(s) per run, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} at the start and {os.getloadavg()[0]:.1f} at the end; "
        f"{args.steps} and {LONGER * args.steps} steps per size; PostgreSQL "
        f"{server_version}, {args.windows} ingest windows per size (medians)"
    )
    print()
    print(cost_table(sizes))
    print()
    print(ingest_table(sizes))
    print()
    print("\n".join(f"- {line}" for line in verdicts(sizes, args.steps)))
    print()
    print(f"{elapsed:.0f} s in all")


if __name__ == "__main__":
    main()
