"""`mlbridge export-triton`: Triton model folders, checked against Triton's own schema, served back.

There is no Triton binary here: each config.pbtxt is parsed with Triton's ``ModelConfig``
protobuf (from the tritonclient wheel) and compared with its ONNX file, and the same folder
is served by mlbridge, which must answer exactly as it does from the original files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient
from support import TESTDATA, start_server, v2_json
from support.fakes import AUTH, in_process_app

from mlbridge.batching import BatchPolicy
from mlbridge.errors import ConfigError, MissingDependency
from mlbridge.registry import load_registry
from mlbridge.triton import check_model_folder, check_repository, export_repository, triton_schema

try:
    triton_schema()
except MissingDependency as missing:
    pytest.skip(f"Triton's schema cannot be loaded: {missing.message}", allow_module_level=True)

DEMO = ["box_volume", "lj13", "mnist", "mnist-cnn"]
EXPORTED = sorted(DEMO + [f"{name}.vjp" for name in DEMO])
SERVER_POLICY = BatchPolicy(64, 0)  # the settings' defaults
MODELS = TESTDATA / "models"
IMAGES = np.random.default_rng(12).random((5, 28, 28), dtype=np.float32)
ATOMS = np.arange(39.0).reshape(13, 3) / 3  # 13 distinct positions, sqrt(3) apart in turn


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models exported as a Triton repository."""
    folder = tmp_path_factory.mktemp("triton") / "repo"
    report = export_repository(folder, [], SERVER_POLICY)
    assert sorted(report.written) == EXPORTED and not report.skipped
    return folder


def test_every_demo_model_and_companion_parses_against_triton_model_config(repo: Path) -> None:
    assert sorted(p.name for p in repo.iterdir()) == EXPORTED
    assert check_repository(repo) == EXPORTED
    schema = triton_schema()
    for name in EXPORTED:
        config = check_model_folder(repo / name)
        assert isinstance(config, schema.ModelConfig) and config.name == name
        assert config.backend == "onnxruntime" and config.max_batch_size == 64
        assert config.HasField("dynamic_batching")
        assert (repo / name / "1" / "model.onnx").is_file()


def test_dims_leave_out_the_batch_axis_and_labels_go_with_the_output(repo: Path) -> None:
    mnist = check_model_folder(repo / "mnist")
    assert [list(t.dims) for t in mnist.input] == [[28, 28]]
    assert [list(t.dims) for t in mnist.output] == [[10]]
    assert mnist.output[0].label_filename == "labels.txt"
    assert (repo / "mnist" / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    volume = check_model_folder(repo / "box_volume")  # output [-1]: only the batch axis
    assert list(volume.output[0].dims) == [1] and list(volume.output[0].reshape.shape) == []
    gradient = check_model_folder(repo / "mnist.vjp")
    assert [t.name for t in gradient.input] == ["input", "output_cotangent"]
    assert [t.name for t in gradient.output] == ["input_grad"]


def test_batching_comes_from_the_settings_or_the_model_config(tmp_path: Path) -> None:
    off = export_repository(tmp_path / "off", [MODELS / "linear.onnx"], BatchPolicy(1, 0))
    assert off.written == ["linear", "linear.vjp"]
    config = check_model_folder(tmp_path / "off" / "linear")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [list(t.dims) for t in config.input] == [[-1, 28, 28]]
    source = tmp_path / "src" / "digits"
    source.mkdir(parents=True)
    shutil.copy(MODELS / "linear.onnx", source / "model.onnx")
    batching = {"max_batch_size": 8, "max_delay_us": 500}
    (source / "config.json").write_text(json.dumps({"batching": batching}))
    export_repository(tmp_path / "own", [source.parent], SERVER_POLICY)
    config = check_model_folder(tmp_path / "own" / "digits")
    assert config.max_batch_size == 8
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert json.loads((tmp_path / "own" / "digits" / "config.json").read_text())["batching"] == (
        batching
    )
    assert check_model_folder(tmp_path / "own" / "digits.vjp").max_batch_size == 64


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("max_batch_size:", "max_batch_sise:", 'no field named "max_batch_sise"'),
        ("data_type: TYPE_FP32", "data_type: TYPE_FLOAT32", "no value named TYPE_FLOAT32"),
        ("dims: [28, 28]", "dims: [28, 27]", "input 'input' has dims [28, 27]"),
        ("dims: [10]", "dims: [10, 1]", "output 'output' has dims [10, 1]"),
        ("max_batch_size: 64", "max_batch_size: 0", "dynamic_batching needs max_batch_size"),
        ("data_type: TYPE_FP32", "data_type: TYPE_FP64", "has data_type TYPE_FP64"),
        ('name: "input"', 'name: "image"', "inputs ['image'] differ"),
        ('name: "mnist"', 'name: "mnist2"', "name 'mnist2' differs"),
    ],
)
def test_a_broken_config_is_rejected_naming_the_fault(
    repo: Path, tmp_path: Path, old: str, new: str, named: str
) -> None:
    folder = tmp_path / "mnist"
    shutil.copytree(repo / "mnist", folder)
    config = folder / "config.pbtxt"
    assert old in config.read_text()
    config.write_text(config.read_text().replace(old, new, 1))
    with pytest.raises(ConfigError, match=r"config\.pbtxt") as raised:
        check_model_folder(folder)
    assert named in raised.value.message


def test_reshape_must_keep_the_number_of_elements(repo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "box_volume"
    shutil.copytree(repo / "box_volume", folder)
    config = folder / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: [1]", "dims: [2]"))
    with pytest.raises(ConfigError, match="reshapes dims \\[2\\] to \\[\\]"):
        check_model_folder(folder)


REQUESTS = [
    ("/v2/models/mnist/infer", {"json": v2_json(IMAGES)}),
    ("/v2/models/mnist-cnn/infer", {"json": v2_json(IMAGES)}),
    ("/v2/models/mnist.vjp/infer", {"json": v2_json(IMAGES)}),
    ("/mnist-cnn/jacobian", {"content": json.dumps(IMAGES[0].tolist())}),
    ("/box_volume/gradient", {"content": "{{2., 4., 8.}, {1., 2., 3.}}"}),
    ("/lj13/gradient", {"content": json.dumps(ATOMS.tolist())}),
    ("/lj13", {"content": json.dumps((ATOMS * 1.1).tolist())}),
]


@pytest.fixture(scope="module")
def both(repo: Path) -> Iterator[tuple[TestClient, TestClient]]:
    """The demo models served from their own files, and from the exported repository."""
    original, exported = load_registry([], strict=True), load_registry([repo], strict=True)
    with (
        TestClient(in_process_app(original), headers=AUTH) as a,
        TestClient(in_process_app(exported), headers=AUTH) as b,
    ):
        yield a, b
    original.close()
    exported.close()


def test_the_exported_repository_serves_the_same_models(both) -> None:
    original, exported = both
    assert exported.get("/v2/models").json() == original.get("/v2/models").json()
    for name in EXPORTED:
        path = f"/v2/models/{name}"
        assert exported.get(path).json() == original.get(path).json()


@pytest.mark.parametrize(("path", "body"), REQUESTS, ids=[path for path, _ in REQUESTS])
def test_the_exported_repository_gives_the_same_answers(both, path: str, body: dict) -> None:
    original, exported = both
    expected, got = original.post(path, **body), exported.post(path, **body)
    assert expected.status_code == got.status_code == 200, got.text
    assert got.content == expected.content


def test_mlbridge_serve_repo_answers_tritonclient_as_the_original(
    repo: Path, tmp_path: Path, both
) -> None:
    triton = pytest.importorskip("tritonclient.http")
    server = start_server(tmp_path / "home", str(repo))
    try:
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        assert sorted(server.info["models"]) == EXPORTED
        reply = both[0].post("/v2/models/mnist/infer", json=v2_json(IMAGES)).json()
        expected = np.asarray(reply["outputs"][0]["data"], dtype=np.float32).reshape(5, 10)
        for binary in (True, False):
            tensor = triton.InferInput("input", list(IMAGES.shape), "FP32")
            tensor.set_data_from_numpy(IMAGES, binary_data=binary)
            wanted = triton.InferRequestedOutput("output", binary_data=binary)
            result = client.infer("mnist", [tensor], outputs=[wanted], headers=server.auth)
            assert np.array_equal(result.as_numpy("output"), expected)
        client.close()
    finally:
        server.stop()


def test_export_triton_command_takes_tflite_through_its_onnx_export(tmp_path: Path) -> None:
    shutil.copy(MODELS / "linear-lite.tflite", tmp_path / "lite.tflite")
    shutil.copy(MODELS / "linear.onnx", tmp_path / "lite-export.onnx")
    exports = {"exports": {"onnx": {"file": "lite-export.onnx"}}}
    (tmp_path / "lite.json").write_text(json.dumps(exports))
    shutil.copy(MODELS / "linear-lite.tflite", tmp_path / "bare.tflite")
    done = subprocess.run(
        [sys.executable, "-m", "mlbridge", "export-triton", str(tmp_path / "repo"),
         str(tmp_path / "lite.tflite"), str(tmp_path / "bare.tflite")],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["lite", "lite.vjp"]
    assert "bare: skipped: a .tflite model without an ONNX export" in done.stderr
    assert check_repository(tmp_path / "repo") == ["lite", "lite.vjp"]
    again = subprocess.run(
        [sys.executable, "-m", "mlbridge", "export-triton", str(tmp_path / "repo"),
         str(tmp_path / "lite.tflite")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 1 and "exists; remove it or pass --replace" in again.stderr


def test_discovery_of_the_triton_layout(repo: Path, tmp_path: Path) -> None:
    from mlbridge.registry import discover

    layout = tmp_path / "layout"
    shutil.copytree(repo / "mnist", layout / "digits")
    (layout / "digits" / "1").rename(layout / "digits" / "3")  # the highest version serves
    (layout / "digits" / "2").mkdir()  # empty: not a version
    shutil.copytree(repo / "box_volume.vjp", layout / "box_volume.vjp")  # no model beside it
    (layout / "empty").mkdir()
    (layout / "empty" / "config.pbtxt").write_text('name: "empty"\n')  # no version folder
    found = {source.name: source for source in discover([layout])}
    assert sorted(found) == ["box_volume.vjp", "digits"]
    assert found["digits"].version == "3" and found["digits"].config_file is not None
    assert found["digits"].companion_file is None  # no digits.vjp folder: built at load
    registry = load_registry([layout], strict=True)
    assert registry.get("digits").version == "3"
    assert registry.get("digits.vjp").version == "3"
    assert registry.get("box_volume.vjp").gradient_of is None  # alone, an ordinary model
    registry.close()
