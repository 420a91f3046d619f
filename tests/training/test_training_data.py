"""Data loaders: MNIST idx (gzip, raw) and .npz, CIFAR-10 pickle batches, the seeded split."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from training_helpers import write_cifar_batches

from mlbridge.errors import ConfigError, DataNotFound
from mlbridge.training.data import (
    load_cifar10,
    load_dataset,
    load_mnist,
    read_cifar_batch,
    split_validation,
)


@pytest.fixture(scope="module")
def shared_mnist(mnist_dir: Path):
    return load_mnist(mnist_dir)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic CIFAR-10 training batches and a test batch, 64 images each."""
    return write_cifar_batches(tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py", 2, 64)


def test_shared_mnist_has_the_fixed_split(shared_mnist) -> None:
    assert shared_mnist.x_train.shape == (8000, 28, 28)
    assert shared_mnist.x_heldout.shape == (2000, 28, 28)
    assert shared_mnist.x_train.dtype == np.uint8
    assert shared_mnist.y_train[:5].tolist() == [7, 2, 1, 0, 4]  # the first t10k labels
    assert set(np.unique(shared_mnist.y_heldout)) == set(range(10))


def test_raw_idx_files_read_like_gzip(tmp_path: Path, mnist_dir: Path, shared_mnist) -> None:
    for gz in mnist_dir.glob("*.gz"):
        with gzip.open(gz) as source, (tmp_path / gz.stem).open("wb") as target:
            shutil.copyfileobj(source, target)
    raw = load_mnist(tmp_path)
    assert np.array_equal(raw.x_heldout, shared_mnist.x_heldout)
    assert np.array_equal(raw.y_train, shared_mnist.y_train)


def test_train_and_test_idx_sets_split_by_file(
    tmp_path: Path, mnist_dir: Path, shared_mnist
) -> None:
    for gz in mnist_dir.glob("*.gz"):
        shutil.copy(gz, tmp_path / gz.name)
        shutil.copy(gz, tmp_path / gz.name.replace("t10k", "train"))
    both = load_mnist(tmp_path)
    assert len(both.x_train) == len(both.x_heldout) == 10000


def test_keras_style_npz(tmp_path: Path, shared_mnist) -> None:
    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        x_train=shared_mnist.x_train[:100],
        y_train=shared_mnist.y_train[:100],
        x_test=shared_mnist.x_heldout[:50],
        y_test=shared_mnist.y_heldout[:50, None],
    )
    data = load_mnist(path)
    assert data.x_train.shape == (100, 28, 28) and data.y_heldout.shape == (50,)
    assert np.array_equal(data.y_heldout, shared_mnist.y_heldout[:50])


def test_npz_without_the_keras_names_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 28, 28)))
    with pytest.raises(ConfigError, match=r"x_test.*x_train"):
        load_mnist(tmp_path / "bad.npz")


def test_scaled_is_float32_in_unit_range(shared_mnist) -> None:
    scaled = shared_mnist.scaled()
    assert scaled.x_train.dtype == np.float32
    assert scaled.x_train.min() == 0.0 and scaled.x_train.max() == 1.0
    assert np.array_equal(scaled.y_train, shared_mnist.y_train)


def test_cifar_pickle_batches(cifar_dir: Path) -> None:
    data = load_cifar10(cifar_dir)
    assert data.x_train.shape == (128, 32, 32, 3) and data.x_heldout.shape == (64, 32, 32, 3)
    assert data.labels[0] == "airplane" and len(data.labels) == 10
    images, _ = read_cifar_batch(cifar_dir / "test_batch")
    flat = np.load(cifar_dir / "test_batch", allow_pickle=True)[b"data"]
    # Channel-major rows: the first 1024 bytes are the red plane of image 0.
    assert np.array_equal(images[0, :, :, 0].reshape(-1), flat[0, :1024])
    assert np.array_equal(images[0, :, :, 2].reshape(-1), flat[0, 2048:])


def test_missing_cifar_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound, match="data_batch_N and test_batch"):
        load_cifar10(tmp_path)


def test_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="mnist, cifar10"):
        load_dataset("svhn", None)


def test_validation_split_is_seeded_and_disjoint() -> None:
    x, y = np.arange(100), np.arange(100)
    (a, _), (b, _) = split_validation(x, y, 0.1, seed=3)
    (c, _), (d, _) = split_validation(x, y, 0.1, seed=3)
    (_, _), (e, _) = split_validation(x, y, 0.1, seed=4)
    assert np.array_equal(a, c) and np.array_equal(b, d) and not np.array_equal(b, e)
    assert len(b) == 10 and not set(a) & set(b) and set(a) | set(b) == set(range(100))
