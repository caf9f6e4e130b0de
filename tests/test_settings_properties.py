"""No file or environment makes the settings loader raise anything but ObserveError."""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from toml_text import toml

from observe.errors import ObserveError
from observe.settings import ENV_PREFIX, MONITOR_FIELDS, Settings, load_settings

NAMES = [f.name for f in dataclasses.fields(Settings)] + sorted(MONITOR_FIELDS) + ["colour"]
# Each setting's own type, and the near misses a person types: both make the search find
# the edges (nan, a bool for a number) well within its examples.
SCALARS = st.one_of(
    st.sampled_from([float("nan"), float("inf"), True, 2.7, 0, -1, "", "none", "2.7"]),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.one_of(st.text(max_size=8), st.integers()), max_size=4),
)
TABLES = st.dictionaries(st.sampled_from(NAMES), SCALARS, max_size=6)
DOCUMENTS = st.dictionaries(st.sampled_from(NAMES), st.one_of(SCALARS, TABLES), max_size=8)


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS)
def test_any_config_file_is_read_or_explained(values: dict[str, Any]) -> None:
    text = toml(values)
    with tempfile.TemporaryDirectory() as where:
        path = Path(where) / "observe.toml"
        path.write_text(text, encoding="utf-8")
        try:
            loaded = load_settings(path, environ={})
        except ObserveError:
            return
    assert_sane(loaded)


def assert_sane(loaded: Settings) -> None:
    """What loads is usable: numbers finite, no bool where a number belongs."""
    for config in (loaded, loaded.monitor, loaded.drift):
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            assert not isinstance(value, bool) or field.type in ("bool", bool), field.name
            if isinstance(value, float):
                assert math.isfinite(value), field.name


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [ENV_PREFIX + n.upper() for n in NAMES]
            + [f"{ENV_PREFIX}MONITOR_{n.upper()}" for n in MONITOR_FIELDS]
            + [f"{ENV_PREFIX}DRIFT_METHODS", f"{ENV_PREFIX}DRIFT_QUEUE_SIZE"]
        ),
        st.text(max_size=20),
        max_size=6,
    )
)
def test_any_environment_is_read_or_explained(environ: dict[str, str]) -> None:
    try:
        loaded = load_settings(None, environ=environ)
    except ObserveError:
        return
    assert_sane(loaded)
