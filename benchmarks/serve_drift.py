"""Server B's drift windows and drift alerts, as `benchmarks/serve_load.py` reports them: each
window's scores from the store's `drift_results`, and when the run's alert evaluator recorded
the drift alert firing in its `alert_events`, counted in windows scored after the shift."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from serve_traffic import Turn, serving_seconds

from observe.alerts.defaults import ROUTING_DRIFT_RULE, SEMANTIC_DRIFT_RULE
from observe.store.alerting import AlertEvent
from observe.store.baselines import StoredDrift

WINDOWS_TARGET = 3
# The drift rule the target is about; the routing one is shown beside it.
DRIFT_RULE = SEMANTIC_DRIFT_RULE
DRIFT_RULES = (SEMANTIC_DRIFT_RULE, ROUTING_DRIFT_RULE)


@dataclass(frozen=True)
class Window:
    """One drift-scored window of run B: its steps, when its scores were taken, its highest
    semantic score over layers (NaN: none scored) with that layer's rows and calibrated
    threshold, how many of its semantic scores were over their own threshold (what the drift
    alert fires on), of how many, and its highest routing score."""

    first_step: int
    last_step: int
    scored: datetime
    semantic: float
    rows: int
    threshold: float
    drifted: int
    scores: int
    routing: float


def highest(values: Iterable[float]) -> float:
    """The highest of `values` that is a number; NaN if none is."""
    return max((v for v in values if not math.isnan(v)), default=math.nan)


def scored_windows(results: Sequence[StoredDrift]) -> list[Window]:
    """Run B's drift windows (semantic scores, over the steps each gathered), each with the
    highest routing score of the flushed windows that ended within it."""
    grouped: dict[tuple[int, int], list[StoredDrift]] = {}
    for result in results:
        if result.details.get("kind") == "semantic":
            grouped.setdefault((result.first_step or 0, result.last_step or 0), []).append(result)
    routing = [d for d in results if d.details.get("kind") == "routing"]
    windows = []
    for (first, last), semantic in grouped.items():
        top = max(semantic, key=lambda d: d.score)
        windows.append(
            Window(
                first,
                last,
                max(d.time for d in semantic),
                top.score,
                int(top.details.get("rows", 0)),
                math.nan if top.threshold is None else top.threshold,
                sum(d.drifted for d in semantic),
                len(semantic),
                highest(d.score for d in routing if first <= (d.last_step or 0) <= last),
            )
        )
    return sorted(windows, key=lambda w: w.scored)


def skipped_windows(results: Sequence[StoredDrift], flush_every: int) -> int:
    """Flushed windows the drift thread had no room for (its queue full), from the gaps in
    the steps of the routing scores it gave each."""
    skipped, last = 0, 0
    spans = {(d.first_step or 0, d.last_step or 0) for d in results
             if d.details.get("kind") == "routing"}  # fmt: skip
    for first, last_step in sorted(spans):
        skipped += (first - last - 1) // flush_every
        last = last_step
    return skipped


def score(value: float) -> str:
    """A score as the tables show it, NaN (none) as a dash."""
    return "–" if math.isnan(value) else f"{value:.3f}"


def print_drift(
    results: Sequence[StoredDrift],
    events: Sequence[AlertEvent],
    run_id: str,
    turns: Sequence[Turn],
    flush_every: int,
) -> None:
    windows = scored_windows(results)
    # B's first turn of the second domain's prompts.
    shift = next(t.began for t in turns if t.server == "B" and t.shifted)

    def serving(when: datetime) -> float:
        return serving_seconds(turns, "B", shift, when)

    before = [w for w in windows if w.scored < shift]
    after = [w for w in windows if w.scored >= shift]
    over = sum(w.drifted > 0 for w in before)
    print(
        f"\nServer B's run {run_id}: the shift at {shift:%H:%M:%S} UTC; {len(windows)} drift "
        f"windows scored, {len(before)} before the shift ({over} of them with a layer over "
        f"its calibrated threshold), {len(after)} after it; "
        f"{skipped_windows(results, flush_every)} flushed windows skipped (the drift thread "
        "behind)."
    )
    print(
        "Alert lines: semantic drift over its calibrated threshold in scored windows in a row "
        f"{SEMANTIC_DRIFT_RULE.bound}, routing drift "
        f"{ROUTING_DRIFT_RULE.bound}. Window 1 after the shift may hold steps served before it. "
        "Seconds are B's serving time from the shift, its stopped time left out."
    )
    print()
    print(
        "| window after the shift | steps | scored, s from the shift | semantic drift "
        "(highest layer) | its rows | its calibrated threshold | layers over theirs "
        "| routing drift (highest layer) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, w in enumerate(windows, 1 - len(before)):
        print(
            f"| {n if n > 0 else ''} | {w.first_step}–{w.last_step} "
            f"| {serving(w.scored):+.1f} | {score(w.semantic)} | {w.rows} "
            f"| {score(w.threshold)} | {w.drifted} of {w.scores} | {score(w.routing)} |"
        )
    print()
    for rule in DRIFT_RULES:
        firing = [e for e in events if e.alert == rule.name and e.state == "firing"]
        if early := [e for e in firing if e.time < shift]:
            print(
                f"{rule.name} fired before the shift, on the training domain's traffic (a "
                f"false alarm), {-serving(early[0].time):.1f} s before it."
            )
        if late := [e for e in firing if e.time >= shift]:
            fired = late[0].time
            windows_by_then = sum(w.scored <= fired for w in after)
            outcome = (
                f"fired {serving(fired):.1f} s after the shift, with "
                f"{windows_by_then} window{'' if windows_by_then == 1 else 's'} scored after it"
            )
            if not windows_by_then:
                outcome += " (on windows of the training domain: a false alarm)"
            met = 1 <= windows_by_then <= WINDOWS_TARGET
        else:
            outcome, met = "did not fire after the shift", False
        verdict = "met" if met else "MISSED"
        target = f" (target ≤ {WINDOWS_TARGET} windows: {verdict})" if rule is DRIFT_RULE else ""
        print(f"{rule.name} {outcome}{target}.")
    others = sorted(
        {e.alert for e in events if e.state == "firing"} - {r.name for r in DRIFT_RULES}
    )
    print(f"Other alerts that fired on server B: {', '.join(others) or 'none'}.")
