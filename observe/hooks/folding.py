"""Folding recorded router calls into the device sums, off the calling thread where the
device allows.

A large model (64 layers × 256 experts) reaches the bound on recorded logits every forward,
and a fold there cost the training loop ~100 ms a step. On CUDA a thread of the folder's own
queues the folds on a side stream that waits (on the device, not the host) for the forward
that recorded the tensors. On CPU the folds run on the calling thread: a thread of their own
only takes a core from torch's intra-op threads, which cost `bench` inference 17 % of its
throughput on 2 cores (hook_overhead.py) against about 3 % inline. Elsewhere (MPS, XLA) they
run on the calling thread too. Folds keep their order, so the sums are the same either way.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

import torch

from observe import signals
from observe.hooks.buffers import RouterCall, RoutingBuffers

logger = logging.getLogger("observe")

# Batches handed over that may wait at once: past them the calling thread waits for the
# folder, so that a folder that falls behind cannot hold ever more recorded tensors.
MAX_WAITING = 2

Dropped = Sequence[tuple[int, torch.Tensor]]
_Work = tuple[Sequence[RouterCall], Dropped, "torch.cuda.Event | None"]


class Folder:
    """Folds batches of recorded calls into `buffers`, in the order they were handed over."""

    def __init__(
        self,
        buffers: RoutingBuffers,
        probabilities: Callable[[torch.Tensor], torch.Tensor] | None,
        device: torch.device,
        *,
        offload: bool | None = None,
    ) -> None:
        """`probabilities`: the router's distribution given its logits (None: their softmax);
        `offload`: fold on the folder's thread (None: on CUDA only)."""
        self._buffers = buffers
        self._probabilities = probabilities
        self._offload = device.type == "cuda" if offload is None else offload
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._work: queue.Queue[_Work | None] = queue.Queue(MAX_WAITING)
        self._thread: threading.Thread | None = None
        self._failed = False

    def fold(self, calls: Sequence[RouterCall], dropped: Dropped) -> None:
        """Hands `calls` and `dropped` over; returns once queued (or folded, where the
        device does not allow a thread). Never waits for the device."""
        if not self._offload:
            self._fold(calls, dropped)
            return
        recorded = None
        if self._stream is not None:
            recorded = torch.cuda.Event()
            # On the model's device's stream, which need not be the current device's.
            recorded.record(torch.cuda.current_stream(self._stream.device))
            # The side stream reads these: the allocator must not reuse their memory for
            # the forward's next tensors before it has.
            for call in calls:
                for tensor in (call.logits_TE, call.topk_indices_TK, call.mask_T):
                    if tensor is not None:
                        tensor.record_stream(self._stream)
            for _, tensor in dropped:
                tensor.record_stream(self._stream)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="observe-fold", daemon=True)
            signals.start(self._thread)
        self._work.put((calls, dropped, recorded))

    def wait(self) -> None:
        """Returns once every batch handed over is folded (queued on the device, on CUDA,
        where the calling thread's stream then waits for the side stream)."""
        self._work.join()
        if self._stream is not None:
            torch.cuda.current_stream(self._stream.device).wait_stream(self._stream)

    def close(self) -> None:
        """Folds what was handed over, then stops the thread."""
        if self._thread is not None:
            self._work.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (work := self._work.get()) is not None:
            calls, dropped, recorded = work
            try:
                if self._stream is not None and recorded is not None:
                    with torch.cuda.stream(self._stream):
                        self._stream.wait_event(recorded)
                        self._fold(calls, dropped)
                else:
                    self._fold(calls, dropped)
            except Exception:
                # The thread lives on: were it to die, wait() would wait for ever.
                if not self._failed:
                    self._failed = True
                    logger.exception("observe: recorded router calls could not be folded")
            finally:
                self._work.task_done()
        self._work.task_done()

    def _fold(self, calls: Sequence[RouterCall], dropped: Dropped) -> None:
        # Grad mode is per thread: this one's is on unless turned off here.
        with torch.no_grad():
            if calls:
                self._buffers.add_calls(calls, self._probabilities)
            if dropped:
                self._buffers.add_dropped([layer for layer, _ in dropped], [d for _, d in dropped])
