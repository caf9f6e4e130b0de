"""What the pipeline hands the store: plain, immutable rows, and their JSON form for the spool."""

from __future__ import annotations

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
class Batch:
    """Rows of one run that the store writes in one transaction."""

    run_id: str
    samples: tuple[Sample, ...] = ()
    histograms: tuple[HistogramSample, ...] = ()
    expert_loads: tuple[ExpertLoad, ...] = ()
    drift_results: tuple[DriftResult, ...] = ()

    def __len__(self) -> int:
        return (
            len(self.samples)
            + len(self.histograms)
            + len(self.expert_loads)
            + len(self.drift_results)
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
            "expert_loads": [[e.step, e.layer, e.expert, e.tokens] for e in self.expert_loads],
            "drift_results": [d.to_row() for d in self.drift_results],
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
                # Absent in spools written before drift results existed.
                drift_results=tuple(
                    DriftResult.from_row(row) for row in data.get("drift_results", ())
                ),
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
