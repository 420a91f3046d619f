"""The peer: MLServer with a small onnxruntime runtime, in its own virtualenv.

``ensure_mlserver()`` creates ``bench/.venv-mlserver`` on first use (MLServer 1.7.1,
``uvloop<0.22`` — it fails with uvloop 0.23 —, onnxruntime and numpy; git-ignored), so
mlbridge's own environment is never touched. ``write_repository()`` lays out a model
repository: ``settings.json`` (loopback, the ports chosen, MLServer's defaults otherwise, or
``parallel_workers=0`` and ``debug=false``), one folder per model and the runtime module
:data:`RUNTIME`, written the way MLServer's docs write custom runtimes (NumpyCodec in and
out). Its onnxruntime session has mlbridge's thread settings, so the model costs the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-mlserver"
MLSERVER = VENV / "bin" / "mlserver"
REQUIREMENTS = ["mlserver==1.7.1", "uvloop<0.22", "onnxruntime", "numpy"]
RUNTIME_MODULE = "onnx_runtime"

RUNTIME = '''
"""An onnxruntime model for MLServer: V2 request -> numpy -> session.run -> V2 response."""

import os

import numpy as np
import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    async def load(self) -> bool:
        options = onnxruntime.SessionOptions()
        # as mlbridge's default "threads": 2, at most the CPUs this process may run on
        options.intra_op_num_threads = min(2, len(os.sched_getaffinity(0)))
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            self.settings.parameters.uri, options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        array = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        (result,) = self.session.run([self.output_name], {self.input_name: array})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(self.output_name, result)],
        )
'''


def ensure_mlserver() -> Path:
    """The ``mlserver`` command of the bench's own virtualenv (created on first use)."""
    if MLSERVER.exists():
        return MLSERVER
    print(f"creating {VENV} for MLServer (once; about a minute)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *REQUIREMENTS], check=True)
    return MLSERVER


def write_repository(
    folder: Path, models: dict[str, Path], ports: dict[str, int], parallel_workers: bool
) -> Path:
    """An MLServer model repository in ``folder``; ``ports``: http, grpc, metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{RUNTIME_MODULE}.py").write_text(RUNTIME.lstrip())
    settings: dict = {
        "host": "127.0.0.1",
        "http_port": ports["http"],
        "grpc_port": ports["grpc"],
        "metrics_port": ports["metrics"],
    }
    if not parallel_workers:
        settings.update(parallel_workers=0, debug=False)
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    for name, path in models.items():
        model_folder = folder / name
        model_folder.mkdir(exist_ok=True)
        model_settings = {
            "name": name,
            "implementation": f"{RUNTIME_MODULE}.OnnxModel",
            "parameters": {"uri": str(path)},
        }
        (model_folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return folder
