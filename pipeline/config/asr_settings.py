"""The settings classes of configs/asr.yaml: types and checks only; the values and their comments are in the YAML.
``choices`` (a ClassVar, not a field): the names a str field, or each item of a tuple field, may take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipeline.config.base import _Invalid
from pipeline.names import ASR_BACKENDS, ASR_QUANTIZE, DEVICES, DTYPES


@dataclass(frozen=True)
class AsrSettings:
    backend: str
    sample_rate: int
    window_s: float
    split: bool
    split_search_s: float
    min_seconds: float
    silence_rms_dbfs: float
    batch_size: int
    language: str | None
    choices: ClassVar = {"backend": ASR_BACKENDS}

    def __post_init__(self):
        if not 1 <= self.batch_size <= 4:
            raise _Invalid("batch_size", f"expected 1 to 4 clips per pass, got {self.batch_size}")
        if self.window_s <= 0 or not 0 < self.split_search_s < self.window_s:
            raise _Invalid("split_search_s", f"expected 0 < split_search_s < window_s ({self.window_s}), got {self.split_search_s}")


@dataclass(frozen=True)
class Qwen3AsrSettings:
    model: str | None
    device: str
    dtype: str
    quantize: str
    tokens_per_second: float
    min_new_tokens: int
    max_new_tokens: int | None
    repetition_guard: int
    choices: ClassVar = {"device": DEVICES, "dtype": DTYPES, "quantize": ASR_QUANTIZE}

    def __post_init__(self):
        if self.quantize == "int8" and self.dtype not in ("auto", "bfloat16"):
            raise _Invalid("dtype", f"quantize int8 runs bfloat16 activations (its CPU kernel's float32 path is 25x slower): "
                                    f"set dtype auto or bfloat16, not {self.dtype}")


@dataclass(frozen=True)
class PocketsphinxSettings:
    hmm: str | None
    lm: str | None
    dict: str | None


@dataclass(frozen=True)
class AsrEvalSettings:
    normalize: str
    cer_languages: tuple[str, ...]
    worst_files: int
    choices: ClassVar = {"normalize": ("basic", "none")}
