"""`mlbridge export-fn`: a JAX function and its VJP as batched ONNX, checked, with a sidecar."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from click.testing import CliRunner
from support import REPO

from mlbridge.cli import main

functions = pytest.mark.functions
SIDECAR_KEYS = ["description", "source", "inputs", "outputs", "exports", "gradient"]
SPRING = '''
import jax.numpy as jnp


def spring(x, k):
    """Energy of a spring of stiffness k stretched by x.

    More lines that the description leaves out.
    """
    # x.ravel()[0]: its gradient holds lax.pad, which needs export._symbolic_dims_in_onnx_ir
    return 0.5 * k * jnp.sum(x**2) + jnp.sin(x.ravel()[0])
'''


def _session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _signature(session: onnxruntime.InferenceSession) -> tuple[list, list]:
    inputs = [(v.name, v.shape) for v in session.get_inputs()]
    return inputs, [(v.name, v.shape) for v in session.get_outputs()]


def _export(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["export-fn", *args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def spring(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """spring.py exported with two inputs (a vector and a scalar) to a fresh folder."""
    folder = tmp_path_factory.mktemp("spring")
    (folder / "spring.py").write_text(SPRING)
    out = folder / "out"
    code, output = _export(
        f"{folder / 'spring.py'}:spring", "--input", "3:float64", "--input", "scalar:float64",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    return out


@functions
def test_files_carry_the_parameter_names_and_a_dynamic_batch(spring: Path) -> None:
    assert sorted(p.name for p in spring.iterdir()) == [
        "spring.json",
        "spring.onnx",
        "spring.vjp.onnx",
    ]
    assert _signature(_session(spring / "spring.onnx")) == (
        [("x", ["batch", 3]), ("k", ["batch"])],
        [("output", ["batch"])],
    )
    assert _signature(_session(spring / "spring.vjp.onnx")) == (
        [("x", ["batch", 3]), ("k", ["batch"]), ("output_cotangent", ["batch"])],
        [("x_grad", ["batch", 3]), ("k_grad", ["batch"])],
    )


@functions
@pytest.mark.parametrize("batch", [1, 5])
def test_value_and_vjp_agree_with_jax_at_any_batch(spring: Path, batch: int) -> None:
    import jax

    from mlbridge.functions.export import load_function

    function, _, _ = load_function(f"{spring.parent / 'spring.py'}:spring")
    rng = np.random.default_rng(batch)
    x, k, dy = rng.normal(size=(batch, 3)), rng.normal(size=batch), rng.normal(size=batch)
    (value,) = _session(spring / "spring.onnx").run(None, {"x": x, "k": k})
    x_grad, k_grad = _session(spring / "spring.vjp.onnx").run(
        None, {"x": x, "k": k, "output_cotangent": dy}
    )
    with jax.enable_x64(True):
        expected = jax.vmap(function)(x, k)
        expected_grads = jax.vmap(lambda *a: jax.vjp(function, *a[:2])[1](a[2]))(x, k, dy)
    assert value.shape == (batch,) and x_grad.shape == (batch, 3) and k_grad.shape == (batch,)
    np.testing.assert_allclose(value, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(x_grad, expected_grads[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(k_grad, expected_grads[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(x_grad, dy[:, None] * (k[:, None] * x + [[1, 0, 0]] * np.cos(x)))


@functions
def test_sidecar_says_what_was_exported_and_how_well_it_matched(spring: Path) -> None:
    sidecar = json.loads((spring / "spring.json").read_text())
    assert list(sidecar) == SIDECAR_KEYS
    assert sidecar["description"] == "Energy of a spring of stiffness k stretched by x."
    assert sidecar["source"] == "spring.py:spring"
    assert sidecar["inputs"] == [
        {"name": "x", "datatype": "FP64", "shape": [-1, 3]},
        {"name": "k", "datatype": "FP64", "shape": [-1]},
    ]
    assert sidecar["outputs"] == [{"name": "output", "datatype": "FP64", "shape": [-1]}]
    assert sidecar["exports"]["onnx"]["file"] == "spring.onnx"
    assert sidecar["gradient"]["file"] == "spring.vjp.onnx"
    assert sidecar["gradient"]["checked_against"] == "jax.vjp"
    for measured in (sidecar["exports"]["onnx"], sidecar["gradient"]):
        assert measured["samples"] == 16
        assert 0 <= measured["max_abs_difference"] <= 1e-9


@functions
def test_float32_name_description_and_samples_are_honoured(tmp_path: Path) -> None:
    (tmp_path / "spring.py").write_text(SPRING)
    code, output = _export(
        f"{tmp_path / 'spring.py'}:spring", "--input", "2,2:float32", "--input", "scalar:float32",
        "--out", str(tmp_path / "out"), "--name", "stiff", "--description", "A spring.",
        "--samples", "4", "--seed", "7",
    )  # fmt: skip
    assert code == 0, output
    assert "stiff.vjp.onnx: max |difference| from JAX" in output
    sidecar = json.loads((tmp_path / "out" / "stiff.json").read_text())
    assert sidecar["description"] == "A spring."
    assert sidecar["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, 2, 2]}
    assert sidecar["gradient"]["samples"] == 4
    assert sidecar["gradient"]["max_abs_difference"] <= 1e-5
    (x_grad, _) = _session(tmp_path / "out" / "stiff.vjp.onnx").run(
        None,
        {
            "x": np.ones((1, 2, 2), np.float32),
            "k": np.full(1, 2, np.float32),
            "output_cotangent": np.ones(1, np.float32),
        },
    )
    assert x_grad.dtype == np.float32 and x_grad.shape == (1, 2, 2)


@functions
def test_a_file_outside_the_tolerance_is_not_written(tmp_path: Path) -> None:
    demo = REPO / "mlbridge" / "demo_functions" / "lennard_jones.py"
    code, output = _export(
        f"{demo}:lennard_jones", "--input", "13,3:float64", "--out", str(tmp_path),
        "--tolerance", "0",
    )  # fmt: skip
    assert code == 1
    assert "differs from JAX by" in output and "the tolerance is 0" in output
    assert list(tmp_path.iterdir()) == []


@functions
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "3"], "--input '3': expected SHAPE:DTYPE such as 3:float64"),
        (["--input", "3,x:float64"], "--input '3,x:float64': shape '3,x'"),
        (["--input", "3:int8"], "dtype 'int8'; expected float32 or float64"),
        ([], "takes (x, k): expected 2 --input SHAPE:DTYPE"),
        (["--input", "3:float64"], "got 1"),
        (["--input", "3:float64", "--input", "scalar:float32"], "dtypes float32, float64"),
    ],
)
def test_bad_inputs_give_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "spring.py").write_text(SPRING)
    code, output = _export(f"{tmp_path / 'spring.py'}:spring", *args, "--out", str(tmp_path))
    assert code == 1
    assert output.startswith("Error: ") and output.count("\n") == 1, output
    assert message in output


@functions
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("spring.py:energy", "spring.py has no function 'energy'; its functions: spring"),
        ("absent.py:spring", "absent.py: no such file"),
        ("spring.py", "'spring.py': expected FILE.py:FUNCTION"),
        ("pair.py:pair", "pair.py:pair returns a tuple of 2 arrays; export-fn serves one output"),
    ],
)
def test_bad_targets_give_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spring.py").write_text(SPRING)
    (tmp_path / "pair.py").write_text("def pair(x):\n    return x, 2 * x\n")
    code, output = _export(target, "--input", "3:float64", "--out", str(tmp_path / "out"))
    assert code == 1
    assert output.startswith("Error: ") and output.count("\n") == 1, output
    assert message in output


def test_the_command_imports_no_jax() -> None:
    code = (
        "import sys, mlbridge.cli, mlbridge.functions.commands\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jax2onnx')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_jax_gives_the_install_hint() -> None:
    # A None entry in sys.modules makes `import jax` raise ImportError, as if absent.
    code = (
        "import sys; sys.modules['jax'] = None\n"
        "from mlbridge.cli import main\n"
        "main(['export-fn', 'f.py:f', '--input', '3:float64'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr == (
        "Error: mlbridge export-fn needs the 'jax' package: pip install 'mlbridge[functions]'\n"
    )
