"""Python client: finds the running server; predicts and differentiates with numpy arrays.

>>> from mlbridge.client import Client
>>> Client().predict("mnist", images)        # images: float32 [N, 28, 28]
>>> Client().gradient("box_volume", [2.0, 4.0, 8.0])
array([32., 16.,  8.])

``Client()`` finds the server through its connection file (see
:mod:`mlbridge.connection`). Requests use the V2 binary tensor extension,
so big arrays travel as raw bytes, not JSON text; gradients go to the
model's gradient companion, an ordinary V2 model.

A remote server: ``Client("https://host:8123", token_file="secret", ca_file="ca.pem",
sign=True)``; with ``sign`` the secret never crosses the wire (docs/deploy.md).
"""

from __future__ import annotations

import hmac
import http.client
import json
import secrets
import ssl
from math import prod
from pathlib import Path
from typing import Any, overload
from urllib.parse import urlsplit

import numpy as np

from .auth import read_secret, server_proof, sign_request
from .codecs import v2
from .connection import check_url, read_connection
from .errors import ConfigError, GradientUnavailable, MLBridgeError
from .protocol import numpy_dtype
from .settings import load_settings

TIMEOUT_S = 300
# What a request on a kept-alive connection meets when the server closed it while idle.
STALE_CONNECTION = (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected)


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
        ca_file: Path | str | None = None,
        sign: bool = False,
    ) -> None:
        """``url``, ``token_file``, ``ca_file`` default to what ``server.json`` says;
        ``sign``: sign each request instead of sending the secret."""
        if url is None:
            connection = read_connection(Path(home) if home else load_settings().home)
            url, token_file = connection.url, connection.token_file
            ca_file = ca_file or connection.ca_file
        check_url(url)
        self.url = url.rstrip("/")
        self._token = (
            token if token is not None else (read_secret(Path(token_file)) if token_file else None)
        )
        self._sign = sign
        self._connection = _connect(self.url, ca_file)
        self._metadata: dict[str, dict[str, Any]] = {}
        self._verified = False

    def models(self) -> list[str]:
        """Names of the served models."""
        return [model["name"] for model in self._json("GET", "/v2/models")["models"]]

    def metadata(self, model: str) -> dict[str, Any]:
        """The V2 metadata of ``model``: inputs, outputs, labels, gradient (cached)."""
        if model not in self._metadata:
            self._metadata[model] = self._json("GET", f"/v2/models/{model}")
        return self._metadata[model]

    def server_metadata(self) -> dict[str, Any]:
        return self._json("GET", "/v2")

    def shutdown(self) -> int:
        """Ask the server to stop gracefully; return its pid (it stops after replying)."""
        _, _, body = self._request("POST", "/v2/shutdown")
        return int(json.loads(body)["pid"])

    def live(self) -> bool:
        return bool(self._json("GET", "/v2/health/live").get("live"))

    @overload
    def predict(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @overload
    def predict(self, model: str, inputs: np.ndarray) -> np.ndarray: ...

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

    def gradient(
        self, model: str, x: np.ndarray, cotangent: np.ndarray | None = None
    ) -> np.ndarray:
        """The vector-Jacobian product dx = J(x)ᵀ·dy of a single-input ``model``.

        Without ``cotangent`` dy is all ones: the gradient of the sum of the
        outputs (Wolfram's NetPortGradient). ``x`` may be one example or a batch.
        """
        companion = self.gradient_companion(model)
        spec = self._sole_input(model)
        output = self.metadata(model)["outputs"][0]["name"]
        single = np.ndim(x) == len(spec["shape"]) - 1
        inputs = {spec["name"]: np.asarray(x)[np.newaxis] if single else x}
        if cotangent is not None:
            dy = np.asarray(cotangent)
            inputs[f"{output}_cotangent"] = dy[np.newaxis] if single else dy
        result = self._infer(companion, inputs)[f"{spec['name']}_grad"]
        return result[0] if single else result

    def jacobian(self, model: str, x: np.ndarray) -> np.ndarray:
        """The Jacobian of ``model`` at one example: shape output shape + input shape.

        One batched call to the gradient companion, one cotangent per output element.
        """
        value = np.asarray(self.predict(model, x))
        size = prod(value.shape)
        cotangents = np.eye(size).reshape(size, *value.shape)
        batch = np.repeat(np.asarray(x)[np.newaxis], size, axis=0)
        rows = self.gradient(model, batch, cotangents)
        return rows.reshape(*value.shape, *np.shape(x))

    def gradient_companion(self, model: str) -> str:
        """The name of the V2 model that serves ``model``'s VJP; raises saying why if none."""
        parameters = self.metadata(model).get("parameters", {})
        if "gradient" not in parameters:
            reason = parameters.get("gradient_unavailable", "the server names no gradient")
            raise GradientUnavailable(f"model {model!r} serves no gradient: {reason}")
        return str(parameters["gradient"])

    def _infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        body, headers = v2.encode_request(self._typed(model, inputs))
        _, reply_headers, reply = self._request("POST", f"/v2/models/{model}/infer", body, headers)
        length = reply_headers.get(v2.HEADER_LENGTH)
        return v2.decode_response(reply, length).outputs

    def _verify_server(self, token: str) -> None:
        """Before the secret leaves, make the server prove it knows it (see auth.server_proof)."""
        nonce = secrets.token_hex(32)
        try:
            _, _, body = self._request("GET", f"/v2/health/proof?nonce={nonce}", secret=False)
            proof = str(json.loads(body)["proof"])
        except (ServerError, ValueError, KeyError, TypeError):  # not an mlbridge that knows
            proof = ""
        self._verified = hmac.compare_digest(proof, server_proof(token, nonce))
        if not self._verified:
            raise ConfigError(
                f"the server at {self.url} could not prove it knows the secret; "
                "not sending it (is this really your mlbridge server?)"
            )

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
        return self.metadata(model)["inputs"]

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
        secret: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        headers = dict(headers or {})
        if self._token and secret and not self._verified:
            self._verify_server(self._token)
        for attempt in range(2):
            if self._token and secret:
                headers["Authorization"] = (
                    sign_request(self._token, method, path, body or b"")  # a fresh nonce each try
                    if self._sign
                    else f"Bearer {self._token}"
                )
            reused = self._connection.sock is not None
            try:
                self._connection.request(method, path, body=body, headers=headers)
                response = self._connection.getresponse()
                data = response.read()
                break
            except (ConnectionError, OSError) as error:
                self._connection.close()
                if reused and attempt == 0 and isinstance(error, STALE_CONNECTION):
                    continue  # the server closed a kept-alive connection that sat idle: reopen
                raise ConfigError(
                    f"cannot reach the mlbridge server at {self.url} ({error}); "
                    "start one with 'mlbridge serve'"
                ) from None
        reply_headers = {k.lower(): v for k, v in response.getheaders()}
        if response.status >= 400:
            raise ServerError(response.status, _error_message(data, response.status))
        return response.status, reply_headers, data


def _connect(url: str, ca_file: Path | str | None) -> http.client.HTTPConnection:
    """A connection to ``url``: https verified against ``ca_file`` (else the system's CAs)."""
    parts = urlsplit(url)
    host = parts.hostname or ""  # check_url made sure there is one
    if parts.scheme == "http":
        return http.client.HTTPConnection(host, parts.port, timeout=TIMEOUT_S)
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"cannot use the CA file {ca_file}: {error}") from None
    return http.client.HTTPSConnection(host, parts.port, timeout=TIMEOUT_S, context=context)


def _error_message(body: bytes, status: int) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace") or f"HTTP {status}"
