"""Run bench/locustfile.py headless against one server and read Locust's own statistics."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .servers import Server

HERE = Path(__file__).resolve().parent


def locust_command() -> str | None:
    candidate = Path(sys.executable).parent / "locust"
    return str(candidate) if candidate.exists() else shutil.which("locust")


def run(
    server: Server, body_bytes: bytes, seconds: int, folder: Path, users: int = 8
) -> dict | None:
    """Req/s, p50/p99 (ms, as Locust rounds them) and failures; None without Locust."""
    command = locust_command()
    if command is None:
        return None
    body = folder / "locust-body.json"
    body.write_bytes(body_bytes)
    prefix = folder / f"locust-{server.name}"
    env = {"BENCH_PATH": "/v2/models/mnist/infer", "BENCH_BODY": str(body)}
    if server.home is not None:  # mlbridge: the token file, as every client finds it
        from mlbridge.connection import find_connection

        connection = find_connection(server.home)
        assert connection is not None
        env["BENCH_TOKEN_FILE"] = str(connection.token_file)
    if server.name.startswith("echo"):
        env["BENCH_PATH"] = "/echo"
    done = subprocess.run(
        [
            command,
            "-f",
            str(HERE / "locustfile.py"),
            "--headless",
            "--users",
            str(users),
            "--spawn-rate",
            str(users),
            "--run-time",
            f"{seconds}s",
            "--host",
            f"http://127.0.0.1:{server.port}",
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    stats = Path(f"{prefix}_stats.csv")
    if not stats.exists():
        raise RuntimeError(f"locust wrote no statistics:\n{done.stderr[-2000:]}")
    with stats.open() as table:
        row = next(r for r in csv.DictReader(table) if r["Name"] == "Aggregated")
    return {
        "users": users,
        "seconds": seconds,
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "rps": float(row["Requests/s"]),
        "p50_ms": float(row["50%"]),
        "p99_ms": float(row["99%"]),
    }
