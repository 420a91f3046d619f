"""The `mlbridge` command: thin wrappers that call library functions.

Domain errors print as one line (``mlbridge: error: ...``) with exit
status 1, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from . import __version__
from .client import Client
from .connection import (
    Connection,
    connection_path,
    is_live,
    read_connection,
    wait_for_exit,
    wait_for_server,
)
from .doctor import doctor
from .errors import ConfigError, MLBridgeError
from .functions.commands import export_fn
from .settings import Settings, load_settings, setting_help, settings_environment
from .training.commands import export, train

STOP_TIMEOUT_S = 15
DETACH_TIMEOUT_S = 120


class MLBridgeGroup(click.Group):
    """A group that turns MLBridgeError into a one-line message."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MLBridgeError as error:
            raise click.ClickException(error.message) from None


@click.group(cls=MLBridgeGroup)
@click.version_option(__version__, prog_name="mlbridge")
def main() -> None:
    """Serve trained ML models to Mathematica, Octave, R and Python."""


@main.command()
@click.argument("models", nargs=-1, type=click.Path(path_type=Path))
@click.option("--host", help=setting_help("host") + " [default: 127.0.0.1]")
@click.option("--port", type=int, help=setting_help("port") + " [default: 0]")
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    help=setting_help("token_file"),
)
@click.option("--secret-file", help=setting_help("secret_file"))
@click.option("--tls-cert", help=setting_help("tls_cert"))
@click.option("--tls-key", help=setting_help("tls_key"))
@click.option("--server-names", help=setting_help("server_names"))
@click.option("--threads", type=int, help=setting_help("threads"))
@click.option("--workers", type=int, help=setting_help("workers"))
@click.option("--max-batch-size", type=int, help=setting_help("max_batch_size"))
@click.option("--batch-delay-us", type=int, help=setting_help("batch_delay_us"))
@click.option("--strict", is_flag=True, default=None, help=setting_help("strict"))
@click.option("--watch", is_flag=True, default=None, help=setting_help("watch"))
@click.option("--access-log", is_flag=True, default=None, help=setting_help("access_log"))
@click.option("--ray", is_flag=True, default=None, help=setting_help("ray"))
@click.option("--ray-address", help=setting_help("ray_address"))
@click.option("--replicas", type=int, help=setting_help("replicas"))
@click.option("--max-replicas", type=int, help=setting_help("max_replicas"))
@click.option("--detach", is_flag=True, help="Run in the background; return once it is ready.")
def serve(models: tuple[Path, ...], detach: bool, **flags) -> None:
    """Serve MODELS (files or model folders); the demo models when none are given."""
    settings = load_settings(**flags)
    if detach:
        _serve_detached(settings, models)
        return
    logging.basicConfig(level=logging.INFO, format="mlbridge: %(message)s")
    if settings.ray:
        from .ray_serve import serve_on_ray

        serve_on_ray(list(models), settings)
        return
    from .registry import load_registry
    from .server.exposure import Exposure
    from .server.run import serve as run_server

    Exposure.from_settings(settings)  # refuse a bad address or TLS files before loading models
    registry = load_registry(list(models), threads=settings.threads, strict=settings.strict)
    if not len(registry):
        raise ConfigError("no model could be loaded; nothing to serve")
    run_server(registry, settings)


def _serve_detached(settings: Settings, models: tuple[Path, ...]) -> None:
    """Start `mlbridge serve` in its own session with the same settings; wait until ready.

    Its output goes to ``<home>/server.log``: 0600, never through a symlink, kept under
    ``log_max_mb`` (moved to ``server.log.1`` when full).
    """
    import subprocess

    from .auth import secure_folder
    from .server.files import LOG_FILE, open_log

    secure_folder(settings.home)
    log_path = settings.home / LOG_FILE
    log = open_log(log_path, settings.log_max_bytes)
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "mlbridge", "serve", *map(str, models)],
            env={**os.environ, **settings_environment(settings)},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(log)
    try:
        connection = wait_for_server(settings.home, child.pid, DETACH_TIMEOUT_S, child.poll)
    except ConfigError as error:
        reason = _last_error_line(log_path)
        raise ConfigError(f"{error.message}{reason}; see {log_path}") from None
    click.echo(connection.url)


def _last_error_line(log_path: Path) -> str:
    """The child's own last error message (": ..."), from the end of its log."""
    try:
        tail = log_path.read_bytes()[-4096:].decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in tail if line.startswith(("Error:", "mlbridge: error"))]
    return f": {errors[-1].split(':', 1)[1].strip()}" if errors else ""


@main.command()
def models() -> None:
    """List the models of the running server and their signatures."""
    client = Client()
    for name in client.models():
        info = client.metadata(name)
        inputs = ", ".join(f"{i['name']} {i['shape']} {i['datatype']}" for i in info["inputs"])
        outputs = ", ".join(f"{o['name']} {o['shape']} {o['datatype']}" for o in info["outputs"])
        click.echo(f"{name}  ({info['platform']})  {inputs} -> {outputs}")


@main.command()
def status() -> None:
    """Say whether a server runs, where, what it serves, and its connection files."""
    home = load_settings().home
    connection, client = _verified_server(home)
    info = client.server_metadata()
    click.echo(f"mlbridge {info['version']} running at {client.url} (pid {info['pid']})")
    click.echo(f"models: {', '.join(client.models())}")
    click.echo(f"connection file: {connection_path(home)}")
    click.echo(f"token file: {connection.token_file}")


@main.command()
def stop() -> None:
    """Stop the server of this home: asks it over HTTP, with the secret; signals nothing."""
    home = load_settings().home
    connection, client = _verified_server(home)
    client.shutdown()
    if not wait_for_exit(home, connection.pid, STOP_TIMEOUT_S):
        raise ConfigError(
            f"the server (pid {connection.pid}) did not stop within {STOP_TIMEOUT_S} s"
        )
    click.echo(f"stopped the server (pid {connection.pid})")


def _verified_server(home: Path) -> tuple[Connection, Client]:
    """The server of ``home``: trusted connection file, live process, and it says it is that one."""
    connection = read_connection(home)
    if not is_live(connection):
        raise ConfigError(
            f"no server is running: {connection_path(home)} names pid {connection.pid} at "
            f"{connection.url}, which is gone (a stale file; the next 'mlbridge serve' replaces it)"
        )
    client = Client(home=home)
    reported = client.server_metadata().get("pid")
    if reported != connection.pid:
        raise ConfigError(
            f"the server at {connection.url} says it is pid {reported}, but "
            f"{connection_path(home)} names pid {connection.pid}; not trusting it"
        )
    return connection, client


@main.command()
@click.option(
    "--secret-file",
    type=click.Path(path_type=Path),
    help="Where to keep it [default: MLBRIDGE_SECRET_FILE, else <home>/secret].",
)
@click.option("--rotate", is_flag=True, help="Replace the secret the file holds.")
def token(secret_file: Path | None, rotate: bool) -> None:
    """Make (or --rotate) a long-lived secret to copy to client machines, for remote use.

    The secret goes to a 0600 file and is never printed. Serve it with
    'mlbridge serve --secret-file FILE'; a rotated secret takes effect at the next start.
    """
    from .auth import provision_secret, secure_folder

    settings = load_settings()
    secure_folder(settings.home)
    configured = Path(settings.secret_file) if settings.secret_file else None
    path = (secret_file or configured or settings.home / "secret").expanduser().absolute()
    if not provision_secret(path, rotate):
        click.echo(f"{path} already holds a secret; --rotate replaces it")
        return
    click.echo(f"wrote a new secret to {path} (mode 0600)")
    click.echo(f"serve it:  mlbridge serve --secret-file {path} --host ADDRESS --tls-cert ... ")
    click.echo("copy it to each client machine (scp; keep it 0600) and give it as the token file")


@main.command()
@click.argument("model")
@click.argument("source", default="-")
@click.option("--key", help="Array name inside an .npz file (default: the first).")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    help="Write the result to an .npy or .json file instead of stdout.",
)
@click.option("--argmax", is_flag=True, help="Print the index of the largest output per example.")
def predict(model: str, source: str, key: str | None, output: Path | None, argmax: bool) -> None:
    """Run MODEL on the array in SOURCE (.npy, .npz, .json file; '-' reads JSON from stdin)."""
    from .arrayio import read_array, write_array

    array = read_array(source, key)
    result = Client().predict(model, array)
    if argmax:
        result = result.argmax(axis=-1)
    if output:
        write_array(output, result)
    else:
        click.echo(json.dumps(result.tolist()))


@main.command("export-triton")
@click.argument("repo", type=click.Path(file_okay=False, path_type=Path))
@click.argument("models", nargs=-1, type=click.Path(path_type=Path))
@click.option("--max-batch-size", type=int, help=setting_help("max_batch_size"))
@click.option("--batch-delay-us", type=int, help=setting_help("batch_delay_us"))
@click.option("--replace", is_flag=True, help="Replace model folders that REPO already has.")
def export_triton(repo: Path, models: tuple[Path, ...], replace: bool, **flags) -> None:
    """Write a Triton model repository REPO from MODELS (the demo models when none are given)."""
    from .batching import BatchPolicy
    from .triton import export_repository

    settings = load_settings(**flags)
    batching = BatchPolicy(settings.max_batch_size, settings.batch_delay_us)
    report = export_repository(repo, list(models), batching, replace)
    for name in report.written:
        click.echo(f"{repo / name}: config.pbtxt checked against Triton's schema and the graph")
    for line in report.skipped:
        click.echo(line, err=True)
    if not report.written:
        raise ConfigError(f"no model was exported to {repo}")


# Training and export commands import TensorFlow or JAX only when they run.
main.add_command(train)
main.add_command(export)
main.add_command(export_fn)
main.add_command(doctor)
