"""The per-epoch loss and accuracy curves of a training report, as a PNG beside it.

Drawn with matplotlib's object API on its Agg canvas: no pyplot state, no display
needed, so it runs on a headless server and in tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CURVES = (  # (panel title, [(report key, legend label), ...])
    ("loss", [("loss", "training"), ("val_loss", "validation")]),
    ("accuracy", [("accuracy", "training"), ("val_accuracy", "validation")]),
)
SIZE_INCHES = (10.0, 4.0)
DPI = 100


def curves_path(report_file: Path) -> Path:
    """Where the curves of ``NAME.report.json`` go: ``NAME.curves.png`` beside it."""
    return report_file.with_name(report_file.name.replace(".report.json", "") + ".curves.png")


def write_curves(report: dict[str, Any], path: Path) -> Path:
    """Draw loss and accuracy per epoch (training and validation) from ``report``; save a PNG."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    for axes, (title, series) in zip(figure.subplots(1, len(CURVES)), CURVES):
        for key, label in series:
            epochs, values = _series(report["history"], key)
            if values:
                axes.plot(epochs, values, marker="o", label=label)
        axes.set(title=title, xlabel="epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(_title(report))
    figure.savefig(path, format="png")
    return path


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Epochs and values of one curve, skipping epochs that lack it (no validation split)."""
    rows = [row for row in history if row.get(key) is not None]
    return [row["epoch"] for row in rows], [float(row[key]) for row in rows]


def _title(report: dict[str, Any]) -> str:
    held_out = report.get("heldout_accuracy")
    name = report.get("name") or report.get("architecture", "model")
    return name if held_out is None else f"{name}: held-out accuracy {held_out:.4f}"
