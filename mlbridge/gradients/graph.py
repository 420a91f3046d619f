"""The emitter that gradient rules write backward nodes through, and the static facts they read.

Rules see the forward graph only through :class:`Emitter`: the element type and static shape
of a forward tensor (from ONNX shape inference), the value of a constant, and ``op`` to append
a node. Every name it makes is fresh, so backward nodes never shadow forward tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import GradientUnavailable

FLOAT_TYPES = frozenset(
    {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
)
#: A static dimension: a size, a symbol such as "batch", or None when nothing is known.
Dim = int | str | None


@dataclass
class Step:
    """One node on the differentiable path: its output cotangents and the gradients wanted."""

    node: onnx.NodeProto
    dy: list[str | None]
    wants: list[bool]

    def attr(self, name: str, default: Any = None) -> Any:
        """The node's attribute ``name`` as a Python value, or ``default``."""
        for attribute in self.node.attribute:
            if attribute.name == name:
                return helper.get_attribute_value(attribute)
        return default

    def input(self, index: int) -> str:
        """The name of input ``index``, or "" where the optional input is absent."""
        return self.node.input[index] if index < len(self.node.input) else ""

    @property
    def cotangent(self) -> str:
        """The cotangent of the first output (the one every rule but Split's differentiates)."""
        if not self.dy or self.dy[0] is None:
            raise GradientUnavailable(
                f"{self.describe()}: a gradient flows only from its first output here"
            )
        return self.dy[0]

    def describe(self) -> str:
        """'OpType (node 'name')' for messages."""
        return f"{self.node.op_type} (node {self.node.name!r})"


@dataclass
class Emitter:
    """Appends backward nodes and constants; answers dtype, shape and constant questions."""

    types: dict[str, onnx.TypeProto]
    constants: dict[str, np.ndarray]
    opset: int
    taken: set[str]
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    _made: dict[tuple, str] = field(default_factory=dict)  # constant key -> its name

    def fresh(self, hint: str) -> str:
        """A name no tensor or node of the graph uses yet."""
        count = len(self.taken)
        while f"vjp/{hint}_{count}" in self.taken:
            count += 1
        name = f"vjp/{hint}_{count}"
        self.taken.add(name)
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, out: str = "", **attrs: Any) -> Any:
        """Append ``op_type(inputs)``; return its output name (a list when ``outputs`` > 1)."""
        node_name = self.fresh(op_type)
        names = [out] if out else [f"{node_name}:{i}" for i in range(outputs)]
        self.taken.update(names)
        self.nodes.append(helper.make_node(op_type, list(inputs), names, node_name, **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value: Any, like: str) -> str:
        """A constant in the element type of the forward tensor ``like``."""
        dtype = helper.tensor_dtype_to_np_dtype(self.dtype(like))
        return self._initializer(np.asarray(value, dtype=dtype), "const")

    def ints(self, values: Sequence[int]) -> str:
        """A 1-D int64 constant (axes, shapes, sizes)."""
        return self._initializer(np.asarray(values, dtype=np.int64), "ints")

    def dtype(self, name: str) -> int:
        """The element type of a forward tensor."""
        kind = self.types.get(name)
        if kind is None or not kind.tensor_type.elem_type:
            raise GradientUnavailable(f"no element type is known for tensor {name!r}")
        return kind.tensor_type.elem_type

    def shape(self, name: str) -> list[Dim] | None:
        """The static shape of a forward tensor, or None where even its rank is unknown."""
        kind = self.types.get(name)
        if kind is None or not kind.tensor_type.HasField("shape"):
            return None
        return [_dim(d) for d in kind.tensor_type.shape.dim]

    def rank(self, name: str) -> int:
        """The rank of a forward tensor; GradientUnavailable where shape inference found none."""
        shape = self.shape(name)
        if shape is None:
            raise GradientUnavailable(f"the rank of tensor {name!r} is unknown; rules need it")
        return len(shape)

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output, or None for computed tensors."""
        return self.constants.get(name)

    def zeros_like(self, name: str) -> str:
        """Zeros of the forward tensor's shape and type, computed at run time."""
        zero = numpy_helper.from_array(
            np.zeros(1, helper.tensor_dtype_to_np_dtype(self.dtype(name)))
        )
        return self.op("ConstantOfShape", self.op("Shape", name), value=zero)

    def reshape_like(self, grad: str, like: str) -> str:
        """``grad`` reshaped to the run-time shape of ``like`` (keeps dynamic dims dynamic)."""
        return self.op("Reshape", grad, self.op("Shape", like))

    def unbroadcast(self, grad: str, target: str, source: str) -> str:
        """Sum ``grad`` (shaped like ``source``) down to the shape of the operand ``target``."""
        return self.sum_to(grad, self.shape(source), target, self.shape(target))

    def sum_to(
        self, grad: str, grad_shape: list[Dim] | None, target: str, target_shape: list[Dim] | None
    ) -> str:
        """Sum ``grad`` over the axes along which a tensor of ``target_shape`` was broadcast."""
        if grad_shape is None or target_shape is None:
            raise GradientUnavailable(f"broadcasting into {target!r} needs static ranks")
        lead = len(grad_shape) - len(target_shape)
        pairs = list(zip(target_shape, grad_shape[lead:]))
        if lead:
            grad = self.op("ReduceSum", grad, self.ints(range(lead)), keepdims=0)
        if any(_undecided(t, s) for t, s in pairs):
            # A dim only known at run time may be 1: find the broadcast axes then.
            ones = self.op("Equal", self.op("Shape", target), self.ints([1]))
            axes = self.op("Reshape", self.op("NonZero", ones), self.ints([-1]))
            return self.op("ReduceSum", grad, axes, keepdims=1, noop_with_empty_axes=1)
        axes = [i for i, (t, s) in enumerate(pairs) if t == 1 and s != 1]
        return self.op("ReduceSum", grad, self.ints(axes), keepdims=1) if axes else grad

    def scatter_flat(self, values: str, positions: str, like: str, add: bool = False) -> str:
        """Zeros shaped like ``like`` with ``values`` put at the flat ``positions`` (summed)."""
        flat = self.op("Reshape", self.zeros_like(like), self.ints([-1]))
        extra: dict[str, Any] = {"reduction": "add"} if add else {}
        scattered = self.op(
            "ScatterElements",
            flat,
            self.op("Reshape", positions, self.ints([-1])),
            self.op("Reshape", values, self.ints([-1])),
            axis=0,
            **extra,
        )
        return self.reshape_like(scattered, like)

    def positions(self, like: str) -> str:
        """The flat index of every element, shaped like ``like`` (to trace where slices read)."""
        count = self.op("Size", like)
        flat = self.op("Range", self._scalar(0), count, self._scalar(1))
        return self.reshape_like(flat, like)

    def _scalar(self, value: int) -> str:
        return self._initializer(np.asarray(value, dtype=np.int64), "scalar")

    def _initializer(self, array: np.ndarray, hint: str) -> str:
        """A constant initializer, made once per value (rules ask for 0 and 1 again and again)."""
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._made:
            self._made[key] = self.fresh(hint)
            self.initializers.append(numpy_helper.from_array(array, self._made[key]))
        return self._made[key]


def _dim(dim: onnx.TensorShapeProto.Dimension) -> Dim:
    if dim.HasField("dim_value"):
        return dim.dim_value
    return dim.dim_param or None


def _undecided(target: Dim, source: Dim) -> bool:
    """True when static facts cannot tell whether this axis was broadcast."""
    if isinstance(target, int) or source == 1:
        return False
    return target is None or target != source
