"""Where observe sends what it measures: file, environment and flags, in rising precedence.

`observe.toml` in the working directory (or `--config FILE`) is read first; `OBSERVE_*`
environment variables override it; command-line flags override both. With none of them,
everything runs on the embedded defaults: SQLite under `.observe/` and a `/metrics`
endpoint on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from observe.errors import ObserveError

DEFAULT_CONFIG_FILE = Path("observe.toml")
ENV_PREFIX = "OBSERVE_"


@dataclass(frozen=True)
class Settings:
    # SQLAlchemy URL of the store; None: SQLite at .observe/observe.db.
    db_url: str | None = None
    prometheus_host: str = "127.0.0.1"
    # 0 picks a free port (logged); None serves no /metrics endpoint.
    prometheus_port: int | None = 9464
    # OTLP/HTTP endpoint of an OpenTelemetry Collector, e.g. http://127.0.0.1:4318.
    otlp_endpoint: str | None = None
    spool_dir: Path = Path(".observe/spool")
    spool_max_bytes: int = 256 * 1024 * 1024
    # Label combinations kept per metric; more are counted as dropped, not exported.
    label_limit: int = 2000
    # Steps between flushes of the hooks' device buffers.
    flush_every: int = 10
    # Seconds between exports to the store (and the OTLP endpoint).
    export_interval_s: float = 5.0
    # Seconds close() and SIGTERM spend delivering what is left before giving up.
    close_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.prometheus_port is not None and not 0 <= self.prometheus_port <= 65535:
            raise ObserveError(
                f"prometheus_port={self.prometheus_port} is not a port: use 0 to 65535 "
                "(0 picks a free one)"
            )
        for name in ("spool_max_bytes", "label_limit", "flush_every"):
            if getattr(self, name) < 1:
                raise ObserveError(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("export_interval_s", "close_timeout_s"):
            if getattr(self, name) <= 0:
                raise ObserveError(f"{name}={getattr(self, name)} must be positive")


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from the file, then the environment, then `overrides` (flags; None = unset)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    values.update(_from_file(config_file))
    for name in _FIELDS:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _parse(name, raw, f"${ENV_PREFIX}{name.upper()}")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return Settings(**values)


def _from_file(config_file: str | os.PathLike[str] | None) -> dict[str, Any]:
    path = Path(config_file) if config_file is not None else DEFAULT_CONFIG_FILE
    if not path.exists():
        if config_file is not None:
            raise ObserveError(f"config file {path} does not exist: check the --config path")
        return {}
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ObserveError(f"config file {path} is not valid TOML ({exc}): fix its syntax") from exc
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise ObserveError(
            f"config file {path} has unknown settings {unknown}: known are {', '.join(_FIELDS)}"
        )
    return {name: _parse(name, value, f"{name} in {path}") for name, value in table.items()}


def _parse(name: str, value: Any, where: str) -> Any:
    """Converts a file or environment value to the field's type, or explains the problem."""
    default = _FIELDS[name].default
    optional = "None" in str(_FIELDS[name].type)
    if optional and isinstance(value, str) and value.strip().lower() in ("", "none"):
        return None
    try:
        if isinstance(default, Path):
            return Path(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        kind = "a path" if isinstance(default, Path) else type(default).__name__
        raise ObserveError(f"{where} = {value!r} is not valid: expected {kind}") from None
