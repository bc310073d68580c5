"""`--device auto|cpu|cuda` everywhere: auto picks CUDA when torch sees a GPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

DEVICES = ("auto", "cpu", "cuda")


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
