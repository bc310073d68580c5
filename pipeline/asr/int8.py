"""Weight-only int8 for a model's linear layers (``qwen3_asr.quantize: int8``): each ``nn.Linear`` becomes an
:class:`Int8Linear` holding its weight as int8 with one scale per output row (symmetric, max |w| of the row to 127), the
activations staying in the model's dtype. A weight takes a quarter of its float32 bytes and half of bfloat16's; on the CPU the
product runs in PyTorch's ``_weight_int8pack_mm`` kernel (the one gpt-fast's int8 mode uses), with bfloat16 activations.

On a 2-core AVX2 CPU, a 3072 x 1024 layer: one row (a decoding step) 0.25 ms against 0.43 in bfloat16 and 1.09 in float32,
64 rows 8 ms against 23 and 9 ms; the kernel's float32 path is 25x slower, hence bfloat16 activations (docs/asr.md).
Elsewhere (CUDA, other dtypes, an input width the kernel does not take) the int8 weight is cast to the activations' dtype and
the row scales applied after the product: the same numbers, without the kernel's speed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.asr.tensor_files import FLOAT_KINDS, CastSlice, read_header, read_into, tensor_places, weight_files, write_tensors
from pipeline.fsutil import atomic_path

log = logging.getLogger(__name__)

KERNEL_WIDTH_MULTIPLE = 8  # the CPU kernel takes inputs whose width is a multiple of this (an odd width crashed it: measured)
CACHE_FORMAT = "cloudtune-int8-rows-v1"  # what an int8 cache file holds; a file of another format is made again


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with ``W = weight * scales[:, None]``: ``weight`` int8 [out, in], ``scales`` [out] in the activations'
    dtype, ``bias`` [out] or None."""

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)

    @classmethod
    def from_blocks(cls, blocks: Iterable[tuple[int, torch.Tensor]], shape: tuple[int, int], bias: torch.Tensor | None,
                    dtype: torch.dtype) -> Int8Linear:
        """Quantize a weight of ``shape`` given as blocks of rows (start row, float tensor): only one block in a float dtype at a
        time, so a large layer (a 151936-row vocabulary head) never needs a whole float copy. Each row's int8 values are
        rounded against its scale as stored (in ``dtype``), so ``weight * scales`` is exactly what the product uses."""
        weight = torch.empty(shape, dtype=torch.int8)
        scales = torch.empty(shape[0], dtype=dtype)
        for start, block in blocks:  # in place on one float copy of the block: a same-sized temporary the allocator reuses
            rows = block.to(torch.float32, copy=True)  # never the caller's tensor, even when it is float32
            scale = (torch.maximum(rows.amax(dim=1), -rows.amin(dim=1)) / 127.0).clamp(min=torch.finfo(torch.float32).tiny).to(dtype)
            weight[start:start + len(rows)].copy_(rows.div_(scale.float()[:, None]).round_().clamp_(-127, 127))
            scales[start:start + len(rows)] = scale
        return cls(weight, scales, None if bias is None else bias.detach().to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.device.type == "cpu" and flat.dtype == self.scales.dtype and self.in_features % KERNEL_WIDTH_MULTIPLE == 0:
            out = torch._weight_int8pack_mm(flat.contiguous(), self.weight, self.scales)
        else:
            out = F.linear(flat, self.weight.to(flat.dtype)) * self.scales.to(flat.dtype)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8 per-row scales"


def dequantized(layer: Int8Linear) -> torch.Tensor:
    """The float32 weight ``layer`` multiplies by (tests, and checks of a quantized model against its float one)."""
    return layer.weight.float() * layer.scales.float()[:, None]


def _from_cache(cache: Path, linears: list[tuple[str, nn.Linear]], dtype: torch.dtype) -> dict[str, Int8Linear] | None:
    """The layers of an int8 cache file, read with ``pread``; None when it is not one of this format for these layers."""
    metadata, places = read_header(cache)
    if metadata.get("format") != CACHE_FORMAT:
        return None
    want = {f"{name}.{part}" for name, _ in linears for part in ("weight", "scales")}
    if not want <= places.keys():
        return None
    out = {}
    with open(cache, "rb") as f:
        fd = f.fileno()
        for name, layer in linears:
            (wkind, wshape, woff), (skind, sshape, soff) = places[f"{name}.weight"], places[f"{name}.scales"]
            if wkind != "I8" or wshape != list(layer.weight.shape) or FLOAT_KINDS.get(skind) != str(dtype).removeprefix("torch.") or sshape != wshape[:1]:
                return None
            weight, scales = torch.empty(wshape, dtype=torch.int8), torch.empty(sshape, dtype=dtype)
            read_into(fd, memoryview(weight.numpy()).cast("B"), woff)
            read_into(fd, memoryview(scales.view(torch.uint8).numpy()).cast("B"), soff)
            out[name] = Int8Linear(weight, scales, None if layer.bias is None else layer.bias.detach().to(dtype))
    return out


def _quantized(net: nn.Module, folder: Path, linears: list[tuple[str, nn.Linear]], dtype: torch.dtype) -> tuple[dict[str, Int8Linear], int]:
    """Each layer quantized, and how many of them from the checkpoint's file. A layer whose weight the checkpoint holds in a
    float dtype is read with ``pread`` in row blocks (:meth:`CastSlice.blocks`): the memory-mapped pages of the float weight
    that transformers loaded in place are never touched, so they never count in the process's RSS, and no whole float copy of
    a layer is made; a tied head is read from its embedding's tensor. Any other layer is quantized from the weight it holds."""
    out, from_file = {}, 0
    with contextlib.ExitStack() as stack:
        slices: dict[str, CastSlice] = {}
        for path in weight_files(folder):
            fd = os.open(path, os.O_RDONLY)
            stack.callback(os.close, fd)
            for key, (kind, shape, offset) in tensor_places(path).items():
                if kind in FLOAT_KINDS and len(shape) == 2:
                    slices[key] = CastSlice(fd, offset, shape, getattr(torch, FLOAT_KINDS[kind]), torch.float32)
        key_of = {t.data_ptr(): k for k, t in net.state_dict(keep_vars=True).items() if k in slices}  # tied weights: one storage
        for name, layer in linears:
            key = key_of.get(layer.weight.data_ptr())
            if key is not None and list(slices[key].shape) == list(layer.weight.shape):
                blocks, from_file = slices[key].blocks(), from_file + 1
            else:
                blocks = [(0, layer.weight.detach())]
            out[name] = Int8Linear.from_blocks(blocks, tuple(layer.weight.shape), layer.bias, dtype)
    return out, from_file


def quantize_linears(net: nn.Module, folder: Path, dtype: torch.dtype, cache: Path) -> str:
    """Replace every ``nn.Linear`` of ``net`` (loaded from ``folder``) by an :class:`Int8Linear` with ``dtype`` activations.
    The int8 weights and scales are kept in ``cache`` (a safetensors file, written atomically on the first load of a
    checkpoint) and read from it on every later load: quantizing the 0.6B model takes about 10 s on 2 cores, reading it back
    well under one. Returns a few words on what was done, for the load's log line."""
    linears = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    layers = None
    if cache.is_file():
        try:
            layers = _from_cache(cache, linears, dtype)
        except (OSError, ValueError) as exc:  # unreadable (truncated, not safetensors): made again
            log.warning("qwen3-asr: int8 cache %s is unreadable (%s); quantizing again", cache, exc)
    if layers is not None:
        how = f"read from {cache}"
    else:
        layers, from_file = _quantized(net, folder, linears, dtype)
        how = f"{from_file} quantized from the checkpoint's file"
        try:
            tensors = {f"{name}.{part}": getattr(layer, part) for name, layer in layers.items() for part in ("weight", "scales")}
            with atomic_path(cache) as tmp:
                write_tensors(tmp, tensors, {"format": CACHE_FORMAT, "source": str(folder)})
            how += f", kept in {cache}"
        except OSError as exc:  # a read-only home: quantize again next time
            log.warning("qwen3-asr: cannot keep the int8 weights in %s (%s); they are quantized again on every load", cache, exc)
    for name, layer in layers.items():
        net.set_submodule(name, layer)
    return f"int8 weights in {len(layers)} linear layers ({how})"
