"""Hardware facts: `--device auto|cpu|cuda` everywhere (auto picks CUDA when torch sees a GPU), the dtype a model runs in,
torch's CPU thread count, the C allocator's arenas of a many-threaded process."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.names import DEVICES, DTYPES  # DTYPES: auto and the torch dtype names a setting may take

if TYPE_CHECKING:
    import torch


def resolve_device(spec: str = "auto") -> str:
    import torch

    if spec not in DEVICES and not spec.startswith("cuda:"):
        raise ValueError(f"--device {spec!r}: expected one of {', '.join(DEVICES)} (or cuda:N)")
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: no CUDA device is available (torch {torch.__version__}); use --device cpu or auto")
    return spec


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op CPU thread count set to ``threads`` (when > 0) for the duration, then put back: no lasting side effect
    on the process (a DAG's dag.test() runs every task in one)."""
    import torch

    previous = torch.get_num_threads()
    if threads > 0 and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX-BF16, Arm BF16), read from /proc/cpuinfo.

    Elsewhere (or when unsure) bfloat16 would be emulated, which is slower than float32."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith(("flags", "Features"))), [])
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(flags))


def resolve_dtype(dtype: str, device: str, setting: str = "dtype", cpu_bfloat16: bool = True) -> torch.dtype:
    """``auto``: bfloat16 on CUDA, and on CPUs with native bfloat16 when ``cpu_bfloat16``; float32 otherwise. Else one of
    :data:`DTYPES`; ``setting`` names the config key in the error (``wav2vec2.dtype``). On this repo's dev CPU (AVX512-BF16)
    bfloat16 runs wav2vec2-base 2.2x faster than float32, and its vectors differ from float32's by 1 - cos < 2e-5."""
    import torch

    if dtype == "auto":
        native = device.startswith("cuda") or (cpu_bfloat16 and cpu_has_native_bf16())
        return torch.bfloat16 if native else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"{setting} {dtype!r}: expected one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


M_ARENA_MAX = -8  # <malloc.h>


def limit_malloc_arenas(arenas: int) -> int | None:
    """Cap glibc's malloc arenas for this process (``mallopt(M_ARENA_MAX)``, arenas made from now on) and for the processes it
    starts (``MALLOC_ARENA_MAX``). Each thread that allocates gets an arena of its own up to 8 per core, and memory freed in one
    is not reused by another: a service that decodes on many threads grows by fragmentation. A ``MALLOC_ARENA_MAX`` already in
    the environment wins. Returns the cap in force, or None where there is no glibc (then nothing changes)."""
    arenas = int(os.environ.get("MALLOC_ARENA_MAX") or arenas)
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        if not libc.mallopt(M_ARENA_MAX, arenas):  # returns 1 on success; musl has no mallopt
            return None
    except (OSError, AttributeError):
        return None
    os.environ["MALLOC_ARENA_MAX"] = str(arenas)
    return arenas
