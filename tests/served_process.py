"""`observe serve` as a user starts it, in a process of its own: its command line, and the
API's address once it listens."""

from __future__ import annotations

import subprocess
import sys
import time

# The `observe` command, through this interpreter; `[*SERVE[:-1], "demo", ...]` for others.
SERVE = [sys.executable, "-c", "from observe.cli import main; main()", "serve"]


def served_url(process: subprocess.Popen[str], bound_s: float) -> str:
    """The API's address, from the line `observe serve` logs once it listens (stderr piped,
    as text): past `bound_s`, it hung."""
    assert process.stderr is not None
    deadline = time.monotonic() + bound_s
    for line in process.stderr:
        if line.startswith("observe: OpenAI-compatible API of "):
            return line.split(" at ", 1)[1].split()[0]
        assert time.monotonic() < deadline and process.poll() is None, line
    raise AssertionError(f"observe serve exited with {process.wait()} before listening")
