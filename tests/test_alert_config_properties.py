"""No `[alerts]` table or `[alerts.rules.NAME]` override makes the settings loader raise
anything but ObserveError; a bad override's message names its rule and field; and what
loads makes rule files Prometheus accepts, hostile label values in selectors included."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from toml_text import toml

from observe.alerts.config import AlertsConfig, RuleOverride
from observe.alerts.defaults import RULES_BY_NAME
from observe.alerts.files import RULES_FILE, alert_files, write_alert_files
from observe.alerts.promtool import check_and_test, promtool
from observe.alerts.rules import Severity, Threshold
from observe.alerts.text import number
from observe.errors import ObserveError
from observe.settings import ENV_PREFIX, Settings, load_settings

RULE_NAMES = sorted(RULES_BY_NAME)
OVERRIDE_FIELDS = ["value", "low", "high", "for", "severity"]
# Label values a user may select on: what runs, models and jobs can be called.
HOSTILE = [
    'a"b',
    "a\\b\\",
    "a\nb",
    "'; DROP TABLE runs; --",
    '{}=,|.*+?()[]^$"',
    "\u202eabc\u200b",
    "[bold]x[/]",
    "😀",
    "a\x00b",
    "x" * 300,
]
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(HOSTILE))
DURATIONS = st.builds(
    "{}{}".format,
    st.integers(min_value=0, max_value=10**25),
    st.sampled_from(["ms", "s", "m", "h", "d", "w", "y", "", "x"]),
)
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 0.1, 0.3, 0.5, 0.7, 0.9, 1, 2, 5, 10]),
)
# Each setting's own type, near misses, and the other fields' types.
SCALARS = st.one_of(
    NUMBERS,
    TEXT,
    DURATIONS,
    st.sampled_from([*Severity, "Warning", "", "none"]),
    st.booleans(),
    st.none(),
    st.lists(st.one_of(TEXT, st.integers()), max_size=3),
)
OVERRIDES = st.dictionaries(
    st.one_of(st.sampled_from(OVERRIDE_FIELDS), st.sampled_from(["op", "for_", "name"])),
    SCALARS,
    max_size=4,
)
ALERTS = st.fixed_dictionaries(
    {},
    optional={
        "job": st.one_of(st.lists(TEXT, max_size=3), SCALARS),
        "run": st.one_of(st.lists(TEXT, max_size=3), SCALARS),
        "model": st.one_of(st.lists(TEXT, max_size=3), SCALARS),
        "runbook_url": SCALARS,
        "grafana_datasource_uid": SCALARS,
        "evaluation_interval_s": SCALARS,
        "rules": st.one_of(
            SCALARS,
            st.dictionaries(
                st.one_of(st.sampled_from(RULE_NAMES), TEXT),
                st.one_of(OVERRIDES, SCALARS),
                max_size=3,
            ),
        ),
        "colour": SCALARS,
    },
)


def load(alerts: dict[str, Any]) -> Settings:
    """The settings of an observe.toml holding `alerts` as its [alerts] table."""
    with tempfile.TemporaryDirectory() as where:
        path = Path(where) / "observe.toml"
        path.write_text(toml({"alerts": alerts}), encoding="utf-8")
        return load_settings(path, environ={})


@settings(max_examples=400, deadline=None, derandomize=True)
@given(ALERTS)
def test_any_alerts_table_is_read_or_explained(alerts: dict[str, Any]) -> None:
    try:
        loaded = load(alerts)
    except ObserveError:
        return
    files = alert_files(loaded.alerts)
    rules = yaml.safe_load(files[RULES_FILE])["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [r.name for r in loaded.alerts.alert_rules()]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from(RULE_NAMES), st.one_of(OVERRIDES, SCALARS))
def test_a_bad_override_names_its_rule_and_field(rule: str, override: Any) -> None:
    try:
        load({"rules": {rule: override}})
    except ObserveError as exc:
        message = str(exc)
        assert rule in message, message
        if isinstance(override, dict):
            assert any(field in message for field in override), message


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                f"{ENV_PREFIX}ALERTS_{name}"
                for name in (
                    "JOB",
                    "RUN",
                    "MODEL",
                    "RUNBOOK_URL",
                    "GRAFANA_DATASOURCE_UID",
                    "EVALUATION_INTERVAL_S",
                    "RULES",
                )
            ]
        ),
        st.one_of(st.text(max_size=20), st.sampled_from(HOSTILE)),
        max_size=4,
    )
)
def test_any_alerts_environment_is_read_or_explained(environ: dict[str, str]) -> None:
    try:
        loaded = load_settings(None, environ=environ)
    except ObserveError:
        return
    alert_files(loaded.alerts)


def overrides_of(rule: str) -> st.SearchStrategy[dict[str, Any]]:
    """Overrides of `rule` of the right shape, most of them valid."""
    kind = RULES_BY_NAME[rule]
    bounds = (
        {"value": NUMBERS} if isinstance(kind, Threshold) else {"low": NUMBERS, "high": NUMBERS}
    )
    return st.fixed_dictionaries(
        {},
        optional={
            **bounds,
            "for": st.builds(
                "{}{}".format,
                st.integers(min_value=0, max_value=10**12),
                st.sampled_from(["s", "m", "h", "d", "y"]),
            ),
            "severity": st.sampled_from(list(Severity)),
        },
    )


@st.composite
def valid_configs(draw: st.DrawFn) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """An [alerts] table with hostile selectors and one override that loads."""
    rule = draw(st.sampled_from(RULE_NAMES))
    override = draw(overrides_of(rule))
    selectors = {
        label: draw(st.lists(st.sampled_from(HOSTILE), max_size=2, unique=True))
        for label in ("job", "run", "model")
    }
    alerts = {**selectors, "rules": {rule: override}}
    try:
        load(alerts)
    except ObserveError:
        assume(False)
    return alerts, rule, override


@settings(max_examples=12, deadline=None, derandomize=True)
@given(valid_configs())
@example(({"model": HOSTILE[:3], "job": ['a"b'], "rules": {}}, RULE_NAMES[0], {}))
def test_a_loaded_override_makes_a_rule_file_promtool_accepts(
    case: tuple[dict[str, Any], str, dict[str, Any]],
) -> None:
    alerts, name, override = case
    config = load(alerts).alerts
    [rule] = [r for r in config.alert_rules() if r.name == name]
    # The override is the rule's, whatever else it was merged with.
    assert rule.for_ == override.get("for", RULES_BY_NAME[name].for_)
    assert rule.severity == override.get("severity", RULES_BY_NAME[name].severity)
    for field in ("value", "low", "high"):
        if field in override:
            assert getattr(rule, field) == override[field]
            assert number(override[field]) in rule.expr
    with tempfile.TemporaryDirectory() as where:
        write_alert_files(config, Path(where))
        checked = subprocess.run(
            [promtool(), "check", "rules", RULES_FILE],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_tests_pass_for_rules_selecting_hostile_label_values(tmp_path: Path) -> None:
    """The generated promtool tests write the selected values into their input series."""
    config = AlertsConfig(
        job=('a"b\\',), run=("a\nb", "'; DROP TABLE runs; --"), model=("[bold]x[/]\u202e",)
    )
    write_alert_files(config, tmp_path)
    passed, output = check_and_test(tmp_path)
    assert passed, output


def test_a_duration_longer_than_prometheus_holds_is_explained() -> None:
    for text in ("293y", "9" * 5000 + "s"):
        with pytest.raises(ObserveError, match=r"ObserveSemanticDrift: for = .* longer than"):
            AlertsConfig(rules={"ObserveSemanticDrift": RuleOverride(for_=text)})
    config = AlertsConfig(rules={"ObserveSemanticDrift": RuleOverride(for_="292y")})
    [rule] = [r for r in config.alert_rules() if r.name == "ObserveSemanticDrift"]
    assert rule.for_seconds == 292 * 365 * 86400
