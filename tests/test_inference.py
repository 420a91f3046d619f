"""The inference layer on fake runtimes: validation, outputs, versions, gradients, the Executor."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from support.fakes import (
    EchoRuntime,
    FailingRuntime,
    FakeRuntime,
    SlowRuntime,
    fake_models,
    served,
)

from mlbridge.errors import (
    BadRequest,
    DatatypeMismatch,
    GradientUnavailable,
    InferenceFailed,
    InputNameMismatch,
    ModelNotFound,
    ShapeMismatch,
)
from mlbridge.inference import (
    INLINE_MAX_VALUES,
    Executor,
    InferenceService,
    cast_to,
    select_outputs,
)
from mlbridge.protocol import InferenceRequest, ModelSignature, TensorSpec
from mlbridge.registry import ModelRegistry

ROW = np.array([[1.0, 2.0, 3.0]], np.float32)


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def service() -> InferenceService:
    return InferenceService(ModelRegistry(fake_models()), workers=2)


def infer(service: InferenceService, model: str, inputs: dict, **request) -> object:
    return run(service.infer(model, InferenceRequest(inputs, **request)))


# Models and versions


def test_the_served_version_is_1_and_others_are_not_found(service) -> None:
    assert service.model("echo").version == "1"
    assert service.model("echo", "1").name == "echo"
    with pytest.raises(ModelNotFound, match=r"model 'echo' has version 1 only; got version '2'"):
        service.model("echo", "2")
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        service.model("nope")


def test_a_response_carries_name_version_id_and_outputs(service) -> None:
    response = infer(service, "echo", {"input": ROW}, id="r-7")
    assert response.model_name == "echo" and response.model_version == "1"
    assert response.id == "r-7" and response.outputs["output"].tolist() == ROW.tolist()


# Validation


VALIDATION = [
    (
        {"pixels": ROW},
        InputNameMismatch,
        "model 'echo' expects inputs 'input' of shape [-1, 3] (FP32); got ['pixels']",
    ),
    (
        {"input": ROW, "extra": ROW},
        InputNameMismatch,
        "got ['extra', 'input']",
    ),
    (
        {"input": ROW.astype(np.float64)},
        DatatypeMismatch,
        "model 'echo' expects input 'input' of shape [-1, 3] (FP32); got datatype FP64",
    ),
    (
        {"input": np.ones((2, 4), np.float32)},
        ShapeMismatch,
        "model 'echo' expects input 'input' of shape [-1, 3] (FP32); got shape [2, 4]",
    ),
    (
        {"input": np.ones(3, np.float32)},
        ShapeMismatch,
        "got shape [3]",
    ),
]


@pytest.mark.parametrize(("inputs", "error", "message"), VALIDATION)
def test_validation_names_what_was_expected(service, inputs, error, message) -> None:
    with pytest.raises(error) as caught:
        infer(service, "echo", inputs)
    assert message in caught.value.message and caught.value.status == 400


def test_only_the_requested_outputs_are_returned() -> None:
    model = fake_models()[0]
    outputs = {"output": ROW, "other": ROW}
    assert select_outputs(model, outputs, None) is outputs
    assert list(select_outputs(model, outputs, ["other"])) == ["other"]
    with pytest.raises(BadRequest, match=r"has outputs \['other', 'output'\]; requested \['x'\]"):
        select_outputs(model, outputs, ["x"])


def test_a_failing_engine_is_inference_failed(service) -> None:
    with pytest.raises(InferenceFailed) as caught:
        infer(service, "failing", {"input": ROW})
    assert caught.value.message == f"model 'failing' failed: {FailingRuntime.message}"
    assert caught.value.status == 500


def test_an_engine_raising_our_own_error_keeps_it() -> None:
    class Refusing(EchoRuntime):
        def compute(self, inputs):
            raise ShapeMismatch("the engine says no")

    service = InferenceService(ModelRegistry([served("refusing", Refusing())]))
    with pytest.raises(ShapeMismatch, match="the engine says no"):
        infer(service, "refusing", {"input": ROW})


# The CAS call: one untyped tensor


def test_one_example_gains_and_loses_the_batch_axis(service) -> None:
    single = run(service.infer_tensor("echo", np.array([1.0, 2.0, 3.0])))
    assert single.shape == (3,) and single.dtype == np.float32
    batch = run(service.infer_tensor("echo", np.ones((4, 3))))
    assert batch.shape == (4, 3)


def test_a_tensor_of_the_wrong_shape_says_both_accepted_shapes(service) -> None:
    with pytest.raises(ShapeMismatch) as caught:
        run(service.infer_tensor("echo", np.ones(4)))
    assert caught.value.message == (
        "model 'echo' expects input 'input' of shape [-1, 3] (FP32): shape [3] for one "
        "example or [-1, 3] for a batch; got shape [4]"
    )


def test_a_model_of_several_inputs_asks_for_v2_requests() -> None:
    class TwoInputs(EchoRuntime):
        fake_signature = ModelSignature(
            inputs=(TensorSpec("a", "FP32", (-1, 3)), TensorSpec("b", "FP32", (-1, 3))),
            outputs=(TensorSpec("output", "FP32", (-1, 3)),),
        )

    service = InferenceService(ModelRegistry([served("two", TwoInputs())]))
    with pytest.raises(BadRequest, match="model 'two' has 2 inputs; send it V2 requests"):
        run(service.infer_tensor("two", np.ones(3)))


CASTS = [
    ("INT64", np.array([1.0, 2.0]), np.int64, None),
    ("INT64", np.array([1.5, 2.0]), None, "got non-integer numbers"),
    ("FP32", np.array([1.5, 2.0]), np.float32, None),
    ("FP32", np.array([1e34, -3.4e38]), np.float32, None),  # past the byte screen: numpy's check
    ("FP32", np.array([1.0, 3.5e38]), None, "too large for FP32"),
    ("FP32", np.array([1.0, np.nan, -np.inf]), np.float32, None),  # stay what they are
    ("BOOL", np.array([0.0, 1.0]), np.bool_, None),
]


@pytest.mark.parametrize(("datatype", "array", "dtype", "error"), CASTS)
def test_untyped_numbers_get_the_input_datatype(datatype, array, dtype, error) -> None:
    spec = TensorSpec("x", datatype, (-1,))
    if error:
        with pytest.raises(DatatypeMismatch, match=error):
            cast_to("m", spec, array)
    else:
        cast = cast_to("m", spec, array)
        assert cast.dtype == dtype and np.array_equal(cast, array.astype(dtype), equal_nan=True)


# Gradients through the companion (the echo model's VJP is dx = dy)


def test_the_default_cotangent_is_ones(service) -> None:
    assert run(service.gradient("echo", np.array([1.0, 2.0, 3.0]))).tolist() == [1, 1, 1]
    batch = run(service.gradient("echo", np.ones((2, 3))))
    assert batch.tolist() == [[1, 1, 1], [1, 1, 1]]


def test_a_given_cotangent_comes_back_through_the_identity(service) -> None:
    dx = run(service.gradient("echo", np.zeros(3), np.array([4.0, 5.0, 6.0])))
    assert dx.tolist() == [4, 5, 6] and dx.dtype == np.float32


def test_a_cotangent_of_the_wrong_shape_says_the_output_shape(service) -> None:
    with pytest.raises(ShapeMismatch) as caught:
        run(service.gradient("echo", np.ones((2, 3)), np.ones((3, 3))))
    assert caught.value.message == (
        "the cotangent of model 'echo' has the shape of its output 'output': [3] for one "
        "example or [2, 3] for this batch; got shape [3, 3]"
    )


def test_a_model_without_a_companion_says_why(service) -> None:
    with pytest.raises(GradientUnavailable, match="model 'slow' serves no gradient: it is a fake"):
        run(service.gradient("slow", np.ones(3)))


def test_the_companion_called_directly_fills_its_default_cotangent(service) -> None:
    response = infer(service, "echo.vjp", {"input": ROW})
    assert response.outputs["input_grad"].tolist() == [[1, 1, 1]]


def test_the_jacobian_takes_one_example(service) -> None:
    assert run(service.jacobian("echo", np.array([1.0, 2.0, 3.0]))).tolist() == np.eye(3).tolist()
    with pytest.raises(ShapeMismatch, match="the Jacobian route takes one example"):
        run(service.jacobian("echo", np.ones((2, 3))))


# The Executor: inline when small and safe, else a worker thread


class Recorder(FakeRuntime):
    def compute(self, inputs):
        return {"output": inputs["input"]}


def where_it_ran(inline_safe: bool, values: int) -> str:
    runtime = Recorder()
    runtime.inline_safe = inline_safe
    model = served("m", runtime)

    async def go() -> bool:
        loop_thread = threading.get_ident()
        await Executor(1).run_model(model, values, lambda: runtime.predict({"input": ROW}))
        return runtime.ran_on == [loop_thread]

    return "inline" if run(go()) else "thread"


@pytest.mark.parametrize(
    ("inline_safe", "values", "expected"),
    [
        (True, 3, "inline"),
        (True, INLINE_MAX_VALUES, "inline"),
        (True, INLINE_MAX_VALUES + 1, "thread"),
        (False, 3, "thread"),
    ],
)
def test_models_run_inline_only_when_small_and_safe(inline_safe, values, expected) -> None:
    assert where_it_ran(inline_safe, values) == expected


@pytest.mark.parametrize(
    ("values", "expected"), [(10, "inline"), (INLINE_MAX_VALUES + 1, "thread")]
)
def test_codecs_run_inline_only_when_small(values: int, expected: str) -> None:
    async def go() -> str:
        loop_thread = threading.get_ident()
        ran_on = await Executor().convert(values, threading.get_ident)
        return "inline" if ran_on == loop_thread else "thread"

    assert run(go()) == expected


def test_a_body_size_counts_as_numbers_for_the_policy() -> None:
    assert Executor.values_in_body(16 * 100) == 100 and Executor.values_in_body(15) == 0


def test_workers_bound_the_models_running_at_once() -> None:
    class Quick(SlowRuntime):
        delay_s = 0.2

    async def two_at_once(workers: int) -> float:
        service = InferenceService(ModelRegistry([served("slow", Quick())]), workers=workers)
        started = time.perf_counter()
        request = InferenceRequest({"input": ROW})
        await asyncio.gather(*(service.infer("slow", request) for _ in range(2)))
        return time.perf_counter() - started

    assert run(two_at_once(1)) >= 2 * Quick.delay_s
    assert run(two_at_once(2)) < 2 * Quick.delay_s


@pytest.mark.parametrize(
    ("connections", "expected"), [(None, True), (set(), False), ({"a"}, False), ({"a", "b"}, True)]
)
def test_a_request_has_company_only_beside_another_open_connection(connections, expected) -> None:
    service = InferenceService(ModelRegistry(fake_models()))
    service.connections = connections  # as the server sets it: uvicorn's open connections
    assert service.may_have_company() is expected
