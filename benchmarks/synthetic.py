"""What a monitored run's telemetry costs at layers × experts, on a synthetic router-only model.

`SyntheticMoE` is a stack of the reference model's `Router` modules and nothing else: the
monitor sees L MoE layers of E experts while the model itself costs next to nothing, so the
figures are the monitor's and the pipeline's. `measure` drives one `MonitoringSession`
(SQLite store, `/metrics` on a free port, no OTLP) through `steps` steps and returns:

- flush: the calling thread's time in `monitor.flush()`, all of the monitor's time on the
  calling thread (hooks, folds and flushes), and the worker's time (statistics and sinks),
  per window;
- export: a collection and export through every periodic reader (the store's) after a new
  window, median of five;
- scrape: a GET of `/metrics` after a new window, median of five, made from another
  process as Prometheus makes it (a client in this one would wait for the interpreter lock
  behind the session's own threads, as no real scraper does): its seconds and bytes, how
  many expert-tokens series it shows, and whether OpenTelemetry folded any into
  `otel_metric_overflow`;
- memory: the process's resident-set growth over the session, and the hooks' share of the
  calling thread's time (`monitor.overhead_seconds` over the steps' wall time).

    .venv/bin/python benchmarks/synthetic.py [--steps 20] [--sizes 4x8,16x64,64x256]

`benchmarks/scaling.py` builds on `measure`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from observe import catalogue
from observe.hooks import MonitorConfig
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.workload.router import Router

D_MODEL, TOP_K = 16, 2
# Tokens per forward: 8 sequences × 32 positions, a training micro-batch's worth.
BATCH, SEQ = 8, 32
# Exports and scrapes per run, each after a new window: their medians are reported. A few
# milliseconds each at the smaller sizes, so one alone is mostly the scheduler's noise.
REPEATS = 5


class SyntheticMoE(nn.Module):
    """`layers` routers of `experts` experts each; the input passes through unchanged."""

    def __init__(self, layers: int, experts: int) -> None:
        super().__init__()
        self.routers = nn.ModuleList(Router(D_MODEL, experts, TOP_K) for _ in range(layers))

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        x_TD = x_BSD.reshape(-1, x_BSD.shape[-1])
        for router in self.routers:
            router(x_TD)
        return x_BSD


@dataclass(frozen=True)
class Figures:
    layers: int
    experts: int
    steps: int
    windows: int
    flush_s: float  # per window, calling thread
    # Per window, calling thread: hooks, folds and flushes. Past a bound on the calls held,
    # folds run in the hooks, so at large sizes most of it is not in `flush_s`.
    calling_s: float
    worker_s: float  # per window, background thread
    step_s: float  # per step, wall
    hook_share: float  # monitor.overhead_seconds / steps' wall time
    export_s: float
    scrape_s: float
    scrape_bytes: int
    expert_series: int
    overflow: bool
    rss_growth_bytes: int


def measure(
    layers: int,
    experts: int,
    *,
    steps: int = 20,
    flush_every: int = 10,
    directory: Path | None = None,
    **settings: Any,
) -> Figures:
    """One monitored run of `steps` steps; `settings` override `Settings` fields."""
    with tempfile.TemporaryDirectory() as scratch:
        root = directory or Path(scratch)
        options = Settings(
            **{
                "db_url": f"sqlite:///{root / 'observe.db'}",
                "prometheus_port": 0,
                "prometheus_linger_s": 0,
                "spool_dir": root / "spool",
                # Exports only when asked: each is timed on its own.
                "export_interval_s": 3600,
                "monitor": MonitorConfig(flush_every=flush_every, metrics=_ROUTING),
                **settings,
            }
        )
        torch.manual_seed(0)
        model = SyntheticMoE(layers, experts)
        x_BSD = torch.randn(BATCH, SEQ, D_MODEL)
        rss_before = _rss_bytes()
        with MonitoringSession(options, model="synthetic") as session, torch.no_grad():
            monitor = session.attach(model)
            flush_ns = 0
            started = time.perf_counter()
            for _ in range(steps):
                model(x_BSD)
                before = monitor.overhead_ns
                monitor.step()
                flush_ns += monitor.overhead_ns - before
            monitor.snapshot()  # waits for the worker
            wall = time.perf_counter() - started
            calling_ns, worker_s = monitor.overhead_ns, monitor.worker_seconds
            windows = max(steps // flush_every, 1)
            # Each export and scrape after a new window, as Prometheus mostly sees it:
            # nothing cached.
            url = f"http://127.0.0.1:{session.metrics_port}/metrics"
            exports, scrapes = [], []
            with Scraper() as scraper:
                for _ in range(REPEATS):
                    model(x_BSD)
                    monitor.flush()
                    monitor.snapshot()
                    exported = time.perf_counter()
                    for reader in session.telemetry.periodic_readers:
                        reader.force_flush()
                    exports.append(time.perf_counter() - exported)
                    scrapes.append(scraper.get(url))
            export_s, scrape_s = statistics.median(exports), statistics.median(scrapes)
            # The last window's text again, untimed, to count its series.
            with urllib.request.urlopen(url, timeout=60) as response:
                text = response.read().decode()
            rss_growth = _rss_bytes() - rss_before
            figures = Figures(
                layers=layers,
                experts=experts,
                steps=steps,
                windows=windows,
                flush_s=flush_ns / 1e9 / windows,
                calling_s=calling_ns / 1e9 / windows,
                worker_s=worker_s / windows,
                step_s=wall / steps,
                hook_share=monitor.overhead_seconds / wall,
                export_s=export_s,
                scrape_s=scrape_s,
                scrape_bytes=len(text),
                expert_series=_count(text, catalogue.EXPERT_TOKENS.prometheus_name),
                overflow="otel_metric_overflow" in text,
                rss_growth_bytes=rss_growth,
            )
    return figures


_ROUTING = frozenset({"routing", "router_losses", "entropy_histogram"})


class Scraper:
    """GETs URLs from a process of its own and times them there, as a scraper sees them."""

    _LOOP = (
        "import sys, time, urllib.request\n"
        "for url in sys.stdin:\n"
        "    started = time.perf_counter()\n"
        "    with urllib.request.urlopen(url.strip(), timeout=60) as response:\n"
        "        response.read()\n"
        "    print(time.perf_counter() - started, flush=True)\n"
    )

    def __enter__(self) -> Scraper:
        self._process = subprocess.Popen(
            [sys.executable, "-c", self._LOOP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def get(self, url: str) -> float:
        """Seconds the GET of `url` took, its body read whole."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(url + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the scraper process failed on {url}: see its stderr above")
        return float(answer)

    def __exit__(self, *exc: object) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=60)


def _count(text: str, name: str) -> int:
    prefix = name + "{"
    return sum(line.startswith(prefix) for line in text.splitlines())


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


Row = TypeVar("Row")

# `table`'s columns: each header and how a run shows under it.
COLUMNS: dict[str, Callable[[Figures], str]] = {
    "layers × experts": lambda f: f"{f.layers} × {f.experts}",
    "flush s/window": lambda f: f"{f.flush_s:.4f}",
    "worker s/window": lambda f: f"{f.worker_s:.4f}",
    "export s": lambda f: f"{f.export_s:.3f}",
    "scrape s": lambda f: f"{f.scrape_s:.3f}",
    "/metrics bytes": lambda f: f"{f.scrape_bytes:,}",
    "expert series": lambda f: f"{f.expert_series:,} of {f.layers * f.experts:,}",
    "overflow": lambda f: str(f.overflow),
    "RSS growth MB": lambda f: f"{f.rss_growth_bytes / 2**20:.0f}",
    "hook share": lambda f: f"{f.hook_share:.2%}",
}


def markdown(columns: Mapping[str, Callable[[Row], str]], rows: Iterable[Row]) -> str:
    """A markdown table: one line per row, a cell per column."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row) for cell in columns.values()) + " |" for row in rows]
    return "\n".join(lines)


def table(rows: Sequence[Figures]) -> str:
    return markdown(COLUMNS, rows)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """`"4x8,16x64"` as [(4, 8), (16, 64)]: layers × experts."""
    sizes = []
    for size in text.split(","):
        layers, experts = size.split("x")
        sizes.append((int(layers), int(experts)))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sizes", type=parse_sizes, default="4x8,16x64,64x256", help="LxE,…")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); {args.steps} steps per run")
    print(table([measure(layers, experts, steps=args.steps) for layers, experts in args.sizes]))


if __name__ == "__main__":
    main()
