"""What each step of one request costs, in this process: codecs, the model, the whole app.

    .venv/bin/python -m bench.microbench

Times each step of a one-image request (median CPU µs of many calls) and the whole ASGI app
called directly with a prepared request (no socket, no HTTP parsing): the app's own cost,
to set against the server CPU per request that ``python -m bench`` measures. The gap
between the app and the sum of its codecs and model is routing, middleware, batching and
the event loop. Used by docs/performance.md's profile section.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

from mlbridge.auth import TokenAuthenticator
from mlbridge.codecs import v2
from mlbridge.codecs.mathematica import MathematicaCodec
from mlbridge.codecs.wxf import WxfCodec
from mlbridge.protocol import InferenceResponse
from mlbridge.registry import load_registry
from mlbridge.server.app import create_app
from mlbridge.settings import load_settings

from .payloads import FORMATS
from .run import held_out_images

CALLS = 3000
FORMAT_LABELS = {"v2-binary": "V2 binary,", "text": "text,"}
SECRET = "bench-secret"


def per_call_us(function: Callable[[], object], calls: int = CALLS, inner: int = 50) -> float:
    """Median CPU µs per call over batches of 50 calls (timer overhead amortised).

    CPU time of this thread, not wall time: other work on the machine then changes the
    figures little. ``inner=1`` when ``function`` itself runs 50 calls (the ASGI driver).
    """
    for _ in range(100 // inner + 2):
        function()
    samples = []
    for _ in range(calls // 50):
        start = time.thread_time()
        for _ in range(inner):
            function()
        samples.append((time.thread_time() - start) / 50 * 1e6)
    return statistics.median(samples)


def steps(image: np.ndarray, registry) -> dict[str, float]:
    batch = image[np.newaxis]
    json_body = FORMATS["v2-json"].body(batch, "")[0]
    binary_body, binary_headers = v2.encode_request({"input": batch})
    length = binary_headers["Inference-Header-Content-Length"]
    text_body = FORMATS["text"].body(batch, "")[0]
    wxf_body = FORMATS["wxf"].body(batch, "")[0]
    runtime = registry.get("mnist").runtime
    logits = runtime.predict({"input": batch})["output"]
    response = InferenceResponse(model_name="mnist", outputs={"output": logits})
    text, wxf = MathematicaCodec(), WxfCodec()
    document = orjson.loads(json_body)
    return {
        "V2 JSON decode (orjson + numpy)": per_call_us(lambda: v2.decode_request(json_body)),
        "  of which orjson.loads": per_call_us(lambda: orjson.loads(json_body)),
        "  of which np.asarray(784 floats)": per_call_us(
            lambda: np.asarray(document["inputs"][0]["data"], np.float32)
        ),
        "V2 JSON encode (10 logits)": per_call_us(lambda: v2.encode_response(response, set())),
        "V2 binary decode": per_call_us(lambda: v2.decode_request(binary_body, length)),
        "Mathematica text parse (28x28)": per_call_us(lambda: text.decode_tensor(text_body)),
        "Mathematica text write (10 logits)": per_call_us(lambda: text.encode_tensor(logits[0])),
        "WXF decode (28x28 Real32)": per_call_us(lambda: wxf.decode_tensor(wxf_body)),
        "WXF encode (10 logits)": per_call_us(lambda: wxf.encode_tensor(logits[0])),
        "onnxruntime run, mnist, 1 image (mlbridge's runtime)": per_call_us(
            lambda: runtime.predict({"input": batch})
        ),
    }


def asgi_call(app, path: str, body: bytes, headers: dict[str, str]) -> Callable[[], object]:
    """A function that runs a batch of 50 requests through ``app`` on one event loop."""
    raw_headers = [(b"host", b"127.0.0.1:8000")]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict:
        return message

    async def send(reply: dict) -> None:
        if reply["type"] == "http.response.start" and reply["status"] != 200:
            raise RuntimeError(f"status {reply['status']} on {path}")

    def scope() -> dict:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": list(raw_headers),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }

    async def fifty() -> None:
        for _ in range(50):
            await app(scope(), receive, send)

    loop = new_event_loop()
    return lambda: loop.run_until_complete(fifty())


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop, as uvicorn runs the app here (asyncio's without uvloop)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def echo_app(scope, receive, send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"x" * 160})


def whole_app(image: np.ndarray, registry, folder: Path) -> dict[str, float]:
    settings = load_settings(environ={"MLBRIDGE_HOME": str(folder)})
    app = create_app(registry, TokenAuthenticator(SECRET, folder / "token"), settings)
    auth = {"Authorization": f"Bearer {SECRET}"}
    batch = image[np.newaxis]
    echo = asgi_call(echo_app, "/echo", b"{}", {})
    out = {"ASGI echo app (the same driver, for reference)": per_call_us(echo, 3000, inner=1)}
    for fmt, model, label in [
        ("v2-json", "mnist", "mlbridge app, V2 JSON, mnist"),
        ("v2-binary", "mnist", "mlbridge app, V2 binary, mnist"),
        ("text", "mnist", "mlbridge app, Mathematica text, mnist"),
        ("wxf", "mnist", "mlbridge app, WXF, mnist"),
    ]:
        body, headers = FORMATS[fmt].body(batch, "")
        path, request_headers = FORMATS[fmt].path(model), {**headers, **auth}
        out[label] = per_call_us(asgi_call(app, path, body, request_headers), 3000, inner=1)
        if fmt in ("v2-binary", "text"):
            for layer, inner_app in layers(app, path).items():
                call = asgi_call(inner_app, path, body, request_headers)
                out[f"  {FORMAT_LABELS[fmt]} {layer}"] = per_call_us(call, 3000, inner=1)
    return out


def layers(app, path: str) -> dict[str, Callable]:
    """The route reached through Starlette's router (the way the lean path skips), and the
    route's own app alone (no guard, metrics or dispatch)."""
    route = next(r for r in app.router.routes if r.matches(route_probe(path))[0].name == "FULL")

    async def router(scope, receive, send) -> None:
        scope["app"] = app
        await app.router(scope, receive, send)

    async def endpoint(scope, receive, send) -> None:
        scope["app"] = app
        scope["path_params"] = route.matches(scope)[1]["path_params"]
        await route.app(scope, receive, send)

    return {"the route through Starlette's router": router, "the route's own app": endpoint}


def route_probe(path: str) -> dict:
    return {"type": "http", "path": path, "method": "POST"}


def main() -> None:
    image = held_out_images()[0]
    registry = load_registry([])
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o700)
        figures = {**steps(image, registry), **whole_app(image, registry, Path(folder))}
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:{width}}  {value:8.1f} µs")


def print_whole_app() -> None:
    """The whole-app figures alone, one ``label value`` line each (for bench.compare)."""
    image = held_out_images()[0]
    registry = load_registry([])
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o700)
        figures = whole_app(image, registry, Path(folder))
    for name, value in figures.items():
        print(f"{name} {value:.2f}")


if __name__ == "__main__":
    main()
