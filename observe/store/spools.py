"""Spool directories: one per store, a slot in it per process writing to that store.

`spool_dir/<store fingerprint>/slot-N`. The fingerprint names the database (engine, host,
port, database or SQLite file), never the credentials, so batches spooled for one store are
only ever replayed into that store: a later run on another database, in the same working
directory, leaves them waiting. `store.json` beside the slots says which store, masked.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from observe.errors import ObserveError
from observe.store.delivery import Delivery
from observe.store.engine import mask_url
from observe.store.spool import Spool, SpoolInUse

# Concurrent runs on one machine each take a slot; a later run that takes a slot replays
# whatever an earlier run left in it.
SLOTS = 16
STORE_FILE = "store.json"


def fingerprint(url: str) -> str:
    """The store `url` names, as a short stable hash without user or password."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        where = str(Path(parsed.database or "").resolve())
    else:
        where = f"{parsed.host or ''}:{parsed.port or ''}/{parsed.database or ''}"
    return hashlib.sha256(f"{backend}:{where}".encode()).hexdigest()[:16]


def store_spool(spool_dir: Path, url: str) -> Path:
    """The directory holding `url`'s slots, labelled with the store it belongs to."""
    directory = spool_dir / fingerprint(url)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        label = directory / STORE_FILE
        if not label.exists():
            label.write_text(json.dumps({"store": mask_url(url)}), encoding="utf-8")
    except OSError as exc:
        raise ObserveError(
            f"cannot use {spool_dir} for the spool ({exc.strerror}): point spool_dir at a "
            "writable directory"
        ) from None
    return directory


def open_delivery(url: str, spool_dir: Path, max_spool_bytes: int) -> Delivery:
    """A delivery to `url` on the first free slot of its store's spool."""
    directory = store_spool(spool_dir, url)
    for slot in range(SLOTS):
        try:
            return Delivery(url, directory / f"slot-{slot}", max_spool_bytes=max_spool_bytes)
        except SpoolInUse:
            continue
    raise ObserveError(
        f"all {SLOTS} spool slots under {directory} are in use by other processes: wait for "
        "one to finish, or give this run its own spool_dir"
    )


@dataclass(frozen=True)
class SlotInfo:
    path: Path
    # The store it belongs to, masked; None for a slot spooled before stores were recorded.
    store: str | None
    fingerprint: str | None
    # None while another process holds the slot.
    pending_rows: int | None
    pending_bytes: int | None


def list_slots(spool_dir: Path) -> list[SlotInfo]:
    """Every slot under `spool_dir` with what waits in it."""
    slots = []
    for slot in sorted(spool_dir.glob("*/slot-*")) + sorted(spool_dir.glob("slot-*")):
        label = slot.parent / STORE_FILE
        store = fingerprint_of = None
        if label.exists():
            store = json.loads(label.read_text(encoding="utf-8"))["store"]
            fingerprint_of = slot.parent.name
        try:
            spool = Spool(slot, max_bytes=1 << 62)
        except SpoolInUse:
            slots.append(SlotInfo(slot, store, fingerprint_of, None, None))
            continue
        try:
            slots.append(
                SlotInfo(slot, store, fingerprint_of, spool.pending_rows, spool.pending_bytes)
            )
        finally:
            spool.close()
    return slots
