"""Batches on disk, in order, until the store has them.

Each batch is one JSON line, `{"id": ..., "rows": ..., "batch": ...}`, appended to the
newest segment file (`segment-NNNNNNNNNNNN.jsonl`) and fsync'd before `append` returns, so a
crash right after loses nothing. `ack.json` records how far the store has confirmed;
segments wholly before it are deleted. The ack is not fsync'd: after a crash it may lag,
and batches it missed are sent again, which the store ignores by their id. Batches the
store refuses outright go to `rejected.jsonl` rather than blocking the spool forever.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from observe.errors import ObserveError
from observe.store.records import Batch

logger = logging.getLogger("observe")

MiB = 1024 * 1024
_SEGMENT = re.compile(r"segment-(\d{12})\.jsonl")
_HEADER = re.compile(rb'\{"id":"([0-9a-f]{32})","rows":(\d+),')


@dataclass(frozen=True)
class Entry:
    """One spooled batch and where its line ends."""

    id: str
    batch: Batch
    segment: int
    end: int
    size: int


class SpoolInUse(ObserveError):
    """Another process (or Delivery) holds the spool directory."""


class Spool:
    """A bounded on-disk FIFO of batches; one process at a time per directory."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        # Small bounds get small segments, so consumed data leaves the disk soon.
        self.segment_bytes = max(64 * 1024, min(8 * MiB, max_bytes // 32))
        self.rejected_path = directory / "rejected.jsonl"
        # Reentrant: a SIGTERM handler may close the spool while its own thread appends.
        self._lock = threading.RLock()
        self._closed = False
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(directory / "lock", "wb")  # noqa: SIM115 (held until close)
        except OSError as exc:
            raise ObserveError(
                f"cannot use {directory} as the spool: {exc}. Point the spool at a writable "
                "directory"
            ) from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolInUse(
                f"the spool {directory} is in use by another Delivery: give each process "
                "its own spool directory"
            ) from None
        self._recover()

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def append(self, batch: Batch) -> bool:
        """Stores `batch` durably; False, and nothing stored, when the spool is full and
        `batch` is droppable (a run's end and its kept samples always fit)."""
        line = (
            f'{{"id":"{uuid.uuid4().hex}","rows":{len(batch)},"batch":{batch.to_json()}}}\n'
        ).encode()
        with self._lock:
            if self._closed:
                return False
            if batch.droppable and self._pending_bytes + len(line) > self.max_bytes:
                return False
            if self._write_size >= self.segment_bytes:
                self._rotate()
            try:
                self._writer.write(line)
                os.fsync(self._writer.fileno())
            except OSError:
                # A disk that filled up mid-line must not leave half a line for the next.
                self._writer.truncate(self._write_size)
                raise
            self._write_size += len(line)
            self._pending_bytes += len(line)
            self._pending_rows += len(batch)
            return True

    def peek(self) -> Entry | None:
        """The oldest batch the store has not confirmed, or None."""
        with self._lock:
            while not self._closed:
                line = self._read_line()
                if line is None:
                    return None
                segment, offset = self._ack
                try:
                    data = json.loads(line)
                    batch = Batch.from_dict(data["batch"])
                    return Entry(data["id"], batch, segment, offset + len(line), len(line))
                except (ValueError, KeyError, TypeError, ObserveError) as exc:
                    logger.error(
                        "observe: unreadable line in the spool (%s), moved to %s",
                        exc,
                        self.rejected_path,
                    )
                    self._reject_line(line)
            return None

    def ack(self, entry: Entry) -> None:
        """The store has committed `entry`: it leaves the spool."""
        with self._lock:
            if self._closed or self._ack != (entry.segment, entry.end - entry.size):
                return
            self._advance(entry.segment, entry.end, entry.size, len(entry.batch))

    def reject(self, entry: Entry) -> None:
        """The store refused `entry`: keep it aside in rejected.jsonl and move on."""
        with self._lock:
            if self._closed:
                return
            line = self._read_line()
            if line is not None and self._ack == (entry.segment, entry.end - entry.size):
                self._reject_line(line)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
            self._lock_file.close()

    def _recover(self) -> None:
        """Picks up what an earlier process left: the ack, the segments, a torn last line."""
        segments = sorted(
            int(m[1]) for p in self.directory.iterdir() if (m := _SEGMENT.fullmatch(p.name))
        )
        ack = self._read_ack()
        if ack is None or not segments or ack[0] not in segments:
            ack = (segments[0] if segments else 1, 0)
        for segment in segments:
            if segment < ack[0]:
                self._path(segment).unlink()
        segments = [s for s in segments if s >= ack[0]] or [ack[0]]
        last = self._path(segments[-1])
        if last.exists():
            # A crash mid-append leaves a line without its newline: it was never confirmed.
            data = last.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(last, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        self._open_writer(segments[-1])
        if ack[1] > self._size(ack[0]):
            ack = (ack[0], 0)
        self._ack = ack
        self._pending_bytes = self._pending_rows = 0
        for segment in segments:
            with open(self._path(segment), "rb") as f:
                f.seek(ack[1] if segment == ack[0] else 0)
                for line in f:
                    self._pending_bytes += len(line)
                    header = _HEADER.match(line)
                    self._pending_rows += int(header[2]) if header else 0

    def _read_line(self) -> bytes | None:
        # Moves past segments read to their end, as long as a newer one exists.
        while True:
            segment, offset = self._ack
            if offset < self._size(segment):
                with open(self._path(segment), "rb") as f:
                    f.seek(offset)
                    return f.readline()
            if segment == self._write_segment:
                return None
            self._path(segment).unlink(missing_ok=True)
            self._ack = (segment + 1, 0)
            self._write_ack()

    def _advance(self, segment: int, end: int, size: int, rows: int) -> None:
        self._ack = (segment, end)
        self._pending_bytes -= size
        self._pending_rows -= rows
        self._write_ack()

    def _reject_line(self, line: bytes) -> None:
        with open(self.rejected_path, "ab") as f:
            f.write(line)
            os.fsync(f.fileno())
        header = _HEADER.match(line)
        segment, offset = self._ack
        self._advance(segment, offset + len(line), len(line), int(header[2]) if header else 0)

    def _rotate(self) -> None:
        self._writer.close()
        self._open_writer(self._write_segment + 1)
        # The new file's name must survive a crash too.
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _open_writer(self, segment: int) -> None:
        # Unbuffered: each line reaches the file in one write() call.
        self._writer: BinaryIO = open(self._path(segment), "ab", buffering=0)  # noqa: SIM115
        self._write_segment = segment
        self._write_size = self._writer.tell()

    def _read_ack(self) -> tuple[int, int] | None:
        try:
            data = json.loads((self.directory / "ack.json").read_text())
            return int(data["segment"]), int(data["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_ack(self) -> None:
        temporary = self.directory / "ack.json.tmp"
        temporary.write_text(json.dumps({"segment": self._ack[0], "offset": self._ack[1]}))
        temporary.replace(self.directory / "ack.json")

    def _size(self, segment: int) -> int:
        if segment == self._write_segment:
            return self._write_size
        try:
            return self._path(segment).stat().st_size
        except FileNotFoundError:
            return 0

    def _path(self, segment: int) -> Path:
        return self.directory / f"segment-{segment:012d}.jsonl"
