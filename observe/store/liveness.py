"""Whether a run's process still lives, and marking the runs whose process is gone `lost`.

A run stays `running` until its process records how it ended, through the spool like its
samples. A process killed with SIGKILL, or on a node that vanished, never does. So a
running run is lost when

- its latest heartbeat is older than `lost_after_s`: the run's store exporter sends one
  every `export_interval_s`, also when nothing changed, carrying the time it was made, so
  one delivered late still says when the process was last alive; or
- it ran on this host (the same host name) and its pid runs nothing here any more, or runs
  a process that started after the run's latest heartbeat: the pid was reused.

`observe runs` marks such runs `lost` in the store when it reads them. A lost run's end,
delivered later, still records how it ended; a heartbeat that its own process delivers (a
healed partition) makes it running again (observe/store/writer.py).

Host names are compared as they are: containers that share a host name but not a pid
namespace would take each other's runs for lost, until each run's next heartbeat; give
them host names of their own. Without /proc (macOS) a reused pid passes for the run's.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import DBAPIError

from observe.store.engine import mask_url, summarise
from observe.store.queries import schema_checked
from observe.store.schema import RUNS

logger = logging.getLogger("observe")

# /proc's boot time is in whole seconds, and the wall clock may have been stepped since a
# heartbeat: a process started this little after one is still taken for the run's own.
_START_SLACK = timedelta(seconds=5)


@dataclass(frozen=True)
class Process:
    host: str
    pid: int


def this_process() -> Process:
    return Process(socket.gethostname(), os.getpid())


def process_alive(pid: int, since: datetime) -> bool:
    """Whether pid `pid` on this host runs a process that started no later than `since`."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    status = _proc_status(pid)
    if status is None:
        return True  # no /proc to tell a reused pid, or an unreaped zombie, by
    state, started = status
    # Z and X: exited, not yet reaped by its parent.
    return state not in ("Z", "X") and started <= since + _START_SLACK


def mark_lost(engine: Engine, lost_after: timedelta, now: datetime | None = None) -> set[str]:
    """Ids of the running runs that are lost, now marked so in the store.

    A store that refuses the write (a read-only user) is logged: the ids still say which
    runs are lost.
    """
    cutoff = (now or datetime.now(UTC)) - lost_after
    here = socket.gethostname()
    running = select(RUNS.c.id, RUNS.c.host, RUNS.c.pid, RUNS.c.heartbeat).where(
        RUNS.c.status == "running"
    )
    with schema_checked(engine), engine.connect() as connection:
        rows = connection.execute(running).all()
    silent = {run for run, _, _, heartbeat in rows if heartbeat < cutoff}
    gone = {
        run
        for run, host, pid, heartbeat in rows
        if run not in silent and host == here and pid is not None
        if not process_alive(pid, heartbeat)
    }
    lost = silent | gone
    if not lost:
        return lost
    # Checked again in the statement: a heartbeat delivered meanwhile keeps its run alive.
    statement = (
        update(RUNS)
        .where(
            RUNS.c.status == "running",
            RUNS.c.id.in_(sorted(lost)),
            or_(RUNS.c.heartbeat < cutoff, RUNS.c.id.in_(sorted(gone))),
        )
        .values(status="lost")
    )
    try:
        with engine.begin() as connection:
            connection.execute(statement)
    except DBAPIError as exc:
        logger.warning(
            "observe: could not mark %d lost runs so in the store at %s (%s)",
            len(lost),
            mask_url(engine.url),
            summarise(engine.url, exc),
        )
    return lost


def _proc_status(pid: int) -> tuple[str, datetime] | None:
    """Process `pid`'s state letter and start time, from /proc; None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration):
        return None
    # The command name, in parentheses, may hold spaces: fields 3 onwards follow the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[19])
    started = datetime.fromtimestamp(boot, UTC) + timedelta(
        seconds=ticks / os.sysconf("SC_CLK_TCK")
    )
    return fields[0], started
