"""V2 and operational endpoints: read the request, call the inference service, write the reply.

No model logic lives here; see :mod:`mlbridge.inference`. The CAS endpoints
are in :mod:`mlbridge.server.cas`.
"""

from __future__ import annotations

from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from .. import __version__
from ..auth import is_nonce
from ..codecs import v2 as v2_codec
from ..errors import BadRequest, RouteNotFound
from ..inference import Executor, InferenceService
from ..registry import ModelRegistry, ServedModel
from .cas import read_body
from .fastpath import asgi_endpoint, send_reply
from .openapi import openapi_document
from .policy import header
from .reloading import Reloader

EXTENSIONS = ["binary_tensor_data", "cas_endpoint", "gradients", "statistics"]
HEADER_LENGTH = v2_codec.HEADER_LENGTH.encode()


def service(request: Request) -> InferenceService:
    return request.app.state.service


def reloader(request: Request) -> Reloader:
    return request.app.state.reloader


def served_model(scope: Scope) -> ServedModel:
    """The model the path names, at the version it names (if any)."""
    params = scope["path_params"]
    return scope["app"].state.service.model(params["name"], params.get("version"))


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    return JSONResponse({"ready": len(service(request).registry) > 0})


async def proof(request: Request) -> Response:
    """GET /v2/health/proof?nonce=HEX: prove knowledge of the secret without revealing it."""
    nonce = request.query_params.get("nonce", "")
    if not is_nonce(nonce):
        raise BadRequest("expected ?nonce= with 32 to 128 lowercase hexadecimal digits")
    return JSONResponse({"proof": request.app.state.authenticator.proof(nonce)})


async def server_metadata(request: Request) -> Response:
    pid = request.app.state.server_pid
    return JSONResponse(
        {"name": "mlbridge", "version": __version__, "extensions": EXTENSIONS, "pid": pid}
    )


async def model_list(request: Request) -> Response:
    models = service(request).registry.models()
    return JSONResponse({"models": [_summary(model) for model in models]})


async def model_metadata(request: Request) -> Response:
    model = served_model(request.scope)
    document = metadata(model)
    reload_error = service(request).registry.reload_error(model.name)
    if reload_error:
        document.setdefault("parameters", {})["reload_error"] = reload_error
    return JSONResponse(document)


async def model_ready(request: Request) -> Response:
    model = served_model(request.scope)
    document: dict[str, Any] = {"name": model.name, "ready": True}
    reload_error = service(request).registry.reload_error(model.name)
    if reload_error:
        document["reload_error"] = reload_error  # the old model still serves
    return JSONResponse(document)


async def repository_index(request: Request) -> Response:
    """POST /v2/repository/index: every model and its state (Triton's repository extension)."""
    registry = service(request).registry
    return JSONResponse([_index_entry(registry, model) for model in registry.models()])


async def load_model(request: Request) -> Response:
    """POST /v2/repository/models/{name}/load: load the model's files again and swap it in."""
    name = served_model(request.scope).name
    await reloader(request).reload(name)
    return JSONResponse({"name": name, "reloaded": True})


async def shutdown(request: Request) -> Response:
    """POST /v2/shutdown: stop gracefully, after this reply (what `mlbridge stop` calls)."""
    stop = request.app.state.request_shutdown
    if stop is None:
        raise RouteNotFound("this server cannot be stopped over HTTP")
    pid = request.app.state.server_pid
    return JSONResponse({"stopping": True, "pid": pid}, 202, background=BackgroundTask(stop))


async def openapi(request: Request) -> Response:
    """GET /v2/openapi.json: the OpenAPI 3.1 document of this server's routes."""
    return JSONResponse(openapi_document(request.app.routes))


async def metrics(request: Request) -> Response:
    """GET /metrics: Prometheus' text format."""
    exposition = request.app.state.metrics.exposition()
    return Response(exposition, media_type="text/plain; version=0.0.4; charset=utf-8")


@asgi_endpoint
async def infer(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /v2/models/{name}[/versions/{version}]/infer: V2 JSON, or with binary tensors.

    A lean endpoint (see mlbridge.server.fastpath): the hot path of V2 clients.
    """
    inference_service: InferenceService = scope["app"].state.service
    model = served_model(scope)
    executor = inference_service.executor
    body = await read_body(scope, receive)
    header_length = header(scope, HEADER_LENGTH)
    inference = await executor.convert(
        Executor.values_in_body(len(body)), v2_codec.decode_request, body, header_length
    )
    response = await inference_service.infer(model.name, inference, model.version)
    size = sum(array.size for array in response.outputs.values())
    content, headers = await executor.convert(
        size, v2_codec.encode_response, response, inference.binary_outputs
    )
    await send_reply(send, content, headers)


async def model_statistics(request: Request) -> Response:
    """GET /v2/models/{name}/stats: Triton's statistics extension, the batching counts."""
    model = served_model(request.scope)
    counts = service(request).statistics(model)
    stats = {
        "name": model.name,
        "version": model.version,
        "inference_count": counts["rows"],  # examples computed by batched calls
        "execution_count": counts["batches"],  # runtime calls made for them
        "request_count": counts["requests"],
    }
    return JSONResponse({"model_stats": [stats]})


def metadata(model: ServedModel) -> dict[str, Any]:
    """The V2 model metadata document; labels and gradients as parameters."""
    document: dict[str, Any] = {
        "name": model.name,
        "versions": [model.version],
        "platform": model.platform,
        "inputs": [spec.to_dict() for spec in model.signature.inputs],
        "outputs": [spec.to_dict() for spec in model.signature.outputs],
    }
    parameters: dict[str, Any] = {}
    if model.signature.labels:
        parameters["labels"] = list(model.signature.labels)
    if model.description:
        parameters["description"] = model.description
    if model.gradient:
        parameters["gradient"] = model.gradient
    elif model.gradient_of is None:
        parameters["gradient_unavailable"] = model.gradient_unavailable
    if model.gradient_of:
        parameters["gradient_of"] = model.gradient_of
        parameters["default_cotangent"] = "ones (the gradient of the sum of the outputs)"
    if parameters:
        document["parameters"] = parameters
    return document


def _index_entry(registry: ModelRegistry, model: ServedModel) -> dict[str, Any]:
    entry = {"name": model.name, "version": model.version, "state": "READY"}
    if registry.reload_error(model.name):
        entry["reason"] = registry.reload_error(model.name)
    return entry


def _summary(model: ServedModel) -> dict[str, Any]:
    return {"name": model.name, "version": model.version, "platform": model.platform, "ready": True}
