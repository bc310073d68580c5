"""Audio tokenizers: the `Tokenizer` protocol, reserved ids, and the backends `rvq` and `moss`.

Codes are int64 ``[Q, T]``: Q residual levels, T frames at ``frame_rate``. Ids ``0..codebook_size-1``
are real codes (0 included); padding and masking use ids past the codebook, so no real code is lost.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


def pad_id(codebook_size: int) -> int:
    """Padding id: the first id past the codebook."""
    return codebook_size


def mask_id(codebook_size: int) -> int:
    """Masking id (token dropout): the second id past the codebook."""
    return codebook_size + 1


def vocab_size(codebook_size: int) -> int:
    """Embedding table size: every real code plus PAD and MASK."""
    return codebook_size + 2


@runtime_checkable
class Tokenizer(Protocol):
    name: str  # backend: rvq | moss
    version: str  # identifies the exact codec (weights) that made a token file
    sample_rate: int
    frame_rate: float
    num_quantizers: int
    codebook_size: int

    def encode(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """Mono float32 audio at ``sr`` -> int64 codes [Q, T]."""

    def encode_batch(self, waves: list[np.ndarray], sr: int) -> list[np.ndarray]:
        """Several clips at once (faster); one [Q, T_i] array per clip."""

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes [Q, T] -> what the backend reconstructs (rvq: log-mel frames; moss: audio)."""

    def load_weights(self) -> Tokenizer:
        """Load what encoding needs that was left for first use (MOSS: its weights), once; a ValueError naming the model when
        that fails. Tokenizing calls it only when there is work, so a re-run that finds everything tokenized loads nothing."""
