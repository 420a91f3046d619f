"""What onnxruntime's memory arena costs a server after one big batch: RSS and time.

    .venv/bin/python -m bench.ort_memory

Runs ``mnist-cnn`` on 10,000 images twice, then one image 200 times, in a fresh process
per setting: mlbridge's session options as they are (arena on), the CPU arena off
(``enable_cpu_mem_arena = False``), arena shrinkage after each run, and the batch run in
chunks of 512 rows. Prints RSS before and after and the times. Used by
docs/performance.md (the RSS target).
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import psutil

from mlbridge.registry import DEMO_MODELS

SETTINGS = ("arena (as served)", "arena off", "arena shrinkage", "chunks of 512")
CHUNK = 512


def measure(setting: str) -> str:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if setting == "arena off":
        options.enable_cpu_mem_arena = False
    session = onnxruntime.InferenceSession(str(DEMO_MODELS / "mnist-cnn.onnx"), options)
    run_options = None
    if setting == "arena shrinkage":
        run_options = onnxruntime.RunOptions()
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(batch: np.ndarray) -> np.ndarray:
        if setting == "chunks of 512":
            parts = [
                session.run(None, {"input": batch[i : i + CHUNK]})[0]
                for i in range(0, len(batch), CHUNK)
            ]
            return np.concatenate(parts)
        return session.run(None, {"input": batch}, run_options)[0]

    images = np.random.default_rng(0).random((10000, 28, 28), dtype=np.float32)
    process = psutil.Process()
    before = process.memory_info().rss / 1e6
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        run(images)
        seconds.append(time.perf_counter() - start)
    single = []
    for index in range(200):
        start = time.perf_counter()
        session.run(None, {"input": images[index : index + 1]})
        single.append(time.perf_counter() - start)
    after = process.memory_info().rss / 1e6
    return (
        f"{setting:18} RSS {before:5.0f} -> {after:5.0f} MB; 10,000 images "
        f"{seconds[0]:.2f} s, again {seconds[1]:.2f} s; one image p50 "
        f"{np.median(single) * 1e6:.0f} µs"
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
