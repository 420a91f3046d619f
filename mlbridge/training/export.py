"""Export a Keras model to ONNX and TFLite, verified against Keras in the serving runtimes.

Every file is run in the runtime the server uses (onnxruntime; the LiteRT interpreter with
built-in ops only) on sample inputs and compared with Keras; a difference above the
tolerance removes the file and raises :class:`ExportCheckFailed`. Beside the files goes
the sidecar ``NAME.json`` the server reads: names, shapes, labels, provenance.

With ``grad``, the ONNX file's vector-Jacobian product goes beside it as ``NAME.vjp.onnx``
(see :mod:`.export_grad`).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..errors import ConfigError, DataNotFound, ExportCheckFailed
from . import layers  # noqa: F401  (registers EvidenceTweakingLayer for load_model)
from .data import load_dataset
from .export_grad import gradient_entry
from .train import load_model, report_path

FORMATS = ("onnx", "tflite")
TOLERANCE = 1e-4
SAMPLES = 256
INPUT_NAME, OUTPUT_NAME = "input", "output"


def export_model(
    model_path: Path,
    formats: tuple[str, ...] = FORMATS,
    out: Path | None = None,
    name: str | None = None,
    data: Path | None = None,
    samples: int = SAMPLES,
    tolerance: float = TOLERANCE,
    grad: bool = False,
) -> dict[str, Any]:
    """Export ``model_path`` to ``formats`` in ``out``; return the sidecar written beside them.

    The files are checked on the first ``samples`` held-out images of ``data``, or on seeded
    random inputs without it. ``grad`` adds the checked gradient model ``NAME.vjp.onnx``.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        known = ", ".join(FORMATS)
        raise ConfigError(f"unknown export format(s) {sorted(unknown)}; expected: {known}")
    if grad and "onnx" not in formats:
        raise ConfigError(
            f"--grad builds NAME.vjp.onnx from the ONNX export: add onnx to the formats "
            f"(got: {', '.join(formats)})"
        )
    model = load_source(model_path)
    out = out or model_path.parent
    name = name or model_path.stem
    out.mkdir(parents=True, exist_ok=True)
    inputs = heldout_samples(model, data, samples) if data else random_samples(model, samples)
    expected = np.asarray(model(inputs, training=False))
    results = {
        fmt: _export_checked(model, fmt, out / f"{name}.{fmt}", inputs, expected, tolerance)
        for fmt in formats
    }
    gradient = gradient_entry(model, out, name, formats, grad, inputs)
    sidecar = build_sidecar(model, model_path, out / f"{name}.json", results)
    if gradient:
        sidecar["gradient"] = gradient
    (out / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def load_source(path: Path) -> Any:
    """A Keras model from a .keras/.h5 file or a TensorFlow SavedModel folder."""
    if path.is_dir() and (path / "saved_model.pb").exists():
        return _wrap_saved_model(path)
    if path.suffix not in (".keras", ".h5") or not path.is_file():
        raise DataNotFound(f"{path}: expected a .keras or .h5 file or a SavedModel folder")
    return load_model(path)


def heldout_samples(model: Any, data: Path, count: int = SAMPLES) -> np.ndarray:
    """The first ``count`` held-out images of the data set that fits the model's input."""
    shape = tuple(model.inputs[0].shape[1:])
    dataset = "cifar10" if shape == (32, 32, 3) else "mnist"
    images = load_dataset(dataset, data).scaled().x_heldout[:count]
    if images.shape[1:] != shape:
        raise ConfigError(
            f"{data}: images of shape {list(images.shape[1:])}; the model takes {list(shape)}"
        )
    return images


def random_samples(model: Any, count: int = SAMPLES, seed: int = 0) -> np.ndarray:
    """Seeded uniform [0, 1) inputs of the model's input shape (when no real data is given)."""
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).random((count, *shape), dtype=np.float32)


def _export_checked(
    model: Any, fmt: str, path: Path, inputs: np.ndarray, expected: np.ndarray, tolerance: float
) -> dict[str, Any]:
    writer, runner = {"onnx": (write_onnx, run_onnx), "tflite": (write_tflite, run_tflite)}[fmt]
    writer(model, path)
    try:
        difference = float(np.max(np.abs(runner(path, inputs) - expected)))
    except Exception as error:
        path.unlink(missing_ok=True)
        raise ExportCheckFailed(f"{path.name} does not run in its runtime: {error}") from error
    if not difference <= tolerance:
        path.unlink(missing_ok=True)
        raise ExportCheckFailed(
            f"{path.name} differs from Keras by {difference:.3g} on {len(inputs)} samples; "
            f"the tolerance is {tolerance:g}"
        )
    return {"file": path.name, "max_abs_difference": difference, "samples": len(inputs)}


def write_onnx(model: Any, path: Path) -> None:
    """Keras' ONNX export (through tf2onnx), then stable names 'input' and 'output'."""
    import onnx

    with warnings.catch_warnings():
        # tf2onnx probes np.object, which numpy 2 answers with a FutureWarning.
        warnings.simplefilter("ignore", FutureWarning)
        model.export(str(path), format="onnx", verbose=False, input_signature=[_input_spec(model)])
    graph_model = onnx.load(str(path))
    _rename(graph_model.graph, graph_model.graph.input[0].name, INPUT_NAME)
    _rename(graph_model.graph, graph_model.graph.output[0].name, OUTPUT_NAME)
    for value in (graph_model.graph.input[0], graph_model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"  # tf2onnx says unk__N
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(path))


def write_tflite(model: Any, path: Path) -> None:
    """A TFLite flatbuffer with built-in ops only and signature input 'input', output 'output'."""
    # Through a SavedModel: from_concrete_functions left the EvidenceTweakingLayer's weight
    # as an uninitialised resource variable (zeros or NaN in LiteRT), this route freezes it.
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda x: {OUTPUT_NAME: model(x, training=False)},
        input_signature=[_input_spec(model)],
    )
    with tempfile.TemporaryDirectory() as saved:
        archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        # Built-ins only: the server's plain LiteRT interpreter has no TensorFlow (Flex) ops.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        path.write_bytes(converter.convert())


def run_onnx(path: Path, inputs: np.ndarray) -> np.ndarray:
    """Run an exported ONNX file in onnxruntime, checking its names and dynamic batch."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    declared = session.get_inputs()[0]
    if declared.name != INPUT_NAME or isinstance(declared.shape[0], int):
        raise ExportCheckFailed(
            f"{path.name}: input {declared.name} {declared.shape}; "
            f"expected '{INPUT_NAME}' with a dynamic batch"
        )
    return session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]


def run_tflite(path: Path, inputs: np.ndarray) -> np.ndarray:
    """Run an exported TFLite file in the plain LiteRT interpreter at batch len(inputs)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    declared = interpreter.get_input_details()[0]
    if declared["shape_signature"][0] != -1:
        raise ExportCheckFailed(f"{path.name}: batch dimension is fixed; expected dynamic")
    interpreter.resize_tensor_input(declared["index"], list(inputs.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(declared["index"], inputs)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def build_sidecar(model: Any, model_path: Path, sidecar: Path, results: dict) -> dict[str, Any]:
    """The signature and provenance the server reads, merged with an existing sidecar."""
    report = _read_json(report_path(model_path)) if model_path.is_file() else {}
    previous = _read_json(sidecar)
    classes = int(model.outputs[0].shape[-1])
    return {
        "labels": report.get("labels") or [str(i) for i in range(classes)],
        "inputs": [_tensor(INPUT_NAME, model.inputs[0].shape)],
        "outputs": [_tensor(OUTPUT_NAME, model.outputs[0].shape)],
        "description": report.get("description", f"exported from {model_path.name}"),
        "architecture": report.get("architecture", getattr(model, "name", "")),
        "evidence": report.get("evidence"),
        "parameters": int(model.count_params()),
        "heldout_accuracy": _rounded(report.get("heldout_accuracy")),
        "epochs": report.get("epochs"),
        "exports": {**previous.get("exports", {}), **results},
    }


def _tensor(name: str, shape: Any) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": [-1 if d is None else int(d) for d in shape]}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _input_spec(model: Any) -> Any:
    shape = [None, *model.inputs[0].shape[1:]]
    return tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)


def _rename(graph: Any, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def _wrap_saved_model(path: Path) -> Any:
    loaded = tf.saved_model.load(str(path))
    specs = list(loaded.signatures["serving_default"].structured_input_signature[1].values())
    if len(specs) != 1:
        raise ConfigError(f"{path}: serving_default takes {len(specs)} inputs; expected one")
    inputs = keras.Input(tuple(specs[0].shape[1:]), name=INPUT_NAME)
    outputs = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ConfigError(f"{path}: serving_default has {len(outputs)} outputs; expected one")
        (outputs,) = outputs.values()
    return keras.Model(inputs, outputs, name=path.name)
