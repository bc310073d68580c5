"""Reading and writing safetensors files tensor by tensor, with our own ``pread`` calls at the offsets the file's header gives:
the float checkpoint cast block by block on load (:class:`CastSlice`, pipeline/asr/qwen3.py), the weights quantized to int8 a
block of rows at a time (pipeline/asr/int8.py), and the int8 cache written one tensor at a time (:func:`write_tensors`), so no
whole copy of a model is ever made beside the one being built. The format: 8 bytes of little-endian header length, a JSON
header (each tensor's dtype, shape and byte range in the data; ``__metadata__``: strings), then the data."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a transformers-layout checkpoint (the shards of its index, or model.safetensors); [] for none."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    single = folder / "model.safetensors"
    return [single] if single.is_file() else []


FLOAT_KINDS = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
CAST_CHUNK_BYTES = 16 << 20  # a tensor is read and cast in blocks of rows of about this many bytes (in the target dtype)


def read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[str, list[int], int]]]:
    """A safetensors file's header, read once: its ``__metadata__`` strings ({} when it has none), and each tensor's (dtype as
    the file names it, shape, file offset of its first byte)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    metadata = dict(header.pop("__metadata__", None) or {})
    return metadata, {key: (info["dtype"], info["shape"], 8 + size + info["data_offsets"][0]) for key, info in header.items()}


def tensor_places(path: Path) -> dict[str, tuple[str, list[int], int]]:
    """Each tensor of a safetensors file: (its dtype as the file names it, its shape, the file offset of its first byte)."""
    return read_header(path)[1]


def read_into(fd: int, buffer: memoryview, offset: int) -> None:
    """Fill ``buffer`` with the bytes of ``fd`` from ``offset`` (``pread``, so threads can share the descriptor)."""
    done = 0
    while done < len(buffer):
        got = os.preadv(fd, [buffer[done:]], offset + done)
        if got <= 0:
            raise OSError(f"safetensors file ends inside a tensor (offset {offset + done})")
        done += got


class CastSlice:
    """A lazy tensor of a safetensors file for ``from_pretrained(state_dict=...)``: ``x[...]`` reads it with ``pread`` in row
    blocks of about :data:`CAST_CHUNK_BYTES` (in ``dtype``), casting each block into one tensor of ``dtype``, so no whole copy
    in the checkpoint's dtype is ever made (transformers would read the whole tensor, then cast it: for the 0.6B model's
    151936 x 1024 embedding, 300 MB at once, times its four loader threads). The reads are our own: a slice of safetensors'
    ``pread`` backend reads the whole tensor every time (0.15 s per block of the 0.6B embedding: 6 s of a 14 s load)."""

    def __init__(self, fd: int, offset: int, shape: list[int], stored: torch.dtype, dtype: torch.dtype):
        self.fd, self.offset, self.shape, self.stored, self.dtype = fd, offset, shape, stored, dtype

    def blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, rows [n, elements per row] in the file's dtype) of about :data:`CAST_CHUNK_BYTES` each, in order; each
        block is a view of one staging buffer, valid until the next is read."""
        import torch

        rows = self.shape[0] if self.shape else 1
        row = math.prod(self.shape[1:])  # elements per row (1 for a 1-d tensor or a scalar)
        row_bytes = row * self.stored.itemsize
        step = max(1, CAST_CHUNK_BYTES // max(1, row * max(self.dtype.itemsize, self.stored.itemsize)))
        stage = bytearray(min(step, rows) * row_bytes)
        for start in range(0, rows, step):
            n = min(step, rows - start)
            read_into(self.fd, memoryview(stage)[:n * row_bytes], self.offset + start * row_bytes)
            yield start, torch.frombuffer(stage, dtype=self.stored, count=n * row).view(n, row)

    def __getitem__(self, index: Any) -> torch.Tensor:
        import torch

        out = torch.empty(self.shape, dtype=self.dtype)
        rows_out = out.view(self.shape[0] if self.shape else 1, -1)
        for start, block in self.blocks():
            rows_out[start:start + len(block)] = block
        return out if index is Ellipsis else out[index]


KIND_OF = {f"torch.{name}": kind for kind, name in FLOAT_KINDS.items()} | {"torch.int8": "I8"}  # a torch dtype's name in the header


def write_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """``tensors`` (CPU, contiguous; float32, bfloat16, float16 or int8) as a safetensors file at ``path``, written one tensor
    at a time (safetensors' own ``save_file`` first makes a bytes copy of every tensor). Not atomic: write to a temporary path."""
    import torch

    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key, t in tensors.items():
        size = t.numel() * t.element_size()
        header[key] = {"dtype": KIND_OF[str(t.dtype)], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for t in tensors.values():
            f.write(memoryview(t.detach().contiguous().view(-1).view(torch.uint8).numpy()))

