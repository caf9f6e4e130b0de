"""The drift report of a stored run: its last scored window against a baseline, in
Evidently's HTML report, headed by the run's drift over time."""

from __future__ import annotations

import html

import numpy as np

from observe.drift.baseline import Baseline
from observe.drift.calibration import calibrate
from observe.drift.methods import MIN_ROWS
from observe.drift.report import report_html
from observe.drift.timeline import Point, timeline_svg
from observe.errors import ObserveError
from observe.store.baselines import drift_results, npz_arrays, window_samples
from observe.store.queries import find_run
from observe.store.writer import Store


def drift_report(
    store: Store,
    run_id: str,
    *,
    baseline_id: int | None = None,
    layer: int | None = None,
    method: str = "classifier",
) -> str:
    """A standalone HTML page; `baseline_id` defaults to the run model's active baseline,
    `layer` to the last attention layer the run scored."""
    record = find_run(store.engine, run_id)
    windows = {w.layer: w for w in window_samples(store.engine, run_id)}
    if not windows:
        raise ObserveError(
            f"run {run_id} kept no scored window: it scored no drift, or has not ended yet"
        )
    layer = max(windows) if layer is None else layer
    if layer not in windows:
        raise ObserveError(
            f"run {run_id} kept no window of attention layer {layer}: choose one of "
            f"{', '.join(map(str, sorted(windows)))}"
        )
    window = windows[layer]
    chosen = Baseline.load(store, baseline_id=baseline_id, model=record.model)
    references = {h.name: h for h in chosen.hidden_states}
    reference = references.get(window.name)
    if reference is None:
        raise ObserveError(
            f"baseline {chosen.id} has no layer {window.name!r}: pick a baseline of "
            f"model {record.model!r} (`observe drift baselines`)"
        )
    rows_ND = npz_arrays(window.data)["sample_ND"].astype(np.float32)
    current_NK = reference.projection.apply(rows_ND)
    rows = min(len(current_NK), len(reference.reference_NK) // 2)
    if rows < MIN_ROWS:
        raise ObserveError(
            f"the kept window has {len(current_NK)} rows, fewer than the {MIN_ROWS} a report "
            "needs: serve more requests per window (raise flush_every)"
        )
    threshold = calibrate(method, reference.reference_NK, rows)
    page = report_html(current_NK[:rows], reference.reference_NK, method, threshold=threshold)
    header = _header(run_id, chosen, window.name, window.first_step, window.last_step, rows)
    timeline = _timeline(store, run_id)
    body = page.find("<body")
    start = page.find(">", body) + 1 if body >= 0 else 0
    return page[:start] + header + timeline + page[start:]


def _header(run_id: str, baseline: Baseline, name: str, first: int, last: int, rows: int) -> str:
    return (
        '<section style="font-family:sans-serif;margin:16px">'
        f"<h1>Drift of run {html.escape(run_id)}</h1>"
        f"<p>Layer {html.escape(name)}, window of steps {first}–{last} ({rows} sequences), "
        f"against baseline {baseline.id} of model {html.escape(baseline.model)} "
        f"(domain {html.escape(str(baseline.domain or '-'))}).</p></section>"
    )


def _timeline(store: Store, run_id: str) -> str:
    semantic: list[Point] = []
    routing: list[Point] = []
    for d in drift_results(store.engine, run_id):
        kind = d.details.get("kind", "semantic")
        point = Point(f"layer {d.layer} {d.method}", d.last_step or 0, d.score, d.threshold)
        (routing if kind == "routing" else semantic).append(point)
    return (
        '<section style="margin:16px">'
        + timeline_svg(semantic, "Semantic drift per window (dashed: threshold)")
        + timeline_svg(routing, "Routing drift per window (Jensen–Shannon)")
        + "</section>"
    )
