"""Samples/s into the SQL store: COPY against one ORM object per sample, side by side; and
dense windows end to end beside a raw binary COPY of the same rows.

Each round writes `--samples` samples to PostgreSQL with `Store.write` (binary COPY, batches
of `--batch`), `--naive-samples` with `Store.write_naive` (an ORM object, `session.add` and
a commit per sample), and `--samples` to SQLite with `Store.write` (executemany). Rates are
medians over the rounds; the ratio is COPY's rate over the naive rate. Each run uses a
database of its own on the server, dropped at the end.

Then `dense_ingest`: windows of one layer × expert × slot family (64 × 256 × 16 by default,
262,144 series) from the batch an exporter makes, through the spool (a line written with
fsync, read back) and `Store.write` with its delivery id (one row of `sample_blocks`),
beside a binary COPY of the same rows into a bare table (time, series_id, value; no index,
no constraint) and of the same block into a table like `sample_blocks` (its index: the
database's cost of the schema, without observe's), alternating, in one process. The first
window (which creates the series) is timed on its own.

    .venv/bin/python benchmarks/store_ingest.py [--pg-url URL] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import sqlalchemy

from observe.catalogue import EXPERT_TOKENS
from observe.hooks.config import MonitorConfig
from observe.store import binary_copy
from observe.store.blocks import Block, block_copy_data
from observe.store.records import Batch, Family, Sample
from observe.store.spool import Spool
from observe.store.writer import Store

LAYERS, EXPERTS = 4, 32  # the `bench` config: 128 series, as the hooks export them
# Dense windows' targets (the scaling issue): samples/s end to end, and its share of what a
# raw COPY of the same rows manages in the same run.
DENSE_SAMPLES_S = 1_000_000
DENSE_SHARE_OF_RAW = 2 / 3


def libpq(url: str) -> str:
    """A SQLAlchemy URL as psycopg takes it."""
    return (
        sqlalchemy.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


@dataclass(frozen=True)
class ScratchDatabase:
    url: str
    server_version: str


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[ScratchDatabase]:
    """A new, empty database on the server at `server_url`, dropped on the way out."""
    name = f"observe_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq(server_url), autocommit=True) as connection:
        version = connection.execute("SHOW server_version").fetchone()
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        url = sqlalchemy.make_url(server_url).set(database=name)
        yield ScratchDatabase(
            url.render_as_string(hide_password=False), version[0] if version else "?"
        )
    finally:
        with psycopg.connect(libpq(server_url), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def batches(run: str, total: int, size: int, start: int) -> list[Batch]:
    """`total` samples of the expert-token counter, cycling over every (layer, expert)."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    series = [
        {"run": run, "model": "bench", "layer": str(layer), "expert": str(expert)}
        for layer in range(LAYERS)
        for expert in range(EXPERTS)
    ]
    samples = [
        Sample(
            t0 + timedelta(milliseconds=start + i),
            EXPERT_TOKENS.name,
            series[i % len(series)],
            float(i),
        )
        for i in range(total)
    ]
    return [Batch(run, tuple(samples[i : i + size])) for i in range(0, total, size)]


def rate(write: Callable[[Batch], None], work: list[Batch]) -> float:
    started = time.perf_counter()
    for batch in work:
        write(batch)
    return sum(len(b) for b in work) / (time.perf_counter() - started)


@dataclass(frozen=True)
class DenseIngest:
    """Samples/s of each measured window, end to end and raw COPY, in the order run."""

    samples_per_window: int
    end_to_end: list[float]
    raw_copy: list[float]
    # Raw COPY of the window's block into a table like `sample_blocks`, its index included:
    # the database's own cost of the schema, without observe's.
    raw_copy_block: list[float]
    # Seconds of the first window end to end, which creates the family's series.
    first_window_s: float

    @property
    def median_end_to_end(self) -> float:
        return statistics.median(self.end_to_end)

    @property
    def median_raw_copy(self) -> float:
        return statistics.median(self.raw_copy)

    def verdicts(self) -> list[str]:
        """The median end-to-end rate and its share of raw COPY's, each against its target."""
        e2e, raw = self.median_end_to_end, self.median_raw_copy
        met = "met" if e2e >= DENSE_SAMPLES_S else "MISSED"
        share = "met" if e2e >= raw * DENSE_SHARE_OF_RAW else "MISSED"
        return [
            f"end to end: {e2e:,.0f} samples/s (target ≥ {DENSE_SAMPLES_S:,}: {met})",
            f"end to end / raw COPY into a bare table: {e2e / raw:.2f} "
            f"(target ≥ {DENSE_SHARE_OF_RAW:.2f}: {share})",
            "end to end / raw COPY of the block into a table like `sample_blocks`: "
            f"{e2e / statistics.median(self.raw_copy_block):.2f}",
            f"first window (creates {self.samples_per_window:,} series): "
            f"{self.first_window_s:.1f} s",
        ]


def dense_ingest(
    url: str, layers: int, experts: int, slots: int, windows: int, spool_dir: Path
) -> DenseIngest:
    """End-to-end ingest of `windows` dense windows into the store at `url` (migrated here),
    each beside a raw COPY of the same rows into a bare table."""
    store = Store.open(url)
    run = f"dense-{uuid.uuid4().hex[:8]}"
    store.start_run(run, "bench", {})
    spool = Spool(spool_dir, 1 << 34)
    raw = psycopg.connect(libpq(url))
    raw.execute("CREATE TABLE bare (time timestamptz, series_id int4, value float8)")
    raw.execute("CREATE TABLE blocks (LIKE sample_blocks INCLUDING INDEXES INCLUDING STORAGE)")
    raw.commit()
    shape = (layers, experts, slots)
    axes = {"layer": range(layers), "expert": range(experts), "slot_le": range(slots)}
    t0 = datetime.now(UTC)
    end_to_end: list[float] = []
    raw_copy: list[float] = []
    raw_copy_block: list[float] = []
    n = layers * experts * slots
    ids = np.arange(n, dtype=np.int32)
    try:
        for i in range(windows + 1):
            time_ = t0 + timedelta(seconds=i)
            values = np.random.default_rng(i).random(shape)
            started = time.perf_counter()
            # What an exporter of dense families hands the delivery, and what it does.
            family = Family.grid(time_, EXPERT_TOKENS.name, {"run": run}, axes, values)
            spool.append(Batch(run, families=(family,), heartbeat=time_))
            entry = spool.peek()
            assert entry is not None
            store.write(entry.batch, delivery_id=entry.id)
            spool.ack(entry)
            e2e = n / (time.perf_counter() - started)
            data = binary_copy.rows(
                [
                    (binary_copy.TIMESTAMPTZ, binary_copy.timestamp(time_)),
                    (binary_copy.INT4, ids),
                    (binary_copy.FLOAT8, values.reshape(-1)),
                ]
            )
            bare = n / _raw_copy(raw, "bare (time, series_id, value)", data)
            block = Block(time_, EXPERT_TOKENS.name, ids, values.reshape(-1))
            columns = "blocks (time, run_id, name, series_ids, series_values)"
            block_rate = n / _raw_copy(raw, columns, block_copy_data(run, [block]))
            if not i:
                first_window_s = n / e2e
            else:
                end_to_end.append(e2e)
                raw_copy.append(bare)
                raw_copy_block.append(block_rate)
    finally:
        spool.close()
        raw.close()
        store.close()
    return DenseIngest(n, end_to_end, raw_copy, raw_copy_block, first_window_s)


def _raw_copy(connection: psycopg.Connection[Any], columns: str, data: bytes) -> float:
    """Seconds to COPY `data` into `columns` (a table and its columns) and commit."""
    started = time.perf_counter()
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY {columns} FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.write(data)
    connection.commit()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--naive-samples", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=64)
    parser.add_argument("--experts", type=int, default=256)
    parser.add_argument("--slots", type=int, default=MonitorConfig().entropy_slots)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--dense-only", action="store_true", help="skip the COPY/naive table")
    args = parser.parse_args()

    with scratch_database(args.pg_url) as database, tempfile.TemporaryDirectory() as scratch:
        dense = dense_ingest(
            database.url,
            args.layers,
            args.experts,
            args.slots,
            args.windows,
            Path(scratch) / "spool",
        )
        if args.dense_only:
            args.rounds = 0
        pg = Store.open(database.url)
        lite = Store.open(f"sqlite:///{Path(scratch) / 'bench.db'}")
        rates: dict[str, list[float]] = {"copy": [], "naive": [], "sqlite": []}
        offset = 0
        for round_ in range(args.rounds + 1):  # round 0 warms caches and the series table
            copy_work = batches("copy", args.samples, args.batch, offset)
            naive_work = batches("naive", args.naive_samples, args.naive_samples, offset)
            lite_work = batches("sqlite", args.samples, args.batch, offset)
            offset += args.samples
            measured = {
                "copy": rate(pg.write, copy_work),
                "naive": rate(pg.write_naive, naive_work),
                "sqlite": rate(lite.write, lite_work),
            }
            if round_:
                for key, value in measured.items():
                    rates[key].append(value)
        pg.close()
        lite.close()

    print_dense(dense, args, database.server_version)
    if args.dense_only:
        return
    copy, naive = statistics.median(rates["copy"]), statistics.median(rates["naive"])
    print(
        f"PostgreSQL {database.server_version}, psycopg {psycopg.__version__}, "
        f"SQLAlchemy {sqlalchemy.__version__}; median of {args.rounds} rounds"
    )
    print()
    print("| path | samples per round | samples/s (min–max) | vs naive |")
    print("|---|---|---|---|")
    for label, key, n in (
        (f"PostgreSQL COPY (`Store.write`, batches of {args.batch:,})", "copy", args.samples),
        ("PostgreSQL naive (ORM object + commit per sample)", "naive", args.naive_samples),
        (f"SQLite executemany (`Store.write`, batches of {args.batch:,})", "sqlite", args.samples),
    ):
        median = statistics.median(rates[key])
        spread = f"{min(rates[key]):,.0f}–{max(rates[key]):,.0f}"
        print(f"| {label} | {n:,} | {median:,.0f} ({spread}) | {median / naive:.1f}× |")
    print()
    print(f"COPY: {copy:,.0f} samples/s (target ≥ 100,000: {'met' if copy >= 1e5 else 'MISSED'})")
    met = "met" if copy >= 10 * naive else "MISSED"
    print(f"COPY / naive: {copy / naive:.1f}× (target ≥ 10×: {met})")


def print_dense(dense: DenseIngest, args: argparse.Namespace, version: str) -> None:
    print(
        f"PostgreSQL {version}; dense windows of {args.layers} × {args.experts} × "
        f"{args.slots} = {dense.samples_per_window:,} samples; median of {args.windows}"
    )
    print()
    print("| path | samples/s (min–max) |")
    print("|---|---|")
    for label, rates in (
        ("end to end (Family → spool → `Store.write`)", dense.end_to_end),
        (
            "raw binary COPY of the block into a table like `sample_blocks` (its index)",
            dense.raw_copy_block,
        ),
        ("raw binary COPY into a bare table (no index)", dense.raw_copy),
    ):
        spread = f"{min(rates):,.0f}–{max(rates):,.0f}"
        print(f"| {label} | {statistics.median(rates):,.0f} ({spread}) |")
    print()
    print("\n".join(dense.verdicts()))
    print()


if __name__ == "__main__":
    main()
