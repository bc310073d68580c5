"""The audio request contract: ``{"audio": {"array": [...], "sampling_rate": N}}``, one mono clip as JSON.

``cloudtune embed`` reads it on stdin, and the model-service handlers check the same fields (``array``,
``sampling_rate``) of each request; an HTTP service or ASR can take clips the same way. A bad clip is a
ValueError with a one-line reason naming the field (``audio.array[3]: not finite (nan)``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def check_audio(array: Any, sampling_rate: Any, max_seconds: float | None = None, where: str = "audio",
                limit_name: str | None = None) -> tuple[np.ndarray, int]:
    """Validate one clip of the contract: a flat, non-empty list (or 1-D array) of finite numbers that fit in float32, and a
    positive whole number of Hz; at most ``max_seconds`` long when given (``limit_name``, the config key of that limit, is
    named in the error). Returns (float32 wave, rate).

    Raises ValueError with a one-line reason naming the field."""
    if array is None:
        raise ValueError(f"no audio: {where}.array is missing")
    if isinstance(array, np.ndarray):
        if array.ndim != 1 or array.dtype.kind not in "fiu":
            raise ValueError(f"{where}.array: expected a flat list of numbers, got an array of shape {list(array.shape)} and dtype {array.dtype}")
        wave = array
    else:
        if not isinstance(array, list):
            raise ValueError(f"{where}.array: expected a list of numbers, got {type(array).__name__}")
        bad = next((i for i, v in enumerate(array) if type(v) not in (int, float)), None)
        if bad is not None:
            raise ValueError(f"{where}.array[{bad}]: not a number ({json.dumps(array[bad])[:40]})")
        try:
            wave = np.asarray(array, dtype=np.float64)
        except OverflowError:
            idx = next(i for i, v in enumerate(array) if type(v) is int and abs(v) > 2**1023)
            raise ValueError(f"{where}.array[{idx}]: {str(array[idx])[:20]}... does not fit in float32") from None
    if wave.size == 0:
        raise ValueError(f"no audio: {where}.array is empty")
    finite = np.isfinite(wave)
    if not finite.all():
        idx = int(np.argmin(finite))
        raise ValueError(f"{where}.array[{idx}]: not finite ({wave[idx]})")
    if wave.dtype != np.float32:
        too_big = np.abs(wave) > np.finfo(np.float32).max
        if too_big.any():
            idx = int(np.argmax(too_big))
            raise ValueError(f"{where}.array[{idx}]: {float(wave[idx])!r} does not fit in float32")
        wave = wave.astype(np.float32)
    if type(sampling_rate) not in (int, float) and not isinstance(sampling_rate, np.integer):
        raise ValueError(f"{where}.sampling_rate: expected a positive number, got {json.dumps(sampling_rate) if sampling_rate is not None else 'nothing'}")
    if not math.isfinite(sampling_rate) or sampling_rate <= 0 or int(sampling_rate) != sampling_rate:
        raise ValueError(f"{where}.sampling_rate: expected a positive whole number of Hz, got {sampling_rate}")
    sr = int(sampling_rate)
    if max_seconds is not None and wave.size / sr > max_seconds:
        named = f" ({limit_name})" if limit_name else ""
        raise ValueError(f"{where}.array: {wave.size / sr:.1f} s of audio is over the {max_seconds:g} s limit{named}")
    return wave, sr


def parse_request(text: str, max_seconds: float | None = None, limit_name: str | None = None) -> tuple[np.ndarray, int]:
    """The contract's input, JSON text ``{"audio": {"array": [...], "sampling_rate": N}}`` -> (float32 wave, rate), checked
    by :func:`check_audio`. Raises ValueError with a one-line reason."""
    if not text.strip():
        raise ValueError("no audio: the input is empty (expected {\"audio\": {\"array\": [...], \"sampling_rate\": N}})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"input: not valid JSON: {exc}") from None
    audio = data.get("audio") if isinstance(data, dict) else None
    if not isinstance(audio, dict):
        raise ValueError("no audio: expected a JSON object {\"audio\": {\"array\": [...], \"sampling_rate\": N}}")
    return check_audio(audio.get("array"), audio.get("sampling_rate"), max_seconds, limit_name=limit_name)
