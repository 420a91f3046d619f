"""VJP graphs against central differences: every rule on a tiny graph, then the demo models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support import MNIST_DIR, REPO, TESTDATA
from vjp_helpers import (
    Case,
    cotangents_for,
    gradients,
    relative_error,
    run_exact,
    run_onnxruntime,
    vjp_feeds,
    vjp_in_both_precisions,
)

from mlbridge.errors import GradientUnavailable
from mlbridge.gradients import (
    GRADIENT_RULES,
    build_vjp,
    fd_relative_error,
    to_float64,
)
from mlbridge.gradients.rules import ZERO_GRADIENT_OPS

node = helper.make_node
FD_TOLERANCE = 1e-6  # float64 VJP vs float64 central differences
SERVED_TOLERANCE = 1e-4  # float32 VJP in onnxruntime vs float64 VJP, on tiny graphs
MODEL_TOLERANCE = 1e-3  # float32 VJP of a whole model vs float64
DEMO_MODELS = [
    REPO / "mlbridge" / "demo_models" / name for name in ("mnist.onnx", "mnist-cnn.onnx")
]
TEST_MODELS = [TESTDATA / "models" / name for name in ("linear.onnx", "twoin.onnx")]
#: Noise added to MNIST images before differencing: blank regions make MaxPool windows tie,
#: where the model has no derivative and central differences average the tied entries.
TIE_BREAKING_NOISE = 1e-3
rng = np.random.default_rng(42)


def unary(op: str, low: float = -2.0, high: float = 2.0, **attrs) -> Case:
    return Case(op, [node(op, ["x"], ["y"], **attrs)], {"x": ["N", 3]}, low=low, high=high)


def conv(
    case_id: str, x: list, w: list, *, grad_w=False, bias=False, float64_runtime=True, **attrs
):
    inputs = {"x": x, **({"w": w} if grad_w else {}), **({"b": [w[0]]} if bias else {})}
    constants = {} if grad_w else {"w": rng.standard_normal(w)}
    names = ["x", "w", "b"] if bias else ["x", "w"]
    nodes = [node("Conv", names, ["y"], **attrs)]
    return Case(case_id, nodes, inputs, constants, float64_runtime=float64_runtime)


CASES = [
    # elementwise arithmetic, with static and run-time broadcasting
    Case("Add-bias", [node("Add", ["x", "b"], ["y"])], {"x": ["N", 3], "b": [3]}),
    Case(
        "Add-runtime-broadcast",
        [node("Add", ["a", "b"], ["y"])],
        {"a": ["N", "M"], "b": ["N", "K"]},
    ),
    Case("Sub-column", [node("Sub", ["a", "b"], ["y"])], {"a": ["N", 1], "b": ["N", 3]}),
    Case(
        "Mul-square-and-scale",
        [node("Mul", ["x", "x"], ["s"]), node("Mul", ["s", "c"], ["y"])],
        {"x": ["N", 3]},
        {"c": np.array(1.5)},
    ),
    Case("Mul-broadcast", [node("Mul", ["a", "b"], ["y"])], {"a": [2, 1, 4], "b": [3, 1]}),
    Case("Div", [node("Div", ["a", "b"], ["y"])], {"a": ["N", 3], "b": [3]}, low=0.5, high=2.0),
    Case("Pow-constant", [node("Pow", ["x", "p"], ["y"])], {"x": ["N", 3]}, {"p": np.array(3.0)}),
    Case(
        "Pow-int-exponent",
        [node("Pow", ["x", "p"], ["y"])],
        {"x": ["N", 3]},
        {"p": np.array(2, np.int64)},
    ),
    Case(
        "Pow-both", [node("Pow", ["x", "p"], ["y"])], {"x": ["N", 3], "p": [3]}, low=0.5, high=2.0
    ),
    Case("Sum", [node("Sum", ["a", "b", "c"], ["y"])], {"a": ["N", 3], "b": [3], "c": ["N", 1]}),
    Case("Mean", [node("Mean", ["a", "b"], ["y"])], {"a": ["N", 3], "b": [1, 3]}),
    Case("Min", [node("Min", ["a", "b"], ["y"])], {"a": ["N", 3], "b": [3]}),
    Case("Max", [node("Max", ["a", "b"], ["y"])], {"a": ["N", 3], "b": ["N", 1]}),
    Case("Max-one-input", [node("Max", ["x"], ["y"])], {"x": ["N", 3]}),
    Case(
        "Where-computed-condition",
        [node("Greater", ["x", "z"], ["c"]), node("Where", ["c", "x", "b"], ["y"])],
        {"x": ["N", 3], "b": [3]},
        {"z": np.array(0.0)},
    ),
    Case(
        "Where-bool-input",
        [node("Where", ["c", "a", "b"], ["y"])],
        {"c": (["N", 3], TensorProto.BOOL), "a": ["N", 3], "b": [1]},
    ),
    Case(
        "Clip-constant-bounds",
        [node("Clip", ["x", "lo", "hi"], ["y"])],
        {"x": ["N", 3]},
        {"lo": np.array(-1.0), "hi": np.array(1.0)},
    ),
    Case(
        "Clip-input-low",
        [node("Clip", ["x", "lo", "hi"], ["y"])],
        {"x": ["N", 3], "lo": []},
        {"hi": np.array(1.5)},
        low=-1.0,
        high=1.0,
    ),
    Case(
        "Clip-input-high",
        [node("Clip", ["x", "lo", "hi"], ["y"])],
        {"x": ["N", 3], "hi": []},
        {"lo": np.array(-1.5)},
        low=-1.0,
        high=1.0,
    ),
    Case(
        "Clip-upper-only",
        [node("Clip", ["x", "", "hi"], ["y"])],
        {"x": ["N", 3]},
        {"hi": np.array(0.5)},
    ),
    # unary math
    unary("Neg"),
    unary("Abs"),
    unary("Exp"),
    unary("Log", 0.5, 2.0),
    unary("Sqrt", 0.5, 2.0),
    unary("Reciprocal", 0.5, 2.0),
    unary("Tanh"),
    unary("Sigmoid"),
    unary("Relu"),
    unary("LeakyRelu", alpha=0.2),
    unary("Softplus"),
    unary("Erf"),
    unary("Sin"),
    unary("Cos"),
    unary("Tan", -1.0, 1.0),
    unary("Asin", -0.9, 0.9),
    unary("Acos", -0.9, 0.9),
    unary("Atan", -3.0, 3.0),
    unary("Sinh"),
    unary("Cosh"),
    unary("Asinh", -3.0, 3.0),
    unary("Identity"),
    unary("Dropout"),
    Case(
        "Dropout-inference-mode",
        [node("Dropout", ["x", "r", "t"], ["y", "mask"])],
        {"x": ["N", 3]},
        {"r": np.array(0.5), "t": np.array(False)},
    ),
    Case("Cast-float", lambda elem: [node("Cast", ["x"], ["y"], to=elem)], {"x": ["N", 3]}),
    Case(
        "Cast-through-int",
        lambda elem: [
            node("Cast", ["x"], ["i"], to=TensorProto.INT64),
            node("Cast", ["i"], ["f"], to=elem),
            node("Mul", ["f", "x"], ["y"]),
        ],
        {"x": ["N", 3]},
        low=0.1,
        high=0.9,
    ),
    # zero-gradient ops on the path
    Case(
        "Sign-Floor-Round",
        [
            node("Sign", ["x"], ["s"]),
            node("Floor", ["x"], ["f"]),
            node("Round", ["x"], ["r"]),
            node("Sum", ["s", "f", "r", "x"], ["y"]),
        ],
        {"x": ["N", 3]},
        low=0.1,
        high=0.4,
    ),
    Case(
        "Shape-ConstantOfShape",
        lambda elem: [
            node("Shape", ["x"], ["s"]),
            node(
                "ConstantOfShape",
                ["s"],
                ["o"],
                value=numpy_helper.from_array(np.array([2.0], np.float32)),
            ),
            node("Cast", ["o"], ["c"], to=elem),
            node("Mul", ["x", "c"], ["y"]),
        ],
        {"x": ["N", 3]},
    ),
    # layout
    Case(
        "Reshape",
        [node("Reshape", ["x", "s"], ["y"])],
        {"x": ["N", 2, 3]},
        {"s": np.array([-1, 6])},
    ),
    Case("Flatten", [node("Flatten", ["x"], ["y"], axis=2)], {"x": ["N", 2, 3]}),
    Case("Squeeze", [node("Squeeze", ["x", "a"], ["y"])], {"x": ["N", 1, 3]}, {"a": np.array([1])}),
    Case(
        "Unsqueeze",
        [node("Unsqueeze", ["x", "a"], ["y"])],
        {"x": ["N", 3]},
        {"a": np.array([0, -1])},
    ),
    Case("Transpose-perm", [node("Transpose", ["x"], ["y"], perm=[2, 0, 1])], {"x": ["N", 2, 3]}),
    Case("Transpose-default", [node("Transpose", ["x"], ["y"])], {"x": ["N", 2, 3]}),
    Case("Expand", [node("Expand", ["x", "s"], ["y"])], {"x": [3, 1]}, {"s": np.array([2, 3, 4])}),
    Case(
        "Concat",
        [node("Concat", ["a", "k", "b"], ["y"], axis=-1)],
        {"a": ["N", 2], "b": ["N", 3]},
        {"k": np.ones((2, 1))},
    ),
    Case(
        "Split",
        [node("Split", ["x", "s"], ["p", "q"], axis=1), node("Mul", ["q", "q"], ["y"])],
        {"x": ["N", 5]},
        {"s": np.array([2, 3])},
    ),
    Case(
        "Split-both-used",
        [
            node("Split", ["x", "s"], ["p", "q"], axis=1),
            node("ReduceSum", ["p", "one"], ["u"]),
            node("Mul", ["q", "u"], ["y"]),
        ],
        {"x": ["N", 5]},
        {"s": np.array([2, 3]), "one": np.array([1])},
    ),
    Case(
        "Slice",
        [node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])],
        {"x": ["N", 6]},
        {"st": np.array([5]), "en": np.array([0]), "ax": np.array([1]), "sp": np.array([-2])},
    ),
    Case(
        "Gather-repeated",
        [node("Gather", ["x", "i"], ["y"], axis=1)],
        {"x": ["N", 4]},
        {"i": np.array([[0, 3], [3, 3]])},
    ),
    # reductions
    Case(
        "ReduceSum-keepdims",
        [node("ReduceSum", ["x", "a"], ["y"])],
        {"x": ["N", 2, 3]},
        {"a": np.array([1])},
    ),
    Case(
        "ReduceSum-dropdims",
        [node("ReduceSum", ["x", "a"], ["y"], keepdims=0)],
        {"x": ["N", 2, 3]},
        {"a": np.array([-1, 0])},
    ),
    Case("ReduceSum-all", [node("ReduceSum", ["x"], ["y"], keepdims=0)], {"x": ["N", 3]}),
    Case(
        "ReduceSum-noop", [node("ReduceSum", ["x"], ["y"], noop_with_empty_axes=1)], {"x": ["N", 3]}
    ),
    Case(
        "ReduceMean-attribute-axes",
        [node("ReduceMean", ["x"], ["y"], axes=[2], keepdims=0)],
        {"x": ["N", 2, 3]},
    ),
    Case(
        "ReduceMean-input-axes",
        [node("ReduceMean", ["x", "a"], ["y"])],
        {"x": ["N", 2, 3]},
        {"a": np.array([0, 2])},
        opset=18,
    ),
    Case("GlobalAveragePool", [node("GlobalAveragePool", ["x"], ["y"])], {"x": ["N", 2, 3, 3]}),
    Case(
        "ReduceSumSquare",
        [node("ReduceSumSquare", ["x"], ["y"], axes=[1], keepdims=0)],
        {"x": ["N", 3]},
    ),
    Case(
        "ReduceLogSumExp",
        [node("ReduceLogSumExp", ["x", "a"], ["y"])],
        {"x": ["N", 3]},
        {"a": np.array([1])},
        opset=18,
    ),
    Case(
        "ReduceProd", [node("ReduceProd", ["x"], ["y"], axes=[0, 2])], {"x": ["N", 2, 3]}, low=0.5
    ),
    Case(
        "ReduceProd-with-zeros",
        [node("ReduceProd", ["x", "a"], ["y"], keepdims=0)],
        {"x": [3, 3]},
        {"a": np.array([1])},
        opset=18,
        fixed={"x": np.array([[0, 1.5, 2], [0, 0, 3], [1, 2, -3]])},
    ),
    Case(
        "ReduceProd-all", [node("ReduceProd", ["x"], ["y"], keepdims=0)], {"x": ["N", 3]}, low=0.5
    ),
    # products
    Case("MatMul-2d", [node("MatMul", ["a", "b"], ["y"])], {"a": ["N", 3], "b": [3, 4]}),
    Case("MatMul-batched", [node("MatMul", ["a", "b"], ["y"])], {"a": [2, "N", 3], "b": [3, 4]}),
    Case(
        "MatMul-batch-broadcast",
        [node("MatMul", ["a", "b"], ["y"])],
        {"a": [1, 2, 3], "b": [2, 3, 4]},
    ),
    Case("MatMul-vector-matrix", [node("MatMul", ["a", "b"], ["y"])], {"a": [3], "b": [2, 3, 4]}),
    Case("MatMul-matrix-vector", [node("MatMul", ["a", "b"], ["y"])], {"a": ["N", 3], "b": [3]}),
    Case("MatMul-vector-vector", [node("MatMul", ["a", "b"], ["y"])], {"a": [3], "b": [3]}),
    Case(
        "Gemm-plain", [node("Gemm", ["a", "b", "c"], ["y"])], {"a": ["N", 3], "b": [3, 4], "c": [4]}
    ),
    Case(
        "Gemm-transA",
        [node("Gemm", ["a", "b", "c"], ["y"], transA=1, alpha=0.5, beta=2.0)],
        {"a": [3, "N"], "b": [3, 4], "c": ["N", 1]},
    ),
    Case(
        "Gemm-transB",
        [node("Gemm", ["a", "b"], ["y"], transB=1, alpha=1.5)],
        {"a": ["N", 3], "b": [4, 3]},
    ),
    Case(
        "Gemm-transA-transB",
        [node("Gemm", ["a", "b", "c"], ["y"], transA=1, transB=1)],
        {"a": [3, "N"], "b": [4, 3], "c": [1, 4]},
    ),
    # convolutions and pools
    conv("Conv-2d", ["N", 2, 5, 5], [3, 2, 3, 3], bias=True),
    conv(
        "Conv-stride-pads-remainder",
        ["N", 2, 7, 8],
        [3, 2, 3, 2],
        strides=[2, 3],
        pads=[1, 0, 0, 1],
    ),
    conv("Conv-dilated", ["N", 1, 7, 7], [2, 1, 2, 3], dilations=[2, 2], pads=[1, 1, 1, 1]),
    conv("Conv-group", ["N", 4, 5, 5], [6, 2, 3, 3], group=2, float64_runtime=False),
    conv("Conv-same-upper", ["N", 2, 5, 6], [3, 2, 3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    conv("Conv-same-lower", ["N", 1, 5, 5], [2, 1, 2, 2], auto_pad="SAME_LOWER"),
    conv("Conv-valid", ["N", 1, 6, 6], [2, 1, 3, 3], strides=[2, 2], auto_pad="VALID"),
    conv(
        "Conv-weight-grad",
        ["N", 2, 6, 5],
        [3, 2, 3, 2],
        grad_w=True,
        bias=True,
        strides=[2, 1],
        pads=[1, 1, 0, 1],
        dilations=[1, 2],
    ),
    conv("Conv-1d", ["N", 2, 7], [3, 2, 3], grad_w=True, strides=[2]),
    Case(
        "MaxPool-2x2",
        [node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
        {"x": ["N", 2, 4, 5]},
        opset=15,
    ),
    Case(
        "MaxPool-overlapping-opset15",
        [node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        {"x": ["N", 2, 4, 4]},
        opset=15,
    ),
    Case(
        "MaxPool-storage-order",
        [node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2], storage_order=1)],
        {"x": ["N", 1, 4, 4]},
    ),
    Case(
        "AveragePool-pads-excluded",
        [node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
        {"x": ["N", 2, 6, 5]},
    ),
    Case(
        "AveragePool-pads-included",
        [
            node(
                "AveragePool",
                ["x"],
                ["y"],
                kernel_shape=[2, 2],
                pads=[1, 0, 0, 1],
                count_include_pad=1,
            )
        ],
        {"x": ["N", 2, 4, 4]},
    ),
    Case("Softmax", [node("Softmax", ["x"], ["y"])], {"x": ["N", 4]}),
    Case("Softmax-axis", [node("Softmax", ["x"], ["y"], axis=1)], {"x": ["N", 3, 2]}),
    Case("LogSoftmax", [node("LogSoftmax", ["x"], ["y"], axis=0)], {"x": ["N", 4]}),
    Case(
        "BatchNormalization",
        [node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
        {"x": ["N", 3, 2, 2]},
        {
            "s": rng.standard_normal(3),
            "b": rng.standard_normal(3),
            "m": rng.standard_normal(3),
            "v": rng.uniform(0.5, 2, 3),
        },
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_rule_matches_central_differences(case: Case) -> None:
    exact, served, numeric = vjp_in_both_precisions(case)
    assert relative_error(exact, numeric) <= FD_TOLERANCE
    assert relative_error(served, exact) <= SERVED_TOLERANCE


def test_every_rule_has_a_case() -> None:
    covered = set()
    for case in CASES:
        covered.update(n.op_type for n in case.model().graph.node)
    assert set(GRADIENT_RULES) - ZERO_GRADIENT_OPS - covered == set()


@pytest.mark.parametrize(
    ("opset", "nodes", "constants"),
    [
        (11, [node("ReduceSum", ["x"], ["r"], axes=[1]), node("Softmax", ["r"], ["y"])], {}),
        (
            11,
            [node("Unsqueeze", ["x"], ["u"], axes=[0]), node("Squeeze", ["u"], ["y"], axes=[0])],
            {},
        ),
        (
            9,
            [node("Upsample", ["x", "s"], ["u"]), node("Tanh", ["x"], ["y"])],
            {"s": np.ones(3, np.float32)},
        ),
    ],
    ids=["reduce-softmax", "squeeze", "old-op-off-path"],
)
def test_older_opsets_are_converted(opset: int, nodes: list, constants: dict) -> None:
    case = Case(f"opset{opset}", nodes, {"x": ["N", 3, 2]}, constants, opset=opset)
    exact, _, numeric = vjp_in_both_precisions(case)
    assert relative_error(exact, numeric) <= FD_TOLERANCE


@pytest.mark.parametrize(
    ("nodes", "named"),
    [
        ([node("TopK", ["x", "k"], ["y", "i"], name="k")], "TopK (node 'k')"),
        (
            [
                node("ArgMax", ["x"], ["a"], name="am"),
                node("Cast", ["a"], ["y"], to=TensorProto.DOUBLE),
            ],
            "ArgMax (node 'am')",
        ),
        (
            [
                node("Gelu", ["x"], ["g"], name="g1", domain="com.example"),
                node("Tanh", ["g"], ["y"]),
            ],
            "com.example.Gelu (node 'g1')",
        ),
    ],
    ids=["TopK", "ArgMax", "custom-domain"],
)
def test_an_op_without_a_rule_on_the_path_is_named(nodes: list, named: str) -> None:
    case = Case("unsupported", nodes, {"x": ["N", 3]}, {"k": np.array([2])})
    model = case.model()
    if any(n.domain for n in nodes):
        model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(GradientUnavailable) as raised:
        build_vjp(model)
    message = raised.value.message
    assert message.startswith("model graph uses ONNX ops without a gradient rule: ")
    assert named in message and "supported: Abs, Acos, Add," in message
    assert raised.value.status == 422


REFUSALS = [
    (
        Case("dropout", [node("Dropout", ["x", "", "t"], ["y"], name="d")],
             {"x": ["N", 3], "t": ([], TensorProto.BOOL)}),
        r"Dropout \(node 'd'\): gradient at inference only",
    ),
    (
        Case("conv", [node("Conv", ["x", "w"], ["y"], name="c", strides=[2, 2])],
             {"x": ["N", 1, "H", "W"]}, {"w": np.ones((1, 1, 3, 3))}),
        r"Conv \(node 'c'\): strides .* need static spatial sizes; got \['H', 'W'\]",
    ),
    (
        Case("group", [node("Conv", ["x", "w"], ["y"], name="g", group=2)],
             {"x": ["N", 2, 4, 4], "w": [2, 1, 3, 3]}),
        r"Conv \(node 'g'\): the weight gradient of a grouped Conv is not supported",
    ),
    (
        Case("axes", [node("ReduceSum", ["x", "a"], ["y"], name="r")],
             {"x": ["N", 3], "a": ([1], TensorProto.INT64)}),
        r"ReduceSum \(node 'r'\): axes are computed at run time",
    ),
    (
        Case("ceil", [node("AveragePool", ["x"], ["y"], name="p", kernel_shape=[2], ceil_mode=1)],
             {"x": ["N", 1, 5]}),
        r"AveragePool \(node 'p'\): gradient supports ceil_mode=0 and no dilation only",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("case", "message"), REFUSALS, ids=[case.id for case, _ in REFUSALS])
def test_unsupported_attributes_are_refused_by_node(case: Case, message: str) -> None:
    with pytest.raises(GradientUnavailable, match=message):
        build_vjp(case.model())


def test_ops_without_rules_off_the_path_are_fine() -> None:
    """ArgMax feeds a second, integer output; TopK reads only a constant."""
    nodes = [
        node("TopK", ["w", "k"], ["top", "idx"]),
        node("Mul", ["x", "top"], ["m"]),
        node("Tanh", ["m"], ["y"]),
        node("ArgMax", ["x"], ["label"], axis=1),
    ]
    case = Case(
        "off-path", nodes, {"x": ["N", 2]}, {"w": np.array([3.0, 1.0, 2.0]), "k": np.array([2])}
    )
    model = case.model()
    model.graph.output.append(helper.make_tensor_value_info("label", TensorProto.INT64, None))
    vjp = build_vjp(model)
    assert [v.name for v in vjp.graph.input] == ["x", "y_cotangent"]
    assert [v.name for v in vjp.graph.output] == ["x_grad"]
    feeds = case.feeds()
    (grad,) = run_onnxruntime(vjp, {"x": feeds["x"], "y_cotangent": np.ones((2, 2))})
    expected = np.array([3.0, 2.0]) * (1 - np.tanh(feeds["x"] * [3.0, 2.0]) ** 2)
    np.testing.assert_allclose(grad, expected, rtol=1e-10)


def test_signature_types_shapes_and_unreached_inputs() -> None:
    """Non-float inputs get no gradient; an input no output reads gets zeros of its shape."""
    nodes = [node("Cast", ["n"], ["f"], to=TensorProto.DOUBLE), node("Mul", ["x", "f"], ["y"])]
    inputs = {"x": ["batch", 3], "n": (["batch", 3], TensorProto.INT32), "unused": ["batch", 2]}
    vjp = build_vjp(Case("signature", nodes, inputs).model())
    onnx.checker.check_model(vjp, full_check=True)
    declared = {v.name: v.type for v in vjp.graph.input}
    assert list(declared) == ["x", "n", "unused", "y_cotangent"]
    assert declared["n"].tensor_type.elem_type == TensorProto.INT32
    assert [v.name for v in vjp.graph.output] == ["x_grad", "unused_grad"]
    x_grad = vjp.graph.output[0].type.tensor_type
    assert x_grad.elem_type == TensorProto.DOUBLE
    assert [d.dim_param or d.dim_value for d in x_grad.shape.dim] == ["batch", 3]
    feeds = {"x": np.ones((4, 3)), "n": np.full((4, 3), 2, np.int32), "unused": np.ones((4, 2))}
    dy = np.ones((4, 3))
    x_grad, unused_grad = run_onnxruntime(vjp, {**feeds, "y_cotangent": dy})
    assert np.array_equal(x_grad, 2 * dy) and np.array_equal(unused_grad, np.zeros((4, 2)))


def test_initializers_listed_as_inputs_are_constants() -> None:
    model = Case("init-inputs", [node("MatMul", ["x", "w"], ["y"])], {"x": ["N", 3]}).model()
    model.graph.initializer.append(numpy_helper.from_array(np.ones((3, 2)), "w"))
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.DOUBLE, [3, 2]))
    vjp = build_vjp(model)
    assert [v.name for v in vjp.graph.output] == ["x_grad"]
    (grad,) = run_onnxruntime(vjp, {"x": np.ones((2, 3)), "y_cotangent": np.ones((2, 2))})
    assert np.array_equal(grad, np.full((2, 3), 2.0))


def test_local_functions_are_inlined() -> None:
    swish = helper.make_function(
        "local",
        "Swish",
        ["t"],
        ["s"],
        [node("Sigmoid", ["t"], ["g"]), node("Mul", ["t", "g"], ["s"])],
        [helper.make_opsetid("", 17)],
    )
    case = Case("function", [node("Swish", ["x"], ["y"], domain="local")], {"x": ["N", 3]})
    model = case.model()
    model.functions.append(swish)
    model.opset_import.append(helper.make_opsetid("local", 1))
    vjp = build_vjp(model)
    assert not vjp.functions
    feeds = case.feeds()
    (grad,) = run_exact(vjp, {**feeds, "y_cotangent": np.ones((2, 3))})
    x = feeds["x"]
    sigmoid = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(grad, sigmoid * (1 + x * (1 - sigmoid)), rtol=1e-12)


def test_clashing_names_are_refused() -> None:
    nodes = [node("Tanh", ["x"], ["x_grad"]), node("Neg", ["x_grad"], ["y"])]
    with pytest.raises(GradientUnavailable, match=r"\['x_grad'\] are taken"):
        build_vjp(Case("clash", nodes, {"x": ["N", 3]}).model())


def test_to_float64_converts_every_float32_place() -> None:
    nodes = [
        node("Constant", [], ["c"], value_float=2.0),
        node("Constant", [], ["t"], value=numpy_helper.from_array(np.ones(3, np.float32))),
        node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT),
        node("Mul", ["x32", "c"], ["m"]),
        node("Add", ["m", "t"], ["a"]),
        node("Add", ["a", "w"], ["y"]),
    ]
    model = Case("precision", nodes, {"x": ["N", 3]}, {"w": np.ones(3)}).model(np.float32)
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_value = 3
    wide = to_float64(model)
    onnx.checker.check_model(wide)
    assert wide.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    assert wide.graph.initializer[0].data_type == TensorProto.DOUBLE
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # a copy
    x = np.random.default_rng(0).random((2, 3))
    (y,) = run_exact(wide, {"x": x})
    assert y.dtype == np.float64 and np.allclose(y, 2 * x + 2, rtol=1e-15)


def mnist_images(count: int) -> np.ndarray:
    """Held-out MNIST images 8000.. in [0, 1] plus tie-breaking noise (seeded random without
    the data)."""
    rng = np.random.default_rng(0)
    if not MNIST_DIR.exists():
        return rng.random((count, 28, 28), dtype=np.float32)
    from mlbridge.training.data import load_mnist_idx

    images, _ = load_mnist_idx(MNIST_DIR)
    noise = rng.uniform(0, TIE_BREAKING_NOISE, (count, 28, 28))
    return (images[8000 : 8000 + count] / 255.0 + noise).astype(np.float32)


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if "cnn" in p.name else p for p in DEMO_MODELS]
    + TEST_MODELS,  # the CNN takes seconds: CI runs it, the fast part does not
    ids=lambda p: p.name,
)
@pytest.mark.parametrize("batch", [1, 7, 10])
def test_model_vjp_in_both_precisions_matches_differences(path: Path, batch: int) -> None:
    model = onnx.load(path)
    rng = np.random.default_rng(batch)
    feeds = {
        v.name: mnist_images(batch) if v.name == "input" else rng.random((batch, 3), np.float32)
        for v in model.graph.input
    }
    cotangents = cotangents_for(model, feeds)
    vjp32, vjp64 = build_vjp(model), build_vjp(to_float64(model))
    onnx.checker.check_model(vjp32, full_check=True)
    assert [v.name for v in vjp32.graph.output] == [v.name + "_grad" for v in model.graph.input]
    served = gradients(vjp32, run_onnxruntime(vjp32, vjp_feeds(feeds, cotangents, np.float32)))
    exact = gradients(vjp64, run_exact(vjp64, vjp_feeds(feeds, cotangents, np.float64)))
    assert all(served[name].shape == feeds[name].shape for name in feeds)
    assert relative_error(served, exact) <= MODEL_TOLERANCE
    assert fd_relative_error(model, feeds, cotangents, exact) <= FD_TOLERANCE
    assert fd_relative_error(model, feeds, cotangents, served) <= MODEL_TOLERANCE


def test_fd_check_catches_a_wrong_gradient() -> None:
    model = onnx.load(DEMO_MODELS[0])
    feeds = {"input": mnist_images(2)}
    cotangents = cotangents_for(model, feeds)
    vjp = build_vjp(model)
    (grad,) = run_onnxruntime(vjp, vjp_feeds(feeds, cotangents, np.float32))
    assert fd_relative_error(model, feeds, cotangents, {"input": grad}) <= MODEL_TOLERANCE
    assert fd_relative_error(model, feeds, cotangents, {"input": 1.01 * grad}) > 5e-3
    scrambled = grad.reshape(-1)[::-1].reshape(grad.shape)
    assert fd_relative_error(model, feeds, cotangents, {"input": scrambled}) > 0.1
