"""Gradient rules for the layers of neural networks: products, convolutions, pools, softmax.

Conv's input gradient is a ConvTranspose of dy with the same weight; its weight gradient is
a Conv of x with dy (batch and channel axes swapped). MaxPool's is dy scattered to the
positions its Indices output names. Spatial sizes must be static where a stride leaves
a remainder (the transposed convolution needs it as output_padding); the batch never does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import GradientUnavailable
from .graph import Dim, Emitter, Step


def gemm(g: Emitter, step: Step) -> dict[int, str]:
    """Y = alpha A' B' + beta C: dA' = alpha dy B'ᵀ, dB' = alpha A'ᵀ dy, dC = beta dy."""
    a, b, c = step.input(0), step.input(1), step.input(2)
    ta, tb = step.attr("transA", 0), step.attr("transB", 0)
    alpha, dy = step.attr("alpha", 1.0), step.cotangent
    grads = {}
    if step.wants[0]:
        grads[0] = (
            g.op("Gemm", b, dy, alpha=alpha, transA=tb, transB=1)
            if ta
            else g.op("Gemm", dy, b, alpha=alpha, transB=1 - tb)
        )
    if step.wants[1]:
        grads[1] = (
            g.op("Gemm", dy, a, alpha=alpha, transA=1, transB=ta)
            if tb
            else g.op("Gemm", a, dy, alpha=alpha, transA=1 - ta)
        )
    if c and step.wants[2]:
        scaled = g.op("Mul", dy, g.const(step.attr("beta", 1.0), c))
        grads[2] = g.unbroadcast(scaled, c, step.node.output[0])
    return grads


def matmul(g: Emitter, step: Step) -> dict[int, str]:
    """dA = dy Bᵀ, dB = Aᵀ dy, with NumPy's rules for 1-D operands and batch broadcasting."""
    (a, b), y = step.node.input, step.node.output[0]
    sa, sb, sy = g.shape(a), g.shape(b), g.shape(y)
    if sa is None or sb is None or sy is None:
        raise GradientUnavailable(f"{step.describe()}: the gradient needs static ranks")
    # Promote 1-D operands to matrices ([K] -> [1,K] or [K,1]) and dy to match.
    a2 = a if len(sa) > 1 else g.op("Unsqueeze", a, g.ints([0]))
    b2 = b if len(sb) > 1 else g.op("Unsqueeze", b, g.ints([1]))
    sa2 = sa if len(sa) > 1 else [1, *sa]
    sb2 = sb if len(sb) > 1 else [*sb, 1]
    sy2 = [*sy, 1] if len(sb) == 1 else list(sy)
    sy2 = [*sy2[:-1], 1, sy2[-1]] if len(sa) == 1 else sy2
    dy2 = step.cotangent
    if len(sa) == 1 or len(sb) == 1:
        at = [0, 1] if len(sa) == len(sb) == 1 else [len(sy) - (len(sa) == 1)]
        dy2 = g.op("Unsqueeze", dy2, g.ints(at))
    grads = {}
    if step.wants[0]:
        da = g.op("MatMul", dy2, _swap_last(g, b2, len(sb2)))
        da = g.sum_to(da, [*sy2[:-2], *sa2[-2:]], a2, sa2)
        grads[0] = da if len(sa) > 1 else g.reshape_like(da, a)
    if step.wants[1]:
        db = g.op("MatMul", _swap_last(g, a2, len(sa2)), dy2)
        db = g.sum_to(db, [*sy2[:-2], *sb2[-2:]], b2, sb2)
        grads[1] = db if len(sb) > 1 else g.reshape_like(db, b)
    return grads


def _swap_last(g: Emitter, name: str, rank: int) -> str:
    return g.op("Transpose", name, perm=[*range(rank - 2), rank - 1, rank - 2])


def conv(g: Emitter, step: Step) -> dict[int, str]:
    """dx = ConvTranspose(dy, W); dW = Conv(xᵀ, dyᵀ) (group 1); dB = dy summed but channels."""
    x, w, dy = step.input(0), step.input(1), step.cotangent
    window = _Window.of(g, step, _kernel(g, step))
    grads = {}
    if step.wants[0]:
        grads[0] = g.op(
            "ConvTranspose",
            dy,
            w,
            group=step.attr("group", 1),
            output_padding=window.remainders(g, step),
            **window.attrs(),
        )
    if step.wants[1]:
        grads[1] = _conv_weight_grad(g, step, window)
    if step.input(2) and step.wants[2]:
        grads[2] = g.op("ReduceSum", dy, g.ints([0, *range(2, g.rank(x))]), keepdims=0)
    return grads


def _conv_weight_grad(g: Emitter, step: Step, window: _Window) -> str:
    if step.attr("group", 1) != 1:
        raise GradientUnavailable(
            f"{step.describe()}: the weight gradient of a grouped Conv is not supported; "
            "only group=1"
        )
    x, dy = step.input(0), step.cotangent
    rank = g.rank(x)
    swap = [1, 0, *range(2, rank)]
    # Batch becomes the channel axis, so stride and dilation trade places.
    raw = g.op(
        "Conv",
        g.op("Transpose", x, perm=swap),
        g.op("Transpose", dy, perm=swap),
        strides=window.dilations,
        dilations=window.strides,
        pads=window.pads,
    )
    spatial = list(range(2, rank))
    cut = g.op("Slice", raw, g.ints([0] * len(spatial)), g.ints(window.kernel), g.ints(spatial))
    return g.op("Transpose", cut, perm=swap)


def max_pool(g: Emitter, step: Step) -> dict[int, str]:
    """dy scattered to the positions MaxPool's Indices output names (summed where they repeat)."""
    x = step.node.input[0]
    kept: dict[str, Any] = {
        a.name: step.attr(a.name) for a in step.node.attribute if a.name != "storage_order"
    }
    # Row-major indices whatever the forward node asked for: the scatter reads them flat.
    _, indices = g.op("MaxPool", x, outputs=2, **kept)
    return {0: g.scatter_flat(step.cotangent, indices, x, add=overlapping(step))}


def overlapping(step: Step) -> bool:
    """Whether pooling windows overlap (then positions repeat and the scatter must add)."""
    kernel = step.attr("kernel_shape")
    strides = step.attr("strides") or [1] * len(kernel)
    dilations = step.attr("dilations") or [1] * len(kernel)
    return any((k - 1) * d + 1 > s for k, s, d in zip(kernel, strides, dilations))


def average_pool(g: Emitter, step: Step) -> dict[int, str]:
    """dx = ConvTranspose of dy / (window count) with a ones kernel, one group per channel."""
    x, dy = step.node.input[0], step.cotangent
    if step.attr("ceil_mode", 0) or any(d != 1 for d in step.attr("dilations") or []):
        raise GradientUnavailable(
            f"{step.describe()}: gradient supports ceil_mode=0 and no dilation only"
        )
    kernel = step.attr("kernel_shape")
    window = _Window.of(g, step, kernel)
    channels = (g.shape(x) or [None, None])[1]
    if not isinstance(channels, int):
        raise GradientUnavailable(f"{step.describe()}: the gradient needs a static channel count")
    ones = g.const(np.ones([channels, 1, *kernel]), x)
    size = g.const(math.prod(kernel), x)
    if any(window.pads) and not step.attr("count_include_pad", 0):
        # At the borders fewer elements were averaged: divide by the count that was.
        ones_like = g.op("Add", g.zeros_like(x), g.const(1, x))
        share = g.op(
            "AveragePool",
            ones_like,
            kernel_shape=kernel,
            strides=window.strides,
            pads=window.pads,
            count_include_pad=1,
        )
        size = g.op("Mul", share, size)
    return {
        0: g.op(
            "ConvTranspose",
            g.op("Div", dy, size),
            ones,
            group=channels,
            output_padding=window.remainders(g, step),
            **{**window.attrs(), "dilations": [1] * len(kernel)},
        )
    }


def softmax(g: Emitter, step: Step) -> dict[int, str]:
    """dx = y (dy - sum(dy y) over the axis)."""
    y, dy = step.node.output[0], step.cotangent
    along = g.ints([step.attr("axis", -1)])
    inner = g.op("ReduceSum", g.op("Mul", dy, y), along, keepdims=1)
    return {0: g.op("Mul", y, g.op("Sub", dy, inner))}


def log_softmax(g: Emitter, step: Step) -> dict[int, str]:
    """dx = dy - exp(y) sum(dy) over the axis."""
    y, dy = step.node.output[0], step.cotangent
    total = g.op("ReduceSum", dy, g.ints([step.attr("axis", -1)]), keepdims=1)
    return {0: g.op("Sub", dy, g.op("Mul", g.op("Exp", y), total))}


def batch_normalization(g: Emitter, step: Step) -> dict[int, str]:
    """Inference mode: dx = dy scale / sqrt(var + epsilon), per channel (axis 1)."""
    if any(step.wants[1:]) or step.attr("training_mode", 0):
        raise GradientUnavailable(
            f"{step.describe()}: gradient only for the data input, in inference mode"
        )
    x, scale, _, _, var = step.node.input[:5]
    spread = g.op("Sqrt", g.op("Add", var, g.const(step.attr("epsilon", 1e-5), var)))
    factor = g.op("Div", scale, spread)
    per_channel = g.op("Unsqueeze", factor, g.ints(range(1, g.rank(x) - 1)))
    return {0: g.op("Mul", step.cotangent, per_channel)}


def _kernel(g: Emitter, step: Step) -> list[int]:
    kernel = step.attr("kernel_shape") or (g.shape(step.input(1)) or [])[2:]
    if not kernel or not all(isinstance(k, int) for k in kernel):
        raise GradientUnavailable(f"{step.describe()}: the gradient needs a static kernel shape")
    return list(kernel)


class _Window:
    """Kernel, strides, dilations and explicit pads of a Conv or pool (auto_pad resolved)."""

    def __init__(self, kernel: list[int], strides: list[int], dilations: list[int], pads: list):
        self.kernel, self.strides, self.dilations, self.pads = kernel, strides, dilations, pads

    @classmethod
    def of(cls, g: Emitter, step: Step, kernel: list[int]) -> _Window:
        """The window of ``step``'s node, with SAME_* padding worked out from static sizes."""
        count = len(kernel)
        strides = step.attr("strides") or [1] * count
        dilations = step.attr("dilations") or [1] * count
        window = cls(kernel, strides, dilations, step.attr("pads") or [0] * 2 * count)
        auto_pad = step.attr("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad == "VALID":
            window.pads = [0] * 2 * count
        elif auto_pad.startswith("SAME"):
            window.pads = window._same_pads(_spatial(g, step, count), auto_pad == "SAME_LOWER")
        return window

    def attrs(self) -> dict[str, Any]:
        """The window as explicit node attributes."""
        return {"strides": self.strides, "dilations": self.dilations, "pads": self.pads}

    def extents(self) -> list[int]:
        """The dilated kernel's extent along each spatial axis."""
        return [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations)]

    def remainders(self, g: Emitter, step: Step) -> list[int]:
        """Trailing input rows no window reached: the transposed op's output_padding."""
        count, extents = len(self.kernel), self.extents()
        if all(s == 1 for s in self.strides):
            return [0] * count
        sizes = _spatial(g, step, count)
        return [
            (size + self.pads[i] + self.pads[i + count] - extents[i]) % self.strides[i]
            for i, size in enumerate(sizes)
        ]

    def _same_pads(self, sizes: list[int], lower: bool) -> list[int]:
        begins, ends = [], []
        for size, stride, extent in zip(sizes, self.strides, self.extents()):
            total = max((math.ceil(size / stride) - 1) * stride + extent - size, 0)
            small, large = total // 2, total - total // 2
            begins.append(large if lower else small)
            ends.append(small if lower else large)
        return begins + ends


def _spatial(g: Emitter, step: Step, count: int) -> list[int]:
    sizes: list[Dim] = (g.shape(step.node.input[0]) or [None] * (count + 2))[2:]
    if not all(isinstance(s, int) for s in sizes):
        raise GradientUnavailable(
            f"{step.describe()}: strides or SAME padding need static spatial sizes; got {sizes}"
        )
    return sizes  # type: ignore[return-value]
