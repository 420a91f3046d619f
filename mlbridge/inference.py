"""Validate a request against the model's signature, run it, build the response.

This layer knows nothing of HTTP or wire formats: codecs turn bodies into
:class:`InferenceRequest` objects and responses back into bodies. It also
owns the one policy for "run inline or in a worker thread" (:class:`Executor`)
and the gradient calls (vector-Jacobian products and Jacobians) that the CAS
routes make on a model's gradient companion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized
from functools import partial
from math import prod
from typing import TypeVar

import numpy as np
from anyio import CapacityLimiter, to_thread

from .batching import NO_BATCHING, Batcher, BatchPolicy
from .eager import own_task
from .errors import (
    BadRequest,
    DatatypeMismatch,
    InferenceFailed,
    InputNameMismatch,
    MLBridgeError,
    ModelNotFound,
    PayloadError,
    ServerBusy,
    ShapeMismatch,
)
from .protocol import (
    NUMPY_TO_V2,
    InferenceRequest,
    InferenceResponse,
    TensorSpec,
    all_finite,
    casts_finite,
    cotangent_name,
    gradient_name,
    numpy_dtype,
)
from .registry import ModelRegistry, ServedModel

T = TypeVar("T")
# Ten 28x28 images: the batch of 8 one-image clients runs without the thread hop (8-client
# CNN +10% req/s, docs/performance.md); at most ~1 ms on the loop (CNN), ~60 us (MLP).
INLINE_MAX_VALUES = 8192
BODY_BYTES_PER_VALUE = 16  # a number as text or JSON, with its separator


class Executor:
    """The one policy for where work runs: inline when small, else in a worker thread.

    Handing work to a thread and back costs ~120 us here, more than a small
    model or a small body takes (docs/performance.md); a big body or batch
    must not hold up other requests on the event loop.
    """

    def __init__(self, workers: int = 4) -> None:
        self.model_limiter = CapacityLimiter(workers)  # model runs at once

    async def run_model(self, model: ServedModel, values: int, call: Callable[[], T]) -> T:
        """Run a model call: inline if the input is small and the runtime never blocks."""
        if model.runtime.inline_safe and values <= INLINE_MAX_VALUES:
            return call()
        await own_task()  # anyio (its cancel scopes) expects a task
        return await to_thread.run_sync(call, limiter=self.model_limiter)

    async def convert(self, values: int, function: Callable[..., T], *args: object) -> T:
        """Run a codec (decode or encode) of ``values`` numbers: inline if small."""
        if values <= INLINE_MAX_VALUES:
            return function(*args)
        await own_task()  # anyio (its cancel scopes) expects a task
        return await to_thread.run_sync(function, *args)

    @staticmethod
    def values_in_body(size: int) -> int:
        """How many numbers a body of ``size`` bytes may hold, for :meth:`convert`."""
        return size // BODY_BYTES_PER_VALUE


class InferenceService:
    """Runs validated requests, and gradients, through the :class:`Executor`."""

    def __init__(
        self,
        registry: ModelRegistry,
        workers: int = 4,
        batching: BatchPolicy = NO_BATCHING,
        observe_batch: Callable[[str, int, int], None] | None = None,
        max_queue: int = 256,
    ) -> None:
        self.registry = registry
        self.executor = Executor(workers)
        self.workers = workers
        self.max_queue = max_queue  # requests waiting for a model beyond those it computes
        self.in_inference = 0  # requests running or waiting in a model (or its batcher)
        self.batching = batching  # the server-wide policy; a model's config may override it
        self.observe_batch = observe_batch  # told (model, rows, waiting) at each batched call
        # The server's open connections, where it tells (mlbridge.server.run): with one, the
        # request being served is the only one there can be, and batches with nobody.
        self.connections: Sized | None = None
        # name -> (the model object it batches for, its batcher): a reloaded model gets its own
        self._batchers: dict[str, tuple[ServedModel, Batcher | None]] = {}

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The served model ``name``; a version other than the served one is ModelNotFound."""
        model = self.registry.get(name)
        if version is not None and version != model.version:
            raise ModelNotFound(
                f"model {name!r} has version {model.version} only; got version {version!r}"
            )
        return model

    async def infer(
        self, model_name: str, request: InferenceRequest, version: str | None = None
    ) -> InferenceResponse:
        """Validate ``request`` for the model and run it."""
        model = self.model(model_name, version)
        if model.gradient_of is not None:
            await self._default_cotangents(model, request.inputs)
        allowed = self.allows_nonfinite(model)
        validate_inputs(model, request.inputs, allowed)
        outputs = await self._outputs(model, request.inputs)
        check_outputs(model, outputs, allowed)
        return InferenceResponse(
            model_name=model.name,
            outputs=select_outputs(model, outputs, request.outputs),
            id=request.id,
            model_version=model.version,
        )

    def allows_nonfinite(self, model: ServedModel) -> bool:
        """Whether the model (or, for a gradient companion, its model) opts in to NaN and Inf."""
        owner = model.gradient_of
        if owner is not None and owner in self.registry:
            return self.registry.get(owner).config.allow_nonfinite
        return model.config.allow_nonfinite

    async def _outputs(
        self, model: ServedModel, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Run the model, through its batcher when it batches; ServerBusy when the queue is full."""
        if self.in_inference >= self.workers + self.max_queue:
            raise ServerBusy(
                f"{self.in_inference} requests are computing or waiting for a model, the "
                f"limit (workers {self.workers} + max_queue {self.max_queue}); retry shortly"
            )
        self.in_inference += 1
        try:
            batcher = self._batcher(model)
            if batcher is None:
                return await self._run_model(model, inputs)
            return await batcher.submit(inputs)
        finally:
            self.in_inference -= 1

    async def _run_model(
        self, model: ServedModel, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        values = sum(array.size for array in inputs.values())
        return await self.executor.run_model(model, values, lambda: _predict(model, inputs))

    def _batcher(self, model: ServedModel) -> Batcher | None:
        """The model's batcher (made on first use), or None when it does not batch."""
        known = self._batchers.get(model.name)
        if known is None or known[0] is not model:
            policy = model.config.batching or self.batching
            batchable = policy.enabled and model.signature.batchable()
            batcher = (
                Batcher(
                    policy,
                    partial(self._run_model, model),
                    self._batch_observer(model.name),
                    self.may_have_company,
                )
                if batchable
                else None
            )
            known = self._batchers[model.name] = (model, batcher)
        return known[1]

    def may_have_company(self) -> bool:
        """Whether a request could find another to batch with: unless the server has
        one connection open (HTTP/1.1 serves a connection's requests one at a time)."""
        return self.connections is None or len(self.connections) > 1

    def _batch_observer(self, name: str) -> Callable[[int, int], None] | None:
        observe = self.observe_batch
        return None if observe is None else partial(observe, name)

    def statistics(self, model: ServedModel) -> dict[str, int]:
        """Requests, examples and runtime calls through the model's batcher (zeros if none)."""
        batcher = self._batcher(model)
        if batcher is None:
            return {"requests": 0, "rows": 0, "batches": 0}
        return {"requests": batcher.requests, "rows": batcher.rows, "batches": batcher.batches}

    async def infer_tensor(self, model_name: str, array: np.ndarray) -> np.ndarray:
        """The CAS endpoint's call: one untyped tensor in, the first output out.

        An array with one axis fewer than the input is one example: it gets a
        batch axis on the way in and loses it on the way out.
        """
        model = self.registry.get(model_name)
        spec = sole_input(model)
        single, batch = as_batch(model, spec, array)
        outputs = await self._outputs(model, {spec.name: batch})
        name = model.signature.outputs[0].name
        result = outputs[name][0] if single else outputs[name]
        check_outputs(model, {name: result}, model.config.allow_nonfinite)
        return result

    async def gradient(
        self, model_name: str, x: np.ndarray, cotangent: np.ndarray | None = None
    ) -> np.ndarray:
        """dx = J(x)ᵀ·dy for a single-input model; dy defaults to ones (d sum(y)/dx).

        ``x`` is one example or a batch, as for :meth:`infer_tensor`; ``cotangent``
        then has the shape of one output or of the batch's outputs.
        """
        model = self.registry.get(model_name)
        companion = self.registry.get(model.companion_name())  # says why there is none
        spec = sole_input(model)
        single, batch = as_batch(model, spec, x)
        inputs = {spec.name: batch}
        if cotangent is not None:
            out = model.signature.outputs[0]
            dy = cotangent[np.newaxis] if single else cotangent
            check_cotangent(model, out, len(batch), dy, shown=cotangent)
            inputs[cotangent_name(out.name)] = cast_to(companion.name, _spec_of(companion, out), dy)
        await self._default_cotangents(companion, inputs)
        validate_inputs(companion, inputs, model.config.allow_nonfinite)
        outputs = await self._outputs(companion, inputs)
        name = gradient_name(spec.name)
        result = outputs[name][0] if single else outputs[name]
        check_outputs(companion, {name: result}, model.config.allow_nonfinite)
        return result

    async def jacobian(self, model_name: str, x: np.ndarray) -> np.ndarray:
        """The Jacobian at one example, shape (output shape + input shape), in one VJP call."""
        model = self.registry.get(model_name)
        model.companion_name()  # says why there is none, before any work
        spec = sole_input(model)
        single, batch = as_batch(model, spec, x)
        if not single:
            raise ShapeMismatch(
                f"the Jacobian route takes one example of model {model.name!r}: shape "
                f"{list(spec.shape[1:])}; got shape {list(x.shape)}"
            )
        output = model.signature.outputs[0]
        shape = declared_shape(output, 1)
        if shape is None:  # a dynamic non-batch axis: only a forward run tells
            shape = (await self._outputs(model, {spec.name: batch}))[output.name].shape
        out_shape = shape[1:]
        size = prod(out_shape)
        cotangents = np.eye(size, dtype=numpy_dtype(output.datatype)).reshape(size, *out_shape)
        rows = await self.gradient(model.name, np.repeat(batch, size, axis=0), cotangents)
        return rows.reshape(*out_shape, *batch.shape[1:])

    async def _default_cotangents(
        self, companion: ServedModel, inputs: dict[str, np.ndarray]
    ) -> None:
        """Fill each missing cotangent with ones shaped like the model's output."""
        model = self.registry.get(companion.gradient_of or "")
        names = {cotangent_name(spec.name): spec.name for spec in model.signature.outputs}
        missing = [name for name in names if name not in inputs]
        forward = {s.name: inputs[s.name] for s in model.signature.inputs if s.name in inputs}
        if not missing or len(forward) != len(model.signature.inputs):
            return  # nothing to fill, or validation will name the missing input
        validate_inputs(model, forward)
        rows = len(next(iter(forward.values())))
        for name in missing:
            spec = next(s for s in model.signature.outputs if s.name == names[name])
            shape = declared_shape(spec, rows)
            if shape is None:  # a dynamic non-batch axis: only a forward run tells
                outputs = await self._outputs(model, forward)
                shape = outputs[spec.name].shape
            inputs[name] = np.ones(shape, numpy_dtype(spec.datatype))


def as_batch(model: ServedModel, spec: TensorSpec, array: np.ndarray) -> tuple[bool, np.ndarray]:
    """Whether ``array`` is one example, and it as a batch cast to the input's datatype."""
    single = array.ndim == len(spec.shape) - 1
    batch = array[np.newaxis] if single else array
    if not spec.accepts_shape(batch.shape):
        raise ShapeMismatch(
            f"model {model.name!r} expects input {spec.describe()}: shape "
            f"{list(spec.shape[1:])} for one example or {list(spec.shape)} for a batch; "
            f"got shape {list(array.shape)}"
        )
    typed = cast_to(model.name, spec, array)  # errors name indices as sent
    check_finite(model.name, spec, typed, model.config.allow_nonfinite)
    return single, typed[np.newaxis] if single else typed


def declared_shape(spec: TensorSpec, rows: int) -> tuple[int, ...] | None:
    """The output's shape for a batch of ``rows`` from its signature, if only the batch varies."""
    if not spec.shape or spec.shape[0] >= 0 or any(d < 0 for d in spec.shape[1:]):
        return None
    return (rows, *spec.shape[1:])


def check_cotangent(
    model: ServedModel, output: TensorSpec, batch: int, dy: np.ndarray, shown: np.ndarray
) -> None:
    """A cotangent has the output's shape for this batch; the error names ``shown``, as sent."""
    expected = (batch, *output.shape[1:])
    fits = dy.ndim == len(expected) and all(
        want < 0 or want == got for want, got in zip(expected, dy.shape)
    )
    if not fits:
        wanted = [d if d >= 0 else "any" for d in expected]
        raise ShapeMismatch(
            f"the cotangent of model {model.name!r} has the shape of its output "
            f"{output.name!r}: {wanted[1:]} for one example or {wanted} for this batch; "
            f"got shape {list(shown.shape)}"
        )


def _spec_of(companion: ServedModel, output: TensorSpec) -> TensorSpec:
    return companion.signature.input(cotangent_name(output.name))


def sole_input(model: ServedModel) -> TensorSpec:
    """The model's only input; the CAS endpoint serves single-input models."""
    if len(model.signature.inputs) != 1:
        raise BadRequest(
            f"model {model.name!r} has {len(model.signature.inputs)} inputs; "
            "send it V2 requests (POST /v2/models/NAME/infer) instead"
        )
    return model.signature.inputs[0]


def cast_to(model_name: str, spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """Give untyped numbers the input's datatype; integers must be whole and in range.

    A value too large for the datatype (``1e300`` for FP32) is refused, never
    made infinite; NaN and infinities stay what they are (see :func:`check_finite`).
    """
    dtype = numpy_dtype(spec.datatype)
    if array.dtype == dtype:
        return array
    wanted = f"model {model_name!r} expects input {spec.describe()}"
    if dtype.kind in "iub":
        if not np.array_equal(array, np.round(array)):  # NaN and inf are no integers either
            raise DatatypeMismatch(f"{wanted}; got non-integer numbers")
        low, high = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
        if array.size and (array.min() < low or array.max() > high):
            raise DatatypeMismatch(f"{wanted}; got numbers outside {low} to {high}")
        return array.astype(dtype)
    if casts_finite(array, dtype):
        return array.astype(dtype)  # no value can overflow
    with np.errstate(over="ignore"):
        cast = array.astype(dtype)
    overflowed = np.isinf(cast) & np.isfinite(array)
    if overflowed.any():
        index = _where(overflowed)
        raise DatatypeMismatch(
            f"{wanted}; the number {array[index]} at {list(index)} is too large for "
            f"{spec.datatype} (at most {float(np.finfo(dtype).max):.4g})"
        )
    return cast


def check_finite(model_name: str, spec: TensorSpec, array: np.ndarray, allowed: bool) -> None:
    """Refuse NaN and infinities in an input, unless the model's config allows them."""
    if allowed or array.dtype.kind not in "fc" or all_finite(array):
        return
    index = _where(~np.isfinite(array))
    raise PayloadError(
        f"model {model_name!r} takes finite numbers only: input {spec.name!r} holds "
        f"{_non_finite(array[index])} at {list(index)}; send finite numbers, or set "
        '"allow_nonfinite": true in the model\'s config'
    )


def check_outputs(model: ServedModel, outputs: dict[str, np.ndarray], allowed: bool) -> None:
    """Refuse a result holding NaN or infinities (no reply format could hold them as numbers
    for every client), unless the model's config allows them."""
    for name, array in outputs.items():
        if allowed or array.dtype.kind not in "fc" or all_finite(array):
            continue
        index = _where(~np.isfinite(array))
        raise BadRequest(
            f"model {model.name!r} computed {_non_finite(array[index])} in output {name!r} "
            f"at {list(index)} for this input; send inputs within the model's domain, or "
            'set "allow_nonfinite": true in its config to receive NaN and infinities'
        )


def _where(mask: np.ndarray) -> tuple[int, ...]:
    """The index of the first true element of ``mask``."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _non_finite(value: float) -> str:
    if np.isnan(value):
        return "NaN (Indeterminate)"
    return "Infinity" if value > 0 else "-Infinity"


def _predict(model: ServedModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        return model.runtime.predict(inputs)
    except MLBridgeError:
        raise
    except Exception as error:  # the engine's own exception types vary
        raise InferenceFailed(f"model {model.name!r} failed: {error}") from error


def validate_inputs(
    model: ServedModel, inputs: dict[str, np.ndarray], allow_nonfinite: bool | None = None
) -> None:
    """Check names, datatypes, shapes and finite numbers against the signature; raise a 400
    naming it. NaN and infinities pass where ``allow_nonfinite`` (default: the model's config)."""
    specs = model.signature.inputs_by_name
    if inputs.keys() != specs.keys():
        raise InputNameMismatch(
            f"model {model.name!r} expects inputs {_describe_all(specs.values())}; "
            f"got {sorted(inputs)}"
        )
    allowed = model.config.allow_nonfinite if allow_nonfinite is None else allow_nonfinite
    for name, array in inputs.items():
        check_tensor(model.name, specs[name], array)
        check_finite(model.name, specs[name], array, allowed)


def check_tensor(model_name: str, spec: TensorSpec, array: np.ndarray) -> None:
    """Raise ShapeMismatch or DatatypeMismatch unless ``array`` fits ``spec``."""
    if array.dtype != spec.dtype:
        raise DatatypeMismatch(
            f"model {model_name!r} expects input {spec.describe()}; got datatype "
            f"{_v2_name(array.dtype)}"
        )
    if not spec.accepts_shape(array.shape):
        raise ShapeMismatch(
            f"model {model_name!r} expects input {spec.describe()}; got shape {list(array.shape)}"
        )


def select_outputs(
    model: ServedModel, outputs: dict[str, np.ndarray], wanted: list[str] | None
) -> dict[str, np.ndarray]:
    """Keep only the requested outputs (all when ``wanted`` is None)."""
    if wanted is None:
        return outputs
    unknown = [name for name in wanted if name not in outputs]
    if unknown:
        raise BadRequest(f"model {model.name!r} has outputs {sorted(outputs)}; requested {unknown}")
    return {name: outputs[name] for name in wanted}


def _describe_all(specs: Iterable[TensorSpec]) -> str:
    return ", ".join(spec.describe() for spec in specs)


def _v2_name(dtype: np.dtype) -> str:
    return NUMPY_TO_V2.get(np.dtype(dtype), str(dtype))
