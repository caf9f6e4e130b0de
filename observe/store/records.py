"""What the pipeline hands the store: plain, immutable rows, and their JSON form for the spool."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from observe.errors import ObserveError


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


@dataclass(frozen=True)
class ExpertLoad:
    """Tokens one expert of one MoE layer received at one step."""

    step: int
    layer: int
    expert: int
    tokens: int


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


# How a run ends, as its process says; `lost` is the store's verdict on a silent one.
END_STATUSES = ("finished", "failed")


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
    expert_loads: tuple[ExpertLoad, ...] = ()
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
            + len(self.expert_loads)
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
        return bool(self.samples or self.histograms or self.expert_loads or self.drift_results)

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
            "expert_loads": [[e.step, e.layer, e.expert, e.tokens] for e in self.expert_loads],
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
                expert_loads=tuple(ExpertLoad(*row) for row in data["expert_loads"]),
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
