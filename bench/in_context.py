"""What a request's parts cost in context: the request path whole and with a part taken away.

    taskset -c 1 .venv/bin/python -m bench.in_context [--reps 15] [--ref REV]
        [--model mnist-cnn] [--connections 8] [--formats v2-json,...]

Runs one-image requests, as ``python -m bench``'s sequential scenario sends them, through
mlbridge's own HTTP protocol in this process: uvicorn's config and
:class:`~mlbridge.server.transport.GuardedHttpProtocol` on a transport that counts what is
written (no socket, no other process). Each request's parsing, guard, secret, dispatch,
codecs, validation, model, reply and metrics run as in the server. Variants, measured
once per repetition each, interleaved, as CPU µs per request and as ratios to the whole
request of the same repetition (median and quartiles of those ratios):

- *as served*;
- *without the model's call*: the runtime returns the result of its first call;
- *without decoding the body* (V2 routes): the body decodes to the request its first
  decode made;
- *framework only* (V2 routes): the route reads the body and answers a fixed reply once the
  guard has let the request in;
- *raw ASGI echo*: ``bench.echo``'s app through the same protocol (the floor, in process);
- *httptools' parser alone*: the parser answering the echo's reply from its own callbacks,
  no uvicorn: the raw ASGI echo less this is what uvicorn's protocol and ASGI cycle cost;

and, from ``bench.microbench``, the same request's codecs and model called back to back in
a warm loop. The gap between that loop and the request in context is what its parts cost
when each runs between the others, the cache cold from them (docs/performance.md). Pin it
to one CPU, as the bench pins servers: the runtime then uses one thread, as served. The
process fixes malloc's mmap threshold as the server does at start (``server/memory.py``):
without it, a working memory mapped afresh at each call went unmeasured.

``--connections K`` sends K requests at once, one on each of K connections, fed in the
same turn of the loop, as 8 clients' requests reach the server: they batch. ``--ref REV``
adds the request as served by ``mlbridge/`` as it is at REV, loaded in this same process
under another package name (its imports are relative), interleaved with the working
tree's: a change measured without the spread between processes (two processes of the
same code differ by up to ~10% here: memory layout).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import httptools
import numpy as np
import uvicorn
from uvicorn.server import ServerState

from mlbridge.codecs import v2 as v2_codec
from mlbridge.runtimes.onnx import OnnxRuntime
from mlbridge.server import routes
from mlbridge.server.cas import received_body
from mlbridge.server.fastpath import send_reply
from mlbridge.server.memory import return_big_buffers

from .echo import asgi_echo, reply_body
from .loadgen import request_bytes
from .microbench import SECRET, new_event_loop, steps
from .payloads import FORMATS
from .run import held_out_images
from .servers import REPO

REQUESTS = 300  # per measurement
FORMATS_MEASURED = ("v2-binary", "v2-json", "wxf", "text")
# The warm loop's steps of each format (bench.microbench's labels): decode, model, encode.
WARM_STEPS = {
    "v2-binary": ("V2 binary decode", "V2 JSON encode (10 logits)"),
    "v2-json": ("V2 JSON decode (orjson + numpy)", "V2 JSON encode (10 logits)"),
    "wxf": ("WXF decode (28x28 Real32)", "WXF encode (10 logits)"),
    "text": ("Mathematica text parse (28x28)", "Mathematica text write (10 logits)"),
}
MODEL_STEP = "onnxruntime run, mnist, 1 image (mlbridge's runtime)"
FIXED_REPLY = (
    b'{"model_name":"mnist","model_version":"1","outputs":[{"name":"output",'
    b'"datatype":"FP32","shape":[1,10],"data":[0,0,0,0,0,0,0,0,0,1]}]}'
)
AS_SERVED = "as served"


class CountingTransport(asyncio.Transport):
    """A socket's stand-in: counts the protocol's writes and keeps their statuses."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.statuses: set[bytes] = set()
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes += 1
        if data.startswith(b"HTTP/1.1 "):
            self.statuses.add(bytes(data[9:12]))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


class ParserEcho:
    """httptools' parser answering the raw ASGI echo's reply from its own callbacks, made
    as uvicorn makes its protocols: no ASGI scope, cycle or message between. It keeps the
    URL, headers and body as any server must, though the fixed reply reads only the URL."""

    def __init__(self, config: Any = None, server_state: Any = None, app_state: Any = None):
        self.parser = httptools.HttpRequestParser(self)
        self.tasks: set[Any] = set()
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        reply = reply_body(httptools.parse_url(self.url).query or b"")
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
        self.transport.write(head + b"content-length: %d\r\n\r\n%b" % (len(reply), reply))


@dataclass
class Served:
    """An ASGI app behind the HTTP protocol of one copy of mlbridge."""

    app: Any
    protocol: type


def served(package: str, folder: Path) -> Served:
    """mlbridge's app and protocol, from ``package`` (``mlbridge``, or a copy of it)."""

    def module(name: str) -> Any:
        return importlib.import_module(f"{package}.{name}")

    transport = module("server.transport")
    settings = module("settings").load_settings(environ={"MLBRIDGE_HOME": str(folder)})
    authenticator = module("auth").TokenAuthenticator(SECRET, folder / f"token-{package}")
    registry = module("registry").load_registry([])
    app = module("server.app").create_app(registry, authenticator, settings)
    return Served(app, transport.guarded_protocol(transport.TransportLimits()))


def copy_at(rev: str, folder: Path) -> str:
    """``mlbridge/`` as it is at ``rev``, importable from ``folder`` as its own package."""
    name = "mlbridge_at_" + "".join(c if c.isalnum() else "_" for c in rev)
    archive = subprocess.run(
        ["git", "archive", rev, "mlbridge"], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "mlbridge").rename(folder / name)
    sys.path.insert(0, str(folder))
    return name


async def serve(target: Served, raw: bytes, rounds: int, connections: int = 1) -> None:
    """``rounds`` rounds of one request on each of ``connections`` new connections, fed in
    the same turn of the loop (as one read of the sockets would bring them); a round ends
    when every request is answered (written, and its task if any finished)."""
    config = uvicorn.Config(  # as mlbridge.server.run configures uvicorn
        target.app,
        http=target.protocol,
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,
    )
    config.load()
    state = ServerState()
    if hasattr(target.app, "state"):
        target.app.state.service.connections = state.connections  # as the server tells it
    opened = []
    for _ in range(connections):
        protocol = config.http_protocol_class(config=config, server_state=state, app_state={})
        transport = CountingTransport()
        protocol.connection_made(transport)
        opened.append((protocol, transport))
    for _ in range(rounds):
        before = [transport.writes for _, transport in opened]
        for protocol, _ in opened:
            protocol.data_received(raw)
        while any(t.writes == b or p.tasks for (p, t), b in zip(opened, before)):
            await asyncio.sleep(0)
    for protocol, transport in opened:
        protocol.connection_lost(None)
        if transport.statuses != {b"200"}:  # an error's path would be measured instead
            raise RuntimeError(f"replies with status {sorted(transport.statuses)}; expected 200")


def without_model() -> AbstractContextManager[Any]:
    """The runtime's predict answers the result of its first call."""
    original = OnnxRuntime.predict
    kept: dict[int, Any] = {}

    def predict(runtime: OnnxRuntime, inputs: dict[str, np.ndarray]) -> Any:
        if id(runtime) not in kept:
            kept[id(runtime)] = original(runtime, inputs)
        return kept[id(runtime)]

    return mock.patch.object(OnnxRuntime, "predict", predict)


def decoded_once() -> AbstractContextManager[Any]:
    """A V2 body decodes to the request its first decode made (same body, same request)."""
    original = v2_codec.decode_request
    kept: dict[tuple[bytes, str | None], Any] = {}

    def decode(body: bytes, header_length: str | None = None) -> Any:
        key = (bytes(body), header_length)
        if key not in kept:
            kept[key] = original(body, header_length)
        return kept[key]

    return mock.patch.object(v2_codec, "decode_request", decode)


def framework_only() -> AbstractContextManager[Any]:
    """The V2 infer route reads the body and answers a fixed reply."""

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        await received_body(receive, 1 << 30)
        await send_reply(send, FIXED_REPLY, {"content-type": "application/json"})

    return mock.patch.object(type(routes.infer), "__call__", staticmethod(answer))


Variant = tuple[str, Callable[[], AbstractContextManager[Any]]]


def variants(fmt: str, ref: str | None) -> dict[str, Variant]:
    """label -> (which served app, the change it runs under)."""
    found: dict[str, Variant] = {AS_SERVED: ("mlbridge", nullcontext)}
    if ref is not None:
        found[f"as served at {ref}"] = ("ref", nullcontext)
    found["without the model's call"] = ("mlbridge", without_model)
    if fmt.startswith("v2"):
        found["without decoding the body"] = ("mlbridge", decoded_once)
        found["framework only"] = ("mlbridge", framework_only)
    found["raw ASGI echo, same protocol"] = ("echo", nullcontext)
    found["httptools' parser alone"] = ("parser", nullcontext)
    return found


def measure(
    targets: dict[str, Served],
    raws: dict[str, bytes],
    reps: int,
    ref: str | None,
    connections: int = 1,
) -> dict[str, dict[str, list[float]]]:
    """fmt -> label -> CPU µs per request of each repetition."""
    loop = new_event_loop()
    figures: dict[str, dict[str, list[float]]] = {}
    for _ in range(reps):
        for fmt, raw in raws.items():
            for label, (which, change) in variants(fmt, ref).items():
                with change():
                    rounds = REQUESTS // connections
                    loop.run_until_complete(serve(targets[which], raw, 50 // connections + 1))
                    start = time.thread_time()
                    loop.run_until_complete(serve(targets[which], raw, rounds, connections))
                    spent = (time.thread_time() - start) / (rounds * connections) * 1e6
                figures.setdefault(fmt, {}).setdefault(label, []).append(spent)
    loop.close()
    return figures


def report(figures: dict[str, dict[str, list[float]]], warm: dict[str, float], model: str) -> None:
    for fmt, by_label in figures.items():
        whole = by_label[AS_SERVED]
        print(f"\n{fmt}, one image, {model}: CPU µs per request (ratio to as served, quartiles)")
        for label, values in by_label.items():
            ratios = sorted(v / w for v, w in zip(values, whole))
            low, high = ratios[len(ratios) // 4], ratios[-1 - len(ratios) // 4]
            spread = f"{statistics.median(ratios):.2f} [{low:.2f}-{high:.2f}]"
            print(f"  {label:30} {statistics.median(values):7.1f}   {spread}")
        if model == "mnist":  # bench.microbench's steps are the MLP's
            decode, encode = WARM_STEPS[fmt]
            loop_sum = warm[decode] + warm[MODEL_STEP] + warm[encode]
            print(f"  {'warm loop: decode+model+encode':30} {loop_sum:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="repetitions (default 15)")
    parser.add_argument("--formats", default=",".join(FORMATS_MEASURED))
    parser.add_argument("--ref", help="also serve mlbridge/ as it is at this git revision")
    parser.add_argument("--model", default="mnist", help="the model (default mnist)")
    parser.add_argument(
        "--connections", type=int, default=1, help="requests at once, one per connection"
    )
    args = parser.parse_args()
    return_big_buffers()  # as the server does at start
    image = held_out_images()[0]
    auth = {"Authorization": f"Bearer {SECRET}"}
    raws = {}
    for fmt in args.formats.split(","):
        body, headers = FORMATS[fmt].body(image[np.newaxis], "")
        path = FORMATS[fmt].path(args.model)
        raws[fmt] = request_bytes("POST", path, body, {**headers, **auth})
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        os.chmod(folder, 0o700)
        targets = {"mlbridge": served("mlbridge", folder)}
        echo = Served(asgi_echo, targets["mlbridge"].protocol)
        targets["echo"] = echo
        targets["parser"] = Served(asgi_echo, ParserEcho)
        if args.ref is not None:
            targets["ref"] = served(copy_at(args.ref, folder), folder)
        figures = measure(targets, raws, args.reps, args.ref, args.connections)
    cpus = len(os.sched_getaffinity(0))
    print(
        f"{args.reps} repetitions of {REQUESTS} requests, {args.connections} at once, "
        f"model {args.model}; this process may run on {cpus} CPU(s)"
    )
    report(figures, steps(image, targets["mlbridge"].app.state.service.registry), args.model)


if __name__ == "__main__":
    main()
