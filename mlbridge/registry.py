"""The models a server serves, loaded once at start-up, with their gradient companions.

``mlbridge serve`` takes files and folders. A file is served under its
stem; a folder is a model repository holding model files and ``NAME/``
folders (one model file plus an optional ``config.json``), or Triton's layout:
``NAME/config.pbtxt`` with the model in a numbered version folder
(``NAME/1/model.onnx``; the highest number serves, under that version). A model
file's config is its sidecar ``NAME.json`` (or its folder's ``config.json``),
read as a :class:`~mlbridge.model_config.ModelConfig`; ``config.pbtxt`` is
Triton's, never read as one.

Each differentiable model gets a gradient companion ``NAME.vjp``: an
ordinary model whose inputs are the model's inputs plus one cotangent per
output (``OUTPUT_cotangent``) and whose outputs are ``INPUT_grad``, the
vector-Jacobian product. It is read from ``NAME.vjp.onnx`` beside the model
(what ``mlbridge export --grad`` and ``export-fn`` write), from the Triton
model folder ``NAME.vjp/`` beside ``NAME/`` (what ``mlbridge export-triton``
writes), or built from an ONNX model at load time. A gradient that cannot be had never fails the
model's load: the reason is kept and answered on the gradient routes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import (
    ConfigError,
    GradientUnavailable,
    MLBridgeError,
    ModelLoadError,
    ModelNotFound,
    ReloadFailed,
)
from .model_config import ModelConfig, read_model_config
from .protocol import ModelSignature, TensorSpec, cotangent_name, gradient_name
from .runtimes import RUNTIMES, OnnxRuntime, Runtime

log = logging.getLogger("mlbridge")
DEMO_MODELS = Path(__file__).resolve().parent / "demo_models"
FOLDER_CONFIG = "config.json"
TRITON_CONFIG = "config.pbtxt"  # marks a Triton model folder: NAME/VERSION/model.onnx
MODEL_VERSION = "1"
COMPANION_SUFFIX = ".vjp"  # NAME.vjp is the gradient companion of NAME
COMPANION_FILE_SUFFIX = COMPANION_SUFFIX + ".onnx"
REAL_DATATYPES = frozenset({"FP16", "FP32", "FP64"})


@dataclass(frozen=True)
class ModelSource:
    """Where discovery found a model: its name, its file, its config file (if any) and more."""

    name: str
    model_file: Path
    config_file: Path | None = None
    version: str = MODEL_VERSION
    companion_file: Path | None = None  # a gradient companion that discovery found


@dataclass
class ServedModel:
    """A loaded model under its served name."""

    name: str
    path: Path
    runtime: Runtime
    signature: ModelSignature
    config: ModelConfig = field(default_factory=ModelConfig)
    version: str = MODEL_VERSION
    gradient: str | None = None  # the companion's name
    gradient_unavailable: str = ""  # why there is no companion
    gradient_of: str | None = None  # on a companion: the model it differentiates
    source: ModelSource | None = None  # where it was loaded from (to reload it)

    @property
    def platform(self) -> str:
        return type(self.runtime).__name__.removesuffix("Runtime").lower()

    @property
    def description(self) -> str:
        return self.config.description

    def companion_name(self) -> str:
        """The gradient companion's name, or GradientUnavailable saying why there is none."""
        if self.gradient is None:
            raise GradientUnavailable(
                f"model {self.name!r} serves no gradient: {self.gradient_unavailable}"
            )
        return self.gradient


class ModelRegistry:
    """Name -> loaded model (companions included).

    Reloading swaps a model and its companion in one step (:meth:`install`), after the
    new files loaded (:meth:`load_again`, slow: call it off the event loop). Requests
    that already hold the old model finish on it; a failed reload leaves the old model
    serving and its error in :meth:`reload_error`.
    """

    def __init__(self, models: list[ServedModel], threads: int = 1) -> None:
        self._models = {model.name: model for model in models}
        self._reload_errors: dict[str, str] = {}
        self.threads = threads

    def get(self, name: str) -> ServedModel:
        """Return the model called ``name`` or raise ModelNotFound listing the known ones."""
        try:
            return self._models[name]
        except KeyError:
            known = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(f"no model named {name!r}; this server serves: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._models)

    def models(self) -> list[ServedModel]:
        return [self._models[name] for name in self.names()]

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def load_again(self, name: str) -> list[ServedModel]:
        """Load model ``name`` (and its companion) afresh from its files; raise on failure."""
        source = self.get(name).source
        if source is None:
            raise ReloadFailed(f"model {name!r} has no files to reload from")
        try:
            return load_model(source, self.threads)
        except Exception as error:  # a broken file may raise anything from its engine
            reason = error.message if isinstance(error, MLBridgeError) else repr(error)
            self._reload_errors[name] = reason
            raise ReloadFailed(
                f"could not reload {name!r} ({reason}); the previous version still serves"
            ) from error

    def install(self, models: list[ServedModel]) -> None:
        """Serve ``models`` (a model and its companion) in place of their namesakes, at once."""
        primary = models[0]
        old = self._models.get(primary.name)
        replaced = {primary.name} | ({old.gradient} if old and old.gradient else set())
        kept = {name: m for name, m in self._models.items() if name not in replaced}
        self._models = {**kept, **{model.name: model for model in models}}
        self._reload_errors.pop(primary.name, None)

    def reload_error(self, name: str) -> str:
        """Why the last reload of ``name`` failed ("" if it did not)."""
        return self._reload_errors.get(name, "")

    def sources(self) -> dict[Path, str]:
        """Each model's files (model, config, companion) -> the model's name, for watching."""
        files: dict[Path, str] = {}
        for model in self._models.values():
            if model.source is not None and model.gradient_of is None:
                source = model.source
                companion = source.companion_file or source.model_file.with_name(
                    source.model_file.stem + COMPANION_FILE_SUFFIX
                )
                for path in (source.model_file, source.config_file, companion):
                    if path is not None:
                        files[path.resolve()] = model.name
        return files

    def close(self) -> None:
        for model in self._models.values():
            model.runtime.close()


def load_registry(paths: list[Path], threads: int = 1, strict: bool = False) -> ModelRegistry:
    """Find and load every model under ``paths`` (the demo models when empty)."""
    loaded: dict[str, ServedModel] = {}
    failures: list[tuple[Path, str]] = []
    for source in discover(paths or [DEMO_MODELS]):
        if source.name in loaded:
            failures.append((source.model_file, f"a model named {source.name!r} is already served"))
            continue
        try:
            model, *companions = load_model(source, threads)
        except MLBridgeError as error:
            failures.append((source.model_file, error.message))
            continue
        except Exception as error:  # a broken file may raise anything from its engine
            failures.append((source.model_file, f"{type(error).__name__}: {error}"))
            continue
        loaded[model.name] = model
        for companion in companions:
            if companion.name in loaded:  # a model of that name came first: it stays
                model.gradient = None
                model.gradient_unavailable = f"a model named {companion.name!r} is already served"
                companion.runtime.close()
            else:
                loaded[companion.name] = companion
    for path, reason in failures:
        log.error("could not load %s: %s", path, reason)
    if failures and strict:
        raise ConfigError(f"could not load {failures[0][0]}: {failures[0][1]} (--strict)")
    return ModelRegistry(list(loaded.values()), threads)


def discover(paths: list[Path]) -> list[ModelSource]:
    """List the models in files and repository folders, with their config files."""
    found: list[ModelSource] = []
    for path in paths:
        if path.is_file():
            found.append(ModelSource(path.stem, path, _sidecar(path)))
        elif path.is_dir():
            found.extend(_scan_repository(path))
        else:
            raise ConfigError(f"{path}: no such file or folder")
    return found


def _scan_repository(folder: Path) -> list[ModelSource]:
    found = []
    for entry in sorted(folder.iterdir()):
        if _is_model_file(entry):
            found.append(ModelSource(entry.stem, entry, _sidecar(entry)))
        elif entry.is_dir() and not entry.name.startswith((".", "_")):
            model_file = _only_model_file(entry)
            if model_file is not None:
                config = entry / FOLDER_CONFIG
                sidecar = _sidecar(model_file)
                found.append(ModelSource(entry.name, model_file, sidecar or _existing(config)))
            elif _is_triton_folder(entry) and not _is_triton_companion(entry):
                found.extend(_triton_source(entry))
    return found


def _only_model_file(folder: Path) -> Path | None:
    model_files = [f for f in sorted(folder.iterdir()) if _is_model_file(f)]
    if len(model_files) > 1:
        names = ", ".join(f.name for f in model_files)
        raise ConfigError(f"{folder}: holds several model files ({names}); keep one")
    return model_files[0] if model_files else None


def _is_triton_folder(folder: Path) -> bool:
    return (folder / TRITON_CONFIG).is_file()


def _is_triton_companion(folder: Path) -> bool:
    """``NAME.vjp/`` beside a Triton model folder ``NAME/``: that model's gradient companion."""
    model = folder.with_name(folder.name.removesuffix(COMPANION_SUFFIX))
    return folder.name.endswith(COMPANION_SUFFIX) and model != folder and _is_triton_folder(model)


def _triton_source(folder: Path) -> list[ModelSource]:
    """The model of a Triton model folder: its highest numbered version holding a model file."""
    versions = sorted(
        (int(entry.name), model_file)
        for entry in folder.iterdir()
        if entry.is_dir() and entry.name.isdigit()
        for model_file in [_only_model_file(entry)]
        if model_file is not None
    )
    if not versions:
        log.warning("%s: has %s but no version folder with a model file", folder, TRITON_CONFIG)
        return []
    number, model_file = versions[-1]
    companion = folder.with_name(folder.name + COMPANION_SUFFIX) / str(number) / model_file.name
    return [
        ModelSource(
            folder.name, model_file, _existing(folder / FOLDER_CONFIG), str(number),
            companion if companion.is_file() else None,
        )
    ]  # fmt: skip


def _is_model_file(path: Path) -> bool:
    """A model file, not a gradient companion (those belong to the model beside them)."""
    return path.is_file() and path.suffix in RUNTIMES and not _is_companion_file(path)


def _is_companion_file(path: Path) -> bool:
    return path.name.endswith(COMPANION_FILE_SUFFIX)


def _sidecar(model_file: Path) -> Path | None:
    return _existing(model_file.with_suffix(".json"))


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def load_model(source: ModelSource, threads: int = 1) -> list[ServedModel]:
    """Load one model with the runtime its suffix selects, and its gradient companion."""
    runtime_class = RUNTIMES.get(source.model_file.suffix)
    if runtime_class is None:
        known = ", ".join(sorted(RUNTIMES))
        raise ModelLoadError(
            f"unknown model file type {source.model_file.suffix!r}; expected one of {known}"
        )
    config = read_model_config(source.config_file)
    runtime = runtime_class(source.model_file, threads=threads)
    runtime.load()
    signature = replace(runtime.signature(), labels=config.labels)
    check_declared(source, signature, config)
    model = ServedModel(
        source.name, source.model_file, runtime, signature, config, source.version, source=source
    )
    companion = _companion(model, threads)
    if isinstance(companion, str):
        model.gradient_unavailable = companion
        return [model]
    model.gradient = companion.name
    return [model, companion]


def check_declared(source: ModelSource, signature: ModelSignature, config: ModelConfig) -> None:
    """The config's inputs and outputs, if given, must name the file's own."""
    for kind, declared, actual in (
        ("inputs", config.inputs, signature.inputs),
        ("outputs", config.outputs, signature.outputs),
    ):
        if declared is not None and _names(declared) != _names(actual):
            raise ModelLoadError(
                f"{source.config_file}: declares {kind} {_names(declared)}; "
                f"{source.model_file.name} has {_names(actual)}"
            )


def _names(specs: tuple[TensorSpec, ...]) -> list[tuple[str, str]]:
    return [(spec.name, spec.datatype) for spec in specs]


def _companion(model: ServedModel, threads: int) -> ServedModel | str:
    """The gradient companion of ``model``, or the reason it has none."""
    gradient = model.config.gradient
    if not gradient.enabled:
        return f'its config {model.config.source} sets "gradient": false'
    if not any(spec.datatype in REAL_DATATYPES for spec in model.signature.inputs):
        return "its inputs are not real numbers"
    try:
        runtime = _companion_runtime(model, threads)
        runtime.load()
        signature = runtime.signature()
        check_companion(model, signature)
    except GradientUnavailable as error:
        return error.message
    except Exception as error:  # a broken companion must not take its model down
        return f"its gradient did not load ({type(error).__name__}: {error})"
    config = ModelConfig(description=f"vector-Jacobian product of {model.name!r}")
    return ServedModel(
        model.name + COMPANION_SUFFIX, runtime.path, runtime, signature, config, model.version,
        gradient_of=model.name, gradient_unavailable=f"it is the gradient of {model.name!r}",
    )  # fmt: skip


def _companion_runtime(model: ServedModel, threads: int) -> Runtime:
    """The companion's runtime, not yet loaded: a file's, or one its model's runtime builds
    (either keeps no working memory: see OnnxRuntime's ``keep_memory``)."""
    gradient = model.config.gradient
    if gradient.file is not None and model.config.source is not None:
        file = model.config.source.parent / gradient.file
    elif model.source is not None and model.source.companion_file is not None:
        file = model.source.companion_file
    else:
        file = model.path.with_name(model.path.stem + COMPANION_FILE_SUFFIX)
        if not file.is_file():
            return model.runtime.gradient_runtime()
    return OnnxRuntime(file, threads=threads, keep_memory=False)


def check_companion(model: ServedModel, companion: ModelSignature) -> None:
    """A companion takes the model's inputs and one cotangent per output; gives INPUT_grad."""
    expected_inputs = [spec.name for spec in model.signature.inputs] + [
        cotangent_name(spec.name) for spec in model.signature.outputs
    ]
    expected_outputs = [
        gradient_name(spec.name)
        for spec in model.signature.inputs
        if spec.datatype in REAL_DATATYPES
    ]
    got_inputs = [spec.name for spec in companion.inputs]
    got_outputs = [spec.name for spec in companion.outputs]
    if sorted(got_inputs) != sorted(expected_inputs) or got_outputs != expected_outputs:
        raise GradientUnavailable(
            f"its gradient file takes {got_inputs} and gives {got_outputs}; expected "
            f"{expected_inputs} and {expected_outputs}"
        )
