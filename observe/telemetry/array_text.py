"""The Prometheus text of array families: each point's name and labels built once per family
shape, a render only formats the values.

Written as OpenTelemetry's Prometheus reader writes the registry's families beside them,
so that a family reads the same whichever path serves it: names, HELP and TYPE from the
catalogue, no UNIT (the routing units map to none), bucket bounds as Python writes floats
("1.0"); only the order of labels differs, which no reader heeds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from observe.catalogue import Kind, Metric
from observe.telemetry.array_family import AnyFamily, ArrayFamily, HistogramFamily
from observe.telemetry.limits import LabelLimiter


class ArrayText:
    """The exposition text of one sink's array families. Each family's shape is admitted to
    the label limit once, at `fit`, which builds its lines; the text is rendered once per
    `version` of the values (a window), however many scrapes read it. Its owner holds a
    lock around each call."""

    def __init__(self, limiter: LabelLimiter) -> None:
        self._limiter = limiter
        self._lines: dict[str, FamilyText | HistogramText] = {}
        self._kept: dict[str, int] = {}
        self._text: dict[bool, tuple[int, bytes]] = {}
        # Series the limit cuts from each family's shape, all families together.
        self.refused = 0

    def fit(self, families: Sequence[AnyFamily]) -> None:
        """Admits the shapes of `families`, the limit sized to the largest, unless configured."""
        sizes = {f.metric.name: math.prod(map(len, f.axes)) for f in families}
        self._limiter.fit(max(sizes.values(), default=0))
        self._kept = {name: self._limiter.admit_shape(name, n) for name, n in sizes.items()}
        self.refused = sum(sizes[name] - kept for name, kept in self._kept.items())
        self._lines = {f.metric.name: _text(f, self._kept[f.metric.name]) for f in families}
        self._text.clear()

    def cut(self, families: Sequence[AnyFamily]) -> list[AnyFamily]:
        """`families` as /metrics shows them: copies cut to the label limit."""
        return [f.cut(self._kept.get(f.metric.name, 0)) for f in families]

    def render(
        self, families: Callable[[], Sequence[AnyFamily]], version: int, openmetrics: bool
    ) -> bytes:
        """The text of `families` (read only when `version` is not rendered yet), in
        OpenMetrics or Prometheus text format."""
        cached = self._text.get(openmetrics)
        if cached is not None and cached[0] == version:
            return cached[1]
        # Before `fit` no family has lines, nor any point.
        text = "".join(
            self._lines[f.metric.name].render(f, openmetrics)
            for f in families()
            if f.metric.name in self._lines
        ).encode()
        self._text[openmetrics] = (version, text)
        return text


class FamilyText:
    """A counter's or gauge's lines."""

    def __init__(self, family: ArrayFamily, limit: int) -> None:
        """`limit`: the points shown, the first in row-major order (the label limit)."""
        metric = family.metric
        self.prefixes = [
            f"{metric.prometheus_name}{{{labels}}} " for labels in _label_sets(family, limit)
        ]
        kind = "counter" if metric.kind is Kind.COUNTER else "gauge"
        self._headers = _headers(metric, kind)

    def render(self, family: AnyFamily, openmetrics: bool) -> str:
        assert isinstance(family, ArrayFamily)
        flat = family.values.ravel()[: len(self.prefixes)].tolist()
        lines = [p + repr(v) for p, v in zip(self.prefixes, flat, strict=True) if v == v]
        if not lines:
            return ""
        return self._headers[openmetrics] + "\n".join(lines) + "\n"


class HistogramText:
    """A histogram's lines: per series, each bucket's (`le`, counts summed up to it), then
    `_count` and `_sum`, as prometheus_client groups them."""

    def __init__(self, family: HistogramFamily, limit: int) -> None:
        """`limit`: the series shown, the first in row-major order (the label limit)."""
        name = family.metric.prometheus_name
        bounds = [f"{bound}" for bound in family.metric.buckets or ()] + ["+Inf"]
        self.series = [
            (
                [f'{name}_bucket{{{labels},le="{le}"}} ' for le in bounds],
                f"{name}_count{{{labels}}} ",
                f"{name}_sum{{{labels}}} ",
            )
            for labels in _label_sets(family, limit)
        ]
        self._headers = _headers(family.metric, "histogram")

    def render(self, family: AnyFamily, openmetrics: bool) -> str:
        assert isinstance(family, HistogramFamily)
        n = len(self.series)
        cumulative = np.cumsum(family.buckets.reshape(-1, family.buckets.shape[-1])[:n], axis=1)
        sums = family.sums.ravel()[:n].tolist()
        lines: list[str] = []
        rows = zip(self.series, cumulative.astype(np.float64).tolist(), sums, strict=True)
        for (buckets, count, total), counts, value in rows:
            if counts[-1]:
                lines.extend(p + repr(c) for p, c in zip(buckets, counts, strict=True))
                lines.append(count + repr(counts[-1]))
                lines.append(total + repr(value))
        if not lines:
            return ""
        return self._headers[openmetrics] + "\n".join(lines) + "\n"


def _text(family: AnyFamily, limit: int) -> FamilyText | HistogramText:
    if isinstance(family, HistogramFamily):
        return HistogramText(family, limit)
    return FamilyText(family, limit)


def _label_sets(family: AnyFamily, limit: int) -> list[str]:
    """Each series' labels as exposition text, the first `limit` in row-major order."""
    shared = [f'{k}="{_escape_label(v)}"' for k, v in family.labels.items()]
    names = family.metric.labels
    return [
        ",".join((*shared, *(f'{n}="{_escape_label(v)}"' for n, v in zip(names, key, strict=True))))
        for key in itertools.islice(itertools.product(*family.axes), limit)
    ]


def _headers(metric: Metric, kind: str) -> dict[bool, str]:
    """HELP and TYPE in Prometheus text (False) and OpenMetrics (True), whose counters are
    named without `_total`."""
    text_name = metric.prometheus_name
    open_name = text_name.removesuffix("_total") if metric.kind is Kind.COUNTER else text_name
    return {
        False: f"# HELP {text_name} {_escape_help(metric.description)}\n"
        f"# TYPE {text_name} {kind}\n",
        True: f"# HELP {open_name} {_escape_help(metric.description, quote=True)}\n"
        f"# TYPE {open_name} {kind}\n",
    }


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str, *, quote: bool = False) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text
