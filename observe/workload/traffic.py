"""Replays a mix of domain traffic through an InferenceEngine and sums up what it saw.

A traffic spec lists phases that split the requests equally, in order, each a weighted mix
of domains: "medical=1;finance=0.7,general=0.3" sends the first half of the requests to
medical and the second half 70/30 to finance and general, the shift a drift monitor must see.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

from observe.errors import ObserveError
from observe.workload.corpus import DOMAINS, generate_prompts
from observe.workload.generation import GenerationSettings
from observe.workload.inference import InferenceEngine, Response

SPEC_SYNTAX = (
    'phases separated by ";", each a comma-separated list of domain=weight (a bare domain '
    'weighs 1), e.g. "medical=1;finance=0.7,general=0.3"'
)


@dataclass(frozen=True)
class TrafficPhase:
    domains: tuple[str, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class TrafficSpec:
    phases: tuple[TrafficPhase, ...]

    @classmethod
    def parse(cls, text: str) -> TrafficSpec:
        if not text.strip():
            raise ObserveError(f"the traffic spec is empty: give {SPEC_SYNTAX}")
        return cls(tuple(_parse_phase(p, i) for i, p in enumerate(text.split(";"), start=1)))


def _parse_phase(text: str, number: int) -> TrafficPhase:
    weights: dict[str, float] = {}
    for entry in text.split(","):
        domain, equals, weight_text = (part.strip() for part in entry.partition("="))
        where = f"in phase {number} of the traffic spec"
        if not domain or (equals and not weight_text):
            raise ObserveError(f"malformed entry {entry.strip()!r} {where}: expected {SPEC_SYNTAX}")
        if domain not in DOMAINS:
            raise ObserveError(
                f"unknown domain {domain!r} {where}: choose from {', '.join(DOMAINS)}; "
                f"expected {SPEC_SYNTAX}"
            )
        if domain in weights:
            raise ObserveError(f"domain {domain!r} appears twice {where}: expected {SPEC_SYNTAX}")
        weights[domain] = _parse_weight(weight_text, domain, where) if equals else 1.0
    if not sum(weights.values()) > 0:
        raise ObserveError(
            f"the weights {where} sum to zero: give a domain a positive weight; "
            f"expected {SPEC_SYNTAX}"
        )
    return TrafficPhase(tuple(weights), tuple(weights.values()))


def _parse_weight(text: str, domain: str, where: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        weight = math.nan
    if not (math.isfinite(weight) and weight >= 0):
        raise ObserveError(
            f"weight {text!r} of {domain!r} {where} is not a non-negative number: "
            f"expected {SPEC_SYNTAX}"
        )
    return weight


@dataclass(frozen=True)
class PlannedRequest:
    domain: str
    prompt: str
    # Index into TrafficSpec.phases.
    phase: int
    # Re-sends an earlier prompt of its domain, so the response cache can answer it.
    repeated: bool


def plan_requests(
    spec: TrafficSpec, n_requests: int, *, repeat_share: float, seed: int = 0
) -> list[PlannedRequest]:
    """`n_requests` requests following `spec`; about `repeat_share` of them repeat a prompt."""
    if n_requests < 1:
        raise ObserveError(f"n_requests={n_requests} must be at least 1")
    if not 0 <= repeat_share <= 1:
        raise ObserveError(
            f"repeat_share={repeat_share} must be between 0 and 1: the share of requests that "
            "repeat an earlier prompt, e.g. 0.3"
        )
    rng = random.Random(seed)
    # Draw every domain and repeat first, then each domain's fresh prompts in one call.
    fresh_per_domain: Counter[str] = Counter()
    draws: list[tuple[str, int, int, bool]] = []
    for i in range(n_requests):
        phase_index = i * len(spec.phases) // n_requests
        phase = spec.phases[phase_index]
        domain = rng.choices(phase.domains, weights=phase.weights)[0]
        earlier = fresh_per_domain[domain]
        if earlier and rng.random() < repeat_share:
            draws.append((domain, phase_index, rng.randrange(earlier), True))
        else:
            draws.append((domain, phase_index, earlier, False))
            fresh_per_domain[domain] += 1
    prompts = {d: generate_prompts(d, n, seed=seed) for d, n in fresh_per_domain.items()}
    return [
        PlannedRequest(domain, prompts[domain][slot], phase, repeated)
        for domain, phase, slot, repeated in draws
    ]


@dataclass(frozen=True)
class TrafficReport:
    # In plan order.
    responses: tuple[tuple[PlannedRequest, Response], ...]
    seconds: float

    @property
    def requests(self) -> int:
        return len(self.responses)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else math.inf

    def latency_quantile(self, q: float) -> float:
        """Seconds, interpolated linearly between the nearest two latencies."""
        if not 0 <= q <= 1:
            raise ObserveError(f"quantile q={q} must be between 0 and 1, e.g. 0.95")
        latencies = sorted(response.latency_s for _, response in self.responses)
        position = q * (len(latencies) - 1)
        low = math.floor(position)
        high = min(low + 1, len(latencies) - 1)
        return latencies[low] + (latencies[high] - latencies[low]) * (position - low)

    @property
    def p50(self) -> float:
        return self.latency_quantile(0.5)

    @property
    def p95(self) -> float:
        return self.latency_quantile(0.95)

    @property
    def p99(self) -> float:
        return self.latency_quantile(0.99)

    @property
    def cache_hits(self) -> int:
        return sum(response.cached for _, response in self.responses)

    @property
    def cache_misses(self) -> int:
        return self.requests - self.cache_hits

    @property
    def miss_rate(self) -> float:
        return self.cache_misses / self.requests

    def requests_per_domain(self) -> dict[str, int]:
        return dict(Counter(planned.domain for planned, _ in self.responses))

    def requests_per_phase(self) -> dict[int, dict[str, int]]:
        """Requests per domain, most requested first, per phase index."""
        per_phase: dict[int, Counter[str]] = {}
        for planned, _ in self.responses:
            per_phase.setdefault(planned.phase, Counter())[planned.domain] += 1
        return {phase: dict(counts.most_common()) for phase, counts in sorted(per_phase.items())}

    def format(self) -> str:
        lines = [
            f"{self.requests} requests in {self.seconds:.2f} s: {self.requests_per_s:.1f} "
            "requests/s",
            f"latency p50 {self.p50 * 1e3:.1f} ms, p95 {self.p95 * 1e3:.1f} ms, "
            f"p99 {self.p99 * 1e3:.1f} ms",
            f"cache: {self.cache_hits} hits, {self.cache_misses} misses "
            f"({self.miss_rate:.1%} miss rate)",
        ]
        for phase, counts in self.requests_per_phase().items():
            mix = ", ".join(f"{domain} {n}" for domain, n in counts.items())
            lines.append(f"phase {phase + 1}: {mix}")
        return "\n".join(lines)


def replay(
    engine: InferenceEngine,
    plan: list[PlannedRequest],
    *,
    concurrency: int = 8,
    settings: GenerationSettings | None = None,
) -> TrafficReport:
    """Submits `plan` in order with at most `concurrency` requests in flight; waits for all."""
    if not plan:
        raise ObserveError("the traffic plan is empty: plan at least one request")
    if concurrency < 1:
        raise ObserveError(f"concurrency={concurrency} must be at least 1")
    in_flight = threading.BoundedSemaphore(concurrency)
    futures = []
    start = time.perf_counter()
    for planned in plan:
        in_flight.acquire()
        future = engine.submit(planned.prompt, settings)
        future.add_done_callback(lambda _: in_flight.release())
        futures.append(future)
    responses = tuple(
        (planned, future.result()) for planned, future in zip(plan, futures, strict=True)
    )
    return TrafficReport(responses, time.perf_counter() - start)
