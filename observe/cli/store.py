"""`observe db`, `observe runs` and `observe query`: the SQL store from the terminal."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

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
    """List monitored runs: status, where each ran, when it last showed life, its size.
    A run is running, finished, failed or lost: its process is gone without saying how it
    ended (no heartbeat for lost_after_s, or its pid gone from this host). Lost runs are
    marked so in the store; an end delivered later replaces `lost`."""
    from observe.alerts.text import humanize_duration
    from observe.store.liveness import mark_lost
    from observe.store.queries import list_runs

    engine = store_engine(ctx, db_url)
    now = datetime.now(UTC)
    lost = mark_lost(engine, settings(ctx, db_url=db_url).lost_after, now)
    # Lost as judged, also where a read-only store refused the mark.
    found = [replace(r, status="lost") if r.id in lost else r for r in list_runs(engine)]
    if as_json:
        rows = [
            {
                "id": r.id,
                "model": r.model,
                "status": r.status,
                "started": r.started.isoformat(),
                "ended": r.ended and r.ended.isoformat(),
                "host": r.host,
                "pid": r.pid,
                "heartbeat": r.heartbeat.isoformat(),
                "samples": r.samples,
            }
            for r in found
        ]
        console.print_json(json.dumps(rows))
        return
    table = Table("run", "model", "status", "host:pid", "started", "last seen", "samples")
    # A run id on one line, whole: it is pasted into --run; so is its status, what on-call
    # reads first. The other columns give way.
    table.columns[0].no_wrap = table.columns[2].no_wrap = True
    for r in found:
        started = r.started.isoformat(timespec="seconds")
        where = f"{r.host}:{r.pid}" if r.host is not None else "-"
        # A run's end, or how long ago the process of a run not known to have ended last
        # showed life.
        age = humanize_duration(max(0, round((now - r.heartbeat).total_seconds())))
        ended = r.ended.isoformat(timespec="seconds") if r.ended else f"{age} ago"
        table.add_row(
            shown(r.id), shown(r.model), r.status, where, started, ended, f"{r.samples:,}"
        )
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
