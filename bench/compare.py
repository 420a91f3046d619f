"""mlbridge against an earlier version of itself, side by side in one run.

    .venv/bin/python -m bench.compare                  # the working tree against HEAD
    .venv/bin/python -m bench.compare --ref HEAD~1 --files mlbridge/batching.py
    .venv/bin/python -m bench.compare --inprocess      # the ASGI app alone (bench.microbench)
    .venv/bin/python -m bench.compare --paired 15 --requests 1000   # small effects, see below

The "before" tree is a copy of ``mlbridge/`` in which the files named by ``--files``
(default: the request path's modules, :data:`REQUEST_PATH`) are as they are at ``--ref``,
so only those files differ between the two, whatever else changes in the working tree
meanwhile. Both serve the demo models with their defaults next to the raw ASGI echo floor,
pinned as ``python -m bench`` pins them (client CPU 0, servers CPU 1), and get the same
requests, repetitions outermost and the servers in turn: one image at a time on one
keep-alive connection (p50, server CPU per request), then 8 concurrent clients (req/s,
server CPU per request, the mean batch size). Prints medians and after/before ratios.
``--inprocess`` instead times the whole app called as ASGI (no socket), each tree in its
own process, alternating. ``--paired N`` measures effects smaller than this machine's drift
(±10% between repetitions of a few seconds): one image at a time, N short windows of
``--requests`` each per format, the two servers alternating (and which goes first), and
reports the after/before ratio of each window's pair (quartiles: a ratio whose quartiles
are all below 1 is a gain), so that the drift cancels within each pair.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import loadgen, servers
from .payloads import FORMATS
from .run import SINGLE_IMAGES, held_out_images, model_stats, raise_priority

REQUEST_PATH = (
    "mlbridge/batching.py",
    "mlbridge/inference.py",
    "mlbridge/server/app.py",
    "mlbridge/server/cas.py",
    "mlbridge/server/fastpath.py",
    "mlbridge/server/guard.py",
    "mlbridge/server/metrics.py",
    "mlbridge/server/routes.py",
)
SEQUENTIAL = [(f, "mnist") for f in ("v2-json", "v2-binary", "text", "wxf", "gradient")]
SEQUENTIAL.append(("v2-json", "mnist-cnn"))
CONCURRENT = [("v2-json", "mnist-cnn"), ("wxf", "mnist")]
CLIENTS = 8
IGNORED = shutil.ignore_patterns("__pycache__")


def before_tree(folder: Path, ref: str, files: tuple[str, ...]) -> Path:
    """A copy of mlbridge/ with ``files`` as they are at ``ref`` (absent there: removed)."""
    root = folder / "before"
    shutil.copytree(servers.REPO / "mlbridge", root / "mlbridge", ignore=IGNORED)
    for name in files:
        shown = subprocess.run(
            ["git", "show", f"{ref}:{name}"], cwd=servers.REPO, capture_output=True, check=False
        )
        target = root / name
        if shown.returncode == 0:
            target.write_bytes(shown.stdout)
        else:
            target.unlink(missing_ok=True)
    return root


def after_tree(folder: Path) -> Path:
    root = folder / "after"
    shutil.copytree(servers.REPO / "mlbridge", root / "mlbridge", ignore=IGNORED)
    return root


def start(tree: Path, folder: Path) -> servers.Server:
    servers.SNAPSHOT = tree
    home = folder / f"{tree.name}-server"
    home.mkdir()
    return servers.start_mlbridge(home)


def requests(server: servers.Server, fmt: str, model: str, images: np.ndarray) -> list[bytes]:
    return [FORMATS[fmt].request(model, images[i : i + 1], server.auth) for i in range(len(images))]


def floor_requests(images: np.ndarray) -> list[bytes]:
    bodies = [FORMATS["v2-json"].body(images[i : i + 1], "")[0] for i in range(len(images))]
    headers = {"Content-Type": "application/json"}
    return [loadgen.request_bytes("POST", "/echo?reply=160", b, headers) for b in bodies]


def sequential(running: dict[str, servers.Server], images: np.ndarray, count: int, reps: int):
    """(label, server) -> [(p50 µs, CPU µs per request)] per repetition."""
    plan = [("floor", "echo", floor_requests(images))]
    for fmt, model in SEQUENTIAL:
        for name in ("before", "after"):
            plan.append((f"{fmt} {model}", name, requests(running[name], fmt, model, images)))
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for rep in range(reps):
        for label, name, raws in plan:
            figures.setdefault((label, name), []).append(
                running[name].sequential_cost(raws, count, 100)
            )
        print(f"sequential repetition {rep + 1} done", flush=True)
    return figures


def concurrent(running: dict[str, servers.Server], images: np.ndarray, seconds: float, reps: int):
    """(label, server) -> [(req/s, CPU µs per request, mean batch)] per repetition."""
    figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for rep in range(reps):
        for fmt, model in CONCURRENT:
            for name in ("before", "after"):
                server = running[name]
                raws = requests(server, fmt, model, images)
                before = model_stats(server, model)
                cpu = server.cpu_s()
                result = loadgen.load(server.port, raws, CLIENTS, seconds)
                cpu_us = (server.cpu_s() - cpu) / max(result.requests, 1) * 1e6
                after = model_stats(server, model)
                calls = after["execution_count"] - before["execution_count"]
                rows = after["inference_count"] - before["inference_count"]
                batch = rows / calls if calls else 0.0
                rps = result.requests / result.seconds
                if result.errors:
                    print(f"  {name} {fmt} {model}: {result.errors} errors", flush=True)
                figures.setdefault((f"{fmt} {model}", name), []).append((rps, cpu_us, batch))
        print(f"concurrent repetition {rep + 1} done", flush=True)
    return figures


def medians(runs: list[tuple[float, ...]]) -> list[float]:
    return [statistics.median(column) for column in zip(*runs)]


def print_sequential(figures) -> None:
    floor_p50, floor_cpu = medians(figures[("floor", "echo")])
    print(f"\nsequential, one image per request; floor (raw ASGI echo): p50 {floor_p50:.0f} µs, "
          f"CPU {floor_cpu:.0f} µs/request")  # fmt: skip
    print("| request | p50 before | p50 after | after/before | after ÷ floor | CPU before | "
          "CPU after | after/before |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label in dict.fromkeys(label for label, name in figures if name != "echo"):
        (p50_b, cpu_b), (p50_a, cpu_a) = (medians(figures[(label, n)]) for n in ("before", "after"))
        ratios = f"{p50_a / p50_b:.2f} | {p50_a / floor_p50:.2f}×"
        print(f"| {label} | {p50_b:.0f} | {p50_a:.0f} | {ratios} | {cpu_b:.0f} | {cpu_a:.0f} | "
              f"{cpu_a / cpu_b:.2f} |")  # fmt: skip


def print_concurrent(figures) -> None:
    print(f"\n{CLIENTS} concurrent clients")
    print("| request | req/s before | req/s after | after/before | CPU before | CPU after | "
          "batch before | batch after |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label in dict.fromkeys(label for label, _ in figures):
        (rps_b, cpu_b, bat_b), (rps_a, cpu_a, bat_a) = (
            medians(figures[(label, n)]) for n in ("before", "after")
        )
        print(f"| {label} | {rps_b:,.0f} | {rps_a:,.0f} | {rps_a / rps_b:.2f} | {cpu_b:.0f} | "
              f"{cpu_a:.0f} | {bat_b:.2f} | {bat_a:.2f} |")  # fmt: skip


def pinned_trees(args: argparse.Namespace, folder: Path) -> tuple[np.ndarray, dict[str, Path]]:
    """Pin as ``python -m bench`` pins (client on the first CPU, servers on the rest), raise
    this process's priority; the single images to send and the two trees to serve."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        servers.pin({cpus[0]}, set(cpus[1:]))
    raise_priority()
    trees = {"before": before_tree(folder, args.ref, args.files), "after": after_tree(folder)}
    return held_out_images()[:SINGLE_IMAGES], trees


def servers_side_by_side(args: argparse.Namespace, folder: Path) -> None:
    images, trees = pinned_trees(args, folder)
    running = {"echo": servers.start_echo("asgi", folder)}
    try:
        for name, tree in trees.items():
            running[name] = start(tree, folder)
        seq = sequential(running, images, args.requests, args.repetitions)
        conc = concurrent(running, images, args.seconds, args.repetitions)
    finally:
        for server in running.values():
            server.stop()
    print_sequential(seq)
    print_concurrent(conc)


def paired(args: argparse.Namespace, folder: Path) -> None:
    """Sequential windows, before and after in turn; the quartiles of each pair's ratio."""
    images, trees = pinned_trees(args, folder)
    running = {name: start(tree, folder) for name, tree in trees.items()}
    print("| request | p50 before → after µs | p50 ratio q25 / q50 / q75 | CPU before → after "
          "µs | CPU ratio q25 / q50 / q75 |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: |")
    try:
        for fmt, model in SEQUENTIAL:
            raws = {name: requests(server, fmt, model, images) for name, server in running.items()}
            figures: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
            for window in range(args.paired):
                order = ("before", "after") if window % 2 == 0 else ("after", "before")
                for name in order:
                    cost = running[name].sequential_cost(raws[name], args.requests, 100)
                    figures[name].append(cost)
            (p50_b, cpu_b), (p50_a, cpu_a) = (medians(figures[n]) for n in ("before", "after"))
            pairs = list(zip(figures["before"], figures["after"]))
            p50_q = quartiles([a[0] / b[0] for b, a in pairs])
            cpu_q = quartiles([a[1] / b[1] for b, a in pairs])
            print(f"| {fmt} {model} | {p50_b:.0f} → {p50_a:.0f} | {p50_q} | {cpu_b:.0f} → "
                  f"{cpu_a:.0f} | {cpu_q} |", flush=True)  # fmt: skip
    finally:
        for server in running.values():
            server.stop()


def quartiles(ratios: list[float]) -> str:
    return " / ".join(f"{q:.3f}" for q in np.percentile(ratios, [25, 50, 75]))


def inprocess(args: argparse.Namespace, folder: Path) -> None:
    """bench.microbench's whole-app figures, each tree in its own process, alternating."""
    trees = {"before": before_tree(folder, args.ref, args.files), "after": after_tree(folder)}
    probe = "import bench.microbench, mlbridge; bench.microbench.print_whole_app()"
    figures: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.repetitions):
        for name, tree in trees.items():
            out = subprocess.run(  # run in the tree's folder: python -c imports from there first
                [sys.executable, "-c", probe + "; print('from', mlbridge.__file__)"],
                env={**os.environ, "PYTHONPATH": str(servers.REPO)},
                cwd=tree,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            *lines, origin = out.splitlines()
            assert origin.startswith(f"from {tree}"), origin  # the tree's code was timed
            for line in lines:
                label, _, value = line.rpartition(" ")
                figures.setdefault((label.strip(), name), []).append(float(value))
        print(f"in-process repetition {rep + 1} done", flush=True)
    print("\n| the app called as ASGI, CPU µs | before | after | after/before |")
    print("| --- | ---: | ---: | ---: |")
    for label in dict.fromkeys(label for label, _ in figures):
        b, a = (statistics.median(figures[(label, n)]) for n in ("before", "after"))
        print(f"| {label} | {b:.1f} | {a:.1f} | {a / b:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--ref", default="HEAD", help="the git revision of 'before'")
    parser.add_argument("--files", nargs="+", default=REQUEST_PATH, help="files taken from ref")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="sequential, per repetition")
    parser.add_argument("--seconds", type=float, default=3.0, help="concurrent, per repetition")
    parser.add_argument("--inprocess", action="store_true", help="time the app alone, in process")
    parser.add_argument("--paired", type=int, metavar="N", help="N paired windows (docstring)")
    args = parser.parse_args()
    args.files = tuple(args.files)
    with tempfile.TemporaryDirectory(prefix="mlbridge-compare-") as folder:
        if args.paired:
            paired(args, Path(folder))
        else:
            (inprocess if args.inprocess else servers_side_by_side)(args, Path(folder))


if __name__ == "__main__":
    main()
