"""Gradient rules for ops that move or select elements without arithmetic on them.

Shapes are taken at run time (``Shape`` of the forward tensor), so a dynamic batch stays
dynamic; Slice and Gather trace where they read by slicing a tensor of flat positions and
scatter the cotangent back there.
"""

from __future__ import annotations

import numpy as np

from .graph import Emitter, Step


def reshaped(g: Emitter, step: Step) -> dict[int, str]:
    """Reshape, Flatten, Squeeze, Unsqueeze: dx = dy reshaped to x's run-time shape."""
    return {0: g.reshape_like(step.cotangent, step.node.input[0])}


def transpose(g: Emitter, step: Step) -> dict[int, str]:
    """dx = dy transposed by the inverse permutation."""
    x = step.node.input[0]
    perm = step.attr("perm") or list(reversed(range(g.rank(x))))
    return {0: g.op("Transpose", step.cotangent, perm=np.argsort(perm).tolist())}


def expand(g: Emitter, step: Step) -> dict[int, str]:
    """dx = dy summed over the axes Expand broadcast."""
    return {0: g.unbroadcast(step.cotangent, step.node.input[0], step.node.output[0])}


def concat(g: Emitter, step: Step) -> dict[int, str]:
    """Each input gets its own stretch of dy along the axis (Split by run-time sizes)."""
    inputs = list(step.node.input)
    axis = step.attr("axis") % g.rank(inputs[0])
    sizes = [g.op("Gather", g.op("Shape", x), g.ints([axis])) for x in inputs]
    lengths = g.op("Concat", *sizes, axis=0) if len(sizes) > 1 else sizes[0]
    parts = g.op("Split", step.cotangent, lengths, axis=axis, outputs=len(inputs))
    parts = parts if isinstance(parts, list) else [parts]
    return {i: part for i, part in enumerate(parts) if step.wants[i]}


def split(g: Emitter, step: Step) -> dict[int, str]:
    """dx = the output cotangents concatenated, zeros for outputs no cotangent reached."""
    x = step.node.input[0]
    axis = step.attr("axis", 0) % g.rank(x)
    parts = [dy or g.zeros_like(y) for dy, y in zip(step.dy, step.node.output)]
    return {0: g.op("Concat", *parts, axis=axis)}


def slice_(g: Emitter, step: Step) -> dict[int, str]:
    """dy scattered back to the positions the slice read; zeros elsewhere."""
    x = step.node.input[0]
    read = g.op("Slice", g.positions(x), *step.node.input[1:])
    return {0: g.scatter_flat(step.cotangent, read, x)}


def gather(g: Emitter, step: Step) -> dict[int, str]:
    """dy summed into the positions Gather read (indices may repeat); none to the indices."""
    x, indices = step.node.input
    read = g.op("Gather", g.positions(x), indices, axis=step.attr("axis", 0))
    return {0: g.scatter_flat(step.cotangent, read, x, add=True)}
