"""Throwaway TLS files for tests, made with the `openssl` command: a CA, a server
certificate it signs for localhost and 127.0.0.1, and a client certificate it signs.

Tests take them through the `tls_files` fixture (tests/conftest.py).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Both names the server certificate holds: Prometheus checks `server_name`, Python the IP.
SERVER_NAME = "localhost"
SUBJECT_ALT_NAME = f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1"
# P-256 keys: made in milliseconds, where RSA keys take a noticeable while.
NEW_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    # A key no certificate here belongs to.
    stray_key: Path


def openssl(*args: str | Path) -> None:
    binary = shutil.which("openssl")
    assert binary, "openssl is not installed: run `make system-packages`"
    result = subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def issue(directory: Path, name: str, ca: Path, ca_key: Path, *extensions: str) -> None:
    """`name.pem` and `name.key` in `directory`, signed by `ca`."""
    request = directory / f"{name}.csr"
    key = directory / f"{name}.key"
    subject = f"/CN={SERVER_NAME if name == 'server' else name}"
    extra = [arg for ext in extensions for arg in ("-addext", ext)]
    openssl("req", "-new", *NEW_KEY, "-keyout", key, "-out", request, "-subj", subject, *extra)
    openssl(
        "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-set_serial", "2",
        "-days", "1", "-copy_extensions", "copy", "-out", directory / f"{name}.pem",
    )  # fmt: skip


def make_tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    openssl(
        "req", "-x509", *NEW_KEY, "-keyout", ca_key, "-out", ca, "-days", "1",
        "-subj", "/CN=observe test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign",
    )  # fmt: skip
    issue(directory, "server", ca, ca_key, SUBJECT_ALT_NAME, "extendedKeyUsage=serverAuth")
    issue(directory, "client", ca, ca_key, "extendedKeyUsage=clientAuth")
    stray = directory / "stray.key"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", stray)
    return TlsFiles(
        ca=ca,
        cert=directory / "server.pem",
        key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        stray_key=stray,
    )
