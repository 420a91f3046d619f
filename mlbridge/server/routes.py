"""HTTP endpoints: read the request, call the inference service, write the reply.

No model logic lives here; see :mod:`mlbridge.inference`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import __version__
from ..auth import TokenAuthenticator
from ..codecs import codec_for_body, codec_for_reply
from ..codecs import v2 as v2_codec
from ..errors import PayloadTooLarge
from ..inference import InferenceService
from ..registry import ServedModel

MODEL_VERSION = "1"
SMALL_PAYLOAD = 64 * 1024  # bytes of body, or values of output
T = TypeVar("T")
EXTENSIONS = ["binary_tensor_data", "cas_endpoint"]


def service(request: Request) -> InferenceService:
    return request.app.state.service


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    return JSONResponse({"ready": bool(service(request).registry.models)})


async def server_metadata(request: Request) -> Response:
    return JSONResponse(
        {"name": "mlbridge", "version": __version__, "extensions": EXTENSIONS, "pid": os.getpid()}
    )


async def model_list(request: Request) -> Response:
    registry = service(request).registry
    return JSONResponse({"models": [_summary(registry.get(name)) for name in registry.names()]})


async def model_metadata(request: Request) -> Response:
    model = service(request).registry.get(request.path_params["name"])
    return JSONResponse(metadata(model))


async def model_ready(request: Request) -> Response:
    model = service(request).registry.get(request.path_params["name"])
    return JSONResponse({"name": model.name, "ready": True})


async def infer(request: Request) -> Response:
    """POST /v2/models/{name}/infer: V2 JSON, with or without binary tensors."""
    body = await read_body(request)
    header_length = request.headers.get(v2_codec.HEADER_LENGTH)
    inference = await off_loop(len(body), v2_codec.decode_request, body, header_length)
    response = await service(request).infer(request.path_params["name"], inference)
    size = sum(array.size for array in response.outputs.values())
    content, headers = await off_loop(
        size, v2_codec.encode_response, response, inference.binary_outputs
    )
    return Response(content, headers=headers)


async def cas_predict(request: Request) -> Response:
    """POST /{name}: one tensor as Mathematica text, WXF or JSON; reply alike."""
    body = await read_body(request)
    if not request.scope.get("state", {}).get("authenticated", False):
        secret, body = split_secret_line(body)
        authenticator(request).check(secret)
    codecs = request.app.state.cas_codecs
    codec = codec_for_body(request.headers.get("content-type", ""), body, codecs)
    request.state.codec = codec
    array = await off_loop(len(body), codec.decode_tensor, body)
    result = await service(request).infer_tensor(request.path_params["name"], array)
    reply = codec_for_reply(request.headers.get("accept", ""), codec, codecs)
    content = await off_loop(result.size, reply.encode_tensor, result)
    return Response(content, media_type=reply.media_type)


async def off_loop(size: int, function: Callable[..., T], *args: Any) -> T:
    """Run a codec on the event loop when ``size`` is small, else in a worker thread.

    Parsing a big body takes up to seconds; other requests must not wait for it.
    """
    if size <= SMALL_PAYLOAD:
        return function(*args)
    return await to_thread.run_sync(function, *args)


async def read_body(request: Request) -> bytes:
    """The whole body, refused early once it passes the configured limit."""
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def split_secret_line(body: bytes) -> tuple[str | None, bytes]:
    """The original design's body: the secret, a newline, then the payload."""
    first, _, rest = body.partition(b"\n")
    if first.lstrip()[:1] in (b"{", b"[", b"") or first.startswith((b"8:", b"8C:")):
        return None, body  # the first line is already data: no secret was sent
    return first.decode("utf-8", "replace").strip(), rest


def authenticator(request: Request) -> TokenAuthenticator:
    return request.app.state.authenticator


def metadata(model: ServedModel) -> dict[str, Any]:
    """The V2 model metadata document, with labels as a parameter."""
    document: dict[str, Any] = {
        "name": model.name,
        "versions": [MODEL_VERSION],
        "platform": model.platform,
        "inputs": [spec.to_dict() for spec in model.signature.inputs],
        "outputs": [spec.to_dict() for spec in model.signature.outputs],
    }
    parameters: dict[str, Any] = {}
    if model.signature.labels:
        parameters["labels"] = list(model.signature.labels)
    if model.description:
        parameters["description"] = model.description
    if parameters:
        document["parameters"] = parameters
    return document


def _summary(model: ServedModel) -> dict[str, Any]:
    return {"name": model.name, "platform": model.platform, "ready": True}
