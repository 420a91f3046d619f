"""Gradient rules for reductions: the cotangent is given back the reduced axes and expanded.

The axes must be constants (an attribute, or an initializer input); a reduction over axes
computed at run time is refused by name.
"""

from __future__ import annotations

from ..errors import GradientUnavailable
from .graph import Emitter, Step

#: From this opset on, every Reduce* op takes its axes as an input (ReduceSum from 13).
AXES_INPUT_OPSET = 18


def reduce_sum(g: Emitter, step: Step) -> dict[int, str]:
    """dx = dy broadcast back over the reduced axes."""
    return {0: _spread(g, step, step.cotangent)}


def reduce_mean(g: Emitter, step: Step) -> dict[int, str]:
    """dx = dy broadcast back over the reduced axes, divided by the count averaged."""
    return {0: _averaged(g, step, _spread(g, step, step.cotangent))}


def reduce_sum_square(g: Emitter, step: Step) -> dict[int, str]:
    """dx = 2 x dy (dy broadcast back)."""
    x = step.node.input[0]
    twice = g.op("Mul", x, g.const(2, x))
    return {0: g.op("Mul", twice, _spread(g, step, step.cotangent))}


def reduce_log_sum_exp(g: Emitter, step: Step) -> dict[int, str]:
    """dx = dy exp(x - y), a softmax over the reduced axes."""
    x, y = step.node.input[0], step.node.output[0]
    weights = g.op("Exp", g.op("Sub", x, _spread(g, step, y)))
    return {0: g.op("Mul", weights, _spread(g, step, step.cotangent))}


def reduce_prod(g: Emitter, step: Step) -> dict[int, str]:
    """dxᵢ = dy ∏_{j≠i} xⱼ, exact where elements are zero (not y / xᵢ)."""
    x, dy = step.node.input[0], step.cotangent
    axes = _reduce_axes(g, step)
    if axes is None:
        return {0: dy}
    zero = g.op("Equal", x, g.const(0, x))
    safe = g.op("Where", zero, g.const(1, x), x)
    others = g.op("Div", _reduced(g, "ReduceProd", safe, axes), safe)
    zeros = _reduced(g, "ReduceSum", g.op("Cast", zero, to=g.dtype(x)), axes)
    # No zero in the group: the product of the others; one zero: only it gets that product.
    none = g.op("Equal", zeros, g.const(0, x))
    lone = g.op("And", zero, g.op("Equal", zeros, g.const(1, x)))
    product = g.op("Where", lone, _reduced(g, "ReduceProd", safe, axes), g.const(0, x))
    return {0: g.op("Mul", g.op("Where", none, others, product), _spread(g, step, dy))}


def global_average_pool(g: Emitter, step: Step) -> dict[int, str]:
    """dx = dy / (spatial size), broadcast over the spatial axes."""
    x = step.node.input[0]
    return {0: _averaged(g, step, g.op("Expand", step.cotangent, g.op("Shape", x)))}


def _averaged(g: Emitter, step: Step, spread: str) -> str:
    x, y = step.node.input[0], step.node.output[0]
    count = g.op("Div", g.op("Size", x), g.op("Size", y))
    return g.op("Div", spread, g.op("Cast", count, to=g.dtype(x)))


def _spread(g: Emitter, step: Step, reduced: str) -> str:
    """A tensor shaped like the output given back the reduced axes and expanded to x's shape."""
    x = step.node.input[0]
    axes = _reduce_axes(g, step)
    if axes is None:
        return reduced
    if axes and not step.attr("keepdims", 1):
        reduced = g.op("Unsqueeze", reduced, g.ints(sorted(a % g.rank(x) for a in axes)))
    return g.op("Expand", reduced, g.op("Shape", x))


def _reduced(g: Emitter, op: str, x: str, axes: list[int]) -> str:
    """``op`` over ``axes`` ([] for all) with kept dims, axes as the opset wants them."""
    if not axes:
        return g.op(op, x, keepdims=1)
    if op == "ReduceSum" or g.opset >= AXES_INPUT_OPSET:
        return g.op(op, x, g.ints(axes), keepdims=1)
    return g.op(op, x, axes=axes, keepdims=1)


def _reduce_axes(g: Emitter, step: Step) -> list[int] | None:
    """The reduced axes ([] for all); None where the op is an identity (noop_with_empty_axes)."""
    axes = step.attr("axes")
    if axes is None and step.input(1):
        value = g.constant(step.input(1))
        if value is None:
            raise GradientUnavailable(
                f"{step.describe()}: axes are computed at run time; the gradient needs constants"
            )
        axes = value.reshape(-1).tolist()
    if not axes and step.attr("noop_with_empty_axes", 0):
        return None
    return list(axes or [])
