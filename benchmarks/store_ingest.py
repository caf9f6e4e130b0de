"""Samples/s into the SQL store: COPY against one ORM object per sample, side by side.

Each round writes `--samples` samples to PostgreSQL with `Store.write` (binary COPY, batches
of `--batch`), `--naive-samples` with `Store.write_naive` (an ORM object, `session.add` and
a commit per sample), and `--samples` to SQLite with `Store.write` (executemany). Rates are
medians over the rounds; the ratio is COPY's rate over the naive rate. Each run uses a
database of its own on the server, dropped at the end.

    .venv/bin/python benchmarks/store_ingest.py [--pg-url URL] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import sqlalchemy

from observe.catalogue import EXPERT_TOKENS
from observe.store.records import Batch, Sample
from observe.store.writer import Store

LAYERS, EXPERTS = 4, 32  # the `bench` config: 128 series, as the hooks export them


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--naive-samples", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    server = sqlalchemy.make_url(args.pg_url)
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"observe_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        version = connection.execute("SHOW server_version").fetchone()
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as scratch:
            pg = Store.open(server.set(database=name).render_as_string(hide_password=False))
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
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    copy, naive = statistics.median(rates["copy"]), statistics.median(rates["naive"])
    print(
        f"PostgreSQL {version[0] if version else '?'}, psycopg {psycopg.__version__}, "
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


if __name__ == "__main__":
    main()
