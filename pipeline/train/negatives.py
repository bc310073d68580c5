"""A memory of recent training vectors used as extra negatives (cross-batch memory: Wang et al., "Cross-Batch Memory for
Embedding Learning", CVPR 2020).

NT-Xent learns more from more negatives (Neural Audio Fingerprint's top-1 rose with the batch from 120 to 640), but a batch's
step costs in proportion to its size. The vectors of the last few steps cost nothing more to keep: once the model moves
slowly, they are nearly what the model would make of those segments now. :class:`NegativeMemory` keeps the last ``size``
anchor and positive vectors (detached) with the (track, start) they were cut at, so a segment of the same track that overlaps a
pair is never its negative. Its state goes into every checkpoint, so a resumed training goes on with the same memory.
"""

from __future__ import annotations

import torch


class NegativeMemory:
    def __init__(self, size: int, dim: int, device: str | torch.device = "cpu"):
        self.size = size
        self.vectors = torch.zeros(size, dim, device=device)
        self.track = torch.full((size,), -1, dtype=torch.long, device=device)
        self.start = torch.zeros(size, dtype=torch.long, device=device)
        self.filled = 0
        self.next = 0

    def __len__(self) -> int:
        return self.filled

    def push(self, z: torch.Tensor, track: torch.Tensor, start: torch.Tensor) -> None:
        """Add ``z`` [N, dim] (detached, float32) cut at ``track``/``start`` [N], overwriting the oldest entries once full."""
        n = min(len(z), self.size)
        z, track, start = z[-n:], track[-n:], start[-n:]  # more than fits: the newest
        idx = (self.next + torch.arange(n, device=self.vectors.device)) % self.size
        self.vectors[idx] = z.detach().float().to(self.vectors.device)
        self.track[idx] = track.to(self.track.device)
        self.start[idx] = start.to(self.start.device)
        self.next = int((self.next + n) % self.size)
        self.filled = min(self.size, self.filled + n)

    def negatives(self, track: torch.Tensor, start: torch.Tensor, overlap: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors [M, dim], not-negative mask [B, M]) for a batch of pairs cut at ``track``/``start`` [B]: an entry of a pair's
        track less than ``overlap`` samples from it shares audio with it and is masked."""
        v, t, s = self.vectors[: self.filled], self.track[: self.filled], self.start[: self.filled]
        track, start = track.to(t.device), start.to(s.device)
        same = (track[:, None] == t[None, :]) & ((start[:, None] - s[None, :]).abs() < overlap)
        return v, same

    def state(self) -> dict:
        return {"vectors": self.vectors.cpu(), "track": self.track.cpu(), "start": self.start.cpu(), "filled": self.filled, "next": self.next}

    def load(self, state: dict) -> None:
        if state["vectors"].shape != self.vectors.shape:
            raise ValueError(f"the checkpoint's negative memory is {tuple(state['vectors'].shape)}, the settings ask for "
                             f"{tuple(self.vectors.shape)} (fingerprint_training.memory_size changed?)")
        device = self.vectors.device
        self.vectors, self.track, self.start = state["vectors"].to(device), state["track"].to(device), state["start"].to(device)
        self.filled, self.next = int(state["filled"]), int(state["next"])
