"""What `mlbridge train` trains and how: the one statement of its defaults (no Keras import)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ARCHITECTURE_NAMES = ("mnist-mlp", "mnist-cnn", "cifar10-cnn")
EVIDENCE_NAMES = ("asinh", "atan")
DEFAULT_EPOCHS = {"mnist-mlp": 50, "mnist-cnn": 50, "cifar10-cnn": 50}


@dataclass
class TrainConfig:
    """What to train, on what, and how."""

    arch: str
    out: Path
    data: Path | None = None
    epochs: int | None = None
    learning_rate: float = 1e-4
    batch_size: int = 32
    seed: int = 0
    evidence: str | None = None
    validation_fraction: float = 0.1
    limit: int | None = None  # use only the first N training images (quick runs, tests)
    name: str | None = None
    verbose: int | str = "auto"

    @property
    def model_name(self) -> str:
        """The file stem: the architecture name, with the evidence squash appended."""
        return self.name or (f"{self.arch}-{self.evidence}" if self.evidence else self.arch)


def train_default(name: str) -> Any:
    """The default of a TrainConfig field, for the CLI flag that sets it."""
    return next(f.default for f in fields(TrainConfig) if f.name == name)
