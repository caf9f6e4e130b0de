"""Delivery and its spool: nothing waits for the database, nothing is lost, order holds."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pg_cluster import PgCluster
from prometheus_server import free_port

from observe.errors import ObserveError
from observe.store.delivery import Delivery
from observe.store.engine import connect
from observe.store.records import Batch, DriftResult, Sample
from observe.store.spool import Spool
from observe.store.writer import Store

T0 = datetime(2025, 1, 1, tzinfo=UTC)
METRIC = "observe_moe_routing_entropy"
FAST_RETRY = {"retry_initial_s": 0.05, "retry_max_s": 0.3}


def batch(index: int, rows: int = 5, run: str = "d") -> Batch:
    """Batch `index`: `rows` samples whose value is the index."""
    return Batch(
        run,
        samples=tuple(
            Sample(
                T0 + timedelta(seconds=index, milliseconds=i),
                METRIC,
                {"run": run, "layer": str(i)},
                float(index),
            )
            for i in range(rows)
        ),
    )


def dead_url() -> str:
    return f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/observe"


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """A bound on waiting, after which the test fails as hung; never a speed check."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class HungStore:
    """A PostgreSQL address whose server takes connections and never answers, as a hung
    database does. libpq waits for it CONNECT_TIMEOUT_S, longer than any wait_for here."""

    CONNECT_TIMEOUT_S = 60

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        port = self._listener.getsockname()[1]
        self.url = (
            f"postgresql://postgres@127.0.0.1:{port}/observe"
            f"?connect_timeout={self.CONNECT_TIMEOUT_S}"
        )

    @property
    def connections(self) -> int:
        """Connection attempts that reached the server."""
        return len(self._accepted)

    def close(self) -> None:
        """Hangs up: a client still waiting gets an error at once."""
        self._stop.set()
        self._thread.join()
        for connection in self._accepted:
            connection.close()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                self._accepted.append(self._listener.accept()[0])
            except TimeoutError:
                continue


@pytest.fixture
def hung_store() -> Iterator[HungStore]:
    store = HungStore()
    yield store
    store.close()


def in_thread(call: Callable[[], object]) -> threading.Thread:
    """Runs `call` on a thread of its own, so a test can bound how long it waits for it."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def delivered(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Batch indices in the order their writes committed."""
    committed: list[float] = []
    original = Store.write

    def spy(self: Store, batch: Batch, **kwargs: Any) -> None:
        original(self, batch, **kwargs)
        committed.append(batch.samples[0].value)

    monkeypatch.setattr(Store, "write", spy)
    return committed


def stored_counts(url: str, run: str) -> dict[float, int]:
    engine = connect(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT value, count(*) FROM samples JOIN series ON series.id = series_id "
                    "WHERE run_id = :run GROUP BY value"
                ),
                {"run": run},
            )
            return {float(value): int(n) for value, n in rows}
    finally:
        engine.dispose()


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def closing() -> Iterator[list[Delivery]]:
    """Deliveries to close after the test, whatever happens."""
    opened: list[Delivery] = []
    yield opened
    for delivery in opened:
        delivery.close(timeout_s=1)


def test_a_hung_store_never_makes_submit_wait(
    hung_store: HungStore, spool_dir: Path, closing: list[Delivery]
) -> None:
    delivery = Delivery(hung_store.url, spool_dir, **FAST_RETRY)
    closing.append(delivery)
    delivery.submit(batch(0))
    wait_for(lambda: hung_store.connections == 1)  # the delivery thread hangs in it
    submitting = in_thread(lambda: [delivery.submit(batch(i)) for i in range(1, 20)])
    wait_for(lambda: not submitting.is_alive())
    # All spooled while the one connection attempt, the delivery thread's, still hangs:
    # submit neither waited for it nor tried one of its own.
    stats = delivery.stats()
    assert stats.spooled_samples == 100
    assert (stats.exports_attempted, stats.exports_failed) == (1, 0)
    assert hung_store.connections == 1
    assert list(spool_dir.glob("segment-*.jsonl"))


def test_a_refusing_store_is_retried_and_the_batches_wait(
    spool_dir: Path, closing: list[Delivery]
) -> None:
    delivery = Delivery(dead_url(), spool_dir, **FAST_RETRY)
    closing.append(delivery)
    for i in range(20):
        delivery.submit(batch(i))
    wait_for(lambda: delivery.stats().exports_failed >= 2)
    stats = delivery.stats()
    assert stats.spooled_samples == 100 and stats.exports_attempted == stats.exports_failed


def test_close_gives_up_on_a_hung_store_and_keeps_the_batch(
    hung_store: HungStore, spool_dir: Path
) -> None:
    delivery = Delivery(hung_store.url, spool_dir, **FAST_RETRY)
    delivery.submit(batch(0))
    wait_for(lambda: hung_store.connections == 1)
    closing = in_thread(lambda: delivery.close(timeout_s=1.0))
    wait_for(lambda: not closing.is_alive())
    # close() returned while the delivery thread's attempt still hung: it gave up on it.
    stats = delivery.stats()
    assert (stats.exports_attempted, stats.exports_failed) == (1, 0)
    assert Spool(spool_dir, 1 << 20).pending_rows == 5  # still on disk for next time


def test_a_full_spool_drops_counts_and_logs_once(
    spool_dir: Path, closing: list[Delivery], caplog: pytest.LogCaptureFixture
) -> None:
    delivery = Delivery(dead_url(), spool_dir, max_spool_bytes=4096, **FAST_RETRY)
    closing.append(delivery)
    with caplog.at_level(logging.WARNING, logger="observe"):
        for i in range(40):
            delivery.submit(batch(i))
    stats = delivery.stats()
    assert stats.dropped_samples > 0
    assert stats.spooled_samples + stats.dropped_samples == 200
    # What the spool took is what the store gets; the dropped rows are not in it.
    assert stats.accepted_samples == stats.spooled_samples
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full) == 1


def test_the_store_going_away_and_back_loses_nothing(
    throwaway_pg: PgCluster, spool_dir: Path, closing: list[Delivery], delivered: list[float]
) -> None:
    url = throwaway_pg.url()
    delivery = Delivery(url, spool_dir, **FAST_RETRY)
    closing.append(delivery)
    for i in range(40):
        delivery.submit(batch(i, rows=500, run="spool-outage"))
    # Stop while batches are still being written, so some writes die midway.
    wait_for(lambda: len(delivered) >= 5)
    throwaway_pg.stop()
    try:
        for i in range(40, 50):
            delivery.submit(batch(i, rows=500, run="spool-outage"))
        wait_for(lambda: delivery.stats().exports_failed >= 2)
        assert delivery.stats().spooled_samples >= 10 * 500
    finally:
        throwaway_pg.start()
    for i in range(50, 55):
        delivery.submit(batch(i, rows=500, run="spool-outage"))
    wait_for(lambda: delivery.stats().spooled_samples == 0, timeout_s=30)
    delivery.close()
    assert delivered == [float(i) for i in range(55)]
    assert stored_counts(url, "spool-outage") == {float(i): 500 for i in range(55)}


def test_a_new_delivery_replays_what_an_earlier_one_left(
    spool_dir: Path, tmp_path: Path, delivered: list[float]
) -> None:
    first = Delivery(dead_url(), spool_dir, **FAST_RETRY)
    for i in range(6):
        first.submit(batch(i))
    first.close(timeout_s=0.5)

    url = f"sqlite:///{tmp_path / 'store.db'}"
    second = Delivery(url, spool_dir, **FAST_RETRY)
    assert second.stats().spooled_samples == 30
    second.submit(batch(6))
    wait_for(lambda: second.stats().spooled_samples == 0)
    second.close()
    assert delivered == [float(i) for i in range(7)]
    assert stored_counts(url, "d") == {float(i): 5 for i in range(7)}


def test_a_batch_the_store_refuses_is_set_aside(
    spool_dir: Path, tmp_path: Path, delivered: list[float]
) -> None:
    delivery = Delivery(f"sqlite:///{tmp_path / 'store.db'}", spool_dir, **FAST_RETRY)
    delivery.submit(batch(0))
    # Too big for a 64-bit column: the database is fine, these rows never will be.
    huge = DriftResult(datetime.now(UTC), 0, "m", 0.1, None, False, 2**70, 2**70, None, {})
    delivery.submit(Batch("d", drift_results=(huge,)))
    delivery.submit(batch(1))
    wait_for(lambda: delivery.stats().spooled_samples == 0)
    delivery.close()
    assert delivery.stats().rejected_samples == 1
    assert (spool_dir / "rejected.jsonl").read_text().count("\n") == 1
    assert delivered == [0.0, 1.0]


def test_consumed_segments_leave_the_disk(spool_dir: Path) -> None:
    spool = Spool(spool_dir, 4 * 1024 * 1024)
    for i in range(12):
        assert spool.append(batch(i, rows=200))
    assert len(list(spool_dir.glob("segment-*.jsonl"))) > 1
    while (entry := spool.peek()) is not None:
        spool.ack(entry)
    spool.append(batch(12))
    assert spool.peek() is not None
    assert len(list(spool_dir.glob("segment-*.jsonl"))) == 1
    spool.close()


def test_the_spool_survives_a_torn_last_line(spool_dir: Path) -> None:
    spool = Spool(spool_dir, 1 << 20)
    assert spool.append(batch(0)) and spool.append(batch(1))
    spool.close()
    [segment] = spool_dir.glob("segment-*.jsonl")
    with open(segment, "ab") as f:
        f.write(b'{"id":"0123","rows":5,"batch":{"run_')  # a crash mid-append
    spool = Spool(spool_dir, 1 << 20)
    assert spool.pending_rows == 10
    first = spool.peek()
    assert first is not None and first.batch == batch(0)
    spool.ack(first)
    second = spool.peek()
    assert second is not None and second.batch == batch(1)
    spool.ack(second)
    assert spool.peek() is None and spool.pending_rows == spool.pending_bytes == 0
    spool.close()


def test_one_spool_directory_serves_one_delivery(spool_dir: Path) -> None:
    spool = Spool(spool_dir, 1 << 20)
    with pytest.raises(ObserveError, match="in use by another Delivery"):
        Spool(spool_dir, 1 << 20)
    spool.close()
    Spool(spool_dir, 1 << 20).close()


@pytest.mark.slow
def test_sigterm_flushes_then_terminates(spool_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import logging, time
        from pathlib import Path
        from observe.store.delivery import Delivery, install_sigterm_flush
        from observe.store.records import Batch, DriftResult, Sample
        from datetime import UTC, datetime

        logging.basicConfig()
        delivery = Delivery({dead_url()!r}, Path({str(spool_dir)!r}), retry_initial_s=5)
        install_sigterm_flush(delivery, timeout_s=1.0)
        delivery.submit(Batch("s", (Sample(datetime.now(UTC), "m", {{}}, 1.0),)))
        print("ready", flush=True)
        # Short sleeps: a signal that lands between CPython's last check and the start of one
        # long sleep is handled only when that sleep ends (a race in the interpreter, not here).
        for _ in range(600):
            time.sleep(0.1)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=20)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGTERM  # the default action, after the flush
    assert "stay spooled" in stderr  # close() ran and said what it left
    assert Spool(spool_dir, 1 << 20).pending_rows == 1
