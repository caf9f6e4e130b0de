"""Database URLs and engines: the default SQLite file, PostgreSQL through psycopg 3.

Every message and log line shows URLs through `mask_url`, so a password never leaves here.
Every PostgreSQL connection is bounded (`_connect_args`): connecting, a network that stops
answering, and a statement that never ends. None of these bounds a query on an open
connection whose peer still acknowledges bytes but answers nothing (a stalled proxy):
psycopg waits for it forever, so whoever must return in time (a session's close) leaves
such calls to daemon threads it waits for until a `Deadline` only (delivery, the alert
evaluator).
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from observe.errors import ObserveError

DEFAULT_SQLITE_PATH = Path(".observe/observe.db")
# Where the user sets the URL; named in every connection error.
URL_HINT = "OBSERVE_DB_URL or --db-url"
# Each bound below applies unless the URL's query sets the same parameter (an `options`
# of its own goes after observe's, and libpq applies the last `-c` of a name).
# libpq waits this long for the whole start-up (TCP connect, TLS, authentication) of a
# server that does not answer.
CONNECT_TIMEOUT_S = 5
# TCP keepalives: an idle pooled connection whose server vanished (a partition drops the
# probes) is found dead after IDLE + COUNT x INTERVAL = 25 s, instead of the system's two
# hours, so a checkout's ping fails rather than waits.
KEEPALIVES_IDLE_S = 10
KEEPALIVES_INTERVAL_S = 5
KEEPALIVES_COUNT = 3
# Bytes sent that the server's host has not acknowledged within this end the connection:
# it bounds a write (a COPY) into a partition. 30 s without one ACK is a dead network, not
# a slow one, and is above the keepalives' 25 s, which it would otherwise cut short.
TCP_USER_TIMEOUT_MS = 30_000
# The server cancels a statement running this long, freeing the connection and its locks;
# a cancelled write is retried by delivery like a lost connection. The store's biggest
# statements, a COPY of one export's batch and the CLI's reads over a large table
# (`observe runs` counts every sample), take seconds: five minutes never cuts them short,
# and a command that runs past it says how to raise it. Migrations lift it (`migrate.py`).
# No lock_timeout: waiting for a lock is part of a statement, bounded by this already, and
# a shorter bound would fail a run's start queued behind another rank's migration.
STATEMENT_TIMEOUT_MS = 300_000
# A checkout waits this long for a free pooled connection. observe's engines serve a
# thread or two each, well within the pool's five, so a wait means connections held by
# calls stuck on the network: fail instead of queueing behind them.
POOL_TIMEOUT_S = 10
SQLITE_BUSY_TIMEOUT_MS = 10_000
# How long opening a SQLite store waits for a file another process holds locked.
SQLITE_OPEN_TIMEOUT_S = 60.0

# Greedy up to the last @ of the URL: an unescaped @, / or ? in a password stays masked
# (a path or query holding an @ is masked too, which errs the safe way).
_USERINFO = re.compile(r"(?P<head>://[^:/?#@]*):.*@", re.DOTALL)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)[^&#]*", re.IGNORECASE)


def resolve_url(url: str | None) -> str:
    """The URL observe connects to: None is the SQLite file under `.observe/`."""
    if url is None:
        DEFAULT_SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{DEFAULT_SQLITE_PATH.resolve()}"
    parsed = _parse(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        # COPY, the fast path for samples, goes through psycopg 3.
        if driver not in ("", "psycopg"):
            raise ObserveError(
                f"unsupported driver {driver!r} in {mask_url(url)}: observe's store uses "
                "psycopg 3; write the URL as postgresql://... or postgresql+psycopg://..."
            )
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        return url
    raise ObserveError(
        f"unsupported database {backend!r} in {mask_url(url)}: use postgresql://USER@HOST/DB "
        f"or sqlite:///PATH in {URL_HINT}"
    )


def mask_url(url: str | URL) -> str:
    """`url` with its password replaced by ***, also when it does not parse."""
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    url = _USERINFO.sub(r"\g<head>:***@", url)
    return _QUERY_PASSWORD.sub(r"\g<head>***", url)


def connect(url: str | None) -> Engine:
    """An engine for `url`, with the connection checked now rather than at first use."""
    resolved = resolve_url(url)
    parsed = _parse(resolved)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, pool_pre_ping=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        engine = create_engine(
            parsed,
            pool_pre_ping=True,
            pool_timeout=POOL_TIMEOUT_S,
            connect_args=_connect_args(parsed),
        )
    # SQLite: processes opening one new file together (the ranks of a job) find it locked
    # while one of them sets it up, for longer than a statement's busy timeout on a busy
    # machine; try again within a bound.
    deadline = time.monotonic() + SQLITE_OPEN_TIMEOUT_S
    while True:
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
            return engine
        except DBAPIError as exc:
            locked = isinstance(exc.orig, sqlite3.OperationalError) and "locked" in str(exc.orig)
            if not (locked and time.monotonic() < deadline):
                engine.dispose()
                raise connection_error(parsed, exc) from None
            time.sleep(0.1)


def connection_error(url: URL, exc: BaseException) -> ObserveError:
    """Says why `url` could not be used and what to change, without its password."""
    masked = mask_url(url)
    reason = _scrub(str(getattr(exc, "orig", None) or exc), url.password)
    first = summarise(url, exc)
    lowered = reason.lower()
    if url.get_backend_name() == "sqlite":
        return ObserveError(
            f"cannot open the SQLite database {masked}: {first}. Check that its directory "
            f"exists and is writable, or set {URL_HINT}"
        )
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return ObserveError(
            f"the database at {masked} refused the password of user {url.username!r}: fix the "
            f"user name or password in {URL_HINT}"
        )
    if "role" in lowered and "does not exist" in lowered:
        return ObserveError(
            f"the database at {masked} has no user {url.username!r}: fix the user name in "
            f"{URL_HINT}, or create the user (createuser {url.username})"
        )
    if "database" in lowered and "does not exist" in lowered:
        return ObserveError(
            f"database {url.database!r} does not exist at {masked}: create it "
            f"(createdb {url.database}) or fix the database name in {URL_HINT}"
        )
    if "statement timeout" in lowered:
        return ObserveError(
            f"the database at {masked} cancelled a statement that ran past observe's "
            f"statement_timeout ({STATEMENT_TIMEOUT_MS // 60_000} minutes): narrow the query "
            "(--since, --run), or raise the limit in the URL, e.g. "
            f"?options=-c%20statement_timeout%3D30min in {URL_HINT}"
        )
    if "pg_hba.conf" in lowered:
        return ObserveError(
            f"the server at {masked} does not accept this host, user or database "
            f"(pg_hba.conf): {first}. Allow it there, or change {URL_HINT}"
        )
    return ObserveError(
        f"cannot reach the database at {masked}: {first}. Check that the server is running "
        f"and the host and port are right in {URL_HINT}"
    )


def summarise(url: URL, exc: BaseException) -> str:
    """The first line of a driver's error, without the password of `url`."""
    reason = _scrub(str(getattr(exc, "orig", None) or exc), url.password).strip()
    return reason.splitlines()[0] if reason else type(exc).__name__


def _parse(url: str | URL) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        # ValueError: a port that is not a number; its message holds no password.
        reason = f" ({exc})" if isinstance(exc, ValueError) else ""
        raise ObserveError(
            f"cannot read the database URL {mask_url(str(url))!r}{reason}: write it as "
            f"postgresql://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH in {URL_HINT}"
        ) from None


def _connect_args(url: URL) -> dict[str, Any]:
    """libpq parameters bounding every wait of a PostgreSQL connection (see the constants)."""
    bounds: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": KEEPALIVES_IDLE_S,
        "keepalives_interval": KEEPALIVES_INTERVAL_S,
        "keepalives_count": KEEPALIVES_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
    }
    args = {name: value for name, value in bounds.items() if name not in url.query}
    # Sent in the start-up packet: the server applies it before the first statement.
    options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
    theirs = url.query.get("options", ())
    args["options"] = " ".join((options, *((theirs,) if isinstance(theirs, str) else theirs)))
    return args


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # The sqlite3 module opens transactions only before INSERT/UPDATE/DELETE, so DDL and
    # reads would run outside them. Turn that off here; `_sqlite_begin` opens every
    # transaction itself, which makes migrations atomic.
    dbapi_connection.isolation_level = None
    # WAL lets readers (queries, dashboards) run while the pipeline writes; the busy
    # timeout makes a second writer wait for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # SQLite ignores foreign keys unless asked; enforce them as PostgreSQL does.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # IMMEDIATE takes the write lock up front, waiting out the busy timeout. A deferred
    # transaction that reads and then writes fails at once with "database is locked" when
    # another connection wrote in between (the session's thread and the delivery thread
    # both write), since waiting could not give it a consistent snapshot.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _scrub(text: str, password: str | None) -> str:
    # Drivers may echo what they were given; never let the password through.
    return text.replace(password, "***") if password else text
