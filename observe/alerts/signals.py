"""What an alert rule watches: a gauge's value, a counter's rate, one counter's share of
two, or a histogram's quantile, over series a `Selector` picks.

A signal names its metrics by their catalogue names and says three things about itself:
its PromQL, the unit and the span of values it can take, and the labels its series carry.
An evaluator that reads the store instead of Prometheus computes the same figure from the
same description (the latest gauge value; increase over the window divided by its length).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from observe.alerts.text import number
from observe.catalogue import BY_NAME, Kind, Metric
from observe.errors import ObserveError

# Prometheus durations, as `for` and range selectors take them: "5m", "1h30m", "90s", "0s".
_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_DURATION_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
# Prometheus holds a duration as a signed 64-bit count of nanoseconds: about 292 years.
_LONGEST_MS = (2**63 - 1) // 1_000_000


def _milliseconds(text: str) -> int | None:
    match = _DURATION.match(text) if isinstance(text, str) and text else None
    if match is None:
        return None
    total = 0
    for count, ms in zip(match.groups(), _DURATION_MS, strict=True):
        digits = (count or "").lstrip("0")
        if len(digits) > 19:  # far past the longest duration, and past what int() reads
            return _LONGEST_MS + 1
        total += int(digits or 0) * ms
    return total


def parse_duration(text: str) -> float | None:
    """Seconds in a Prometheus duration, or None when `text` is not one."""
    ms = _milliseconds(text)
    return None if ms is None or ms > _LONGEST_MS else ms / 1000


def duration_problem(field: str, text: str) -> str | None:
    ms = _milliseconds(text)
    if ms is None:
        return f'{field} = {text!r} is not a duration: write it as Prometheus does, e.g. "5m"'
    if ms > _LONGEST_MS:
        return f"{field} = {text!r} is longer than Prometheus's longest duration (292y)"
    return None


def promql_string(text: str) -> str:
    """`text` as a PromQL (and promtool series) string literal, which a newline would end."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True)
class Selector:
    """Label values a rule's series must have: per label, the values accepted (any of them);
    a label not listed, or listed with no values, is not matched on."""

    matchers: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        for label, values in self.matchers:
            if any(not isinstance(v, str) or not v for v in values):
                raise ObserveError(
                    f"alert selector {label} = {list(values)!r}: each value must be "
                    'non-empty text, e.g. ["observe"]'
                )

    def promql(self) -> str:
        """`{job="observe",run=~"a|b"}`, or "" when nothing is matched on."""
        parts = []
        for label, values in self.matchers:
            if len(values) == 1:
                parts.append(f"{label}={promql_string(values[0])}")
            elif values:
                parts.append(f"{label}=~{promql_string('|'.join(re.escape(v) for v in values))}")
        return "{" + ",".join(parts) + "}" if parts else ""

    def first_values(self) -> dict[str, str]:
        """A label value the selector accepts, per label it matches on."""
        return {label: values[0] for label, values in self.matchers if values}


@dataclass(frozen=True)
class Signal(ABC):
    """A figure computed from catalogue metrics, one per series (no aggregation: every
    label of the series stays, so an alert says which run, model and layer it is about)."""

    @property
    @abstractmethod
    def metrics(self) -> tuple[str, ...]:
        """Catalogue names of the metrics it reads."""

    @abstractmethod
    def promql(self, selector: Selector) -> str: ...

    @abstractmethod
    def describe(self) -> str:
        """In words, e.g. "5m rate of observe_pipeline_export_failures_total"."""

    @property
    @abstractmethod
    def unit(self) -> str:
        """UCUM unit of its values ("s", "1", "{export}/s")."""

    @property
    @abstractmethod
    def span(self) -> tuple[float, float]:
        """Lowest and highest value it can take."""

    @property
    def labels(self) -> tuple[str, ...]:
        """Catalogue labels of its series (Prometheus adds `job` and `instance`)."""
        return BY_NAME[self.metrics[0]].all_labels

    def check(self, rule: str) -> None:
        """Raises an ObserveError naming `rule` when a metric is unknown or of a kind this
        signal cannot read, or the signal's `window` (where it has one) is no duration."""
        for name in self.metrics:
            metric = BY_NAME.get(name)
            if metric is None:
                raise ObserveError(
                    f"alert rule {rule}: metric {name!r} is not in the catalogue: use a name "
                    "from observe/catalogue.py (docs/metrics.md lists them)"
                )
            if metric.kind is not self._kind:
                raise ObserveError(
                    f"alert rule {rule}: metric {name!r} is a {metric.kind}, and "
                    f"{type(self).__name__} reads a {self._kind}"
                )
        window = getattr(self, "window", None)
        if window is not None:
            _window_problem(rule, window)

    @property
    @abstractmethod
    def _kind(self) -> Kind: ...

    def _metric(self, name: str) -> Metric:
        return BY_NAME[name]


def _window_problem(rule: str, window: str) -> None:
    problem = duration_problem("window", window)
    if problem is None and parse_duration(window) == 0:
        problem = f"window = {window!r} must be longer than 0s"
    if problem:
        raise ObserveError(f"alert rule {rule}: {problem}")


@dataclass(frozen=True)
class Value(Signal):
    """A gauge as it is."""

    metric: str

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    def promql(self, selector: Selector) -> str:
        return f"{self._metric(self.metric).prometheus_name}{selector.promql()}"

    def describe(self) -> str:
        return self._metric(self.metric).prometheus_name

    @property
    def unit(self) -> str:
        return self._metric(self.metric).unit

    @property
    def span(self) -> tuple[float, float]:
        return (-math.inf, math.inf)

    @property
    def _kind(self) -> Kind:
        return Kind.GAUGE


@dataclass(frozen=True)
class Rate(Signal):
    """A counter's per-second rate over `window`."""

    metric: str
    window: str = "5m"

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    def promql(self, selector: Selector) -> str:
        return (
            f"rate({self._metric(self.metric).prometheus_name}{selector.promql()}[{self.window}])"
        )

    def describe(self) -> str:
        return f"{self.window} rate of {self._metric(self.metric).prometheus_name}"

    @property
    def unit(self) -> str:
        return f"{self._metric(self.metric).unit}/s"

    @property
    def span(self) -> tuple[float, float]:
        return (0.0, math.inf)

    @property
    def _kind(self) -> Kind:
        return Kind.COUNTER


@dataclass(frozen=True)
class Share(Signal):
    """`part`'s share of `part` + `other`, both counters, by their rates over `window`: the
    cache miss rate is misses' share of misses and hits. A counter not yet incremented has
    no series; it counts as 0 rather than hiding the share. With neither counting, there is
    no share (0/0), and no alert."""

    part: str
    other: str
    window: str = "5m"

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.part, self.other)

    def promql(self, selector: Selector) -> str:
        part, other = (
            f"rate({self._metric(name).prometheus_name}{selector.promql()}[{self.window}])"
            for name in (self.part, self.other)
        )
        part_or_0, other_or_0 = f"({part} or 0 * {other})", f"({other} or 0 * {part})"
        return f"{part_or_0} / ({part_or_0} + {other_or_0})"

    def describe(self) -> str:
        part, other = (self._metric(n).prometheus_name for n in (self.part, self.other))
        return f"{part} / ({part} + {other}), {self.window} rates"

    @property
    def unit(self) -> str:
        return "1"

    @property
    def span(self) -> tuple[float, float]:
        return (0.0, 1.0)

    @property
    def _kind(self) -> Kind:
        return Kind.COUNTER

    def check(self, rule: str) -> None:
        super().check(rule)
        if self._metric(self.part).labels != self._metric(self.other).labels:
            raise ObserveError(
                f"alert rule {rule}: {self.part} and {self.other} carry different labels, so "
                "their series cannot be paired: share counters of the same labels"
            )


@dataclass(frozen=True)
class Quantile(Signal):
    """A histogram's `q` quantile over `window`, interpolated within its buckets."""

    metric: str
    q: float
    window: str = "5m"

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    @property
    def buckets(self) -> tuple[float, ...]:
        """Upper bounds of the histogram's finite buckets."""
        return self._metric(self.metric).buckets or ()

    def promql(self, selector: Selector) -> str:
        series = f"{self._metric(self.metric).prometheus_name}_bucket{selector.promql()}"
        return f"histogram_quantile({number(self.q)}, rate({series}[{self.window}]))"

    def describe(self) -> str:
        name = self._metric(self.metric).prometheus_name
        return f"{self.window} p{number(self.q * 100)} of {name}"

    @property
    def unit(self) -> str:
        return self._metric(self.metric).unit

    @property
    def span(self) -> tuple[float, float]:
        # Every observation in the first bucket, which starts at 0, interpolates to q of its
        # bound; past the largest finite bucket, histogram_quantile answers that bound.
        return (self.q * self.buckets[0], self.buckets[-1])

    @property
    def _kind(self) -> Kind:
        return Kind.HISTOGRAM

    def check(self, rule: str) -> None:
        super().check(rule)
        if not 0 < self.q < 1:
            raise ObserveError(f"alert rule {rule}: quantile q = {self.q} must be in (0, 1)")
