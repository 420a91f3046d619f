"""The models a server serves, loaded once at start-up.

``mlbridge serve`` takes files and folders. A file is served under its
stem; a folder is a model repository holding model files and ``NAME/``
folders (one model file plus an optional ``config.json``). A model file's
optional sidecar ``NAME.json`` (or a folder's ``config.json``) adds class
labels and a description; ``mlbridge export`` writes it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, MLBridgeError, ModelLoadError, ModelNotFound
from .protocol import ModelSignature
from .runtimes import RUNTIMES, Runtime

log = logging.getLogger("mlbridge")
DEMO_MODELS = Path(__file__).resolve().parent / "demo_models"
FOLDER_CONFIG = "config.json"


@dataclass
class ServedModel:
    """A loaded model under its served name."""

    name: str
    path: Path
    runtime: Runtime
    signature: ModelSignature
    description: str = ""

    @property
    def platform(self) -> str:
        return type(self.runtime).__name__.removesuffix("Runtime").lower()


@dataclass(frozen=True)
class LoadFailure:
    """A model file that did not load, and why."""

    path: Path
    reason: str


class ModelRegistry:
    """Name -> loaded model; read-only once the server runs."""

    def __init__(self, models: dict[str, ServedModel]) -> None:
        self.models = models

    def get(self, name: str) -> ServedModel:
        """Return the model called ``name`` or raise ModelNotFound listing the known ones."""
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"no model named {name!r}; this server serves: {known}") from None

    def names(self) -> list[str]:
        return sorted(self.models)

    def close(self) -> None:
        for model in self.models.values():
            model.runtime.close()


def load_registry(paths: list[Path], threads: int = 1, strict: bool = False) -> ModelRegistry:
    """Find and load every model under ``paths`` (the demo models when empty)."""
    found = discover(paths or [DEMO_MODELS])
    models: dict[str, ServedModel] = {}
    failures: list[LoadFailure] = []
    for name, path in found:
        if name in models:
            failures.append(LoadFailure(path, f"a model named {name!r} is already served"))
            continue
        try:
            models[name] = load_model(name, path, threads)
        except MLBridgeError as error:
            failures.append(LoadFailure(path, error.message))
        except Exception as error:  # a broken file may raise anything from its engine
            failures.append(LoadFailure(path, f"{type(error).__name__}: {error}"))
    for failure in failures:
        log.error("could not load %s: %s", failure.path, failure.reason)
    if failures and strict:
        first = failures[0]
        raise ConfigError(f"could not load {first.path}: {first.reason} (--strict)")
    return ModelRegistry(models)


def discover(paths: list[Path]) -> list[tuple[str, Path]]:
    """List (name, model file) pairs from files and repository folders."""
    found: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_file():
            found.append((path.stem, path))
        elif path.is_dir():
            found.extend(_scan_repository(path))
        else:
            raise ConfigError(f"{path}: no such file or folder")
    return found


def _scan_repository(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix in RUNTIMES:
            found.append((entry.stem, entry))
        elif entry.is_dir() and not entry.name.startswith((".", "_")):
            files = [f for f in sorted(entry.iterdir()) if f.suffix in RUNTIMES or f.is_dir()]
            model_files = [f for f in files if f.suffix in RUNTIMES]
            if len(model_files) == 1:
                found.append((entry.name, model_files[0]))
            elif model_files:
                names = ", ".join(f.name for f in model_files)
                raise ConfigError(f"{entry}: holds several model files ({names}); keep one")
    return found


def load_model(name: str, path: Path, threads: int = 1) -> ServedModel:
    """Load one model file with the runtime its suffix selects."""
    runtime_class = RUNTIMES.get(path.suffix)
    if runtime_class is None:
        known = ", ".join(sorted(RUNTIMES))
        raise ModelLoadError(f"unknown model file type {path.suffix!r}; expected one of {known}")
    runtime = runtime_class(path, threads=threads)
    runtime.load()
    config = read_config(path, in_own_folder=path.parent.name == name)
    labels = config.get("labels")
    signature = replace(runtime.signature(), labels=tuple(map(str, labels)) if labels else None)
    return ServedModel(name, path, runtime, signature, str(config.get("description", "")))


def read_config(model_file: Path, in_own_folder: bool = False) -> dict[str, Any]:
    """The model's sidecar ``NAME.json`` or its own folder's ``config.json``, if any."""
    candidates = [model_file.with_suffix(".json")]
    if in_own_folder:
        candidates.append(model_file.parent / FOLDER_CONFIG)
    for candidate in candidates:
        if candidate.is_file():
            try:
                config = json.loads(candidate.read_text())
            except (OSError, ValueError) as error:
                raise ModelLoadError(f"{candidate}: not valid JSON ({error})") from None
            if not isinstance(config, dict):
                raise ModelLoadError(f"{candidate}: expected a JSON object")
            return config
    return {}
