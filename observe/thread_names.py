"""observe's threads under their own names for the operating system, so that `top -H`,
`ps -L` and perf tell them from the model's: before 3.14, Python leaves every thread with
the process's name.

Linux only, where the kernel keeps the first 15 bytes of a name: "observe-inference" shows
as "observe-inferen". A thread started by a named one takes its name: torch's intra-op
threads, which the engine's thread starts with its first parallel operator, show under the
engine's, as the inference work they do.
"""

from __future__ import annotations

import contextlib
import sys
import threading

# What the kernel keeps of a thread's name: TASK_COMM_LEN less the terminating NUL.
MAX_OS_NAME_BYTES = 15


def name_os_thread(thread: threading.Thread) -> None:
    """Gives the started `thread` its Python name, cut to what the kernel keeps."""
    if sys.platform != "linux" or thread.native_id is None:
        return
    # Gone already, or a sandbox that refuses: it keeps the process's name.
    with (
        contextlib.suppress(OSError),
        open(f"/proc/self/task/{thread.native_id}/comm", "wb") as comm,
    ):
        comm.write(thread.name.encode()[:MAX_OS_NAME_BYTES])
