"""A real Prometheus for tests: started on a free loopback port, scraping given targets.

Tests take it through the `prometheus` fixture (tests/conftest.py), which marks them.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def query(self, promql: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def get(self, path: str) -> Any:
        """The `data` of an API answer, e.g. `get("/api/v1/rules")`."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def wait_for(self, promql: str, expected: float, timeout_s: float = 60) -> float | None:
        """Polls until `promql` returns `expected` (scrapes come every second)."""
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.value(promql)
            if value == expected:
                return value
            time.sleep(0.5)
        return value


# What the `prometheus` fixture hands a test: `with prometheus(targets) as server: ...`, or
# `prometheus(targets, rule_files=[path])` to load alert rules too, or
# `prometheus(targets, scrape={"scheme": "https", "tls_config": {...}, "basic_auth": {...}})`
# to scrape them over TLS with basic auth.
StartPrometheus = Callable[..., AbstractContextManager[Prometheus]]


@contextmanager
def run_prometheus(
    targets: list[str],
    workdir: Path,
    rule_files: Sequence[Path] = (),
    base_config: Path | None = None,
    scrape: Mapping[str, Any] | None = None,
    other_jobs: Sequence[Mapping[str, Any]] = (),
) -> Iterator[Prometheus]:
    """`base_config` (e.g. collectors/prometheus.yml) is used as it is, but for the targets
    of its `observe` job, the rule files and intervals of a second. `scrape` adds to the
    `observe` job (`scheme`, `tls_config`, `basic_auth`); `other_jobs` are whole jobs."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run `make test`, which installs it"
    port = free_port()
    config = workdir / "prometheus.yml"
    settings: dict[str, Any] = {"scrape_configs": [{"job_name": "observe"}]}
    if base_config is not None:
        settings = yaml.safe_load(base_config.read_text())
    # Rules are evaluated every second, as often as targets are scraped.
    settings["global"] = {**settings.get("global", {}), "scrape_interval": "1s",
                          "evaluation_interval": "1s"}  # fmt: skip
    settings["rule_files"] = [str(p) for p in rule_files]
    [job] = [j for j in settings["scrape_configs"] if j["job_name"] == "observe"]
    job.update({**(scrape or {}), "static_configs": [{"targets": targets}]})
    settings["scrape_configs"].extend(dict(j) for j in other_jobs)
    config.write_text(yaml.safe_dump(settings))
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("w"),
    )
    server = Prometheus(port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{server.url}/-/ready", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None, (workdir / "prometheus.log").read_text()
                assert time.monotonic() < deadline, "prometheus did not become ready"
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
