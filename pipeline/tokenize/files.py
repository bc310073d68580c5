"""Token files: codes [Q, T] plus metadata, as .npz or .pt, written atomically, validated when read."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fsutil import atomic_path

FORMATS = ("npz", "pt")
META_KEYS = ("track_id", "source", "sample_rate", "duration_s", "chunk_index", "num_chunks", "token_shape", "backend", "codec_version")


class TokenFileError(ValueError):
    """A token file that cannot be used; the message starts with its path."""


def _storage_dtype(codes: np.ndarray) -> np.dtype:
    return np.int16 if codes.size == 0 or int(codes.max()) < 2**15 else np.int32


def save_tokens(path: str | Path, codes: np.ndarray, meta: dict[str, Any]) -> Path:
    """Write codes [Q, T] and ``meta`` (must hold META_KEYS) atomically. Stored compactly, read back as int64."""
    path = Path(path)
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{path}: token metadata lacks {', '.join(missing)}")
    codes = np.asarray(codes)
    meta = {**meta, "token_shape": list(codes.shape)}
    with atomic_path(path) as tmp:
        if path.suffix == ".npz":
            np.savez(tmp, codes=codes.astype(_storage_dtype(codes)), meta=np.array(json.dumps(meta)))
        elif path.suffix == ".pt":
            import torch

            torch.save({"codes": torch.from_numpy(codes.astype(np.int64)), "meta": meta}, tmp)
        else:
            raise ValueError(f"{path}: token files end in .npz or .pt")
    return path


def load_tokens(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a token file -> (int64 codes [Q, T], meta). Anything wrong raises TokenFileError naming the file."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                codes, meta = data["codes"], json.loads(str(data["meta"]))
        elif path.suffix == ".pt":
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            codes, meta = obj["codes"].numpy(), obj["meta"]
        else:
            raise TokenFileError(f"{path}: not a token file (expected .npz or .pt)")
    except TokenFileError:
        raise
    except FileNotFoundError:
        raise TokenFileError(f"{path}: token file not found") from None
    except (OSError, ValueError, KeyError, EOFError, RuntimeError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise TokenFileError(f"{path}: corrupt token file ({type(exc).__name__}: {exc})") from None
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise TokenFileError(f"{path}: corrupt token file (codes must be a 2-D integer array, got {codes.dtype} {codes.shape})")
    if list(codes.shape) != list(meta.get("token_shape", [])):
        raise TokenFileError(f"{path}: corrupt token file (codes {list(codes.shape)} but metadata says {meta.get('token_shape')})")
    return codes.astype(np.int64), meta
