"""The OpenAPI 3.1 document of the whole HTTP API, served at ``GET /v2/openapi.json``.

:func:`openapi_document` builds it from the route table it is given (the
app's own, :data:`mlbridge.server.app.ROUTES`): each route's methods and its
declared access rule come from there, and what its requests and replies
look like from :data:`OPERATIONS`, keyed by the route's path. A route
without an entry here is a KeyError, and ``tests/test_openapi.py`` compares
the document's paths with the table, so neither can drift from the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import __version__
from ..codecs.mathematica import MathematicaCodec
from ..codecs.v2 import BINARY_DATA_SIZE, BINARY_MEDIA_TYPE, HEADER_LENGTH, JSON_MEDIA_TYPE
from ..codecs.wxf import MEDIA_TYPE as WXF_MEDIA_TYPE
from .policy import Access

OPENAPI_VERSION = "3.1.0"
Schema = dict[str, Any]
TEXT = MathematicaCodec.media_type
CAS_MEDIA_TYPES = (TEXT, "text/plain", WXF_MEDIA_TYPE, JSON_MEDIA_TYPE)


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: Schema) -> dict[str, Schema]:
    return {JSON_MEDIA_TYPE: {"schema": schema}}


def reply(description: str, schema: Schema | None = None, media: str = JSON_MEDIA_TYPE) -> Schema:
    """One documented response; JSON unless ``media`` says otherwise."""
    answer: Schema = {"description": description}
    if schema is not None:
        answer["content"] = {media: {"schema": schema}}
    return answer


ERROR = reply("what was wrong and what was expected", ref("Error"))
ERRORS = {
    "400": ERROR,
    "404": reply("no such model, version or route", ref("Error")),
    "500": reply("a failure inside the server or a model's engine", ref("Error")),
    "default": reply(
        "refused by the transport guard (403 browser Origin, 408 too slow, 421 foreign Host, "
        "431 headers too large, 503 busy, with Retry-After)",
        ref("Error"),
    ),
}
POST_ERRORS = {
    **ERRORS,
    "413": reply("the body exceeds the max_body_mb limit", ref("Error")),
    "503": reply("too many bodies or requests in flight; retry after Retry-After", ref("Error")),
}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "every model serves version 1; any other is a 404",
}
NONCE = {
    "name": "nonce",
    "in": "query",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32,128}$"},
}


def operation(summary: str, ok: Schema, *params: Schema, body: Schema | None = None) -> Schema:
    """An operation: its summary, path and query parameters, request body and replies."""
    found: Schema = {"summary": summary, "responses": {"200": ok, **ERRORS}}
    if params:
        found["parameters"] = list(params)
    if body is not None:
        found["requestBody"] = body
        found["responses"] = {"200": ok, **POST_ERRORS}
    return found


def infer_operation(*params: Schema) -> Schema:
    """POST .../infer: V2 JSON, or a JSON header followed by raw tensors (binary extension)."""
    body = {
        "required": True,
        "content": {
            **json_body(ref("InferenceRequest")),
            BINARY_MEDIA_TYPE: {
                "schema": {"type": "string", "contentMediaType": BINARY_MEDIA_TYPE},
                "description": f"the JSON header ({HEADER_LENGTH} bytes), then raw tensors",
            },
        },
    }
    header = {
        "name": HEADER_LENGTH,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "description": "with the binary extension: the length of the JSON header",
    }
    ok = reply("the outputs; JSON, or JSON header then raw tensors", ref("InferenceResponse"))
    ok["content"][BINARY_MEDIA_TYPE] = {
        "schema": {"type": "string", "contentMediaType": BINARY_MEDIA_TYPE}
    }
    found = operation("run the model (KServe V2)", ok, *params, header, body=body)
    found["responses"]["422"] = reply("a gradient the model cannot serve", ref("Error"))
    return found


def cas_operation(summary: str, arguments: bool) -> Schema:
    """A CAS route: one tensor (or, for the gradient, x and a cotangent) in any CAS format."""
    json_schema = (
        {"anyOf": [ref("Numbers"), ref("GradientArguments")]} if arguments else ref("Numbers")
    )
    text = {
        "type": "string",
        "description": "Mathematica list text such as {{0., 0.5}, {1., .25}}; optionally "
        "the secret on the first line"
        + (', or <|"x" -> {...}, "cotangent" -> {...}|>' if arguments else ""),
    }
    wxf = {"type": "string", "contentMediaType": WXF_MEDIA_TYPE}
    schemas = {TEXT: text, "text/plain": text, WXF_MEDIA_TYPE: wxf, JSON_MEDIA_TYPE: json_schema}
    ok: Schema = {
        "description": "the result, in the request's format or the one Accept names",
        "content": {media: {"schema": schemas[media]} for media in CAS_MEDIA_TYPES},
    }
    body = {"required": True, "content": {m: {"schema": schemas[m]} for m in CAS_MEDIA_TYPES}}
    found = operation(summary, ok, NAME, body=body)
    found["responses"] = {
        **found["responses"],
        "422": reply("the model serves no gradient (the message says why)", ref("CasError")),
    }
    for status in ("400", "404", "413", "500", "503"):
        found["responses"][status] = reply(
            "the error in the request's format: Failure[...] as text or WXF, JSON otherwise",
            ref("CasError"),
        )
    return found


OPERATIONS: dict[str, dict[str, Schema]] = {
    "/v2/health/live": {"get": operation("liveness", reply("live", ref("Live")))},
    "/v2/health/ready": {"get": operation("readiness", reply("ready", ref("Ready")))},
    "/v2/health/proof": {
        "get": operation(
            "the server proves it knows the secret: HMAC-SHA256 of the nonce",
            reply("the proof", ref("Proof")),
            NONCE,
        )
    },
    "/v2": {"get": operation("server metadata", reply("metadata", ref("ServerMetadata")))},
    "/v2/models": {"get": operation("every served model", reply("models", ref("ModelList")))},
    "/v2/models/{name}": {
        "get": operation("model metadata", reply("metadata", ref("ModelMetadata")), NAME)
    },
    "/v2/models/{name}/ready": {
        "get": operation("model readiness", reply("ready", ref("ModelReady")), NAME)
    },
    "/v2/models/{name}/infer": {"post": infer_operation(NAME)},
    "/v2/models/{name}/stats": {
        "get": operation(
            "batching counts (Triton's statistics extension)",
            reply("statistics", ref("ModelStatistics")),
            NAME,
        )
    },
    "/v2/repository/index": {
        "post": operation(
            "every model and its state (Triton's repository extension)",
            reply("the index", {"type": "array", "items": ref("IndexEntry")}),
        )
    },
    "/v2/repository/models/{name}/load": {
        "post": {
            **operation("load a model's files again and swap it in", reply("reloaded"), NAME),
            "responses": {
                "200": reply("reloaded", ref("Reloaded")),
                "422": reply("the new files did not load; the old model serves on", ref("Error")),
                **ERRORS,
            },
        }
    },
    "/metrics": {
        "get": operation(
            "Prometheus metrics",
            reply("the text exposition format", {"type": "string"}, "text/plain"),
        )
    },
    "/v2/openapi.json": {
        "get": operation("this document", reply("OpenAPI 3.1", {"type": "object"}))
    },
    "/v2/shutdown": {
        "post": {
            **operation("stop gracefully after replying", reply("stopping")),
            "responses": {"202": reply("stopping", ref("Stopping")), **ERRORS},
        }
    },
    "/v2/models/{name}/versions/{version}": {
        "get": operation("model metadata", reply("metadata", ref("ModelMetadata")), NAME, VERSION)
    },
    "/v2/models/{name}/versions/{version}/ready": {
        "get": operation("model readiness", reply("ready", ref("ModelReady")), NAME, VERSION)
    },
    "/v2/models/{name}/versions/{version}/infer": {"post": infer_operation(NAME, VERSION)},
    "/{name}": {"post": cas_operation("the model's first output (CAS endpoint)", False)},
    "/{name}/gradient": {
        "post": cas_operation("the gradient (vector-Jacobian product) at x", True)
    },
    "/{name}/jacobian": {"post": cas_operation("the Jacobian at one example", False)},
}

STRING, INTEGER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
DATATYPES += ["FP16", "FP32", "FP64"]


def obj(required: Iterable[str], **properties: Schema) -> Schema:
    return {"type": "object", "required": list(required), "properties": properties}


TENSOR_SPEC = obj(
    ["name", "datatype", "shape"],
    name=STRING,
    datatype={"enum": DATATYPES},
    shape={"type": "array", "items": INTEGER},
)
SCHEMAS: dict[str, Schema] = {
    "Error": obj(["error", "code"], error=STRING, code=STRING),
    "CasError": {
        "description": 'JSON form; text and WXF replies are Failure["MLBridge", <|...|>]',
        **obj(["error", "code", "status"], error=STRING, code=STRING, status=INTEGER),
    },
    "Numbers": {
        "description": "a finite number, or rectangular nested arrays of them",
        "anyOf": [{"type": "number"}, {"type": "array", "items": ref("Numbers")}],
    },
    "GradientArguments": obj(["x"], x=ref("Numbers"), cotangent=ref("Numbers")),
    "Live": obj(["live"], live=BOOLEAN),
    "Ready": obj(["ready"], ready=BOOLEAN),
    "Proof": obj(["proof"], proof={"type": "string", "pattern": "^[0-9a-f]{64}$"}),
    "ServerMetadata": obj(
        ["name", "version", "extensions"],
        name=STRING,
        version=STRING,
        extensions={"type": "array", "items": STRING},
        pid=INTEGER,
    ),
    "ModelList": obj(
        ["models"],
        models={
            "type": "array",
            "items": obj(
                ["name", "ready"], name=STRING, version=STRING, platform=STRING, ready=BOOLEAN
            ),
        },
    ),
    "ModelMetadata": obj(
        ["name", "versions", "platform", "inputs", "outputs"],
        name=STRING,
        versions={"type": "array", "items": STRING},
        platform=STRING,
        inputs={"type": "array", "items": TENSOR_SPEC},
        outputs={"type": "array", "items": TENSOR_SPEC},
        parameters={"type": "object"},
    ),
    "ModelReady": obj(["name", "ready"], name=STRING, ready=BOOLEAN, reload_error=STRING),
    "ModelStatistics": obj(["model_stats"], model_stats={"type": "array"}),
    "IndexEntry": obj(["name", "state"], name=STRING, version=STRING, state=STRING),
    "Reloaded": obj(["name", "reloaded"], name=STRING, reloaded=BOOLEAN),
    "Stopping": obj(["stopping"], stopping=BOOLEAN, pid=INTEGER),
    "InferenceRequest": obj(
        ["inputs"],
        id=STRING,
        parameters={"type": "object"},
        inputs={
            "type": "array",
            "items": obj(
                ["name", "shape", "datatype"],
                name=STRING,
                shape={"type": "array", "items": {"type": "integer", "minimum": 0}},
                datatype={"enum": DATATYPES},
                data=ref("Numbers"),
                parameters=obj([], **{BINARY_DATA_SIZE: {"type": "integer", "minimum": 0}}),
            ),
        },
        outputs={
            "type": "array",
            "items": obj(["name"], name=STRING, parameters=obj([], binary_data=BOOLEAN)),
        },
    ),
    "InferenceResponse": obj(
        ["model_name", "outputs"],
        model_name=STRING,
        model_version=STRING,
        id=STRING,
        outputs={
            "type": "array",
            "items": obj(
                ["name", "shape", "datatype"],
                name=STRING,
                shape={"type": "array", "items": INTEGER},
                datatype={"enum": DATATYPES},
                data={"type": "array", "items": {"type": ["number", "boolean", "null"]}},
                parameters=obj([], **{BINARY_DATA_SIZE: INTEGER}),
            ),
        },
    ),
}

SECURITY: dict[Access, list[Schema]] = {
    Access.OPEN: [],
    Access.SECRET: [{"bearer": []}],
    Access.SECRET_OR_FIRST_LINE: [{"bearer": []}, {}],  # {}: the secret on the first line
}


def openapi_document(routes: Iterable[Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (declared routes: path, methods, access)."""
    paths: dict[str, dict[str, Schema]] = {}
    for route in routes:
        for method in sorted(route.methods - {"HEAD"}):
            known = OPERATIONS[route.path][method.lower()]  # KeyError: document the route
            entry = {**known, "security": SECURITY[route.access]}
            entry["operationId"] = _operation_id(method, route.path)
            paths.setdefault(route.path, {})[method.lower()] = entry
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "mlbridge",
            "version": __version__,
            "description": "A local model server for computer-algebra systems: KServe V2 "
            "inference, and CAS endpoints in Mathematica text, WXF and JSON. Every route "
            "but the health checks needs the secret (docs/protocol.md).",
        },
        "servers": [{"url": "http://127.0.0.1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the secret in the token file (mlbridge status says where)",
                }
            },
        },
    }


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.replace(".", "/").split("/") if w]
    return "_".join([method.lower(), *words]) if words else method.lower()
