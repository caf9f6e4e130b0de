"""A fixed-size uniform sample of pooled sequence states per attention layer.

A monitor keeps two: one over the whole run (`hidden_states()`, baselines) and one per
flush window (drift), which each flush drains.

Algorithm R run on the device: item i (counted from 0) fills slot i while the reservoir
has room, then replaces slot j ~ U{0..i} when j falls inside it. The count of items seen is
a host-side number (batch sizes are shapes, not values), so no step waits for the device.
Items that land outside the reservoir, or in a slot a later item of their batch takes,
are written to one spare row that is never read. The layers of one forward, each at the
same count with a batch of the same size, share one draw: the slots cost a forward
several small ops, and each layer's sample stays uniform (all hold the same sequences).

Shape legend: B sequences, R reservoir rows, D hidden width.
"""

from __future__ import annotations

import torch


class HiddenStateReservoir:
    def __init__(self, n_layers: int, capacity: int, device: torch.device, seed: int = 0) -> None:
        self.capacity = capacity
        self.device = device
        self.seen = [0] * n_layers
        self._rows: list[torch.Tensor | None] = [None] * n_layers
        self._generator = torch.Generator(device=device).manual_seed(seed)
        # The last draw's slots, for the count and batch size they were drawn at.
        self._drawn: tuple[tuple[int, int], torch.Tensor] | None = None

    def add(self, layer: int, pooled_BD: torch.Tensor) -> None:
        B, D = pooled_BD.shape
        rows_RD = self._rows[layer]
        if rows_RD is None:
            # A normal tensor even when the first sample comes under inference mode: later
            # samples may arrive outside it, and inference tensors refuse in-place updates.
            with torch.inference_mode(False):
                rows_RD = torch.zeros(self.capacity + 1, D, device=self.device)
            self._rows[layer] = rows_RD
        seen = self.seen[layer]
        drawn = self._drawn
        if drawn is None or drawn[0] != (seen, B):
            u_B = torch.rand(B, generator=self._generator, device=self.device)
            drawn = self._drawn = ((seen, B), slots(seen, u_B, self.capacity))
        rows_RD.index_copy_(0, drawn[1], pooled_BD.detach().float())
        self.seen[layer] = seen + B

    def read(self, layer: int) -> torch.Tensor:
        """The layer's sample on the host, (min(seen, R), D); waits for the device."""
        rows_RD = self._rows[layer]
        if rows_RD is None:
            return torch.zeros(0, 0)
        # A copy even on the CPU: the caller must not see later samples overwrite it.
        return rows_RD[: min(self.seen[layer], self.capacity)].to("cpu", copy=True)

    def drain(self) -> list[torch.Tensor]:
        """Starts copying each layer's sample to the host and empties the reservoir, without
        waiting: the copies are ready once the device reaches an event recorded after this
        call. A layer that sampled nothing gives a (0, 0) tensor."""
        on_gpu = self.device.type == "cuda"
        samples = []
        # Counts start again from 0: a draw at a count of the last window is not this one's.
        self._drawn = None
        for layer, rows_RD in enumerate(self._rows):
            n = min(self.seen[layer], self.capacity)
            if rows_RD is None or n == 0:
                samples.append(torch.zeros(0, 0))
                continue
            host_ND = torch.empty(n, rows_RD.shape[1], pin_memory=on_gpu)
            # Later samples overwrite rows from slot 0 again: queued after this copy.
            host_ND.copy_(rows_RD[:n], non_blocking=True)
            samples.append(host_ND)
            self.seen[layer] = 0
        return samples


def slots(seen: int, u_B: torch.Tensor, R: int) -> torch.Tensor:
    """The rows that items `seen`, `seen` + 1, … take, given a uniform draw in [0, 1) for
    each: their slot, or R (the spare row) for those that land outside the reservoir or
    that a later item of the same batch replaces. Algorithm R keeps the later of two items
    that draw one slot, but `index_copy_` leaves which one it writes to chance when
    indices repeat (on CUDA, in any order): so no slot is written twice."""
    index_B = torch.arange(seen, seen + len(u_B), device=u_B.device)
    slot_B = torch.where(index_B < R, index_B, (u_B * (index_B + 1)).long())
    replaced_B = (slot_B[:, None] == slot_B[None, :]).triu(diagonal=1).any(dim=1)
    return torch.where((slot_B < R) & ~replaced_B, slot_B, R)
