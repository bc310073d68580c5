"""One place that turns a backend name (configs/asr.yaml ``asr.backend``, ``--backend``) into a :class:`Transcriber`.

Each backend is imported only when asked for, so the PocketSphinx baseline never loads torch and Qwen3-ASR never loads
PocketSphinx."""

from __future__ import annotations

import importlib.util

from pipeline.asr.base import Transcriber
from pipeline.config import AsrConfig
from pipeline.names import ASR_BACKENDS

QWEN3_MODULE = "pipeline.asr.qwen3"


class AsrNotConfigured(ValueError):
    """A backend that cannot start from what it was given (no model, a module missing): one line, the user's to fix."""


def unconfigured(backend: str, cfg: AsrConfig, model: str | None = None) -> str | None:
    """Why ``backend`` cannot start from ``cfg`` (and ``model``), without loading anything; None when it can be tried."""
    if backend == "pocketsphinx":
        return "pocketsphinx: --model is for qwen3-asr; pocketsphinx takes pocketsphinx.hmm, .lm and .dict in the config" if model else None
    if backend == "qwen3-asr":
        if not (model or cfg.qwen3_asr.model):
            return ("qwen3_asr.model is not set: pass --model DIR (a local Qwen3-ASR checkpoint, or a hub id when online) "
                    "or set qwen3_asr.model (CLOUDTUNE__QWEN3_ASR__MODEL)")
        if importlib.util.find_spec(QWEN3_MODULE) is None:
            return f"qwen3-asr: backend unavailable in this install (no module {QWEN3_MODULE}); --backend pocketsphinx works offline"
        return None
    return f"unknown ASR backend {backend!r} (one of {', '.join(ASR_BACKENDS)})"


def get_transcriber(backend: str, cfg: AsrConfig, model: str | None = None, device: str | None = None, dtype: str | None = None) -> Transcriber:
    """The ``backend`` (``qwen3-asr`` | ``pocketsphinx``) with its section of ``cfg`` (:func:`pipeline.config.load_asr`);
    ``model``, ``device`` and ``dtype`` override ``qwen3_asr``'s (None: keep). PocketSphinx runs on the CPU with its
    ``pocketsphinx`` paths (bundled model by default): ``model`` is refused there, ``device``/``dtype`` ignored."""
    reason = unconfigured(backend, cfg, model)
    if reason is not None:
        raise AsrNotConfigured(reason)
    if backend == "pocketsphinx":
        from pipeline.asr.pocketsphinx_backend import PocketsphinxTranscriber

        return PocketsphinxTranscriber(cfg.pocketsphinx)
    if backend == "qwen3-asr":
        settings = cfg.qwen3_asr
        model = model or settings.model
        try:
            from pipeline.asr.qwen3 import load_qwen3_asr
        except ImportError as exc:
            raise AsrNotConfigured(f"qwen3-asr: backend unavailable in this install ({exc}); --backend pocketsphinx works offline") from None
        return load_qwen3_asr(model, settings, device=device, dtype=dtype)
    raise AssertionError(backend)  # unconfigured() named every other backend
