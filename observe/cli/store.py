"""`observe db`, `observe runs` and `observe query`: the SQL store from the terminal."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from observe.cli.app import (
    DbUrl,
    JsonFlag,
    app,
    console,
    explains_errors,
    shown,
    store_engine,
    store_url,
)

db = typer.Typer(help="Migrate the store's schema (Alembic).", no_args_is_help=True)
app.add_typer(db, name="db")


@db.command()
@explains_errors
def upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    db_url: DbUrl = None,
) -> None:
    """Upgrade the schema to REVISION (default: the newest)."""
    from observe.store import migrate
    from observe.store.engine import mask_url

    url = store_url(ctx, db_url)
    migrate.upgrade(url, revision)
    console.print(f"{mask_url(url)} is at {migrate.current(url)}", highlight=False)


@db.command()
@explains_errors
def downgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision; 'base' empties it.")],
    db_url: DbUrl = None,
) -> None:
    """Downgrade the schema to REVISION."""
    from observe.store import migrate
    from observe.store.engine import mask_url

    url = store_url(ctx, db_url)
    migrate.downgrade(url, revision)
    console.print(f"{mask_url(url)} is at {migrate.current(url) or 'base'}", highlight=False)


@db.command()
@explains_errors
def current(ctx: typer.Context, db_url: DbUrl = None) -> None:
    """Print the schema's current revision."""
    from observe.store import migrate

    console.print(migrate.current(store_url(ctx, db_url)) or "base", highlight=False)


@app.command()
@explains_errors
def runs(ctx: typer.Context, db_url: DbUrl = None, as_json: JsonFlag = False) -> None:
    """List monitored runs with their status and size."""
    from observe.store.queries import list_runs

    found = list_runs(store_engine(ctx, db_url))
    if as_json:
        rows = [
            {
                "id": r.id,
                "model": r.model,
                "status": r.status,
                "started": r.started.isoformat(),
                "ended": r.ended and r.ended.isoformat(),
                "samples": r.samples,
            }
            for r in found
        ]
        console.print_json(json.dumps(rows))
        return
    table = Table("run", "model", "status", "started", "ended", "samples")
    # A run id on one line, whole: it is pasted into --run. The other columns give way.
    table.columns[0].no_wrap = True
    for r in found:
        ended = r.ended.isoformat(timespec="seconds") if r.ended else "-"
        started = r.started.isoformat(timespec="seconds")
        table.add_row(shown(r.id), shown(r.model), r.status, started, ended, f"{r.samples:,}")
    console.print(table)


@app.command()
@explains_errors
def query(
    ctx: typer.Context,
    metric: Annotated[str, typer.Argument(help="Metric name from the catalogue.")],
    run: Annotated[str | None, typer.Option(help="Only this run.")] = None,
    since: Annotated[str | None, typer.Option(help="Only this recent: 30s, 10m, 2h, 1d.")] = None,
    db_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Print a metric's stored samples."""
    from observe.store.queries import find_run, parse_since
    from observe.store.queries import query as run_query

    window = parse_since(since) if since is not None else None
    engine = store_engine(ctx, db_url)
    if run is not None:
        find_run(engine, run)  # an unknown run is an error naming the nearest ones
    rows = run_query(engine, metric, run=run, since=window)
    if as_json:
        data = [
            {"time": r.time.isoformat(), "labels": dict(r.labels), "value": r.value} for r in rows
        ]
        console.print_json(json.dumps(data))
        return
    table = Table("time", "labels", "value")
    for r in rows:
        labels = ",".join(f"{k}={v}" for k, v in sorted(r.labels.items()))
        table.add_row(r.time.isoformat(timespec="seconds"), shown(labels), f"{r.value:g}")
    console.print(table)
