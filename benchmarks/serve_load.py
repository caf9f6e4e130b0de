"""What `observe serve`'s monitor costs a loaded server, and how soon its drift alert fires.

Fine-tunes a model on one domain and records its drift baseline into a throwaway SQLite
store, as `observe train` does (`jobs.train`). Then serves it over HTTP on a free loopback
port to `--concurrency` client threads (httpx, in a process of their own), each sending a
completion request and waiting for its answer, again and again, for `--seconds`: prompts of
the training domain in the first half, of `--shift-to` in the second. Every prompt is sent
once per run, so the response cache answers none; each request asks for `--max-tokens` new
tokens, greedy.

- A, without the monitor: the engine behind the same server, no session and no hooks; the
  server's and the engine's figures go to a no-op meter provider.
- B, with it: `jobs.serve_http`, which `observe serve` runs (a monitoring session on the
  store, hooks, each window scored for drift against the baseline, the alert evaluator),
  stopped with SIGTERM as a service is.

A's halves run around B (A's first half, B, A's second half) after an unmeasured warm-up,
so that A's mean time is B's.

Printed: per run, requests answered, requests/s, generated tokens/s and p50/p95/p99 latency
(client side, wall clock); B over A throughput against the 2% target, per half, and B over A
CPU time per request (the server's process); then B's drift windows scored after the shift
and when the run's alert evaluator recorded the drift alert (ObserveSemanticDrift) firing in
its `alert_events`, what an on-call engineer is paged from: how many windows had been scored
after the shift by then, against the target of three, and whether it fired before the shift
(a false alarm). The rule is the default one, a layer's score over its calibrated threshold
in two scored windows in a row; `--drift-for` adds a `for` to both drift rules. Windows of
the default `flush_every` (10 batches, 64 prompts scored) and alert evaluation every 15 s
are set for hours, not a run of minutes: the header says what this run sets instead. It
reports; it exits 0 whether or not the targets are met. `benchmarks/README.md` keeps the
latest table.

    .venv/bin/python benchmarks/serve_load.py [--seconds 90] [--concurrency 8] [--model-size small]
        [--train-steps 60] [--flush-every 20] [--evaluation-interval-s 5] [--drift-for DURATION]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import torch
from hook_overhead import busy_cpu_seconds, other_processes_cpu_share
from opentelemetry.metrics import NoOpMeterProvider
from serve_traffic import (
    BOUND_S,
    MODEL,
    Clients,
    LoadPlan,
    Phases,
    distinct_prompts,
    wait_ready,
)

from observe import jobs
from observe.alerts.config import AlertsConfig, RuleOverride
from observe.alerts.defaults import ROUTING_DRIFT_RULE, SEMANTIC_DRIFT_RULE
from observe.alerts.signals import duration_problem
from observe.hooks.config import MonitorConfig
from observe.settings import Settings
from observe.store.alerting import AlertEvent, alert_events
from observe.store.baselines import StoredDrift, drift_results
from observe.store.engine import connect
from observe.workload.config import CONFIGS
from observe.workload.corpus import DOMAINS
from observe.workload.inference import InferenceEngine
from observe.workload.job_config import FineTuneConfig, ServerConfig, TrainConfig
from observe.workload.model import MoETransformer
from observe.workload.server import http
from observe.workload.server.app import Service, Slots, create_app
from observe.workload.server.figures import ServerFigures
from observe.workload.server.openai_api import ServedModel

THROUGHPUT_TARGET = 0.98
WINDOWS_TARGET = 3
# The drift rule the target is about; the routing one is shown beside it.
DRIFT_RULE = SEMANTIC_DRIFT_RULE
DRIFT_RULES = (SEMANTIC_DRIFT_RULE, ROUTING_DRIFT_RULE)


@contextlib.contextmanager
def bare_server(
    model: MoETransformer, config: ServerConfig
) -> Iterator[tuple[str, InferenceEngine]]:
    """`model` behind the server `observe serve` runs, without observe: no session, no
    hooks, the engine's and the server's figures to a no-op meter provider. Yields its URL
    and its engine."""
    no_op = NoOpMeterProvider()
    with (
        InferenceEngine(
            model,
            cache_size=config.cache_size,
            max_batch_size=config.max_batch_size,
            seed=config.seed,
            meter_provider=no_op,
        ) as engine,
        contextlib.closing(http.bind(config.host, config.port)) as sock,
    ):
        served = ServedModel(MODEL, model.config.max_seq_len, int(time.time()))
        service = Service(engine, served, ServerFigures(no_op), Slots(config.max_queue))
        server = http.Server(create_app(service), config.drain_s)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
        thread.start()
        try:
            url = f"http://{config.host}:{sock.getsockname()[1]}"
            wait_ready(url)
            yield url, engine
        finally:
            server.stop()
            thread.join(BOUND_S)


@dataclass(frozen=True)
class Monitored:
    run_id: str
    phases: Phases
    # When the second domain's prompts began.
    shift: datetime
    # From SIGTERM to serve_http's return: draining, closing the session.
    close_s: float


@dataclass
class Driven:
    """What run B's load thread leaves behind: read once it is done."""

    shift: datetime | None = None
    phases: Phases | None = None
    error: BaseException | None = None
    # perf_counter seconds when it sent SIGTERM.
    stopped: float = math.nan


def monitored_run(
    settings: Settings,
    model: MoETransformer,
    config: ServerConfig,
    trained_until: datetime | None,
    send: Callable[[str, float, float], Phases],
    args: argparse.Namespace,
) -> Monitored:
    """`model` served by `jobs.serve_http`, as `observe serve` serves it, in this (the main)
    thread, loaded by `send(url, before_s, seconds)` from another, which then stops it
    with SIGTERM."""
    with contextlib.closing(http.bind(config.host, 0)) as probe:
        port = probe.getsockname()[1]
    url = f"http://{config.host}:{port}"
    driven = Driven()

    def drive() -> None:
        try:
            wait_ready(url)
            driven.phases = send(url, args.seconds / 2, args.seconds)
            driven.shift = driven.phases.began + timedelta(seconds=args.seconds / 2)
        except BaseException as exc:
            driven.error = exc
        finally:
            driven.stopped = time.perf_counter()
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=drive, name="serve-load", daemon=True)
    thread.start()
    run_id = jobs.serve_http(
        settings,
        model,
        MODEL,
        dataclasses.replace(config, port=port),
        drift=settings.drift,
        trained_until=trained_until,
    )
    close_s = time.perf_counter() - driven.stopped
    thread.join()
    if driven.error is not None:
        raise driven.error
    assert driven.shift is not None and driven.phases is not None
    return Monitored(run_id, driven.phases, driven.shift, close_s)


@dataclass(frozen=True)
class Window:
    """One drift-scored window of run B: its steps, when its scores were taken, its highest
    semantic score over layers (NaN: none scored) with that layer's rows and calibrated
    threshold, how many of its semantic scores were over their own threshold (what the drift
    alert fires on), of how many, and its highest routing score."""

    first_step: int
    last_step: int
    scored: datetime
    semantic: float
    rows: int
    threshold: float
    drifted: int
    scores: int
    routing: float


def highest(values: Iterable[float]) -> float:
    """The highest of `values` that is a number; NaN if none is."""
    return max((v for v in values if not math.isnan(v)), default=math.nan)


def scored_windows(results: Sequence[StoredDrift]) -> list[Window]:
    grouped: dict[tuple[int, int], list[StoredDrift]] = {}
    for result in results:
        grouped.setdefault((result.first_step or 0, result.last_step or 0), []).append(result)
    windows = []
    for (first, last), scores in grouped.items():
        semantic = [d for d in scores if d.details.get("kind") == "semantic"]
        top = max(semantic, key=lambda d: d.score, default=None)
        windows.append(
            Window(
                first,
                last,
                max(d.time for d in scores),
                math.nan if top is None else top.score,
                0 if top is None else int(top.details.get("rows", 0)),
                math.nan if top is None or top.threshold is None else top.threshold,
                sum(d.drifted for d in semantic),
                len(semantic),
                highest(d.score for d in scores if d.details.get("kind") == "routing"),
            )
        )
    return sorted(windows, key=lambda w: w.scored)


def skipped_windows(windows: Sequence[Window], flush_every: int) -> int:
    """Windows the drift thread had no room for (its queue full), from the gaps in steps."""
    skipped, last = 0, 0
    for window in sorted(windows, key=lambda w: w.first_step):
        skipped += (window.first_step - last - 1) // flush_every
        last = window.last_step
    return skipped


def print_load(a: Phases, b: Phases) -> None:
    print()
    print(
        "| run | requests | requests/s | generated tokens/s | p50 ms | p95 ms | p99 ms "
        "| requests/s before / after the shift | requests per batch | CPU ms per request "
        "| failed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, phases in (("A: without the monitor", a), ("B: with the monitor", b)):
        whole = phases.whole
        p50, p95, p99 = whole.latency_ms()
        per_batch = f"{whole.requests / phases.batches:.2f}" if phases.batches else "–"
        print(
            f"| {name} | {whole.requests:,} | {whole.requests_per_s:.2f} "
            f"| {whole.tokens_per_s:,.1f} | {p50:,.0f} | {p95:,.0f} | {p99:,.0f} "
            f"| {phases.before.requests_per_s:.2f} / {phases.after.requests_per_s:.2f} "
            f"| {per_batch} | {phases.cpu_s / whole.requests * 1e3:.1f} "
            f"| {whole.failed} |"
        )
        if whole.error:
            print(f"(run {name[0]}'s first failed request: {whole.error})")
    requests = b.whole.requests_per_s / a.whole.requests_per_s
    tokens = b.whole.tokens_per_s / a.whole.tokens_per_s
    met = "met" if requests >= THROUGHPUT_TARGET else "MISSED"
    print(
        f"\nThroughput B/A: requests/s {requests:.3f}, generated tokens/s {tokens:.3f} "
        f"(target: requests/s ≥ {THROUGHPUT_TARGET}, at most 2% lost: {met})"
    )
    # Per half, each B half beside the A half next to it in time.
    halves = (
        b.before.requests_per_s / a.before.requests_per_s,
        b.after.requests_per_s / a.after.requests_per_s,
    )
    # CPU time moves less than wall time when other processes take the cores.
    cpu = (b.cpu_s / b.whole.requests) / (a.cpu_s / a.whole.requests)
    print(
        f"Requests/s B/A before the shift {halves[0]:.3f}, after it {halves[1]:.3f}; "
        f"CPU time per request B/A {cpu:.3f}"
    )


def score(value: float) -> str:
    """A score as the tables show it, NaN (none) as a dash."""
    return "–" if math.isnan(value) else f"{value:.3f}"


def print_drift(
    windows: Sequence[Window], events: Sequence[AlertEvent], run: Monitored, flush_every: int
) -> None:
    shift = run.shift
    before = [w for w in windows if w.scored < shift]
    after = [w for w in windows if w.scored >= shift]
    over = sum(w.drifted > 0 for w in before)
    print(
        f"\nRun B ({run.run_id}): the shift at {shift:%H:%M:%S} UTC; {len(windows)} windows "
        f"scored for drift, {len(before)} before the shift ({over} of them with a layer over "
        f"its calibrated threshold), {len(after)} after it; "
        f"{skipped_windows(windows, flush_every)} skipped (the drift thread behind)."
    )
    print(
        "Alert lines: semantic drift over its calibrated threshold in scored windows in a row "
        f"{SEMANTIC_DRIFT_RULE.bound}, routing drift "
        f"{ROUTING_DRIFT_RULE.bound}. Window 1 after the shift may hold steps served before it."
    )
    print()
    print(
        "| window after the shift | steps | scored, s from the shift | semantic drift "
        "(highest layer) | its rows | its calibrated threshold | layers over theirs "
        "| routing drift (highest layer) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, w in enumerate(windows, 1 - len(before)):
        print(
            f"| {n if n > 0 else ''} | {w.first_step}–{w.last_step} "
            f"| {(w.scored - shift).total_seconds():+.1f} | {score(w.semantic)} | {w.rows} "
            f"| {score(w.threshold)} | {w.drifted} of {w.scores} | {score(w.routing)} |"
        )
    print()
    for rule in DRIFT_RULES:
        firing = [e for e in events if e.alert == rule.name and e.state == "firing"]
        if early := [e for e in firing if e.time < shift]:
            print(
                f"{rule.name} fired before the shift, on the training domain's traffic (a "
                f"false alarm), {(shift - early[0].time).total_seconds():.1f} s before it."
            )
        if late := [e for e in firing if e.time >= shift]:
            fired = late[0].time
            windows_by_then = sum(w.scored <= fired for w in after)
            outcome = (
                f"fired {(fired - shift).total_seconds():.1f} s after the shift, with "
                f"{windows_by_then} window{'' if windows_by_then == 1 else 's'} scored after it"
            )
            if not windows_by_then:
                outcome += " (on windows of the training domain: a false alarm)"
            met = 1 <= windows_by_then <= WINDOWS_TARGET
        else:
            outcome, met = "did not fire after the shift", False
        verdict = "met" if met else "MISSED"
        target = f" (target ≤ {WINDOWS_TARGET} windows: {verdict})" if rule is DRIFT_RULE else ""
        print(f"{rule.name} {outcome}{target}.")
    others = sorted(
        {e.alert for e in events if e.state == "firing"} - {r.name for r in DRIFT_RULES}
    )
    print(f"Other alerts that fired during run B: {', '.join(others) or 'none'}.")


def duration(text: str) -> str:
    """`text` if it is a Prometheus duration, else a usage error saying why."""
    problem = duration_problem("--drift-for", text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="per run (default 90)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients (default 8)")
    parser.add_argument("--max-tokens", type=int, default=24, help="new tokens per request")
    parser.add_argument("--model-size", choices=sorted(CONFIGS), default="small")
    parser.add_argument(
        "--train-steps", type=int, default=60, help="fine-tuning steps (the demo's: 120)"
    )
    parser.add_argument("--domain", choices=DOMAINS, default="medical", help="trained on")
    parser.add_argument("--shift-to", choices=DOMAINS, default="finance")
    parser.add_argument(
        "--flush-every",
        type=int,
        default=20,
        help="serving steps (batches) per window (default 20; observe's: 10)",
    )
    parser.add_argument(
        "--evaluation-interval-s",
        type=float,
        default=5.0,
        help="between alert evaluations (default 5; observe's: 15)",
    )
    parser.add_argument(
        "--drift-for",
        type=duration,
        help="the drift alert rules' `for`, in place of their own "
        f"({SEMANTIC_DRIFT_RULE.for_} and {ROUTING_DRIFT_RULE.for_})",
    )
    parser.add_argument(
        "--warmup-s", type=float, default=5.0, help="unmeasured load before the runs"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    # observe serve's defaults, on a free port.
    config = ServerConfig(port=0)
    own_for = f"{SEMANTIC_DRIFT_RULE.for_} and {ROUTING_DRIFT_RULE.for_}"
    if args.drift_for:
        overrides = {rule.name: RuleOverride(for_=args.drift_for) for rule in DRIFT_RULES}
        drift_for = f"{args.drift_for} (their own: {own_for})"
    else:
        overrides, drift_for = {}, f"their own, {own_for}"
    with tempfile.TemporaryDirectory() as scratch, Clients() as clients:
        settings = Settings(
            db_url=f"sqlite:///{scratch}/observe.db",
            prometheus_port=0,
            prometheus_linger_s=0,
            spool_dir=Path(scratch) / "spool",
            monitor=MonitorConfig(flush_every=args.flush_every),
            alerts=AlertsConfig(evaluation_interval_s=args.evaluation_interval_s, rules=overrides),
        )
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; model "
            f"{args.model_size!r} fine-tuned on {args.domain} for {args.train_steps} steps; "
            f"{args.concurrency} clients for {args.seconds:g} s per run, {args.domain} "
            f"prompts then {args.shift_to} from halfway; {args.max_tokens} new tokens per "
            f"request, greedy; `observe serve`'s defaults (batches of up to "
            f"{config.max_batch_size}, queue {config.max_queue})"
        )
        print(
            f"Run B's monitor: windows of {settings.monitor.flush_every} serving steps "
            f"(batches; observe's default {MonitorConfig().flush_every}), drift "
            f"{', '.join(settings.drift.methods)} against the baseline, store exports every "
            f"{settings.export_interval_s:g} s, alert evaluation every "
            f"{settings.alerts.evaluation_interval_s:g} s (default "
            f"{AlertsConfig().evaluation_interval_s:g}), the drift rules' for {drift_for}"
        )
        train = TrainConfig(steps=args.train_steps)
        training = jobs.train(
            settings,
            FineTuneConfig(model_size=args.model_size, domain=args.domain),
            train,
            Path(scratch) / MODEL,
            progress=False,
        )
        setup_s = time.perf_counter() - began
        fine_tune_s = sum(step.seconds for step in training.result.steps)
        print(
            f"Setup: fine-tuning {fine_tune_s:.0f} s, the baseline and the rest "
            f"{setup_s - fine_tune_s:.0f} s"
        )
        model = training.result.model
        # The first half is new traffic of the training domain: the generator's prompts drawn
        # with a seed of their own, each once, as the model sees them behind the response
        # cache. Leaving out the baseline's prompts, as runs before 2026-11-30 did, left out
        # the domain's commonest, shortest ones: the rest scored 0.25-0.41 against the
        # baseline, over the alert line in some windows.
        # Prompts that leave room for the new tokens: none is refused for its length.
        fits = model.config.max_seq_len - args.max_tokens
        first = distinct_prompts(args.domain, fits)
        second = distinct_prompts(args.shift_to, fits)
        half = args.seconds / 2
        times: dict[str, float] = {}

        def timed(name: str, work: Callable[[], Phases]) -> Phases:
            start = time.perf_counter()
            result = work()
            times[name] = time.perf_counter() - start
            return result

        def send(url: str, before_s: float, seconds: float) -> Phases:
            plan = LoadPlan(
                url, first, second, seconds, before_s, args.concurrency, args.max_tokens
            )
            return clients.send(plan)

        def bare(before_s: float, seconds: float) -> Phases:
            with bare_server(model, config) as (url, engine):
                phases = send(url, before_s, seconds)
                return dataclasses.replace(phases, batches=engine.stats.batches)

        # Allocator, threads and the first batches warm, for A as for B.
        timed("warm-up", lambda: bare(args.warmup_s / 2, args.warmup_s))
        load_began = time.perf_counter(), time.process_time(), busy_cpu_seconds()
        # A's halves run around B (A's first half, B, A's second half): A's mean time is
        # B's, so a drift in this shared machine's speed (a neighbour's tests starting or
        # ending) weighs on both alike, which A then B would not give.
        a_first = timed("A, first half", lambda: bare(half, half))
        start = time.perf_counter()
        run = monitored_run(settings, model, config, training.result.trained_until, send, args)
        times["B, with the session's start and close"] = time.perf_counter() - start
        a_second = timed("A, second half", lambda: bare(0.0, half))
        wall, cpu, busy = load_began
        # The clients' process is this benchmark's, not another's.
        clients_cpu_s = sum(p.clients_cpu_s for p in (a_first, run.phases, a_second))
        others = other_processes_cpu_share(wall, cpu - clients_cpu_s, busy)
        a = Phases(
            a_first.before,
            a_second.after,
            a_first.began,
            a_first.cpu_s + a_second.cpu_s,
            a_first.clients_cpu_s + a_second.clients_cpu_s,
            a_first.batches + a_second.batches,
        )
        engine = connect(settings.db_url)
        try:
            windows = scored_windows(drift_results(engine, run.run_id))
            events = alert_events(engine, run_id=run.run_id)
        finally:
            engine.dispose()

    # Each batch is a monitor step: the last window's last step is the run's batches.
    b = dataclasses.replace(run.phases, batches=max((w.last_step for w in windows), default=0))
    print_load(a, b)
    print_drift(windows, events, run, args.flush_every)
    print()
    parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in times.items())
    print(
        f"Took {time.perf_counter() - began:.0f} s: setup {setup_s:.0f} s, {parts} "
        f"(B's close: {run.close_s:.1f} s)."
    )
    if others is not None:
        print(f"Other processes used {others:.0%} of the machine's CPU time during the runs.")
        if others > 0.1:
            print(
                "WARNING: the CPUs were shared with other processes; the throughput ratio "
                "is less reliable. Rerun on a quiet machine."
            )


if __name__ == "__main__":
    main()
