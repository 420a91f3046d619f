"""What onnxruntime's memory arena costs a server: RSS and time, big batches and small.

    .venv/bin/python -m bench.ort_memory

Runs ``mnist-cnn`` on 10,000 images twice, then batches of 8 (as 8 clients' requests
merge), then one image 200 times, in a fresh process per setting, malloc set as the server
sets it (``server/memory.py``):

- *as served*: mlbridge's :class:`~mlbridge.runtimes.onnx.OnnxRuntime`: the arena on,
  calls of at most ``KEPT_CALL_BYTES`` of inputs and outputs;
- *arena on, one call*: the whole batch in one call, the arena keeping its peak;
- *arena shrinkage*: the same, the arena asked to shrink after each call;
- *arena off, chunks of 512*: the policy before (each call maps its working memory afresh).

Prints RSS before and after and the times. Used by docs/performance.md (the RSS target,
change 15).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import psutil

from mlbridge.registry import DEMO_MODELS
from mlbridge.runtimes.onnx import OnnxRuntime
from mlbridge.server.memory import return_big_buffers

SETTINGS = ("as served", "arena on, one call", "arena shrinkage", "arena off, chunks of 512")
MODEL = DEMO_MODELS / "mnist-cnn.onnx"


def runner(setting: str) -> Callable[[np.ndarray], np.ndarray]:
    """One batch in, the logits out, as ``setting`` runs it: mlbridge's runtime, its session
    options as served, with the arena and the rows per call the setting names."""
    runtime = OnnxRuntime(MODEL, keep_memory=not setting.startswith("arena off"))
    runtime.load()  # arena off: keep_memory=False gives the 512-row calls of before
    if setting == "as served" or setting.startswith("arena off"):
        return lambda batch: runtime.predict({"input": batch})["output"]
    import onnxruntime

    run_options = onnxruntime.RunOptions()
    if setting == "arena shrinkage":
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return lambda batch: runtime.session.run(None, {"input": batch}, run_options)[0]


def per_image_us(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, calls: int) -> float:
    """Median CPU µs per image of ``calls`` calls on ``batch``."""
    spent = []
    for _ in range(calls):
        start = time.thread_time()
        run(batch)
        spent.append(time.thread_time() - start)
    return statistics.median(spent) / len(batch) * 1e6


def measure(setting: str) -> str:
    return_big_buffers()  # as the server does at start
    run = runner(setting)
    images = np.random.default_rng(0).random((10000, 28, 28), dtype=np.float32)
    process = psutil.Process()
    before = process.memory_info().rss / 1e6
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        run(images)
        seconds.append(time.perf_counter() - start)
    batched = per_image_us(run, images[:8], 300)
    single = per_image_us(run, images[:1], 200)
    after = process.memory_info().rss / 1e6
    return (
        f"{setting:24} RSS {before:5.0f} -> {after:5.0f} MB; 10,000 images "
        f"{seconds[0]:.2f} s, again {seconds[1]:.2f} s; batches of 8 {batched:.0f} µs an "
        f"image; one image {single:.0f} µs"
    )


def main() -> None:
    for setting in SETTINGS:  # a fresh process each: the arena never gives memory back
        done = subprocess.run(
            [sys.executable, "-m", "bench.ort_memory", setting], capture_output=True, text=True
        )
        print(done.stdout.strip() or done.stderr[-500:], flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(measure(sys.argv[1]))
    else:
        main()
