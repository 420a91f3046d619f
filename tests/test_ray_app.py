"""What `mlbridge serve --ray` decides without a cluster: the replica's app, refusals, messages.

The deployment itself is tested against a real local cluster in tests/test_ray.py (marked
``ray``); these run in the fast suite, with or without the ray extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from support import TESTDATA

from mlbridge.ray_serve import ReplicaPlan, build_app, failure_cause
from mlbridge.settings import load_settings

MODEL = TESTDATA / "models" / "linear.onnx"


def mlbridge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlbridge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def plan(tmp_path: Path) -> ReplicaPlan:
    settings = load_settings(environ={}, home=str(tmp_path / "home"))
    return ReplicaPlan((MODEL,), settings, "replica-secret", server_pid=4242)


def test_a_replica_app_checks_the_secret_and_speaks_for_the_driver(plan: ReplicaPlan) -> None:
    stops: list[bool] = []
    app = build_app(plan, lambda: stops.append(True))
    with TestClient(app) as anon:
        assert anon.get("/v2/models").status_code == 401
        assert anon.post("/v2/shutdown").status_code == 401
    with TestClient(app, headers={"Authorization": "Bearer replica-secret"}) as http:
        assert http.get("/v2").json()["pid"] == 4242  # the pid server.json names
        assert [m["name"] for m in http.get("/v2/models").json()["models"]] == [
            "linear",
            "linear.vjp",
        ]
        reply = http.post("/v2/shutdown")
        assert reply.status_code == 202 and reply.json()["pid"] == 4242
    assert stops == [True]  # the replica asked the driver to stop everything


def test_the_plan_never_shows_its_secret(plan: ReplicaPlan) -> None:
    assert "replica-secret" not in repr(plan)


def test_failure_cause_finds_the_replicas_own_error() -> None:
    report = (
        "Deploying application mlbridge failed: Failed to update the deployments ['MLBridge'].\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "mlbridge.errors.ConfigError: could not load /m/bad.onnx: InvalidProtobuf (--strict)\n"
    )
    assert failure_cause(report) == (
        "mlbridge.errors.ConfigError: could not load /m/bad.onnx: InvalidProtobuf (--strict)"
    )
    assert failure_cause("no traceback here\nmore") == "no traceback here"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "is not a loopback address"),
        (["--watch"], "--watch is not available with --ray"),
        (["--replicas", "0"], "--replicas must be at least 1"),
    ],
)
def test_serve_ray_refuses_before_starting_ray(
    tmp_path: Path, args: list[str], message: str
) -> None:
    env = {**os.environ, "MLBRIDGE_HOME": str(tmp_path / "home")}
    done = mlbridge("serve", "--ray", *args, str(MODEL), env=env)
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_without_the_ray_extra_the_message_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked"
    (blocker / "ray").mkdir(parents=True)
    (blocker / "ray" / "__init__.py").write_text("raise ImportError('ray is blocked')\n")
    env = {**os.environ, "MLBRIDGE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(blocker)}
    done = mlbridge("serve", "--ray", str(MODEL), env=env)
    assert done.returncode == 1
    assert "pip install 'mlbridge[ray]'" in done.stderr and "Traceback" not in done.stderr
