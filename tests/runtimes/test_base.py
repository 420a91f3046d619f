"""The runtime interface: what a subclass must provide, and the defaults it inherits."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.fakes import EchoRuntime

from mlbridge.errors import GradientUnavailable
from mlbridge.runtimes import RUNTIMES, Runtime
from mlbridge.runtimes.base import dims


def test_a_runtime_must_implement_load_signature_and_predict() -> None:
    class Incomplete(Runtime):
        def load(self) -> None: ...

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(Path("m.x"))


def test_the_defaults_are_no_gradient_blocking_and_nothing_to_close() -> None:
    runtime = EchoRuntime(Path("m.fake"), threads=3)
    assert runtime.path == Path("m.fake") and runtime.threads == 3
    assert Runtime.inline_safe is False
    with pytest.raises(GradientUnavailable, match="its runtime cannot build a gradient"):
        runtime.gradient_runtime()
    assert Runtime.close(runtime) is None


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
