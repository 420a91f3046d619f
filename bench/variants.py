"""mlbridge against itself: what a setting costs one request at a time.

    .venv/bin/python -m bench.variants
    .venv/bin/python -m bench.variants --ref HEAD   # and the request path as it is at HEAD

Starts ``mlbridge serve`` with its defaults, with dynamic batching off
(``--max-batch-size 1``), with one onnxruntime thread (``--threads 1``) and with both,
then sends each the same one-image requests, sequentially on one keep-alive connection,
3 repetitions interleaved; prints p50 and server CPU per request (medians). Pinned as
``python -m bench`` pins (client CPU 0, servers CPU 1). Used by docs/performance.md to
price the batcher on a lone request.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

from . import servers
from .compare import REQUEST_PATH, before_tree
from .payloads import FORMATS
from .run import SINGLE_IMAGES, held_out_images, raise_priority

VARIANTS = {
    "defaults": (),
    "--max-batch-size 1": ("--max-batch-size", "1"),
    "--threads 1": ("--threads", "1"),
    "both": ("--max-batch-size", "1", "--threads", "1"),
}
REF_VARIANTS = ("defaults", "--max-batch-size 1")
REQUESTS = 4000
REPETITIONS = 3


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.variants", description=__doc__)
    parser.add_argument("--ref", help="also serve the request path as it is at this revision")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        servers.pin({cpus[0]}, set(cpus[1:]))
    raise_priority()
    images = held_out_images()[:SINGLE_IMAGES]
    with tempfile.TemporaryDirectory(prefix="mlbridge-variants-") as folder:
        trees = {"": servers.snapshot_mlbridge(Path(folder))}
        plan = [("", name, flags) for name, flags in VARIANTS.items()]
        if args.ref:
            trees[args.ref] = before_tree(Path(folder), args.ref, REQUEST_PATH)
            plan += [(args.ref, f"{args.ref} {name}", VARIANTS[name]) for name in REF_VARIANTS]
        running = {}
        for tree, name, flags in plan:
            home = Path(folder) / f"variant-{len(running)}"
            home.mkdir()
            servers.SNAPSHOT = trees[tree]
            running[name] = servers.start_mlbridge(home, *flags)
        try:
            for fmt in ("v2-json", "v2-binary", "text"):
                measure(fmt, running, images)
        finally:
            for server in running.values():
                server.stop()


def measure(fmt: str, running: dict[str, servers.Server], images: np.ndarray) -> None:
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in running}
    for _ in range(REPETITIONS):
        for name, server in running.items():
            raws = [
                FORMATS[fmt].request("mnist", images[i : i + 1], server.auth)
                for i in range(len(images))
            ]
            figures[name].append(server.sequential_cost(raws, REQUESTS, 200))
    for name, runs in figures.items():
        p50 = statistics.median(run[0] for run in runs)
        cpu = statistics.median(run[1] for run in runs)
        print(
            f"{fmt:10} {name:26} p50 {p50:6.0f} µs   server CPU {cpu:6.0f} µs/request", flush=True
        )


if __name__ == "__main__":
    main()
