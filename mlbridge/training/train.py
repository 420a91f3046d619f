"""Train a reference architecture and write the .keras model plus a JSON report."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .. import __version__
from ..errors import ConfigError
from . import layers  # noqa: F401  (registers EvidenceTweakingLayer for load_model)
from .config import DEFAULT_EPOCHS, TrainConfig
from .data import Dataset, load_dataset, split_validation
from .models import architecture, build_model

CURVES_MISSING = "not drawn: pip install matplotlib (part of the training extra)"

#: Epochs that meet the floors on the 8,000 local MNIST training images with Adam(1e-4)
#: (chosen on the validation split; docs/training.md lists the held-out results).


class EpochTimer(keras.callbacks.Callback):
    """Record the wall-clock seconds of every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train ``config.arch``; write NAME.keras and NAME.report.json in ``config.out``."""
    arch = architecture(config.arch)
    data = load_dataset(arch.dataset, config.data).scaled()
    _check_shape(data, arch.input_shape)
    keras.utils.set_random_seed(config.seed)
    model = build_model(config.arch, config.evidence)
    compile_model(model, config.learning_rate)
    x, y = _limited(data.x_train, config.limit), _limited(data.y_train, config.limit)
    (x_fit, y_fit), validation = split_validation(x, y, config.validation_fraction, config.seed)
    epochs = config.epochs or DEFAULT_EPOCHS[config.arch]
    timer = EpochTimer()
    history = model.fit(
        x_fit,
        y_fit,
        batch_size=config.batch_size,
        epochs=epochs,
        callbacks=[timer],
        validation_data=validation if len(validation[0]) else None,
        shuffle=True,
        verbose=config.verbose,
    )
    loss, accuracy = model.evaluate(data.x_heldout, data.y_heldout, batch_size=256, verbose=0)
    config.out.mkdir(parents=True, exist_ok=True)
    model_file = config.out / f"{config.model_name}.keras"
    model.save(model_file)
    report = {
        "name": config.model_name,
        "architecture": config.arch,
        "evidence": config.evidence,
        "description": arch.description,
        "labels": list(data.labels or arch.labels),
        "input_shape": [-1, *arch.input_shape],
        "parameters": int(model.count_params()),
        "epochs": epochs,
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "data": str(config.data) if config.data else f"keras.datasets.{arch.dataset}",
        "train_size": len(x_fit),
        "validation_size": len(validation[0]),
        "heldout_size": len(data.x_heldout),
        "history": _history_rows(history.history, timer.seconds),
        "seconds_per_epoch": [round(s, 3) for s in timer.seconds],
        "heldout_loss": float(loss),
        "heldout_accuracy": float(accuracy),
        "model_file": model_file.name,
        "versions": package_versions(),
    }
    report_file = report_path(model_file)
    report["curves_file"] = _write_curves(report, report_file)
    report_file.write_text(json.dumps(report, indent=2) + "\n")
    return report


def compile_model(model: Any, learning_rate: float = 1e-4) -> None:
    """Adam, sparse categorical cross-entropy from logits, accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def load_model(path: Path) -> Any:
    """Load a .keras/.h5 file; the EvidenceTweakingLayer is found through Keras' registry."""
    return keras.models.load_model(path)


def report_path(model_file: Path) -> Path:
    """Where the training report of ``model_file`` lives: NAME.report.json beside it."""
    return model_file.with_name(f"{model_file.stem}.report.json")


def package_versions() -> dict[str, str]:
    """Versions of what produced the model."""
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "mlbridge": __version__,
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a plain-text table: one row per epoch, then the totals."""
    titles = ("loss", "accuracy", "val_loss", "val_acc")
    head = f"{'epoch':>5}  " + "  ".join(f"{t:>8}" for t in titles) + f"  {'seconds':>7}"
    rows = [head, "-" * len(head)]
    for row in report["history"]:
        cells = [_cell(row.get(key)) for key in ("loss", "accuracy", "val_loss", "val_accuracy")]
        rows.append(f"{row['epoch']:>5}  " + "  ".join(cells) + f"  {row['seconds']:>7.2f}")
    rows += [
        "-" * len(head),
        f"architecture      {report['architecture']}"
        + (f" + EvidenceTweakingLayer({report['evidence']})" if report["evidence"] else ""),
        f"parameters        {report['parameters']:,}",
        "train/val/heldout "
        + "/".join(str(report[k]) for k in ("train_size", "validation_size", "heldout_size")),
        f"held-out accuracy {report['heldout_accuracy']:.4f}",
        f"model             {report['model_file']}",
        f"curves            {report.get('curves_file') or CURVES_MISSING}",
    ]
    return "\n".join(rows)


def _write_curves(report: dict[str, Any], report_file: Path) -> str | None:
    """Draw the per-epoch curves beside the report; None when matplotlib is not installed."""
    from . import plots

    try:
        return plots.write_curves(report, plots.curves_path(report_file)).name
    except ImportError:
        return None


def _cell(value: float | None) -> str:
    return f"{value:>8.4f}" if value is not None else f"{'-':>8}"


def _history_rows(history: dict[str, list[float]], seconds: list[float]) -> list[dict]:
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    return [
        {"epoch": i + 1, **{k: _maybe(history, k, i) for k in keys}, "seconds": round(s, 3)}
        for i, s in enumerate(seconds)
    ]


def _maybe(history: dict[str, list[float]], key: str, index: int) -> float | None:
    values = history.get(key)
    return float(values[index]) if values else None


def _limited(array: np.ndarray, limit: int | None) -> np.ndarray:
    return array if limit is None else array[:limit]


def _check_shape(data: Dataset, expected: tuple[int, ...]) -> None:
    if tuple(data.x_train.shape[1:]) != expected:
        raise ConfigError(
            f"{data.name} images have shape {list(data.x_train.shape[1:])}; "
            f"the architecture expects {list(expected)}"
        )
