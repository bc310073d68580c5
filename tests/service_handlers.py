"""Handlers for the model-service tests: hosted by a real worker process, they really crash, hang and recover."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


class FaultyHandler:
    def __init__(self, state_dir: str | None = None, fail_at_start: bool = False):
        if fail_at_start:
            raise RuntimeError("cannot open the model: weights file is corrupt")
        self.state_dir = Path(state_dir) if state_dir else None

    def capabilities(self) -> dict:
        return {"name": "faulty", "max_duration_s": 2.0, "formats": ["float32-ndarray"]}

    def echo(self, value=None, array=None, sampling_rate=None) -> dict:
        out = {"value": value, "pid": os.getpid()}
        if array is not None:
            out["array"] = np.asarray(array) * 2
        return out

    def embed(self, array, sampling_rate) -> dict:
        if sampling_rate <= 0:
            raise ValueError(f"sampling_rate: expected a positive number, got {sampling_rate}")
        return {"embedding": np.asarray([array.mean(), array.std(), float(sampling_rate)], dtype=np.float32)}

    def chatty(self) -> dict:
        print("a library printing to stdout")  # must not corrupt the protocol
        return {"ok": True}

    def crash(self, code: int = 3) -> None:
        os._exit(code)

    def hang(self, seconds: float = 60.0) -> dict:
        time.sleep(seconds)
        return {"slept": seconds}

    def bad_input(self, message: str = "audio.array: not a number") -> None:
        raise ValueError(message)

    def broken(self) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    def crash_once(self, name: str) -> dict:
        """Crash the first time for ``name`` (a marker file survives the restart), answer afterwards."""
        marker = self.state_dir / f"{name}.crashed"  # type: ignore[operator]
        if not marker.exists():
            marker.touch()
            os._exit(5)
        return {"recovered": True, "pid": os.getpid()}
