"""``fingerprint``: a run's trained fingerprint model (:mod:`pipeline.models.fingerprint`) over short log-mel segments.

Waveforms come in at the catalog rate and are resampled to the model's (8 kHz by default) with soxr. The model was trained
on ``segment_s`` segments, so the catalog is cut into segments of that length every ``hop_s`` (``segmentation``: what
embed-catalog and the search's query cutter use instead of configs/index.yaml ``segments``); a longer or shorter wave is
cropped or zero-padded to one segment. ``embed_spans`` resamples a track or a query once and cuts its overlapping segments
after. On the CPU the network runs in ONNX Runtime when an export of this very checkpoint is given and usable
(:mod:`pipeline.embed.fingerprint_onnx`, configs/fingerprint.yaml ``fingerprint_inference``), else traced and frozen
(:func:`pipeline.models.fingerprint.for_inference`); on a GPU the model runs as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pipeline.audio import io as audio_io


class FingerprintEmbedder:
    name = "fingerprint"

    def __init__(self, checkpoint: str | Path, device: str, batch_size: int, sample_rate: int, *, onnx: str | Path | None = None, threads: int = 0,
                 hop_s: float | None = None, int8: str | Path | None = None):
        """``onnx``: an ONNX export of ``checkpoint`` to run the network with on the CPU (with ``threads`` intra-op threads, 0: ONNX
        Runtime's default); when it is missing, stale or unloadable, the note says why and the traced torch model runs instead.
        ``int8``: its int8 export, tried first (``precision`` int8, which the embedder's version names: int8 vectors differ a
        little from float32 ones, so a catalog and its queries must agree); when unusable, the note says why and float32 runs.
        ``hop_s``: the grid catalog and queries are cut on, None: the checkpoint's."""
        from pipeline.embed.fingerprint_onnx import INT8_SCHEME, ExportUnusable, load_onnx
        from pipeline.models.fingerprint import for_inference, load_fingerprint

        self.checkpoint = Path(checkpoint)
        self.model, ckpt = load_fingerprint(self.checkpoint, device)
        self.device, self.batch_size, self.sample_rate = device, batch_size, sample_rate
        s = self.model.settings
        self.dim, self.model_rate, self.n = s.dim, s.sample_rate, self.model.segment_samples
        self.epochs = len(ckpt.get("history", []))
        self.segmentation = {"window_s": s.segment_s, "hop_s": hop_s or s.hop_s}
        self.backend, self.net, self.precision = "torch", self.model, "float32"
        run = self.checkpoint.parent.parent.name
        if device == "cpu" and int8 is not None:
            try:
                self.backend, self.net, self.precision = "onnx", load_onnx(int8, self.checkpoint, self.model.front, threads, INT8_SCHEME), "int8"
            except ExportUnusable as exc:
                print(f"fingerprint: float32 inference: {exc} (`cloudtune export onnx --run-id {run}` with precision int8 writes one)", file=sys.stderr)
        if device == "cpu" and onnx is not None and self.backend == "torch":
            try:
                self.backend, self.net = "onnx", load_onnx(onnx, self.checkpoint, self.model.front, threads)
            except ExportUnusable as exc:
                print(f"fingerprint: torch inference: {exc} (`cloudtune export onnx --run-id {run}` writes one)", file=sys.stderr)
        if device == "cpu" and self.backend == "torch":
            self.net = for_inference(self.model)

    def _fit(self, x: np.ndarray) -> np.ndarray:
        """One segment at the model's rate: the middle ``n`` samples, or zero-padded to ``n``."""
        if len(x) >= self.n:
            start = (len(x) - self.n) // 2
            return x[start : start + self.n]
        return np.pad(x, (0, self.n - len(x)))

    def _resample(self, wave: np.ndarray) -> np.ndarray:
        return audio_io.resample(np.asarray(wave, dtype=np.float32), self.sample_rate, self.model_rate)

    @torch.inference_mode()
    def _vectors(self, segments: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(segments), self.dim), np.float32)
        for i in range(0, len(segments), self.batch_size):
            batch = torch.from_numpy(np.stack(segments[i : i + self.batch_size]))
            out[i : i + len(batch)] = self.net(batch.to(self.device)).float().cpu().numpy()
        return out

    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        return self.embed_spans(waves, [[(0, len(w))] for w in waves])

    def embed_spans(self, waves: Sequence[np.ndarray], spans: Sequence[Sequence[tuple[int, int]]]) -> np.ndarray:
        """The segments ``spans[i]`` of ``waves[i]`` (samples at ``sample_rate``): each wave is resampled once, then cut."""
        ratio, segments = self.model_rate / self.sample_rate, []
        for wave, spans_of in zip(waves, spans, strict=True):
            x = self._resample(wave) if spans_of else None
            segments.extend(self._fit(x[round(a * ratio) : round(b * ratio)]) for a, b in spans_of)
        return self._vectors(segments) if segments else np.zeros((0, self.dim), np.float32)

    def manifest(self) -> dict:
        """What a catalog's vectors were made with; float32 (torch or ONNX: the same vectors) names no precision, int8 does, and
        its scheme (:data:`pipeline.embed.fingerprint_onnx.INT8_SCHEME`: a catalog of another scheme's vectors is embedded anew)."""
        from pipeline.embed.fingerprint_onnx import INT8_SCHEME

        suffix = "" if self.precision == "float32" else f"-{self.precision}-{INT8_SCHEME}"
        version = f"{self.checkpoint.parent.parent.name}/fingerprint-{self.epochs}{suffix}"
        return {"name": self.name, "dim": self.dim, "sample_rate": self.sample_rate, "model_rate": self.model_rate, "checkpoint": str(self.checkpoint),
                "epochs": self.epochs, **self.segmentation, **({} if self.precision == "float32" else {"precision": self.precision}),
                "version": version}
