"""The `[metrics]` settings: TLS and basic auth of a run's `/metrics` endpoint.

```toml
[metrics]
cert_file = "/etc/observe/tls.crt"   # PEM, intermediates after it; with key_file: HTTPS
key_file = "/etc/observe/tls.key"    # unencrypted PEM, readable by the run's user only
client_ca_file = "/etc/observe/ca.crt"  # optional: clients must show a certificate of this CA
username = "prometheus"              # optional: basic auth, with one of
password_file = "/etc/observe/metrics.password"  # or $OBSERVE_METRICS_PASSWORD
```

The names are those of Prometheus's own web and scrape configuration. The password is never
read from the settings file, which a repository or a support bundle shares: it comes from
`OBSERVE_METRICS_PASSWORD` or `password_file`. Everything is checked when the settings load
(the files are read, the key matched to the certificate), before a run starts.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from observe.errors import ObserveError
from observe.telemetry.basic_auth import Credentials


@dataclass(frozen=True)
class MetricsEndpointConfig:
    # The endpoint's certificate and private key: both give HTTPS, neither plain HTTP.
    cert_file: Path | None = None
    key_file: Path | None = None
    # A CA whose certificates clients must present (mutual TLS); needs cert_file.
    client_ca_file: Path | None = None
    # HTTP basic auth: the username scrapers send, and its password from one of the next two.
    username: str | None = None
    # From the environment (OBSERVE_METRICS_PASSWORD) or a caller, never the settings file.
    password: str | None = field(default=None, repr=False, metadata={"secret": "password_file"})
    # A file holding the password; surrounding whitespace is dropped, as Prometheus does.
    password_file: Path | None = None

    def __post_init__(self) -> None:
        self.server_context()
        self.credentials()

    def server_context(self) -> ssl.SSLContext | None:
        """The endpoint's TLS, or None for plain HTTP."""
        if (self.cert_file is None) != (self.key_file is None):
            given = "cert_file" if self.cert_file is not None else "key_file"
            raise ObserveError(
                f"[metrics] has {given} alone: TLS needs the certificate (cert_file) and its "
                "private key (key_file); set both, or neither to serve plain HTTP"
            )
        if self.cert_file is None or self.key_file is None:
            if self.client_ca_file is not None:
                raise ObserveError(
                    "[metrics] client_ca_file is set without TLS: client certificates need "
                    "HTTPS; set cert_file and key_file too"
                )
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _pem(self.cert_file, "cert_file", "CERTIFICATE-----", "certificate")
        _pem(self.key_file, "key_file", "PRIVATE KEY-----", "private key")
        try:
            context.load_cert_chain(self.cert_file, self.key_file, password=self._encrypted_key)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise ObserveError(
                    f"[metrics] key_file {self.key_file} is not the private key of cert_file "
                    f"{self.cert_file}: pass the key the certificate was issued for"
                ) from exc
            raise ObserveError(
                f"[metrics] cert_file {self.cert_file} and key_file {self.key_file} do not "
                f"load ({exc.reason or exc}): pass a PEM certificate and its PEM private key"
            ) from exc
        if self.client_ca_file is not None:
            _pem(self.client_ca_file, "client_ca_file", "CERTIFICATE-----", "certificate")
            try:
                context.load_verify_locations(self.client_ca_file)
            except ssl.SSLError as exc:
                raise ObserveError(
                    f"[metrics] client_ca_file {self.client_ca_file} does not load "
                    f"({exc.reason or exc}): pass the PEM certificate of the clients' CA"
                ) from exc
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def credentials(self) -> Credentials | None:
        """What basic auth requires, or None when anyone may read /metrics."""
        if self.password is not None and self.password_file is not None:
            raise ObserveError(
                "[metrics] has both a password (OBSERVE_METRICS_PASSWORD) and password_file: "
                "keep one"
            )
        password = self.password
        if self.password_file is not None:
            password = _readable(self.password_file, "password_file").strip()
            if not password:
                raise ObserveError(
                    f"[metrics] password_file {self.password_file} is empty: write the "
                    "password in it"
                )
        if self.username is None:
            if password is not None:
                raise ObserveError(
                    "[metrics] has a password but no username: set username for basic auth, "
                    "or unset the password"
                )
            return None
        if password is None:
            raise ObserveError(
                "[metrics] username is set without a password: set OBSERVE_METRICS_PASSWORD or "
                "password_file, a file only the run's user can read"
            )
        # HTTP basic auth ends the username at its first colon (RFC 7617).
        if not self.username or ":" in self.username:
            raise ObserveError(
                "[metrics] username is empty or holds a ':', which HTTP basic auth cannot "
                "send: choose one without"
            )
        if not password:
            raise ObserveError("[metrics] the password is empty: set a non-empty one")
        return Credentials(self.username, password)

    def _encrypted_key(self) -> bytes:
        # OpenSSL asks for an encrypted key's passphrase; without this, on the terminal.
        raise ObserveError(
            f"[metrics] key_file {self.key_file} is encrypted: observe reads an unencrypted "
            "key; decrypt it (openssl pkey -in KEY -out KEY.plain) and make it readable by "
            "the run's user only"
        )


def _pem(path: Path, name: str, marker: str, holds: str) -> None:
    if marker not in _readable(path, name):
        raise ObserveError(
            f"[metrics] {name} {path} holds no PEM {holds}: pass the {holds} in PEM form, a "
            f"block that begins -----BEGIN ...{marker}"
        )


def _readable(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text, as PEM is"
        raise ObserveError(
            f"[metrics] {name} {path} cannot be read ({reason}): check the path and that the "
            "run's user may read it"
        ) from exc
