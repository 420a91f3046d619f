"""The runtime interface: one loaded model file that can predict.

To add a runtime, subclass :class:`Runtime`, set ``suffixes`` and
``extra``, and implement ``load``, ``signature`` and ``predict``; then
list the class in ``runtimes/__init__.py``. ``predict`` may be called from
several threads at once: a runtime whose engine is not reentrant must
guard it itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..protocol import ModelSignature

SMALL_INPUT_VALUES = 4096  # five 28x28 images: tens of microseconds for the demo models


class Runtime(ABC):
    """A model loaded from one file."""

    suffixes: tuple[str, ...] = ()
    extra: str = ""  # the pip extra that brings this runtime's engine
    inline_max_values = 0  # inputs this small may run on the event loop (fast, non-blocking)

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.path = path
        self.threads = threads

    @abstractmethod
    def load(self) -> None:
        """Load the file; raise on any failure (the registry reports it)."""

    @abstractmethod
    def signature(self) -> ModelSignature:
        """The inputs and outputs the file declares (labels come from config)."""

    @abstractmethod
    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on validated inputs; return every output by name."""

    def close(self) -> None:
        """Release engine resources; the default does nothing."""


def dims(shape: object) -> tuple[int, ...]:
    """Normalise a runtime's shape (None, symbolic names, -1) to ints, -1 = any."""
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)  # type: ignore[attr-defined]
