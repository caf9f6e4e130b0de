"""How fast the `observe` CLI answers: commands that need no model load no torch.

Times `observe --help` and `observe runs` (on a migrated, empty SQLite store) beside a bare
`python -c pass` and an `import torch`, alternating them in one run; prints the median
wall time of each and its excess over the bare interpreter.

    .venv/bin/python benchmarks/cli_start.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 0.5


def seconds(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    observe = [sys.executable, "-c", "from observe.cli import main; main()"]
    with tempfile.TemporaryDirectory() as where:
        env = {**os.environ, "OBSERVE_DB_URL": f"sqlite:///{Path(where) / 'observe.db'}"}
        subprocess.run([*observe, "db", "upgrade"], env=env, check=True, capture_output=True)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "observe --help": [*observe, "--help"],
            "observe runs": [*observe, "runs"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats + 1):  # the first round warms the file cache
            for name, command in commands.items():
                times[name].append(seconds(command, env))
    medians = {name: statistics.median(t[1:]) for name, t in times.items()}
    bare = medians["python -c pass"]
    print(f"{args.repeats} alternating rounds, median wall time; target: under {TARGET_S} s")
    print("| command | seconds | over bare python | target met |")
    print("|---|---|---|---|")
    for name, median in medians.items():
        met = ("yes" if median < TARGET_S else "no") if name.startswith("observe") else ""
        print(f"| `{name}` | {median:.3f} | +{median - bare:.3f} | {met} |")


if __name__ == "__main__":
    main()
