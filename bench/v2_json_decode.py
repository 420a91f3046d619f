"""V2 JSON request decoding, candidate by candidate: CPU time and peak memory.

    .venv/bin/python -m bench.v2_json_decode            # ~30 s on 2 busy cores
    .venv/bin/python -m bench.v2_json_decode --images 2000

Bodies are what ``python -m bench`` sends as ``v2-json`` (a flat FP32 ``data`` list) for
10,000 MNIST images (the held-out set repeated; synthetic images like MNIST's when
``MLBRIDGE_MNIST`` has none) and for one image. Each candidate runs in its own process:
median CPU ms per decode (``time.thread_time``: other load on the machine moves it
little), the peak memory tracemalloc sees during one decode, and how far the first decode
raises the process's peak RSS (C++ allocations too, which tracemalloc misses; shown for
bodies over 10 MB, where imports do not dominate), each as a multiple of the body.

Candidates: ``orjson`` (the plain route: Python floats, then numpy), ``json_tensors``
(what ``v2.decode_request`` does now), ``simdjson-document`` (pysimdjson parses the whole
body, ``as_buffer`` the data; with a new parser per call, as threads need, and with one
kept), ``msgspec-fromstring`` (msgspec with ``data`` as ``msgspec.Raw``, then
``np.fromstring(sep=",")``; needs msgspec, not a dependency). The last two only read the
numbers: no checks, no errors, so their times are a floor for their route. The last
column, a digest of the decoded array, is the same for every candidate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import psutil

from mlbridge.codecs import json_tensors, v2
from mlbridge.errors import DataNotFound

CANDIDATES = [
    "orjson",
    "json_tensors",
    "simdjson-document-new-parser",
    "simdjson-document-kept-parser",
    "msgspec-fromstring",
]


def images(count: int) -> np.ndarray:
    """``count`` held-out MNIST images as ``python -m bench`` sends them, or look-alikes."""
    try:
        from .run import bulk_images, held_out_images

        return bulk_images(held_out_images(), count)
    except (DataNotFound, FileNotFoundError):
        rng = np.random.default_rng(0)
        pixels = rng.integers(1, 256, (count, 28, 28)) * (rng.random((count, 28, 28)) > 0.8)
        return (pixels / 255).astype(np.float32)


def body(pixels: np.ndarray) -> bytes:
    tensor = {"name": "input", "shape": list(pixels.shape), "datatype": "FP32"}
    document = {"inputs": [{**tensor, "data": np.ascontiguousarray(pixels).ravel()}]}
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def decoder(name: str) -> Callable[[bytes], np.ndarray]:
    """One candidate: body -> the FP32 input array."""
    if name == "orjson":
        json_tensors.MIN_SPAN = 1 << 62  # no data is large enough: orjson reads it all
        return lambda b: v2.decode_request(b).inputs["input"]
    if name == "json_tensors":
        return lambda b: v2.decode_request(b).inputs["input"]
    if name.startswith("simdjson-document"):
        import simdjson

        kept = simdjson.Parser()

        def whole_document(b: bytes) -> np.ndarray:
            parser = kept if name.endswith("kept-parser") else simdjson.Parser()
            entry = parser.parse(b)["inputs"][0]
            numbers = np.frombuffer(entry["data"].as_buffer(of_type="d"), np.float64)
            shape = list(entry["shape"])
            del entry  # the parser is free for the next call
            return numbers.astype(np.float32).reshape(shape)

        return whole_document
    import msgspec

    tensor_type = msgspec.defstruct("Tensor", [("shape", list[int]), ("data", msgspec.Raw)])
    read = msgspec.json.Decoder(msgspec.defstruct("Request", [("inputs", list[tensor_type])]))

    def raw_then_fromstring(b: bytes) -> np.ndarray:
        tensor = read.decode(b).inputs[0]
        text = bytes(tensor.data)[1:-1]
        return np.fromstring(text, np.float64, sep=",").astype(np.float32).reshape(tensor.shape)

    return raw_then_fromstring


def measure(name: str, path: Path, repeats: int) -> dict[str, float]:
    """In this process: the candidate's CPU ms per decode, traced peak, RSS growth (MB)."""
    payload = path.read_bytes()
    decode = decoder(name)
    rss_before = psutil.Process().memory_info().rss
    expected = decode(payload)  # the first decode: how far the process's peak RSS grows
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    batch = 1 if len(payload) > 1 << 20 else 50  # small bodies: timer overhead amortised
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        for _ in range(batch):
            decode(payload)
        times.append((time.thread_time() - start) / batch * 1e3)
    tracemalloc.start()
    result = decode(payload)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(result, expected)
    digest = hashlib.sha256(result.tobytes()).hexdigest()[:12]
    return {"ms": statistics.median(times), "traced": traced, "rss_growth": max(rss_growth, 0),
            "array": digest}  # fmt: skip


def run_child(name: str, path: Path, repeats: int) -> dict[str, float] | str:
    command = [sys.executable, "-m", "bench.v2_json_decode", "--child", name, str(path)]
    done = subprocess.run(
        [*command, "--repeats", str(repeats)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        return done.stderr.strip().splitlines()[-1]
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--child", nargs=2, metavar=("CANDIDATE", "BODY"), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    if options.child:
        name, path = options.child
        print(json.dumps(measure(name, Path(path), options.repeats)))
        return
    pixels = images(options.images)
    with tempfile.TemporaryDirectory() as folder:
        for count, repeats in ((options.images, 5), (1, 101)):
            path = Path(folder) / f"{count}.json"
            path.write_bytes(body(pixels[:count]))
            size = path.stat().st_size
            print(f"\n{count} image(s): a {size:,} byte body")
            print(f"{'candidate':32} {'CPU ms':>9} {'traced':>9} {'RSS growth':>11}  array")
            for name in CANDIDATES:
                row = run_child(name, path, repeats)
                if isinstance(row, str):
                    print(f"{name:32} skipped: {row}")
                    continue
                traced = f"{row['traced'] / size:.1f}x"
                growth = f"{row['rss_growth'] / size:.1f}x" if size > 10**7 else "-"
                print(f"{name:32} {row['ms']:9.3f} {traced:>9} {growth:>11}  {row['array']}")


if __name__ == "__main__":
    main()
