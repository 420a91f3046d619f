"""Reading and writing arrays for the CLI: .npy, .npz, .json and stdin."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .errors import ConfigError


def read_array(source: str, key: str | None = None) -> np.ndarray:
    """Read one array from an .npy/.npz/.json file, or JSON from stdin when '-'."""
    if source == "-":
        return _from_json(sys.stdin.read(), "stdin")
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".npz":
        return _from_npz(path, key)
    if path.suffix == ".json":
        return _from_json(path.read_text(), str(path))
    raise ConfigError(f"{path}: expected an .npy, .npz or .json file")


def write_array(path: Path, array: np.ndarray) -> None:
    """Write an array as .npy, or as JSON for any other suffix."""
    if path.suffix == ".npy":
        np.save(path, array)
    else:
        path.write_text(json.dumps(array.tolist()))


def _from_npz(path: Path, key: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.keys())
        if not names:
            raise ConfigError(f"{path}: holds no arrays")
        if key is not None and key not in names:
            raise ConfigError(f"{path}: no array {key!r}; it holds {', '.join(names)}")
        return archive[key or names[0]]


def _from_json(text: str, where: str) -> np.ndarray:
    """Numbers as JSON gives them; the client casts them to the model's datatype."""
    try:
        array = np.asarray(json.loads(text))
    except ValueError as error:
        raise ConfigError(f"{where}: expected a JSON array of numbers ({error})") from None
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{where}: expected a rectangular JSON array of numbers")
    return array
