"""`mlbridge doctor`: what a stuck user runs; every problem comes with the command that fixes it.

It looks at five things, without starting or importing anything heavy (extras are
found with :func:`importlib.util.find_spec`, never imported):

- runtimes and extras: onnxruntime (needed), TFLite, training, functions;
- the home folder (``$MLBRIDGE_HOME``) and its files: owner, mode, no symbolic links;
- the server: whether the one ``server.json`` names answers, and with which models;
- variables that break a server started from a computer-algebra system (a Mathematica
  kernel exports its own ``LD_LIBRARY_PATH``): ``LD_LIBRARY_PATH``, ``DYLD_*``,
  ``PYTHONPATH``, ``PYTHONHOME``;
- proxy variables that would send loopback requests to a proxy.

A *problem* makes the exit status 1; an optional extra that is not installed is only
reported, with its install command.
"""

from __future__ import annotations

import functools
import importlib.metadata
import ipaddress
import os
import shlex
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import click

from . import __version__
from .auth import check_private_file, check_private_folder
from .connection import CONNECTION_FILE, Connection, find_connection, is_live, read_connection
from .errors import ConfigError, MLBridgeError
from .settings import load_settings

OK, MISSING, PROBLEM = "ok", "missing", "PROBLEM"
LIBRARY_VARIABLES = ("LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH", "PYTHONHOME")
PROXY_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
)
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
SERVER_TIMEOUT_S = 10


@dataclass(frozen=True)
class Finding:
    """One line of the report: a verdict, what was seen, and the command that fixes it."""

    verdict: str
    text: str
    fix: str = ""


@dataclass(frozen=True)
class Extra:
    """An installable part of mlbridge: its modules (import names) and what it enables."""

    name: str
    modules: tuple[str, ...]
    purpose: str


EXTRAS = (
    Extra(
        "",
        ("onnxruntime", "onnx", "numpy", "orjson", "simdjson", "starlette", "uvicorn", "click"),
        "serving .onnx models",
    ),
    Extra("tflite", ("ai_edge_litert",), "serving .tflite models"),
    Extra(
        "training",
        ("tensorflow", "keras", "tf2onnx", "matplotlib"),
        "mlbridge train/export, serving .keras/.h5 models",
    ),
    Extra("functions", ("jax", "jax2onnx"), "mlbridge export-fn"),
)


# ---- runtimes and extras ------------------------------------------------------------------


def check_extras() -> list[Finding]:
    """Which runtimes and extras are installed; a missing core module is a problem."""
    return [_extra_finding(extra) for extra in EXTRAS]


def _extra_finding(extra: Extra) -> Finding:
    missing = [module for module in extra.modules if find_spec(module) is None]
    label = f"mlbridge[{extra.name}]" if extra.name else "mlbridge (core)"
    if not missing:
        versions = ", ".join(f"{m} {_version(m)}" for m in extra.modules)
        return Finding(OK, f"{label}: {versions}")
    wanted = [f"mlbridge[{extra.name}]"] if extra.name else missing
    fix = f"{shlex.quote(sys.executable)} -m pip install {shlex.join(wanted)}"
    text = f"{label}: {', '.join(missing)} not installed ({extra.purpose})"
    return Finding(MISSING if extra.name else PROBLEM, text, fix)


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _version(module: str) -> str:
    """The installed version of the distribution that provides ``module``, read from metadata."""
    names = _distributions().get(module, [module])
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "(version unknown)"


# ---- the home folder and its files --------------------------------------------------------


def check_home(home: Path, token_file: Path) -> list[Finding]:
    """The home folder, the connection file and the token file: the user's, closed to others.

    The verdicts are :mod:`mlbridge.auth`'s own checks, the ones the server and clients apply.
    """
    if not home.exists() and not home.is_symlink():
        return [Finding(OK, f"{home} does not exist yet; 'mlbridge serve' creates it (mode 700)")]
    try:
        check_private_folder(home)
    except ConfigError as error:
        return [_problem(error, _home_fix(home))]
    files = {home / CONNECTION_FILE, token_file}
    connection = find_connection(home)
    if connection is not None:
        files.add(connection.token_file)
    findings = [f for path in sorted(files) if (f := _file_problem(path)) is not None]
    return findings or [Finding(OK, f"{home} and the files in it that hold secrets are private")]


def _file_problem(path: Path) -> Finding | None:
    if not path.exists() and not path.is_symlink():
        return None
    try:
        check_private_file(path)
    except ConfigError as error:
        return _problem(error, f"rm {shlex.quote(str(path))}")
    return None


def _problem(error: ConfigError, fallback_fix: str) -> Finding:
    """A finding from a refusal; its fix is the command the message names, else the fallback."""
    text, _, fix = error.message.partition("; run: ")
    return Finding(PROBLEM, text, fix or fallback_fix)


def _home_fix(home: Path) -> str:
    quoted = shlex.quote(str(home))
    if home.is_symlink():
        return f"rm {quoted} && mkdir -m 700 {quoted}"
    return "mkdir -m 700 ~/.mlbridge-$USER && export MLBRIDGE_HOME=~/.mlbridge-$USER"


# ---- the server ---------------------------------------------------------------------------


def check_server(home: Path) -> list[Finding]:
    """Whether the server that ``server.json`` names answers, and with which models."""
    path = home / CONNECTION_FILE
    if not path.exists() and not path.is_symlink():
        return [Finding(OK, "no server is running; start one with 'mlbridge serve'")]
    try:
        connection = read_connection(home)
    except ConfigError as error:
        return [_problem(error, f"rm -f {shlex.quote(str(path))} && mlbridge serve")]
    if not is_live(connection):
        return [_stale(path, connection)]
    return [_ask_server(path, connection)]


def _stale(path: Path, connection: Connection) -> Finding:
    text = (
        f"{path} is stale: it names pid {connection.pid} at {connection.url}, but no server "
        "answers there (it was killed, or the machine restarted)"
    )
    return Finding(PROBLEM, text, _restart(path, connection))


def _restart(path: Path, connection: Connection) -> str:
    return f"rm -f {shlex.join([str(path), str(connection.token_file)])} && mlbridge serve"


def _ask_server(path: Path, connection: Connection) -> Finding:
    """Ask the server through the Python client, which checks its proof before the secret."""
    where = f"{connection.url} (pid {connection.pid})"
    answer: dict[str, Any] = {}
    worker = threading.Thread(target=_ask, args=(connection, answer), daemon=True)
    worker.start()
    worker.join(SERVER_TIMEOUT_S)
    if worker.is_alive():
        text = f"the server at {where} accepts connections but gives no answer within "
        return Finding(PROBLEM, f"{text}{SERVER_TIMEOUT_S} s", f"kill {connection.pid}")
    if "error" in answer:
        text = f"the server at {where} cannot be used: {answer['error']}"
        return Finding(PROBLEM, text, _restart(path, connection))
    text = f"mlbridge {answer['version']} answers at {where}"
    return Finding(OK, f"{text}; models: {', '.join(answer['models']) or 'none'}")


def _ask(connection: Connection, answer: dict[str, Any]) -> None:
    from .client import Client  # numpy and the codecs: only when a server is there to ask

    try:
        with Client(connection.url, token_file=connection.token_file) as client:
            answer["version"] = client.server_metadata().get("version", "?")
            answer["models"] = client.models()
    except MLBridgeError as error:
        answer["error"] = error.message
    except (OSError, ValueError, KeyError, TypeError) as error:
        answer["error"] = str(error)


# ---- the environment a server inherits -----------------------------------------------------


def check_library_paths(environ: Mapping[str, str]) -> list[Finding]:
    """Variables that make a server started from here load the wrong libraries or Python."""
    names = [n for n in LIBRARY_VARIABLES if environ.get(n)]
    names += sorted(n for n in environ if n.startswith("DYLD_") and environ[n])
    findings = [_library_finding(name, environ[name]) for name in names]
    return findings or [Finding(OK, "no LD_LIBRARY_PATH, DYLD_*, PYTHONPATH or PYTHONHOME set")]


def _library_finding(name: str, value: str) -> Finding:
    text = (
        f"{name}={value} is set: a server started from this environment loads "
        f"{'its Python from there' if name.startswith('PYTHON') else 'libraries from there first'}"
        " (a Mathematica kernel sets LD_LIBRARY_PATH for its own libraries)"
    )
    return Finding(PROBLEM, text, f"env -u {name} mlbridge serve   # or: unset {name}")


def check_proxies(environ: Mapping[str, str]) -> list[Finding]:
    """Proxy variables that would send requests for 127.0.0.1 or localhost to the proxy."""
    proxies = [n for n in PROXY_VARIABLES if environ.get(n)]
    if not proxies:
        return [Finding(OK, "no proxy variables set")]
    exempt = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    uncovered = [name for name in LOOPBACK_NAMES if not _bypassed(name, exempt)]
    if not uncovered:
        return [Finding(OK, f"{', '.join(proxies)} set; no_proxy covers 127.0.0.1 and localhost")]
    wanted = ",".join([*filter(None, exempt.split(",")), *uncovered])
    text = (
        f"{', '.join(proxies)} set and no_proxy does not cover {' or '.join(uncovered)}: "
        "curl, R and other clients would send the secret to the proxy"
    )
    return [Finding(PROBLEM, text, f"export no_proxy={shlex.quote(wanted)} NO_PROXY=$no_proxy")]


def _bypassed(host: str, no_proxy: str) -> bool:
    """Whether a no_proxy list exempts ``host`` (names, suffixes, addresses, CIDR blocks)."""
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*" or entry.lstrip(".") == host:
            return True
        if host == "127.0.0.1" and "/" in entry and _in_network(host, entry):
            return True
    return False


def _in_network(address: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


# ---- the report ---------------------------------------------------------------------------


def diagnose(environ: Mapping[str, str] | None = None) -> list[tuple[str, list[Finding]]]:
    """Every section of the report, with its findings."""
    env = os.environ if environ is None else environ
    settings = load_settings(env)
    home = settings.home
    return [
        ("runtimes and extras", check_extras()),
        (f"home folder {home}", check_home(home, settings.token_file)),
        ("server", check_server(home)),
        ("environment a server inherits", check_library_paths(env)),
        ("proxies", check_proxies(env)),
    ]


def format_report(sections: list[tuple[str, list[Finding]]]) -> str:
    """The report as text: one block per section, a fix under each finding that has one."""
    lines = [f"mlbridge {__version__} on Python {sys.version.split()[0]} ({sys.executable})"]
    for title, findings in sections:
        lines += ["", title]
        for finding in findings:
            lines.append(f"  {finding.verdict:<8} {finding.text}")
            if finding.fix:
                lines.append(f"  {'':<8} fix: {finding.fix}")
    count = sum(f.verdict == PROBLEM for _, findings in sections for f in findings)
    lines += ["", f"{count} problem{'s' if count != 1 else ''} found" if count else "no problems"]
    return "\n".join(lines)


@click.command()
def doctor() -> None:
    """Check the installation, the home folder, the server and the environment; say how to fix."""
    sections = diagnose()
    click.echo(format_report(sections))
    if any(f.verdict == PROBLEM for _, findings in sections for f in findings):
        sys.exit(1)
