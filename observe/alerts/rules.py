"""The alert rule model: `Threshold` and `Range` over a signal, with `for`, severity, text
and runbook, checked when made.

A rule says its PromQL (`expr`) and decides on plain numbers (`violated`: the series'
value), so Prometheus, Grafana and an evaluator reading the store all apply the same bounds.
Names are CamelCase with the `Observe` prefix; labels carry `severity`; annotations are
`summary`, `description` and `runbook_url` (the monitoring-mixin conventions).

Text is a `string.Template` with four fields: `$value` (the signal's value now), `$where`
(the series: run, model and the metric's own labels), `$bound` ("over 0.3", "outside
0.1–0.25") and `$for`.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from enum import StrEnum
from string import Template
from typing import Any

from observe.alerts.signals import Selector, Signal, duration_problem, parse_duration
from observe.alerts.text import number, quantity
from observe.errors import ObserveError

PREFIX = "Observe"
# Where the runbook lies unless `[alerts] runbook_url` says where it is served.
RUNBOOK = "alerts/README.md"
_NAME = re.compile(rf"^{PREFIX}[A-Z][A-Za-z0-9]*$")
TEXT_FIELDS = ("value", "where", "bound", "for")


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Runbook:
    """The runbook section of one alert: what it means, why it may fire, what to look at,
    and how to make it stop."""

    meaning: str
    causes: tuple[str, ...]
    checks: tuple[str, ...]
    fix: str


@dataclass(frozen=True)
class Rule(ABC):
    signal: Signal
    _: KW_ONLY
    name: str
    # How long the bound must be violated before the alert fires (pending until then).
    for_: str
    severity: Severity
    summary: str
    description: str
    runbook: Runbook
    # Which series: `[alerts]` job, run and model; every series by default.
    selector: Selector = field(default_factory=Selector)
    # The runbook's address; the rule's section is `#<name in lower case>`.
    runbook_base: str = RUNBOOK

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ObserveError(
                f"alert rule {self.name!r}: name must be CamelCase and start with "
                f"{PREFIX}, e.g. {PREFIX}SemanticDrift"
            )
        self.signal.check(self.name)
        problem = duration_problem("for", self.for_)
        if problem:
            raise ObserveError(f"alert rule {self.name}: {problem}")
        if self.severity not in set(Severity):
            raise ObserveError(
                f"alert rule {self.name}: severity = {self.severity!r} is not one of "
                f"{', '.join(Severity)}"
            )
        object.__setattr__(self, "severity", Severity(self.severity))
        for text in ("summary", "description"):
            self._check_text(text, getattr(self, text))
        self._check_bounds()

    def _check_text(self, which: str, text: str) -> None:
        try:
            Template(text).substitute(dict.fromkeys(TEXT_FIELDS, ""))
        except (KeyError, ValueError) as exc:
            raise ObserveError(
                f"alert rule {self.name}: {which} has an unknown or broken placeholder "
                f"({exc}): use {', '.join('$' + f for f in TEXT_FIELDS)}, and $$ for a $"
            ) from exc

    @abstractmethod
    def _check_bounds(self) -> None: ...

    def _check_line(self, op: str, field: str) -> None:
        """Raises an ObserveError when the line in `field`, crossed by `op`, leaves the
        signal nothing to fire on or nothing quiet."""
        value = self._number(field)
        low, high = self.signal.span
        if op == ">":
            never, always = value >= high, value < low
        else:
            never, always = value <= low, value > high
        if never or always:
            left = "nothing to fire on" if never else "nothing quiet, the rule would always fire"
            raise ObserveError(
                f"alert rule {self.name}: {field} = {value:g} leaves {left}: "
                f"{self.signal.describe()} lies between {low:g} and {high:g}"
            )

    def _number(self, field: str) -> float:
        value = getattr(self, field)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ObserveError(f"alert rule {self.name}: {field} = {value!r} must be a number")
        return float(value)

    # -- what a rule says ------------------------------------------------------------------
    @property
    def metrics(self) -> tuple[str, ...]:
        """Catalogue names of every metric the rule reads."""
        return self.signal.metrics

    @property
    @abstractmethod
    def expr(self) -> str:
        """The PromQL that returns the violating series."""

    @abstractmethod
    def violated(self, value: float) -> bool:
        """Whether the signal's `value` is out of bounds (NaN never is)."""

    @property
    @abstractmethod
    def bound(self) -> str:
        """The bound in words: "over 0.3", "outside 0.1–0.25"."""

    @property
    def for_seconds(self) -> float:
        return parse_duration(self.for_) or 0.0

    @property
    def runbook_url(self) -> str:
        return f"{self.runbook_base}#{self.name.lower()}"

    def annotations(self, value: str, label: Callable[[str], str]) -> dict[str, str]:
        """summary, description and runbook_url, with `value` for $value and `label(name)`
        for each label of $where: Go template text for Prometheus and Grafana, or figures."""
        where = ", ".join(f"{name} {label(name)}" for name in self.signal.labels)
        fields = {"value": value, "where": where, "bound": self.bound, "for": self.for_}
        return {
            "summary": Template(self.summary).substitute(fields),
            "description": Template(self.description).substitute(fields),
            "runbook_url": self.runbook_url,
        }

    def as_dict(self) -> dict[str, Any]:
        """Everything about the rule, JSON-ready (what `observe alerts list --json` shows);
        summary and description are the templates, with their $ fields."""
        return {
            "name": self.name,
            "kind": type(self).__name__.lower(),
            "severity": str(self.severity),
            "signal": self.signal.describe(),
            "unit": self.signal.unit,
            "metrics": list(self.metrics),
            "bound": self.bound,
            "for": self.for_,
            "expr": self.expr,
            "summary": self.summary,
            "description": self.description,
            "runbook_url": self.runbook_url,
        }


@dataclass(frozen=True)
class Threshold(Rule):
    """Fires while the signal is over (`>`) or under (`<`) `value`."""

    op: str
    value: float

    def _check_bounds(self) -> None:
        if self.op not in (">", "<"):
            raise ObserveError(f"alert rule {self.name}: op = {self.op!r} must be > or <")
        self._check_line(self.op, "value")

    @property
    def expr(self) -> str:
        return f"{self.signal.promql(self.selector)} {self.op} {number(self.value)}"

    def violated(self, value: float) -> bool:
        return value > self.value if self.op == ">" else value < self.value

    @property
    def bound(self) -> str:
        word = "over" if self.op == ">" else "under"
        return f"{word} {quantity(self.value, self.signal.unit)}"

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "op": self.op, "value": self.value}


@dataclass(frozen=True)
class Range(Rule):
    """Fires while the signal is outside [`low`, `high`]."""

    low: float
    high: float

    def _check_bounds(self) -> None:
        low, high = self._number("low"), self._number("high")
        if low >= high:
            raise ObserveError(
                f"alert rule {self.name}: low = {low:g} must be below high = {high:g}"
            )
        least, most = self.signal.span
        if low <= least and high >= most:
            raise ObserveError(
                f"alert rule {self.name}: low = {low:g} and high = {high:g} leave nothing "
                f"to fire on: {self.signal.describe()} lies between {least:g} and {most:g}"
            )
        if high < least or low > most:
            raise ObserveError(
                f"alert rule {self.name}: low = {low:g} and high = {high:g} leave nothing "
                f"quiet, the rule would always fire: {self.signal.describe()} lies between "
                f"{least:g} and {most:g}"
            )

    @property
    def expr(self) -> str:
        signal = self.signal.promql(self.selector)
        return f"{signal} < {number(self.low)} or {signal} > {number(self.high)}"

    def violated(self, value: float) -> bool:
        return value < self.low or value > self.high

    @property
    def bound(self) -> str:
        unit = self.signal.unit
        return f"outside {quantity(self.low, unit)}–{quantity(self.high, unit)}"

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "low": self.low, "high": self.high}
