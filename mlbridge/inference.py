"""Validate a request against the model's signature, run it, build the response.

This layer knows nothing of HTTP or wire formats: codecs turn bodies into
:class:`InferenceRequest` objects and responses back into bodies.
"""

from __future__ import annotations

import numpy as np
from anyio import CapacityLimiter, to_thread

from .errors import (
    BadRequest,
    DatatypeMismatch,
    InferenceFailed,
    InputNameMismatch,
    MLBridgeError,
    ShapeMismatch,
)
from .protocol import (
    NUMPY_TO_V2,
    InferenceRequest,
    InferenceResponse,
    TensorSpec,
    numpy_dtype,
)
from .registry import ModelRegistry, ServedModel


class InferenceService:
    """Runs validated requests on a bounded pool of worker threads.

    Small inputs run on the event loop instead when the runtime allows it:
    handing work to a thread and back costs ~120 us here, more than a small
    model takes (see bench/latency.py).
    """

    def __init__(self, registry: ModelRegistry, workers: int = 4) -> None:
        self.registry = registry
        self.limiter = CapacityLimiter(workers)

    async def infer(self, model_name: str, request: InferenceRequest) -> InferenceResponse:
        """Validate ``request`` for the model and run it."""
        model = self.registry.get(model_name)
        validate_inputs(model, request.inputs)
        return await self._run(model, request)

    async def _run(self, model: ServedModel, request: InferenceRequest) -> InferenceResponse:
        """Run validated inputs, in a worker thread unless they are small."""
        size = sum(array.size for array in request.inputs.values())
        if size <= model.runtime.inline_max_values:
            outputs = _predict(model, request.inputs)  # a thread hop would cost more
        else:
            outputs = await to_thread.run_sync(
                _predict, model, request.inputs, limiter=self.limiter
            )
        return InferenceResponse(
            model_name=model.name,
            outputs=select_outputs(model, outputs, request.outputs),
            id=request.id,
        )

    async def infer_tensor(self, model_name: str, array: np.ndarray) -> np.ndarray:
        """The CAS endpoint's call: one untyped tensor in, the first output out.

        An array with one axis fewer than the input is one example: it gets a
        batch axis on the way in and loses it on the way out.
        """
        model = self.registry.get(model_name)
        spec = sole_input(model)
        single = array.ndim == len(spec.shape) - 1
        batch = array[np.newaxis] if single else array
        if not spec.accepts_shape(batch.shape):
            raise ShapeMismatch(
                f"model {model.name!r} expects input {spec.describe()}: shape "
                f"{list(spec.shape[1:])} for one example or {list(spec.shape)} for a batch; "
                f"got shape {list(array.shape)}"
            )
        request = InferenceRequest({spec.name: cast_to(model.name, spec, batch)})
        response = await self._run(model, request)
        result = next(iter(response.outputs.values()))
        return result[0] if single else result


def sole_input(model: ServedModel) -> TensorSpec:
    """The model's only input; the CAS endpoint serves single-input models."""
    if len(model.signature.inputs) != 1:
        raise BadRequest(
            f"model {model.name!r} has {len(model.signature.inputs)} inputs; "
            "send it V2 requests (POST /v2/models/NAME/infer) instead"
        )
    return model.signature.inputs[0]


def cast_to(model_name: str, spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """Give untyped numbers the input's datatype; integers must be whole numbers."""
    dtype = numpy_dtype(spec.datatype)
    if array.dtype == dtype:
        return array
    if dtype.kind in "iub" and not np.array_equal(array, np.round(array)):
        raise DatatypeMismatch(
            f"model {model_name!r} expects input {spec.describe()}; got non-integer numbers"
        )
    return array.astype(dtype)


def _predict(model: ServedModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        return model.runtime.predict(inputs)
    except MLBridgeError:
        raise
    except Exception as error:  # the engine's own exception types vary
        raise InferenceFailed(f"model {model.name!r} failed: {error}") from error


def validate_inputs(model: ServedModel, inputs: dict[str, np.ndarray]) -> None:
    """Check names, datatypes and shapes against the signature; raise a 400 naming it."""
    specs = {spec.name: spec for spec in model.signature.inputs}
    if set(inputs) != set(specs):
        raise InputNameMismatch(
            f"model {model.name!r} expects inputs {_describe_all(specs.values())}; "
            f"got {sorted(inputs)}"
        )
    for name, array in inputs.items():
        check_tensor(model.name, specs[name], array)


def check_tensor(model_name: str, spec: TensorSpec, array: np.ndarray) -> None:
    """Raise ShapeMismatch or DatatypeMismatch unless ``array`` fits ``spec``."""
    if array.dtype != numpy_dtype(spec.datatype):
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


def _describe_all(specs: object) -> str:
    return ", ".join(spec.describe() for spec in specs)  # type: ignore[attr-defined]


def _v2_name(dtype: np.dtype) -> str:
    return NUMPY_TO_V2.get(np.dtype(dtype), str(dtype))
