"""wav2vec2 features: mean-pooled hidden states of a Wav2Vec2Model, for `cloudtune embed`, the `wav2vec2` retrieval
embedder (``pipeline.embed.wav2vec2``) and the model-service handler (``pipeline.service.handlers.wav2vec2``).

A clip at any rate in, the mean over time of ``last_hidden_state`` (or of ``hidden_states[layer]``) out: 768 numbers
for wav2vec2-base. The audio is resampled to the model's 16 kHz with soxr, run through ``Wav2Vec2FeatureExtractor``
and ``Wav2Vec2Model`` under ``torch.inference_mode``. The request format callers take clips in is
``pipeline.audio.contract``.

Padding follows the model's rule. Feature extractors with ``return_attention_mask`` (layer-norm models such as
wav2vec2-large-lv60) get padded batches plus an attention mask, and their vectors do not depend on the padding.
Group-norm models (wav2vec2-base) take no mask: the first conv layer's GroupNorm sees the padded zeros, so
padding changes their output. For those, batches hold clips of one length only (``pad_group_norm: false``).
Either way the per-clip input normalization sees only the clip, and pooling averages only the clip's frames.

Models load from a local directory, or a hub id when ``wav2vec2.allow_download`` is true; never otherwise
(``local_files_only``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from pipeline.audio import io as audio_io
from pipeline.devices import resolve_device, resolve_dtype, torch_threads
from pipeline.errors import one_line

if TYPE_CHECKING:
    from pipeline.config import Wav2Vec2Settings

log = logging.getLogger(__name__)

MODEL_RATE = 16000


class Wav2Vec2NotConfigured(ValueError):
    """No wav2vec2 model is configured: the DAG task and the evaluation skip the embedder with this message."""


@dataclass
class Loaded:
    feature_extractor: Any
    model: Any
    device: str
    dtype: torch.dtype
    source: str


def load_model(model: str | None, device: str = "auto", dtype: str = "auto", allow_download: bool = False) -> Loaded:
    """Wav2Vec2FeatureExtractor + Wav2Vec2Model from a local directory (or a hub id with ``allow_download``).

    ``device="auto"`` tries CUDA when present and falls back to the CPU when the model cannot be placed there."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would drown the shapes logged on stderr
    if not model:
        raise Wav2Vec2NotConfigured("wav2vec2: no model configured: pass --model (a local directory or hub id) or set wav2vec2.model")
    device_name = resolve_device(device)
    is_dir = Path(model).expanduser().is_dir()
    if not is_dir and not allow_download:
        raise ValueError(f"wav2vec2: model {model!r} is not a local directory, and downloads are off (wav2vec2.allow_download: false)")
    source = str(Path(model).expanduser().resolve()) if is_dir else model
    try:
        fe = Wav2Vec2FeatureExtractor.from_pretrained(source, local_files_only=not allow_download)
        net = Wav2Vec2Model.from_pretrained(source, local_files_only=not allow_download)
    except (OSError, ValueError) as exc:
        raise ValueError(f"wav2vec2: cannot load a model from {model!r}: {one_line(exc)[:300]}") from None
    if fe.sampling_rate != MODEL_RATE:
        log.warning("wav2vec2: the feature extractor expects %d Hz; audio is resampled to that", fe.sampling_rate)
    torch_dtype = resolve_dtype(dtype, device_name, "wav2vec2.dtype")
    net.eval()
    try:
        net.to(device=device_name, dtype=torch_dtype)
    except RuntimeError as exc:  # e.g. CUDA out of memory
        if device != "auto" or device_name == "cpu":
            raise
        log.warning("wav2vec2: cannot place the model on %s (%s); falling back to the CPU", device_name, one_line(exc)[:200])
        device_name, torch_dtype = "cpu", resolve_dtype(dtype, "cpu", "wav2vec2.dtype")
        net.to(device="cpu", dtype=torch_dtype)
    return Loaded(fe, net, device_name, torch_dtype, source)


class Wav2Vec2Features:
    """Mean-pooled wav2vec2 hidden states of clips at any rate: ``embed_one`` (the JSON contract) and ``embed_batch``."""

    def __init__(self, model: str | None, layer: int | None = None, device: str = "auto", dtype: str = "auto", allow_download: bool = False,
                 threads: int = 0, batch_size: int = 8, max_batch_seconds: float = 80.0, cpu_max_batch_seconds: float | None = None,
                 pad_group_norm: bool = False, resample_quality: str = "HQ"):
        self.threads = threads
        t0 = time.perf_counter()
        self.loaded = load_model(model, device, dtype, allow_download)
        self.fe, self.model, self.device, self.dtype = self.loaded.feature_extractor, self.loaded.model, self.loaded.device, self.loaded.dtype
        cfg = self.model.config
        self.num_layers = int(cfg.num_hidden_layers)
        if layer is not None and not -(self.num_layers + 1) <= layer <= self.num_layers:
            raise ValueError(f"--layer {layer}: the model has hidden states 0..{self.num_layers}")
        self.layer = layer if layer is None or layer >= 0 else self.num_layers + 1 + layer
        if self.layer is not None and self.layer < self.num_layers:
            # hidden_states[N] does not depend on the layers after N: drop them (less compute and memory). One layer stays,
            # since transformers records hidden_states[0] as the input of the first layer.
            self.model.encoder.layers = self.model.encoder.layers[: max(self.layer, 1)]
        self.dim = int(cfg.hidden_size)
        self.norm = str(cfg.feat_extract_norm)
        self.use_mask = bool(self.fe.return_attention_mask)  # HF's rule: pass a mask only when the feature extractor returns one
        self.batch_size = batch_size
        self.max_batch_seconds = cpu_max_batch_seconds if self.device == "cpu" and cpu_max_batch_seconds is not None else max_batch_seconds
        self.exact_lengths = not self.use_mask and not pad_group_norm
        self.resample_quality = resample_quality
        self.last_shapes = ""
        self.fingerprint = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]
        log.info("wav2vec2: %s on %s (%s): %d layers, hidden %d, %s-norm features, attention mask %s; loaded in %.2f s", self.loaded.source,
                 self.device, str(self.dtype).removeprefix("torch."), self.num_layers, self.dim, self.norm, "yes" if self.use_mask else "no",
                 time.perf_counter() - t0)

    def to_model_rate(self, wave: np.ndarray, sr: int) -> np.ndarray:
        return audio_io.resample(np.asarray(wave, dtype=np.float32), sr, MODEL_RATE, self.resample_quality)

    @torch.inference_mode()
    def forward(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """16 kHz clips -> float32 [len(waves), dim]: the mean over each clip's own frames of the chosen hidden state."""
        inputs = self.fe(list(waves), sampling_rate=MODEL_RATE, padding="longest", return_attention_mask=True, return_tensors="pt")
        values = inputs["input_values"].to(self.device, self.dtype)
        lengths = inputs["attention_mask"].sum(-1)
        mask = inputs["attention_mask"].to(self.device) if self.use_mask else None
        out = self.model(values, attention_mask=mask, output_hidden_states=self.layer is not None)
        hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        frames = self.model._get_feat_extract_output_lengths(lengths).to(hidden.device)
        keep = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] < frames[:, None]).to(hidden.dtype)
        pooled = (hidden * keep[..., None]).sum(1, dtype=torch.float32) / frames[:, None].to(torch.float32)
        which = "last_hidden_state" if self.layer is None else f"hidden_states[{self.layer}]"
        self.last_shapes = f"input {list(values.shape)} -> {which} {list(hidden.shape)} -> pooled {list(pooled.shape)}"
        log.debug("wav2vec2: %s", self.last_shapes)
        return pooled.float().cpu().numpy()

    def cpu_threads(self):
        """torch's CPU thread count set to ``wav2vec2.threads`` (when > 0) while embedding, then put back."""
        return torch_threads(self.threads)

    def embed_one(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """The JSON contract: one clip at rate ``sr`` -> float32 [dim], the mean of last_hidden_state (or hidden_states[layer])."""
        with self.cpu_threads():
            return self.forward([self.to_model_rate(wave, sr)])[0]

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Length bucketing: indices sorted by length, cut into batches of at most ``batch_size`` clips and
        ``max_batch_seconds`` (``cpu_max_batch_seconds`` on the CPU) of padded audio; with ``exact_lengths`` a batch
        holds one length only. A clip longer than the budget gets a batch of its own."""
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        out: list[list[int]] = []
        for i in order:
            cur = out[-1] if out else None
            if cur is not None and len(cur) < self.batch_size and (len(cur) + 1) * lengths[i] <= self.max_batch_seconds * MODEL_RATE \
                    and not (self.exact_lengths and lengths[cur[0]] != lengths[i]):
                cur.append(i)
            else:
                out.append([i])
        return out

    def embed_batch(self, waves: Sequence[np.ndarray], sr: int, progress: bool = False) -> np.ndarray:
        """Clips at rate ``sr`` -> float32 [len(waves), dim] (not normalized), in length-bucketed batches."""
        from tqdm import tqdm

        resampled = [self.to_model_rate(w, sr) for w in waves]
        out = np.zeros((len(resampled), self.dim), dtype=np.float32)
        groups = self.batches([w.shape[0] for w in resampled])
        with self.cpu_threads():
            for group in tqdm(groups, desc="wav2vec2", unit="batch", disable=not progress, leave=False):
                out[group] = self.forward([resampled[i] for i in group])
        return out

    def manifest(self) -> dict[str, Any]:
        return {"model": self.loaded.source, "layer": self.layer, "dim": self.dim, "config_sha1": self.fingerprint,
                "dtype": str(self.dtype).removeprefix("torch."), "feat_extract_norm": self.norm, "attention_mask": self.use_mask}


def features_from_settings(settings: Wav2Vec2Settings, device: str | None = None) -> Wav2Vec2Features:
    """A :class:`Wav2Vec2Features` from the ``wav2vec2:`` config section, as the caller read it (``device`` given here wins).
    Raises :class:`Wav2Vec2NotConfigured` (one line) when ``settings.model`` is null."""
    s = settings
    if not s.model:
        raise Wav2Vec2NotConfigured("wav2vec2: no model configured (set wav2vec2.model or CLOUDTUNE__WAV2VEC2__MODEL to a local directory)")
    return Wav2Vec2Features(s.model, layer=s.layer, device=device or s.device, dtype=s.dtype, allow_download=s.allow_download, threads=s.threads,
                            batch_size=s.batch_size, max_batch_seconds=s.max_batch_seconds, cpu_max_batch_seconds=s.cpu_max_batch_seconds,
                            pad_group_norm=s.pad_group_norm, resample_quality=s.resample_quality)
