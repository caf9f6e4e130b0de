"""HTTP basic auth (RFC 7617) in front of a WSGI app: prometheus_client's server has none.

Credentials are compared in constant time, and appear in no log, message or repr.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

# What a client that sent no or wrong credentials is told to send.
CHALLENGE = 'Basic realm="observe", charset="UTF-8"'


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


class BasicAuth:
    """Hands `app` the requests that carry `credentials`; answers the rest 401."""

    def __init__(self, app: WSGIApplication, credentials: Credentials) -> None:
        self._app = app
        self._expected = _digest(f"{credentials.username}:{credentials.password}".encode())

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self._admits(environ.get("HTTP_AUTHORIZATION", "")):
            return self._app(environ, start_response)
        body = b"401 Unauthorized: send the username and password of observe's [metrics]\n"
        start_response(
            "401 Unauthorized",
            [
                ("WWW-Authenticate", CHALLENGE),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]

    def _admits(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            # "user:password", which the credentials' own form matches byte for byte.
            given = base64.b64decode(token.strip(), validate=True)
        except ValueError:  # binascii.Error, or a header of other than ASCII
            return False
        # Digests of equal length: compare_digest's time then tells nothing of the lengths.
        return hmac.compare_digest(_digest(given), self._expected)


def _digest(user_pass: bytes) -> bytes:
    return hashlib.sha256(user_pass).digest()
