"""The load `benchmarks/serve_load.py` puts on a server: client threads, in a process of
their own as a service's clients are, sending distinct prompts of one domain, then another,
and what they measured.

In the server's process the clients' Python would share the server's interpreter lock,
which no real client does, and their CPU time would count as the server's."""

from __future__ import annotations

import contextlib
import multiprocessing
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from observe.workload.corpus import generate_prompts
from observe.workload.tokenizer import ByteTokenizer

MODEL = "serve_load"
# Seconds a server may take to answer /readyz, and a request to be answered: past them it hung.
BOUND_S = 120.0
# Distinct prompts drawn per domain: more than a run of these lengths sends.
POOL = 20_000


@dataclass
class Load:
    """What the clients saw of one phase of a run: the requests answered before it ended."""

    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    tokens: int = 0
    failed: int = 0
    # What the first refused request was told.
    error: str = ""

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    def latency_ms(self) -> tuple[float, float, float]:
        """p50, p95 and p99."""
        cuts = statistics.quantiles(self.latencies_s, n=100, method="inclusive")
        return cuts[49] * 1e3, cuts[94] * 1e3, cuts[98] * 1e3


def combined(loads: Sequence[Load], seconds: float) -> Load:
    return Load(
        seconds,
        [latency for load in loads for latency in load.latencies_s],
        sum(load.tokens for load in loads),
        sum(load.failed for load in loads),
        next((load.error for load in loads if load.error), ""),
    )


@dataclass(frozen=True)
class Phases:
    """A run's load before the shift and after it, when it began, the CPU time the server's
    process took meanwhile (the server's and, in run B, the monitor's threads) and the
    clients' process."""

    before: Load
    after: Load
    began: datetime
    cpu_s: float
    clients_cpu_s: float
    # Batched generations that answered it, once counted: the engine's, or run B's steps.
    batches: int = 0

    @property
    def whole(self) -> Load:
        return combined((self.before, self.after), self.before.seconds + self.after.seconds)


@dataclass
class Traffic:
    """One run's prompts, each handed out once: `before`'s until `shift_at` (perf_counter
    seconds), `after`'s from then on."""

    before: Sequence[str]
    after: Sequence[str]
    shift_at: float
    _sent: list[int] = field(default_factory=lambda: [0, 0])
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_prompt(self) -> tuple[str, bool]:
        """A prompt, and whether it is of the domain after the shift."""
        shifted = time.perf_counter() >= self.shift_at
        prompts = self.after if shifted else self.before
        with self._lock:
            index = self._sent[shifted]
            self._sent[shifted] += 1
        if index >= len(prompts):
            raise RuntimeError(
                f"all {len(prompts)} distinct prompts were sent: pass a shorter --seconds"
            )
        return prompts[index], shifted


def distinct_prompts(domain: str, fits: int) -> list[str]:
    """`domain`'s prompts as `observe infer` draws them (seed 0), each once, of at most
    `fits` tokens with BOS."""
    tokenizer = ByteTokenizer()
    drawn = generate_prompts(domain, POOL, seed=0)
    return list(dict.fromkeys(p for p in drawn if len(tokenizer.encode(p, bos=True)) <= fits))


@dataclass(frozen=True)
class LoadPlan:
    """One run of load: `concurrency` clients, each sending a request of `max_tokens` new
    tokens and waiting for its answer, for `seconds`: prompts of `before` for the first
    `shift_after_s` seconds, then of `after`. Answers that come after the end are not
    counted."""

    url: str
    before: Sequence[str]
    after: Sequence[str]
    seconds: float
    shift_after_s: float
    concurrency: int
    max_tokens: int


class Clients:
    """A process of client threads, started once (spawned: the server's process may hold
    threads and locks a fork would copy) and given one run of load at a time."""

    def __init__(self) -> None:
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        # Imports done before any run: a run's clock starts with its first request.
        self._pool.submit(time.process_time).result(timeout=BOUND_S)

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown()

    def send(self, plan: LoadPlan) -> Phases:
        """The clients' measures of `plan`, and the CPU time this process took meanwhile."""
        cpu = time.process_time()
        # Bounded: the last request of a run may start just before its end and take BOUND_S.
        outcome = self._pool.submit(_load, plan).result(timeout=plan.seconds + 2 * BOUND_S)
        before, after, began, clients_cpu_s = outcome
        return Phases(before, after, began, time.process_time() - cpu, clients_cpu_s)


def _load(plan: LoadPlan) -> tuple[Load, Load, datetime, float]:
    """The clients' side of `Clients.send`, in the clients' process: the two phases' loads,
    when they began, and the CPU time the clients took."""
    began, start, cpu = datetime.now(UTC), time.perf_counter(), time.process_time()
    seconds = plan.seconds
    ends = start + seconds
    traffic = Traffic(plan.before, plan.after, start + plan.shift_after_s)
    before_s = min(seconds, plan.shift_after_s)

    def client() -> tuple[Load, Load]:
        phases = Load(before_s), Load(seconds - before_s)
        with httpx.Client(base_url=plan.url, timeout=BOUND_S) as session:
            while time.perf_counter() < ends:
                prompt, shifted = traffic.next_prompt()
                request = {
                    "model": MODEL,
                    "prompt": prompt,
                    "max_tokens": plan.max_tokens,
                    "temperature": 0,  # greedy
                }
                sent = time.perf_counter()
                response = session.post("/v1/completions", json=request)
                answered = time.perf_counter()
                if answered > ends:
                    break
                load = phases[shifted]
                if response.status_code != 200:
                    load.failed += 1
                    load.error = load.error or f"{response.status_code} {response.text}"
                    continue
                load.latencies_s.append(answered - sent)
                load.tokens += response.json()["usage"]["completion_tokens"]
        return phases

    with ThreadPoolExecutor(plan.concurrency) as pool:
        clients = [pool.submit(client) for _ in range(plan.concurrency)]
        done = [c.result() for c in clients]
    # The clients ran side by side: the phase's seconds, every client's requests.
    return (
        combined([before for before, _ in done], before_s),
        combined([after for _, after in done], seconds - before_s),
        began,
        time.process_time() - cpu,
    )


def wait_ready(url: str) -> None:
    """Returns once the server at `url` answers /readyz (its socket may listen before)."""
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=BOUND_S).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the server at {url} was not ready within {BOUND_S:g} s")
