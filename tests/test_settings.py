"""Settings come from observe.toml, then OBSERVE_* variables, then flags."""

from pathlib import Path

import pytest

from observe.errors import ObserveError
from observe.hooks.config import MonitorConfig
from observe.settings import Settings, load_settings


def test_no_configuration_gives_the_embedded_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.db_url is None and settings.prometheus_host == "127.0.0.1"


def test_flag_beats_environment_beats_file(tmp_path: Path) -> None:
    config = tmp_path / "observe.toml"
    config.write_text(
        'db_url = "sqlite:///from-file.db"\nprometheus_port = 9000\nlabel_limit = 10\n'
        'spool_dir = "spool-from-file"\n'
    )
    environ = {"OBSERVE_PROMETHEUS_PORT": "9100", "OBSERVE_LABEL_LIMIT": "20"}
    settings = load_settings(config, environ=environ, overrides={"label_limit": 30, "db_url": None})
    assert settings.db_url == "sqlite:///from-file.db"  # file only; an unset flag is None
    assert settings.prometheus_port == 9100  # environment over file
    assert settings.label_limit == 30  # flag over environment
    assert settings.spool_dir == Path("spool-from-file")


def test_observe_toml_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "observe.toml").write_text("[monitor]\nflush_every = 3\n")
    assert load_settings(environ={}).monitor.flush_every == 3


def test_none_in_the_environment_turns_the_endpoint_off() -> None:
    assert load_settings(environ={"OBSERVE_PROMETHEUS_PORT": "none"}).prometheus_port is None


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("colour = 1\n", {}, "unknown settings \\['colour'\\]"),
        ("db_url = \n", {}, "not valid TOML"),
        ("", {"OBSERVE_PROMETHEUS_PORT": "ninety"}, "OBSERVE_PROMETHEUS_PORT = 'ninety'"),
        ("prometheus_port = 70000\n", {}, "prometheus_port=70000 is not a port"),
        ("", {"OBSERVE_MONITOR_FLUSH_EVERY": "0"}, "flush_every=0 must be at least 1"),
        ("spool_max_bytes = true\n", {}, "spool_max_bytes in .* = True is not valid"),
        ("[monitor]\nflush_every = 2.7\n", {}, "flush_every in \\[monitor\\] .* = 2.7 is not"),
        ("monitor = 3\n", {}, "monitor in .* must be a table"),
        ("export_interval_s = nan\n", {}, "expected a finite number"),
        ("", {"OBSERVE_CLOSE_TIMEOUT_S": "inf"}, "expected a finite number"),
        ("flush_every = 3\n", {}, "flush_every belong in the \\[monitor\\] table"),
        ("", {"OBSERVE_FLUSH_EVERY": "3"}, "are OBSERVE_MONITOR_<NAME>"),
        ("[monitor]\ncolour = 1\n", {}, "unknown settings \\['colour'\\] in \\[monitor\\]"),
        ("[monitor]\nmetrics = ['routing', 'x']\n", {}, "unknown metrics \\['x'\\]"),
        ("", {"OBSERVE_PROMETHEUS_LINGER_S": "-1"}, "prometheus_linger_s=-1.0 is negative"),
    ],
)
def test_bad_settings_are_clear_errors(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    config = tmp_path / "observe.toml"
    config.write_text(text)
    with pytest.raises(ObserveError, match=message):
        load_settings(config, environ=environ)


def test_a_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ObserveError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_monitor_settings_have_one_owner(tmp_path: Path) -> None:
    """The [monitor] table, OBSERVE_MONITOR_* and a flag mapping all fill one MonitorConfig."""
    config = tmp_path / "observe.toml"
    config.write_text("[monitor]\nflush_every = 4\nmetrics = ['routing']\nreservoir_size = 8\n")
    environ = {"OBSERVE_MONITOR_RESERVOIR_SIZE": "16", "OBSERVE_MONITOR_ROUTER_SAMPLE_RATE": "0.5"}
    settings = load_settings(config, environ=environ, overrides={"monitor": {"flush_every": 2}})
    assert settings.monitor == MonitorConfig(
        flush_every=2, metrics=frozenset({"routing"}), reservoir_size=16, router_sample_rate=0.5
    )


def test_monitor_switches_read_as_booleans_and_reduce_is_checked() -> None:
    environ = {"OBSERVE_MONITOR_REQUIRE_ROUTERS": "no", "OBSERVE_MONITOR_REDUCE": "global"}
    monitor = load_settings(None, environ=environ).monitor
    assert (monitor.require_routers, monitor.reduce) == (False, "global")
    with pytest.raises(ObserveError, match="true or false"):
        load_settings(None, environ={"OBSERVE_MONITOR_REQUIRE_ROUTERS": "maybe"})
    with pytest.raises(ObserveError, match="'local'"):
        load_settings(None, environ={"OBSERVE_MONITOR_REDUCE": "all"})
