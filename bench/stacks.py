"""The server stack itself: the raw ASGI echo on uvicorn against granian and hypercorn.

    .venv/bin/python -m bench.stacks

mlbridge runs on uvicorn (uvloop + httptools). This serves the same raw ASGI echo
(``bench.echo:asgi_echo``) on each stack, one worker, pinned as ``python -m bench`` pins
(client CPU 0, servers CPU 1), and sends each the floor's one-image V2 JSON requests,
sequentially on one keep-alive connection, 3 repetitions interleaved; prints p50 and
server CPU per request (medians). granian and hypercorn are installed on first use into
their own virtualenv, ``bench/.venv-stacks`` (not a dependency of mlbridge or its bench).
hypercorn closes a connection after 1,000 requests (its ``keep_alive_max_requests``), so
it gets 900 per connection.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from . import servers
from .compare import floor_requests
from .run import SINGLE_IMAGES, held_out_images, raise_priority

VENV = servers.HERE / ".venv-stacks"
REQUIREMENTS = ["granian==2.8.9", "hypercorn==0.18.0", "uvloop==0.23.0"]
APP = "bench.echo:asgi_echo"
GRANIAN = [
    "--interface", "asgi", "--host", "127.0.0.1", "--workers", "1", "--no-ws", "--loop", "uvloop",
]  # fmt: skip
STACKS: dict[str, list[str] | None] = {
    "uvicorn + uvloop + httptools (mlbridge's)": None,  # bench.echo's own launcher
    "granian, single-threaded runtime": [
        *GRANIAN,
        "--runtime-mode",
        "st",
        "--runtime-threads",
        "1",
    ],
    "granian, multi-threaded runtime": [*GRANIAN, "--runtime-mode", "mt"],
    "hypercorn + uvloop": ["--worker-class", "uvloop", "--workers", "1"],
}
REQUESTS = 4000
HYPERCORN_REQUESTS = 900
REPETITIONS = 3


def ensure_stacks() -> Path:
    """The bin folder of the stacks' own virtualenv (created on first use)."""
    bin_folder = VENV / "bin"
    if not (bin_folder / "granian").exists():
        print(f"creating {VENV} for granian and hypercorn (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(bin_folder / "python"), "-m", "pip", "install", "--quiet", *REQUIREMENTS]
        subprocess.run(pip, check=True)
    return bin_folder


def start(name: str, flags: list[str] | None, bin_folder: Path, folder: Path) -> servers.Server:
    if flags is None:
        return servers.start_echo("asgi", folder)
    port = servers.free_port()
    if name.startswith("hypercorn"):
        command = [str(bin_folder / "hypercorn"), "--bind", f"127.0.0.1:{port}", *flags, APP]
    else:
        command = [str(bin_folder / "granian"), "--port", str(port), *flags, APP]
    return servers.launch(name.split(",")[0], command, port, folder, cwd=servers.REPO)


def main() -> None:
    bin_folder = ensure_stacks()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        servers.pin({cpus[0]}, set(cpus[1:]))
    raise_priority()
    raws = floor_requests(held_out_images()[:SINGLE_IMAGES])
    figures: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mlbridge-stacks-") as folder:
        running = {
            name: start(name, flags, bin_folder, Path(folder)) for name, flags in STACKS.items()
        }
        try:
            for _ in range(REPETITIONS):
                for name, server in running.items():
                    count = HYPERCORN_REQUESTS if name.startswith("hypercorn") else REQUESTS
                    figures.setdefault(name, []).append(server.sequential_cost(raws, count, 100))
        finally:
            for server in running.values():
                server.stop()
    width = max(map(len, figures))
    for name, runs in figures.items():
        p50 = statistics.median(run[0] for run in runs)
        cpu = statistics.median(run[1] for run in runs)
        print(f"{name:{width}}  p50 {p50:5.0f} µs   server CPU {cpu:5.0f} µs/request")


if __name__ == "__main__":
    main()
