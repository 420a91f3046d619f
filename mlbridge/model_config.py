"""A model's configuration: the typed form of its ``NAME.json`` or ``config.json``.

``mlbridge export`` and ``mlbridge export-fn`` write the file; users may edit
it. Every key is known: a misspelled one (``"lables"``) fails that model's
load with a message naming it and the known keys. Keys:

==================  ==========================================================
labels              class names, one per output element (metadata, Classify)
description         one line shown in the model's metadata
inputs, outputs     the signature as exported; checked against the model file
gradient            ``false`` (serve no gradient), or the gradient companion:
                    ``{"file": "NAME.vjp.onnx", ...}`` plus its export checks
batching            ``{"max_batch_size": N, "max_delay_us": D}``: this model's dynamic
                    batching, overriding the server's settings (N <= 1: off)
allow_nonfinite     ``true``: inputs may hold NaN and infinities, and results holding
                    them are sent (``null`` in JSON); default ``false``: both are a 400
provenance keys     ``source``, ``architecture``, ``evidence``, ``parameters``,
                    ``heldout_accuracy``, ``epochs``, ``exports``: what built the
                    file and how it was checked; kept, not interpreted
==================  ==========================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batching import BatchPolicy
from .errors import ModelLoadError
from .protocol import TensorSpec

PROVENANCE_KEYS = frozenset(
    {"source", "architecture", "evidence", "parameters", "heldout_accuracy", "epochs", "exports"}
)
KNOWN_KEYS = (
    frozenset(
        {"labels", "description", "inputs", "outputs", "gradient", "batching", "allow_nonfinite"}
    )
    | PROVENANCE_KEYS
)
BATCHING_KEYS = frozenset({"max_batch_size", "max_delay_us"})
GRADIENT_KEYS = frozenset(
    {"file", "checked_against", "max_abs_difference", "max_relative_error_fd64", "samples"}
)


@dataclass(frozen=True)
class GradientConfig:
    """Where a model's gradient comes from: a file, built at load, or none."""

    enabled: bool = True
    file: str | None = None  # relative to the config file's folder
    checks: dict[str, Any] = field(default_factory=dict)  # what export measured


@dataclass(frozen=True)
class ModelConfig:
    """Everything a model's config file may say; defaults when there is none."""

    labels: tuple[str, ...] | None = None
    description: str = ""
    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] | None = None
    gradient: GradientConfig = GradientConfig()
    batching: BatchPolicy | None = None  # None: the server's settings
    allow_nonfinite: bool = False  # NaN and infinities in inputs and results
    provenance: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None  # the file it was read from


def read_model_config(path: Path | None) -> ModelConfig:
    """Read and check a config file; ``None`` gives the defaults."""
    if path is None:
        return ModelConfig()
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return parse_model_config(document, path)


def parse_model_config(document: dict[str, Any], path: Path) -> ModelConfig:
    """The typed config of one JSON object; unknown keys are a ModelLoadError."""
    _refuse_unknown(path, document, KNOWN_KEYS, "")
    labels = document.get("labels")
    if labels is not None and not isinstance(labels, list):
        raise ModelLoadError(f"{path}: 'labels' must be a list of names")
    return ModelConfig(
        labels=tuple(map(str, labels)) if labels else None,
        description=str(document.get("description", "")),
        inputs=_specs(path, document, "inputs"),
        outputs=_specs(path, document, "outputs"),
        gradient=_gradient(path, document.get("gradient", True)),
        batching=_batching(path, document.get("batching")),
        allow_nonfinite=_flag(path, document, "allow_nonfinite"),
        provenance={k: v for k, v in document.items() if k in PROVENANCE_KEYS},
        source=path,
    )


def _refuse_unknown(path: Path, document: dict, known: frozenset[str], within: str) -> None:
    unknown = sorted(set(document) - known)
    if unknown:
        raise ModelLoadError(
            f"{path}: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}{within}; known keys: {', '.join(sorted(known))}"
        )


def _specs(path: Path, document: dict, key: str) -> tuple[TensorSpec, ...] | None:
    entries = document.get(key)
    if entries is None:
        return None
    try:
        return tuple(TensorSpec(e["name"], e["datatype"], tuple(e["shape"])) for e in entries)
    except (TypeError, KeyError):
        raise ModelLoadError(
            f"{path}: '{key}' must be a list of {{name, datatype, shape}} objects"
        ) from None


def _gradient(path: Path, value: Any) -> GradientConfig:
    if isinstance(value, bool):
        return GradientConfig(enabled=value)
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path}: 'gradient' must be false or an object with a 'file'")
    _refuse_unknown(path, value, GRADIENT_KEYS, " in 'gradient'")
    file = value.get("file")
    if file is not None and not isinstance(file, str):
        raise ModelLoadError(f"{path}: 'gradient.file' must be a file name")
    checks = {k: v for k, v in value.items() if k != "file"}
    return GradientConfig(enabled=True, file=file, checks=checks)


def _flag(path: Path, document: dict, key: str) -> bool:
    value = document.get(key, False)
    if not isinstance(value, bool):
        raise ModelLoadError(f"{path}: {key!r} must be true or false; got {value!r}")
    return value


def _batching(path: Path, value: Any) -> BatchPolicy | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path}: 'batching' must be an object with max_batch_size")
    _refuse_unknown(path, value, BATCHING_KEYS, " in 'batching'")
    numbers = {key: value.get(key, 0) for key in BATCHING_KEYS}
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers.values()):
        raise ModelLoadError(f"{path}: 'batching' values must be whole numbers >= 0")
    return BatchPolicy(**numbers)
