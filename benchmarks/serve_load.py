"""What `observe serve`'s monitor costs a loaded server, and how soon its drift alert fires.

Fine-tunes a model on one domain into a checkpoint and records its drift baseline into a
throwaway SQLite store, as `observe train` does (`jobs.train`). Then serves the checkpoint
from two processes, each on a free loopback port:

- A, without the monitor: `serve_bare.py`, the server and engine `observe serve` runs
  without observe (no session, no hooks, figures to a no-op meter provider).
- B, with it: `observe serve` itself (a monitoring session on the store, hooks, each window
  scored for drift against the baseline, the alert evaluator), stopped with SIGTERM at the
  end as a service is.

`--concurrency` client threads (httpx, in this process) load one server at a time, in turns
of `--turn-s` seconds, A B B A, A B B A, …, `--seconds` of turns per server, the other
server stopped meanwhile (serve_traffic.py says why). Each client sends a completion request
and waits for its answer, again and again: prompts of the training domain in a server's
first half of turns, of `--shift-to` in its second. Every prompt is sent once per server, so
the response cache answers none; each request asks for `--max-tokens` new tokens, greedy.

Printed: per server, requests answered, requests/s, generated tokens/s and p50/p95/p99
latency (client side, wall clock); B over A throughput against the 2% target, per half and
per pair of turns, and B over A CPU time per request (each server's process, and by thread:
thread_cpu.py); then B's drift windows scored after the shift and when B's alert evaluator
recorded the drift alert (ObserveSemanticDrift) firing in its `alert_events`, what an
on-call engineer is paged from: how many windows had been scored after the shift by then,
against the target of three, and whether it fired before the shift (a false alarm). Times
from the shift are B's serving seconds, its stopped time left out. The rule is the default
one, a layer's score over its calibrated threshold in two drift windows in a row (each the
baseline's 512 sequences, 40–60 s served here); `--drift-for` adds a `for` to both drift
rules. B runs `observe serve`'s defaults, alert evaluation every 15 s included: a drift
window outlasts it, so the alert is counted at the drift window it would be counted at with
evaluations more often. The header says what a run sets. It
reports; it exits 0 whether or not the targets are met. `benchmarks/README.md` keeps the
latest table.

`--control` runs B without the monitor too (a second `serve_bare.py`): B/A is then the
benchmark's own spread, two servers that differ in nothing.

    .venv/bin/python benchmarks/serve_load.py [--seconds 240] [--turn-s 2] [--concurrency 8]
        [--model-size small] [--train-steps 60] [--flush-every N] [--evaluation-interval-s 15]
        [--drift-for DURATION] [--control]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hook_overhead import busy_cpu_seconds
from serve_drift import DRIFT_RULES, print_drift
from serve_traffic import (
    BOUND_S,
    MODEL,
    Clients,
    LoadPlan,
    Served,
    Server,
    distinct_prompts,
    pair_ratios,
    wait_ready,
)
from thread_cpu import cpu_by_thread, print_thread_cpu

from observe import jobs
from observe.alerts.config import AlertsConfig
from observe.alerts.defaults import ROUTING_DRIFT_RULE, SEMANTIC_DRIFT_RULE
from observe.alerts.signals import duration_problem
from observe.hooks.config import MonitorConfig
from observe.settings import Settings, load_settings
from observe.store.alerting import alert_events
from observe.store.baselines import drift_results
from observe.store.engine import connect
from observe.store.queries import list_runs
from observe.workload.config import CONFIGS
from observe.workload.corpus import DOMAINS
from observe.workload.job_config import FineTuneConfig, ServerConfig, TrainConfig
from observe.workload.server import http

THROUGHPUT_TARGET = 0.98
HERE = Path(__file__).resolve().parent
# B serves every other turn and is stopped in between, while its timers (store exports,
# alert evaluations) count the wall clock: set to this many times their interval, they come
# as often per second served as on a server that serves all the time.
WALL_PER_SERVED = 2
# Prompts of the training domain kept for the warm-up, which the measured turns never send.
WARMUP_PROMPTS = 500


@dataclass
class Process:
    """One server's process: what the clients call it, and what it printed once stopped."""

    server: Server
    popen: subprocess.Popen[str]
    log: Path

    def cpu_seconds(self) -> float:
        """CPU time the process has used, every thread's (Linux)."""
        with open(f"/proc/{self.server.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> str:
        """SIGTERM, as a service is stopped; its standard output once it exited."""
        self.popen.send_signal(signal.SIGCONT)
        self.popen.send_signal(signal.SIGTERM)
        try:
            out, _ = self.popen.communicate(timeout=BOUND_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise RuntimeError(
                f"server {self.server.name} did not stop within {BOUND_S:g} s"
            ) from None
        if self.popen.returncode != 0:
            raise RuntimeError(
                f"server {self.server.name} exited with {self.popen.returncode}: "
                f"{self.log.read_text()[-4000:]}"
            )
        return out


def free_ports(host: str, n: int) -> list[int]:
    """`n` distinct free ports: each probe is held until all are found."""
    with contextlib.ExitStack() as probes:
        socks = [probes.enter_context(contextlib.closing(http.bind(host, 0))) for _ in range(n)]
        return [int(sock.getsockname()[1]) for sock in socks]


@contextlib.contextmanager
def started(
    name: str, command: list[str], host: str, port: int, scratch: Path
) -> Iterator[Process]:
    """The server `command` starts, once it answers /readyz; killed if still up at the end."""
    log = scratch / f"{name}.log"
    with open(log, "w") as errors:
        popen = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
    process = Process(Server(name, f"http://{host}:{port}", popen.pid), popen, log)
    try:
        try:
            wait_ready(process.server.url)
        except RuntimeError:
            raise RuntimeError(f"{name} did not start: {log.read_text()[-4000:]}") from None
        yield process
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGCONT)
            popen.kill()
            popen.wait()


def write_settings(scratch: Path, args: argparse.Namespace) -> Path:
    """Run B's settings file: the throwaway store, a free /metrics port, the windows and
    evaluations asked for, and timers in wall-clock seconds (`WALL_PER_SERVED`)."""
    lines = [
        f'db_url = "sqlite:///{scratch}/observe.db"',
        "prometheus_port = 0",
        "prometheus_linger_s = 0",
        f'spool_dir = "{scratch}/spool"',
        f"export_interval_s = {WALL_PER_SERVED * Settings().export_interval_s}",
        "[monitor]",
        f"flush_every = {args.flush_every}",
        "[alerts]",
        f"evaluation_interval_s = {WALL_PER_SERVED * args.evaluation_interval_s}",
    ]
    if args.drift_for:
        for rule in DRIFT_RULES:
            lines += [f"[alerts.rules.{rule.name}]", f'for = "{args.drift_for}"']
    path = scratch / "observe.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def print_load(
    a: Served,
    b: Served,
    batches: dict[str, int],
    cpu_s: dict[str, float],
    ratios: list[float],
    b_name: str,
) -> None:
    print()
    print(
        "| server | requests | requests/s | generated tokens/s | p50 ms | p95 ms | p99 ms "
        "| requests/s before / after the shift | requests per batch | CPU ms per request "
        "| failed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, served in (("A: without the monitor", a), (b_name, b)):
        whole = served.whole
        p50, p95, p99 = whole.latency_ms()
        key = name[0]
        per_batch = f"{whole.requests / batches[key]:.2f}" if batches.get(key) else "–"
        print(
            f"| {name} | {whole.requests:,} | {whole.requests_per_s:.2f} "
            f"| {whole.tokens_per_s:,.1f} | {p50:,.0f} | {p95:,.0f} | {p99:,.0f} "
            f"| {served.before.requests_per_s:.2f} / {served.after.requests_per_s:.2f} "
            f"| {per_batch} | {cpu_s[key] / whole.requests * 1e3:.1f} | {whole.failed} |"
        )
        if whole.error:
            print(f"(server {key}'s first failed request: {whole.error})")
        if whole.resent:
            print(f"(server {key}: {whole.resent} requests sent again, their connection closed)")
    requests = b.whole.requests_per_s / a.whole.requests_per_s
    tokens = b.whole.tokens_per_s / a.whole.tokens_per_s
    met = "met" if requests >= THROUGHPUT_TARGET else "MISSED"
    print(
        f"\nThroughput B/A: requests/s {requests:.3f}, generated tokens/s {tokens:.3f} "
        f"(target: requests/s ≥ {THROUGHPUT_TARGET}, at most 2% lost: {met})"
    )
    halves = (
        b.before.requests_per_s / a.before.requests_per_s,
        b.after.requests_per_s / a.after.requests_per_s,
    )
    cpu = (cpu_s["B"] / b.whole.requests) / (cpu_s["A"] / a.whole.requests)
    # The spread of B/A from one pair of turns to the next: how far the machine's speed moved
    # within a pair, which the whole run's ratio averages over.
    finite = [r for r in ratios if not math.isnan(r)]
    error = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) > 1 else math.nan
    print(
        f"Requests/s B/A before the shift {halves[0]:.3f}, after it {halves[1]:.3f}; per pair "
        f"of turns: median {statistics.median(finite):.3f}, mean {statistics.fmean(finite):.3f} "
        f"± {error:.3f} (standard error, {len(finite)} pairs); CPU time per request B/A {cpu:.3f}"
    )


def duration(text: str) -> str:
    """`text` if it is a Prometheus duration, else a usage error saying why."""
    problem = duration_problem("--drift-for", text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=240.0,
        help="of turns per server (default 240: the second half holds 4-5 drift windows)",
    )
    parser.add_argument("--turn-s", type=float, default=2.0, help="seconds a turn (default 2)")
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
        default=MonitorConfig().flush_every,
        help=f"serving steps (batches) per flush window (default observe's, "
        f"{MonitorConfig().flush_every})",
    )
    parser.add_argument(
        "--evaluation-interval-s",
        type=float,
        default=AlertsConfig().evaluation_interval_s,
        help=f"between alert evaluations (default observe's, "
        f"{AlertsConfig().evaluation_interval_s:g})",
    )
    parser.add_argument(
        "--drift-for",
        type=duration,
        help="the drift alert rules' `for`, in place of their own "
        f"({SEMANTIC_DRIFT_RULE.for_} and {ROUTING_DRIFT_RULE.for_})",
    )
    parser.add_argument(
        "--warmup-s", type=float, default=6.0, help="unmeasured turns first (default 6)"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--control",
        action="store_true",
        help="B without the monitor too (a second serve_bare.py): the spread of B/A between "
        "two servers that differ in nothing",
    )
    args = parser.parse_args()
    if args.threads:
        # Read by torch in each server's process as it starts.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    began = time.perf_counter()
    turns = max(2, round(args.seconds / args.turn_s))
    own_for = f"{SEMANTIC_DRIFT_RULE.for_} and {ROUTING_DRIFT_RULE.for_}"
    drift_for = f"{args.drift_for} (their own: {own_for})" if args.drift_for else own_for
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        config_file = write_settings(scratch, args)
        settings = load_settings(config_file, environ={})
        # observe serve's defaults, on free ports.
        config = ServerConfig()
        print(
            f"{args.threads or 'torch default'} torch threads per server; model "
            f"{args.model_size!r} fine-tuned on {args.domain} for {args.train_steps} steps; "
            f"{args.concurrency} clients, {turns} turns of {args.turn_s:g} s per server, "
            f"A B B A, {args.domain} prompts then {args.shift_to} from each server's halfway; "
            f"{args.max_tokens} new tokens per request, greedy; `observe serve`'s defaults "
            f"(batches of up to {config.max_batch_size}, queue {config.max_queue})"
        )
        if args.control:
            print("Control run: B is a second serve_bare.py, without the monitor like A")
        print(
            f"Server B's monitor{' (not run: control)' if args.control else ''}: windows "
            f"of {settings.monitor.flush_every} serving steps "
            f"(batches; observe's default {MonitorConfig().flush_every}), drift "
            f"{', '.join(settings.drift.methods)} against the baseline, store exports every "
            f"{settings.export_interval_s / WALL_PER_SERVED:g} s, alert evaluation every "
            f"{settings.alerts.evaluation_interval_s / WALL_PER_SERVED:g} s (default "
            f"{AlertsConfig().evaluation_interval_s:g}), the drift rules' for {drift_for}; "
            f"in seconds served: the wall clock's are {WALL_PER_SERVED} times as many"
        )
        checkpoint = scratch / MODEL
        training = jobs.train(
            settings,
            FineTuneConfig(model_size=args.model_size, domain=args.domain),
            TrainConfig(steps=args.train_steps),
            checkpoint,
            progress=False,
        )
        fits = training.result.model.config.max_seq_len - args.max_tokens
        first = distinct_prompts(args.domain, fits)
        second = distinct_prompts(args.shift_to, fits)
        host = config.host
        a_port, b_port = free_ports(host, 2)

        def bare(port: int) -> list[str]:
            return [sys.executable, str(HERE / "serve_bare.py"), str(checkpoint), str(port)]

        b_command = (
            bare(b_port)
            if args.control
            else [
                str(Path(sys.executable).with_name("observe")),
                "--config",
                str(config_file),
                "serve",
                "--checkpoint",
                str(checkpoint),
                "--host",
                host,
                "--port",
                str(b_port),
            ]
        )
        with (
            started("A", bare(a_port), host, a_port, scratch) as a,
            started("B", b_command, host, b_port, scratch) as b,
        ):
            setup_s = time.perf_counter() - began
            fine_tune_s = sum(step.seconds for step in training.result.steps)
            print(
                f"Setup: fine-tuning {fine_tune_s:.0f} s, the baseline, the servers' start and "
                f"the rest {setup_s - fine_tune_s:.0f} s"
            )
            servers = (a.server, b.server)
            warm = first[-WARMUP_PROMPTS:]
            warmup = LoadPlan(
                servers, warm, warm, 1, args.warmup_s / 2, args.concurrency, args.max_tokens
            )
            with Clients(warmup) as clients:
                clients.run()
            plan = LoadPlan(
                servers,
                first[:-WARMUP_PROMPTS],
                second,
                turns,
                args.turn_s,
                args.concurrency,
                args.max_tokens,
            )
            processes = {"A": a, "B": b}
            wall, busy = time.perf_counter(), busy_cpu_seconds()
            cpu = {name: p.cpu_seconds() for name, p in processes.items()}
            threads = {name: cpu_by_thread(p.server.pid) for name, p in processes.items()}
            own = time.process_time()
            with Clients(plan) as clients:
                served, order = clients.run()
            cpu = {name: p.cpu_seconds() - cpu[name] for name, p in processes.items()}
            threads_after = {name: cpu_by_thread(p.server.pid) for name, p in processes.items()}
            ours = sum(cpu.values()) + time.process_time() - own
            load_s = time.perf_counter() - wall
            others = None
            if busy is not None and (now := busy_cpu_seconds()) is not None:
                others = max(0.0, now - busy - ours) / (load_s * (os.cpu_count() or 1))
            batches = {"A": int(json.loads(a.stop())["batches"])}
            stopping = time.perf_counter()
            stopped_b = b.stop()
            close_s = time.perf_counter() - stopping
        if args.control:
            batches["B"] = int(json.loads(stopped_b)["batches"])
        else:
            engine = connect(settings.db_url)
            try:
                run_id = next(r.id for r in list_runs(engine) if r.pid == b.server.pid)
                results = drift_results(engine, run_id)
                events = alert_events(engine, run_id=run_id)
            finally:
                engine.dispose()
            # Each batch is a monitor step: the last window's last step is B's batches.
            batches["B"] = max((d.last_step or 0 for d in results), default=0)

    b_name = "B: without the monitor either (control)" if args.control else "B: with the monitor"
    print_load(served["A"], served["B"], batches, cpu, pair_ratios(order, "A", "B"), b_name)
    print_thread_cpu(threads, threads_after, {k: s.whole.requests for k, s in served.items()})
    if args.control:
        print("\nControl run: B differs from A in nothing; its B/A is the benchmark's own spread.")
    else:
        print_drift(results, events, run_id, order, args.flush_every)
    print()
    print(
        f"Took {time.perf_counter() - began:.0f} s: setup {setup_s:.0f} s, the turns "
        f"{load_s:.0f} s (B's close: {close_s:.1f} s)."
    )
    if others is not None:
        print(f"Other processes used {others:.0%} of the machine's CPU time during the turns.")
        if others > 0.1:
            print(
                "WARNING: the CPUs were shared with other processes; the throughput ratio "
                "is less reliable. Rerun on a quiet machine."
            )


if __name__ == "__main__":
    main()
