"""promtool on a directory of alert files: `check rules` on the rule file, then `test rules`
on its tests. Missing promtool is an error that says how to get it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from observe.alerts.files import RULES_FILE, TESTS_DIR
from observe.errors import ObserveError

INSTALL = (
    "install Prometheus's promtool: `apt-get install prometheus` (Debian, Ubuntu), "
    "`brew install prometheus` (macOS), or the release archive from "
    "https://prometheus.io/download/, with promtool on PATH"
)


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        raise ObserveError(f"promtool is not on PATH: {INSTALL}")
    return found


def check_and_test(directory: Path) -> tuple[bool, str]:
    """Whether the rule file in `directory` is valid and its tests pass, and promtool's
    output of both."""
    binary = promtool()
    tests = sorted(str(p.relative_to(directory)) for p in (directory / TESTS_DIR).glob("*.yml"))
    if not tests:
        raise ObserveError(f"{directory / TESTS_DIR} holds no tests: write them first")
    output = []
    for args in (["check", "rules", RULES_FILE], ["test", "rules", *tests]):
        # Relative paths: promtool's output names the files as they lie in `directory`.
        done = subprocess.run(
            [binary, *args], cwd=directory, capture_output=True, text=True, timeout=300
        )
        output.append(done.stdout + done.stderr)
        if done.returncode != 0:
            return False, "".join(output)
    return True, "".join(output)
