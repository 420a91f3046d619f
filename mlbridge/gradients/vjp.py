"""Reverse-mode differentiation of an ONNX model into a second ONNX model: ``build_vjp``.

The VJP model takes the forward inputs plus ``O_cotangent`` for every float output O, and
returns ``I_grad = Jᵀ·dy`` for every float input I (initializers are constants, not inputs).
It recomputes the forward pass itself, so it runs alone in plain onnxruntime.

How: inline local functions; convert to the opset the rules need (13, or 16 for a
scatter-add) with onnx.version_converter; infer shapes; mark the *active* nodes, those fed
by a float input through differentiable ops and feeding a float output; call each one's
rule (:mod:`.rules`) in reverse order, summing cotangents where a tensor fans out; drop
forward nodes the gradient never reads.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import onnx
import onnx.inliner
from onnx import helper, numpy_helper, shape_inference, version_converter

from ..errors import GradientUnavailable
from ..protocol import COTANGENT_SUFFIX, GRAD_SUFFIX
from .graph import FLOAT_TYPES, Emitter, Step
from .rules import GRADIENT_RULES, MIN_OPSET, ZERO_GRADIENT_OPS, opset_needed, rule_for

#: Node names quoted per op type in the unsupported-op message.
NAMES_QUOTED = 3


def build_vjp(model: onnx.ModelProto) -> onnx.ModelProto:
    """The vector-Jacobian product of ``model`` as a self-contained ONNX model."""
    forward = _at_opset(_inlined(model), MIN_OPSET)
    plan = _Plan.of(forward)
    needed = max((opset_needed(node) for node in plan.active), default=MIN_OPSET)
    if needed > _opset(forward):
        forward = _at_opset(forward, needed)
        plan = _Plan.of(forward)
    emitter = Emitter(plan.types, plan.constants, _opset(forward), _taken(forward.graph))
    _emit_gradients(plan, emitter)
    vjp = _assemble(forward, plan, emitter)
    onnx.checker.check_model(vjp)
    return vjp


@dataclass
class _Plan:
    """What differentiating a graph needs: types, the path, its ends."""

    wrt: list[onnx.ValueInfoProto]
    seeds: list[onnx.ValueInfoProto]
    varied: set[str]
    active: list[onnx.NodeProto]
    types: dict[str, onnx.TypeProto]
    constants: dict

    @classmethod
    def of(cls, model: onnx.ModelProto) -> _Plan:
        """Infer types, then find the nodes between the float inputs and float outputs."""
        inferred = shape_inference.infer_shapes(model, data_prop=True).graph
        types = _types(inferred)
        fixed = {tensor.name for tensor in inferred.initializer}
        wrt = [v for v in inferred.input if _is_float(v.type) and v.name not in fixed]
        seeds = [v for v in inferred.output if _is_float(v.type)]
        varied = _varied(inferred, {v.name for v in wrt}, types)
        useful = _useful(inferred, {v.name for v in seeds})
        active = [
            node
            for node in inferred.node
            if varied.intersection(node.input) and useful.intersection(node.output)
        ]
        _require_rules(active)
        return cls(wrt, seeds, varied, active, types, _constants(inferred))


def _types(graph: onnx.GraphProto) -> dict[str, onnx.TypeProto]:
    """The type of every tensor shape inference (or an initializer) tells."""
    types = {t.name: helper.make_tensor_type_proto(t.data_type, t.dims) for t in graph.initializer}
    for value in (*graph.input, *graph.output, *graph.value_info):
        types[value.name] = value.type
    return types


def _varied(graph: onnx.GraphProto, wrt: set[str], types: dict) -> set[str]:
    """Tensors that depend on an input through ops that pass a gradient on."""
    varied = set(wrt)
    for node in graph.node:
        if node.op_type in ZERO_GRADIENT_OPS or not varied.intersection(node.input):
            continue
        # An op without a rule passes everything on, so that the check can name it.
        ruled = rule_for(node) is not None
        varied.update(o for o in node.output if o and (not ruled or _maybe_float(types.get(o))))
    return varied


def _useful(graph: onnx.GraphProto, seeds: set[str]) -> set[str]:
    """Tensors that some float output is computed from."""
    useful = set(seeds)
    for node in reversed(graph.node):
        if useful.intersection(node.output):
            useful.update(node.input)
    return useful


def _require_rules(active: list[onnx.NodeProto]) -> None:
    """GradientUnavailable naming every op type on the path that has no rule."""
    missing: dict[str, list[str]] = defaultdict(list)
    for node in active:
        if rule_for(node) is None:
            kind = (
                node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            )
            missing[kind].append(repr(node.name))
    if missing:
        found = "; ".join(_quoted(kind, names) for kind, names in sorted(missing.items()))
        raise GradientUnavailable(
            f"model graph uses ONNX ops without a gradient rule: {found}; "
            f"supported: {', '.join(sorted(GRADIENT_RULES))}"
        )


def _quoted(kind: str, names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_QUOTED]) + (", ..." if len(names) > NAMES_QUOTED else "")
    return f"{kind} (node{'s' if len(names) > 1 else ''} {shown})"


def _emit_gradients(plan: _Plan, emitter: Emitter) -> None:
    """Walk the active nodes backwards, then name each input's summed gradient I_grad."""
    cotangents: dict[str, list[str]] = defaultdict(list)
    for seed in plan.seeds:
        cotangents[seed.name].append(seed.name + COTANGENT_SUFFIX)
    for node in reversed(plan.active):
        dy = [_summed(emitter, cotangents.pop(name, [])) for name in node.output]
        if not any(dy):
            continue
        step = Step(node, dy, [name in plan.varied for name in node.input])
        for index, grad in GRADIENT_RULES[node.op_type](emitter, step).items():
            cotangents[node.input[index]].append(grad)
    for value in plan.wrt:
        _name_gradient(emitter, value.name, cotangents.get(value.name, []))


def _summed(emitter: Emitter, parts: list[str]) -> str | None:
    if len(parts) > 1:
        return emitter.op("Sum", *parts)
    return parts[0] if parts else None


def _name_gradient(emitter: Emitter, name: str, parts: list[str]) -> None:
    out = name + GRAD_SUFFIX
    if not parts:  # no path from this input to any output: its gradient is zero
        emitter.op("Identity", emitter.zeros_like(name), out=out)
    else:
        emitter.op("Sum" if len(parts) > 1 else "Identity", *parts, out=out)


def _assemble(forward: onnx.ModelProto, plan: _Plan, emitter: Emitter) -> onnx.ModelProto:
    """The VJP model: forward inputs and cotangents in, gradients out, unread nodes dropped."""
    graph = forward.graph
    outputs = [_renamed(v, v.name + GRAD_SUFFIX) for v in plan.wrt]
    cotangents = [_renamed(v, v.name + COTANGENT_SUFFIX) for v in plan.seeds]
    nodes, read = _pruned([*graph.node, *emitter.nodes], {v.name for v in outputs})
    inputs = [*graph.input, *cotangents]
    read.update(v.name for v in inputs)
    vjp_graph = helper.make_graph(
        nodes,
        f"{graph.name}_vjp",
        inputs,
        outputs,
        initializer=[t for t in (*graph.initializer, *emitter.initializers) if t.name in read],
        value_info=[v for v in graph.value_info if v.name in read],
    )
    vjp = helper.make_model(vjp_graph, opset_imports=forward.opset_import)
    vjp.ir_version = forward.ir_version
    vjp.producer_name, vjp.doc_string = "mlbridge.gradients", f"VJP of {graph.name!r}"
    return vjp


def _pruned(nodes: list[onnx.NodeProto], wanted: set[str]) -> tuple[list, set[str]]:
    """The nodes the ``wanted`` tensors are computed from, in order, and every name they read."""
    read, kept = set(wanted), []
    for node in reversed(nodes):
        if read.intersection(node.output):
            kept.append(node)
            read.update(node.input)
    return kept[::-1], read


def _renamed(value: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(value)
    copy.name = name
    return copy


def _inlined(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.inliner.inline_local_functions(model) if model.functions else model


def _at_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` converted up to ``opset`` of the default domain (unchanged if at or above)."""
    if _opset(model) >= opset:
        return model
    try:
        return version_converter.convert_version(model, opset)
    except Exception as error:  # the converter raises bare RuntimeErrors
        raise GradientUnavailable(
            f"the gradient rules need opset {opset}; converting from opset "
            f"{_opset(model)} failed: {error}"
        ) from error


def _opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return max(versions, default=1)


def _taken(graph: onnx.GraphProto) -> set[str]:
    """Every name in use or reserved for the VJP's inputs and outputs (they must not clash)."""
    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    names.update(t.name for t in graph.initializer)
    for node in graph.node:
        names.update((*node.input, *node.output, node.name))
    reserved = {v.name + GRAD_SUFFIX for v in graph.input}
    reserved.update(v.name + COTANGENT_SUFFIX for v in graph.output)
    clashes = sorted(reserved & names)
    if clashes:
        raise GradientUnavailable(
            f"the VJP's tensor names {clashes} are taken in the model; rename those tensors"
        )
    return names | reserved


def _constants(graph: onnx.GraphProto) -> dict:
    """The values of initializers and Constant nodes (for rules that need e.g. axes)."""
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _is_float(kind: onnx.TypeProto) -> bool:
    return kind.tensor_type.elem_type in FLOAT_TYPES


def _maybe_float(kind: onnx.TypeProto | None) -> bool:
    """Float, or unknown to shape inference (then assume the worst: it may carry a gradient)."""
    return kind is None or not kind.tensor_type.elem_type or _is_float(kind)
