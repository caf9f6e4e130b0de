"""The `[metrics]` settings: TLS and basic auth of /metrics. Each half-done or wrong setup is
a clear error when the settings load, and the password sits in no settings file, message or
repr."""

from __future__ import annotations

from pathlib import Path

import pytest
from certificates import TlsFiles, openssl
from cli_runner import TINY, invoke

from observe.errors import ObserveError
from observe.settings import load_settings
from observe.telemetry.basic_auth import Credentials

PASSWORD = "hunter2-but-longer"
CERT = 'cert_file = "{cert}"\n'
KEY = 'key_file = "{key}"\n'


@pytest.fixture
def files(tmp_path: Path, tls_files: TlsFiles) -> dict[str, Path]:
    """What a `[metrics]` table below may name, good and bad."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    encrypted = tmp_path / "encrypted.key"
    openssl("pkey", "-in", tls_files.key, "-aes256", "-passout", "pass:x", "-out", encrypted)
    empty = tmp_path / "empty.password"
    empty.write_text("\n")
    password = tmp_path / "metrics.password"
    password.write_text(f"  {PASSWORD}\n")
    return {
        "cert": tls_files.cert,
        "key": tls_files.key,
        "ca": tls_files.ca,
        "stray_key": tls_files.stray_key,
        "garbage": garbage,
        "encrypted": encrypted,
        "missing": tmp_path / "missing.pem",
        "empty": empty,
        "password": password,
    }


def write(tmp_path: Path, table: str, files: dict[str, Path]) -> Path:
    config = tmp_path / "observe.toml"
    config.write_text("[metrics]\n" + table.format(**files))
    return config


@pytest.mark.parametrize(
    ("table", "environ", "message"),
    [
        (CERT, {}, "has cert_file alone: TLS needs the certificate .* and its private key"),
        (KEY, {}, "has key_file alone"),
        ('client_ca_file = "{ca}"\n', {}, "client_ca_file is set without TLS"),
        ('cert_file = "{missing}"\n' + KEY, {}, "missing.pem cannot be read .No such file"),
        (CERT + 'key_file = "{stray_key}"\n', {}, "stray.key is not the private key of"),
        ('cert_file = "{garbage}"\n' + KEY, {}, "garbage.pem holds no PEM certificate"),
        (CERT + 'key_file = "{garbage}"\n', {}, "garbage.pem holds no PEM private key"),
        (CERT + 'key_file = "{encrypted}"\n', {}, "encrypted.key is encrypted: .*unencrypted"),
        (CERT + KEY + 'client_ca_file = "{garbage}"\n', {}, "garbage.pem holds no PEM"),
        ('username = "prometheus"\n', {}, "username is set without a password: set OBSERVE_"),
        ("", {"OBSERVE_METRICS_PASSWORD": PASSWORD}, "has a password but no username"),
        (
            'username = "prometheus"\npassword_file = "{password}"\n',
            {"OBSERVE_METRICS_PASSWORD": PASSWORD},
            "both a password .* and password_file",
        ),
        ('username = "prometheus"\npassword_file = "{empty}"\n', {}, "empty.password is empty"),
        ('username = "prometheus"\npassword_file = "{missing}"\n', {}, "missing.pem cannot be"),
        ('username = "a:b"\npassword_file = "{password}"\n', {}, "holds a ':'"),
        (
            f'username = "prometheus"\npassword = "{PASSWORD}"\n',
            {},
            "password in \\[metrics\\] .* is a secret.* set \\$OBSERVE_METRICS_PASSWORD instead, "
            "or password_file",
        ),
    ],
)
def test_half_done_or_wrong_access_is_a_clear_error(
    tmp_path: Path, files: dict[str, Path], table: str, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ObserveError, match=message) as caught:
        load_settings(write(tmp_path, table, files), environ=environ)
    assert PASSWORD not in str(caught.value)


def test_the_password_comes_from_the_environment_or_a_file_and_shows_nowhere(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    environ = {
        "OBSERVE_METRICS_CERT_FILE": str(files["cert"]),
        "OBSERVE_METRICS_KEY_FILE": str(files["key"]),
        "OBSERVE_METRICS_USERNAME": "prometheus",
        "OBSERVE_METRICS_PASSWORD": PASSWORD,
    }
    from_environment = load_settings(environ=environ, config_file=write(tmp_path, "", files))
    assert from_environment.metrics.server_context() is not None
    expected = Credentials("prometheus", PASSWORD)
    assert from_environment.metrics.credentials() == expected
    table = CERT + KEY + 'username = "prometheus"\npassword_file = "{password}"\n'
    from_file = load_settings(write(tmp_path, table, files), environ={})
    assert from_file.metrics.credentials() == expected  # the whitespace around it dropped
    for shown in (from_environment, from_file, expected):
        assert PASSWORD not in repr(shown)


def test_the_cli_explains_bad_access_settings_before_the_run(
    tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OBSERVE_METRICS_PASSWORD", PASSWORD)
    monkeypatch.setenv("OBSERVE_DB_URL", f"sqlite:///{tmp_path / 'observe.db'}")
    config = write(tmp_path, CERT, files)
    code, output = invoke("--config", config, "train", "--out", tmp_path / "out", *TINY)
    assert code == 2
    assert "error: [metrics] has cert_file alone" in output
    assert "Traceback" not in output and PASSWORD not in output
    assert not (tmp_path / "observe.db").exists()  # nothing started: no run in the store
