"""Where mlbridge's request path spends its time: py-spy on a real server under load.

    .venv/bin/python -m bench.profile [--quick]

For each case, ``py-spy record`` (sampling, 1 kHz, non-blocking) starts ``mlbridge serve``;
the server's threads are then moved to the server CPU and the bench client sends the
case's requests from the other one; stopping the server ends the recording. Each case's
samples (idle threads excluded) are folded into ``bench/results/profile-CASE.txt``: the
share of each layer of the stack, and the functions with the most inclusive and self time.

Cases: ``v2-json-1`` (one image per request, V2 JSON), ``text-1`` (one image per request,
Mathematica text) and ``v2-json-10k`` (10,000 images in one V2 JSON request, a few times).
``BENCH_SPY_FLAGS`` replaces the single-image cases' py-spy flags (``--nonblocking --gil``),
e.g. ``--native`` to see C frames (blocking: slow, and it inflates every frame).
py-spy cannot attach to a running server here (it fails to read the Python version), so it
starts the server itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from mlbridge.connection import find_connection

from . import loadgen, servers
from .loadgen import Connection
from .payloads import FORMATS
from .run import bulk_images, held_out_images

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
RATE_HZ = 1000
# --gil: samples of the thread holding the GIL only. py-spy cannot tell uvloop's waits in
# epoll from work (uvloop's C loop has no Python frame), so without it a mostly idle
# server looks busy; the model itself runs without the GIL, so the bulk case samples
# every thread instead (the server is never idle there).
SINGLE_FLAGS = os.environ.get("BENCH_SPY_FLAGS", "--nonblocking --gil").split()
BULK_FLAGS = ["--nonblocking"]
SERVING = ("asyncio/runners.py:Runner.run", "threading.py:Thread._bootstrap")
ONCE = ("<frozen importlib._bootstrap>:_find_and_load", "uvicorn/config.py:Config.load")
OUTER = re.compile(
    r"runpy|click/|mlbridge/__main__|mlbridge/cli\.py|server/run\.py:serve$|"
    r"uvicorn/server\.py:Server\.run|uvicorn/_compat|asyncio/runners|threading\.py"
)
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")

# Layers of the request path, by the file a frame runs in (first match wins, leaf first).
LAYERS = [
    ("model run (onnxruntime)", ("onnxruntime/",)),
    ("mlbridge codecs", ("mlbridge/codecs/",)),
    ("mlbridge batching", ("mlbridge/batching.py",)),
    (
        "mlbridge inference",
        ("mlbridge/inference.py", "mlbridge/registry.py", "mlbridge/protocol.py"),
    ),
    ("mlbridge server (routes, policy, auth)", ("mlbridge/server/", "mlbridge/auth.py")),
    ("numpy / orjson", ("numpy/",)),
    ("starlette (request, routing, response)", ("starlette/",)),
    ("anyio / threads", ("anyio/", "threading.py", "concurrent/")),
    ("uvicorn + httptools (HTTP)", ("uvicorn/", "httptools/")),
    ("asyncio / uvloop (event loop)", ("asyncio/", "uvloop/")),
]


def py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def cases(quick: bool) -> dict[str, tuple[str, str, int, int]]:
    """name -> (format, model, images per request, requests)."""
    scale = 5 if quick else 1
    return {
        "v2-json-1": ("v2-json", "mnist", 1, 60000 // scale),
        "text-1": ("text", "mnist", 1, 60000 // scale),
        "v2-json-10k": ("v2-json", "mnist", 10000 if not quick else 2000, 5),
    }


def record(name: str, fmt: str, model: str, images: np.ndarray, count: int, folder: Path) -> Path:
    """Run the case under py-spy; return the folded samples."""
    home = folder / f"home-{name}"
    home.mkdir(mode=0o700)
    port = servers.free_port()
    folded = folder / f"{name}.folded"
    command = [
        py_spy(),
        "record",
        "--rate",
        str(RATE_HZ),
        *(SINGLE_FLAGS if len(images) == 1 else BULK_FLAGS),
        "--format",
        "raw",
        "--output",
        str(folded),
        "--",
        sys.executable,
        "-m",
        "mlbridge",
        "serve",
        "--port",
        str(port),
    ]
    env, cwd = servers.mlbridge_env()
    spy = subprocess.Popen(
        command,
        env={**os.environ, **env, "MLBRIDGE_HOME": str(home)},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while (connection := find_connection(home)) is None:
        if spy.poll() is not None or time.time() > deadline:
            raise RuntimeError(
                f"py-spy/mlbridge did not start: {spy.stderr.read().decode()[-2000:]}"
            )
        time.sleep(0.02)
    server_pid = connection.pid
    move_to_server_cpus(server_pid)
    auth = {"Authorization": f"Bearer {connection.secret()}"}
    raw = FORMATS[fmt].request(model, images, auth)
    if len(images) == 1:
        loadgen.sequential(port, [raw], count)
    else:
        bulk = Connection(port, timeout_s=600)
        for _ in range(count):
            bulk.send(raw)
        bulk.close()
    os.kill(server_pid, signal.SIGTERM)
    spy.wait(timeout=120)
    return folded


def move_to_server_cpus(pid: int) -> None:
    """Pin every thread of ``pid`` to the server CPUs (py-spy stays with the client)."""
    if not servers.SERVER_CPUS:
        return
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task), servers.SERVER_CPUS)


def parse(folded: Path) -> list[tuple[list[str], int]]:
    """The stacks sampled while serving (start-up's imports and model loads left out)."""
    stacks = []
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        names = {":".join(where(frame)[::-1]) for frame in frames}
        if names & set(SERVING) and not names & set(ONCE):
            stacks.append((frames, int(count)))
    return stacks


def where(frame: str) -> tuple[str, str]:
    """(function, short file) of a py-spy frame ``function (path:line)``."""
    match = FRAME.match(frame)
    if not match:
        return frame, ""
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return match["function"], path


def layer(frames: list[str]) -> str:
    """The innermost layer of the request path that this stack is in."""
    for frame in reversed(frames):
        _, path = where(frame)
        for name, markers in LAYERS:
            if any(marker in path for marker in markers):
                return name
    return "other (interpreter, process)"


def summarise(name: str, stacks: list[tuple[list[str], int]], top: int = 25) -> str:
    total = sum(count for _, count in stacks) or 1
    layers: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, count in stacks:
        layers[layer(frames)] += count
        seen = set()
        for frame in frames:
            function, path = where(frame)
            key = f"{path}:{function}"
            if key not in seen and not OUTER.search(key):
                inclusive[key] += count
                seen.add(key)
        function, path = where(frames[-1])
        own[f"{path}:{function}"] += count
    lines = [f"# profile {name}: {total} samples at {RATE_HZ} Hz (idle excluded)", ""]
    lines.append("## by layer (innermost frame's layer)")
    lines += [f"{100 * c / total:6.1f}%  {k}" for k, c in layers.most_common()]
    lines += ["", "## inclusive (function and everything it calls)"]
    lines += [f"{100 * c / total:6.1f}%  {k}" for k, c in inclusive.most_common(top)]
    lines += ["", "## self (the function's own code)"]
    lines += [f"{100 * c / total:6.1f}%  {k}" for k, c in own.most_common(top)]
    return "\n".join(lines) + "\n"


def main(quick: bool = False, pin: bool = True) -> None:
    if py_spy() is None:
        print("py-spy is not installed (pip install -e '.[bench]'): no profile")
        return
    cpus = sorted(os.sched_getaffinity(0))
    if pin and len(cpus) >= 2 and not servers.SERVER_CPUS:
        servers.pin({cpus[0]}, set(cpus[1:]))
    held_out = held_out_images()
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlbridge-profile-") as folder:
        servers.snapshot_mlbridge(Path(folder))
        for name, (fmt, model, size, count) in cases(quick).items():
            images = bulk_images(held_out, size)
            started = time.perf_counter()
            folded = record(name, fmt, model, images, count, Path(folder))
            seconds = time.perf_counter() - started
            summary = summarise(name, parse(folded))
            header = f"# {count} requests of {size} image(s), {fmt}, in {seconds:.1f} s\n"
            suffix = ".quick.txt" if quick else ".txt"  # a quick run keeps the full run's
            (RESULTS / f"profile-{name}{suffix}").write_text(header + summary)
            print(header + "\n".join(summary.splitlines()[:16]), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-pin", action="store_true")
    arguments = parser.parse_args()
    main(arguments.quick, not arguments.no_pin)
