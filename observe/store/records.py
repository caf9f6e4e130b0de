"""What the pipeline hands the store: plain, immutable rows, and their JSON form for the spool.

Sparse figures travel one `Sample` per point. Dense ones, a metric over every expert of
every layer, travel as arrays (`Family`, `ExpertLoads`): one object per window whatever
the number of series, and a compact spool line (the values as base64 of their bytes).
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from observe.errors import ObserveError
from observe.store.schema import END_STATUSES


def _check_time(time: datetime) -> None:
    # A naive time would be stored as if it were UTC whatever the machine's zone: refuse it.
    if time.tzinfo is None or time.utcoffset() is None:
        raise ObserveError(
            f"sample time {time.isoformat()} has no time zone: pass an aware datetime, "
            "e.g. datetime.now(UTC)"
        )


@dataclass(frozen=True)
class Sample:
    """One value of a counter or gauge series."""

    time: datetime
    metric: str
    labels: Mapping[str, str]
    value: float

    def __post_init__(self) -> None:
        _check_time(self.time)


@dataclass(frozen=True)
class HistogramSample:
    """One cumulative histogram: `bucket_counts[i]` counts values up to `bounds[i]`, plus +Inf."""

    time: datetime
    metric: str
    labels: Mapping[str, str]
    count: int
    sum: float
    bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_time(self.time)


# One axis of a family: the label names it sets and, at each position, their values.
# One name per axis makes a grid (layer × expert × slot); several, a list of label sets.
Axis = tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]


@dataclass(frozen=True, eq=False)
class Family:
    """One counter or gauge over many series at one time, as arrays.

    The series are the positions of the grid `axes` spans, each labelled by `labels` (the
    same on every series: run, model, rank) and its positions' values on the axes;
    `values` holds one value per series in that order. The store finds the series ids of a
    family it has seen once by its axes, so a window costs no Python work per series.
    """

    time: datetime
    metric: str
    labels: Mapping[str, str]
    axes: tuple[Axis, ...]
    values: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        _check_time(self.time)
        shape = tuple(len(keys) for _, keys in self.axes)
        for names, keys in self.axes:
            if any(len(key) != len(names) for key in keys):
                raise ObserveError(
                    f"{self.metric}: an axis over labels {names} has a position with another "
                    "number of values: give each position one value per label"
                )
        values = np.ascontiguousarray(self.values, dtype=np.float64)
        if values.size != int(np.prod(shape)):
            raise ObserveError(
                f"{self.metric}: {values.size} values for a grid of {shape} series: pass "
                "one value per series"
            )
        object.__setattr__(self, "values", values.reshape(-1))

    @classmethod
    def grid(
        cls,
        time: datetime,
        metric: str,
        labels: Mapping[str, str],
        axes: Mapping[str, Sequence[object]],
        values: npt.ArrayLike,
    ) -> Family:
        """A family over every combination of `axes` (label → its values), e.g. layer ×
        expert; `values` is shaped like the grid, axes in the order given."""
        return cls(
            time,
            metric,
            labels,
            tuple(((name,), tuple((str(v),) for v in values)) for name, values in axes.items()),
            np.asarray(values),
        )

    def __len__(self) -> int:
        return int(self.values.size)

    def __eq__(self, other: object) -> bool:
        # By value, arrays included (a dataclass would compare arrays elementwise).
        return isinstance(other, Family) and (
            (self.time, self.metric, dict(self.labels), self.axes)
            == (other.time, other.metric, dict(other.labels), other.axes)
            and np.array_equal(self.values, other.values, equal_nan=True)
        )

    __hash__ = None  # type: ignore[assignment]

    def to_row(self) -> list[Any]:
        axes = [[list(names), [list(key) for key in keys]] for names, keys in self.axes]
        values = _array_text(self.values, "<f8")
        return [self.time.isoformat(), self.metric, dict(self.labels), axes, values]

    @classmethod
    def from_row(cls, row: list[Any]) -> Family:
        time, metric, labels, axes, values = row
        return cls(
            datetime.fromisoformat(time),
            metric,
            labels,
            tuple((tuple(names), tuple(tuple(key) for key in keys)) for names, keys in axes),
            _array(values, "<f8"),
        )


_NONE = np.zeros(0, np.int64)


@dataclass(frozen=True, eq=False)
class ExpertLoads:
    """Tokens each expert of each MoE layer received at one step, as columns: row i says
    expert `expert[i]` of layer `layer[i]` received `tokens[i]`."""

    step: int
    # Stored as int32, int32 and int64 whatever integers they were given as.
    layer: npt.NDArray[np.integer[Any]]
    expert: npt.NDArray[np.integer[Any]]
    tokens: npt.NDArray[np.integer[Any]]

    def __post_init__(self) -> None:
        columns = [
            np.ascontiguousarray(column, dtype=kind).reshape(-1)
            for column, kind in ((self.layer, np.int32), (self.expert, np.int32),
                                 (self.tokens, np.int64))
        ]  # fmt: skip
        if len({c.size for c in columns}) != 1:
            raise ObserveError(
                f"expert loads of step {self.step}: columns of {[c.size for c in columns]} "
                "rows; pass one layer, expert and token count per row"
            )
        for name, column in zip(("layer", "expert", "tokens"), columns, strict=True):
            object.__setattr__(self, name, column)

    @classmethod
    def of_layers(cls, step: int, tokens: Mapping[int, Sequence[int]]) -> ExpertLoads:
        """Loads from each layer's tokens per expert (layers may differ in experts)."""
        counts = [len(per_expert) for per_expert in tokens.values()]
        return cls(
            step,
            np.repeat(np.fromiter(tokens, np.int32, len(tokens)), counts),
            np.concatenate([np.arange(n) for n in counts] or [_NONE]),
            np.concatenate([np.asarray(t, np.int64) for t in tokens.values()] or [_NONE]),
        )

    def __len__(self) -> int:
        return int(self.tokens.size)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ExpertLoads)
            and self.step == other.step
            and all(
                np.array_equal(a, b)
                for a, b in zip(
                    (self.layer, self.expert, self.tokens),
                    (other.layer, other.expert, other.tokens),
                    strict=True,
                )
            )
        )

    __hash__ = None  # type: ignore[assignment]

    def to_row(self) -> list[Any]:
        return [
            self.step,
            _array_text(self.layer, "<i4"),
            _array_text(self.expert, "<i4"),
            _array_text(self.tokens, "<i8"),
        ]

    @classmethod
    def from_row(cls, row: list[Any]) -> ExpertLoads:
        step, layer, expert, tokens = row
        return cls(int(step), _array(layer, "<i4"), _array(expert, "<i4"), _array(tokens, "<i8"))


@dataclass(frozen=True)
class DriftResult:
    """One drift score of one window: semantic (an attention layer's hidden states, by
    `method`) or routing (an MoE layer's expert load, method "jensen_shannon")."""

    time: datetime
    layer: int | None
    method: str
    score: float
    threshold: float | None
    drifted: bool
    first_step: int
    last_step: int
    baseline_id: int | None
    details: Mapping[str, Any]

    def __post_init__(self) -> None:
        _check_time(self.time)

    def to_row(self) -> list[Any]:
        return [
            self.time.isoformat(),
            self.layer,
            self.method,
            self.score,
            self.threshold,
            self.drifted,
            self.first_step,
            self.last_step,
            self.baseline_id,
            dict(self.details),
        ]

    @classmethod
    def from_row(cls, row: list[Any]) -> DriftResult:
        time, *rest = row
        return cls(datetime.fromisoformat(time), *rest)


@dataclass(frozen=True)
class HiddenSample:
    """A run's sample of pooled hidden states of one attention layer (an .npz), kept when
    the run ends so that a baseline can be made from the run later. `layer` counts the
    model's attention layers in order."""

    layer: int
    name: str
    data: bytes


@dataclass(frozen=True)
class WindowSample:
    """The last drift-scored window's sample of one attention layer (an .npz), kept when
    the run ends for `observe drift report`."""

    layer: int
    name: str
    first_step: int
    last_step: int
    data: bytes


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, when, and in which process: an end replayed late must not close
    the run again once a later process resumed it."""

    status: str
    time: datetime
    host: str
    pid: int

    def __post_init__(self) -> None:
        if self.status not in END_STATUSES:
            raise ObserveError(
                f"a run ends {' or '.join(map(repr, END_STATUSES))}, not {self.status!r}"
            )
        _check_time(self.time)


@dataclass(frozen=True)
class Batch:
    """Rows of one run that the store writes in one transaction, with the run's signs of
    life: when the process that made the batch was last alive, and the run's end."""

    run_id: str
    samples: tuple[Sample, ...] = ()
    histograms: tuple[HistogramSample, ...] = ()
    expert_loads: tuple[ExpertLoads, ...] = ()
    families: tuple[Family, ...] = ()
    drift_results: tuple[DriftResult, ...] = ()
    hidden_samples: tuple[HiddenSample, ...] = ()
    window_samples: tuple[WindowSample, ...] = ()
    heartbeat: datetime | None = None
    end: RunEnd | None = None

    def __post_init__(self) -> None:
        if self.heartbeat is not None:
            _check_time(self.heartbeat)

    def __len__(self) -> int:
        """Rows: what the spool counts and a full spool drops. A heartbeat or an end is none."""
        return (
            len(self.samples)
            + len(self.histograms)
            + sum(map(len, self.expert_loads))
            + sum(map(len, self.families))
            + len(self.drift_results)
            + len(self.hidden_samples)
            + len(self.window_samples)
        )

    @property
    def empty(self) -> bool:
        """Nothing for the store: no rows, no heartbeat, no end."""
        return not len(self) and self.heartbeat is None and self.end is None

    @property
    def droppable(self) -> bool:
        """Whether a full spool may drop it: measurements streaming in, yes. What a run
        records once, at its end (its samples, its end), is bounded by the model and never
        dropped; nor is a bare heartbeat, one short line."""
        return bool(
            self.samples
            or self.histograms
            or self.expert_loads
            or self.families
            or self.drift_results
        )

    def to_dict(self) -> dict[str, Any]:
        # Rows as lists, not objects: spool files stay about half the size.
        return {
            "run_id": self.run_id,
            "samples": [
                [s.time.isoformat(), s.metric, dict(s.labels), s.value] for s in self.samples
            ],
            "histograms": [
                [
                    h.time.isoformat(),
                    h.metric,
                    dict(h.labels),
                    h.count,
                    h.sum,
                    list(h.bounds),
                    list(h.bucket_counts),
                ]
                for h in self.histograms
            ],
            # Columnar since schema 0005; "expert_loads" held a list per row before.
            "loads": [e.to_row() for e in self.expert_loads],
            "families": [f.to_row() for f in self.families],
            "drift_results": [d.to_row() for d in self.drift_results],
            "hidden_samples": [[h.layer, h.name, _text(h.data)] for h in self.hidden_samples],
            "window_samples": [
                [w.layer, w.name, w.first_step, w.last_step, _text(w.data)]
                for w in self.window_samples
            ],
            "heartbeat": self.heartbeat and self.heartbeat.isoformat(),
            "end": self.end
            and [self.end.status, self.end.time.isoformat(), self.end.host, self.end.pid],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Batch:
        try:
            return cls(
                run_id=data["run_id"],
                samples=tuple(
                    Sample(datetime.fromisoformat(t), m, labels, float(v))
                    for t, m, labels, v in data["samples"]
                ),
                histograms=tuple(
                    HistogramSample(
                        datetime.fromisoformat(t),
                        m,
                        labels,
                        int(count),
                        float(total),
                        tuple(float(b) for b in bounds),
                        tuple(int(c) for c in counts),
                    )
                    for t, m, labels, count, total, bounds, counts in data["histograms"]
                ),
                expert_loads=(
                    *(ExpertLoads.from_row(row) for row in data.get("loads", ())),
                    *_loads_by_step(data.get("expert_loads", ())),
                ),
                families=tuple(Family.from_row(row) for row in data.get("families", ())),
                # Absent in spools written before drift results, or a run's life, travelled.
                drift_results=tuple(
                    DriftResult.from_row(row) for row in data.get("drift_results", ())
                ),
                hidden_samples=tuple(
                    HiddenSample(int(layer), name, _bytes(text))
                    for layer, name, text in data.get("hidden_samples", ())
                ),
                window_samples=tuple(
                    WindowSample(int(layer), name, int(first), int(last), _bytes(text))
                    for layer, name, first, last, text in data.get("window_samples", ())
                ),
                heartbeat=_optional_time(data.get("heartbeat")),
                end=_run_end(data.get("end")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ObserveError(
                f"not a serialised batch ({exc!r}): was it written by observe?"
            ) from exc

    def to_json(self) -> str:
        # NaN and infinities are legal gauge values; Python's json reads back what it writes.
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Batch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ObserveError(f"not a serialised batch: {exc}") from exc
        return cls.from_dict(data)


def _loads_by_step(rows: list[list[int]]) -> Iterator[ExpertLoads]:
    """Loads in the form spools held before they were columnar, a list per row."""
    by_step: defaultdict[int, list[list[int]]] = defaultdict(list)
    for row in rows:
        by_step[int(row[0])].append(row)
    for step, step_rows in by_step.items():
        _, layer, expert, tokens = np.asarray(step_rows, dtype=np.int64).reshape(-1, 4).T
        yield ExpertLoads(step, layer, expert, tokens)


def _array_text(array: npt.NDArray[Any], kind: str) -> str:
    # Fixed byte order: a spool may be replayed on another machine.
    return _text(array.astype(kind, copy=False).tobytes())


def _array(text: str, kind: str) -> npt.NDArray[Any]:
    return np.frombuffer(_bytes(text), dtype=kind)


def _text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _run_end(row: list[Any] | None) -> RunEnd | None:
    if row is None:
        return None
    status, time, host, pid = row
    return RunEnd(status, datetime.fromisoformat(time), host, int(pid))


def _optional_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
