"""The runtime interface: what a subclass must provide, and the defaults it inherits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.fakes import EchoRuntime

from mlbridge.errors import GradientUnavailable
from mlbridge.runtimes import RUNTIMES, Runtime, base
from mlbridge.runtimes.base import dims


def test_a_runtime_must_implement_load_signature_and_predict() -> None:
    class Incomplete(Runtime):
        def load(self) -> None: ...

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(Path("m.x"))


def test_the_defaults_are_no_gradient_blocking_and_nothing_to_close(monkeypatch) -> None:
    monkeypatch.setattr(base, "usable_cpus", lambda: 8)
    runtime = EchoRuntime(Path("m.fake"), threads=3)
    assert runtime.path == Path("m.fake") and runtime.threads == 3
    assert Runtime.inline_safe is False
    with pytest.raises(GradientUnavailable, match="its runtime cannot build a gradient"):
        runtime.gradient_runtime()
    assert Runtime.close(runtime) is None


@pytest.mark.parametrize(
    ("asked", "cpus", "expected"), [(2, 1, 1), (4, 2, 2), (2, 8, 2), (0, 4, 1)]
)
def test_a_runtime_never_uses_more_threads_than_usable_cpus(
    monkeypatch, asked: int, cpus: int, expected: int
) -> None:
    monkeypatch.setattr(base, "usable_cpus", lambda: cpus)
    assert EchoRuntime(Path("m.fake"), threads=asked).threads == expected


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_an_onnx_session_on_one_usable_cpu_gets_one_intra_op_thread() -> None:
    from mlbridge.registry import DEMO_MODELS
    from mlbridge.runtimes.onnx import OnnxRuntime

    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        runtime = OnnxRuntime(DEMO_MODELS / "mnist.onnx", threads=2)
        runtime.load()
    finally:
        os.sched_setaffinity(0, cpus)
    assert runtime.threads == 1
    assert runtime.session.get_session_options().intra_op_num_threads == 1


def test_every_runtime_names_its_suffixes() -> None:
    assert sorted(RUNTIMES) == [".h5", ".keras", ".onnx", ".tflite"]
    assert all(suffix in runtime.suffixes for suffix, runtime in RUNTIMES.items())


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((None, 28, 28), (-1, 28, 28)),
        (("N", 10), (-1, 10)),
        ((-1, 3), (-1, 3)),
        ((), ()),
        ((0, 2), (0, 2)),
    ],
)
def test_dims_turn_unknown_sizes_into_minus_one(shape, expected) -> None:
    assert dims(shape) == expected
