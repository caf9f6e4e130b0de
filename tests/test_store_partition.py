"""Every database call observe makes has a bound, and closing never waits past its deadline,
even when the network stalls: a proxy that stops forwarding but refuses nothing, where
psycopg alone would wait forever. Waits below carry bounds past which the code hung; none
is a speed check."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import ProxiedPg

from observe.alerts.background import BackgroundEvaluator
from observe.alerts.config import AlertsConfig
from observe.errors import ObserveError
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.store import engine as store_engine
from observe.store.engine import connect
from observe.store.queries import schema_checked
from observe.store.records import Batch, Sample
from observe.store.spool import Spool
from observe.store.writer import Store

# Beyond a bound of the code, what a busy machine may add before the test calls it hung.
MARGIN_S = 15.0
# A close limit short enough for the tests, long enough that a healthy close fits it.
CLOSE_TIMEOUT_S = 2.0


def in_thread(call: Callable[[], object]) -> threading.Thread:
    """Runs `call` on a daemon thread, so a test can bound how long it waits for it."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def returns_within(call: Callable[[], object], bound_s: float) -> None:
    thread = in_thread(call)
    thread.join(bound_s)
    assert not thread.is_alive(), f"still waiting after {bound_s} s: it hung"


def test_every_postgresql_connection_carries_the_bounds(pg_url: str) -> None:
    engine = connect(pg_url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "5min"
            raw = connection.connection.driver_connection
            assert raw is not None
            assert raw.info.get_parameters()["connect_timeout"] == str(
                store_engine.CONNECT_TIMEOUT_S
            )
            with socket.socket(fileno=os.dup(raw.fileno())) as sock:
                options = _tcp_options(sock)
    finally:
        engine.dispose()
    assert options == {
        "keepalive": 1,
        "idle": store_engine.KEEPALIVES_IDLE_S,
        "interval": store_engine.KEEPALIVES_INTERVAL_S,
        "count": store_engine.KEEPALIVES_COUNT,
        "user_timeout": store_engine.TCP_USER_TIMEOUT_MS,
    }


def test_bounds_the_url_sets_win_and_its_options_are_kept(pg_url: str) -> None:
    url = f"{pg_url}?keepalives_idle=42&options=-c%20statement_timeout%3D7s%20-c%20work_mem%3D8MB"
    engine = connect(url)
    try:
        with engine.connect() as connection:
            settings = [
                connection.exec_driver_sql(f"SHOW {name}").scalar()
                for name in ("statement_timeout", "work_mem")
            ]
            raw = connection.connection.driver_connection
            assert raw is not None
            with socket.socket(fileno=os.dup(raw.fileno())) as sock:
                idle = _tcp_options(sock)["idle"]
    finally:
        engine.dispose()
    assert settings == ["7s", "8MB"]
    assert idle == 42


def test_a_statement_past_the_timeout_is_explained(pg_url: str) -> None:
    engine = connect(f"{pg_url}?options=-c%20statement_timeout%3D50ms")
    try:
        with (
            pytest.raises(ObserveError, match="statement_timeout") as raised,
            schema_checked(engine),
            engine.connect() as connection,
        ):
            connection.exec_driver_sql("SELECT pg_sleep(5)")
    finally:
        engine.dispose()
    assert "narrow the query" in str(raised.value)


def test_opening_a_session_on_a_stalled_database_fails_within_the_connect_timeout(
    stallable_pg: ProxiedPg, tmp_path: Path
) -> None:
    stallable_pg.proxy.stall()
    raised: list[BaseException] = []

    def open_session() -> None:
        try:
            MonitoringSession(_settings(tmp_path, stallable_pg.url), model="tiny").close()
        except ObserveError as exc:
            raised.append(exc)

    returns_within(open_session, store_engine.CONNECT_TIMEOUT_S + MARGIN_S)
    assert stallable_pg.proxy.connections >= 1  # it reached the proxy, which never answered
    [error] = raised
    assert "cannot reach the database" in str(error)
    assert "timeout" in str(error)


def test_observe_runs_on_a_stalled_database_exits_2_with_the_reason(
    stallable_pg: ProxiedPg,
) -> None:
    stallable_pg.proxy.stall()
    command = [sys.executable, "-c", "from observe.cli import main; main()", "runs"]
    done = subprocess.run(
        [*command, "--db-url", stallable_pg.url],
        capture_output=True,
        text=True,
        timeout=store_engine.CONNECT_TIMEOUT_S + MARGIN_S,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot reach the database" in done.stderr
    assert "Traceback" not in done.stderr


def test_closing_a_store_never_waits_on_a_stalled_connection(stallable_pg: ProxiedPg) -> None:
    store = Store.open(stallable_pg.url)  # leaves a connection in the pool
    stallable_pg.proxy.stall()
    returns_within(store.close, MARGIN_S)


def test_the_alert_evaluator_shuts_down_within_its_deadline_on_a_stall(
    stallable_pg: ProxiedPg,
) -> None:
    Store.open(stallable_pg.direct_url).close()  # migrated
    rules = AlertsConfig().alert_rules()
    # No evaluation of its own before shutdown; the test's leaves a pooled connection.
    evaluator = BackgroundEvaluator(rules, stallable_pg.url, "stalled-run", interval_s=3600)
    evaluator.evaluate(datetime.now(UTC))
    stallable_pg.proxy.stall()
    # The last evaluation waits on the stalled connection, on the evaluator's thread.
    returns_within(lambda: evaluator.shutdown(CLOSE_TIMEOUT_S), CLOSE_TIMEOUT_S + MARGIN_S)


def test_a_session_closes_within_close_timeout_s_on_a_stall_and_keeps_what_is_spooled(
    stallable_pg: ProxiedPg, tmp_path: Path
) -> None:
    session = MonitoringSession(_settings(tmp_path, stallable_pg.url), model="tiny")
    stallable_pg.proxy.stall()
    batch = Batch(
        session.run_id,
        samples=tuple(
            Sample(datetime.now(UTC), "observe_test_gauge", {"i": str(i)}, float(i))
            for i in range(10)
        ),
    )
    session.delivery.submit(batch)
    # Every store call of the close (the run's hidden states, its end, the last alert
    # evaluation, delivery) meets the stall; together they wait until one deadline.
    returns_within(session.close, CLOSE_TIMEOUT_S + MARGIN_S)
    [slot] = (tmp_path / "spool").glob("*/slot-*")
    spool = Spool(slot, 1 << 30)
    try:
        assert spool.pending_rows >= len(batch)
    finally:
        spool.close()


def _settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        db_url=db_url,
        prometheus_port=None,
        spool_dir=tmp_path / "spool",
        close_timeout_s=CLOSE_TIMEOUT_S,
    )


def _tcp_options(sock: socket.socket) -> dict[str, int]:
    """The kernel's view of a connection's keepalive and user-timeout options."""
    return {
        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        "user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    }
