"""`mlbridge doctor`, in process: each problem it must find, and the command that fixes it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mlbridge import doctor
from mlbridge.auth import write_json_private, write_private
from mlbridge.cli import main

# Variables that would make the outcome depend on the machine running the tests.
CLEAN = {name: None for name in (*doctor.LIBRARY_VARIABLES, *doctor.PROXY_VARIABLES)}
CLEAN |= {name: None for name in os.environ if name.startswith("DYLD_")}
CLEAN |= {"no_proxy": None, "NO_PROXY": None}


def run_doctor(home: Path, **env: str) -> Result:
    return CliRunner().invoke(main, ["doctor"], env={**CLEAN, "MLBRIDGE_HOME": str(home), **env})


def finding(result: Result, words: str) -> tuple[str, str]:
    """The report line that contains ``words``, and the fix line under it ('' if none)."""
    lines = result.output.splitlines()
    for index, line in enumerate(lines):
        if words in line:
            after = lines[index + 1].strip() if index + 1 < len(lines) else ""
            return line.strip(), after.removeprefix("fix: ") if after.startswith("fix:") else ""
    raise AssertionError(f"{words!r} is not in the report:\n{result.output}")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir(mode=0o700)
    return folder


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_clean_setup_reports_no_problem(home: Path) -> None:
    result = run_doctor(home)
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("no problems")
    assert finding(result, "no server is running")[1] == ""


def test_group_writable_home_is_a_problem_with_its_fix(home: Path) -> None:
    home.chmod(0o770)
    result = run_doctor(home)
    assert result.exit_code == 1
    line, fix = finding(result, "is writable by others")
    assert line.startswith("PROBLEM") and "mode 770" in line
    assert fix == f"chmod go-w {home}"


def test_token_readable_by_others_is_a_problem_with_its_fix(home: Path) -> None:
    write_private(home / "token", "secret\n")
    (home / "token").chmod(0o644)
    result = run_doctor(home)
    assert result.exit_code == 1
    assert finding(result, "is open to others (mode 644)")[1] == f"chmod 600 {home / 'token'}"


def test_a_readable_log_is_not_a_problem(home: Path) -> None:
    (home / "server.log").write_text("mlbridge: listening\n")
    (home / "server.log").chmod(0o644)
    result = run_doctor(home)
    assert result.exit_code == 0, result.output


def test_token_file_elsewhere_is_checked_too(tmp_path: Path, home: Path) -> None:
    token = tmp_path / "elsewhere" / "token"
    token.parent.mkdir()
    token.write_text("secret\n")
    token.chmod(0o640)
    result = run_doctor(home, MLBRIDGE_TOKEN_FILE=str(token))
    assert result.exit_code == 1
    assert finding(result, "is open to others (mode 640)")[1] == f"chmod 600 {token}"


def test_symlinked_home_is_a_problem(tmp_path: Path, home: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(home)
    result = run_doctor(link)
    assert result.exit_code == 1
    assert finding(result, "is a symbolic link")[1] == f"rm {link} && mkdir -m 700 {link}"
    assert not list(home.iterdir()), "nothing was written"


def test_stale_connection_file_is_a_problem_with_its_fix(home: Path) -> None:
    token = home / "token"
    write_private(token, "secret\n")
    url = f"http://127.0.0.1:{closed_port()}"
    pid = dead_pid()
    write_json_private(home / "server.json", {"url": url, "pid": pid, "token_file": str(token)})
    result = run_doctor(home)
    assert result.exit_code == 1
    line, fix = finding(result, "is stale")
    assert f"pid {pid} at {url}" in line
    assert fix == f"rm -f {home / 'server.json'} {token} && mlbridge serve"


def test_unreadable_connection_file_is_a_problem(home: Path) -> None:
    write_private(home / "server.json", "{not json")
    result = run_doctor(home)
    assert result.exit_code == 1
    line, fix = finding(result, "cannot read")
    assert line.startswith("PROBLEM") and fix == f"rm -f {home / 'server.json'} && mlbridge serve"


def test_missing_training_extra_says_how_to_install_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = doctor.find_spec
    monkeypatch.setattr(
        doctor, "find_spec", lambda name: None if name == "tensorflow" else real(name)
    )
    result = run_doctor(home)
    line, fix = finding(result, "mlbridge[training]")
    assert line.startswith("missing") and "tensorflow not installed" in line
    assert fix == f"{sys.executable} -m pip install 'mlbridge[training]'"
    assert result.exit_code == 0, "an optional extra is reported, not a problem"


def test_missing_core_runtime_is_a_problem(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = doctor.find_spec
    monkeypatch.setattr(doctor, "find_spec", lambda n: None if n == "onnxruntime" else real(n))
    result = run_doctor(home)
    assert result.exit_code == 1
    line, fix = finding(result, "mlbridge (core)")
    assert line.startswith("PROBLEM") and fix == f"{sys.executable} -m pip install onnxruntime"


@pytest.mark.parametrize(
    "name", ["LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME", "DYLD_LIBRARY_PATH"]
)
def test_inherited_library_path_is_a_problem_with_its_fix(home: Path, name: str) -> None:
    result = run_doctor(home, **{name: "/usr/local/Wolfram/Mathematica/14.0/SystemFiles/Libraries"})
    assert result.exit_code == 1
    line, fix = finding(result, f"{name}=/usr/local/Wolfram")
    assert line.startswith("PROBLEM")
    assert fix.startswith(f"env -u {name} mlbridge serve")


@pytest.mark.parametrize(
    ("no_proxy", "problem"),
    [
        (None, True),
        ("localhost", True),
        ("example.com,127.0.0.1,localhost", False),
        ("127.0.0.0/8,.localhost", False),
        ("*", False),
    ],
)
def test_proxy_without_loopback_exemption_is_a_problem(
    home: Path, no_proxy: str | None, problem: bool
) -> None:
    env = {"https_proxy": "http://proxy.example:3128"} | (
        {"no_proxy": no_proxy} if no_proxy else {}
    )
    result = run_doctor(home, **env)
    assert result.exit_code == int(problem), result.output
    if problem:
        _, fix = finding(result, "https_proxy set and no_proxy does not cover")
        assert fix.startswith("export no_proxy=") and "127.0.0.1" in fix


def test_a_running_server_is_reported_with_its_models(server) -> None:
    result = run_doctor(server.home)
    line, _ = finding(result, f"answers at {server.url}")
    assert line.startswith("ok") and "mnist" in line and "box_volume" in line
    assert result.exit_code == 0, result.output


def test_a_server_that_refuses_the_token_is_a_problem(server, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    write_private(home / "token", "not-the-secret\n")
    info = {"url": server.url, "pid": server.process.pid, "token_file": str(home / "token")}
    write_json_private(home / "server.json", info)
    result = run_doctor(home)
    assert result.exit_code == 1
    line, fix = finding(result, "cannot be used: the server at")
    assert "could not prove it knows the secret" in line  # and the wrong token was never sent
    assert fix.endswith("&& mlbridge serve")


def test_doctor_imports_neither_tensorflow_nor_jax() -> None:
    code = (
        "import sys, mlbridge.cli, mlbridge.doctor; "
        "sys.exit(sorted({'tensorflow', 'jax', 'keras'} & set(sys.modules)) != [])"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
