"""``contrastive``: a run's trained TokenEmbedder behind the tokenizer that made its training tokens.

Audio is tokenized exactly as at training time (the rvq codec of the same version, or the MOSS model)
and the token clips are embedded in batches of similar length.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from pipeline.data.dataset import pad_codes

if TYPE_CHECKING:
    from pipeline.config import MossSettings


class ContrastiveEmbedder:
    name = "contrastive"

    def __init__(self, checkpoint: str | Path, device: str, batch_size: int, moss: MossSettings | None = None):
        """``moss``: the ``moss:`` settings, needed when the checkpoint's tokenizer is not an rvq codec in this CLOUDTUNE_HOME."""
        from pipeline.models.token_embedder import load_embedder
        from pipeline.tokenize.catalog import find_codec

        self.checkpoint = Path(checkpoint)
        self.model, ckpt = load_embedder(self.checkpoint, device)
        self.device, self.batch_size = device, batch_size
        self.codebook_size, self.codec_version = int(ckpt["codebook_size"]), ckpt["codec_version"]
        self.tokenizer = find_codec(self.codec_version)
        if self.tokenizer is None:
            from pipeline.tokenize.catalog import moss_tokenizer

            if moss is None:
                raise ValueError(f"{self.checkpoint}: its tokenizer {self.codec_version} is not an rvq codec in this CLOUDTUNE_HOME and no moss "
                                 "settings were given to load the MOSS model (the caller passes the moss: config section)")
            model = moss_tokenizer(moss, device)
            if model.version != self.codec_version:
                raise FileNotFoundError(f"{self.checkpoint}: its tokenizer {self.codec_version} is neither an rvq codec in this CLOUDTUNE_HOME "
                                        f"nor the configured MOSS model ({model.version})")
            self.tokenizer = model
        self.sample_rate = self.tokenizer.sample_rate
        self.dim = self.model.settings.embedding_dim
        self.max_frames = self.model.settings.max_frames
        self.epochs = len(ckpt.get("history", []))

    @torch.inference_mode()
    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(waves), self.dim), np.float32)
        order = np.argsort([len(w) for w in waves], kind="stable")  # similar lengths share a batch: less padding
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            codes = self.tokenizer.encode_batch([waves[j] for j in idx], self.sample_rate)
            codes = [c[:, : self.max_frames] if c.shape[1] else np.full((c.shape[0], 1), self.codebook_size, np.int64) for c in codes]
            batch, mask = pad_codes(codes, self.codebook_size)
            out[idx] = self.model(batch.to(self.device), mask.to(self.device)).float().cpu().numpy()
        return out

    def manifest(self) -> dict:
        return {"name": self.name, "dim": self.dim, "sample_rate": self.sample_rate, "checkpoint": str(self.checkpoint),
                "tokenizer": self.codec_version, "epochs": self.epochs, "version": f"{self.checkpoint.parent.parent.name}/{self.codec_version}"}
