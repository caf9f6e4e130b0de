"""The load `benchmarks/serve_load.py` puts on its two servers, A and B, each a process of its
own: client threads sending distinct prompts of one domain, then another, to one server at a
time, in short turns, and what they measured.

Turns take the two servers in the order A B B A, A B B A, …, and the server out of turn is
stopped (SIGSTOP) from its last answer to its next turn: none of its threads runs
meanwhile, so none of its work (a drift score, an export, an alert evaluation) lands in the
other's turn. This machine's speed moves: one batch of 8 prompts, generated again and again
in a loop, took 8% more or less from one batch to the next and 5% from one 4 s stretch to
the next, and its rate over 5 s ranged from 30 to 44 requests/s within 100 s. Turns of
seconds put A and B side by side in it, where a run of each, one after the other, measured
the machine as much as the monitor.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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
# What a request sent on a connection the server has just closed meets.
KEEP_ALIVE_RACE = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


@dataclass
class Load:
    """What the clients saw of some turns on one server."""

    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    tokens: int = 0
    failed: int = 0
    # Requests sent again after the server closed their idle connection.
    resent: int = 0
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

    def add(self, other: Load) -> None:
        self.seconds += other.seconds
        self.latencies_s += other.latencies_s
        self.tokens += other.tokens
        self.failed += other.failed
        self.resent += other.resent
        self.error = self.error or other.error


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    pid: int


@dataclass(frozen=True)
class Turn:
    """One turn of load on one server: which of its prompts, when, and what it answered."""

    server: str
    shifted: bool
    began: datetime
    ended: datetime
    requests_per_s: float


@dataclass
class Served:
    """What one server answered over its turns: before the shift and after it."""

    before: Load = field(default_factory=Load)
    after: Load = field(default_factory=Load)

    @property
    def whole(self) -> Load:
        whole = Load()
        whole.add(self.before)
        whole.add(self.after)
        return whole


@dataclass(frozen=True)
class LoadPlan:
    """`turns` turns of `turn_s` seconds on each server: `concurrency` clients, each sending
    a request of `max_tokens` new tokens and waiting for its answer, again and again, until
    the turn's end; the turn ends with the last answer. A server's first half of turns gets
    prompts of `before`, the rest of `after`, in their order: the two servers' turns of one
    number start at the same prompt, the first that neither server's turns before sent, so
    both get the same prompts in the same order, and the lengths that set a batch's time
    weigh on both alike. (Spread over the whole list, turns would reach its tail: rarer
    prompts, which scored over the drift line against the baseline before the shift.)"""

    servers: tuple[Server, Server]
    before: Sequence[str]
    after: Sequence[str]
    turns: int
    turn_s: float
    concurrency: int
    max_tokens: int

    @property
    def first_after(self) -> int:
        """The number of each server's first turn of `after`'s prompts."""
        return math.ceil(self.turns / 2)

    def order(self) -> Iterator[tuple[Server, int]]:
        """Each turn's server and its turn number on that server, A B B A, A B B A, …"""
        a, b = self.servers
        for n in range(self.turns):
            yield from ((a, n), (b, n)) if n % 2 == 0 else ((b, n), (a, n))


class Clients:
    """The client threads, each with a connection to each server, kept across turns."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self._pool = ThreadPoolExecutor(plan.concurrency)
        self._sessions = {
            server.name: [
                httpx.Client(base_url=server.url, timeout=BOUND_S) for _ in range(plan.concurrency)
            ]
            for server in plan.servers
        }
        self._lock = threading.Lock()
        # Per domain (shifted or not): the first prompt no turn has sent yet.
        self._unsent = [0, 0]
        # Per turn number: its first prompt, the same for both servers.
        self._firsts: dict[int, int] = {}
        # Prompts this turn has handed out.
        self._sent = 0

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown()
        for sessions in self._sessions.values():
            for session in sessions:
                session.close()

    def run(self) -> tuple[dict[str, Served], list[Turn]]:
        """Every turn of the plan, the servers stopped out of turn and both running again
        after: what each server answered, and the turns in order."""
        plan = self.plan
        served = {server.name: Served() for server in plan.servers}
        turns = []
        try:
            for server, n in self.order_running():
                shifted = n >= plan.first_after
                began = datetime.now(UTC)
                first = self._firsts.setdefault(n, self._unsent[shifted])
                prompts = plan.after if shifted else plan.before
                load = self.turn(server, prompts[first:])
                self._unsent[shifted] = max(self._unsent[shifted], first + self._sent)
                turns.append(
                    Turn(server.name, shifted, began, datetime.now(UTC), load.requests_per_s)
                )
                (served[server.name].after if shifted else served[server.name].before).add(load)
        finally:
            for server in plan.servers:
                os.kill(server.pid, signal.SIGCONT)
        return served, turns

    def order_running(self) -> Iterator[tuple[Server, int]]:
        """The plan's order, with the server in turn running and the other stopped."""
        for server, n in self.plan.order():
            for other in self.plan.servers:
                if other is not server:
                    os.kill(other.pid, signal.SIGSTOP)
            os.kill(server.pid, signal.SIGCONT)
            yield server, n

    def turn(self, server: Server, prompts: Sequence[str]) -> Load:
        """One turn of the clients on `server`, sending `prompts` from the first; returns
        once every request is answered."""
        started = time.perf_counter()
        ends = started + self.plan.turn_s
        self._sent = 0
        clients = [
            self._pool.submit(self._client, session, prompts, ends)
            for session in self._sessions[server.name]
        ]
        load = Load()
        for client in clients:
            load.add(client.result(timeout=self.plan.turn_s + BOUND_S))
        # Until its last answer: a request sent before the end counts, and so does the time
        # it took. Cut at the end, a turn would count a batch or none by chance.
        load.seconds = time.perf_counter() - started
        return load

    def _client(self, session: httpx.Client, prompts: Sequence[str], ends: float) -> Load:
        load = Load()
        while time.perf_counter() < ends:
            with self._lock:
                index = self._sent
                self._sent += 1
            if index >= len(prompts):
                raise RuntimeError("all distinct prompts were sent: pass fewer --seconds")
            request = {
                "model": MODEL,
                "prompt": prompts[index],
                "max_tokens": self.plan.max_tokens,
                "temperature": 0,  # greedy
            }
            sent = time.perf_counter()
            try:
                response = session.post("/v1/completions", json=request)
            except KEEP_ALIVE_RACE:
                # The server closed this idle connection as the request arrived: its
                # keep-alive timer (uvicorn's 5 s) counts the time it was stopped out of
                # turn. Sent again on a new connection, as the OpenAI client retries.
                load.resent += 1
                response = session.post("/v1/completions", json=request)
            answered = time.perf_counter()
            if response.status_code != 200:
                load.failed += 1
                load.error = load.error or f"{response.status_code} {response.text}"
                continue
            load.latencies_s.append(answered - sent)
            load.tokens += response.json()["usage"]["completion_tokens"]
        return load


def serving_seconds(turns: Sequence[Turn], server: str, since: datetime, until: datetime) -> float:
    """Seconds of `server`'s turns between `since` and `until`: its serving time, its
    stopped time left out. Negative when `until` comes first."""
    if until < since:
        return -serving_seconds(turns, server, until, since)
    seconds = 0.0
    for turn in turns:
        if turn.server == server:
            overlap = min(turn.ended, until) - max(turn.began, since)
            seconds += max(0.0, overlap.total_seconds())
    return seconds


def pair_ratios(turns: Sequence[Turn], a: str, b: str) -> list[float]:
    """B's requests/s over A's in each pair of turns with the same number, side by side."""
    rates: dict[str, list[float]] = {a: [], b: []}
    for turn in turns:
        rates[turn.server].append(turn.requests_per_s)
    return [rb / ra if ra else math.nan for ra, rb in zip(rates[a], rates[b], strict=True)]


def distinct_prompts(domain: str, fits: int) -> list[str]:
    """`domain`'s prompts as `observe infer` draws them (seed 0), each once, of at most
    `fits` tokens with BOS."""
    tokenizer = ByteTokenizer()
    drawn = generate_prompts(domain, POOL, seed=0)
    return list(dict.fromkeys(p for p in drawn if len(tokenizer.encode(p, bos=True)) <= fits))


def wait_ready(url: str) -> None:
    """Returns once the server at `url` answers /readyz (its socket may listen before)."""
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=BOUND_S).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the server at {url} was not ready within {BOUND_S:g} s")
