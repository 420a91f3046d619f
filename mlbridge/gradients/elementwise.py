"""Gradient rules for elementwise ops: unary math, broadcasting arithmetic, selection, casts.

A unary rule is written as its derivative, ``derivative(g, x, y, dy) -> dx``; binary rules sum
each operand's gradient back over the axes it was broadcast along (``Emitter.unbroadcast``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from ..errors import GradientUnavailable
from .graph import FLOAT_TYPES, Emitter, Step

Derivative = Callable[[Emitter, str, str, str], str]
TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


def unary(derivative: Derivative) -> Callable[[Emitter, Step], dict[int, str]]:
    """The rule for an elementwise y = f(x) whose derivative is ``derivative``."""

    def rule(g: Emitter, step: Step) -> dict[int, str]:
        return {0: derivative(g, step.node.input[0], step.node.output[0], step.cotangent)}

    rule.__doc__ = derivative.__doc__
    return rule


def _square(g: Emitter, name: str) -> str:
    return g.op("Mul", name, name)


def passthrough(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy."""
    return dy


def dropout(g: Emitter, step: Step) -> dict[int, str]:
    """dx = dy at inference; refused where training_mode may be true (the mask is random)."""
    mode = step.input(2)
    value = g.constant(mode) if mode else None
    if mode and (value is None or value.any()):
        raise GradientUnavailable(
            f"{step.describe()}: gradient at inference only; training_mode must be absent "
            "or a constant false"
        )
    return {0: step.cotangent}


def neg(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = -dy."""
    return g.op("Neg", dy)


def tanh(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy (1 - y²)."""
    return g.op("Mul", dy, g.op("Sub", g.const(1, y), _square(g, y)))


def sigmoid(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy y (1 - y)."""
    return g.op("Mul", dy, g.op("Mul", y, g.op("Sub", g.const(1, y), y)))


def relu(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy where x > 0, else 0."""
    return g.op("Where", g.op("Greater", x, g.const(0, x)), dy, g.const(0, y))


def exp(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy y."""
    return g.op("Mul", dy, y)


def log(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy / x."""
    return g.op("Div", dy, x)


def sqrt(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy / (2 y)."""
    return g.op("Div", g.op("Mul", dy, g.const(0.5, y)), y)


def reciprocal(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = -dy y²."""
    return g.op("Neg", g.op("Mul", dy, _square(g, y)))


def absolute(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy sign(x)."""
    return g.op("Mul", dy, g.op("Sign", x))


def softplus(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy sigmoid(x)."""
    return g.op("Mul", dy, g.op("Sigmoid", x))


def sin(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy cos(x)."""
    return g.op("Mul", dy, g.op("Cos", x))


def cos(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = -dy sin(x)."""
    return g.op("Neg", g.op("Mul", dy, g.op("Sin", x)))


def tan(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy (1 + y²)."""
    return g.op("Mul", dy, g.op("Add", g.const(1, y), _square(g, y)))


def asin(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy / sqrt(1 - x²)."""
    return g.op("Div", dy, g.op("Sqrt", g.op("Sub", g.const(1, x), _square(g, x))))


def acos(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = -dy / sqrt(1 - x²)."""
    return g.op("Neg", asin(g, x, y, dy))


def atan(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy / (1 + x²)."""
    return g.op("Div", dy, g.op("Add", g.const(1, x), _square(g, x)))


def sinh(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy cosh(x)."""
    return g.op("Mul", dy, g.op("Cosh", x))


def cosh(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy sinh(x)."""
    return g.op("Mul", dy, g.op("Sinh", x))


def asinh(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy / sqrt(x² + 1)."""
    return g.op("Div", dy, g.op("Sqrt", g.op("Add", _square(g, x), g.const(1, x))))


def erf(g: Emitter, x: str, y: str, dy: str) -> str:
    """dx = dy 2/sqrt(pi) exp(-x²)."""
    bell = g.op("Exp", g.op("Neg", _square(g, x)))
    return g.op("Mul", dy, g.op("Mul", bell, g.const(TWO_OVER_SQRT_PI, x)))


def leaky_relu(g: Emitter, step: Step) -> dict[int, str]:
    """dx = dy where x > 0, else alpha dy."""
    x, y, dy = step.node.input[0], step.node.output[0], step.cotangent
    leaked = g.op("Mul", dy, g.const(step.attr("alpha", 0.01), y))
    return {0: g.op("Where", g.op("Greater", x, g.const(0, x)), dy, leaked)}


def cast(g: Emitter, step: Step) -> dict[int, str]:
    """dx = dy cast back to x's type; nothing flows through a cast to a non-float type."""
    x, y = step.node.input[0], step.node.output[0]
    if g.dtype(y) not in FLOAT_TYPES:
        return {}
    return {0: g.op("Cast", step.cotangent, to=g.dtype(x))}


def _operand(g: Emitter, step: Step, index: int, grad: str) -> str:
    return g.unbroadcast(grad, step.node.input[index], step.node.output[0])


def _wanted(step: Step, makers: dict[int, Callable[[], str]]) -> dict[int, str]:
    """Run only the makers of gradients some input wants (emitting nothing for the rest)."""
    return {i: make() for i, make in makers.items() if i < len(step.wants) and step.wants[i]}


def add(g: Emitter, step: Step) -> dict[int, str]:
    """da = db = dy, each summed over its broadcast axes."""
    dy = step.cotangent
    return _wanted(step, {i: partial(_operand, g, step, i, dy) for i in (0, 1)})


def sub(g: Emitter, step: Step) -> dict[int, str]:
    """da = dy, db = -dy."""
    dy = step.cotangent
    return _wanted(
        step,
        {
            0: lambda: _operand(g, step, 0, dy),
            1: lambda: _operand(g, step, 1, g.op("Neg", dy)),
        },
    )


def mul(g: Emitter, step: Step) -> dict[int, str]:
    """da = dy b, db = dy a."""
    (a, b), dy = step.node.input, step.cotangent
    return _wanted(
        step,
        {
            0: lambda: _operand(g, step, 0, g.op("Mul", dy, b)),
            1: lambda: _operand(g, step, 1, g.op("Mul", dy, a)),
        },
    )


def div(g: Emitter, step: Step) -> dict[int, str]:
    """da = dy / b, db = -dy y / b."""
    (_, b), y, dy = step.node.input, step.node.output[0], step.cotangent
    return _wanted(
        step,
        {
            0: lambda: _operand(g, step, 0, g.op("Div", dy, b)),
            1: lambda: _operand(g, step, 1, g.op("Neg", g.op("Div", g.op("Mul", dy, y), b))),
        },
    )


def power(g: Emitter, step: Step) -> dict[int, str]:
    """dx = dy p x^(p-1); dp = dy y log(x) (for a float exponent on the path)."""
    (x, p), y, dy = step.node.input, step.node.output[0], step.cotangent
    exponent = p if g.dtype(p) == g.dtype(x) else g.op("Cast", p, to=g.dtype(x))

    def base() -> str:
        lowered = g.op("Pow", x, g.op("Sub", exponent, g.const(1, x)))
        return _operand(g, step, 0, g.op("Mul", dy, g.op("Mul", exponent, lowered)))

    def power_() -> str:
        return _operand(g, step, 1, g.op("Mul", g.op("Mul", dy, y), g.op("Log", x)))

    return _wanted(step, {0: base, 1: power_})


def where(g: Emitter, step: Step) -> dict[int, str]:
    """Each branch gets dy where it was chosen; the condition gets nothing."""
    condition, y, dy = step.node.input[0], step.node.output[0], step.cotangent
    zero = g.const(0, y)
    return _wanted(
        step,
        {
            1: lambda: _operand(g, step, 1, g.op("Where", condition, dy, zero)),
            2: lambda: _operand(g, step, 2, g.op("Where", condition, zero, dy)),
        },
    )


def _selection(comparison: str) -> Callable[[Emitter, Step], dict[int, str]]:
    """Min/Max: dy goes to the operand chosen, the first one on ties (as TensorFlow does)."""

    def rule(g: Emitter, step: Step) -> dict[int, str]:
        inputs, y, dy = step.node.input, step.node.output[0], step.cotangent
        if len(inputs) == 1:
            return {0: dy}
        if len(inputs) != 2:
            raise GradientUnavailable(
                f"{step.describe()}: gradient rule takes 1 or 2 inputs; got {len(inputs)}"
            )
        first, zero = g.op(comparison, *inputs), g.const(0, y)
        return _wanted(
            step,
            {
                0: lambda: _operand(g, step, 0, g.op("Where", first, dy, zero)),
                1: lambda: _operand(g, step, 1, g.op("Where", first, zero, dy)),
            },
        )

    rule.__doc__ = f"Min/Max: dy to the first operand where {comparison}, else the second."
    return rule


minimum = _selection("LessOrEqual")
maximum = _selection("GreaterOrEqual")


def total(g: Emitter, step: Step) -> dict[int, str]:
    """Sum: every operand gets dy, summed over its broadcast axes."""
    dy = step.cotangent
    return _wanted(
        step, {i: partial(_operand, g, step, i, dy) for i in range(len(step.node.input))}
    )


def mean(g: Emitter, step: Step) -> dict[int, str]:
    """Mean of n: every operand gets dy / n."""
    count = len(step.node.input)
    share = g.op("Div", step.cotangent, g.const(count, step.node.output[0]))
    return _wanted(step, {i: partial(_operand, g, step, i, share) for i in range(count)})


def clip(g: Emitter, step: Step) -> dict[int, str]:
    """dx = dy inside [min, max] (bounds included); a bound gets dy where it clipped."""
    x, low, high = step.input(0), step.input(1), step.input(2)
    zero, dy = g.const(0, step.node.output[0]), step.cotangent
    below = g.op("Less", x, low) if low else ""
    above = g.op("Greater", x, high) if high else ""
    masks = [mask for mask in (below, above) if mask]
    outside = masks[0] if len(masks) == 1 else g.op("Or", *masks) if masks else ""
    makers = {0: lambda: g.op("Where", outside, zero, dy) if outside else dy}
    if below:
        makers[1] = lambda: _operand(g, step, 1, g.op("Where", below, dy, zero))
    if above:
        makers[2] = lambda: _operand(g, step, 2, g.op("Where", above, dy, zero))
    return _wanted(step, makers)


def no_gradient(g: Emitter, step: Step) -> dict[int, str]:
    """Piecewise constant or shape-only: the gradient is zero wherever it exists."""
    return {}
