"""Helpers for the training tests: the CLI in process, V2 requests, synthetic CIFAR-10.

A plain module beside the tests that use it (``from training_helpers import ...``); the
helpers every test shares live in ``tests/support`` (``from support import ...``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import httpx
import numpy as np
from click.testing import CliRunner

CIFAR10_NAMES = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]


def run_cli(*args: str, expect: int = 0) -> str:
    """Run `mlbridge ARGS` in process; assert its exit code; return its output."""
    from mlbridge.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (
        f"exit {result.exit_code}:\n{result.output}\n{result.exception!r}"
    )
    return result.output


def infer(server, name: str, images: np.ndarray) -> np.ndarray:
    """POST a V2 JSON request for ``images`` to ``server``; return the output as an array."""
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": list(images.shape),
                "datatype": "FP32",
                "data": images.reshape(-1).tolist(),
            }
        ]
    }
    reply = httpx.post(
        f"{server.url}/v2/models/{name}/infer", json=body, headers=server.auth, timeout=30
    )
    assert reply.status_code == 200, reply.text
    (output,) = reply.json()["outputs"]
    assert output["name"] == "output"
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def write_cifar_batches(folder: Path, train_batches: int, per_batch: int, seed: int = 0) -> Path:
    """CIFAR-10 python-pickle batches of random images, in the original file layout."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, train_batches + 1)] + ["test_batch"]
    for name in names:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": CIFAR10_NAMES, b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder
