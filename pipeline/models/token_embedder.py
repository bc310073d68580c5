"""TokenEmbedder: token codes of a clip [Q, T] -> one L2-normalized vector.

Per-level token embeddings are summed (as residual levels add up), a learned position is added, a
small Transformer encoder reads the frames, masked mean pooling keeps padding out, and a projection
gives the output. Ids past the codebook are PAD (ignored) and MASK (token dropout).

With the codec's codebooks at hand (rvq), each level's table starts as its centroids times one shared random
projection, so the summed embeddings of a frame start as a projection of the frame's decoded features:
codes whose centroids are close start close, which is what lets a noisy clip whose tokens moved to
neighbouring codes land near the clean one. The tables are trained from there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import EmbedderSettings
from pipeline.errors import one_line
from pipeline.tokenize import pad_id, vocab_size


class TokenEmbedder(nn.Module):
    """Width ``embedding_dim`` throughout (token embeddings, Transformer, output); ``hidden`` is the feed-forward width.
    ``settings``: configs/train.yaml ``embedder`` (the caller reads it: ``config.load_train().embedder``)."""

    def __init__(self, num_quantizers: int, codebook_size: int, settings: EmbedderSettings):
        super().__init__()
        self.num_quantizers, self.codebook_size, self.settings = num_quantizers, codebook_size, settings
        d = settings.embedding_dim
        self.tokens = nn.ModuleList(nn.Embedding(vocab_size(codebook_size), d, padding_idx=pad_id(codebook_size)) for _ in range(num_quantizers))
        self.position = nn.Embedding(settings.max_frames, d)
        layer = nn.TransformerEncoderLayer(d, settings.heads, dim_feedforward=settings.hidden, dropout=settings.dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, settings.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.project = nn.Linear(d, settings.embedding_dim)

    @torch.no_grad()
    def init_from_codebooks(self, codebooks: np.ndarray, seed: int = 0) -> None:
        """Start level q's table as ``codebooks[q] @ W`` for one random ``W`` [D, embedding_dim] (codebooks: [Q, K, D])."""
        books = torch.as_tensor(np.asarray(codebooks), dtype=torch.float32)
        if books.shape[:2] != (self.num_quantizers, self.codebook_size):
            raise ValueError(f"TokenEmbedder: codebooks {tuple(books.shape)} do not match {self.num_quantizers} levels x {self.codebook_size} codes")
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(books.shape[2], self.settings.embedding_dim, generator=g) / books.shape[2] ** 0.5
        for q, emb in enumerate(self.tokens):
            emb.weight[: self.codebook_size] = (books[q] @ w).to(emb.weight)

    def forward(self, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """codes int64 [B, Q, T], mask bool [B, T] (True = a real frame) -> float [B, embedding_dim], unit norm."""
        B, Q, T = codes.shape
        if Q != self.num_quantizers:
            raise ValueError(f"TokenEmbedder: codes have {Q} levels, the model {self.num_quantizers}")
        if T > self.settings.max_frames:
            raise ValueError(f"TokenEmbedder: {T} frames, the model takes at most {self.settings.max_frames} (embedder.max_frames)")
        x = sum(emb(codes[:, q]) for q, emb in enumerate(self.tokens))
        x = x + self.position(torch.arange(T, device=codes.device))
        x = self.encoder(x, src_key_padding_mask=~mask)
        x = self.norm(x)
        weights = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return F.normalize(self.project(pooled).float(), dim=-1)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives: a[i] and b[i] are two views of one track.

    ``groups`` (the track of each row) removes false negatives: another clip of the same track in the
    batch is neither a positive nor a negative.
    """
    logits = a @ b.T / temperature
    if groups is not None:
        same = (groups[:, None] == groups[None, :]) & ~torch.eye(len(groups), dtype=torch.bool, device=groups.device)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def load_embedder(checkpoint: str | Path, device: str = "cpu") -> tuple[TokenEmbedder, dict]:
    """A trained embedder (eval mode) and its checkpoint metadata; a clear error naming the file for one that is not a checkpoint
    (truncated, foreign)."""
    try:
        ckpt = torch.load(checkpoint, map_location=device, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        reason = one_line(exc)[:200]
        raise ValueError(f"{checkpoint}: not a readable token embedder checkpoint ({type(exc).__name__}: {reason})") from None
    if not isinstance(ckpt, dict) or not {"num_quantizers", "codebook_size", "embedder", "model"} <= set(ckpt):
        raise ValueError(f"{checkpoint}: not a token embedder checkpoint (no embedder settings or weights in it)")
    model = TokenEmbedder(ckpt["num_quantizers"], ckpt["codebook_size"], EmbedderSettings(**ckpt["embedder"])).to(device)
    model.load_state_dict(ckpt.get("ema_model", ckpt["model"]))  # the averaged weights when training kept them
    model.eval()
    return model, {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "scheduler", "ema", "ema_model")}
