"""The gradient rule of every ONNX op that reverse mode can differentiate: ``GRADIENT_RULES``.

A rule is called once per node on the differentiable path, after every consumer of the
node's outputs, as ``rule(emitter, step)``: ``step.dy`` holds one cotangent name per output
(None where none flows; ``step.cotangent`` is the first output's), ``step.wants`` says which
inputs need a gradient. It appends backward nodes through the emitter and returns
``{input index: gradient name}``; each gradient has the input's shape and type (broadcast
operands are summed back).

Supported (default domain, opset 13 and later; older models are converted to 13 first):

- elementwise, with broadcasting: Add, Sub, Mul, Div, Pow (either operand), Sum, Mean,
  Min and Max (two operands; the first gets dy on ties, as TensorFlow's), Where (both
  branches; never the condition), Clip
- unary: Neg, Abs, Exp, Log, Sqrt, Reciprocal, Tanh, Sigmoid, Relu, LeakyRelu, Softplus,
  Erf, Sin, Cos, Tan, Asin, Acos, Atan, Sinh, Cosh, Asinh
- Identity; Dropout (inference: identity); Cast between float types
- layout: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Expand, Concat, Split,
  Slice, Gather (the data input; needs opset 16 for its scatter-add)
- reductions (constant axes): ReduceSum, ReduceMean, ReduceSumSquare, ReduceLogSumExp,
  ReduceProd (exact where elements are zero), GlobalAveragePool
- layers: MatMul, Gemm (transA, transB, alpha, beta), Conv (any rank, strides, pads,
  auto_pad, dilations; the weight gradient for group 1 only), MaxPool (overlapping
  windows need opset 16), AveragePool (ceil_mode 0, no dilation), Softmax, LogSoftmax,
  BatchNormalization (inference; the data input only)
- zero gradient, so nothing flows back through them: comparisons and logic (Less, Greater,
  Equal, LessOrEqual, GreaterOrEqual, Not, And, Or, Xor, IsNaN, IsInf), Sign, Floor, Ceil,
  Round, Shape, Size, ConstantOfShape

Left out on purpose: ops that select by index (ArgMax, ArgMin, TopK, NonZero), whose
gradient is either zero everywhere or needs their indices; a served output that passes
through them is almost always a label, not something to differentiate.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from . import elementwise as ew
from . import nn, reductions, structural
from .graph import Emitter, Step

Rule = Callable[[Emitter, Step], dict[int, str]]

#: The opset every rule can emit its ops in (axes as inputs for ReduceSum, Unsqueeze, Split).
MIN_OPSET = 13
#: The opset of ScatterElements' reduction="add".
SCATTER_ADD_OPSET = 16

ZERO_GRADIENT_OPS = frozenset(
    {
        "Less",
        "Greater",
        "Equal",
        "LessOrEqual",
        "GreaterOrEqual",
        "Not",
        "And",
        "Or",
        "Xor",
        "IsNaN",
        "IsInf",
        "Sign",
        "Floor",
        "Ceil",
        "Round",
        "Shape",
        "Size",
        "ConstantOfShape",
    }
)

GRADIENT_RULES: dict[str, Rule] = {
    # elementwise arithmetic and selection
    "Add": ew.add,
    "Sub": ew.sub,
    "Mul": ew.mul,
    "Div": ew.div,
    "Pow": ew.power,
    "Sum": ew.total,
    "Mean": ew.mean,
    "Min": ew.minimum,
    "Max": ew.maximum,
    "Where": ew.where,
    "Clip": ew.clip,
    # unary math
    "Neg": ew.unary(ew.neg),
    "Abs": ew.unary(ew.absolute),
    "Exp": ew.unary(ew.exp),
    "Log": ew.unary(ew.log),
    "Sqrt": ew.unary(ew.sqrt),
    "Reciprocal": ew.unary(ew.reciprocal),
    "Tanh": ew.unary(ew.tanh),
    "Sigmoid": ew.unary(ew.sigmoid),
    "Relu": ew.unary(ew.relu),
    "LeakyRelu": ew.leaky_relu,
    "Softplus": ew.unary(ew.softplus),
    "Erf": ew.unary(ew.erf),
    "Sin": ew.unary(ew.sin),
    "Cos": ew.unary(ew.cos),
    "Tan": ew.unary(ew.tan),
    "Asin": ew.unary(ew.asin),
    "Acos": ew.unary(ew.acos),
    "Atan": ew.unary(ew.atan),
    "Sinh": ew.unary(ew.sinh),
    "Cosh": ew.unary(ew.cosh),
    "Asinh": ew.unary(ew.asinh),
    "Identity": ew.unary(ew.passthrough),
    "Dropout": ew.dropout,
    "Cast": ew.cast,
    # layout
    "Reshape": structural.reshaped,
    "Flatten": structural.reshaped,
    "Squeeze": structural.reshaped,
    "Unsqueeze": structural.reshaped,
    "Transpose": structural.transpose,
    "Expand": structural.expand,
    "Concat": structural.concat,
    "Split": structural.split,
    "Slice": structural.slice_,
    "Gather": structural.gather,
    # reductions
    "ReduceSum": reductions.reduce_sum,
    "ReduceMean": reductions.reduce_mean,
    "ReduceSumSquare": reductions.reduce_sum_square,
    "ReduceLogSumExp": reductions.reduce_log_sum_exp,
    "ReduceProd": reductions.reduce_prod,
    "GlobalAveragePool": reductions.global_average_pool,
    # layers
    "MatMul": nn.matmul,
    "Gemm": nn.gemm,
    "Conv": nn.conv,
    "MaxPool": nn.max_pool,
    "AveragePool": nn.average_pool,
    "Softmax": nn.softmax,
    "LogSoftmax": nn.log_softmax,
    "BatchNormalization": nn.batch_normalization,
    # zero gradient
    **dict.fromkeys(sorted(ZERO_GRADIENT_OPS), ew.no_gradient),
}


def rule_for(node: onnx.NodeProto) -> Rule | None:
    """The rule for ``node``, or None (ops of other domains have none)."""
    if node.domain not in ("", "ai.onnx"):
        return None
    return GRADIENT_RULES.get(node.op_type)


def opset_needed(node: onnx.NodeProto) -> int:
    """The lowest default-domain opset in which ``node``'s rule can emit its backward ops."""
    step = Step(node, [], [])
    if node.op_type == "Gather" or (node.op_type == "MaxPool" and nn.overlapping(step)):
        return SCATTER_ADD_OPSET
    return MIN_OPSET
