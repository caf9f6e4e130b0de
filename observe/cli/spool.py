"""`observe spool`: what waits on disk for a store, and moving or dropping it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
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
    store_url,
)
from observe.errors import ObserveError

spool = typer.Typer(help="Batches spooled on disk until their store takes them.")
app.add_typer(spool, name="spool", no_args_is_help=True)

SlotOption = Annotated[
    Path | None, typer.Option("--slot", help="One slot directory, as `spool status` lists it.")
]


@spool.command()
@explains_errors
def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every spool slot under spool_dir: its store and how much waits in it."""
    from observe.store.spools import list_slots

    slots = list_slots(settings(ctx).spool_dir)
    rows = [
        {
            "slot": str(s.path),
            "store": s.store,
            "fingerprint": s.fingerprint,
            "pending_rows": s.pending_rows,
            "pending_bytes": s.pending_bytes,
        }
        for s in slots
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("slot", "store", "rows waiting", "bytes")
    table.columns[0].no_wrap = True
    for r in rows:
        busy = r["pending_rows"] is None
        table.add_row(
            str(r["slot"]),
            str(r["store"] or "unknown (spooled before stores were recorded)"),
            "in use" if busy else f"{r['pending_rows']:,}",
            "-" if busy else f"{r['pending_bytes']:,}",
        )
    console.print(table)


@spool.command()
@explains_errors
def replay(
    ctx: typer.Context,
    slot: SlotOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to keep trying per slot.")] = 60.0,
    db_url: DbUrl = None,
) -> None:
    """Deliver what waits for the configured store (or in --slot) into that store."""
    from observe.store.delivery import Delivery
    from observe.store.engine import mask_url
    from observe.store.spools import fingerprint, list_slots

    options = settings(ctx, db_url=db_url)
    url = store_url(ctx, db_url)
    mine = fingerprint(url)
    slots = [s for s in list_slots(options.spool_dir) if slot is None or s.path == slot]
    if slot is not None and not slots:
        raise ObserveError(f"no spool slot {slot}: `observe spool status` lists them")
    if slot is None:
        slots = [s for s in slots if s.fingerprint == mine]
    for s in slots:
        if s.fingerprint not in (None, mine):
            raise ObserveError(
                f"slot {s.path} belongs to {s.store}, not {mask_url(url)}: replay it with "
                "--db-url naming that store"
            )
        if s.pending_rows is None:
            raise ObserveError(f"slot {s.path} is in use by a running process: wait for it")
    for s in slots:
        delivery = Delivery(url, s.path, max_spool_bytes=options.spool_max_bytes)
        delivery.close(timeout)
        stats = delivery.stats()
        left = stats.spooled_samples
        # A run's end has no rows: say that something waits even when no row does.
        still = f" ({stats.spooled_bytes:,} bytes still spooled)" if stats.spooled_bytes else ""
        console.print(
            f"{s.path}: {(s.pending_rows or 0) - left:,} rows delivered, {left:,} left{still}",
            highlight=False,
        )
    if not slots:
        console.print(f"nothing waits for {mask_url(url)}", highlight=False)


@spool.command()
@explains_errors
def discard(
    ctx: typer.Context,
    slot: Annotated[Path, typer.Option("--slot", help="The slot directory to delete.")],
    yes: Annotated[bool, typer.Option("--yes", help="Really delete what waits in it.")] = False,
) -> None:
    """Delete a slot and what waits in it, for a store that is gone for good."""
    from observe.store.spools import list_slots

    found = [s for s in list_slots(settings(ctx).spool_dir) if s.path == slot]
    if not found:
        raise ObserveError(f"no spool slot {slot}: `observe spool status` lists them")
    if found[0].pending_rows is None:
        raise ObserveError(f"slot {slot} is in use by a running process: wait for it")
    if not yes:
        owner = found[0].store or "an unknown store"
        raise ObserveError(
            f"slot {slot} holds {found[0].pending_rows:,} rows for {owner}: pass --yes to "
            "delete them"
        )
    shutil.rmtree(slot)
    console.print(f"deleted {slot}", highlight=False)
