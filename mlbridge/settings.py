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
    Setting("host", "127.0.0.1", "Address to bind; only loopback addresses are allowed."),
    Setting("port", 0, "TCP port; 0 picks a free one (written to server.json)."),
    Setting("token_file", "", "Where to write the secret; default <home>/token."),
    Setting("threads", 2, "Threads each model runtime may use for one request."),
    Setting("workers", 4, "Requests computed at once (the inference thread pool)."),
    Setting("max_body_mb", 512, "Largest request body accepted, in MiB."),
    Setting("max_batch_size", 64, "Dynamic batching: most rows merged into one call (1: off)."),
    Setting("batch_delay_us", 0, "Dynamic batching: longest wait for more requests, in µs."),
    Setting("strict", False, "Refuse to start if any model fails to load."),
    Setting("watch", False, "Reload a model when its files change (hot reload)."),
    Setting("shutdown_timeout_s", 10, "On SIGTERM, how long in-flight requests may finish."),
    Setting("access_log", False, "Log one JSON line per request (never payloads or secrets)."),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


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
    threads: int
    workers: int
    max_body_mb: int
    max_batch_size: int
    batch_delay_us: int
    strict: bool
    watch: bool
    shutdown_timeout_s: int
    access_log: bool

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_mb * 1024 * 1024


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
    return Settings(**values)


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
