"""A Triton-compatible model repository: written by ``mlbridge export-triton``, checked here.

Each served ONNX model, and each gradient companion, becomes a Triton model folder::

    REPO/NAME/config.pbtxt      Triton's model config (protobuf text)
    REPO/NAME/1/model.onnx      the graph (a built companion's graph is written out)
    REPO/NAME/labels.txt        the labels, when the model has some (``label_filename``)
    REPO/NAME/config.json       mlbridge's own config (labels, description, batching)

``config.pbtxt`` takes inputs, outputs, ``max_batch_size`` and ``dynamic_batching``
from the model's batching (its config's ``batching``, else the server's settings):
when a model batches, ``dims`` leave out the batch axis, as Triton wants. TFLite and
Keras models go through their ONNX export (the config's ``exports.onnx.file``) or
are skipped, saying why. ``mlbridge serve REPO`` serves the same folder.

There is no Triton binary here, so every folder written is checked the way Triton
would read it: parsed against Triton's own ``ModelConfig`` protobuf schema (the
``model_config_pb2`` module of the ``tritonclient`` wheel, loaded by file path: no
gRPC), then its names, datatypes and dims compared with the ONNX file.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cache
from math import prod
from pathlib import Path
from types import ModuleType
from typing import Any

from .batching import BatchPolicy
from .errors import ConfigError, MissingDependency, MLBridgeError
from .protocol import TensorSpec
from .registry import (
    DEMO_MODELS,
    FOLDER_CONFIG,
    TRITON_CONFIG,
    ModelSource,
    ServedModel,
    discover,
    load_model,
)
from .runtimes import OnnxRuntime

VERSION = "1"
MODEL_FILE = "model.onnx"
LABELS_FILE = "labels.txt"
BACKEND = "onnxruntime"
SCHEMA_PACKAGE = "tritonclient"
SCHEMA_FILE = Path("grpc") / "model_config_pb2.py"  # inside the tritonclient package
ONNX_TO_V2 = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "BYTES",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    12: "UINT32",
    13: "UINT64",
    16: "BF16",
}  # fmt: skip  (onnx.TensorProto element types)


@dataclass
class ExportReport:
    """What ``export-triton`` wrote (model folder names) and what it skipped, and why."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def export_repository(
    repo: Path, paths: list[Path], batching: BatchPolicy, replace: bool = False
) -> ExportReport:
    """Write a Triton model folder under ``repo`` for each model in ``paths`` (demo: none)."""
    check_schema_available()
    repo.mkdir(parents=True, exist_ok=True)
    report = ExportReport()
    for source in discover(paths or [DEMO_MODELS]):
        onnx_source = onnx_source_of(source)
        if isinstance(onnx_source, str):
            report.skipped.append(f"{source.name}: {onnx_source}")
        elif source.name in report.written:
            report.skipped.append(f"{source.name}: a model of that name was exported already")
        else:
            _export_model(repo, onnx_source, batching, replace, report)
    return report


def onnx_source_of(source: ModelSource) -> ModelSource | str:
    """The ONNX form of a discovered model: itself, its config's ONNX export, or why none."""
    if source.model_file.suffix == ".onnx":
        return source
    exports = _read_exports(source.config_file)
    file = exports.get("onnx", {}).get("file") if isinstance(exports, dict) else None
    if isinstance(file, str) and source.config_file is not None:
        onnx_file = source.config_file.parent / file
        if onnx_file.is_file():
            return ModelSource(source.name, onnx_file, source.config_file)
    return (
        f"skipped: a {source.model_file.suffix} model without an ONNX export beside it; "
        "Triton here takes ONNX: run 'mlbridge export MODEL --to onnx' first"
    )


def _read_exports(config_file: Path | None) -> Any:
    if config_file is None:
        return {}
    try:
        return json.loads(config_file.read_text()).get("exports", {})
    except (OSError, ValueError, AttributeError):
        return {}


def _export_model(
    repo: Path, source: ModelSource, batching: BatchPolicy, replace: bool, report: ExportReport
) -> None:
    try:
        models = load_model(source)
    except MLBridgeError as error:
        report.skipped.append(f"{source.name}: skipped: {error.message}")
        return
    except Exception as error:  # a broken file may raise anything from its engine
        report.skipped.append(f"{source.name}: skipped: {type(error).__name__}: {error}")
        return
    try:
        for model in models:
            policy = model.config.batching or batching
            write_model_folder(repo, model, policy, replace)
            report.written.append(model.name)
    finally:
        for model in models:
            model.runtime.close()


def write_model_folder(repo: Path, model: ServedModel, policy: BatchPolicy, replace: bool) -> None:
    """Write ``repo/NAME`` for one model, check it, then move it into place."""
    target = repo / model.name
    if target.exists() and not replace:
        raise ConfigError(f"{target} exists; remove it or pass --replace")
    staging = Path(tempfile.mkdtemp(prefix=f".{model.name}.", dir=repo))
    try:
        (staging / VERSION).mkdir()
        (staging / VERSION / MODEL_FILE).write_bytes(_graph(model))
        labels = model.signature.labels
        if labels:
            (staging / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels))
        (staging / TRITON_CONFIG).write_text(config_text(model, policy))
        if model.gradient_of is None:
            document = mlbridge_config(model, policy)
            (staging / FOLDER_CONFIG).write_text(json.dumps(document, indent=2) + "\n")
        check_model_folder(staging, name=model.name)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _graph(model: ServedModel) -> bytes:
    runtime = model.runtime
    if isinstance(runtime, OnnxRuntime) and runtime.graph is not None:
        return runtime.graph  # a gradient companion built at load time
    return model.path.read_bytes()


# config.pbtxt


def batches(model: ServedModel, policy: BatchPolicy) -> bool:
    """Whether the model is exported with Triton's batching (as mlbridge would batch it)."""
    return policy.enabled and model.signature.batchable()


def config_text(model: ServedModel, policy: BatchPolicy) -> str:
    """Triton's ``config.pbtxt`` for ``model``, batching as ``policy`` says."""
    batching = batches(model, policy)
    labelled = bool(model.signature.labels)
    lines = [
        f"name: {_quoted(model.name)}",
        f"backend: {_quoted(BACKEND)}",
        f"max_batch_size: {policy.max_batch_size if batching else 0}",
        "input [",
        ",\n".join(_tensor(spec, batching) for spec in model.signature.inputs),
        "]",
        "output [",
        ",\n".join(
            _tensor(spec, batching, LABELS_FILE if labelled and i == 0 else None)
            for i, spec in enumerate(model.signature.outputs)
        ),
        "]",
    ]
    if batching:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {policy.max_delay_us}"]
        lines += ["}"]
    return "\n".join(lines) + "\n"


def _tensor(spec: TensorSpec, batching: bool, label_file: str | None = None) -> str:
    shape = list(spec.shape[1:] if batching else spec.shape)
    fields = [f"name: {_quoted(spec.name)}", f"data_type: {triton_datatype(spec.datatype)}"]
    if shape:
        fields.append(f"dims: {shape}")
    else:  # only the batch axis: Triton wants [1], reshaped to no dims at all
        fields += ["dims: [1]", "reshape: { shape: [] }"]
    if label_file:
        fields.append(f"label_filename: {_quoted(label_file)}")
    return "  {\n" + "".join(f"    {line}\n" for line in fields) + "  }"


def triton_datatype(datatype: str) -> str:
    """A V2 datatype's name in Triton's ``DataType`` enum (BYTES is TYPE_STRING)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a protobuf text string literal


def mlbridge_config(model: ServedModel, policy: BatchPolicy) -> dict[str, Any]:
    """mlbridge's ``config.json`` for the folder: what ``config.pbtxt`` cannot say."""
    config = model.config
    document: dict[str, Any] = {
        "inputs": [_spec_json(spec) for spec in model.signature.inputs],
        "outputs": [_spec_json(spec) for spec in model.signature.outputs],
        "batching": {"max_batch_size": policy.max_batch_size, "max_delay_us": policy.max_delay_us},
        **config.provenance,
    }
    if config.labels:
        document["labels"] = list(config.labels)
    if config.description:
        document["description"] = config.description
    if not config.gradient.enabled:
        document["gradient"] = False
    elif model.gradient is not None and config.gradient.checks:
        document["gradient"] = dict(config.gradient.checks)  # its file: the NAME.vjp folder
    return document


def _spec_json(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


# Checks: Triton's schema, then the ONNX file


def check_schema_available() -> None:
    """Raise MissingDependency unless Triton's ModelConfig schema can be loaded."""
    triton_schema()


@cache
def triton_schema() -> ModuleType:
    """Triton's ``model_config_pb2``, loaded by path from the tritonclient wheel (no gRPC)."""
    purpose = "checking config.pbtxt against Triton's ModelConfig schema"
    spec = importlib.util.find_spec(SCHEMA_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / SCHEMA_FILE if locations else None
    if path is None or not path.is_file():
        raise MissingDependency("tritonclient", "triton", purpose)
    module_spec = importlib.util.spec_from_file_location("mlbridge_triton_model_config", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # no protobuf, or one older than the generated code needs
        raise MissingDependency("protobuf>=6.33.5", "triton", f"{purpose} ({error})") from None
    return module


def parse_config(path: Path) -> Any:
    """``config.pbtxt`` parsed as Triton's ``ModelConfig``; ConfigError names what is wrong."""
    from google.protobuf import text_format

    message = triton_schema().ModelConfig()
    try:
        text_format.Parse(path.read_text(), message)
    except text_format.ParseError as error:
        raise ConfigError(f"{path}: not a valid Triton model config: {error}") from None
    return message


def check_model_folder(folder: Path, name: str | None = None) -> Any:
    """Check a Triton model folder as Triton would load it; return its parsed config."""
    path = folder / TRITON_CONFIG
    config = parse_config(path)
    expected = name or folder.name
    if config.name != expected:
        raise ConfigError(f"{path}: name {config.name!r} differs from the folder's {expected!r}")
    if config.backend != BACKEND and config.platform != "onnxruntime_onnx":
        raise ConfigError(f"{path}: expected backend {BACKEND!r}; got {config.backend!r}")
    if config.max_batch_size < 0:
        raise ConfigError(f"{path}: max_batch_size must be >= 0; got {config.max_batch_size}")
    if config.HasField("dynamic_batching") and config.max_batch_size == 0:
        raise ConfigError(f"{path}: dynamic_batching needs max_batch_size > 0")
    model_file = folder / VERSION / (config.default_model_filename or MODEL_FILE)
    if not model_file.is_file():
        raise ConfigError(f"{folder}: no model file {model_file.relative_to(folder)}")
    for output in config.output:
        if output.label_filename and not (folder / output.label_filename).is_file():
            raise ConfigError(f"{path}: label_filename {output.label_filename!r} is missing")
    check_against_onnx(path, config, model_file)
    return config


def check_against_onnx(path: Path, config: Any, model_file: Path) -> None:
    """The config's inputs and outputs: the ONNX file's names, datatypes and dims."""
    schema = triton_schema()
    graph = onnx_signature(model_file)
    for kind, declared in (("input", config.input), ("output", config.output)):
        actual = graph[kind]
        names = [tensor.name for tensor in declared]
        if sorted(names) != sorted(actual):
            raise ConfigError(
                f"{path}: {kind}s {names} differ from {model_file.name}'s {sorted(actual)}"
            )
        for tensor in declared:
            datatype = schema.DataType.Name(tensor.data_type).removeprefix("TYPE_")
            onnx_type, onnx_shape = actual[tensor.name]
            if datatype.replace("STRING", "BYTES") != onnx_type:
                raise ConfigError(
                    f"{path}: {kind} {tensor.name!r} has data_type TYPE_{datatype}; "
                    f"{model_file.name} has {triton_datatype(onnx_type)}"
                )
            _check_dims(path, kind, tensor, config.max_batch_size > 0, onnx_shape, model_file)


def _check_dims(
    path: Path, kind: str, tensor: Any, batching: bool, onnx_shape: list[int], model_file: Path
) -> None:
    dims = list(tensor.dims)
    shape = list(tensor.reshape.shape) if tensor.HasField("reshape") else dims
    if tensor.HasField("reshape") and prod(dims) != prod(shape):
        raise ConfigError(
            f"{path}: {kind} {tensor.name!r} reshapes dims {dims} to {shape}, "
            "which hold different numbers of elements"
        )
    full = [-1, *shape] if batching else shape
    fits = len(full) == len(onnx_shape) and all(
        got == want or want == -1 for got, want in zip(full, onnx_shape)
    )
    if not fits:
        batch = " with the batch axis (max_batch_size > 0)" if batching else ""
        raise ConfigError(
            f"{path}: {kind} {tensor.name!r} has dims {dims}, i.e. shape {full}{batch}; "
            f"{model_file.name} has {onnx_shape} (-1: any size)"
        )


def onnx_signature(model_file: Path) -> dict[str, dict[str, tuple[str, list[int]]]]:
    """``{"input": {name: (V2 datatype, shape)}, "output": ...}`` of an ONNX file (-1: any)."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}

    def described(values: Any) -> dict[str, tuple[str, list[int]]]:
        return {
            value.name: (
                ONNX_TO_V2.get(value.type.tensor_type.elem_type, "UNKNOWN"),
                [
                    dim.dim_value if dim.HasField("dim_value") else -1
                    for dim in value.type.tensor_type.shape.dim
                ],
            )
            for value in values
            if value.name not in initializers
        }

    return {"input": described(graph.input), "output": described(graph.output)}


def check_repository(repo: Path) -> list[str]:
    """Check every Triton model folder in ``repo``; return their names."""
    folders = sorted(p for p in repo.iterdir() if (p / TRITON_CONFIG).is_file())
    for folder in folders:
        check_model_folder(folder)
    return [folder.name for folder in folders]
