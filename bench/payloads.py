"""Request bodies of every wire format, built before timing, and how to read each reply.

Each :class:`Format` turns images (FP32 ``[N, 28, 28]`` in [0, 1]) into prepared HTTP
requests and reads a reply back into logits, so every configuration is checked against
in-process onnxruntime before it is timed. Bodies are what the clients send:

- ``v2-json``: a V2 infer request with a flat ``data`` list (float32 shortest digits);
- ``v2-binary``: the binary tensor extension, from :func:`mlbridge.codecs.v2.encode_request`
  (what ``mlbridge.client`` and tritonclient send), binary outputs asked for;
- ``text``: Mathematica list text as ``ToString[img, InputForm]`` writes it, Bearer header;
- ``wxf``: ``BinarySerialize[NumericArray[img, "Real32"]]`` (wolframclient's bytes), as the
  Wolfram package sends it;
- ``gradient``: WXF to ``POST /{model}/gradient`` (the VJP with cotangent ones);
- ``original``: the original design's body, the secret on the first line and then text.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson
from wolframclient.serializers import export

from mlbridge.codecs import v2
from mlbridge.codecs.mathematica import format_list, parse_list
from mlbridge.codecs.wxf import loads as wxf_loads

from .loadgen import Reply, request_bytes

JSON = {"Content-Type": "application/json"}
WXF = {"Content-Type": "application/vnd.wolfram.wxf"}
TEXT = {"Content-Type": "text/plain"}


@dataclass(frozen=True)
class Format:
    """A wire format: how a request is written and how its reply is read."""

    name: str
    path: Callable[[str], str]  # model name -> request path
    body: Callable[[np.ndarray, str], tuple[bytes, dict[str, str]]]  # (images, secret)
    logits: Callable[[Reply], np.ndarray]

    def request(
        self, model: str, images: np.ndarray, auth: dict[str, str], secret: str = ""
    ) -> bytes:
        body, headers = self.body(images, secret)
        return request_bytes("POST", self.path(model), body, {**headers, **auth})


def v2_json_body(images: np.ndarray, _secret: str = "") -> tuple[bytes, dict[str, str]]:
    tensor = {"name": "input", "shape": list(images.shape), "datatype": "FP32"}
    document = {"inputs": [{**tensor, "data": np.ascontiguousarray(images).ravel()}]}
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY), JSON


def v2_json_logits(reply: Reply) -> np.ndarray:
    output = orjson.loads(reply.body)["outputs"][0]
    return np.asarray(output["data"], np.float32).reshape(output["shape"])


def v2_binary_body(images: np.ndarray, _secret: str = "") -> tuple[bytes, dict[str, str]]:
    return v2.encode_request({"input": np.ascontiguousarray(images)})


def v2_binary_logits(reply: Reply) -> np.ndarray:
    length = reply.headers.get(v2.HEADER_LENGTH)
    return next(iter(v2.decode_response(reply.body, length).outputs.values()))


def text_body(images: np.ndarray, _secret: str = "") -> tuple[bytes, dict[str, str]]:
    return format_list(images[0] if len(images) == 1 else images).encode(), TEXT


def wxf_body(images: np.ndarray, _secret: str = "") -> tuple[bytes, dict[str, str]]:
    return export(images[0] if len(images) == 1 else images, target_format="wxf"), WXF


def original_body(images: np.ndarray, secret: str) -> tuple[bytes, dict[str, str]]:
    return secret.encode() + b"\n" + format_list(images[0]).encode(), {}


def original_logits(reply: Reply) -> np.ndarray:
    text = reply.body.decode().replace("{", "[").replace("}", "]")
    return np.asarray(ast.literal_eval(text), np.float32)


FORMATS = {
    "v2-json": Format("v2-json", lambda m: f"/v2/models/{m}/infer", v2_json_body, v2_json_logits),
    "v2-binary": Format(
        "v2-binary", lambda m: f"/v2/models/{m}/infer", v2_binary_body, v2_binary_logits
    ),
    "text": Format("text", lambda m: f"/{m}", text_body, lambda r: parse_list(r.body)),
    "wxf": Format("wxf", lambda m: f"/{m}", wxf_body, lambda r: wxf_loads(r.body)),
    "gradient": Format(
        "gradient", lambda m: f"/{m}/gradient", wxf_body, lambda r: wxf_loads(r.body)
    ),
    "original": Format("original", lambda m: "/", original_body, original_logits),
}
