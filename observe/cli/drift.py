"""`observe drift`: baselines, the latest drift scores, and HTML reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from observe.cli.app import (
    DbUrl,
    JsonFlag,
    app,
    console,
    explains_errors,
    settings,
    shown,
    store_engine,
    store_url,
)
from observe.errors import ObserveError

drift = typer.Typer(help="Semantic and routing drift against reference baselines.")
app.add_typer(drift, name="drift", no_args_is_help=True)

RunOption = Annotated[str | None, typer.Option("--run", help="A run id from `observe runs`.")]


@drift.command()
@explains_errors
def status(
    ctx: typer.Context, run: RunOption = None, db_url: DbUrl = None, as_json: JsonFlag = False
) -> None:
    """The latest drift score per layer and method, its threshold and whether it is over."""
    from observe.store.baselines import drift_results, latest_drift_run
    from observe.store.queries import find_run

    engine = store_engine(ctx, db_url)
    try:
        if run is None:
            run = latest_drift_run(engine)
            if run is None:
                raise ObserveError(
                    "no run has scored drift yet: serve a model that has a baseline "
                    "(`observe infer`), or pass --run"
                )
        find_run(engine, run)
        scores = drift_results(engine, run, latest=True)
    finally:
        engine.dispose()
    rows = [
        {
            "run": run,
            "kind": d.details.get("kind", "semantic"),
            "layer": d.layer,
            "name": d.details.get("name"),
            "method": d.method,
            "score": d.score,
            "threshold": d.threshold,
            "drifted": d.drifted,
            "first_step": d.first_step,
            "last_step": d.last_step,
            "window_end": d.time.isoformat(),
        }
        for d in sorted(scores, key=lambda d: (d.details.get("kind", ""), d.layer or 0, d.method))
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    # Whole cells: a layer and method must read as they are written (`--json` has all).
    table = Table("layer", "method", "score", "threshold", "over", "steps", "ended")
    for column in table.columns:
        column.no_wrap = True
    for r in rows:
        over = "[bold red]yes[/]" if r["drifted"] else "no"
        threshold = "-" if r["threshold"] is None else f"{r['threshold']:.3f}"
        table.add_row(
            str(r["layer"]),
            str(r["method"]),
            f"{r['score']:.3f}",
            threshold,
            over if r["threshold"] is not None else "-",
            f"{r['first_step']}-{r['last_step']}",
            str(r["window_end"])[11:19],
        )
    console.print(Text("run ") + shown(run))
    console.print(table)


@drift.command()
@explains_errors
def baseline(
    ctx: typer.Context,
    run: Annotated[str, typer.Option("--run", help="The run whose traffic is the reference.")],
    activate: Annotated[bool, typer.Option(help="Make it the model's active baseline.")] = True,
    db_url: DbUrl = None,
) -> None:
    """Make a baseline from a run: its sample of hidden states and its expert load."""
    from observe.drift.baseline import Baseline
    from observe.store.baselines import hidden_samples, npz_arrays
    from observe.store.queries import expert_totals, find_run
    from observe.store.writer import Store

    options = settings(ctx, db_url=db_url)
    store = Store.open(store_url(ctx, db_url))
    try:
        record = find_run(store.engine, run)
        samples = {
            name: npz_arrays(data)["sample_ND"].astype("float32")
            for name, data in hidden_samples(store.engine, run).items()
        }
        if not samples:
            raise ObserveError(
                f"run {run} kept no sample of hidden states (it ran without the "
                "hidden_states measurement, or has not ended): pick a finished run whose "
                "monitor sampled hidden states"
            )
        experts = {str(layer): tokens for layer, tokens in expert_totals(store.engine, run).items()}
        made = Baseline.from_samples(
            samples,
            experts,
            model=record.model,
            window_rows=options.monitor.window_sample_size,
            live_methods=options.drift.methods,
            seed=options.monitor.seed,
            domain=record.config.get("fine_tune", {}).get("domain"),
            run_id=run,
        ).save(store, activate=activate)
    finally:
        store.close()
    state = "active" if activate else "inactive"
    console.print(
        f"baseline {made.id} for model {made.model!r} from run {run!r} ({state})",
        highlight=False,
        markup=False,
    )


@drift.command()
@explains_errors
def baselines(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Only this model's.")] = None,
    activate: Annotated[
        int | None, typer.Option(help="Make baseline ID its model's active one.")
    ] = None,
    db_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """List baselines, newest first; --activate ID switches a model's active one."""
    from observe.store.baselines import activate_baseline, list_baselines

    engine = store_engine(ctx, db_url)
    try:
        if activate is not None:
            chosen = activate_baseline(engine, activate)
            console.print(
                f"baseline {chosen.id} is now model {chosen.model!r}'s active baseline",
                highlight=False,
                markup=False,
            )
        found = list_baselines(engine, model)
    finally:
        engine.dispose()
    rows = [
        {
            "id": b.id,
            "model": b.model,
            "active": b.active,
            "checkpoint": b.checkpoint,
            "domain": b.domain,
            "run": b.run_id,
            "created": b.created.isoformat(),
            "trained_until": b.trained_until and b.trained_until.isoformat(),
            "window_rows": b.window_rows,
        }
        for b in found
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("id", "model", "active", "domain", "run", "created")
    for column in table.columns:
        # Ids wrap rather than lose characters: they are pasted into --run and --activate.
        column.overflow = "fold"
    for r in rows:
        table.add_row(
            str(r["id"]),
            shown(str(r["model"])),
            "[bold green]yes[/]" if r["active"] else "no",
            shown(str(r["domain"] or "-")),
            shown(str(r["run"] or "-")),
            str(r["created"])[:19],
        )
    console.print(table)


@drift.command()
@explains_errors
def report(
    ctx: typer.Context,
    run: Annotated[str, typer.Option("--run", help="A run that scored drift.")],
    out: Annotated[Path, typer.Option(help="Where to write the HTML report.")],
    baseline: Annotated[
        int | None, typer.Option(help="Baseline id; default the model's active one.")
    ] = None,
    layer: Annotated[
        int | None, typer.Option(help="Attention layer index; default the last one scored.")
    ] = None,
    method: Annotated[
        str, typer.Option(help="Drift method of the report: classifier, mmd, distance, ratio.")
    ] = "classifier",
    db_url: DbUrl = None,
) -> None:
    """Evidently's HTML report of the run's last scored window against a baseline, with
    the run's drift over time."""
    from observe.drift.config import DriftConfig
    from observe.drift.run_report import drift_report
    from observe.store.writer import Store

    DriftConfig(methods=(method,))  # an unknown method is an error before any work
    store = Store.open(store_url(ctx, db_url), upgrade=False)
    try:
        page = drift_report(store, run, baseline_id=baseline, layer=layer, method=method)
    finally:
        store.close()
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ObserveError(f"cannot write {out} ({exc.strerror}): pick a writable --out") from exc
    console.print(f"wrote {out}", highlight=False)
