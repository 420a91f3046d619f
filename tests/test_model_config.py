"""Model configs (NAME.json, config.json): every key known; a misspelled one fails its model."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from support import TEST_MODELS

from mlbridge.errors import ConfigError, ModelLoadError
from mlbridge.model_config import KNOWN_KEYS, ModelConfig, parse_model_config, read_model_config
from mlbridge.protocol import TensorSpec
from mlbridge.registry import ModelSource, load_model, load_registry

LINEAR = TEST_MODELS / "linear.onnx"
LABELS = [str(d) for d in range(10)]


def write(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def repository(root: Path, config: dict) -> Path:
    """A model repository: digits/ (model.onnx + config.json) and a plain linear.onnx."""
    shutil.copy(LINEAR, write(root / "digits" / "config.json", config).with_name("model.onnx"))
    shutil.copy(LINEAR, root / "linear.onnx")
    return root


def test_no_config_gives_the_defaults() -> None:
    assert read_model_config(None) == ModelConfig()


def test_every_documented_key_reads(tmp_path: Path) -> None:
    spec = {"name": "input", "datatype": "FP32", "shape": [-1, 28, 28]}
    config = parse_model_config(
        {
            "labels": LABELS,
            "description": "digits",
            "inputs": [spec],
            "gradient": {"file": "m.vjp.onnx", "samples": 4},
            "heldout_accuracy": 0.95,
        },
        tmp_path / "m.json",
    )
    assert config.labels == tuple(LABELS) and config.description == "digits"
    assert config.inputs == (TensorSpec("input", "FP32", (-1, 28, 28)),)
    assert config.outputs is None
    assert config.gradient.file == "m.vjp.onnx" and config.gradient.checks == {"samples": 4}
    assert config.provenance == {"heldout_accuracy": 0.95}
    assert config.source == tmp_path / "m.json"


def test_a_misspelled_key_names_it_and_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", {"lables": LABELS})
    with pytest.raises(ModelLoadError) as caught:
        read_model_config(path)
    message = caught.value.message
    assert str(path) in message and "unknown key 'lables'" in message
    assert f"known keys: {', '.join(sorted(KNOWN_KEYS))}" in message


BAD_CONFIGS = [
    ("{", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"labels": "0123456789"}', "'labels' must be a list of names"),
    ('{"inputs": [{"name": "input"}]}', "'inputs' must be a list of {name, datatype, shape}"),
    ('{"gradient": "yes"}', "'gradient' must be false or an object with a 'file'"),
    ('{"gradient": {"fiel": "x.onnx"}}', "unknown key 'fiel' in 'gradient'; known keys:"),
    ('{"gradient": {"file": 3}}', "'gradient.file' must be a file name"),
    ('{"lables": [], "descripton": ""}', "unknown keys 'descripton', 'lables'"),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
def test_bad_configs_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "NAME.json"
    path.write_text(text)
    with pytest.raises(ModelLoadError) as caught:
        read_model_config(path)
    assert message in caught.value.message and str(path) in caught.value.message


def test_gradient_false_turns_the_gradient_off(tmp_path: Path) -> None:
    config = parse_model_config({"gradient": False}, tmp_path / "m.json")
    assert not config.gradient.enabled


def test_a_misspelled_key_fails_that_model_and_the_others_load(tmp_path: Path, caplog) -> None:
    root = repository(tmp_path / "models", {"lables": LABELS})
    with caplog.at_level(logging.ERROR, logger="mlbridge"):
        registry = load_registry([root])
    assert "digits" not in registry.names() and "linear" in registry.names()
    (record,) = [r for r in caplog.records if "could not load" in r.getMessage()]
    assert "unknown key 'lables'" in record.getMessage()
    assert "known keys: " in record.getMessage() and "labels" in record.getMessage()


def test_strict_mode_refuses_to_start_on_a_bad_config(tmp_path: Path) -> None:
    root = repository(tmp_path / "models", {"lables": LABELS})
    with pytest.raises(ConfigError, match=r"unknown key 'lables'.*\(--strict\)"):
        load_registry([root], strict=True)


def test_a_good_folder_config_gives_labels_and_description(tmp_path: Path) -> None:
    root = repository(tmp_path / "models", {"labels": LABELS, "description": "a toy"})
    model = load_registry([root]).get("digits")
    assert model.signature.labels == tuple(LABELS) and model.description == "a toy"
    assert model.config.source == root / "digits" / "config.json"


def test_a_sidecar_declaring_another_input_name_fails_the_load(tmp_path: Path) -> None:
    model = shutil.copy(LINEAR, tmp_path / "linear.onnx")
    spec = {"name": "pixels", "datatype": "FP32", "shape": [-1, 28, 28]}
    sidecar = write(tmp_path / "linear.json", {"inputs": [spec]})
    with pytest.raises(ModelLoadError) as caught:
        load_model(ModelSource("linear", Path(model), sidecar))
    assert caught.value.message == (
        f"{sidecar}: declares inputs [('pixels', 'FP32')]; linear.onnx has [('input', 'FP32')]"
    )


def test_a_sidecar_declaring_the_right_signature_loads(tmp_path: Path) -> None:
    model = shutil.copy(LINEAR, tmp_path / "linear.onnx")
    specs = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 28, 28]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}],
    }
    sidecar = write(tmp_path / "linear.json", specs)
    (loaded, *_) = load_model(ModelSource("linear", Path(model), sidecar))
    assert loaded.name == "linear" and loaded.config.inputs is not None
