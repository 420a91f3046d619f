"""The `mlbridge train` and `mlbridge export` commands (TensorFlow is imported only when run)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ..errors import MissingDependency
from .config import ARCHITECTURE_NAMES, EVIDENCE_NAMES, TrainConfig, train_default


def _training_modules(purpose: str) -> Any:
    """Import the TensorFlow-backed modules, or fail with the install hint."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's start-up chatter off stderr
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError as error:
        raise MissingDependency("tensorflow", "training", purpose) from error
    from . import export, train

    return train, export


@click.command()
@click.argument("arch", type=click.Choice(ARCHITECTURE_NAMES))
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    help="Local data: MNIST idx folder or .npz, CIFAR-10 pickle folder or .npz. "
    "Without it, Keras downloads the data set.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("models"),
    show_default=True,
    help="Folder for NAME.keras and NAME.report.json.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    help="Epochs [default: enough to meet the floors; 50 for the references].",
)
@click.option(
    "--learning-rate",
    type=float,
    default=train_default("learning_rate"),
    show_default=True,
    help="Adam's rate.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=train_default("batch_size"),
    show_default=True,
)
@click.option(
    "--seed",
    type=int,
    default=train_default("seed"),
    show_default=True,
    help="Seeds weights, shuffling and the validation split.",
)
@click.option(
    "--evidence",
    type=click.Choice(EVIDENCE_NAMES),
    help="Append an EvidenceTweakingLayer with this squash.",
)
@click.option(
    "--validation-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=train_default("validation_fraction"),
    show_default=True,
    help="Share of the training range held for validation.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="Train on only the first N training images (quick runs).",
)
@click.option("--name", help="File stem [default: ARCH, or ARCH-EVIDENCE].")
def train(**options: Any) -> None:
    """Train a reference architecture ARCH and report held-out accuracy."""
    train_module, _ = _training_modules("mlbridge train")
    config = TrainConfig(**options)
    report = train_module.train(config)
    click.echo(train_module.format_report(report))
    click.echo(f"wrote {config.out / report['model_file']} and its .report.json")


@click.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--to",
    "formats",
    default="onnx,tflite",
    show_default=True,
    help="Comma-separated formats: onnx, tflite.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the files [default: the model's folder].",
)
@click.option("--name", help="File stem of NAME.onnx/NAME.tflite/NAME.json [default: MODEL's].")
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    help="Check on held-out images from this data [default: seeded random inputs].",
)
@click.option("--samples", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--tolerance",
    type=float,
    default=1e-4,
    show_default=True,
    help="Largest accepted absolute difference from Keras.",
)
@click.option(
    "--grad",
    is_flag=True,
    help="Also write NAME.vjp.onnx, the model's vector-Jacobian product, checked against "
    "tf.GradientTape and float64 finite differences (needs onnx in --to).",
)
def export(model: Path, formats: str, **options: Any) -> None:
    """Export MODEL (.keras, .h5 or SavedModel) and check every file against Keras."""
    _, export_module = _training_modules("mlbridge export")
    chosen = tuple(fmt.strip() for fmt in formats.split(",") if fmt.strip())
    sidecar = export_module.export_model(model, chosen, **options)
    for fmt in chosen:
        result = sidecar["exports"][fmt]
        click.echo(
            f"{result['file']}: max |difference| from Keras "
            f"{result['max_abs_difference']:.3g} on {result['samples']} samples"
        )
    if options["grad"]:
        gradient = sidecar["gradient"]
        click.echo(
            f"{gradient['file']}: max |difference| from tf.GradientTape "
            f"{gradient['max_abs_difference']:.3g} on {gradient['samples']} samples; "
            f"relative error against float64 differences {gradient['max_relative_error_fd64']:.3g}"
        )
