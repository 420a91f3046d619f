"""Export a plain JAX function and its vector-Jacobian product to ONNX, checked against JAX.

``NAME.onnx`` is the batched function (``jax.vmap``): every input ``[B, *shape]`` with a
dynamic batch ``B``, one output ``output`` ``[B, *out_shape]``. ``NAME.vjp.onnx`` is the
batched VJP: the same inputs plus ``output_cotangent`` ``[B, *out_shape]``, giving
``<input>_grad`` per input. Both are converted by jax2onnx and run in onnxruntime on seeded
samples; nothing is written unless both agree with JAX. The sidecar ``NAME.json`` beside them
holds the signature, the source and the measured differences.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..errors import ConfigError, ExportCheckFailed
from ..protocol import GRAD_SUFFIX, TensorSpec, cotangent_name, gradient_name, v2_datatype

SAMPLES = 16
TOLERANCES = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-9}
DTYPES: dict[str, np.dtype] = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
SCALAR = "scalar"
BATCH = "batch"
OUTPUT_NAME = "output"
COTANGENT_NAME = cotangent_name(OUTPUT_NAME)
# Any onnxruntime mlbridge supports (>= 1.17) runs opset 18; jax2onnx's default, 23, needs a
# recent one. Measured on 16 functions: 18 converted as many as 23, and more than 17 (at 17
# jax2onnx wrote ReduceMean in its opset-18 form, which onnx.checker rejects).
OPSET = 18


@dataclass(frozen=True)
class Argument:
    """One positional argument, per example: its parameter name, shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def batched(self) -> Any:
        """The jax2onnx input spec ``[batch, *shape]`` with a symbolic batch."""
        return _AbstractInput((BATCH, *self.shape), self.dtype)

    def spec(self) -> TensorSpec:
        """The served tensor: V2 datatype, shape with a -1 batch."""
        return TensorSpec(self.name, v2_datatype(self.dtype), (-1, *self.shape))


@dataclass(frozen=True)
class _AbstractInput:
    # jax2onnx takes anything with .shape and .dtype; jax.ShapeDtypeStruct refuses "batch".
    shape: tuple[Any, ...]
    dtype: np.dtype


@dataclass
class ConvertedGraph:
    """An ONNX model, sample inputs, JAX's outputs on them, and the conversion seconds."""

    model: Any
    feeds: list[np.ndarray]
    expected: list[np.ndarray]
    seconds: float


@dataclass
class FunctionExport:
    """What export_function wrote: the sidecar, the paths, seconds per converted file."""

    sidecar: dict[str, Any]
    paths: list[Path]
    seconds: dict[str, float]


def export_function(
    target: str,
    inputs: Sequence[str],
    out: Path,
    name: str | None = None,
    description: str | None = None,
    samples: int = SAMPLES,
    seed: int = 0,
    tolerance: float | None = None,
) -> FunctionExport:
    """Export ``FILE.py:FUNCTION`` and its VJP to ``out``, checked on seeded samples."""
    function, path, function_name = load_function(target)
    source = f"{path.name}:{function_name}"
    arguments = bind_arguments(function, source, [parse_input(text) for text in inputs])
    name = name or function_name
    double = any(argument.dtype == np.float64 for argument in arguments)
    with jax.enable_x64(double):
        result = output_argument(function, source, arguments)
        _check_names(source, arguments)
        rng = np.random.default_rng(seed)
        xs = [_normal(rng, samples, argument) for argument in arguments]
        graphs = {
            f"{name}.onnx": build(jax.vmap(function), arguments, [result], xs, double),
            f"{name}.vjp.onnx": build(
                jax.vmap(pullback(function)),
                [*arguments, _cotangent(result)],
                [_gradient(argument) for argument in arguments],
                [*xs, _normal(rng, samples, result)],
                double,
            ),
        }
    tolerance = tolerance if tolerance is not None else _default_tolerance(arguments, result)
    forward, backward = (_measured(file, graph, tolerance) for file, graph in graphs.items())
    sidecar = {
        "description": description or _first_line(function.__doc__) or f"{source} exported",
        "source": source,
        "inputs": [argument.spec().to_dict() for argument in arguments],
        "outputs": [result.spec().to_dict()],
        "exports": {"onnx": forward},
        "gradient": {"file": backward.pop("file"), "checked_against": "jax.vjp", **backward},
    }
    paths = _write(out, name, sidecar, {file: graph.model for file, graph in graphs.items()})
    return FunctionExport(sidecar, paths, {file: graph.seconds for file, graph in graphs.items()})


def parse_input(text: str) -> tuple[tuple[int, ...], np.dtype]:
    """Parse ``SHAPE:DTYPE`` (``3:float64``, ``13,3:float64``, ``scalar:float32``)."""
    shape_text, colon, dtype_text = text.strip().rpartition(":")
    expected = "expected SHAPE:DTYPE such as 3:float64, 13,3:float64 or scalar:float64"
    if not colon or not shape_text:
        raise ConfigError(f"--input {text!r}: {expected}")
    if dtype_text not in DTYPES:
        known = " or ".join(DTYPES)
        raise ConfigError(f"--input {text!r}: dtype {dtype_text!r}; expected {known}")
    if shape_text == SCALAR:
        return (), DTYPES[dtype_text]
    try:
        shape = tuple(int(size) for size in shape_text.split(","))
    except ValueError:
        raise ConfigError(f"--input {text!r}: shape {shape_text!r}; {expected}") from None
    if any(size < 1 for size in shape):
        raise ConfigError(f"--input {text!r}: sizes must be positive; {expected}")
    return shape, DTYPES[dtype_text]


def load_function(target: str) -> tuple[Callable[..., Any], Path, str]:
    """Import FILE.py by path and return (FUNCTION, path, its name) for ``FILE.py:FUNCTION``."""
    file_text, colon, function_name = target.rpartition(":")
    if not colon or not file_text or not function_name.isidentifier():
        raise ConfigError(f"{target!r}: expected FILE.py:FUNCTION, e.g. physics.py:energy")
    path = Path(file_text)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (expected a Python file holding {function_name})")
    module = _import_file(path)
    function = getattr(module, function_name, None)
    if not callable(function):
        found = ", ".join(_public_functions(module)) or "none"
        raise ConfigError(f"{path} has no function {function_name!r}; its functions: {found}")
    return function, path, function_name


def bind_arguments(
    function: Callable[..., Any], source: str, inputs: Sequence[tuple[tuple[int, ...], np.dtype]]
) -> list[Argument]:
    """Name each ``--input`` after the positional parameter it fills."""
    parameters = [
        parameter
        for parameter in inspect.signature(function).parameters.values()
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    if not parameters:
        raise ConfigError(f"{source} takes no positional parameters; expected at least one")
    dtypes = sorted({str(dtype) for _, dtype in inputs})
    if len(dtypes) > 1:
        # jax2onnx makes every float input float64 once double precision is on.
        raise ConfigError(f"{source}: --input dtypes {', '.join(dtypes)}; expected one for all")
    required = max(1, sum(parameter.default is parameter.empty for parameter in parameters))
    if not required <= len(inputs) <= len(parameters):
        names = ", ".join(parameter.name for parameter in parameters)
        wanted = f"{required} to {len(parameters)}" if required < len(parameters) else required
        raise ConfigError(
            f"{source} takes ({names}): expected {wanted} --input SHAPE:DTYPE "
            f"(one per positional parameter, in order); got {len(inputs)}"
        )
    return [Argument(p.name, shape, dtype) for p, (shape, dtype) in zip(parameters, inputs)]


def output_argument(
    function: Callable[..., Any], source: str, arguments: Sequence[Argument]
) -> Argument:
    """The function's one floating-point output, per example, found by tracing it."""
    examples = [jax.ShapeDtypeStruct(argument.shape, argument.dtype) for argument in arguments]
    described = ", ".join(f"{a.name} {list(a.shape)} {a.dtype}" for a in arguments)
    try:
        result = jax.eval_shape(function, *examples)
    except Exception as error:  # the user's code: it may raise anything
        problem = f"{type(error).__name__}: {error}"
        raise ConfigError(f"{source} fails on {described}: {problem}") from None
    if not isinstance(result, jax.ShapeDtypeStruct):
        count = len(jax.tree_util.tree_leaves(result))
        raise ConfigError(
            f"{source} returns a {type(result).__name__} of {count} arrays; export-fn serves "
            "one output: return a single array (jnp.stack or jnp.concatenate them)"
        )
    if np.dtype(result.dtype) not in TOLERANCES:
        raise ConfigError(
            f"{source} returns {result.dtype}; expected float32 or float64 (it has a gradient)"
        )
    return Argument(OUTPUT_NAME, tuple(result.shape), np.dtype(result.dtype))


def pullback(function: Callable[..., Any]) -> Callable[..., tuple[Any, ...]]:
    """``(*xs, dy) -> jax.vjp(function, *xs)[1](dy)``: one gradient per input."""

    def vjp(*arguments: Any) -> tuple[Any, ...]:
        *xs, cotangent = arguments
        return jax.vjp(function, *xs)[1](cotangent)

    return vjp


def build(
    function: Callable[..., Any],
    inputs: Sequence[Argument],
    outputs: Sequence[Argument],
    feeds: Sequence[np.ndarray],
    double: bool,
) -> ConvertedGraph:
    """Convert ``function`` to ONNX and compute JAX's answers on ``feeds`` to check it by."""
    start = time.perf_counter()
    model = convert(function, inputs, outputs, double)
    seconds = time.perf_counter() - start
    expected = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(function(*feeds))]
    return ConvertedGraph(model, list(feeds), expected, seconds)


def convert(
    function: Callable[..., Any],
    inputs: Sequence[Argument],
    outputs: Sequence[Argument],
    double: bool,
) -> Any:
    """jax2onnx's ONNX of ``function`` with our input/output names, checked by onnx.checker."""
    import onnx
    from jax2onnx import to_onnx

    try:
        with _quiet("onnx_ir"), _symbolic_dims_in_onnx_ir():
            model = to_onnx(
                function,
                [argument.batched() for argument in inputs],
                model_name="mlbridge_function",
                opset=OPSET,
                enable_double_precision=double,
                input_names=[argument.name for argument in inputs],
                output_names=[argument.name for argument in outputs],
            )
    except Exception as error:
        raise ExportCheckFailed(
            f"jax2onnx could not convert it: {type(error).__name__}: {error}"
        ) from error
    _drop_unused_initializers(model.graph)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportCheckFailed(f"jax2onnx wrote an invalid ONNX graph: {error}") from error
    return model


def check(
    model: Any, label: str, inputs: Sequence[np.ndarray], expected: Sequence[np.ndarray], tol: float
) -> float:
    """Run ``model`` in onnxruntime on ``inputs``; return the largest absolute difference.

    Raises ExportCheckFailed when an element differs by more than ``tol`` times the larger of
    1 and its JAX value (absolute near zero, relative for large values).
    """
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        _check_signature(session, model, label)
        names = [declared.name for declared in session.get_inputs()]
        got = session.run(None, dict(zip(names, inputs)))
    except ExportCheckFailed:
        raise
    except Exception as error:
        raise ExportCheckFailed(f"{label} does not run in onnxruntime: {error}") from error
    differences = [_difference(value, reference) for value, reference in zip(got, expected)]
    absolute = float(np.max([np.max(d, initial=0.0) for d in differences]))
    scaled = [d / np.fmax(1.0, np.abs(r)) for d, r in zip(differences, expected)]  # NaN r: 1
    worst = float(np.max([np.max(s, initial=0.0) for s in scaled]))
    if not worst <= tol:  # NaN fails too
        raise ExportCheckFailed(
            f"{label} differs from JAX by {worst:.3g} (relative to max(1, |value|)) on "
            f"{len(inputs[0])} samples; the tolerance is {tol:g}"
        )
    return absolute


def _difference(value: np.ndarray, reference: np.ndarray) -> np.ndarray:
    # Equal infinities and NaN where JAX gives NaN count as agreement; any other mismatch
    # of non-finite values comes out as inf or NaN, which fails the check.
    agree = (value == reference) | (np.isnan(value) & np.isnan(reference))
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(agree, 0.0, np.abs(value.astype(np.float64) - reference))


def _check_signature(session: Any, model: Any, label: str) -> None:
    declared = [*session.get_inputs(), *session.get_outputs()]
    wanted = [v.name for v in (*model.graph.input, *model.graph.output)]
    if [v.name for v in declared] != wanted or any(isinstance(v.shape[0], int) for v in declared):
        got = ", ".join(f"{v.name} {v.shape}" for v in declared)
        raise ExportCheckFailed(f"{label}: {got}; expected {wanted} with a dynamic batch")


def _write(out: Path, name: str, sidecar: dict[str, Any], models: dict[str, Any]) -> list[Path]:
    try:
        out.mkdir(parents=True, exist_ok=True)
        for file, model in models.items():
            (out / file).write_bytes(model.SerializeToString())
        (out / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    except OSError as error:
        raise ConfigError(f"{out}: cannot write the exported files ({error})") from None
    return [*(out / file for file in models), out / f"{name}.json"]


def _import_file(path: Path) -> Any:
    module_name = f"_mlbridge_function_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    sys.path.insert(0, str(path.resolve().parent))  # as `python FILE.py` would: siblings import
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise ConfigError(f"{path}: importing it failed: {type(error).__name__}: {error}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def _public_functions(module: Any) -> list[str]:
    return sorted(
        name
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__ and name[0] != "_"
    )


def _check_names(source: str, arguments: Sequence[Argument]) -> None:
    names = [argument.name for argument in arguments]
    names += [OUTPUT_NAME, COTANGENT_NAME, *(_gradient(argument).name for argument in arguments)]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ConfigError(
            f"{source}: parameter names clash with the served names {clashes} "
            f"('{OUTPUT_NAME}', '{COTANGENT_NAME}', NAME{GRAD_SUFFIX}); rename the parameters"
        )


def _cotangent(result: Argument) -> Argument:
    return Argument(COTANGENT_NAME, result.shape, result.dtype)


def _gradient(argument: Argument) -> Argument:
    return Argument(gradient_name(argument.name), argument.shape, argument.dtype)


def _default_tolerance(arguments: Sequence[Argument], result: Argument) -> float:
    # The least precise dtype in play sets the bar.
    return max(TOLERANCES[argument.dtype] for argument in (*arguments, result))


def _normal(rng: np.random.Generator, samples: int, argument: Argument) -> np.ndarray:
    return rng.standard_normal((samples, *argument.shape)).astype(argument.dtype)


def _measured(file: str, graph: ConvertedGraph, tolerance: float) -> dict[str, Any]:
    difference = check(graph.model, file, graph.feeds, graph.expected, tolerance)
    return {"file": file, "max_abs_difference": difference, "samples": len(graph.feeds[0])}


def _first_line(docstring: str | None) -> str:
    return next(iter(inspect.cleandoc(docstring or "").splitlines()), "")


def _drop_unused_initializers(graph: Any) -> None:
    # jax2onnx leaves a few constants no node reads; onnxruntime warns about each at load.
    used = _names_read(graph)
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _names_read(graph: Any) -> set[str]:
    # Subgraphs (Loop, Scan, If bodies) may read the outer graph's initializers by name.
    names = {output.name for output in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for subgraph in (attribute.g, *attribute.graphs):
                names |= _names_read(subgraph)
    return names


@contextmanager
def _symbolic_dims_in_onnx_ir() -> Iterator[None]:
    # jax2onnx 0.17.1's lax.pad lowering (pad is the transpose of x[0], so in most gradients)
    # hands JAX's symbolic 'batch' to onnx_ir.Shape, which calls int() on it and fails; the
    # plugin stamps the same shape by name right after. Name such dims during the conversion.
    core: Any = importlib.import_module("onnx_ir._core")  # a private module: untyped use
    original = getattr(core, "_maybe_convert_to_symbolic_dim", None)
    if original is None:  # a newer onnx_ir: nothing to mend
        yield
        return

    def named(dim: Any) -> Any:
        return core.SymbolicDim(str(dim)) if jax.export.is_symbolic_dim(dim) else original(dim)

    core._maybe_convert_to_symbolic_dim = named
    try:
        yield
    finally:
        core._maybe_convert_to_symbolic_dim = original


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    # onnx_ir logs a warning for each untyped shape constant of jax2onnx's that it skips.
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
