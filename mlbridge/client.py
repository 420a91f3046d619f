"""Python client: finds the running server and predicts with numpy arrays.

>>> from mlbridge.client import Client
>>> Client().predict("mnist", images)        # images: float32 [N, 28, 28]

``Client()`` reads ``$MLBRIDGE_HOME/server.json`` (default ``~/.mlbridge``)
and the token file it names. Requests use the V2 binary tensor extension,
so big arrays travel as raw bytes, not JSON text.
"""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .auth import read_secret
from .errors import ConfigError, MLBridgeError
from .protocol import numpy_dtype, v2_datatype

DEFAULT_HOME = "~/.mlbridge"
TIMEOUT_S = 300


class ServerError(MLBridgeError):
    """An error reply from the server; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """A keep-alive connection to one mlbridge (or any KServe V2) server."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        token_file: Path | str | None = None,
        home: Path | str | None = None,
    ) -> None:
        if url is None:
            url, token_file = _discover(home)
        self.url = url.rstrip("/")
        self._token = (
            token if token is not None else (read_secret(Path(token_file)) if token_file else None)
        )
        parts = urlsplit(self.url)
        self._connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
        self._inputs: dict[str, list[dict[str, Any]]] = {}

    def models(self) -> list[str]:
        """Names of the served models."""
        return [model["name"] for model in self._json("GET", "/v2/models")["models"]]

    def metadata(self, model: str) -> dict[str, Any]:
        """The V2 metadata of ``model``: inputs, outputs, labels."""
        return self._json("GET", f"/v2/models/{model}")

    def server_metadata(self) -> dict[str, Any]:
        return self._json("GET", "/v2")

    def live(self) -> bool:
        return bool(self._json("GET", "/v2/health/live").get("live"))

    def predict(
        self,
        model: str,
        inputs: np.ndarray | dict[str, np.ndarray],
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Run ``model``; an array in gives its first output, a dict gives all outputs.

        An array with one axis fewer than the model's input is one example:
        it is sent as a batch of one and the result loses the batch axis.
        """
        if isinstance(inputs, dict):
            return self._infer(model, inputs)
        spec = self._sole_input(model)
        single = np.ndim(inputs) == len(spec["shape"]) - 1
        batch = np.asarray(inputs)[np.newaxis] if single else inputs
        result = next(iter(self._infer(model, {spec["name"]: batch}).values()))
        return result[0] if single else result

    def _infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        header, tail = binary_request(self._typed(model, inputs))
        _, headers, body = self._request(
            "POST",
            f"/v2/models/{model}/infer",
            header + tail,
            {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
        )
        return _binary_response(body, headers.get("inference-header-content-length"))

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _typed(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Give each array the datatype the model declares (numpy defaults to float64)."""
        declared = {spec["name"]: spec["datatype"] for spec in self._input_specs(model)}
        return {
            name: np.asarray(array, numpy_dtype(declared[name]) if name in declared else None)
            for name, array in inputs.items()
        }

    def _input_specs(self, model: str) -> list[dict[str, Any]]:
        if model not in self._inputs:
            self._inputs[model] = self.metadata(model)["inputs"]
        return self._inputs[model]

    def _sole_input(self, model: str) -> dict[str, Any]:
        inputs = self._input_specs(model)
        if len(inputs) != 1:
            names = ", ".join(i["name"] for i in inputs)
            raise ConfigError(f"model {model!r} has inputs {names}; pass a dict of arrays")
        return inputs[0]

    def _json(self, method: str, path: str) -> dict[str, Any]:
        _, _, body = self._request(method, path)
        return json.loads(body)

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        headers = dict(headers or {})
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            self._connection.request(method, path, body=body, headers=headers)
            response = self._connection.getresponse()
            data = response.read()
        except (ConnectionError, OSError) as error:
            self._connection.close()
            raise ConfigError(
                f"cannot reach the mlbridge server at {self.url} ({error}); "
                "start one with 'mlbridge serve'"
            ) from None
        reply_headers = {k.lower(): v for k, v in response.getheaders()}
        if response.status >= 400:
            raise ServerError(response.status, _error_message(data, response.status))
        return response.status, reply_headers, data


def _discover(home: Path | str | None) -> tuple[str, Path]:
    folder = Path(home or os.environ.get("MLBRIDGE_HOME") or DEFAULT_HOME).expanduser()
    connection = folder / "server.json"
    try:
        document = json.loads(connection.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"no mlbridge server found ({connection} does not exist); start one with "
            "'mlbridge serve'"
        ) from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {connection}: {error}") from None
    return document["url"], Path(document["token_file"])


def binary_request(inputs: dict[str, np.ndarray]) -> tuple[bytes, bytes]:
    """A V2 binary-extension infer request: its JSON header and the raw tensors after it.

    Send ``header + tail`` with ``Inference-Header-Content-Length: len(header)``; the
    reply's outputs come back as binary too.
    """
    entries, chunks = [], []
    for name, array in inputs.items():
        raw = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
        entries.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": v2_datatype(array.dtype),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    document = {"inputs": entries, "parameters": {"binary_data_output": True}}
    return json.dumps(document).encode(), b"".join(chunks)


def _binary_response(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    length = int(header_length) if header_length else len(body)
    document = json.loads(body[:length])
    offset, outputs = length, {}
    for entry in document["outputs"]:
        dtype = numpy_dtype(entry["datatype"])
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is None:
            outputs[entry["name"]] = np.asarray(entry["data"], dtype).reshape(entry["shape"])
            continue
        array = np.frombuffer(body, dtype.newbyteorder("<"), size // dtype.itemsize, offset)
        outputs[entry["name"]] = array.astype(dtype).reshape(entry["shape"])
        offset += size
    return outputs


def _error_message(body: bytes, status: int) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace") or f"HTTP {status}"
