"""A batch of held-out MNIST images in one request, in every wire format, side by side.

    .venv/bin/python bench/batch.py [--images 2000]

Bodies are built before timing; each row is the best of 3 round trips to one running
`mlbridge serve` (demo model `mnist`). The first row is the original design's parser
(`ast.literal_eval` after translating braces, in-process, parse only) on the same text.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from wolframclient.serializers import export

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import MNIST_DIR, start_server, v2_json
from mlbridge.codecs import v2
from mlbridge.codecs.mathematica import format_list
from mlbridge.training.data import load_mnist_idx

ROUNDS = 3


def best_of(action) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def bodies(images: np.ndarray) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    binary_body, binary_headers = v2.encode_request({"input": images})
    return {
        "CAS Mathematica text": ("/mnist", format_list(images).encode(), {}),
        "CAS WXF (wolframclient)": ("/mnist", export(images, target_format="wxf"), {}),
        "V2 JSON": ("/v2/models/mnist/infer", json.dumps(v2_json(images)).encode(), {}),
        "V2 binary": ("/v2/models/mnist/infer", binary_body, binary_headers),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    count = parser.parse_args().images
    images = (load_mnist_idx(MNIST_DIR)[0][:count] / 255.0).astype(np.float32)
    payloads = bodies(images)
    text = payloads["CAS Mathematica text"][1].decode()
    rows = {
        "original parser (literal_eval, parse only)": (
            best_of(lambda: ast.literal_eval(text.replace("{", "[").replace("}", "]"))),
            len(text),
        )
    }
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(Path(folder) / "home")
        try:
            with httpx.Client(base_url=server.url, headers=server.auth, timeout=600) as client:
                for name, (path, body, headers) in payloads.items():

                    def send(path=path, body=body, headers=headers) -> None:
                        client.post(path, content=body, headers=headers).raise_for_status()

                    rows[name] = (best_of(send), len(body))
        finally:
            server.stop()
    baseline = next(iter(rows.values()))[0]
    print(f"{count} images of 28x28 FP32 in one request")
    print(f"{'':44} {'MB sent':>8} {'seconds':>8} {'speed-up':>8}")
    for name, (seconds, size) in rows.items():
        print(f"{name:44} {size / 1e6:8.1f} {seconds:8.3f} {baseline / seconds:7.0f}x")


if __name__ == "__main__":
    main()
