"""A metric family held as one array, and its Prometheus text rendered straight from it.

Shape: `values` has one axis per label the metric declares (`Metric.labels`), and `axes`
holds the label values along each; `labels` are shared by every point (run, model, rank).
NaN marks a point that does not exist (an expert past a smaller layer's count, a gauge not
yet measured). This is what the pipeline hands the store for layer × expert (× slot)
families, instead of a `Sample` per point.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np

from observe.catalogue import Kind, Metric
from observe.store.records import Family, Sample


@dataclass(frozen=True)
class ArrayFamily:
    metric: Metric
    labels: Mapping[str, str]
    axes: tuple[tuple[str, ...], ...]
    values: np.ndarray
    time: datetime

    def __post_init__(self) -> None:
        shape = tuple(len(axis) for axis in self.axes)
        if len(self.axes) != len(self.metric.labels) or self.values.shape != shape:
            raise ValueError(
                f"{self.metric.name}: values of shape {self.values.shape} for axes {shape} "
                f"of labels {self.metric.labels}"
            )

    def points(self) -> Iterator[tuple[tuple[str, ...], float]]:
        """Each point that exists: its label values along the axes, and its value."""
        flat = self.values.ravel().tolist()
        for key, value in zip(itertools.product(*self.axes), flat, strict=True):
            if value == value:  # not NaN
                yield key, value

    def family(self) -> Family:
        """The points as the store's columnar family: no object per point."""
        axes = dict(zip(self.metric.labels, self.axes, strict=True))
        return Family.grid(self.time, self.metric.name, self.labels, axes, self.values)

    def samples(self) -> list[Sample]:
        """A `Sample` per point: the row store's path."""
        names = self.metric.labels
        return [
            Sample(
                self.time,
                self.metric.name,
                {**self.labels, **dict(zip(names, key, strict=True))},
                value,
            )
            for key, value in self.points()
        ]


class ArraySource(Protocol):
    """Families kept as arrays: which, their exposition text, and the arrays themselves."""

    @property
    def metrics(self) -> tuple[Metric, ...]: ...

    def render(self, openmetrics: bool) -> bytes: ...

    def families(self) -> list[ArrayFamily]: ...


class FamilyText:
    """The exposition lines of one family's shape: each point's name and labels are built
    once, and a render only formats the values."""

    def __init__(self, family: ArrayFamily, limit: int) -> None:
        """`limit`: the points shown, the first in row-major order (the label limit)."""
        metric = family.metric
        shared = ",".join(f'{k}="{_escape_label(v)}"' for k, v in family.labels.items())
        names = metric.labels
        self.shape = family.values.shape
        self.prefixes = [
            metric.prometheus_name
            + "{"
            + ",".join(
                (shared, *(f'{n}="{_escape_label(v)}"' for n, v in zip(names, key, strict=True)))
            )
            + "} "
            for key in itertools.islice(itertools.product(*family.axes), limit)
        ]
        kind = "counter" if metric.kind is Kind.COUNTER else "gauge"
        text_name = metric.prometheus_name
        open_name = text_name.removesuffix("_total") if metric.kind is Kind.COUNTER else text_name
        self._headers = {
            False: f"# HELP {text_name} {_escape_help(metric.description)}\n"
            f"# TYPE {text_name} {kind}\n",
            True: f"# HELP {open_name} {_escape_help(metric.description, quote=True)}\n"
            f"# TYPE {open_name} {kind}\n",
        }

    def render(self, values: np.ndarray, openmetrics: bool) -> str:
        flat = values.ravel()[: len(self.prefixes)].tolist()
        lines = [p + repr(v) for p, v in zip(self.prefixes, flat, strict=True) if v == v]
        if not lines:
            return ""
        return self._headers[openmetrics] + "\n".join(lines) + "\n"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str, *, quote: bool = False) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text
