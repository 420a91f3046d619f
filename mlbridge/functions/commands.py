"""The `mlbridge export-fn` command (JAX and jax2onnx are imported only when it runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import MissingDependency, MLBridgeError

PURPOSE = "mlbridge export-fn"


def _export_module() -> Any:
    """Import the JAX-backed export module, or fail with the install hint."""
    for package in ("jax", "jax2onnx"):
        try:
            __import__(package)
        except ImportError as error:
            raise MissingDependency(package, "functions", PURPOSE) from error
    from . import export

    return export


@click.command("export-fn")
@click.argument("target", metavar="FILE.py:FUNCTION")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="SHAPE:DTYPE",
    help="One per positional parameter, in order, for one example (no batch axis): "
    "3:float64, 13,3:float64, scalar:float32. Dtypes: float32, float64.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("models"),
    show_default=True,
    help="Folder for NAME.onnx, NAME.vjp.onnx and NAME.json.",
)
@click.option("--name", help="File stem, the served model's name [default: FUNCTION].")
@click.option("--description", help="[default: the first line of FUNCTION's docstring]")
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Standard-normal sample inputs (and cotangents) to check both files on.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the samples.")
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    help="Largest accepted |ONNX - JAX| / max(1, |JAX|) per element "
    "[default: 1e-9 for float64, 1e-5 for float32].",
)
def export_fn(target: str, inputs: tuple[str, ...], **options: Any) -> None:
    """Export a JAX FUNCTION from FILE.py, and its gradient, as ONNX checked against JAX.

    \b
    NAME.onnx      the function over a batch: each input [B, *SHAPE], output 'output'
    NAME.vjp.onnx  its vector-Jacobian product: the same inputs plus 'output_cotangent',
                   one gradient '<input>_grad' per input
    NAME.json      names, shapes, source and the measured differences

    Inputs take the names of FUNCTION's parameters. Example:

    \b
      mlbridge export-fn physics.py:energy --input 13,3:float64 --out models
    """
    try:
        export = _export_module()
        result = export.export_function(target, inputs, **options)
    except MLBridgeError as error:
        raise click.ClickException(error.message) from None
    for checked in (result.sidecar["exports"]["onnx"], result.sidecar["gradient"]):
        seconds = result.seconds[checked["file"]]
        click.echo(
            f"{checked['file']}: max |difference| from JAX {checked['max_abs_difference']:.3g} "
            f"on {checked['samples']} samples (converted in {seconds:.1f} s)"
        )
    click.echo(f"wrote {', '.join(str(path) for path in result.paths)}")
