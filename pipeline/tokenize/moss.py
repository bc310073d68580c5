"""OpenMOSS MOSS-Audio-Tokenizer backend (needs its weights: a local directory, or a hub id when online).

The model is loaded with ``AutoModel.from_pretrained(dir, trust_remote_code=True)``. Its contract:
``encode(input_values [B, C, T], padding_mask [B, T], num_quantizers=None, chunk_duration=None)`` returns
``audio_codes`` (num_quantizers, B, T_codes) and ``audio_codes_lengths`` (B,); streaming with
``chunk_duration`` takes one clip at a time, at most ``causal_transformer_context_duration`` seconds
per chunk and a whole number of ``downsample_rate`` samples. So clips that fit in one chunk are encoded
together (padded, with a padding mask); longer clips are streamed one by one in chunks.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from pipeline.audio import io as audio_io
from pipeline.devices import resolve_device, resolve_dtype
from pipeline.errors import one_line


def _quantizer_setting(cfg, names: tuple[str, ...], default: int) -> int:
    """Read a quantizer setting from ``config.quantizer_kwargs`` (MOSS) or the config itself."""
    kwargs = dict(getattr(cfg, "quantizer_kwargs", None) or {})
    for name in names:
        if name in kwargs:
            return int(kwargs[name])
        if getattr(cfg, name, None) is not None:
            return int(getattr(cfg, name))
    return default


class MossTokenizer:
    name = "moss"

    def __init__(self, model: str, device: str, num_quantizers: int | None, chunk_seconds: float, batch_size: int, dtype: str):
        """The arguments are configs/pipeline.yaml ``moss`` (``model_dir`` as ``model``) and the run's device. Reads the model's
        config only: the weights load on first use (:meth:`load_weights`), so a re-run that finds every track tokenized (the version,
        hence the token folder, comes from the config) never loads them."""
        from transformers import AutoConfig

        if not model:
            raise ValueError("moss: no model given: pass --model-dir (a local MOSS-Audio-Tokenizer directory or a hub id) or set moss.model_dir")
        self.source = model
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, "moss.dtype", cpu_bfloat16=False)  # auto: bfloat16 on CUDA only
        try:
            cfg = AutoConfig.from_pretrained(model, trust_remote_code=True)
        except (OSError, ValueError) as exc:
            raise ValueError(f"moss: cannot load a model from {model!r}: {one_line(exc)[:400]}") from None
        self.sample_rate = int(getattr(cfg, "sampling_rate", 24000))
        self.downsample_rate = int(getattr(cfg, "downsample_rate", 1920))
        self.frame_rate = self.sample_rate / self.downsample_rate
        self.context_seconds = float(getattr(cfg, "causal_transformer_context_duration", 10.0))
        total = _quantizer_setting(cfg, ("num_quantizers", "n_q", "rvq_num_quantizers"), 32)
        self.codebook_size = _quantizer_setting(cfg, ("codebook_size", "bins", "codebook_num"), 1024)
        if num_quantizers is not None and not 1 <= num_quantizers <= total:
            raise ValueError(f"--num-quantizers {num_quantizers}: the model has {total} levels")
        self.num_quantizers = num_quantizers or total
        chunk_samples = round(chunk_seconds * self.sample_rate)
        if not 0 < chunk_seconds <= self.context_seconds or chunk_samples % self.downsample_rate:
            raise ValueError(f"moss.chunk_seconds {chunk_seconds:g}: must be at most {self.context_seconds:g} s and a multiple of "
                             f"{self.downsample_rate / self.sample_rate:g} s ({self.downsample_rate} samples at {self.sample_rate} Hz)")
        self.chunk_seconds, self.chunk_samples = chunk_seconds, chunk_samples
        self.batch_size = batch_size
        # the model's own config as its files give it: one version for every device and dtype the weights are loaded in
        cfg_hash = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]
        self.version = f"moss-{cfg_hash}-q{self.num_quantizers}"
        self._model = None

    def load_weights(self) -> MossTokenizer:
        """Load the weights (once); a clear ValueError when they cannot be."""
        if self._model is None:
            from transformers import AutoModel

            try:
                model = AutoModel.from_pretrained(self.source, trust_remote_code=True, dtype=self.dtype)
            except Exception as exc:  # noqa: BLE001 - OSError, ValueError, safetensors' own error for a damaged file...
                raise ValueError(f"moss: cannot load the weights of {self.source!r}: {one_line(exc)[:400]}") from None
            self._model = model.to(self.device).eval()
        return self

    @property
    def model(self):
        return self.load_weights()._model

    @torch.inference_mode()
    def _encode_padded(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        lengths = [w.shape[0] for w in waves]
        batch = torch.zeros((len(waves), 1, max(lengths)), dtype=self.dtype)
        mask = torch.zeros((len(waves), max(lengths)), dtype=torch.bool)
        for i, w in enumerate(waves):
            batch[i, 0, : w.shape[0]] = torch.from_numpy(w)
            mask[i, : w.shape[0]] = True
        out = self.model.encode(batch.to(self.device), padding_mask=mask.to(self.device), num_quantizers=self.num_quantizers, return_dict=True)
        codes, code_lengths = out.audio_codes.cpu(), out.audio_codes_lengths.cpu()
        return [codes[: self.num_quantizers, i, : int(code_lengths[i])].numpy().astype(np.int64) for i in range(len(waves))]

    @torch.inference_mode()
    def _encode_streaming(self, wave: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(wave).to(self.dtype).view(1, 1, -1).to(self.device)
        out = self.model.encode(x, num_quantizers=self.num_quantizers, chunk_duration=self.chunk_seconds, return_dict=True)
        return out.audio_codes[: self.num_quantizers, 0, : int(out.audio_codes_lengths[0])].cpu().numpy().astype(np.int64)

    def encode(self, wave: np.ndarray, sr: int) -> np.ndarray:
        return self.encode_batch([wave], sr)[0]

    def encode_batch(self, waves: list[np.ndarray], sr: int) -> list[np.ndarray]:
        waves = [audio_io.resample(np.asarray(w, np.float32), sr, self.sample_rate) for w in waves]
        out: list[np.ndarray | None] = [None] * len(waves)
        short = [i for i, w in enumerate(waves) if w.shape[0] <= self.chunk_samples]
        for start in range(0, len(short), self.batch_size):
            group = short[start : start + self.batch_size]
            for i, codes in zip(group, self._encode_padded([waves[i] for i in group]), strict=True):
                out[i] = codes
        for i, w in enumerate(waves):
            if out[i] is None:
                out[i] = self._encode_streaming(w)
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes [Q, T] -> mono audio at ``sample_rate``."""
        x = torch.as_tensor(np.asarray(codes), dtype=torch.long).unsqueeze(1).to(self.device)
        audio = self.model.decode(x, return_dict=True).audio
        return audio[0, 0].float().cpu().numpy()
