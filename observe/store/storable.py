"""What text the store keeps verbatim on both engines, and the words for what it cannot.

Quotes, newlines, SQL, markup, any Unicode and any length go in and come out unchanged: rows
are written through bound parameters and COPY, never spliced into SQL. Two things cannot:
NUL and lone surrogates (from a file name that is not UTF-8), which PostgreSQL's text and
JSONB refuse, so SQLite refuses them too and a store never depends on its engine. Run ids
and model names, which key B-tree indexes, are also bounded (`MAX_IDENTIFIER_CHARS`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from observe.catalogue import MAX_IDENTIFIER_CHARS
from observe.errors import ObserveError

# Of a refused value, this much is shown in its message.
_SHOWN_CHARS = 40


def problem(what: str, value: str, *, identifier: bool = False) -> str | None:
    """Why the store cannot keep `value` (a `what`: "model name", "label 'layer'"), or None.
    An `identifier` is also bounded in length."""
    if "\x00" in value:
        return (
            f"{what} {_shown(value)} holds a NUL character, which the store cannot keep: remove it"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"{what} {_shown(value)} is not valid Unicode (a lone surrogate, as from a file "
            "name that is not UTF-8), which the store cannot keep: pass UTF-8 text"
        )
    if identifier and len(value) > MAX_IDENTIFIER_CHARS:
        return (
            f"{what} {_shown(value)} has {len(value):,} characters, over the "
            f"{MAX_IDENTIFIER_CHARS} a run id or model name may have: shorten it"
        )
    return None


def labels_problem(labels: Mapping[str, str]) -> str | None:
    """Why the store cannot keep a series with `labels`, or None."""
    # Nearly every label set is fine: one check of them all, a search only on a failure
    # (a 64 × 256 × 16 family's first window checks 262,144 sets).
    joined = "".join(itertools.chain.from_iterable(labels.items()))
    if "\x00" not in joined and joined.isascii():
        return None
    for name, value in labels.items():
        found = problem("label name", name) or problem(f"label {name!r}", value)
        if found is not None:
            return found
    return None


def check(what: str, value: str, *, identifier: bool = False) -> None:
    """Raises an ObserveError saying why the store cannot keep `value`, if it cannot."""
    found = problem(what, value, identifier=identifier)
    if found is not None:
        raise ObserveError(found)


def _shown(value: str) -> str:
    head = repr(value[:_SHOWN_CHARS])
    return head if len(value) <= _SHOWN_CHARS else f"{head}…"
