"""Getting batches into the store without making the caller wait, and without losing any.

`submit` only appends to the on-disk spool; a background thread writes spooled batches to
the store in order, retrying with backoff while it is unreachable. A batch leaves the
spool after its transaction commits, so an outage, a slow database or a restart of the
process costs nothing but delay: a later Delivery on the same spool directory replays
what is left.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from observe import priority
from observe.errors import ObserveError
from observe.store.engine import mask_url
from observe.store.records import Batch
from observe.store.spool import Entry, MiB, Spool
from observe.store.writer import Store, StoreUnavailable

logger = logging.getLogger("observe")


@dataclass(frozen=True)
class DeliveryStats:
    """Counters since this Delivery started; `spooled_samples` is what waits on disk now."""

    exports_attempted: int
    exports_failed: int
    # Rows taken into the spool: what the store holds once delivery has caught up.
    accepted_samples: int
    spooled_samples: int
    # All that waits on disk, also what has no rows: a run's end, a heartbeat.
    spooled_bytes: int
    dropped_samples: int
    # Rows of batches the store refused (not a connection problem); kept in rejected.jsonl.
    rejected_samples: int


class Delivery:
    """Spools batches and writes them to the store on a background thread."""

    def __init__(
        self,
        store_url: str | None,
        spool_dir: Path,
        *,
        max_spool_bytes: int = 256 * MiB,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        self._url = store_url
        self._spool = Spool(Path(spool_dir), max_spool_bytes)
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._store: Store | None = None
        # Reentrant: a SIGTERM handler may run close() while its thread is inside submit().
        self._lock = threading.RLock()
        self._attempted = self._failed = self._accepted = self._dropped = self._rejected = 0
        self._warned: set[str] = set()
        self._closing = False
        self._wake = threading.Event()  # something was spooled, or close() began
        self._hurry = threading.Event()  # close() began: retry now rather than after backoff
        self._stop = threading.Event()  # close() gave up waiting: exit
        self._thread = threading.Thread(target=self._run, name="observe-delivery", daemon=True)
        priority.start_background(self._thread)

    def submit(self, batch: Batch) -> None:
        """Spools `batch`; never waits for the database. A full spool drops measurements
        (counted), never a run's end or the samples it keeps (`Batch.droppable`)."""
        if batch.empty:
            return
        with self._lock:
            closing = self._closing
        if closing:
            self._drop(batch, "closed", "observe: a batch arrived after Delivery.close(): dropped")
            return
        try:
            spooled = self._spool.append(batch)
        except OSError as exc:
            self._drop(batch, "disk", "observe: cannot write the spool (%s): dropping batches", exc)
            return
        if spooled:
            with self._lock:
                self._accepted += len(batch)
            self._wake.set()
        else:
            self._drop(
                batch,
                "full",
                "observe: the spool %s is full (%.1f MiB): dropping new batches until the "
                "store catches up; they are counted in dropped_samples",
                self._spool.directory,
                self._spool.max_bytes / MiB,
            )

    def stats(self) -> DeliveryStats:
        with self._lock:
            return DeliveryStats(
                exports_attempted=self._attempted,
                accepted_samples=self._accepted,
                exports_failed=self._failed,
                spooled_samples=self._spool.pending_rows,
                spooled_bytes=self._spool.pending_bytes,
                dropped_samples=self._dropped,
                rejected_samples=self._rejected,
            )

    def close(self, timeout_s: float = 10.0) -> None:
        """Delivers what it can within `timeout_s`, then stops; the rest stays spooled."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._hurry.set()
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        self._hurry.set()
        self._wake.set()
        # A thread stuck in a database call cannot be interrupted: it is a daemon, and it
        # checks `_stop` before touching the spool again.
        self._thread.join(max(0.0, min(0.1, deadline - time.monotonic())))
        left = self._spool.pending_rows
        self._spool.close()
        if self._spool.pending_bytes:
            logger.warning(
                "observe: batches not yet in the store (%d samples) stay spooled in %s; the "
                "next Delivery on that directory sends them",
                left,
                self._spool.directory,
            )

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                self._wake.clear()
                entry = self._spool.peek()
                if entry is None:
                    if self._closing:
                        return
                    self._wake.wait()
                    continue
                error = self._attempt(entry)
                if error is None:
                    if failures:
                        logger.warning("observe: the store at %s is back", self._masked_url())
                    failures = 0
                    continue
                if failures == 0:
                    logger.warning(
                        "observe: cannot deliver to the store (%s); batches stay in %s and "
                        "are retried",
                        error,
                        self._spool.directory,
                    )
                self._backoff(failures)
                failures += 1
        except Exception:
            logger.exception("observe: delivery stopped; batches stay spooled")
        finally:
            if self._store is not None:
                self._store.close()

    def _attempt(self, entry: Entry) -> Exception | None:
        """Writes `entry`; None once it left the spool, else the error to retry after."""
        with self._lock:
            self._attempted += 1
        try:
            if self._store is None:
                self._store = Store.open(self._url)
            self._store.write(entry.batch, delivery_id=entry.id)
        except StoreUnavailable as exc:
            return self._failure(exc)
        except Exception as exc:
            if self._store is None:
                # Could not open: unreachable, refusing the login, not migrated. Retry.
                return self._failure(exc)
            # The database is up but refuses these rows: retrying would block the spool.
            with self._lock:
                self._failed += 1
                self._rejected += len(entry.batch)
            logger.error(
                "observe: the store refused a batch (%s); it was moved to %s",
                exc,
                self._spool.rejected_path,
            )
            if not self._stop.is_set():
                self._spool.reject(entry)
            return None
        # After close() gave up, the spool is closed: the batch is resent next time.
        if not self._stop.is_set():
            self._spool.ack(entry)
        return None

    def _failure(self, exc: Exception) -> Exception:
        with self._lock:
            self._failed += 1
        return exc

    def _drop(self, batch: Batch, reason: str, message: str, *args: object) -> None:
        with self._lock:
            self._dropped += len(batch)
            first = reason not in self._warned
            self._warned.add(reason)
        # Once per reason: a full spool would otherwise log at the rate batches arrive.
        if first:
            logger.warning(message, *args)

    def _backoff(self, failures: int) -> None:
        # Exponential with jitter, so many processes do not retry in step.
        delay = min(self._retry_max_s, self._retry_initial_s * 2**failures)
        if self._hurry.wait(random.uniform(delay / 2, delay)):
            self._hurry.clear()

    def _masked_url(self) -> str:
        return mask_url(self._url or "the default SQLite file")


def install_sigterm_flush(delivery: Delivery, timeout_s: float = 10.0) -> None:
    """On SIGTERM, close `delivery` (delivering within `timeout_s`), then terminate as before.

    A handler installed earlier still runs after the close; without one the process dies
    of SIGTERM as it would have. Python runs signal handlers in the main thread only, so
    this must be called from it.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ObserveError(
            "install_sigterm_flush must be called from the main thread: Python runs signal "
            "handlers only there"
        )
    previous = signal.getsignal(signal.SIGTERM)

    def flush_then_terminate(signum: int, frame: FrameType | None) -> None:
        delivery.close(timeout_s)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, flush_then_terminate)
