from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace

import pytest
import torch
from torch import nn

import observe
from observe.errors import ObserveError
from observe.workload import inference
from observe.workload.config import get_config
from observe.workload.generation import GenerationSettings, generate_batch
from observe.workload.inference import InferenceEngine, Response, ResponseCache
from observe.workload.model import MoETransformer
from observe.workload.stops import StopScanner
from observe.workload.tokenizer import ByteTokenizer

EOS = ByteTokenizer.EOS_ID
# Different lengths, so batching them needs left padding.
PROMPTS = [
    "Patient is a 54-year-old male",
    "Revenue rose",
    "Hi",
    "The Licensee shall not assign this Agreement",
]
GREEDY = GenerationSettings(max_new_tokens=8)
SAMPLING = GenerationSettings(max_new_tokens=8, top_p=0.95, temperature=2.0)


@pytest.fixture(scope="module")
def model() -> MoETransformer:
    torch.manual_seed(0)
    model = MoETransformer(get_config("tiny"))
    # At the default init scale the next byte mostly echoes the last one; larger weights make
    # it depend on the whole context, so padding or cache mistakes change the output.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.5)
    return model


@pytest.fixture
def engine(model: MoETransformer) -> Iterator[InferenceEngine]:
    with InferenceEngine(model) as engine:
        yield engine


def greedy_without_cache(model: MoETransformer, ids: list[int], n: int) -> list[int]:
    """Greedy decoding the slow, obvious way: the whole sequence through the model each step."""
    new: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            logits_V = model(torch.tensor([ids + new])).logits_BSV[0, -1]
            new.append(int(logits_V.argmax()))
            if new[-1] == EOS:
                break
    return new


def test_greedy_matches_a_loop_without_kv_cache(
    model: MoETransformer, engine: InferenceEngine
) -> None:
    expected = greedy_without_cache(model, ByteTokenizer().encode(PROMPTS[0]), 8)
    assert generate_batch(model, [PROMPTS[0]], GREEDY) == [expected]
    response = engine.generate(PROMPTS[0], 8)
    assert response == Response(
        PROMPTS[0],
        ByteTokenizer().decode(expected),
        8,
        response.latency_s,
        cached=False,
        finish_reason="length",
        prompt_tokens=len(PROMPTS[0]) + 1,
    )
    assert not model.training


def test_a_batch_of_different_lengths_matches_each_prompt_alone(model: MoETransformer) -> None:
    alone = [generate_batch(model, [prompt], GREEDY)[0] for prompt in PROMPTS]
    assert generate_batch(model, PROMPTS, GREEDY) == alone
    assert len({tuple(ids) for ids in alone}) == len(PROMPTS)


def test_engine_runs_concurrent_prompts_as_one_batch(model: MoETransformer) -> None:
    alone = [ByteTokenizer().decode(generate_batch(model, [p], GREEDY)[0]) for p in PROMPTS]
    with InferenceEngine(model, max_batch_size=len(PROMPTS), batch_wait_s=1.0) as engine:
        futures = [engine.submit(prompt, GREEDY) for prompt in PROMPTS]
        assert [f.result(timeout=10).text for f in futures] == alone
        assert engine.stats.batches == 1


def submitted_apart(engine: InferenceEngine, gaps_s: list[float]) -> list[Future[Response]]:
    """A request, then one more after each gap."""
    futures = [engine.submit("burst 0", GREEDY)]
    for n, gap_s in enumerate(gaps_s, 1):
        time.sleep(gap_s)
        futures.append(engine.submit(f"burst {n}", GREEDY))
    return futures


def test_a_burst_longer_than_the_batch_wait_is_one_batch(model: MoETransformer) -> None:
    # Gaps under batch_wait_s, the burst three times as long: a deadline from the first
    # request would have cut it.
    with InferenceEngine(model, max_batch_size=8, batch_wait_s=0.3) as engine:
        futures = submitted_apart(engine, [0.1] * 7)
        for future in futures:
            future.result(timeout=30)
        assert (engine.stats.batches, engine.stats.batched_requests) == (1, 8)


def test_a_gap_longer_than_the_batch_wait_ends_the_batch(model: MoETransformer) -> None:
    with InferenceEngine(model, batch_wait_s=0.1) as engine:
        for future in submitted_apart(engine, [0.02, 0.5]):
            future.result(timeout=30)
        assert [engine.stats.batches, engine.stats.batched_requests] == [2, 3]


def test_a_batch_waits_for_a_burst_at_most_burst_waits_batch_waits(
    model: MoETransformer,
) -> None:
    # Requests every 0.1 s for 1.5 s, gaps under batch_wait_s: the first batch closes at
    # 4 × 0.2 s, the burst still going.
    assert inference.BURST_WAITS == 4
    with InferenceEngine(model, max_batch_size=64, batch_wait_s=0.2) as engine:
        futures = submitted_apart(engine, [0.1] * 15)
        first = futures[0].result(timeout=30)
        for future in futures:
            future.result(timeout=30)
    assert engine.stats.batches >= 2
    assert first.latency_s < 1.5


def test_on_step_gets_each_steps_ids_as_they_come(model: MoETransformer) -> None:
    steps: list[dict[int, int]] = []
    rows = generate_batch(model, PROMPTS, GREEDY, on_step=steps.append)
    assert [[step[row] for step in steps] for row in range(len(PROMPTS))] == rows


def record_forwards(
    model: MoETransformer, eos_rows: int = 0
) -> tuple[list[int], Callable[[], None]]:
    """The batch size of each forward from here on, and what removes the hook. The first
    forward's first `eos_rows` rows are made to choose EOS."""
    sizes: list[int] = []

    def hook(module: nn.Module, args: object, logits_BSV: torch.Tensor) -> torch.Tensor:
        sizes.append(logits_BSV.shape[0])
        if len(sizes) > 1:
            return logits_BSV
        logits_BSV = logits_BSV.clone()
        logits_BSV[:eos_rows, :, EOS] = 1e4
        return logits_BSV

    return sizes, model.lm_head.register_forward_hook(hook).remove


def test_a_row_leaves_the_batch_at_eos_and_the_loop_ends_when_every_row_has(
    model: MoETransformer,
) -> None:
    second_alone = generate_batch(model, [PROMPTS[1]], GREEDY)[0]
    sizes, remove = record_forwards(model, eos_rows=1)
    try:
        assert generate_batch(model, PROMPTS[:2], GREEDY) == [[EOS], second_alone]
    finally:
        remove()
    # The ended row costs no forward after the one that chose its EOS.
    assert sizes == [2] + [1] * 7
    sizes, remove = record_forwards(model, eos_rows=2)
    try:
        assert generate_batch(model, PROMPTS[:2], GREEDY) == [[EOS], [EOS]]
    finally:
        remove()
    assert sizes == [2]


def test_each_row_generates_its_own_max_new_tokens(model: MoETransformer) -> None:
    settings = [GenerationSettings(max_new_tokens=n) for n in (2, 8, 5)]
    alone = [generate_batch(model, [p], s)[0] for p, s in zip(PROMPTS[:3], settings, strict=True)]
    sizes, remove = record_forwards(model)
    try:
        assert generate_batch(model, PROMPTS[:3], settings) == alone
    finally:
        remove()
    assert [len(ids) for ids in alone] == [2, 8, 5]
    assert sizes == [3, 3, 2, 2, 2, 1, 1, 1]
    with pytest.raises(ObserveError, match="2 generation settings for 3 prompts"):
        generate_batch(model, PROMPTS[:3], settings[:2])


def test_a_long_prompt_and_a_long_generation_share_a_batch(model: MoETransformer) -> None:
    # Together they need more positions than the model has: the short generation ends,
    # and its prompt's columns leave the cache with it.
    prompt = "The Licensee shall not assign this Agreement. " * 4
    settings = [GenerationSettings(max_new_tokens=4), GenerationSettings(max_new_tokens=40)]
    alone = [
        generate_batch(model, [p], s)[0] for p, s in zip([prompt, "Hi"], settings, strict=True)
    ]
    assert generate_batch(model, [prompt, "Hi"], settings) == alone
    assert [len(ids) for ids in alone] == [4, 40]


def test_a_batch_ends_once_every_row_met_its_stop_sequence(model: MoETransformer) -> None:
    full = [generate_batch(model, [p], LONG)[0] for p in PROMPTS[:2]]
    pairs = [first_ascii_pair(ids) for ids in full]
    settings = [replace(LONG, stop=(stop,)) for stop, _ in pairs]
    sizes, remove = record_forwards(model)
    try:
        rows = generate_batch(model, PROMPTS[:2], settings)
    finally:
        remove()
    # Each row ends with the last id of its stop sequence: nothing past it is generated.
    assert rows == [ids[: first + 2] for ids, (_, first) in zip(full, pairs, strict=True)]
    assert len(sizes) == max(first + 2 for _, first in pairs) < LONG.max_new_tokens


def test_the_monitor_counts_no_token_of_a_row_after_it_ended(model: MoETransformer) -> None:
    _, remove = record_forwards(model, eos_rows=1)
    try:
        with observe.attach(model) as monitor:
            rows = generate_batch(model, PROMPTS[:2], GREEDY)
            stats = monitor.snapshot()
    finally:
        remove()
    assert [len(ids) for ids in rows] == [1, 8]
    # Every prompt token once, and each generated id but a row's last, fed back to the model.
    fed = sum(len(p) + 1 for p in PROMPTS[:2]) + sum(len(ids) - 1 for ids in rows)
    assert [layer.tokens for layer in stats.layers] == [fed] * model.config.n_layers


def test_a_prompt_too_long_for_the_model_keeps_its_last_tokens(model: MoETransformer) -> None:
    max_seq_len = model.config.max_seq_len
    prompt = "The Licensee shall not assign this Agreement. " * 4
    kept = ByteTokenizer().encode(prompt)[-(max_seq_len - 8) :]
    assert generate_batch(model, [prompt], GREEDY) == [greedy_without_cache(model, kept, 8)]


def test_max_new_tokens_filling_the_context_fails_at_submit(engine: InferenceEngine) -> None:
    with pytest.raises(ObserveError, match="max_seq_len=64"):
        engine.submit("Hi", GenerationSettings(max_new_tokens=64))


def test_a_tiny_top_p_is_greedy(model: MoETransformer) -> None:
    nucleus = GenerationSettings(max_new_tokens=8, top_p=1e-6)
    assert generate_batch(model, PROMPTS, nucleus) == generate_batch(model, PROMPTS, GREEDY)


def test_top_p_sampling_is_reproducible_for_a_seed(model: MoETransformer) -> None:
    sampling = GenerationSettings(max_new_tokens=8, top_p=0.95, temperature=2.0)
    first = generate_batch(model, PROMPTS, sampling, seed=1)
    assert generate_batch(model, PROMPTS, sampling, seed=1) == first
    assert generate_batch(model, PROMPTS, sampling, seed=2) != first
    # A row's samples do not depend on the rest of its batch.
    assert generate_batch(model, PROMPTS[2:3], sampling, seed=1) == first[2:3]
    with InferenceEngine(model, seed=1) as a, InferenceEngine(model, seed=1) as b:
        assert a.generate("Hi", 8, top_p=0.95).text == b.generate("Hi", 8, top_p=0.95).text


def test_a_repeated_request_is_a_cache_hit(engine: InferenceEngine) -> None:
    first = engine.generate("Hi", 4)
    again = engine.generate("Hi", 4)
    other_settings = engine.generate("Hi", 5)
    assert (first.cached, again.cached, other_settings.cached) == (False, True, False)
    assert again.text == first.text
    stats = engine.stats
    assert (stats.requests, stats.cache_hits, stats.cache_misses) == (3, 1, 2)
    assert len(stats.latencies_s) == 3


def test_the_cache_evicts_the_least_recently_used() -> None:
    cache = ResponseCache(capacity=2)
    response = Response("", "", 0, 0.0, cached=False, finish_reason="stop", prompt_tokens=1)
    cache.put("a", GREEDY, response)
    cache.put("b", GREEDY, response)
    assert cache.get("a", GREEDY) is response
    cache.put("c", GREEDY, response)
    assert ("a", GREEDY) in cache and ("c", GREEDY) in cache
    assert ("b", GREEDY) not in cache
    assert cache.get("b", GREEDY) is None
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 2)


def test_cache_size_zero_disables_caching(model: MoETransformer) -> None:
    with InferenceEngine(model, cache_size=0) as engine:
        assert not engine.generate("Hi", 4).cached
        assert not engine.generate("Hi", 4).cached
        assert (engine.stats.cache_hits, engine.stats.batches) == (0, 2)


def test_concurrent_submits_are_batched_and_all_complete(model: MoETransformer) -> None:
    n_threads, per_thread = 4, 5
    start = threading.Barrier(n_threads)
    results: list[Response] = []
    with InferenceEngine(model, batch_wait_s=0.05) as engine:

        def client(thread: int) -> None:
            start.wait()
            futures = [engine.submit(f"request {thread}-{i}", GREEDY) for i in range(per_thread)]
            results.extend(f.result(timeout=30) for f in futures)

        threads = [threading.Thread(target=client, args=(t,)) for t in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        stats = engine.stats
    assert len(results) == n_threads * per_thread
    assert stats.batched_requests == stats.requests == n_threads * per_thread
    assert stats.batches < stats.requests
    assert stats.mean_batch_size > 1


def test_the_worker_starts_on_first_submit(model: MoETransformer) -> None:
    def workers() -> int:
        return sum(t.name == "observe-inference" for t in threading.enumerate())

    before = workers()
    with InferenceEngine(model) as engine:
        assert workers() == before
        engine.generate("Hi", 2)
        assert workers() == before + 1
        # The model's own thread: not one of observe's background threads, which yield.
        assert engine._worker is not None and engine._worker.native_id is not None
        if sys.platform == "linux":
            assert os.getpriority(os.PRIO_PROCESS, engine._worker.native_id) == os.getpriority(
                os.PRIO_PROCESS, threading.get_native_id()
            )
    assert workers() == before


def test_close_fails_pending_requests_without_hanging(model: MoETransformer) -> None:
    engine = InferenceEngine(model, max_batch_size=1, batch_wait_s=0.0)
    futures = [engine.submit(f"prompt {i}", GREEDY) for i in range(10)]
    engine.close()
    errors = [future.exception(timeout=5) for future in futures]
    assert any(isinstance(e, ObserveError) and "closed" in str(e) for e in errors)
    assert all(e is None or isinstance(e, ObserveError) for e in errors)
    with pytest.raises(ObserveError, match="closed"):
        engine.submit("Hi")
    engine.close()


def test_a_failing_generation_fails_its_batch_and_the_engine_goes_on(
    model: MoETransformer, engine: InferenceEngine
) -> None:
    def fail(module: nn.Module, args: object, output: torch.Tensor) -> None:
        raise RuntimeError("device lost")

    handle = model.lm_head.register_forward_hook(fail)
    try:
        future = engine.submit("Hi", GREEDY)
        assert isinstance(future.exception(timeout=10), RuntimeError)
    finally:
        handle.remove()
    assert engine.generate("Hi", 8).new_tokens > 0


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens=0 must be at least 1"),
        ({"top_p": 0.0}, r"top_p=0.0 must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p=1.5 must be in \(0, 1\]"),
        ({"temperature": 0.0}, "temperature=0.0 must be positive"),
        ({"stop": ("",)}, "stop sequence '' is not a non-empty string"),
        ({"stop": ("a", "b", "c", "d", "e")}, "5 stop sequences given: pass at most 4"),
        ({"stop": ["a"]}, r"stop=\['a'\] is not a tuple"),
    ],
)
def test_bad_settings_are_explained(settings: dict[str, object], match: str) -> None:
    with pytest.raises(ObserveError, match=match):
        GenerationSettings(**settings)  # type: ignore[arg-type]


def test_bad_engine_options_are_explained(model: MoETransformer) -> None:
    with pytest.raises(ObserveError, match="max_batch_size=0"):
        InferenceEngine(model, max_batch_size=0)
    with pytest.raises(ObserveError, match="pass 0 to disable caching"):
        InferenceEngine(model, cache_size=-1)


def test_on_batch_runs_once_per_batch_on_the_worker(model: MoETransformer) -> None:
    threads: list[str] = []
    with InferenceEngine(
        model, on_batch=lambda: threads.append(threading.current_thread().name)
    ) as engine:
        futures = [engine.submit(p, GREEDY) for p in PROMPTS]
        for future in futures:
            future.result(timeout=30)
        batches = engine.stats.batches
    assert len(threads) == batches >= 1
    assert set(threads) == {"observe-inference"}


def test_a_failing_on_batch_is_logged_once_and_fails_no_request(
    model: MoETransformer, caplog: pytest.LogCaptureFixture
) -> None:
    def fail() -> None:
        raise RuntimeError("monitor broke")

    with InferenceEngine(model, on_batch=fail) as engine:
        for prompt in ("Hi", "Hello"):  # two batches: the second comes after a failure
            assert engine.submit(prompt, GREEDY).result(timeout=30).new_tokens > 0
            engine.join()
    assert [r.message for r in caplog.records if "on_batch failed" in r.message] == [
        "observe: on_batch failed; later failures not logged"
    ]


def test_on_batch_runs_after_the_answers_and_join_waits_for_it(model: MoETransformer) -> None:
    """The answers do not wait for the step; join() does."""
    answered, step = threading.Event(), threading.Event()

    def on_batch() -> None:
        assert answered.wait(30), "the batch's answer was not given before its step"
        step.set()

    with InferenceEngine(model, on_batch=on_batch) as engine:
        joined: list[BaseException] = []

        def join_from_the_worker(_: object) -> None:
            try:
                engine.join()
            except ObserveError as exc:
                joined.append(exc)

        # Streamed ids are handed over on the worker thread.
        engine.submit("Hi", GREEDY, on_tokens=join_from_the_worker).result(timeout=30)
        answered.set()
        engine.join()
        assert step.is_set()
    # On the worker thread join() would wait for itself.
    assert joined and all("would wait for itself" in str(exc) for exc in joined)


def force_eos(model: MoETransformer) -> torch.utils.hooks.RemovableHandle:
    def hook(module: nn.Module, args: object, logits_BSV: torch.Tensor) -> torch.Tensor:
        logits_BSV = logits_BSV.clone()
        logits_BSV[:, :, EOS] = 1e4
        return logits_BSV

    return model.lm_head.register_forward_hook(hook)


LONG = GenerationSettings(max_new_tokens=16)
# Stops but no sequence the random model will meet.
STOPPING = replace(LONG, stop=("never said",))


def first_ascii_pair(ids: list[int]) -> tuple[str, int]:
    """Two ASCII bytes of a generated row, past its first byte, and where they first occur."""
    data = bytes(ids)
    stop = next(data[k : k + 2] for k in range(1, len(data) - 1) if data[k : k + 2].isascii())
    return stop.decode(), data.find(stop)


def test_a_request_seed_samples_the_same_text_in_any_batch(model: MoETransformer) -> None:
    seeded = replace(SAMPLING, seed=7)
    with InferenceEngine(model) as engine:
        alone = engine.submit("Hi", seeded).result(timeout=30)
        other_seed = engine.submit("Hi", replace(seeded, seed=8)).result(timeout=30)
    assert other_seed.text != alone.text
    with InferenceEngine(model, max_batch_size=len(PROMPTS), batch_wait_s=1.0, seed=3) as engine:
        futures = [engine.submit(prompt, seeded) for prompt in PROMPTS]
        assert futures[PROMPTS.index("Hi")].result(timeout=30).text == alone.text
        assert engine.stats.batches == 1
    # Unset, the request's seed is the engine's.
    with InferenceEngine(model, seed=7) as engine:
        assert engine.submit("Hi", SAMPLING).result(timeout=30).text == alone.text


def test_requests_of_any_settings_share_a_batch_and_answer_as_they_would_alone(
    model: MoETransformer,
) -> None:
    full = generate_batch(model, [PROMPTS[1]], LONG)[0]
    stop, _ = first_ascii_pair(full)
    requests = [
        (PROMPTS[0], GREEDY),
        (PROMPTS[1], replace(LONG, stop=(stop,))),
        ("Hi", replace(SAMPLING, seed=7)),
        ("Hi", replace(SAMPLING, seed=8, max_new_tokens=12)),
        (PROMPTS[3], replace(SAMPLING, top_p=0.5, temperature=0.7, seed=7)),
        (PROMPTS[0], replace(LONG, top_p=0.9, stop=("never said",))),
    ]
    alone = []
    for prompt, settings in requests:
        with InferenceEngine(model, seed=3) as engine:
            alone.append(engine.submit(prompt, settings).result(timeout=30))
    with InferenceEngine(model, max_batch_size=len(requests), batch_wait_s=1.0, seed=3) as engine:
        futures = [engine.submit(prompt, settings) for prompt, settings in requests]
        together = [future.result(timeout=30) for future in futures]
        assert (engine.stats.batches, engine.stats.batched_requests) == (1, len(requests))
    assert [replace(r, latency_s=0.0) for r in together] == [
        replace(r, latency_s=0.0) for r in alone
    ]
    assert alone[1].finish_reason == "stop" and alone[2].text != alone[3].text


def test_stop_sequences_cut_the_output_before_the_earliest(
    model: MoETransformer, engine: InferenceEngine
) -> None:
    full = generate_batch(model, [PROMPTS[1]], LONG)[0]
    stop, first = first_ascii_pair(full)
    response = engine.submit(PROMPTS[1], replace(LONG, stop=("never said", stop))).result(
        timeout=30
    )
    assert response.text == ByteTokenizer().decode(full[:first])
    assert (response.finish_reason, response.new_tokens) == ("stop", first + 2)
    assert response.prompt_tokens == len(PROMPTS[1]) + 1


def test_finish_reasons_and_token_counts(model: MoETransformer, engine: InferenceEngine) -> None:
    response = engine.submit("Hi", GREEDY).result(timeout=30)
    assert (response.finish_reason, response.new_tokens, response.prompt_tokens) == (
        "length",
        8,
        3,
    )
    long_prompt = "The Licensee shall not assign this Agreement. " * 4
    response = engine.submit(long_prompt, GREEDY).result(timeout=30)
    assert response.prompt_tokens == model.config.max_seq_len - 8
    handle = force_eos(model)
    try:
        response = engine.submit("Hi", STOPPING).result(timeout=30)
    finally:
        handle.remove()
    assert (response.text, response.finish_reason, response.new_tokens) == ("", "stop", 1)


def test_streamed_ids_give_the_response_text(model: MoETransformer) -> None:
    full = generate_batch(model, [PROMPTS[1]], LONG)[0]
    stop, _ = first_ascii_pair(full)
    settings = replace(STOPPING, stop=("never said", stop))
    # Two requests of one prompt share a row; each is streamed to, before it is done.
    streamed: list[list[int]] = [[], []]
    futures: list[Future[Response]] = []
    threads: set[str] = set()

    def stream(i: int, ids: list[int]) -> None:
        assert not futures[i].done()
        threads.add(threading.current_thread().name)
        streamed[i] += ids

    with InferenceEngine(model, max_batch_size=3, batch_wait_s=1.0) as engine:
        for i in range(2):
            futures.append(
                engine.submit(PROMPTS[1], settings, on_tokens=lambda ids, i=i: stream(i, ids))
            )
        futures.append(engine.submit(PROMPTS[0], settings))
        responses = [future.result(timeout=30) for future in futures]
        assert engine.stats.batches == 1
    assert responses[0] == replace(responses[1], latency_s=responses[0].latency_s)
    # Through the stop sequence's last id, and not one id further.
    assert streamed[0] == streamed[1] == full[: responses[0].new_tokens]
    assert responses[0].finish_reason == "stop"
    scanner = StopScanner(settings.stop)
    assert ByteTokenizer().decode(scanner.feed(full) + scanner.finish()) == responses[0].text
    assert threads == {"observe-inference"}


def test_streaming_stops_after_eos(model: MoETransformer, engine: InferenceEngine) -> None:
    streamed: list[int] = []
    handle = force_eos(model)
    try:
        response = engine.submit("Hi", LONG, on_tokens=streamed.extend).result(timeout=30)
    finally:
        handle.remove()
    assert streamed == [EOS]
    assert (response.text, response.new_tokens) == ("", 1)


def test_a_cache_hit_is_the_same_response_and_streams_nothing(engine: InferenceEngine) -> None:
    settings = replace(LONG, stop=("never said",), seed=1, top_p=0.9)
    first = engine.submit("Hi", settings).result(timeout=30)
    streamed: list[int] = []
    future = engine.submit("Hi", settings, on_tokens=streamed.extend)
    assert future.done()
    again = future.result()
    assert again == replace(first, cached=True, latency_s=again.latency_s)
    assert streamed == []


def test_a_failing_stream_is_logged_once_and_spares_its_batch(
    model: MoETransformer, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def broken(ids: list[int]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("client went away")

    streamed: list[int] = []
    with InferenceEngine(model, max_batch_size=2, batch_wait_s=1.0) as engine:
        with caplog.at_level(logging.ERROR, logger="observe"):
            failing = engine.submit(PROMPTS[0], LONG, on_tokens=broken)
            healthy = engine.submit(PROMPTS[1], LONG, on_tokens=streamed.extend)
            responses = [failing.result(timeout=30), healthy.result(timeout=30)]
        assert engine.stats.batches == 1
    assert calls == 1
    assert [r.message for r in caplog.records] == [
        "observe: an on_tokens callback failed; it gets no more ids"
    ]
    assert responses[0].new_tokens == responses[1].new_tokens == 16
    assert ByteTokenizer().decode(streamed) == responses[1].text


def test_a_request_cancelled_before_its_batch_is_dropped(model: MoETransformer) -> None:
    # The first request's stream holds the worker while the second waits and is cancelled.
    release = threading.Event()
    streaming = threading.Event()

    def hold(ids: list[int]) -> None:
        streaming.set()
        release.wait(timeout=30)

    streamed: list[int] = []
    with InferenceEngine(model, max_batch_size=1, batch_wait_s=0.0) as engine:
        first = engine.submit(PROMPTS[0], GREEDY, on_tokens=hold)
        assert streaming.wait(timeout=30)
        second = engine.submit(PROMPTS[1], GREEDY, on_tokens=streamed.extend)
        assert second.cancel()
        release.set()
        assert first.result(timeout=30).new_tokens == 8
        engine.generate("Hi", 2)
        assert engine.stats.batched_requests == 2
    assert streamed == []
