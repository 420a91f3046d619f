"""Discovery (files, folders, sidecars, companions), loading, and the read-only registry."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support import TEST_MODELS
from support.fakes import EchoRuntime, fake_models, served

from mlbridge.errors import ConfigError, GradientUnavailable, ModelLoadError, ModelNotFound
from mlbridge.registry import (
    DEMO_MODELS,
    ModelRegistry,
    ModelSource,
    discover,
    load_model,
    load_registry,
)

LINEAR = TEST_MODELS / "linear.onnx"


def scale_graph(path: Path, factor: float, inputs: list[str], out: str, source: str) -> Path:
    """An ONNX file computing ``out = factor * source`` over FP32 [N, 3] tensors."""
    graph = helper.make_graph(
        [helper.make_node("Mul", [source, "factor"], [out])],
        path.stem,
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3]) for name in inputs],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.array(factor, np.float32), "factor")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def double(folder: Path, companion_factor: float | None = None) -> Path:
    """double.onnx (y = 2x) and, if asked, the companion double.vjp.onnx (dx = factor * dy)."""
    folder.mkdir(parents=True, exist_ok=True)
    if companion_factor is not None:
        companion = folder / "double.vjp.onnx"
        scale_graph(companion, companion_factor, ["x", "y_cotangent"], "x_grad", "y_cotangent")
    return scale_graph(folder / "double.onnx", 2.0, ["x"], "y", "x")


def integer_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["i"], ["o"])],
        "ints",
        [helper.make_tensor_value_info("i", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("o", TensorProto.INT64, ["N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


# Discovery


def test_a_file_is_served_under_its_stem_with_its_sidecar(tmp_path: Path) -> None:
    model = shutil.copy(LINEAR, tmp_path / "digits.onnx")
    assert discover([Path(model)]) == [ModelSource("digits", Path(model), None)]
    (tmp_path / "digits.json").write_text("{}")
    assert discover([Path(model)]) == [ModelSource("digits", Path(model), tmp_path / "digits.json")]


def test_a_repository_folder_holds_files_and_model_folders(tmp_path: Path) -> None:
    shutil.copy(LINEAR, tmp_path / "a.onnx")
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b").mkdir()
    shutil.copy(LINEAR, tmp_path / "b" / "model.onnx")
    (tmp_path / "b" / "config.json").write_text("{}")
    (tmp_path / "c").mkdir()
    shutil.copy(LINEAR, tmp_path / "c" / "model.onnx")
    for ignored in (".hidden", "_private"):
        (tmp_path / ignored).mkdir()
        shutil.copy(LINEAR, tmp_path / ignored / "model.onnx")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "empty").mkdir()
    assert discover([tmp_path]) == [
        ModelSource("a", tmp_path / "a.onnx", tmp_path / "a.json"),
        ModelSource("b", tmp_path / "b" / "model.onnx", tmp_path / "b" / "config.json"),
        ModelSource("c", tmp_path / "c" / "model.onnx", None),
    ]


def test_a_sidecar_in_a_model_folder_wins_over_its_config_json(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(LINEAR, folder / "model.onnx")
    (folder / "model.json").write_text("{}")
    (folder / "config.json").write_text("{}")
    assert discover([tmp_path])[0].config_file == folder / "model.json"


def test_gradient_companion_files_are_not_models(tmp_path: Path) -> None:
    double(tmp_path, companion_factor=2.0)
    assert [source.name for source in discover([tmp_path])] == ["double"]


def test_a_model_folder_with_two_model_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    for name in ("one.onnx", "two.onnx"):
        shutil.copy(LINEAR, tmp_path / "m" / name)
    with pytest.raises(ConfigError, match=r"holds several model files \(one.onnx, two.onnx\)"):
        discover([tmp_path])


def test_a_missing_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.onnx: no such file or folder"):
        discover([tmp_path / "nope.onnx"])


# Loading


def test_no_paths_serve_the_demo_models() -> None:
    registry = load_registry([])
    assert {"mnist", "mnist-cnn"} <= set(registry.names())
    assert registry.get("mnist").path == DEMO_MODELS / "mnist.onnx"


def test_a_duplicate_name_is_reported_and_the_first_kept(tmp_path: Path, caplog) -> None:
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(LINEAR, other / "linear.onnx")
    with caplog.at_level(logging.ERROR, logger="mlbridge"):
        registry = load_registry([LINEAR, other / "linear.onnx"])
    assert registry.get("linear").path == LINEAR
    assert "a model named 'linear' is already served" in caplog.text
    with pytest.raises(ConfigError, match=r"already served \(--strict\)"):
        load_registry([LINEAR, other / "linear.onnx"], strict=True)


def test_a_companion_never_replaces_a_model_of_its_name(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "double.vjp").mkdir(parents=True)
    shutil.copy(LINEAR, first / "double.vjp" / "model.onnx")
    double(second, companion_factor=2.0)
    registry = load_registry([first, second])
    assert registry.get("double.vjp").path == first / "double.vjp" / "model.onnx"
    assert (
        registry.get("double").gradient_unavailable
        == "a model named 'double.vjp' is already served"
    )


def test_a_broken_file_is_reported_and_the_others_load(tmp_path: Path, caplog) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    shutil.copy(LINEAR, tmp_path / "linear.onnx")
    with caplog.at_level(logging.ERROR, logger="mlbridge"):
        registry = load_registry([tmp_path])
    assert "linear" in registry.names() and "broken" not in registry.names()
    assert "could not load" in caplog.text and "broken.onnx" in caplog.text
    with pytest.raises(ConfigError, match=r"broken.onnx.*\(--strict\)"):
        load_registry([tmp_path], strict=True)


def test_an_unknown_suffix_names_the_known_ones(tmp_path: Path) -> None:
    source = ModelSource("m", tmp_path / "m.pt")
    with pytest.raises(ModelLoadError, match=r"unknown model file type '.pt'; expected one of"):
        load_model(source)


def test_a_companion_file_beside_the_model_serves_its_gradient(tmp_path: Path) -> None:
    model_file = double(tmp_path, companion_factor=3.0)  # 3, not 2: proves the file is used
    model, companion = load_model(ModelSource("double", model_file))
    assert model.gradient == "double.vjp" and companion.name == "double.vjp"
    assert companion.gradient_of == "double" and companion.path == tmp_path / "double.vjp.onnx"
    assert [spec.name for spec in companion.signature.inputs] == ["x", "y_cotangent"]
    result = companion.runtime.predict(
        {"x": np.ones((1, 3), np.float32), "y_cotangent": np.ones((1, 3), np.float32)}
    )
    assert result["x_grad"].tolist() == [[3.0, 3.0, 3.0]]
    assert model.runtime.keep_memory and not companion.runtime.keep_memory  # arena off


def test_the_config_may_name_the_companion_file(tmp_path: Path) -> None:
    model_file = double(tmp_path / "models")
    scale_graph(
        tmp_path / "models" / "grad.onnx", 5.0, ["x", "y_cotangent"], "x_grad", "y_cotangent"
    )
    (tmp_path / "models" / "double.json").write_text(
        json.dumps({"gradient": {"file": "grad.onnx"}})
    )
    (source,) = discover([model_file])
    _, companion = load_model(source)
    assert companion.path == tmp_path / "models" / "grad.onnx"
    assert not companion.runtime.keep_memory


def test_gradient_false_serves_no_companion(tmp_path: Path) -> None:
    model_file = double(tmp_path, companion_factor=2.0)
    (tmp_path / "double.json").write_text(json.dumps({"gradient": False}))
    (source,) = discover([model_file])
    (model,) = load_model(source)
    assert model.gradient is None and '"gradient": false' in model.gradient_unavailable
    with pytest.raises(GradientUnavailable, match="model 'double' serves no gradient: its config"):
        model.companion_name()


def test_a_companion_with_the_wrong_signature_leaves_the_model_served(tmp_path: Path) -> None:
    model_file = double(tmp_path)
    scale_graph(tmp_path / "double.vjp.onnx", 2.0, ["x", "dy"], "dx", "dy")
    (model,) = load_model(ModelSource("double", model_file))
    assert model.gradient is None
    assert model.gradient_unavailable == (
        "its gradient file takes ['x', 'dy'] and gives ['dx']; expected "
        "['x', 'y_cotangent'] and ['x_grad']"
    )


def test_a_model_of_integers_has_no_gradient(tmp_path: Path) -> None:
    (model,) = load_model(ModelSource("ints", integer_model(tmp_path / "ints.onnx")))
    assert model.gradient_unavailable == "its inputs are not real numbers"


# The registry


def test_the_registry_reads_by_name_and_lists_in_order() -> None:
    models = fake_models()
    registry = ModelRegistry(models)
    assert registry.names() == ["echo", "echo.vjp", "failing", "slow"]
    assert [m.name for m in registry.models()] == registry.names()
    assert len(registry) == 4 and registry.get("echo") is models[0]
    assert registry.get("echo").platform == "echo"
    assert not hasattr(registry, "models_by_name") and not isinstance(registry, dict)


def test_an_unknown_name_lists_the_served_ones() -> None:
    with pytest.raises(ModelNotFound, match="no model named 'nope'; this server serves: echo, "):
        ModelRegistry(fake_models()).get("nope")
    with pytest.raises(ModelNotFound, match="this server serves: none"):
        ModelRegistry([]).get("nope")


def test_closing_the_registry_closes_every_runtime() -> None:
    runtime = EchoRuntime()
    ModelRegistry([served("echo", runtime)]).close()
    assert runtime.closed
