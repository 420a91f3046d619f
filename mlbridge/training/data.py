"""Data set loaders that need only numpy: MNIST idx files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (raw or gzip) into an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        raw = stream.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file")
    dtype = np.dtype(IDX_DTYPES[raw[2]]).newbyteorder(">")
    rank = raw[3]
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", rank, offset=4))
    data = np.frombuffer(raw, dtype, offset=4 + 4 * rank)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, file holds {data.size} values")
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist_idx(folder: Path, prefix: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, [N,28,28]) and labels from ``<prefix>-*-idx?-ubyte[.gz]``."""
    images = _find(folder, f"{prefix}-images-idx3-ubyte")
    labels = _find(folder, f"{prefix}-labels-idx1-ubyte")
    return read_idx(images), read_idx(labels)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{folder}: no {stem}[.gz]")
