"""A PostgreSQL cluster of one's own, for tests and benchmarks that stop, restart or fill
up a server: never the shared one.

Tests get one through the `throwaway_pg` fixture; benchmarks put tests/ on their path, as
pytest does, and use `throwaway_cluster()`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_server import free_port


class ClusterUnavailable(RuntimeError):
    """This machine cannot run a cluster: no server binaries, or no user to run them as."""


class PgCluster:
    """A PostgreSQL cluster of one's own, password-protected, to stop and start at will."""

    PASSWORD = "cluster-s3cret"

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        # PostgreSQL refuses to run as root: run its tools as the postgres user.
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        (root / "password").write_text(self.PASSWORD)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            f"--pwfile={root / 'password'}",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def url(self, password: str = PASSWORD, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres:{password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            # Durability is not under test here; the clean stops below flush everything.
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def running(self) -> bool:
        status = subprocess.run(
            [*self._as_postgres, str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
        )
        return status.returncode == 0

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as_postgres, str(self.bindir / tool), *args], capture_output=True, text=True
        )
        if done.returncode != 0:
            log = self.root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}{tail}")


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[PgCluster]:
    """A running cluster on a free port, removed with its files on the way out."""
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdbs:
        raise ClusterUnavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterUnavailable(
                "running as root without a postgres user to run PostgreSQL as"
            ) from None
    # Not under a test's tmp_path: its parents are private to root, and postgres must
    # reach the directory.
    root = Path(tempfile.mkdtemp(prefix="observe-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    try:
        cluster = PgCluster(Path(initdbs[-1]).parent, root)
        cluster.start()
        yield cluster
        if cluster.running():
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
