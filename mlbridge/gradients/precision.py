"""Float64 copies of float32 models, for finite differences precise enough to check gradients.

Run them in ONNX's reference evaluator (``onnx.reference.ReferenceEvaluator``): onnxruntime's
CPU provider has no float64 kernel for Conv, ConvTranspose, Atan, Asinh, Erf, AveragePool.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.inliner
from onnx import TensorProto, helper, numpy_helper

#: Attributes that name an element type (Cast's target, generators' output type).
TYPE_ATTRIBUTES = ("to", "dtype")


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` that computes in float64 wherever it computed in float32."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    if copy.functions:
        copy = onnx.inliner.inline_local_functions(copy)
    _graph_to_float64(copy.graph)
    return copy


def _graph_to_float64(graph: onnx.GraphProto) -> None:
    for value in (*graph.input, *graph.output, *graph.value_info):
        _retype(value.type)
    for tensor in graph.initializer:
        tensor.CopyFrom(_tensor64(tensor))
    for node in graph.node:
        _node_to_float64(node)


def _retype(kind: onnx.TypeProto) -> None:
    if kind.HasField("tensor_type") and kind.tensor_type.elem_type == TensorProto.FLOAT:
        kind.tensor_type.elem_type = TensorProto.DOUBLE
    elif kind.HasField("sequence_type"):
        _retype(kind.sequence_type.elem_type)
    elif kind.HasField("optional_type"):
        _retype(kind.optional_type.elem_type)


def _tensor64(tensor: onnx.TensorProto) -> onnx.TensorProto:
    if tensor.data_type != TensorProto.FLOAT:
        return tensor
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name)


def _node_to_float64(node: onnx.NodeProto) -> None:
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.TENSOR:
            attribute.t.CopyFrom(_tensor64(attribute.t))
        elif attribute.type == onnx.AttributeProto.TENSORS:
            for tensor in attribute.tensors:
                tensor.CopyFrom(_tensor64(tensor))
        elif attribute.name in TYPE_ATTRIBUTES and attribute.i == TensorProto.FLOAT:
            attribute.i = TensorProto.DOUBLE
        elif attribute.type == onnx.AttributeProto.GRAPH:
            _graph_to_float64(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            for graph in attribute.graphs:
                _graph_to_float64(graph)
    if node.op_type == "Constant" and node.attribute[0].name in ("value_float", "value_floats"):
        # These always make float32; restate them as a float64 tensor.
        value = helper.get_attribute_value(node.attribute[0])
        del node.attribute[:]
        node.attribute.append(
            helper.make_attribute("value", numpy_helper.from_array(np.asarray(value, np.float64)))
        )
