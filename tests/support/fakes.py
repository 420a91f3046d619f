"""Fake runtimes, a registry of them, and the app in process (or on a socket in a thread).

Each fake is a real :class:`~mlbridge.runtimes.base.Runtime` without a file:

==================  ====================================================================
EchoRuntime         returns its input: ``input`` FP32 [-1, 3] -> ``output`` FP32 [-1, 3]
EchoGradientRuntime the echo model's VJP: ``input_grad`` = ``output_cotangent``
SlowRuntime         echoes after ``delay_s``; never inline (a blocking engine)
FailingRuntime      raises inside ``predict`` (the server answers 500 InferenceFailed)
==================  ====================================================================

:func:`fake_registry` serves them as ``echo`` (with its gradient companion
``echo.vjp``), ``slow`` and ``failing``, plus the real demo ONNX models if asked;
:func:`in_process_app` builds the app around a registry with the secret :data:`SECRET`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette

from mlbridge.auth import TokenAuthenticator
from mlbridge.protocol import ModelSignature, TensorSpec
from mlbridge.registry import DEMO_MODELS, ModelRegistry, ServedModel, discover, load_model
from mlbridge.runtimes.base import Runtime
from mlbridge.server.app import create_app
from mlbridge.server.run import bind
from mlbridge.settings import load_settings

SECRET = "in-process-secret"
AUTH = {"Authorization": f"Bearer {SECRET}"}
HOME = Path("/nonexistent/mlbridge-home")  # named in 401 messages; never written
DEMO = ("mnist", "mnist-cnn")
VECTOR = TensorSpec("input", "FP32", (-1, 3))
ECHO_SIGNATURE = ModelSignature(inputs=(VECTOR,), outputs=(TensorSpec("output", "FP32", (-1, 3)),))
ECHO_GRADIENT_SIGNATURE = ModelSignature(
    inputs=(VECTOR, TensorSpec("output_cotangent", "FP32", (-1, 3))),
    outputs=(TensorSpec("input_grad", "FP32", (-1, 3)),),
)


class FakeRuntime(Runtime):
    """A runtime with a fixed signature and no file; records the threads it ran on."""

    fake_signature = ECHO_SIGNATURE
    inline_safe = True

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        super().__init__(path or Path(f"{type(self).__name__}.fake"), threads)
        self.loaded = self.closed = False
        self.ran_on: list[int] = []  # thread ids of predict calls

    def load(self) -> None:
        self.loaded = True

    def signature(self) -> ModelSignature:
        return self.fake_signature

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.ran_on.append(threading.get_ident())
        return self.compute(inputs)

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


class EchoRuntime(FakeRuntime):
    """Returns its input as ``output``."""

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"output": inputs["input"].copy()}


class EchoGradientRuntime(FakeRuntime):
    """The VJP of the echo model: its Jacobian is the identity, so dx = dy."""

    fake_signature = ECHO_GRADIENT_SIGNATURE

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"input_grad": inputs["output_cotangent"].copy()}


class SlowRuntime(EchoRuntime):
    """Echoes after ``delay_s`` seconds; blocks, so it always runs in a worker thread."""

    inline_safe = False
    delay_s = 0.5

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.delay_s)
        return super().compute(inputs)


class FailingRuntime(EchoRuntime):
    """An engine that breaks on valid input."""

    message = "the fake engine broke"

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError(self.message)


def served(name: str, runtime: Runtime, **fields: Any) -> ServedModel:
    """``runtime`` loaded and served as ``name``."""
    runtime.load()
    return ServedModel(name, runtime.path, runtime, runtime.signature(), **fields)


def fake_models() -> list[ServedModel]:
    """echo (with its companion echo.vjp), slow and failing."""
    no_gradient = {"gradient_unavailable": "it is a fake without one"}
    return [
        served("echo", EchoRuntime(), gradient="echo.vjp"),
        served("echo.vjp", EchoGradientRuntime(), gradient_of="echo"),
        served("slow", SlowRuntime(), **no_gradient),
        served("failing", FailingRuntime(), **no_gradient),
    ]


def demo_models(names: tuple[str, ...] = DEMO) -> list[ServedModel]:
    """The bundled demo ONNX models ``names``, loaded as the server loads them."""
    sources = discover([DEMO_MODELS / f"{name}.onnx" for name in names])
    return [model for source in sources for model in load_model(source)]


def fake_registry(*demo: str) -> ModelRegistry:
    """The fakes, plus the demo models named in ``demo``."""
    return ModelRegistry(fake_models() + (demo_models(demo) if demo else []))


def in_process_app(registry: ModelRegistry, max_body_mb: int = 64) -> Starlette:
    """The app serving ``registry``, its secret :data:`SECRET`, its body limit ``max_body_mb``."""
    settings = load_settings(environ={}, home=str(HOME), max_body_mb=max_body_mb, workers=2)
    return create_app(registry, TokenAuthenticator(SECRET, settings.token_file), settings)


class ThreadedServer:
    """An app on a real socket (a free port), served by uvicorn in a thread of this process."""

    def __init__(self, app: Starlette) -> None:
        self.listener = bind("127.0.0.1", 0)
        config = uvicorn.Config(app, lifespan="off", log_level="warning", ws="none")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.listener]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the threaded server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.listener.close()
