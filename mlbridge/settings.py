"""The one table of server settings.

Each setting has a default, an environment variable (``MLBRIDGE_<NAME>``)
and a line of help. CLI flags override the environment, which overrides
the default. ``docs/settings.md`` documents every row (a test checks it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

MIB = 1024 * 1024


@dataclass(frozen=True)
class Setting:
    """One row of the table."""

    name: str
    default: Any
    help: str

    @property
    def env_var(self) -> str:
        return "MLBRIDGE_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("home", "~/.mlbridge", "Folder for the token and connection files (mode 0700)."),
    Setting("host", "127.0.0.1", "Address to bind; beyond loopback only with TLS (--tls-cert)."),
    Setting("port", 0, "TCP port; 0 picks a free one (written to server.json)."),
    Setting("token_file", "", "Where to write the secret; default <home>/token."),
    Setting("secret_file", "", "Serve the long-lived secret 'mlbridge token' made (else: fresh)."),
    Setting("tls_cert", "", "PEM certificate (chain) to serve https with; needs --tls-key."),
    Setting("tls_key", "", "PEM private key of --tls-cert (keep it 0600)."),
    Setting("server_names", "", "Remote use: host names clients may address, comma-separated."),
    Setting("threads", 2, "Threads each model runtime may use for one request."),
    Setting("workers", 4, "Requests computed at once (the inference thread pool)."),
    Setting("max_body_mb", 64, "Largest request body accepted, in MiB (413 above it)."),
    Setting("body_budget_mb", 256, "Request bodies held at once, in MiB (503 above it)."),
    Setting("max_header_kb", 16, "Largest request line and headers, in KiB (431 above it)."),
    Setting("max_connections", 1000, "Connections open at once (503 beyond them)."),
    Setting("header_timeout_s", 10, "Longest wait for a request's headers (408 after it)."),
    Setting("body_timeout_s", 30, "Longest wait for a request's body (408 after it)."),
    Setting("keep_alive_timeout_s", 30, "An idle kept-alive connection is closed after this."),
    Setting("max_queue", 256, "Requests waiting for inference beyond those computing (503)."),
    Setting("max_batch_size", 64, "Dynamic batching: most rows merged into one call (1: off)."),
    Setting("batch_delay_us", 0, "Dynamic batching: longest wait for more requests, in µs."),
    Setting("strict", False, "Refuse to start if any model fails to load."),
    Setting("watch", False, "Reload a model when its files change (hot reload)."),
    Setting("shutdown_timeout_s", 10, "On SIGTERM, how long in-flight requests may finish."),
    Setting("access_log", False, "Log one JSON line per request (never payloads or secrets)."),
    Setting("log_max_mb", 10, "With --detach: rotate <home>/server.log at this size, in MiB."),
    Setting("ray", False, "Deploy on Ray Serve (the ray extra) instead of serving in-process."),
    Setting("ray_address", "", "Ray cluster to deploy on; empty: start a local one on 127.0.0.1."),
    Setting("replicas", 1, "Ray Serve: replicas of the app (each loads every model)."),
    Setting("max_replicas", 0, "Ray Serve: autoscale from --replicas up to this many (0: fixed)."),
    Setting("replica_cpus", 1.0, "Ray Serve: CPUs each replica reserves."),
    Setting("replica_max_ongoing", 64, "Ray Serve: requests one replica takes at once."),
    Setting("ray_cpus", 0, "Local Ray cluster: CPUs it may use (0: all of this machine's)."),
    Setting("ray_object_store_mb", 128, "Local Ray cluster: object store size in MiB."),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}
LIMITS = (
    "max_body_mb", "body_budget_mb", "max_header_kb", "max_connections",
    "header_timeout_s", "body_timeout_s", "keep_alive_timeout_s", "max_queue", "log_max_mb",
)  # fmt: skip


def setting_help(name: str) -> str:
    """The help text of a setting, for CLI flags that set it."""
    return _BY_NAME[name].help


def settings_environment(settings: Settings) -> dict[str, str]:
    """The ``MLBRIDGE_*`` variables that make a child process resolve the same settings."""
    return {s.env_var: str(getattr(settings, s.name)) for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Resolved values of every setting."""

    home: Path
    host: str
    port: int
    token_file: Path
    secret_file: str
    tls_cert: str
    tls_key: str
    server_names: str
    threads: int
    workers: int
    max_body_mb: int
    body_budget_mb: int
    max_header_kb: int
    max_connections: int
    header_timeout_s: int
    body_timeout_s: int
    keep_alive_timeout_s: int
    max_queue: int
    max_batch_size: int
    batch_delay_us: int
    strict: bool
    watch: bool
    shutdown_timeout_s: int
    access_log: bool
    log_max_mb: int
    ray: bool
    ray_address: str
    replicas: int
    max_replicas: int
    replica_cpus: float
    replica_max_ongoing: int
    ray_cpus: int
    ray_object_store_mb: int

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_mb * MIB

    @property
    def body_budget_bytes(self) -> int:
        return self.body_budget_mb * MIB

    @property
    def max_header_bytes(self) -> int:
        return self.max_header_kb * 1024

    @property
    def log_max_bytes(self) -> int:
        return self.log_max_mb * MIB


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Resolve settings from defaults, the environment, then ``overrides``."""
    source: Mapping[str, str] = os.environ if environ is None else environ
    raw = {s.name: source.get(s.env_var, s.default) for s in SETTINGS}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return _convert(raw)


def _convert(raw: dict[str, Any]) -> Settings:
    values = {name: _typed(_BY_NAME[name], value) for name, value in raw.items()}
    values["home"] = Path(values["home"]).expanduser().absolute()
    token = values["token_file"]
    values["token_file"] = (
        Path(token).expanduser().absolute() if token else values["home"] / "token"
    )
    settings = Settings(**values)
    _check_limits(settings)
    return settings


def _check_limits(settings: Settings) -> None:
    """Limits must be positive, and the body budget must hold at least one largest body."""
    for name in LIMITS:
        if getattr(settings, name) < 1:
            raise ConfigError(f"{_BY_NAME[name].env_var}: expected at least 1")
    if settings.body_budget_mb < settings.max_body_mb:
        raise ConfigError(
            f"MLBRIDGE_BODY_BUDGET_MB ({settings.body_budget_mb}) must be at least "
            f"MLBRIDGE_MAX_BODY_MB ({settings.max_body_mb}), or no largest body could be read"
        )


def _typed(setting: Setting, value: Any) -> Any:
    kind = type(setting.default)
    if kind is bool and isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{setting.env_var}: expected true or false, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{setting.env_var}: expected {kind.__name__}, got {value!r}") from None
