"""Settings come from observe.toml, then OBSERVE_* variables, then flags."""

from pathlib import Path

import pytest

from observe.errors import ObserveError
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
    (tmp_path / "observe.toml").write_text("flush_every = 3\n")
    assert load_settings(environ={}).flush_every == 3


def test_none_in_the_environment_turns_the_endpoint_off() -> None:
    assert load_settings(environ={"OBSERVE_PROMETHEUS_PORT": "none"}).prometheus_port is None


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("colour = 1\n", {}, "unknown settings \\['colour'\\]"),
        ("db_url = \n", {}, "not valid TOML"),
        ("", {"OBSERVE_PROMETHEUS_PORT": "ninety"}, "OBSERVE_PROMETHEUS_PORT = 'ninety'"),
        ("prometheus_port = 70000\n", {}, "prometheus_port=70000 is not a port"),
        ("", {"OBSERVE_FLUSH_EVERY": "0"}, "flush_every=0 must be at least 1"),
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
