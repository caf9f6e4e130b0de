"""The server's routes: OpenAI's completions, chat completions and models over an
`InferenceEngine`, health and readiness, and a bounded number of requests at once."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from observe.errors import ObserveError
from observe.workload.inference import InferenceEngine, Response
from observe.workload.server import errors
from observe.workload.server.errors import OVERLOADED, SERVER_ERROR, ApiError
from observe.workload.server.figures import ServerFigures
from observe.workload.server.openai_api import (
    ChatRequest,
    CompletionRequest,
    Generation,
    ServedModel,
    Shape,
    usage,
)
from observe.workload.stops import StopScanner
from observe.workload.tokenizer import ByteTokenizer

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
MODELS = "/v1/models"
ROUTES = frozenset({COMPLETIONS, CHAT, MODELS, "/healthz", "/readyz"})
# The `route` label of a path the server does not serve: any path a client sends would
# otherwise make a series of its own.
OTHER_ROUTE = "other"
# Seconds a client refused for a full queue is told to wait.
RETRY_AFTER_S = 1

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Slots:
    """Generation requests admitted at once, queued or generating: past `limit`, 429."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self) -> Slot:
        if self.held >= self.limit:
            raise ApiError(
                429,
                f"the server holds {self.limit} requests already, its --max-queue: retry after "
                f"{RETRY_AFTER_S} s, or send fewer at once",
                kind=OVERLOADED,
                code="queue_full",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.held += 1
        return Slot(self)


@dataclass
class Slot:
    slots: Slots
    released: bool = False

    def release(self) -> None:
        # Idempotent: a stream releases when it ends, and again when its response does.
        if not self.released:
            self.released = True
            self.slots.held -= 1


@dataclass
class Service:
    """What the routes answer from."""

    engine: InferenceEngine
    served: ServedModel
    figures: ServerFigures
    slots: Slots
    tokenizer: ByteTokenizer = field(default_factory=ByteTokenizer)
    # False once the server drains: load balancers stop sending.
    ready: bool = True


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="observe serve", docs_url=None, redoc_url=None, openapi_url=None)
    errors.install(app)
    app.add_middleware(_CountRequests, figures=service.figures)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not service.ready:
            return errors.error_response(
                503, "the server is shutting down", SERVER_ERROR, code="draining"
            )
        return JSONResponse({"status": "ready", "model": service.served.name})

    @app.get(MODELS)
    async def models() -> dict[str, Any]:
        model = {
            "id": service.served.name,
            "object": "model",
            "created": service.served.created,
            "owned_by": "observe",
        }
        return {"object": "list", "data": [model]}

    @app.post(COMPLETIONS)
    async def completions(request: CompletionRequest) -> Any:
        generation = service.served.completion(request, service.tokenizer)
        return await _answer(service, COMPLETIONS, Shape.of(False, request.model), generation)

    @app.post(CHAT)
    async def chat(request: ChatRequest) -> Any:
        generation = service.served.chat(request, service.tokenizer)
        return await _answer(service, CHAT, Shape.of(True, request.model), generation)

    return app


async def _answer(service: Service, route: str, shape: Shape, generation: Generation) -> Any:
    arrived = time.perf_counter()
    slot = service.slots.take()
    if generation.stream:
        chunks = _stream(service, route, shape, generation, arrived, slot)
        return StreamingResponse(
            chunks, media_type="text/event-stream", background=BackgroundTask(slot.release)
        )
    try:
        future = _submit(service, generation)
        try:
            response = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # not started yet: the engine drops it
            raise
        except ObserveError as exc:
            raise _engine_failed(exc) from None
    finally:
        slot.release()
    used = usage(response.prompt_tokens, response.new_tokens)
    service.figures.generated(
        route, time.perf_counter() - arrived, response.prompt_tokens, response.new_tokens
    )
    return shape.whole(response.text, response.finish_reason, used)


async def _stream(
    service: Service,
    route: str,
    shape: Shape,
    generation: Generation,
    arrived: float,
    slot: Slot,
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, text as it is generated. A client that
    goes away ends this generator, which frees its slot."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[list[int] | None] = asyncio.Queue()

    def hand_over(item: list[int] | None) -> None:
        # A closed loop: the server stopped, and nobody reads this stream any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(pieces.put_nowait, item)

    future: Future[Response] | None = None
    try:
        try:
            future = _submit(service, generation, on_tokens=hand_over)
        except ApiError as exc:
            yield _error_event(exc)
            return
        future.add_done_callback(lambda _: hand_over(None))
        scanner = StopScanner(generation.settings.stop)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        first_token = True
        if shape.chat:
            yield _event(shape.chunk(None))
        streamed = False
        while (ids := await pieces.get()) is not None:
            streamed = True
            text = decoder.decode(_bytes(scanner.feed(ids)))
            if text:
                if first_token:
                    first_token = False
                    service.figures.first_token(route, time.perf_counter() - arrived)
                yield _event(shape.chunk(text))
        try:
            response = future.result()
        except ObserveError as exc:
            yield _error_event(_engine_failed(exc))
            return
        # A cached response comes whole: the engine generated nothing for it.
        tail = decoder.decode(_bytes(scanner.finish()), final=True) if streamed else response.text
        if tail:
            if first_token:
                service.figures.first_token(route, time.perf_counter() - arrived)
            yield _event(shape.chunk(tail))
        yield _event(shape.chunk("", response.finish_reason))
        used = usage(response.prompt_tokens, response.new_tokens)
        if generation.include_usage:
            yield _event(shape.usage_chunk(used))
        yield "data: [DONE]\n\n"
        service.figures.generated(
            route, time.perf_counter() - arrived, response.prompt_tokens, response.new_tokens
        )
    finally:
        if future is not None and not future.done():
            future.cancel()
        slot.release()


def _submit(
    service: Service,
    generation: Generation,
    on_tokens: Callable[[list[int]], None] | None = None,
) -> Future[Response]:
    try:
        return service.engine.submit(generation.prompt, generation.settings, on_tokens=on_tokens)
    except ObserveError as exc:
        raise _engine_failed(exc) from None


def _engine_failed(exc: ObserveError) -> ApiError:
    # The engine closes only when the server stops; anything else is a generation failure.
    return ApiError(
        503, f"the model could not answer: {exc}", kind=SERVER_ERROR, code="unavailable"
    )


def _bytes(ids: list[int]) -> bytes:
    return bytes(i for i in ids if i < 256)


def _error_event(error: ApiError) -> str:
    """A refusal once the stream has begun: its status is sent, so the body says it."""
    return _event({"error": json.loads(bytes(error.response().body))["error"]})


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class _CountRequests:
    """Counts every answered request by route and status code, refusals included."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], figures: ServerFigures
    ) -> None:
        self.app = app
        self.figures = figures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # An exception that escapes the routes is answered 500 outside this middleware.
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope["path"]
            self.figures.answered(path if path in ROUTES else OTHER_ROUTE, status)
