"""Stop sequences over the byte tokenizer's ids: what of a generated stream may be shown.

Matching is on UTF-8 bytes (ids 0-255), so a stop sequence is found exactly however the
model split it into tokens; special ids other than EOS decode to nothing and are passed
over. The output ends just before the earliest-starting occurrence of any stop sequence,
as `min(text.find(stop))` would cut the finished text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from observe.workload.job_config import check_stops
from observe.workload.tokenizer import ByteTokenizer


@dataclass(frozen=True)
class _Match:
    # Ids fed before the stop sequence's first byte, and through its last byte.
    start: int
    end: int


class StopScanner:
    """Feeds on generated ids and releases those that cannot be part of a stop sequence.

    At most (longest stop's byte length − 1) trailing bytes are held back, those that could
    still begin a stop sequence. Once a stop sequence matched or EOS arrived, nothing more is
    released, and EOS itself never is.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        check_stops(stops)
        self._stops = [stop.encode() for stop in stops]
        self._fed = 0
        # Ids fed but not yet released; the first of them is id number `_released`.
        self._held: list[int] = []
        self._released = 0
        # A stop sequence found, waiting on any earlier-starting one still being fed.
        self._match: _Match | None = None
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """Whether a stop sequence or EOS ended the output."""
        return self._stopped

    @property
    def consumed(self) -> int:
        """Ids the output used up: through the stop sequence's last byte, through EOS, or
        every id fed."""
        if self._stopped and self._match is not None:
            return self._match.end
        return self._fed

    def feed(self, ids: Sequence[int]) -> list[int]:
        """The ids, of those fed so far, that are now safe to show."""
        released: list[int] = []
        for id_ in ids:
            if self._stopped:
                break
            self._fed += 1
            if id_ == ByteTokenizer.EOS_ID:
                self._stopped = True
                released += self._end()
                break
            self._held.append(id_)
            at, data = self._held_bytes()
            if id_ < 256:
                self._find_match(at, data)
            released += self._settle(at, data)
        return released

    def finish(self) -> list[int]:
        """The held-back ids, once generation ended; none after a stop sequence or EOS."""
        if self._stopped:
            return []
        self._stopped = self._match is not None
        return self._end()

    def _held_bytes(self) -> tuple[list[int], bytes]:
        """The id number of each held byte, and those bytes."""
        at = [self._released + k for k, id_ in enumerate(self._held) if id_ < 256]
        return at, bytes(self._held[k - self._released] for k in at)

    def _find_match(self, at: list[int], data: bytes) -> None:
        # Bytes released earlier began no stop sequence, so a match lies within the held ones.
        for stop in self._stops:
            if data.endswith(stop):
                start = at[len(data) - len(stop)]
                if self._match is None or start < self._match.start:
                    self._match = _Match(start, self._fed)

    def _settle(self, at: list[int], data: bytes) -> list[int]:
        # The earliest held byte from which the bytes so far could still become a stop.
        open_start = next(
            (
                at[j]
                for j in range(len(data))
                if any(len(s) > len(data) - j and s.startswith(data[j:]) for s in self._stops)
            ),
            None,
        )
        if self._match is not None and (open_start is None or open_start >= self._match.start):
            # No stop sequence starting earlier can still complete (one starting at the same
            # byte would cut the output there too): this one ends the output.
            self._stopped = True
            return self._release(self._match.start)
        return self._release(self._fed if open_start is None else open_start)

    def _end(self) -> list[int]:
        # Nothing more comes, so a found stop sequence is final and any other held id is shown.
        return self._release(self._fed if self._match is None else self._match.start)

    def _release(self, until: int) -> list[int]:
        """Releases the held ids numbered below `until`; after a stop, drops the rest."""
        n = until - self._released
        released, self._held = self._held[:n], self._held[n:]
        self._released = until
        if self._stopped:
            self._held = []
        return released
