"""Where observe sends what it measures: file, environment and flags, in rising precedence.

`observe.toml` in the working directory (or `--config FILE`) is read first; `OBSERVE_*`
environment variables override it; command-line flags override both. With none of them,
everything runs on the embedded defaults: SQLite under `.observe/` and a `/metrics`
endpoint on 127.0.0.1. The monitor's own settings (`MonitorConfig`: flush interval,
sampling) are the `[monitor]` table of the file and `OBSERVE_MONITOR_*` variables; live
drift's (`DriftConfig`) the `[drift]` table and `OBSERVE_DRIFT_*`; alert rules'
(`AlertsConfig`) the `[alerts]` table, `OBSERVE_ALERTS_*`, and per rule a table
`[alerts.rules.NAME]` (file only); the `/metrics` endpoint's TLS and basic auth
(`MetricsEndpointConfig`) the `[metrics]` table and `OBSERVE_METRICS_*`. A secret (the
basic auth password) comes from the environment or a file it names, never this file.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from observe.alerts.config import AlertsConfig
from observe.drift.config import DriftConfig
from observe.errors import ObserveError
from observe.hooks.config import MonitorConfig
from observe.telemetry import series_budget
from observe.telemetry.endpoint_config import MetricsEndpointConfig
from observe.telemetry.limits import MAX_LABEL_LIMIT

DEFAULT_CONFIG_FILE = Path("observe.toml")
# Heartbeats a run may miss (a slow export, a delivery that lags) before it passes for lost.
LOST_AFTER_EXPORTS = 3
LOST_AFTER_DEFAULT = timedelta(minutes=2)
ENV_PREFIX = "OBSERVE_"
# Where /metrics is served unless told otherwise; a distributed rank adds its LOCAL_RANK.
DEFAULT_PROMETHEUS_PORT = 9464


@dataclass(frozen=True)
class Settings:
    # SQLAlchemy URL of the store; None: SQLite at .observe/observe.db.
    db_url: str | None = None
    prometheus_host: str = "127.0.0.1"
    # 0 picks a free port (logged); None serves no /metrics endpoint. In a distributed run
    # each rank serves on this port plus its LOCAL_RANK (0 stays a free port per rank).
    prometheus_port: int | None = DEFAULT_PROMETHEUS_PORT
    # Seconds a closing run keeps serving /metrics for one scrape of its final values, when
    # it has been scraped at all; two scrape intervals of collectors/prometheus.yml. 0: none.
    prometheus_linger_s: float = 10.0
    # The series budget: how much per-expert detail /metrics (and OTLP) shows. "layer":
    # per-layer summaries only; "expert": and tokens per expert; "expert_slot": and the
    # expert × entropy-slot heatmap. The store keeps expert detail whatever this says.
    prometheus_detail: str = series_budget.EXPERT
    # Who may read /metrics, and over what: TLS and basic auth; off by default.
    metrics: MetricsEndpointConfig = field(default_factory=MetricsEndpointConfig)
    # OTLP/HTTP endpoint of an OpenTelemetry Collector, e.g. http://127.0.0.1:4318.
    otlp_endpoint: str | None = None
    spool_dir: Path = Path(".observe/spool")
    spool_max_bytes: int = 256 * 1024 * 1024
    # Label combinations kept per metric; more are counted as dropped, not exported.
    # None: sized at attach from the model (layers × experts × entropy slots).
    label_limit: int | None = None
    # Seconds between exports to the store (and the OTLP endpoint).
    export_interval_s: float = 5.0
    # The close limit: seconds that close() and SIGTERM take at most after the linger,
    # whatever the network does; what the store has not taken by then stays spooled.
    close_timeout_s: float = 10.0
    # Seconds without a heartbeat (one per export) after which `observe runs` shows, and
    # stores, a running run as lost; None: two minutes, or LOST_AFTER_EXPORTS export
    # intervals where that is longer. A run on this host whose process is gone is lost at once.
    lost_after_s: float | None = None
    # What monitors attached through a session measure, and how often they flush.
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    # What live drift scores, where a command or a session turns it on.
    drift: DriftConfig = field(default_factory=DriftConfig)
    # Which series the alert rules watch, and each rule's overrides.
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    def __post_init__(self) -> None:
        if self.prometheus_port is not None and not 0 <= self.prometheus_port <= 65535:
            raise ObserveError(
                f"prometheus_port={self.prometheus_port} is not a port: use 0 to 65535 "
                "(0 picks a free one)"
            )
        series_budget.check_detail(self.prometheus_detail)
        if self.spool_max_bytes < 1:
            raise ObserveError(f"spool_max_bytes={self.spool_max_bytes} must be at least 1")
        if self.label_limit is not None and not 1 <= self.label_limit <= MAX_LABEL_LIMIT:
            raise ObserveError(
                f"label_limit={self.label_limit} must be between 1 and {MAX_LABEL_LIMIT:,}, "
                "or unset to size it from the model"
            )
        for name in ("export_interval_s", "close_timeout_s"):
            if getattr(self, name) <= 0:
                raise ObserveError(f"{name}={getattr(self, name)} must be positive")
        if (
            self.lost_after_s is not None
            and self.lost_after_s < LOST_AFTER_EXPORTS * self.export_interval_s
        ):
            raise ObserveError(
                f"lost_after_s={self.lost_after_s:g} is under {LOST_AFTER_EXPORTS} export "
                f"intervals (export_interval_s={self.export_interval_s:g}): a live run would "
                "pass for lost between two heartbeats. Raise lost_after_s to at least "
                f"{LOST_AFTER_EXPORTS * self.export_interval_s:g}"
            )
        if self.prometheus_linger_s < 0:
            raise ObserveError(
                f"prometheus_linger_s={self.prometheus_linger_s} is negative: pass 0 to stop "
                "serving /metrics as soon as the run ends"
            )

    @property
    def lost_after(self) -> timedelta:
        """How long a running run may go without a heartbeat before it is lost."""
        if self.lost_after_s is not None:
            return timedelta(seconds=self.lost_after_s)
        return max(
            LOST_AFTER_DEFAULT, LOST_AFTER_EXPORTS * timedelta(seconds=self.export_interval_s)
        )


MONITOR_FIELDS = frozenset(f.name for f in dataclasses.fields(MonitorConfig))


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from the file, then the environment, then `overrides` (flags; None = unset).

    An override of `monitor` is a `MonitorConfig` (it replaces the table) or a mapping of
    some of its fields.
    """
    environ = os.environ if environ is None else environ
    values = _from_file(config_file)
    _merge(values, _from_environ(Settings, ENV_PREFIX, environ))
    _merge(values, {k: v for k, v in (overrides or {}).items() if v is not None})
    return _build(Settings, values)


def _merge(values: dict[str, Any], newer: Mapping[str, Any]) -> None:
    for name, value in newer.items():
        if isinstance(value, Mapping) and isinstance(values.get(name), dict):
            _merge(values[name], value)
        else:
            values[name] = dict(value) if isinstance(value, Mapping) else value


def _build(cls: type[Any], values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ObserveError(f"unknown settings {unknown}: {_known(cls, unknown)}")
    kwargs = {}
    for name, value in values.items():
        entry = _table_of_tables(hints[name])
        if isinstance(value, Mapping) and dataclasses.is_dataclass(hints[name]):
            value = _build(hints[name], value)
        elif isinstance(value, Mapping) and entry is not None:
            value = {k: _build(entry, v) if isinstance(v, Mapping) else v for k, v in value.items()}
        kwargs[name] = value
    return cls(**kwargs)


def _table_of_tables(kind: Any) -> Any:
    """The dataclass D of a `Mapping[str, D]` setting (a table per name), else None."""
    if typing.get_origin(kind) is Mapping:
        entry = typing.get_args(kind)[1]
        return entry if dataclasses.is_dataclass(entry) else None
    return None


def _key(name: str) -> str:
    """The file's key for a field: a Python keyword is a field with `_` after it (`for_`)."""
    return name[:-1] if keyword.iskeyword(name[:-1]) else name


def _known(cls: type[Any], unknown: list[str]) -> str:
    monitor = [name for name in unknown if name in MONITOR_FIELDS]
    if cls is Settings and monitor:
        return f"{', '.join(monitor)} belong in the [monitor] table (monitor settings)"
    return f"known are {', '.join(_key(n) for n in typing.get_type_hints(cls))}"


def _from_environ(cls: type[Any], prefix: str, environ: Mapping[str, str]) -> dict[str, Any]:
    moved = [
        prefix + n.upper()
        for n in MONITOR_FIELDS
        if cls is Settings and prefix + n.upper() in environ
    ]
    if moved:
        raise ObserveError(
            f"{', '.join(sorted(moved))} set: monitor settings are {prefix}MONITOR_<NAME>, "
            f"e.g. {prefix}MONITOR_FLUSH_EVERY"
        )
    values: dict[str, Any] = {}
    for name, kind in typing.get_type_hints(cls).items():
        variable = prefix + name.upper()
        if dataclasses.is_dataclass(kind):
            nested = _from_environ(kind, variable + "_", environ)  # type: ignore[arg-type]
            if nested:
                values[name] = nested
        elif variable in environ and _table_of_tables(kind) is None:
            values[name] = parse(environ[variable], kind, f"${variable}")
    return values


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
    return _from_table(Settings, table, f"in {path}", ())


def _from_table(
    cls: type[Any], table: Mapping[str, Any], file: str, path: tuple[str, ...]
) -> dict[str, Any]:
    """`table` (at `path` in the file) as field values of `cls`, each parsed to its type."""
    where = _where(path, file)
    hints = {_key(name): (name, kind) for name, kind in typing.get_type_hints(cls).items()}
    unknown = sorted(set(table) - set(hints))
    if unknown:
        raise ObserveError(f"unknown settings {unknown} {where}: {_known(cls, unknown)}")
    secrets = {
        f.name: f.metadata["secret"] for f in dataclasses.fields(cls) if "secret" in f.metadata
    }
    values: dict[str, Any] = {}
    for key, value in table.items():
        name, kind = hints[key]
        if name in secrets:
            variable = ENV_PREFIX + "_".join((*path, name)).upper()
            raise ObserveError(
                f"{key} {where} is a secret, which a settings file shows to whoever reads it: "
                f"set ${variable} instead, or {secrets[name]} to a file that holds it"
            )
        inner = (*path, key)
        if dataclasses.is_dataclass(kind):
            values[name] = _from_table(kind, _table(value, inner, file), file, inner)  # type: ignore[arg-type]
        elif (entry := _table_of_tables(kind)) is not None:
            values[name] = {
                item: _from_table(entry, _table(fields, (*inner, item), file), file, (*inner, item))
                for item, fields in _table(value, inner, file).items()
            }
        else:
            values[name] = parse(value, kind, f"{key} {where}")
    return values


def _where(path: tuple[str, ...], file: str) -> str:
    return f"in [{'.'.join(path)}] {file}" if path else file


def _table(value: Any, path: tuple[str, ...], file: str) -> Mapping[str, Any]:
    """`value`, the table at `path`, or an error saying how to write it as one."""
    if not isinstance(value, Mapping):
        raise ObserveError(
            f"{path[-1]} {_where(path[:-1], file)} must be a table: write [{'.'.join(path)}] "
            "above its settings"
        )
    return value


def parse(value: Any, kind: Any, where: str) -> Any:
    """`value` from a file or the environment as type `kind`, or an error naming `where`.

    Strict: a bool is no number and a float is no int (`flush_every = 2.7` is an error, not
    2); text converts only where the environment gives nothing else.
    """
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return parse(value, kind, where)
    try:
        if kind is bool:
            if isinstance(value, str):
                return _BOOLEANS[value.strip().lower()]
            return _exact(value, bool)
        if kind is int and not isinstance(value, bool | float):
            return int(value.strip()) if isinstance(value, str) else _exact(value, int)
        if kind is float and not isinstance(value, bool):
            number = value.strip() if isinstance(value, str) else _exact(value, int | float)
            if math.isfinite(float(number)):
                return float(number)
            raise ValueError(number)
        if kind is str or kind is Path:
            return kind(_exact(value, str))
        if typing.get_origin(kind) in (frozenset, tuple):
            items = value.split(",") if isinstance(value, str) else _exact(value, list)
            return typing.get_origin(kind)(_exact(item, str).strip() for item in items)
    except (TypeError, ValueError):
        pass
    except KeyError:  # text that says neither yes nor no
        pass
    raise ObserveError(f"{where} = {value!r} is not valid: expected {_describe(kind)}")


# What the environment may say for a yes/no setting (a file says true or false).
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _exact(value: Any, kind: Any) -> Any:
    if not isinstance(value, kind):
        raise TypeError(value)
    return value


def _describe(kind: Any) -> str:
    if typing.get_origin(kind) in (frozenset, tuple):
        return "a list of names"
    names = {
        bool: "true or false",
        int: "a whole number",
        float: "a finite number",
        str: "text",
        Path: "a path",
    }
    return names.get(kind, str(kind))
