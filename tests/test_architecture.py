"""The package's shape, checked by reading its source: one-way imports, one owner per fact.

Imports flow one way (a module may import its own layer or a lower one)::

    errors, protocol  <-  codecs, runtimes, auth, settings, model_config, connection,
    arrayio, gradients  <-  registry  <-  inference  <-  server, ray_serve  <-  client  <-
    training, functions, doctor, triton (CLI-level tools)  <-  cli

Serving modules never import the training or functions tools, and the Python client
talks HTTP only: it never imports the layers that load or run models.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from support import REPO

PACKAGE = REPO / "mlbridge"
LAYERS = {
    "": 0,  # mlbridge/__init__.py: the version only
    "errors": 0,
    "protocol": 0,
    "demo_models": 0,  # package data
    "codecs": 1,
    "runtimes": 1,
    "auth": 1,
    "settings": 1,
    "eager": 0,  # coroutines run at once, a task only if they wait (inference, server)
    "batching": 1,  # the policy type (model configs) and the batcher (inference)
    "model_config": 1,
    "connection": 1,
    "arrayio": 1,
    "gradients": 1,
    "registry": 2,
    "inference": 3,
    "server": 4,
    "ray_serve": 4,  # the server deployed on Ray Serve: builds the same app in each replica
    "client": 5,
    "training": 6,
    "functions": 6,
    "demo_functions": 6,  # the functions that export-fn exports
    "doctor": 6,  # `mlbridge doctor`: checks the installation
    "triton": 6,  # `mlbridge export-triton`: writes and checks Triton model repositories
    "cli": 7,
    "__main__": 7,
}
CLIENT_NEVER_IMPORTS = {"runtimes", "registry", "inference", "server", "gradients"}
HEAVY = ("tensorflow", "keras", "tf_keras", "jax", "jaxlib")
BINARY_ENCODING = re.compile(r"""newbyteorder\(\s*["']<["']\s*\)|binary_data_size""")
V2_CODEC = PACKAGE / "codecs" / "v2.py"
CONNECTION = PACKAGE / "connection.py"
HELPERS = [
    REPO / "conftest.py",
    *sorted((REPO / "tests" / "support").glob("*.py")),
    REPO / "tests" / "testdata" / "make_golden.py",
    *sorted((REPO / "bench").glob("*.py")),
]


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The mlbridge modules that the module ``name`` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {module for module in found if module.split(".")[0] == "mlbridge"}


def layer_key(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_has_a_layer() -> None:
    unplaced = sorted({layer_key(m) for m in modules()} - set(LAYERS))
    assert not unplaced, f"add these to LAYERS in {Path(__file__).name}: {unplaced}"


def test_imports_flow_one_way() -> None:
    known = modules()
    wrong = []
    for name, path in known.items():
        for target in sorted(imported(name, path, known)):
            source_layer = LAYERS.get(layer_key(name), 0)  # an unplaced module fails above
            target_layer = LAYERS.get(layer_key(target), 0)
            if target_layer > source_layer:
                wrong.append(f"{name} (layer {source_layer}) imports {target} ({target_layer})")
    assert not wrong, "imports against the flow:\n" + "\n".join(wrong)


def test_the_python_client_never_loads_models() -> None:
    known = modules()
    used = {layer_key(m) for m in imported("mlbridge.client", known["mlbridge.client"], known)}
    assert not used & CLIENT_NEVER_IMPORTS, sorted(used & CLIENT_NEVER_IMPORTS)


def test_the_import_reader_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    known = {"mlbridge.server.app": Path(), "mlbridge.server.cas": Path()}
    source = tmp_path / "app.py"
    source.write_text(
        "from . import cas\nfrom ..inference import Executor\n"
        "def later():\n    from .. import __version__\n    import mlbridge.cli\n"
    )
    assert imported("mlbridge.server.app", source, known) == {
        "mlbridge.server.cas",
        "mlbridge.inference",
        "mlbridge",
        "mlbridge.cli",
    }


def string_literals(path: Path) -> list[str]:
    return [
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_only_connection_py_names_the_connection_file() -> None:
    readers = [
        str(path.relative_to(REPO))
        for path in [*modules().values(), *HELPERS]
        if path != CONNECTION
        and any(
            s.strip() == "server.json" or s.endswith("/server.json") for s in string_literals(path)
        )
    ]
    assert not readers, f"use mlbridge.connection instead of naming server.json in {readers}"


def test_only_the_v2_codec_writes_binary_tensors() -> None:
    writers = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in [*modules().values(), *HELPERS]
        if path != V2_CODEC
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if BINARY_ENCODING.search(line)
    ]
    assert not writers, "V2 binary encoding outside mlbridge/codecs/v2.py:\n" + "\n".join(writers)


def test_serving_the_demo_models_imports_no_training_framework() -> None:
    probe = (
        "import json, sys\n"
        "from mlbridge.auth import TokenAuthenticator\n"
        "from mlbridge.registry import load_registry\n"
        "from mlbridge.server.app import create_app\n"
        "from mlbridge.settings import load_settings\n"
        "registry = load_registry([])\n"
        "settings = load_settings(environ={})\n"
        "create_app(registry, TokenAuthenticator('s', settings.token_file), settings)\n"
        "print(json.dumps({'models': registry.names(), 'modules': sorted(sys.modules)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"mnist", "mnist-cnn"} <= set(report["models"])
    assert "onnxruntime" in report["modules"]
    assert not [m for m in report["modules"] if m.split(".")[0] in HEAVY]
