"""Each thread's CPU time in a server's process, grouped by the name the OS knows it under
(observe names its threads: observe/thread_names.py), read from /proc (Linux).

serve_load.py prints it per request for A and B: where B's extra time goes, thread by thread.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

MAIN = "main (the event loop)"
OTHERS = "unnamed (OpenTelemetry's reader, libraries')"


def cpu_by_thread(pid: int) -> dict[str, float]:
    """CPU seconds of process `pid`'s threads so far: its main thread, each of observe's by
    name and apart from the threads it started (which the kernel names after it: torch's
    intra-op threads under the engine's), and the rest together. A thread that has ended is
    no longer counted."""
    tick = os.sysconf("SC_CLK_TCK")
    threads = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().rstrip("\n")
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile
        threads.append((int(task.name), name, (int(fields[11]) + int(fields[12])) / tick))
    found: Counter[str] = Counter()
    named: set[str] = set()
    # Oldest first: a thread's id is lower than those of the threads it started.
    for tid, name, seconds in sorted(threads):
        if tid == pid:
            group = MAIN
        elif not name.startswith("observe-"):
            group = OTHERS
        elif name in named:
            group = f"{name}, threads it started"
        else:
            group = name
            named.add(name)
        found[group] += seconds
    return dict(found)


def print_thread_cpu(
    before: dict[str, dict[str, float]],
    after: dict[str, dict[str, float]],
    requests: dict[str, int],
) -> None:
    """Each server's CPU ms per request by thread, between two `cpu_by_thread` readings."""
    used = {
        server: {
            group: seconds - before[server].get(group, 0.0)
            for group, seconds in after[server].items()
        }
        for server in after
    }
    groups = sorted({g for u in used.values() for g in u}, key=lambda g: -used["B"].get(g, 0.0))
    print("\nCPU ms per request by thread over the turns:\n")
    print("| thread | A | B |")
    print("|---|---|---|")
    for group in groups:
        cells = [
            f"{used[s][group] / requests[s] * 1e3:.2f}" if group in used[s] else "–"
            for s in ("A", "B")
        ]
        print(f"| {group} | {' | '.join(cells)} |")
