"""The benchmark against the peers, in one run: start everything, measure, interleaved.

Used by ``python -m bench`` (see bench/README.md). Each scenario runs every configuration
once per repetition, repetitions outermost, so drift of the machine spreads over all of
them; the report takes medians and ratios to the floor of the same run.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
import psutil

from mlbridge.registry import DEMO_MODELS
from mlbridge.training.data import load_mnist_idx

from . import loadgen, mlserver_onnx, servers
from .loadgen import Connection, request_bytes
from .payloads import FORMATS
from .servers import Server

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / ".cache"
MNIST_DIR = Path(os.environ.get("MLBRIDGE_MNIST", REPO.parent / "shared" / "data" / "mnist"))
HELD_OUT = slice(8000, 10000)
SINGLE_IMAGES = 64  # distinct single-image bodies sent in turn
ORIGINAL_PARSER_TIMEOUT_S = 600
PRIORITY = -10  # nice value: other processes then get ~1/10 of a contended core
FOREIGN_WARNING = 0.05  # of the machine's CPU time taken by other processes


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    mode: str
    repetitions: int = 3
    sequential: int = 4000  # requests per repetition (keep-alive servers)
    sequential_fresh: int = 300  # the original design: a new connection per request
    inprocess: int = 2000
    seconds: float = 3.0  # per concurrent run
    levels: tuple[int, ...] = (8, 32)
    bulk: int = 10000
    locust_s: int = 15
    original_parser_images: int = 10000
    startups: int = 3


PLANS = {
    "full": Plan("full"),
    "quick": Plan(
        "quick",
        sequential=300,
        sequential_fresh=60,
        inprocess=300,
        seconds=1.0,
        bulk=1000,
        locust_s=4,
        original_parser_images=1000,
    ),
}


@dataclass
class Config:
    """One thing measured: a server, a wire format, a model."""

    name: str  # server/format/model
    server: Server
    raws: list[bytes]
    fresh: bool = False  # a new connection per request (HTTP/1.0)
    stats_models: tuple[str, ...] = ()  # mlbridge models whose batching counts to read


@dataclass
class Bench:
    plan: Plan
    folder: Path
    images: np.ndarray
    log: list[str] = field(default_factory=list)
    servers: dict[str, Server] = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    bodies: dict = field(default_factory=dict)  # bulk bodies, built once
    out: Path | None = None

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        self.log.append(line)

    def save(self) -> None:
        """Write what was measured so far (a later failure loses nothing)."""
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(self.results, indent=1) + "\n")

    def attempt(self, scenario: Callable[[Bench], None]) -> None:
        """Run a scenario that the others do not need; a failure is recorded, not fatal."""
        try:
            scenario(self)
        except Exception as error:  # e.g. a server that no longer starts
            self.say(f"{scenario.__name__} failed: {error}")
            self.results["meta"].setdefault("errors", []).append(f"{scenario.__name__}: {error}")
        self.save()


def run(plan: Plan, out: Path, pin: bool, with_locust: bool = True) -> dict:
    """Run every scenario; write the results document after each one and return it."""
    cpus = sorted(os.sched_getaffinity(0))
    pinned = pin and len(cpus) >= 2
    if pinned:
        servers.pin({cpus[0]}, set(cpus[1:]))
    niceness = raise_priority()
    images = held_out_images()
    with tempfile.TemporaryDirectory(prefix="mlbridge-bench-") as folder:
        bench = Bench(plan, Path(folder), images, out=out)
        bench.results["meta"] = meta(plan, cpus, pinned)
        bench.results["meta"]["nice"] = niceness
        servers.snapshot_mlbridge(Path(folder))
        bench.results["meta"]["mlbridge_digest"] = servers.snapshot_digest()
        started = time.perf_counter()
        try:
            start_servers(bench)
            configs = per_request_configs(bench)
            check_answers(bench, configs)
            bench.results["rss_idle_mb"] = {k: s.rss_mb() for k, s in bench.servers.items()}
            inprocess(bench)
            watch = MachineWatch(bench)
            sequential(bench, configs)
            concurrent(bench, configs)
            bench.results["meta"]["foreign_cpu"] = watch.report()
            bench.results["rss_after_load_mb"] = {k: s.rss_mb() for k, s in bench.servers.items()}
            bench.save()
            bulk(bench)
            bench.results["rss_after_bulk_mb"] = {k: s.rss_mb() for k, s in bench.servers.items()}
            bench.save()
            if with_locust:
                bench.attempt(locust)
        finally:
            for server in bench.servers.values():
                server.stop()
        bench.attempt(startup)
        bench.attempt(original_parser)
        bench.results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
        bench.save()
    bench.say(f"results written to {out}")
    return bench.results


def raise_priority() -> int:
    """Run the bench (and the servers it starts) ahead of other work, where allowed."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)
    return os.getpriority(os.PRIO_PROCESS, 0)


class MachineWatch:
    """CPU time that processes other than the bench and its servers took meanwhile."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.start = (time.perf_counter(), machine_busy_s(), self.own_s())

    def own_s(self) -> float:
        client = psutil.Process().cpu_times()
        return client.user + client.system + sum(s.cpu_s() for s in self.bench.servers.values())

    def report(self) -> str:
        wall, busy, own = self.start
        wall = time.perf_counter() - wall
        foreign = machine_busy_s() - busy - (self.own_s() - own)
        share = max(foreign, 0.0) / (wall * (os.cpu_count() or 1))
        text = (
            f"{share:.0%} of the machine's CPU time during the per-request scenarios "
            f"({max(foreign, 0):.1f} CPU s in {wall:.0f} s)"
        )
        if share > FOREIGN_WARNING:
            self.bench.say(f"warning: the machine was busy with other work: {text}")
        return text


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def held_out_images() -> np.ndarray:
    images, _ = load_mnist_idx(MNIST_DIR)
    return (images[HELD_OUT].astype(np.float32) / 255.0).astype(np.float32)


def bulk_images(images: np.ndarray, count: int) -> np.ndarray:
    """``count`` images: the held-out set repeated (10,000 from the 2,000 held out)."""
    return np.ascontiguousarray(np.resize(images, (count, 28, 28)))


PEER_PACKAGES = ["mlserver", "uvloop", "fastapi", "uvicorn", "onnxruntime"]
OUR_PACKAGES = [
    "uvicorn",
    "uvloop",
    "httptools",
    "starlette",
    "orjson",
    "pysimdjson",
    "onnxruntime",
    "numpy",
    "ai-edge-litert",
    "wolframclient",
    "locust",
]
VERSIONS_PROBE = (
    "import json, sys\n"
    "from importlib.metadata import version\n"
    "print(json.dumps({name: version(name) for name in sys.argv[1:]}))\n"
)


def meta(plan: Plan, cpus: list[int], pinned: bool) -> dict:
    pinning = "none (client and servers share all CPUs)"
    if pinned:
        pinning = f"client on CPU {cpus[0]}, servers on CPU {','.join(map(str, cpus[1:]))}"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": plan.mode,
        "plan": plan.__dict__,
        "machine": machine(),
        "python": platform.python_version(),
        "commit": commit(),
        "pinning": pinning,
        "versions": versions(sys.executable, OUR_PACKAGES),
    }


def versions(python: str, packages: list[str]) -> dict[str, str]:
    """Installed versions of ``packages`` in the environment of ``python``."""
    if not Path(python).exists():
        return {}
    done = subprocess.run([python, "-c", VERSIONS_PROBE, *packages], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def machine() -> str:
    with open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    model = names[0] if names else platform.processor()
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB, Linux {platform.release()}"


def commit() -> str:
    """The commit measured, and whether mlbridge/ had changes not yet committed."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "mlbridge"], capture_output=True, text=True
    ).stdout.strip()
    return head.stdout.strip() + (" + uncommitted changes in mlbridge/" if dirty else "")


# ---- servers and configurations ---------------------------------------------------------


def litert_model(bench: Bench) -> Path | None:
    """The demo MLP as TFLite (built once from the ONNX weights; needs TensorFlow)."""
    path = CACHE / "mnist.tflite"
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    bench.say("building bench/.cache/mnist.tflite from mnist.onnx's weights (TensorFlow, once)")
    done = subprocess.run(
        [sys.executable, "-m", "bench.litert_model", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        path.unlink(missing_ok=True)
        bench.say("no TFLite model (TensorFlow missing?): the original design runs onnxruntime")
        return None
    return path


def start_servers(bench: Bench) -> None:
    folder = bench.folder
    tflite = litert_model(bench)
    bench.results["meta"]["original_engine"] = (
        "LiteRT (TFLite of mnist.onnx's weights) behind a lock"
        if tflite
        else "onnxruntime behind a lock (no TFLite file could be built)"
    )
    mlserver_onnx.ensure_mlserver()
    peer_python = str(mlserver_onnx.VENV / "bin" / "python")
    bench.results["meta"]["mlserver_env"] = versions(peer_python, PEER_PACKAGES)
    starts = [
        ("echo-asyncio", lambda: servers.start_echo("asyncio", folder)),
        ("echo-asgi", lambda: servers.start_echo("asgi", folder)),
        ("original", lambda: servers.start_original(folder, tflite or DEMO_MODELS / "mnist.onnx")),
        ("mlserver-default", lambda: servers.start_mlserver(folder, parallel_workers=True)),
        ("mlserver-pw0", lambda: servers.start_mlserver(folder, parallel_workers=False)),
        ("mlbridge", lambda: servers.start_mlbridge(folder)),
    ]
    for name, start in starts:
        bench.servers[name] = start()
        server = bench.servers[name]
        bench.say(f"started {name} on port {server.port} in {server.start_s:.2f} s")


def single_requests(bench: Bench, server: Server, fmt: str, model: str) -> list[bytes]:
    images = bench.images[:SINGLE_IMAGES]
    secret = server.token if fmt == "original" else ""
    auth = {} if fmt == "original" else server.auth
    return [
        FORMATS[fmt].request(model, images[i : i + 1], auth, secret) for i in range(len(images))
    ]


def floor_requests(bench: Bench, reply_bytes: int) -> list[bytes]:
    """The V2 JSON bodies of mlbridge's requests, to an echo that answers ``reply_bytes``."""
    bodies = [FORMATS["v2-json"].body(bench.images[i : i + 1], "")[0] for i in range(SINGLE_IMAGES)]
    path = f"/echo?reply={reply_bytes}"
    return [
        request_bytes("POST", path, body, {"Content-Type": "application/json"}) for body in bodies
    ]


def per_request_configs(bench: Bench) -> list[Config]:
    s = bench.servers
    mlbridge = s["mlbridge"]
    reply = Connection(mlbridge.port).send(single_requests(bench, mlbridge, "v2-json", "mnist")[0])
    configs = [
        Config("echo-asyncio/v2-json/-", s["echo-asyncio"], floor_requests(bench, len(reply.body))),
        Config("echo-asgi/v2-json/-", s["echo-asgi"], floor_requests(bench, len(reply.body))),
        Config(
            "original/text/mnist",
            s["original"],
            single_requests(bench, s["original"], "original", "mnist"),
            fresh=True,
        ),
    ]
    for name in ("mlserver-default", "mlserver-pw0"):
        for model in ("mnist", "mnist-cnn"):
            raws = single_requests(bench, s[name], "v2-json", model)
            configs.append(Config(f"{name}/v2-json/{model}", s[name], raws))
    for fmt in ("v2-json", "v2-binary", "text", "wxf", "gradient"):
        stats = ("mnist", "mnist.vjp") if fmt == "gradient" else ("mnist",)
        raws = single_requests(bench, mlbridge, fmt, "mnist")
        configs.append(Config(f"mlbridge/{fmt}/mnist", mlbridge, raws, stats_models=stats))
    raws = single_requests(bench, mlbridge, "v2-json", "mnist-cnn")
    configs.append(
        Config("mlbridge/v2-json/mnist-cnn", mlbridge, raws, stats_models=("mnist-cnn",))
    )
    return configs


def reference(model: str, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(DEMO_MODELS / f"{model}.onnx"))
    return session.run(None, {"input": images})[0]


def check_answers(bench: Bench, configs: list[Config]) -> None:
    """Every configuration answers the first image right before it is timed."""
    expected = {m: reference(m, bench.images[:1])[0] for m in ("mnist", "mnist-cnn")}
    for config in configs:
        server_name, fmt, model = config.name.split("/")
        if server_name.startswith("echo"):
            continue
        raw = config.raws[0]
        reply = (
            loadgen.one_request(config.server.port, raw)
            if config.fresh
            else Connection(config.server.port).send(raw)
        )
        if reply.status != 200:
            raise RuntimeError(f"{config.name}: status {reply.status}: {reply.body[:300]!r}")
        got = np.asarray(FORMATS[fmt].logits(reply)).reshape(-1)
        if fmt == "gradient":
            ok = got.shape == (784,) and bool(np.isfinite(got).all())
        else:
            ok = np.allclose(got, expected[model], atol=1e-3)
        if not ok:
            raise RuntimeError(f"{config.name}: wrong answer {got[:10]} vs {expected[model]}")
    bench.say(f"checked the answers of {len(configs) - 2} configurations against onnxruntime")


# ---- scenarios --------------------------------------------------------------------------


def percentiles(times: list[float]) -> dict[str, float]:
    values = np.asarray(times) * 1e6
    return {
        "p50_us": float(np.percentile(values, 50)),
        "p90_us": float(np.percentile(values, 90)),
        "p99_us": float(np.percentile(values, 99)),
    }


def inprocess(bench: Bench) -> None:
    """The cost of the model alone: onnxruntime and LiteRT in this process."""
    import onnxruntime

    plan, out = bench.plan, bench.results.setdefault("inprocess", {})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2  # mlbridge's default "threads"
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    runners = {}
    for model in ("mnist", "mnist-cnn"):
        session = onnxruntime.InferenceSession(str(DEMO_MODELS / f"{model}.onnx"), options)
        runners[f"onnxruntime/{model}"] = lambda x, s=session: s.run(None, {"input": x})[0]
    tflite = CACHE / "mnist.tflite"
    if tflite.exists():
        runners["litert/mnist"] = litert_runner(tflite)
    batch = bulk_images(bench.images, plan.bulk)
    for _ in range(plan.repetitions):
        for name, run_model in runners.items():
            times = []
            for index in range(plan.inprocess):
                image = bench.images[index % SINGLE_IMAGES][np.newaxis]
                start = time.perf_counter()
                run_model(image)
                times.append(time.perf_counter() - start)
            start = time.perf_counter()
            run_model(batch)
            bulk_s = time.perf_counter() - start
            out.setdefault(name, []).append({**percentiles(times), "bulk_s": bulk_s})
    bench.say("in-process: " + ", ".join(f"{k} {v[-1]['p50_us']:.0f} µs" for k, v in out.items()))


def litert_runner(path: Path):
    """predict(x) through a LiteRT interpreter, resized when the batch changes."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=2)
    entry = interpreter.get_input_details()[0]["index"]
    exit_ = interpreter.get_output_details()[0]["index"]
    shape = [None]

    def predict(x: np.ndarray) -> np.ndarray:
        if shape[0] != x.shape:
            interpreter.resize_tensor_input(entry, list(x.shape))
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(entry, x)
        interpreter.invoke()
        return interpreter.get_tensor(exit_)

    return predict


def sequential(bench: Bench, configs: list[Config]) -> None:
    """One keep-alive connection, one image per request, one request at a time."""
    plan, out = bench.plan, bench.results.setdefault("sequential", {})
    for repetition in range(plan.repetitions):
        for config in configs:
            count = plan.sequential_fresh if config.fresh else plan.sequential
            loadgen.sequential(config.server.port, config.raws, 50, config.fresh)  # warm-up
            gc.collect()
            cpu = config.server.cpu_s()
            start = time.perf_counter()
            times = loadgen.sequential(config.server.port, config.raws, count, config.fresh)
            wall = time.perf_counter() - start
            cpu = config.server.cpu_s() - cpu
            figure = {**percentiles(times), "rps": count / wall, "cpu_us": cpu / count * 1e6}
            out.setdefault(config.name, []).append(figure)
        p50 = {c.name: out[c.name][-1]["p50_us"] for c in configs}
        bench.say(
            f"sequential rep {repetition + 1}: " + ", ".join(f"{k} {v:.0f}" for k, v in p50.items())
        )


def model_stats(server: Server, model: str) -> dict[str, int]:
    raw = request_bytes("GET", f"/v2/models/{model}/stats", headers=server.auth)
    reply = Connection(server.port).send(raw)
    if reply.status != 200:
        return {}
    stats = orjson.loads(reply.body)["model_stats"][0]
    return {k: stats[k] for k in ("inference_count", "execution_count", "request_count")}


def concurrent(bench: Bench, configs: list[Config]) -> None:
    """N clients, each with one request in flight, for a fixed time."""
    plan, out = bench.plan, bench.results.setdefault("concurrent", {})
    for repetition in range(plan.repetitions):
        for clients in plan.levels:
            level = out.setdefault(str(clients), {})
            for config in configs:
                before = {m: model_stats(config.server, m) for m in config.stats_models}
                cpu = config.server.cpu_s()
                result = loadgen.load(
                    config.server.port, config.raws, clients, plan.seconds, fresh=config.fresh
                )
                cpu = config.server.cpu_s() - cpu
                figure = {
                    "rps": result.requests / result.seconds,
                    "errors": result.errors,
                    "requests": result.requests,
                    "cpu_us": cpu / max(result.requests, 1) * 1e6,
                    **(percentiles(result.latencies) if result.latencies else {}),
                }
                for model in config.stats_models:
                    after = model_stats(config.server, model)
                    calls = after["execution_count"] - before[model]["execution_count"]
                    rows = after["inference_count"] - before[model]["inference_count"]
                    figure[f"batch_{model}"] = rows / calls if calls else None
                level.setdefault(config.name, []).append(figure)
            rps = {c.name: level[c.name][-1]["rps"] for c in configs}
            bench.say(
                f"{clients} clients rep {repetition + 1}: "
                + ", ".join(f"{k} {v:.0f}/s" for k, v in rps.items())
            )


def bulk(bench: Bench) -> None:
    """One request carrying ``plan.bulk`` images, per server and wire format."""
    plan, s = bench.plan, bench.servers
    images = bulk_images(bench.images, plan.bulk)
    expected = {m: reference(m, images) for m in ("mnist", "mnist-cnn")}
    jobs: list[tuple[str, Server, str, str]] = [
        ("mlserver-default/v2-json/mnist", s["mlserver-default"], "v2-json", "mnist"),
        ("mlserver-pw0/v2-json/mnist", s["mlserver-pw0"], "v2-json", "mnist"),
        ("mlserver-default/v2-json/mnist-cnn", s["mlserver-default"], "v2-json", "mnist-cnn"),
        ("mlserver-pw0/v2-json/mnist-cnn", s["mlserver-pw0"], "v2-json", "mnist-cnn"),
    ]
    jobs += [(f"mlbridge/{f}/mnist", s["mlbridge"], f, "mnist") for f in FORMATS if f != "original"]
    jobs.append(("mlbridge/v2-json/mnist-cnn", s["mlbridge"], "v2-json", "mnist-cnn"))
    bench.say(f"building the {plan.bulk}-image bodies")
    bodies = {}
    for name, server, fmt, model in jobs:
        body, headers = bulk_body(bench, fmt, images)
        path = FORMATS[fmt].path(model)
        bodies[name] = request_bytes("POST", path, body, {**headers, **server.auth})
    reply = Connection(s["mlbridge"].port).send(bodies["mlbridge/v2-json/mnist"])
    floor_body = FORMATS["v2-json"].body(images, "")[0]
    floor = request_bytes("POST", f"/echo?reply={len(reply.body)}", floor_body, {})
    jobs = [
        ("echo-asgi/v2-json/-", s["echo-asgi"], "echo", "-"),
        ("echo-asyncio/v2-json/-", s["echo-asyncio"], "echo", "-"),
        *jobs,
    ]
    bodies["echo-asgi/v2-json/-"] = bodies["echo-asyncio/v2-json/-"] = floor
    out = bench.results.setdefault("bulk", {})
    for repetition in range(plan.repetitions):
        for name, server, fmt, model in jobs:
            gc.collect()
            connection = Connection(server.port, timeout_s=600)
            start = time.perf_counter()
            reply = connection.send(bodies[name])
            seconds = time.perf_counter() - start
            connection.close()
            if reply.status != 200:
                raise RuntimeError(f"bulk {name}: status {reply.status}: {reply.body[:300]!r}")
            if fmt not in ("echo", "gradient") and repetition == 0:
                got = np.asarray(FORMATS[fmt].logits(reply)).reshape(expected[model].shape)
                if not np.allclose(got, expected[model], atol=1e-3):
                    raise RuntimeError(f"bulk {name}: wrong answers")
            out.setdefault(name, []).append(
                {
                    "seconds": seconds,
                    "sent_bytes": len(bodies[name]),
                    "reply_bytes": len(reply.body),
                }
            )
        bench.say(
            f"bulk rep {repetition + 1}: "
            + ", ".join(f"{name} {out[name][-1]['seconds']:.2f} s" for name, *_ in jobs)
        )


def bulk_body(bench: Bench, fmt: str, images: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A bulk body, built once per body kind and image count (text takes seconds)."""
    kind = FORMATS[fmt].body
    key = (kind.__name__, len(images))
    if key not in bench.bodies:
        bench.bodies[key] = kind(images, "")
    return bench.bodies[key]


def original_parser(bench: Bench) -> None:
    """The original design's parser alone on the text of ``original_parser_images`` images."""
    count = bench.plan.original_parser_images
    text = bulk_body(bench, "text", bulk_images(bench.images, count))[0]
    bench.bodies.clear()
    path = bench.folder / "bulk.txt"
    path.write_bytes(text)
    probe = (
        "import ast, resource, sys, time\n"
        "import numpy as np\n"
        "data = open(sys.argv[1]).read()\n"
        "start = time.perf_counter()\n"
        "text = data.replace('{', '[').replace('}', ']')\n"
        "values = np.asarray(ast.literal_eval(text), np.float32)\n"
        "print(time.perf_counter() - start, values.shape, "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    bench.say(f"the original parser on {count} images of text ({len(text) / 1e6:.0f} MB), once")
    done = subprocess.run(
        [sys.executable, "-c", probe, str(path)],
        capture_output=True,
        text=True,
        timeout=ORIGINAL_PARSER_TIMEOUT_S,
        preexec_fn=servers._affinity,
    )
    ours = subprocess.run(  # mlbridge's parser on the same file, as the servers import it
        [sys.executable, "-c", OUR_PARSER_PROBE, str(path), str(bench.plan.repetitions)],
        capture_output=True,
        text=True,
        timeout=ORIGINAL_PARSER_TIMEOUT_S,
        preexec_fn=servers._affinity,
        env={**os.environ, **servers.mlbridge_env()[0]},
        cwd=servers.mlbridge_env()[1],
    )
    path.unlink()
    if done.returncode != 0 or ours.returncode != 0:
        bench.say(f"a parser failed: {done.stderr[-500:]} {ours.stderr[-500:]}")
        return
    seconds, *_, max_rss_kb = done.stdout.split()
    our_seconds, *_, our_rss_kb = ours.stdout.split()
    bench.results["original_parser"] = {
        "images": count,
        "bytes": len(text),
        "seconds": float(seconds),
        "max_rss_mb": int(max_rss_kb) / 1000,
        "mlbridge_seconds": float(our_seconds),
        "mlbridge_max_rss_mb": int(our_rss_kb) / 1000,
    }
    bench.say(
        f"original parser: {float(seconds):.1f} s, {int(max_rss_kb) / 1e6:.1f} GB peak; "
        f"mlbridge's: {float(our_seconds):.2f} s (median), {int(our_rss_kb) / 1e3:.0f} MB peak"
    )


OUR_PARSER_PROBE = (
    "import resource, statistics, sys, time\n"
    "from mlbridge.codecs.mathematica import parse_list\n"
    "data = open(sys.argv[1], 'rb').read()\n"
    "times = []\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    start = time.perf_counter()\n"
    "    values = parse_list(data).astype('float32')\n"
    "    times.append(time.perf_counter() - start)\n"
    "print(statistics.median(times), values.shape, "
    "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
)


def startup(bench: Bench) -> None:
    """Spawn to ready, ``plan.startups`` times each, interleaved (servers started afresh)."""
    folder, out = bench.folder, bench.results.setdefault("startup_s", {})
    tflite = CACHE / "mnist.tflite"
    model = tflite if tflite.exists() else DEMO_MODELS / "mnist.onnx"
    starts = {
        "echo-asgi": lambda: servers.start_echo("asgi", folder),
        "original": lambda: servers.start_original(folder, model),
        "mlserver-default": lambda: servers.start_mlserver(folder, parallel_workers=True),
        "mlserver-pw0": lambda: servers.start_mlserver(folder, parallel_workers=False),
        "mlbridge": lambda: servers.start_mlbridge(folder),
    }
    for _ in range(bench.plan.startups):
        for name, start in starts.items():
            server = start()
            out.setdefault(name, []).append(server.start_s)
            server.stop()
    bench.say(
        "start-up to ready: "
        + ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in out.items())
    )


def locust(bench: Bench) -> None:
    """The third-party harness: Locust FastHttpUser, 8 users, headless, loopback only."""
    from . import locust_run

    targets = {
        "echo-asgi/v2-json/-": bench.servers["echo-asgi"],
        "mlserver-pw0/v2-json/mnist": bench.servers["mlserver-pw0"],
        "mlbridge/v2-json/mnist": bench.servers["mlbridge"],
    }
    out = bench.results.setdefault("locust", {})
    body = FORMATS["v2-json"].body(bench.images[:1], "")[0]
    for name, server in targets.items():
        result = locust_run.run(server, body, bench.plan.locust_s, bench.folder, users=8)
        if result is None:
            bench.say("locust is not installed (pip install -e '.[bench]'): skipped")
            return
        out[name] = result
        rps, p99, failures = result["rps"], result["p99_ms"], result["failures"]
        bench.say(f"locust {name}: {rps:.0f} req/s, p99 {p99} ms, {failures} failures")
