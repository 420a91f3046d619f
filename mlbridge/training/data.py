"""Data set loaders that need only numpy: MNIST idx files and .npz, CIFAR-10 pickle batches."""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataNotFound

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (raw or gzip) into an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        raw = stream.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES:
        raise ConfigError(f"{path}: not an idx file")
    dtype = np.dtype(IDX_DTYPES[raw[2]]).newbyteorder(">")
    rank = raw[3]
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", rank, offset=4))
    data = np.frombuffer(raw, dtype, offset=4 + 4 * rank)
    if data.size != int(np.prod(shape)):
        raise ConfigError(f"{path}: header says {shape}, file holds {data.size} values")
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
    raise DataNotFound(f"{folder}: no {stem}[.gz]")


# --- Data sets for training: a training range and a held-out report range ----------------

#: With a single idx set (as ../shared/data/mnist holds: t10k only), the first 80% train
#: and the rest is held out: images 0..7999 and 8000..9999 of the 10,000.
SINGLE_SET_TRAIN_FRACTION = 0.8
CIFAR10_SHAPE = (3, 32, 32)


@dataclass
class Dataset:
    """Images and integer labels: the training range and the held-out report range."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_heldout: np.ndarray
    y_heldout: np.ndarray
    labels: tuple[str, ...] = ()

    def scaled(self) -> Dataset:
        """The same data as float32 in [0, 1] (uint8 pixels / 255)."""
        return replace(self, x_train=_scale(self.x_train), x_heldout=_scale(self.x_heldout))


def load_mnist(path: Path | None = None) -> Dataset:
    """MNIST from an idx folder (gzip or raw), a Keras-style .npz, or (no path) Keras' loader."""
    if path is None:
        return _from_keras("mnist")
    if path.is_file() and path.suffix == ".npz":
        return _from_npz(path, "mnist")
    if not path.is_dir():
        raise DataNotFound(f"{path}: expected a folder of MNIST idx files or an .npz file")
    test = load_mnist_idx(path, "t10k")
    try:
        train = load_mnist_idx(path, "train")
    except DataNotFound:
        return _split_single("mnist", *test)
    return Dataset("mnist", *train, *test)


def load_cifar10(path: Path | None = None) -> Dataset:
    """CIFAR-10 from the python-pickle batches folder, a .npz, or (no path) Keras' loader."""
    if path is None:
        return _from_keras("cifar10")
    if path.is_file() and path.suffix == ".npz":
        return _from_npz(path, "cifar10")
    batches = sorted(path.glob("data_batch_*"))
    if not batches or not (path / "test_batch").exists():
        raise DataNotFound(f"{path}: expected CIFAR-10 pickles data_batch_N and test_batch")
    x_train, y_train = _stack([read_cifar_batch(batch) for batch in batches])
    x_test, y_test = read_cifar_batch(path / "test_batch")
    return Dataset("cifar10", x_train, y_train, x_test, y_test, _cifar_label_names(path))


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images (uint8, [N,32,32,3]) and labels."""
    with path.open("rb") as stream:
        batch = pickle.load(stream, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    images = data.reshape(-1, *CIFAR10_SHAPE).transpose(0, 2, 3, 1)
    return images, np.asarray(batch[b"labels"], dtype=np.int64)


def load_dataset(name: str, path: Path | None = None) -> Dataset:
    """The data set ``name`` ('mnist' or 'cifar10') from ``path``."""
    loaders = {"mnist": load_mnist, "cifar10": load_cifar10}
    if name not in loaders:
        raise ConfigError(f"unknown data set {name!r}; expected one of: {', '.join(loaders)}")
    return loaders[name](path)


def split_validation(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A seeded random (train, validation) split of the training range."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"validation fraction must be in [0, 1); got {fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    cut = len(x) - round(len(x) * fraction)
    keep, held = order[:cut], order[cut:]
    return (x[keep], y[keep]), (x[held], y[held])


def _scale(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return images.astype(np.float32)


def _split_single(name: str, images: np.ndarray, labels: np.ndarray) -> Dataset:
    cut = int(len(images) * SINGLE_SET_TRAIN_FRACTION)
    return Dataset(name, images[:cut], labels[:cut], images[cut:], labels[cut:])


def _from_npz(path: Path, name: str) -> Dataset:
    with np.load(path) as arrays:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays.files)
        if missing:
            raise ConfigError(f"{path}: missing arrays {sorted(missing)} (Keras-style .npz)")
        return Dataset(
            name,
            arrays["x_train"],
            _flat(arrays["y_train"]),
            arrays["x_test"],
            _flat(arrays["y_test"]),
        )


def _from_keras(name: str) -> Dataset:
    import keras  # the network download goes through Keras' own cache

    module = getattr(keras.datasets, name)
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as error:  # Keras reports a failed download as a bare Exception
        raise ConfigError(
            f"could not get {name} through Keras ({error}); pass --data PATH"
        ) from error
    return Dataset(name, x_train, _flat(y_train), x_test, _flat(y_test))


def _flat(labels: np.ndarray) -> np.ndarray:
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def _stack(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _cifar_label_names(path: Path) -> tuple[str, ...]:
    meta = path / "batches.meta"
    if not meta.exists():
        return ()
    with meta.open("rb") as stream:
        names = pickle.load(stream, encoding="bytes").get(b"label_names", [])
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
