from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from observe.errors import ObserveError
from observe.workload.config import get_config
from observe.workload.generation import GenerationSettings
from observe.workload.inference import InferenceEngine, Response
from observe.workload.model import MoETransformer
from observe.workload.traffic import (
    PlannedRequest,
    TrafficPhase,
    TrafficReport,
    TrafficSpec,
    plan_requests,
    replay,
)

SHIFT = TrafficSpec.parse("medical;finance=0.7,general=0.3")
SHORT = GenerationSettings(max_new_tokens=4)


@pytest.fixture
def engine() -> Iterator[InferenceEngine]:
    torch.manual_seed(0)
    with InferenceEngine(MoETransformer(get_config("tiny"))) as engine:
        yield engine


def test_a_spec_lists_weighted_domains_per_phase() -> None:
    spec = TrafficSpec.parse("medical=1;finance=0.7,general=0.3")
    assert spec == TrafficSpec(
        (
            TrafficPhase(("medical",), (1.0,)),
            TrafficPhase(("finance", "general"), (0.7, 0.3)),
        )
    )
    assert TrafficSpec.parse(" medical ; legal = 2 , general ") == TrafficSpec(
        (TrafficPhase(("medical",), (1.0,)), TrafficPhase(("legal", "general"), (2.0, 1.0)))
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "the traffic spec is empty"),
        ("medical;", "malformed entry '' in phase 2"),
        ("medical=", "malformed entry 'medical=' in phase 1"),
        ("=1", "malformed entry '=1'"),
        ("oncology=1", "unknown domain 'oncology' in phase 1.*medical, finance, legal, general"),
        (
            "medical=abc",
            "weight 'abc' of 'medical' in phase 1 of the traffic spec is not a non-negative number",
        ),
        ("medical=-1", "weight '-1' of 'medical'"),
        ("medical=nan", "weight 'nan' of 'medical'"),
        ("medical=0,legal=0", "the weights in phase 1 of the traffic spec sum to zero"),
        ("legal;medical,medical=2", "domain 'medical' appears twice in phase 2"),
    ],
)
def test_a_bad_spec_is_explained_with_an_example(text: str, match: str) -> None:
    with pytest.raises(ObserveError, match=match) as error:
        TrafficSpec.parse(text)
    assert 'e.g. "medical=1;finance=0.7,general=0.3"' in str(error.value)


def test_a_plan_is_deterministic_for_a_seed() -> None:
    plan = plan_requests(SHIFT, 40, repeat_share=0.3, seed=3)
    assert plan_requests(SHIFT, 40, repeat_share=0.3, seed=3) == plan
    assert plan_requests(SHIFT, 40, repeat_share=0.3, seed=4) != plan


def test_phases_split_the_requests_in_order() -> None:
    plan = plan_requests(SHIFT, 40, repeat_share=0.0)
    first, second = plan[:20], plan[20:]
    assert {(r.domain, r.phase) for r in first} == {("medical", 0)}
    assert {r.domain for r in second} == {"finance", "general"}
    assert {r.phase for r in second} == {1}


def test_repeats_resend_an_earlier_prompt_of_the_same_domain() -> None:
    assert not any(r.repeated for r in plan_requests(SHIFT, 40, repeat_share=0.0))
    plan = plan_requests(SHIFT, 40, repeat_share=0.5)
    repeats = [i for i, r in enumerate(plan) if r.repeated]
    assert 10 <= len(repeats) <= 30
    for i in repeats:
        earlier = {(r.domain, r.prompt) for r in plan[:i] if not r.repeated}
        assert (plan[i].domain, plan[i].prompt) in earlier
    # Only each domain's first request is fresh.
    everything_repeats = plan_requests(SHIFT, 40, repeat_share=1.0)
    assert sum(not r.repeated for r in everything_repeats) == 3


def test_bad_plan_options_are_explained() -> None:
    with pytest.raises(ObserveError, match="n_requests=0 must be at least 1"):
        plan_requests(SHIFT, 0, repeat_share=0.0)
    with pytest.raises(ObserveError, match=r"repeat_share=1\.5 must be between 0 and 1"):
        plan_requests(SHIFT, 10, repeat_share=1.5)


def test_a_sequential_replay_answers_every_repeat_from_the_cache(
    engine: InferenceEngine,
) -> None:
    plan = plan_requests(SHIFT, 30, repeat_share=0.4, seed=1)
    report = replay(engine, plan, concurrency=1, settings=SHORT)
    repeats = sum(r.repeated for r in plan)
    assert repeats > 0
    # A fresh prompt may also happen to equal an earlier one.
    assert report.cache_hits >= repeats
    assert report.cache_hits + report.cache_misses == report.requests == 30
    assert report.miss_rate == report.cache_misses / 30


def test_a_concurrent_replay_reports_consistent_numbers(engine: InferenceEngine) -> None:
    plan = plan_requests(SHIFT, 40, repeat_share=0.3, seed=2)
    report = replay(engine, plan, concurrency=4, settings=SHORT)
    assert [planned for planned, _ in report.responses] == plan
    assert all(planned.prompt == response.prompt for planned, response in report.responses)
    assert report.cache_hits + report.cache_misses == 40
    assert 0.0 <= report.miss_rate <= 1.0
    assert 0 < report.p50 <= report.p95 <= report.p99
    assert report.requests_per_s > 0
    assert sum(report.requests_per_domain().values()) == 40
    assert report.requests_per_phase()[0] == {"medical": 20}
    assert engine.stats.requests == 40
    text = report.format()
    for expected in ("requests/s", "p50", "p95", "p99", "miss rate", "phase 1: medical 20"):
        assert expected in text
    assert "phase 2: " in text


def test_latency_quantiles_interpolate() -> None:
    planned = PlannedRequest("medical", "Hi", 0, repeated=False)
    responses = tuple(
        (planned, Response("Hi", "", 1, latency, False, "stop", 3))
        for latency in (4.0, 1.0, 3.0, 2.0)
    )
    report = TrafficReport(responses, seconds=2.0)
    assert (report.latency_quantile(0.0), report.p50, report.latency_quantile(1.0)) == (
        1.0,
        2.5,
        4.0,
    )
    assert report.requests_per_s == 2.0
    with pytest.raises(ObserveError, match="between 0 and 1"):
        report.latency_quantile(1.5)


def test_bad_replay_options_are_explained(engine: InferenceEngine) -> None:
    with pytest.raises(ObserveError, match="plan is empty"):
        replay(engine, [])
    with pytest.raises(ObserveError, match="concurrency=0"):
        replay(engine, plan_requests(SHIFT, 2, repeat_share=0.0), concurrency=0)
