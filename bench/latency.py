"""One MNIST image per request, sequentially, over loopback: the original design vs mlbridge.

    .venv/bin/python bench/latency.py [--requests 2000]

Starts both servers on free ports, sends the same held-out images to each, checks the
answers agree, and prints p50/p99 latency, requests per second and the ratio to the
original design. Client and servers share the machine's cores; compare ratios, not
absolute numbers, across machines.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from conftest import MNIST_DIR, start_server  # noqa: E402
from mlbridge.codecs import v2  # noqa: E402
from mlbridge.codecs.mathematica import format_list, parse_list  # noqa: E402
from mlbridge.registry import DEMO_MODELS  # noqa: E402
from mlbridge.training.data import load_mnist_idx  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure(
    port: int, path: str, bodies: list[bytes], headers: dict[str, str], new_connection: bool
) -> tuple[np.ndarray, list[bytes]]:
    """Seconds per request and the replies."""
    times, replies = [], []
    connection = http.client.HTTPConnection("127.0.0.1", port)
    for body in bodies:
        if new_connection:
            connection = http.client.HTTPConnection("127.0.0.1", port)
        start = time.perf_counter()
        connection.request("POST", path, body=body, headers=headers)
        reply = connection.getresponse().read()
        times.append(time.perf_counter() - start)
        replies.append(reply)
    return np.asarray(times), replies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    images = (load_mnist_idx(MNIST_DIR)[0][8000:10000] / 255.0).astype(np.float32)
    texts = [format_list(images[i % 2000]).encode() for i in range(args.requests)]
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(Path(folder) / "home")
        port = int(server.url.rsplit(":", 1)[1])
        original_port = free_port()
        original = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "original_design.py"),
                str(DEMO_MODELS / "mnist.onnx"),
                str(original_port),
                str(server.token_file),
            ]
        )
        time.sleep(2)
        try:
            secret = server.token.encode()
            rows = {
                "original design (text, new connection)": measure(
                    original_port, "/", [secret + b"\n" + t for t in texts], {}, True
                ),
                "mlbridge CAS text, original body": measure(
                    port, "/mnist", [secret + b"\n" + t for t in texts], {}, False
                ),
                "mlbridge CAS text, Bearer header": measure(
                    port, "/mnist", texts, server.auth, False
                ),
                "mlbridge V2 binary": measure(
                    port, "/v2/models/mnist/infer", *v2_binary(images, args.requests, server)
                ),
            }
        finally:
            original.terminate()
            server.stop()
    report(rows)


def v2_binary(images: np.ndarray, count: int, server) -> tuple[list[bytes], dict, bool]:
    requests = [v2.encode_request({"input": images[i % 2000][np.newaxis]}) for i in range(count)]
    return [body for body, _ in requests], {**server.auth, **requests[0][1]}, False


def report(rows: dict[str, tuple[np.ndarray, list[bytes]]]) -> None:
    baseline = np.median(next(iter(rows.values()))[0])
    first_reply = parse_list(next(iter(rows.values()))[1][0].replace(b"e", b"*^"))
    print(f"{'':42} {'p50 us':>8} {'p99 us':>8} {'req/s':>8} {'speed-up':>8}")
    for name, (times, replies) in rows.items():
        if not replies[0].startswith(b'{"'):
            assert np.allclose(
                parse_list(replies[0].replace(b"e", b"*^")), first_reply, atol=1e-4
            ), name
        p50, p99 = np.median(times), np.percentile(times, 99)
        print(
            f"{name:42} {p50 * 1e6:8.0f} {p99 * 1e6:8.0f} {1 / times.mean():8.0f} "
            f"{baseline / p50:7.1f}x"
        )
    print(f"(cpu count {os.cpu_count()}, {len(times)} requests each)")


if __name__ == "__main__":
    main()
