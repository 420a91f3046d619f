"""The runtime interface: one loaded model file that can predict.

To add a runtime, subclass :class:`Runtime`, set ``suffixes`` and
``extra``, and implement ``load``, ``signature`` and ``predict``; then
list the class in ``runtimes/__init__.py``. ``predict`` may be called from
several threads at once: a runtime whose engine is not reentrant must
guard it itself. Set ``inline_safe`` when a small ``predict`` never waits on
a lock (the inference layer may then run it on the event loop), and
override ``gradient_runtime`` when the engine can differentiate its model.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import GradientUnavailable
from ..protocol import ModelSignature


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity: taskset, a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform (macOS)
        return os.cpu_count() or 1


class Runtime(ABC):
    """A model loaded from one file."""

    suffixes: tuple[str, ...] = ()
    extra: str = ""  # the pip extra that brings this runtime's engine
    inline_safe = False  # a small predict never blocks: it may run on the event loop
    no_gradient = "its runtime cannot build a gradient"  # why gradient_runtime fails

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.path = path
        # Never more compute threads than CPUs this process may run on: on one CPU, a second
        # onnxruntime thread cost the CNN 15% on one image, 6% under 8 clients.
        self.threads = max(1, min(threads, usable_cpus()))

    @abstractmethod
    def load(self) -> None:
        """Load the file; raise on any failure (the registry reports it)."""

    @abstractmethod
    def signature(self) -> ModelSignature:
        """The inputs and outputs the file declares (labels come from config)."""

    @abstractmethod
    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on validated inputs; return every output by name."""

    def gradient_runtime(self) -> Runtime:
        """A runtime (not yet loaded) for this model's VJP; raise GradientUnavailable if none."""
        raise GradientUnavailable(self.no_gradient)

    def close(self) -> None:
        """Release engine resources; the default does nothing."""


def dims(shape: Iterable[object]) -> tuple[int, ...]:
    """Normalise a runtime's shape (None, symbolic names, -1) to ints, -1 = any."""
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)
