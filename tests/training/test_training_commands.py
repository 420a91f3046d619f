"""`mlbridge train` / `mlbridge export` without TensorFlow: lazy imports, clean errors."""

from __future__ import annotations

import subprocess
import sys

from support import REPO

HEAVY = ("tensorflow", "keras", "tf2onnx", "onnx")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_commands_and_data_import_no_tensorflow() -> None:
    result = _python(
        "import sys, mlbridge, mlbridge.training.commands, mlbridge.training.data\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_tensorflow_gives_the_install_hint(tmp_path) -> None:
    # A None entry in sys.modules makes `import tensorflow` raise ImportError, as if absent.
    for command in ("train mnist-mlp", "export model.keras"):
        code = (
            "import sys; sys.modules['tensorflow'] = sys.modules['keras'] = None\n"
            "from mlbridge.cli import main\n"
            f"name, arg = {command.split()!r}\n"
            "main([name, arg, '--data', sys.argv[1]] if name == 'train' else [name, sys.argv[1]])\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)],  # no data needed for the hint
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "needs the 'tensorflow' package: pip install 'mlbridge[training]'" in result.stderr


def test_help_lists_the_choices_without_tensorflow() -> None:
    result = _python("from mlbridge.training.commands import train\ntrain(['--help'])\n")
    assert result.returncode == 0, result.stderr
    assert "mnist-mlp|mnist-cnn|cifar10-cnn" in result.stdout and "asinh|atan" in result.stdout
