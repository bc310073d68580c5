"""Image data for the dream generator: MNIST from local IDX files, or scikit-learn's bundled digits.

IDX (the MNIST file format): a 4-byte magic number ``00 00 TT NN`` (TT: element type, 0x08 = unsigned
byte; NN: number of dimensions), NN big-endian uint32 sizes, then the elements in C order, big-endian.
``train-images-idx3-ubyte`` is magic 0x00000803 with sizes (60000, 28, 28). Files may be gzipped.
Nothing is downloaded: the files must be under the data folder already.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

# IDX element type code -> numpy dtype (big-endian where it matters)
IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

# Looked for in this order under the data folder (torchvision keeps them in MNIST/raw/).
MNIST_TRAIN_IMAGES = ("train-images-idx3-ubyte", "train-images.idx3-ubyte")
MNIST_FOLDERS = (".", "MNIST/raw")


class IdxError(ValueError):
    """A file is not a valid IDX file; the message names the file and what is wrong."""


class MnistNotFound(FileNotFoundError):
    """The MNIST files are not in the data folder; the message says which files to put where."""


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise IdxError(f"{path}: corrupt gzip data ({exc})") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into an array of its dtype and dims (native byte order)."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise IdxError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\0\0" or code not in IDX_DTYPES or ndim == 0:
        raise IdxError(f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x000008NN for unsigned bytes with NN dimensions, "
                       "e.g. 0x00000803 for MNIST images)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path}: truncated IDX header ({ndim} dimensions need {header} bytes, the file has {len(raw)})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise IdxError(f"{path}: {len(raw) - header} data bytes, expected {expected} for dims {'x'.join(map(str, dims))} of {dtype.name} "
                       "(truncated or corrupt)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def idx_bytes(array: np.ndarray) -> bytes:
    """An array as IDX bytes (the inverse of read_idx): for tests and for writing your own data sets."""
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = np.dtype(array.dtype).newbyteorder("=")
    if native not in codes:
        raise ValueError(f"dtype {array.dtype}: IDX holds only {', '.join(sorted(str(d) for d in codes))}")
    big = array.astype(IDX_DTYPES[codes[native]], copy=False)
    return bytes([0, 0, codes[native], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + np.ascontiguousarray(big).tobytes()


def find_mnist(data_dir: str | Path) -> Path:
    """The MNIST training images file under ``data_dir`` (see MNIST_FOLDERS / MNIST_TRAIN_IMAGES), gzipped or not."""
    root = Path(data_dir)
    for folder in MNIST_FOLDERS:
        for name in MNIST_TRAIN_IMAGES:
            for suffix in ("", ".gz"):
                path = root / folder / f"{name}{suffix}"
                if path.is_file():
                    return path
    raise MnistNotFound(f"MNIST training images not found in {root.resolve()}: put {MNIST_TRAIN_IMAGES[0]} (or {MNIST_TRAIN_IMAGES[0]}.gz) "
                        f"in {root}/ or {root}/MNIST/raw/ (nothing is downloaded here), or use --dataset digits to train offline on "
                        "scikit-learn's bundled handwritten digits")


def load_mnist(data_dir: str | Path) -> np.ndarray:
    """MNIST training images as float32 [N, 28, 28] in [0, 1] (what torchvision's ToTensor gives)."""
    path = find_mnist(data_dir)
    images = read_idx(path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise IdxError(f"{path}: expected unsigned-byte images N x 28 x 28, found {images.dtype} {'x'.join(map(str, images.shape))}")
    return images.astype(np.float32) / 255.0


def load_digits_28() -> np.ndarray:
    """scikit-learn's bundled handwritten digits (1797 real 8x8 scans, values 0..16) scaled to [0, 1] and framed like MNIST
    (whose digits fill a 20x20 box centered in 28x28): upscaled bilinearly to 20x20, then a 4-pixel black margin.
    float32 [1797, 28, 28], so the MNIST model takes them unchanged."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    small = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0)  # [N, 8, 8]
    box = F.interpolate(small[:, None], size=(20, 20), mode="bilinear", align_corners=False)[:, 0].clamp_(0.0, 1.0)
    return F.pad(box, (4, 4, 4, 4)).numpy()


def load_images(dataset: str, data_dir: str | Path) -> np.ndarray:
    if dataset == "mnist":
        return load_mnist(data_dir)
    if dataset == "digits":
        return load_digits_28()
    raise ValueError(f"--dataset {dataset!r}: expected mnist or digits")
