"""The reference workload's serving path: batched generation behind a request queue.

Concurrent requests are gathered into batches whatever their settings, identical requests in
a batch are generated once, and repeated requests are answered from an LRU cache, so replayed
traffic meets the batching and caching a real inference server does. A request may stream its
row's new ids as they are generated; its response is cut at its stop sequences, where its row
stops generating.

"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Literal

from opentelemetry.metrics import MeterProvider

from observe import catalogue, instruments, signals
from observe.errors import ObserveError
from observe.lifetime import Closeable
from observe.workload.generation import (
    CLOSED_MESSAGE,
    GenerationSettings,
    check_fits,
    generate_batch,
    prompt_limit,
)
from observe.workload.model import MoETransformer
from observe.workload.stops import StopScanner
from observe.workload.tokenizer import ByteTokenizer

# Enough latencies for stable tail quantiles without growing for the life of a server.
LATENCY_WINDOW = 100_000
# The most a batch waits for a burst of requests to end, in batch_wait_s: what the
# first request may lose to the gathering of its batch.
BURST_WAITS = 4

logger = logging.getLogger("observe")

# "stop": EOS or a stop sequence ended the output; "length": max_new_tokens did.
FinishReason = Literal["stop", "length"]
# A prompt and its settings: what the response cache keys on, and one row of a batch.
_Key = tuple[str, GenerationSettings]


@dataclass(frozen=True)
class Response:
    prompt: str
    # The output, up to and without the stop sequence that ended it.
    text: str
    # Tokens generated up to the finish: through the stop sequence or EOS that ended it.
    new_tokens: int
    # From submit() to the result, for this request.
    latency_s: float
    cached: bool
    finish_reason: FinishReason
    # Ids fed to the model for the prompt, BOS included, after any truncation.
    prompt_tokens: int


class ResponseCache:
    """Thread-safe LRU map from (prompt, settings) to a response; capacity 0 caches nothing."""

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 0:
            raise ObserveError(f"cache capacity={capacity} is negative: pass 0 to disable caching")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[_Key, Response] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, prompt: str, settings: GenerationSettings) -> Response | None:
        """The cached response, now the most recently used, counted as a hit or a miss."""
        key = (prompt, settings)
        with self._lock:
            response = self._entries.get(key)
            if response is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return response

    def put(self, prompt: str, settings: GenerationSettings, response: Response) -> None:
        if self.capacity == 0:
            return
        key = (prompt, settings)
        with self._lock:
            self._entries[key] = response
            self._entries.move_to_end(key)
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __contains__(self, key: _Key) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


@dataclass(frozen=True)
class EngineStats:
    requests: int
    cache_hits: int
    cache_misses: int
    # Batched generations run and the requests they answered: their ratio is the batch size.
    batches: int
    batched_requests: int
    # submit → result of the most recent requests, cache hits included, oldest first.
    latencies_s: tuple[float, ...]

    @property
    def mean_batch_size(self) -> float:
        return self.batched_requests / self.batches if self.batches else 0.0


@dataclass
class _Request:
    prompt: str
    settings: GenerationSettings
    future: Future[Response]
    submitted_at: float
    on_tokens: Callable[[list[int]], None] | None

    @property
    def key(self) -> _Key:
        return (self.prompt, self.settings)


class _Streams:
    """Hands each step's new id of a row to the requests that stream it, until the row ends."""

    def __init__(self, keys: list[_Key], requests: list[_Request]) -> None:
        row = {key: i for i, key in enumerate(keys)}
        self._listeners: list[list[Callable[[list[int]], None]]] = [[] for _ in keys]
        for request in requests:
            if request.on_tokens is not None:
                self._listeners[row[request.key]].append(request.on_tokens)

    def step(self, ids: dict[int, int]) -> None:
        for row, id_ in ids.items():
            kept = []
            for on_tokens in self._listeners[row]:
                try:
                    on_tokens([id_])
                except Exception:
                    # One caller's broken stream must not fail the batch it shares.
                    logger.exception("observe: an on_tokens callback failed; it gets no more ids")
                else:
                    kept.append(on_tokens)
            self._listeners[row] = kept


class InferenceEngine(Closeable):
    """Answers prompts from a background thread that batches concurrent requests."""

    def __init__(
        self,
        model: MoETransformer,
        tokenizer: ByteTokenizer | None = None,
        *,
        cache_size: int = 256,
        max_batch_size: int = 8,
        batch_wait_s: float = 0.005,
        seed: int = 0,
        on_batch: Callable[[], None] | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        """`on_batch` runs on the worker thread after each batched generation, once its
        requests are answered: a serving step, where a monitor's `step` goes. Its failure
        is logged and fails no request. Latency and cache hits go out through
        OpenTelemetry, to `meter_provider` or the global provider: a no-op unless the
        application configured one."""
        if max_batch_size < 1:
            raise ObserveError(f"max_batch_size={max_batch_size} must be at least 1")
        if batch_wait_s < 0:
            raise ObserveError(
                f"batch_wait_s={batch_wait_s} is negative: pass 0 to run each request as it comes"
            )
        self.model = model
        self.tokenizer = tokenizer or ByteTokenizer()
        self.cache = ResponseCache(cache_size)
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.seed = seed
        self.on_batch = on_batch
        self._on_batch_failed = False
        meter = instruments.meter(meter_provider, "observe.workload")
        self._latency = instruments.histogram(meter, catalogue.INFERENCE_LATENCY)
        self._cache_hits = instruments.counter(meter, catalogue.CACHE_HITS)
        self._cache_misses = instruments.counter(meter, catalogue.CACHE_MISSES)
        # None wakes the worker when the engine closes.
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._lock = threading.Lock()
        # Notified as batches finish, their on_batch included: join() waits on it.
        self._batch_done = threading.Condition(self._lock)
        # Requests queued and not yet through a batch (or dropped, cancelled).
        self._queued = 0
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._requests = 0
        self._batches = 0
        self._batched_requests = 0
        self._latencies_s: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def submit(
        self,
        prompt: str,
        settings: GenerationSettings | None = None,
        *,
        on_tokens: Callable[[list[int]], None] | None = None,
    ) -> Future[Response]:
        """A future of the response: already done on a cache hit, else queued for a batch.

        `on_tokens` streams a generated request: on the worker thread, after each step, it
        gets the step's new id of this request's row, until the id that ended it (EOS, the
        last its stop sequences needed, or its max_new_tokens-th), always before the future
        is done. A cache hit does not call it: stream the response's text.
        If it raises, the error is logged and it gets no more ids; the request goes on.
        """
        submitted_at = time.perf_counter()
        settings = settings or GenerationSettings()
        check_fits(settings, self.model.config.max_seq_len)
        future: Future[Response] = Future()
        with self._lock:
            if self._closed:
                raise ObserveError(
                    "the inference engine is closed: create a new InferenceEngine to submit more"
                )
            self._requests += 1
            cached = self.cache.get(prompt, settings)
            if cached is None:
                if self._worker is None:
                    # Daemon: an engine nobody closed must not keep the interpreter alive.
                    self._worker = threading.Thread(
                        target=self._serve, name="observe-inference", daemon=True
                    )
                    signals.start(self._worker)
                self._queue.put(_Request(prompt, settings, future, submitted_at, on_tokens))
                self._queued += 1
            else:
                response = replace(
                    cached, cached=True, latency_s=time.perf_counter() - submitted_at
                )
                self._latencies_s.append(response.latency_s)
        # Figures outside the lock, which the engine's thread takes after each batch: with
        # a meter provider's readers, a figure costs tens of µs.
        if cached is None:
            self._cache_misses.add(1)
            return future
        self._cache_hits.add(1)
        self._latency.record(response.latency_s)
        # Outside the lock: done-callbacks run here and may submit again.
        future.set_result(response)
        return future

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 32,
        *,
        top_p: float | None = None,
        temperature: float = 1.0,
    ) -> Response:
        settings = GenerationSettings(max_new_tokens, top_p=top_p, temperature=temperature)
        return self.submit(prompt, settings).result()

    @property
    def stats(self) -> EngineStats:
        with self._lock:
            return EngineStats(
                requests=self._requests,
                cache_hits=self.cache.hits,
                cache_misses=self.cache.misses,
                batches=self._batches,
                batched_requests=self._batched_requests,
                latencies_s=tuple(self._latencies_s),
            )

    def join(self) -> None:
        """Waits until every request submitted so far went through its batch, the batch's
        `on_batch` included (it runs after the answers), or the engine closed."""
        if threading.current_thread() is self._worker:
            raise ObserveError(
                "InferenceEngine.join() on the engine's own thread (from a done-callback) "
                "would wait for itself: call it from another thread"
            )
        with self._batch_done:
            self._batch_done.wait_for(lambda: self._queued == 0 or self._closed)

    def close(self) -> None:
        """Stops the worker; requests not yet answered fail with ObserveError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._batch_done.notify_all()
            worker = self._worker
        self._stopping.set()
        self._queue.put(None)
        # A done-callback on the worker thread may close the engine; it cannot join itself.
        if worker is not None and worker is not threading.current_thread():
            worker.join()
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is not None and request.future.set_running_or_notify_cancel():
                request.future.set_exception(ObserveError(CLOSED_MESSAGE))

    def _serve(self) -> None:
        while not self._stopping.is_set():
            batch = self._collect_batch()
            # Requests cancelled by their caller are dropped here.
            live = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if live:
                self._run_batch(live)
            with self._batch_done:
                self._queued -= len(batch)
                self._batch_done.notify_all()

    def _collect_batch(self) -> list[_Request]:
        """The oldest waiting request plus those that follow it with gaps of at most
        batch_wait_s, up to the cap, within BURST_WAITS × batch_wait_s of the first."""
        first = self._queue.get()
        if first is None:
            return []
        batch = [first]
        # The callers a batch answered send their next requests as one burst, which the
        # server reads one by one, a few ms apart: a deadline from the first would cut the
        # burst in two, and the halves would then run as two batches for good.
        now = time.perf_counter()
        deadline = now + BURST_WAITS * self.batch_wait_s
        while len(batch) < self.max_batch_size:
            wait = min(self.batch_wait_s, deadline - now)
            try:
                request = self._queue.get(timeout=max(0.0, wait))
            except queue.Empty:
                break
            now = time.perf_counter()
            if request is None:
                break
            batch.append(request)
        return batch

    def _run_batch(self, requests: list[_Request]) -> None:
        # No setting needs a batch of its own: `generate_batch` gives each row its own
        # sampling (greedy or top_p, temperature, a generator of its seed), stop sequences
        # and max_new_tokens, and drops an ended row's padding from the cache, so a long
        # prompt wanting few tokens and a short one wanting many fit the context together.
        # Requests of the same prompt and settings share a row.
        keys = list(dict.fromkeys(r.key for r in requests))
        streams = None
        if any(r.on_tokens is not None for r in requests):
            streams = _Streams(keys, requests)
        try:
            new_ids = generate_batch(
                self.model,
                [prompt for prompt, _ in keys],
                [settings for _, settings in keys],
                tokenizer=self.tokenizer,
                seed=self.seed,
                abort=self._stopping,
                on_step=None if streams is None else streams.step,
            )
            responses = {
                key: self._respond(*key, ids) for key, ids in zip(keys, new_ids, strict=True)
            }
        except Exception as exc:
            # Every caller of this batch learns of the failure rather than waiting forever.
            for request in requests:
                request.future.set_exception(exc)
            return
        finished_at = time.perf_counter()
        for (prompt, settings), response in responses.items():
            self.cache.put(prompt, settings, response)
        latencies_s = [finished_at - r.submitted_at for r in requests]
        with self._lock:
            self._batches += 1
            self._batched_requests += len(requests)
            self._latencies_s.extend(latencies_s)
        for request, latency_s in zip(requests, latencies_s, strict=True):
            request.future.set_result(replace(responses[request.key], latency_s=latency_s))
        # The figures and the step after the answers: a monitor's step flushes every few
        # batches (tens of ms of folding on 2 cores), which then runs while the callers
        # send their next requests rather than holding back these answers.
        for latency_s in latencies_s:
            self._latency.record(latency_s)
        if self.on_batch is not None:
            try:
                self.on_batch()
            except Exception:
                # The batch was answered; later batches must be too. Logged once: it would
                # fail again every batch.
                if not self._on_batch_failed:
                    self._on_batch_failed = True
                    logger.exception("observe: on_batch failed; later failures not logged")

    def _respond(self, prompt: str, settings: GenerationSettings, new_ids: list[int]) -> Response:
        """A generated row's response, cut at its stop sequences; latency is filled in later."""
        scanner = StopScanner(settings.stop)
        shown = scanner.feed(new_ids) + scanner.finish()
        limit = prompt_limit(settings, self.model.config.max_seq_len)
        return Response(
            prompt,
            self.tokenizer.decode(shown),
            scanner.consumed,
            0.0,
            cached=False,
            finish_reason="stop" if scanner.stopped else "length",
            prompt_tokens=min(len(self.tokenizer.encode(prompt)), limit),
        )
