"""OpenAI's completions and chat completions, as this server reads and answers them.

Requests are checked here against the served model (its name, its context), so that what
reaches the engine is always something it can generate. Fields OpenAI defines that a
byte-level model has no use for (`user`, `logit_bias`, …) are accepted and ignored; those
whose answer would be wrong if ignored (`n` above 1, `logprobs`, `echo`) are refused.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from observe.workload.job_config import GenerationSettings
from observe.workload.server.errors import NOT_FOUND, ApiError
from observe.workload.tokenizer import ByteTokenizer

# OpenAI's defaults: 16 new tokens for completions; chat has none, so here a short answer.
COMPLETION_MAX_TOKENS = 16
CHAT_MAX_TOKENS = 64
MAX_STOPS = 4


class _Request(BaseModel):
    # Unknown fields pass: clients send fields of later API versions.
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, ge=0, le=1)
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: Any = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class CompletionRequest(_Request):
    prompt: str | list[str]
    echo: bool = False


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


@dataclass(frozen=True)
class Generation:
    """A checked request: the prompt text, its token count and how to generate."""

    prompt: str
    prompt_tokens: int
    settings: GenerationSettings
    stream: bool
    include_usage: bool


@dataclass(frozen=True)
class ServedModel:
    """What requests are checked against: the model's name and context."""

    name: str
    max_seq_len: int
    created: int

    def completion(self, request: CompletionRequest, tokenizer: ByteTokenizer) -> Generation:
        self._check_common(request)
        if request.echo:
            raise _unsupported("echo", "the completion never repeats the prompt")
        prompt = request.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ApiError(
                    400,
                    f"prompt holds {len(prompt)} prompts: this server answers one per request; "
                    "send one string",
                    param="prompt",
                    code="invalid_value",
                )
            prompt = prompt[0]
        return self._generation(request, prompt, request.max_tokens, tokenizer, "prompt")

    def chat(self, request: ChatRequest, tokenizer: ByteTokenizer) -> Generation:
        self._check_common(request)
        prompt = chat_prompt(request.messages)
        limit = request.max_completion_tokens or request.max_tokens
        return self._generation(request, prompt, limit, tokenizer, "messages")

    def _check_common(self, request: _Request) -> None:
        if request.model != self.name:
            raise ApiError(
                404,
                f"the model {request.model!r} is not served here: use {self.name!r} "
                "(GET /v1/models lists it)",
                kind=NOT_FOUND,
                param="model",
                code="model_not_found",
            )
        if request.n != 1:
            raise _unsupported("n", f"n={request.n}: this server returns one choice; ask n=1")
        if request.logprobs not in (None, False, 0):
            raise _unsupported("logprobs", "this server returns no log probabilities")

    def _generation(
        self,
        request: _Request,
        prompt: str,
        max_tokens: int | None,
        tokenizer: ByteTokenizer,
        prompt_param: str,
    ) -> Generation:
        prompt_tokens = len(tokenizer.encode(prompt))
        room = self.max_seq_len - prompt_tokens
        if room < 1:
            raise ApiError(
                400,
                f"the {prompt_param} takes {prompt_tokens} tokens, over the model's context of "
                f"{self.max_seq_len} with room for one new token: shorten it",
                param=prompt_param,
                code="context_length_exceeded",
            )
        default = COMPLETION_MAX_TOKENS if prompt_param == "prompt" else CHAT_MAX_TOKENS
        new_tokens = max_tokens if max_tokens is not None else min(default, room)
        if new_tokens > room:
            raise ApiError(
                400,
                f"max_tokens={new_tokens} with a {prompt_tokens}-token {prompt_param} exceeds "
                f"the model's context of {self.max_seq_len}: ask for at most {room}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        greedy = request.temperature == 0 or request.top_p == 0
        settings = GenerationSettings(
            max_new_tokens=new_tokens,
            top_p=None if greedy else request.top_p,
            temperature=1.0 if greedy else request.temperature,
            seed=request.seed,
            stop=_stops(request.stop),
        )
        return Generation(prompt, prompt_tokens, settings, request.stream, request.include_usage)


def chat_prompt(messages: list[ChatMessage]) -> str:
    """The conversation as the text the model continues: a line per message, then the
    assistant's turn."""
    lines = []
    for index, message in enumerate(messages):
        content = message.content
        if isinstance(content, list):
            if any(part.type != "text" or part.text is None for part in content):
                raise ApiError(
                    400,
                    f"messages[{index}].content holds a part that is not text: this model "
                    "reads text only",
                    param=f"messages.{index}.content",
                    code="invalid_value",
                )
            content = "".join(part.text or "" for part in content)
        lines.append(f"{message.role}: {content or ''}")
    return "\n".join([*lines, "assistant:"])


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    if len(stops) > MAX_STOPS or any(not s for s in stops):
        raise ApiError(
            400,
            f"stop holds {len(stops)} sequences: give at most {MAX_STOPS}, none empty",
            param="stop",
            code="invalid_value",
        )
    return tuple(stops)


def _unsupported(param: str, why: str) -> ApiError:
    return ApiError(400, why, param=param, code="unsupported_parameter")


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(frozen=True)
class Shape:
    """One endpoint's response shapes: whole, and as stream chunks."""

    chat: bool
    model: str
    id: str
    created: int

    @classmethod
    def of(cls, chat: bool, model: str) -> Shape:
        prefix = "chatcmpl" if chat else "cmpl"
        return cls(chat, model, f"{prefix}-{uuid.uuid4().hex}", int(time.time()))

    def whole(self, text: str, finish_reason: str, used: dict[str, int]) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return {**self._head("chat.completion" if self.chat else "text_completion"),
                "choices": [choice], "usage": used}  # fmt: skip

    def chunk(self, text: str | None, finish_reason: str | None = None) -> dict[str, Any]:
        """A stream chunk with `text` (None: the chat's opening chunk, the role alone)."""
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
        if self.chat:
            if text is None:
                choice["delta"] = {"role": "assistant", "content": ""}
            else:
                choice["delta"] = {"content": text} if text or finish_reason is None else {}
        else:
            choice["text"] = text or ""
        return {**self._head(self._chunk_object), "choices": [choice]}

    def usage_chunk(self, used: dict[str, int]) -> dict[str, Any]:
        return {**self._head(self._chunk_object), "choices": [], "usage": used}

    @property
    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def _head(self, object_: str) -> dict[str, Any]:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model}
