"""OpenAI-style error responses: `{"error": {"message", "type", "param", "code"}}`.

Every refusal names the problem and the fix; no response ever carries a traceback.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

logger = logging.getLogger("observe")

# OpenAI's error types.
INVALID_REQUEST = "invalid_request_error"
NOT_FOUND = "not_found_error"
OVERLOADED = "rate_limit_error"
SERVER_ERROR = "server_error"

# Pydantic's tag of a union member in an error's location: a type, not a field of ours.
_UNION_MEMBER = re.compile(r"(str|int|float|bool|dict|list|none)(\[.*\])?|[A-Z]\w*|.*\[.*")


class ApiError(Exception):
    """A request refused with `status` and an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = headers

    def response(self) -> JSONResponse:
        return error_response(
            self.status, self.message, self.kind, self.param, self.code, self.headers
        )


def error_response(
    status: int,
    message: str,
    kind: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Answers every failure, FastAPI's own included, with an OpenAI error body."""

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(exc.errors()).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no route {request.url.path}: the API is under /v1 (see GET /v1/models)"
            return error_response(404, message, NOT_FOUND, code="unknown_url")
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
            return error_response(405, message, INVALID_REQUEST, code="method_not_allowed")
        return error_response(exc.status_code, str(exc.detail), INVALID_REQUEST)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server's log, never to the client.
        logger.exception("observe serve: %s %s failed", request.method, request.url.path)
        message = f"the server failed on this request ({type(exc).__name__}): see its log"
        return error_response(500, message, SERVER_ERROR)


def _invalid(errors: Any) -> ApiError:
    """The first of pydantic's complaints, in words and with the field it is about."""
    first = errors[0] if errors else {}
    # A union's members name themselves in the location (`prompt.str`): the field is the rest.
    location = [
        str(part)
        for part in first.get("loc", ())
        if part != "body" and not (isinstance(part, str) and _UNION_MEMBER.fullmatch(part))
    ]
    kind = first.get("type", "")
    if kind == "json_invalid":
        context = first.get("ctx", {}).get("error", "")
        return ApiError(
            400,
            f"the request body is not valid JSON ({context}): send a JSON object",
            code="invalid_json",
        )
    if not location:
        return ApiError(400, "the request body must be a JSON object", code="invalid_body")
    param = ".".join(location)
    if kind == "missing":
        return ApiError(400, f"{param} is required", param=param, code="missing_field")
    given = json.dumps(first.get("input"), default=str)[:80]
    message = f"{param}={given}: {first.get('msg', 'invalid value').lower()}"
    return ApiError(400, message, param=param, code="invalid_value")
