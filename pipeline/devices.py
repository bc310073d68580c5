"""`--device auto|cpu|cuda` everywhere: auto picks CUDA when torch sees a GPU."""

from __future__ import annotations

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
