"""The Wolfram Language package MLBridge, run in Mathics3 against a real `mlbridge serve`.

Mathics3 has no HTTP client, so tests/standin.wl supplies URLRead/HTTPRequest on top of a
test-only Python builtin that really goes over a socket (tests/pymathics/mlbridge_http.py).
The package itself is loaded unchanged. The script prints `RESULT<TAB>key<TAB>value` lines.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from support import TESTDATA

from mlbridge.codecs.mathematica import parse_list

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "MLBridge" / "Kernel" / "MLBridge.wl"
SCRIPT = HERE / "tests" / "client_test.wl"
SERVER_SCRIPT = HERE / "tests" / "server_test.wl"
MATHICS = Path(sys.executable).with_name("mathics")
EXAMPLES = slice(0, 10)  # held-out images 8000..8009
MAX_MISSES = 1
RUN_TIMEOUT_S = 300

pytestmark = [
    pytest.mark.clients,
    pytest.mark.skipif(
        not MATHICS.exists() and shutil.which("mathics") is None, reason="Mathics3 not installed"
    ),
]


def wolfram_list(array: np.ndarray) -> str:
    """Nested Wolfram list text; 9 significant digits give back every float32 exactly."""
    if array.ndim == 0:
        text = f"{float(array):.9g}"
        return text if any(c in text for c in ".e") else text + "."
    return "{" + ", ".join(wolfram_list(row) for row in array) + "}"


def run_mathics(script: Path, env: dict[str, str], cwd: Path) -> str:
    """Run a script with `mathics -f`; its stdout and stderr, after a zero exit."""
    mathics = str(MATHICS) if MATHICS.exists() else "mathics"
    run = subprocess.run(
        [mathics, "-f", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=cwd,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    return output


def parse_results(output: str) -> dict[str, str]:
    """The script's RESULT lines as key -> InputForm text."""
    results = {}
    for line in output.splitlines():
        if line.startswith("RESULT\t"):
            _, key, value = line.split("\t", 2)
            results[key] = value
    return results


def wolfram_value(text: str):
    """Read a printed list/number/string/boolean (InputForm, Mathics3 arrows) into Python."""
    text = text.replace("⇾", "->").replace("*^", "e")
    text = text.replace("{", "[").replace("}", "]")
    return ast.literal_eval(text)


@pytest.fixture(scope="module")
def results(server, mnist, tmp_path_factory) -> dict[str, str]:
    """Run the Mathics3 script once against the session's server."""
    images, labels = mnist
    data = tmp_path_factory.mktemp("wolfram") / "images-8000-8009.m"
    label_text = "{" + ", ".join(str(int(v)) for v in labels[EXAMPLES]) + "}"
    data.write_text("{" + wolfram_list(images[EXAMPLES]) + ", " + label_text + "}\n")
    env = {
        **server.env,
        "MLBRIDGE_TEST_IMAGES": str(data),
        "MLBRIDGE_TEST_PACKAGE": str(PACKAGE),
        "MLBRIDGE_TEST_TESTDATA": str(TESTDATA),
        "PYTHONPATH": str(HERE / "tests"),
        "LD_LIBRARY_PATH": "/leak",  # must not reach the server the package would start
    }
    output = run_mathics(SCRIPT, env, data.parent)
    found = parse_results(output)
    assert "server-argv" in found, f"the script stopped early:\n{output}"
    found["image-8000-text-file"] = str(data.parent / "image-8000.text")
    return found


def test_connects_through_server_json(results, server):
    assert wolfram_value(results["connect-url"]) == server.url


def test_lists_models_and_metadata(results):
    assert "mnist" in wolfram_value(results["models"])
    assert wolfram_value(results["input-shape"]) == [-1, 28, 28]
    assert wolfram_value(results["output-shape"]) == [-1, 10]
    assert wolfram_value(results["labels"]) == [str(d) for d in range(10)]


def test_predict_text_transport_matches_v2(results, mnist, v2_infer):
    images, _ = mnist
    assert wolfram_value(results["logits-dimensions"]) == [10, 10]
    expected = v2_infer("mnist", images[EXAMPLES])
    first = np.array(wolfram_value(results["logits-first"]))
    np.testing.assert_allclose(first, expected[0], rtol=1e-5, atol=1e-5)
    one = np.array(wolfram_value(results["logits-one"]))
    np.testing.assert_allclose(one, expected[0], rtol=1e-5, atol=1e-5)


def golden_v2_logits() -> np.ndarray:
    """The recorded V2 JSON reply to image 8000: 10 logits."""
    reply = json.loads((TESTDATA / "mnist-8000.reply.v2.json").read_text())
    return np.asarray(reply["outputs"][0]["data"], dtype=np.float64)


def test_golden_text_reply_reads_as_the_golden_logits(results):
    logits = np.array(wolfram_value(results["golden-reply-text"]), dtype=np.float64)
    assert logits.shape == (10,)
    np.testing.assert_allclose(logits, golden_v2_logits(), rtol=0, atol=1e-5)
    assert int(np.argmax(logits)) == 4


def test_text_encoding_of_image_8000_is_the_golden_request(results):
    sent = parse_list(Path(results["image-8000-text-file"]).read_bytes())
    golden = parse_list((TESTDATA / "mnist-8000.request.text").read_bytes())
    assert sent.shape == golden.shape == (28, 28)
    np.testing.assert_array_equal(sent.astype(np.float32), golden.astype(np.float32))


def test_live_text_reply_to_image_8000_matches_the_golden_reply(results):
    live = np.array(wolfram_value(results["logits-one"]), dtype=np.float64)
    golden = parse_list((TESTDATA / "mnist-8000.reply.text").read_bytes())
    np.testing.assert_allclose(live, golden, rtol=0, atol=1e-5)


def test_classifies_held_out_digits(results, mnist):
    _, labels = mnist
    predicted = [int(label) for label in wolfram_value(results["predicted"])]
    misses = sum(p != int(t) for p, t in zip(predicted, labels[EXAMPLES], strict=True))
    assert misses <= MAX_MISSES, f"predicted {predicted}, labels {labels[EXAMPLES].tolist()}"
    probabilities = wolfram_value(results["probabilities"])
    assert all(0.0 < p <= 1.0 for p in probabilities)


def test_top_n_is_sorted_softmax(results):
    top3 = results["top3-first"].replace("<|", "{").replace("|>", "}")
    top3 = top3.replace("⇾", ":").replace("->", ":")  # the stand-in writes "->", as WL does
    ranked = list(ast.literal_eval(top3).values())
    assert len(ranked) == 3
    assert ranked == sorted(ranked, reverse=True)
    assert sum(ranked) <= 1.0 + 1e-9


def test_wrong_shape_is_a_failure_with_the_servers_message(results):
    assert results["wrong-shape-head"] == "Failure"
    assert wolfram_value(results["wrong-shape-status"]) == 400
    assert wolfram_value(results["wrong-shape-code"]) == "ShapeMismatch"
    assert "[2, 2]" in wolfram_value(results["wrong-shape-message"])


def test_http_errors_keep_their_status(results):
    assert wolfram_value(results["unknown-model-status"]) == 404
    assert wolfram_value(results["wrong-token-status"]) == 401


def test_a_wrong_secret_fails_the_server_proof_and_is_not_sent(results, server):
    assert wolfram_value(results["wrong-token-code"]) == "ServerProof"
    assert wolfram_value(results["wrong-token-message"]) == (
        f"the server at {server.url} could not prove it knows the secret; not sending it "
        "(is this really your mlbridge server?)"
    )


def test_original_design_body_still_works(results):
    assert wolfram_value(results["original-status"]) == 200
    np.testing.assert_allclose(
        wolfram_value(results["original-logits"]), wolfram_value(results["logits-first"])
    )


def test_missing_server_says_how_to_start_one(results):
    assert wolfram_value(results["no-server-code"]) == "NoServer"
    assert "no mlbridge server found" in wolfram_value(results["no-server-message"])
    assert wolfram_value(results["no-server-command"]) == "`mlbridge serve`"


def test_hostile_replies_are_never_evaluated(results):
    assert results["hostile-head"] == "Failure"
    assert results["hostile-leaked"] == "False"
    assert wolfram_value(results["hostile-failure-status"]) == 400
    assert results["hostile-failure-leaked"] == "False"


def test_server_process_gets_a_clean_environment(results, server):
    """The argv the package hands StartProcess drops the kernel's library/Python paths."""
    argv = wolfram_value(results["server-argv"])
    assert argv[-2:] == ["mlbridge", "serve"]
    probe = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]
    leaky = {**os.environ, "LD_LIBRARY_PATH": "/leak", "PYTHONHOME": "/leak", "PYTHONPATH": "/x"}
    run = subprocess.run(
        [*argv[:-2], *probe], env=leaky, capture_output=True, text=True, check=True, timeout=30
    )
    child = json.loads(run.stdout)
    assert not {"LD_LIBRARY_PATH", "PYTHONHOME", "PYTHONPATH"} & child.keys()
    assert child["MLBRIDGE_HOME"] == str(server.home)
    assert "PATH" in child and "HOME" in child


def test_start_and_stop_server_from_the_package(tmp_path):
    """MLBridgeStartServer runs `mlbridge serve --detach` clean; MLBridgeStopServer stops it."""
    home = tmp_path / "home"
    env = {
        **os.environ,
        "MLBRIDGE_HOME": str(home),
        "MLBRIDGE_TEST_PACKAGE": str(PACKAGE),
        "MLBRIDGE_TEST_COMMAND": str(Path(sys.executable).with_name("mlbridge")),
        "PYTHONPATH": str(HERE / "tests"),
        "LD_LIBRARY_PATH": "/leak",
    }
    started = parse_results(
        run_mathics(SERVER_SCRIPT, {**env, "MLBRIDGE_TEST_ACTION": "start"}, tmp_path)
    )
    info = json.loads((home / "server.json").read_text())
    try:
        assert wolfram_value(started["start-url"]) == info["url"]
        assert "mnist" in wolfram_value(started["start-models"])
        environ = Path(f"/proc/{info['pid']}/environ").read_bytes().split(b"\0")
        names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
        assert not {"LD_LIBRARY_PATH", "PYTHONPATH"} & names
    finally:
        stopped = parse_results(
            run_mathics(SERVER_SCRIPT, {**env, "MLBRIDGE_TEST_ACTION": "stop"}, tmp_path)
        )
    assert stopped["stop"] == "Null"
    assert wolfram_value(stopped["after-stop-code"]) == "NoServer"
    assert not Path(f"/proc/{info['pid']}").exists() or _is_zombie(info["pid"])


def _is_zombie(pid: int) -> bool:
    """A stopped detached server may linger as a zombie until its parent reaps it."""
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


# Gradients: MLBridgeGradient, MLBridgeJacobian, MLBridgeFunction (tests/gradient_test.wl)

GRADIENT_SCRIPT = HERE / "tests" / "gradient_test.wl"
NO_GRADIENT_MODEL = "linear-lite.tflite"  # TFLite carries no gradient
GRADIENT_EXAMPLES = slice(0, 3)  # held-out images 8000..8002


@pytest.fixture(scope="module")
def no_gradient_server(tmp_path_factory):
    """A second server whose only model, 'linear-lite', serves no gradient."""
    from support import start_server  # the top import line is shared with other edits

    running = start_server(
        tmp_path_factory.mktemp("nograd") / "home", str(TESTDATA / "models" / NO_GRADIENT_MODEL)
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def gradient_run(server, no_gradient_server, mnist, tmp_path_factory) -> tuple[dict, Path]:
    """Run tests/gradient_test.wl once; its RESULT lines and the folder of its saved arrays."""
    images, _ = mnist
    out = tmp_path_factory.mktemp("wolfram-gradients")
    data = out / "images-8000-8002.m"
    data.write_text(wolfram_list(images[GRADIENT_EXAMPLES]) + "\n")
    env = {
        **server.env,
        "MLBRIDGE_TEST_IMAGES": str(data),
        "MLBRIDGE_TEST_PACKAGE": str(PACKAGE),
        "MLBRIDGE_TEST_OUT": str(out),
        "MLBRIDGE_TEST_NOGRAD_URL": no_gradient_server.url,
        "MLBRIDGE_TEST_NOGRAD_TOKEN": str(no_gradient_server.token_file),
        "PYTHONPATH": str(HERE / "tests"),
    }
    found = parse_results(run_mathics(GRADIENT_SCRIPT, env, out))
    assert found.get("done") == "True", f"the script stopped early: {sorted(found)}"
    return found, out


@pytest.fixture
def python_client(server):
    """A fresh client per test: a kept-alive connection may be closed by the server while the
    Mathics3 scripts run, and the client does not reconnect."""
    from mlbridge.client import Client

    with Client(home=server.home) as client:
        yield client


def saved(gradient_run, key: str) -> np.ndarray:
    """An array the script saved as InputForm text, read by the server's own parser."""
    return parse_list((gradient_run[1] / f"{key}.m").read_bytes())


def test_box_volume_gradient_and_jacobian_are_exact(gradient_run):
    results = gradient_run[0]
    assert results["box-gradient"] == "{32., 16., 8.}"
    assert results["box-gradient-batch"] == "{{32., 16., 8.}, {6., 3., 2.}}"
    assert results["box-jacobian"] == "{32., 16., 8.}"
    assert results["box-value"] == "64."


def test_vector_jacobian_product_with_a_cotangent(gradient_run):
    results = gradient_run[0]
    assert results["box-vjp"] == "{64., 32., 16.}"
    assert results["box-vjp-batch"] == "{{32., 16., 8.}, {3., 1.5, 1.}}"


def test_vjp_body_is_an_association_the_server_reads(gradient_run):
    from mlbridge.codecs.mathematica import parse_association

    body = (gradient_run[1] / "vjp-body.m").read_bytes()
    assert body.startswith(b'<|"x" -> {2., 4., 8.}, "cotangent" -> 2.')
    arguments = parse_association(body)
    np.testing.assert_array_equal(arguments["x"], [2.0, 4.0, 8.0])
    assert float(arguments["cotangent"]) == 2.0


def test_wxf_sends_each_models_own_precision(gradient_run):
    assert wolfram_value(gradient_run[0]["wxf-element-types"]) == ["Real64", "Real64", "Real32"]


def test_function_object_evaluates_on_numbers(gradient_run):
    results = gradient_run[0]
    assert results["function-value"] == "64."
    assert results["function-batch"] == "{64., 6.}"
    assert results["function-gradient"] == "{32., 16., 8.}"
    assert results["function-vjp"] == "{16., 8., 4.}"
    assert results["function-jacobian"] == "{32., 16., 8.}"
    assert results["function-substituted"] == "64."


def test_function_object_stays_unevaluated_on_symbols(gradient_run):
    results = gradient_run[0]
    head = 'MLBridgeFunction["box_volume", "Transport" ⇾ "Text"]'
    assert results["function-symbolic"] == head + "[{a, b, c}]"
    assert results["function-symbolic-gradient"] == head + '["Gradient"][{a, b, c}]'
    assert results["function-symbolic-jacobian"] == head + '["Jacobian"][{a, 4, 8}]'
    assert results["function-property"] == head + '["Gradient"]'
    assert results["lj13-symbolic"] == "True"


def test_mnist_gradient_matches_the_python_client(gradient_run, mnist, python_client):
    images = mnist[0][GRADIENT_EXAMPLES]
    results = gradient_run[0]
    assert wolfram_value(results["mnist-gradient-dimensions"]) == [[28, 28], [3, 28, 28]]
    one = saved(gradient_run, "mnist-gradient-one")
    np.testing.assert_allclose(one, python_client.gradient("mnist", images[0]), atol=1e-6)
    batch = saved(gradient_run, "mnist-gradient-batch")
    np.testing.assert_allclose(batch, python_client.gradient("mnist", images), atol=1e-6)
    assert np.abs(one).max() > 1e-3, "a zero gradient would match trivially"


def test_mnist_vjp_and_jacobian_match_the_python_client(gradient_run, mnist, python_client):
    image = mnist[0][GRADIENT_EXAMPLES][0]
    unit = np.eye(10, dtype=np.float32)[4]  # UnitVector[10, 5]: d logit 4 / dx
    vjp = saved(gradient_run, "mnist-vjp-one")
    np.testing.assert_allclose(vjp, python_client.gradient("mnist", image, unit), atol=1e-6)
    assert wolfram_value(gradient_run[0]["mnist-jacobian-dimensions"]) == [10, 28, 28]
    jacobian = saved(gradient_run, "mnist-jacobian")
    np.testing.assert_allclose(jacobian, python_client.jacobian("mnist", image), atol=1e-6)
    np.testing.assert_allclose(jacobian[4], vjp, atol=1e-6)


def test_lj13_function_as_find_minimum_evaluates_it(gradient_run, python_client):
    results = gradient_run[0]
    start = saved(gradient_run, "lj13-start")
    assert start.shape == (13, 3)
    expected = float(python_client.predict("lj13", start))
    assert wolfram_value(results["lj13-energy"]) == pytest.approx(expected, rel=1e-12)
    assert wolfram_value(results["lj13-gradient-length"]) == 39
    gradient = saved(gradient_run, "lj13-gradient")
    np.testing.assert_allclose(
        gradient, python_client.gradient("lj13", start).ravel(), rtol=1e-9, atol=1e-12
    )
    assert results["lj13-descends"] == "True"


def test_gradient_errors_are_failures_with_the_servers_message(gradient_run):
    results = gradient_run[0]
    status, code, message = wolfram_value(results["error-cotangent-shape"])
    assert (status, code) == (400, "ShapeMismatch") and "cotangent" in message
    status, code, message = wolfram_value(results["error-jacobian-batch"])
    assert (status, code) == (400, "ShapeMismatch") and "one example" in message
    assert wolfram_value(results["error-unknown-model"])[:2] == [404, "ModelNotFound"]
    assert wolfram_value(results["error-bad-cotangent"]) == "ClientError"


def test_model_without_gradient_is_a_422_failure(gradient_run):
    results = gradient_run[0]
    for key in ("nograd-gradient", "nograd-jacobian", "nograd-function"):
        status, code, message = wolfram_value(results[key])
        assert (status, code) == (422, "GradientUnavailable"), key
        assert "TFLite models carry no gradient" in message
    assert wolfram_value(results["nograd-predict-dimensions"]) == [10]


def test_deep_hostile_replies_are_never_evaluated(gradient_run):
    results = gradient_run[0]
    assert results["hostile-deep"] == "Failure"
    assert results["hostile-deep-leaked"] == "False"
    assert results["ragged-reply"] == "Failure"
    assert wolfram_value(results["scalar-reply"]) == -4.5e-7


# Transports and the documentation review's risks (tests/transport_test.wl): WXF on both
# directions of the wire against wolframclient, Accept headers, charsets, foreign replies,
# URLRead's $Failed, server.json without a url, Windows environments, training curves.

TRANSPORT_SCRIPT = HERE / "tests" / "transport_test.wl"
WXF_TYPE = "application/vnd.wolfram.wxf"
TEXT_TYPE = "text/x-mathematica"
LABELS = ["chat", "café", "猫"]
HTML_502 = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


def wxf(value) -> bytes:
    from wolframclient.serializers import export

    return export(value, target_format="wxf")


def fake_metadata(name: str, labels: list[str] | None = None) -> dict:
    tensor = {"name": "input", "datatype": "FP32", "shape": [-1, 2]}
    meta = {"name": name, "platform": "fake", "inputs": [tensor]}
    meta["outputs"] = [{"name": "output", "datatype": "FP32", "shape": [-1, 2, 2]}]
    return meta | ({"parameters": {"labels": labels}} if labels else {})


FAKE_SECRET = "fake-secret"
PROOF_PATH = "/v2/health/proof?nonce="


def fake_reply(method: str, path: str, content_type: str) -> tuple[int, str, bytes]:
    """The scripted server's answer: JSON without a charset, as mlbridge sends it."""
    from mlbridge.auth import server_proof

    rank3 = np.array([[[1.0, 2.0], [np.nan, -np.inf]]], dtype=np.float32)
    if method == "GET" and path.startswith(PROOF_PATH):
        proof = server_proof(FAKE_SECRET, path.removeprefix(PROOF_PATH))
        return 200, "application/json", json.dumps({"proof": proof}).encode()
    if method == "GET" and path == "/v2":
        return 200, "application/json", b'{"name": "mlbridge", "version": "fake"}'
    if method == "GET" and path == "/v2/models":
        return 200, "application/json", b'{"models": [{"name": "rank3"}]}'
    if method == "GET" and path in ("/v2/models/labels", "/v2/models/rank3"):
        meta = fake_metadata(path.rsplit("/", 1)[1], LABELS if "labels" in path else None)
        return 200, "application/json", json.dumps(meta, ensure_ascii=False).encode()
    if method == "POST" and path == "/rank3":
        if content_type == WXF_TYPE:
            return 200, WXF_TYPE, wxf(rank3)
        text = b"{{{1., 2.}, {Indeterminate, -Infinity}}}"
        return 200, f"{TEXT_TYPE}; charset=utf-8", text
    if method == "POST" and path == "/utf8-error":
        failure = 'Failure["MLBridge", <|"MessageTemplate" -> "modèle", "Status" -> 400|>]'
        return 400, TEXT_TYPE, failure.encode()
    return 502, "text/html", HTML_502


@contextmanager
def recording_server(reply: Callable[[str, str, str], tuple[int, str, bytes]]):
    """A scripted HTTP server on a free port: its URL and the requests it records (method,
    path as on the request line, lowercased headers, body bytes); reply(method, path,
    content type) gives (status, content type, body)."""
    import http.server
    import threading

    requests: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": headers,
                    "body": body,
                    "time": time.time(),
                }
            )
            status, content_type, data = reply(
                self.command, self.path, headers.get("content-type", "")
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = answer

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()


def private_token(folder: Path, secret: str = FAKE_SECRET) -> Path:
    """A token file as `mlbridge serve` writes it: the secret, mode 0600."""
    token = folder / "token"
    token.write_text(secret + "\n")
    token.chmod(0o600)
    return token


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    """A scripted HTTP server on a free port that records every request it is sent."""
    with recording_server(fake_reply) as (url, requests):
        yield url, private_token(tmp_path_factory.mktemp("fake")), requests


def wxf_inputs() -> dict[str, bytes]:
    """Bytes written by wolframclient, for the package to read."""
    from wolframclient.language import wl

    failure = {
        "MessageTemplate": "model 'x' expects [-1, 3]",
        "Status": 400,
        "Code": "ShapeMismatch",
    }
    return {
        "golden-reply": (TESTDATA / "mnist-8000.reply.wxf").read_bytes(),
        "failure": wxf(wl.Failure("MLBridge", failure)),
        "rank3": wxf(np.arange(12, dtype=np.float64).reshape(2, 3, 2)),
        "specials": wxf(np.array([np.nan, np.inf, -np.inf, 1.5])),
        "scalar": wxf(-4.5e-7),
        "hostile": wxf([wl.Set(wl.Global.leaked, 1.0)]),
        "hostile-array": wxf(wl.NumericArray(wl.Set(wl.Global.leaked, 1.0), "Real32")),
    }


@pytest.fixture(scope="module")
def transport_run(server, mnist, fake_server, tmp_path_factory) -> tuple[dict, str, list]:
    """Run tests/transport_test.wl once: its results, its whole output, the fake's requests."""
    import base64

    out = tmp_path_factory.mktemp("wolfram-transport")
    (out / "image-8000.m").write_text(wolfram_list(mnist[0][0]) + "\n")
    rules = ", ".join(
        f'"{k}" -> ByteArray["{base64.b64encode(v).decode()}"]' for k, v in wxf_inputs().items()
    )
    (out / "wxf.m").write_text(f"<|{rules}|>\n")
    report = {"name": "mnist-mlp", "heldout_accuracy": 0.9535, "history": []}
    for epoch in (1, 2, 3):
        row = {"epoch": epoch, "loss": 2.0 / epoch, "accuracy": 1 - 0.5 / epoch}
        report["history"].append(row | {"val_loss": 2.2 / epoch, "val_accuracy": 1 - 0.6 / epoch})
    (out / "mnist-mlp.report.json").write_text(json.dumps(report))
    url, token, requests = fake_server
    env = {
        **server.env,
        "MLBRIDGE_TEST_PACKAGE": str(PACKAGE),
        "MLBRIDGE_TEST_IMAGE": str(out / "image-8000.m"),
        "MLBRIDGE_TEST_WXF": str(out / "wxf.m"),
        "MLBRIDGE_TEST_FAKE_URL": url,
        "MLBRIDGE_TEST_FAKE_TOKEN": str(token),
        "MLBRIDGE_TEST_REPORT": str(out / "mnist-mlp.report.json"),
        "MLBRIDGE_TEST_PYTHON": sys.executable,
        "MLBRIDGE_TEST_OUT": str(out),
        "PYTHONPATH": str(HERE / "tests"),
    }
    output = run_mathics(TRANSPORT_SCRIPT, env, out)
    found = parse_results(output)
    assert found.get("done") == "True", f"the script stopped early:\n{output}"
    return found, output, requests


def between(output: str, start: str, end: str) -> str:
    return output.split(f"MARK\t{start}")[1].split(f"MARK\t{end}")[0]


def test_wxf_transport_matches_the_text_transport_and_the_golden_reply(transport_run):
    results = transport_run[0]
    logits = np.array(wolfram_value(results["wxf-logits"]))
    np.testing.assert_allclose(logits, golden_v2_logits(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(logits, wolfram_value(results["text-logits"]), atol=1e-5)
    assert wolfram_value(results["wxf-box"]) == [
        64.0,
        [32.0, 16.0, 8.0],
        [16.0, 8.0, 4.0],
        [32.0, 16.0, 8.0],
    ]
    assert wolfram_value(results["wxf-mnist-jacobian-dimensions"]) == [10, 28, 28]


def test_wxf_transport_keeps_float64_for_lj13(transport_run, python_client):
    results = transport_run[0]
    start = np.array(wolfram_value(results["lj13-start"]))
    energy, gradient = wolfram_value(results["wxf-lj13"])
    # Real64 both ways; the only loss is Mathics3 printing 16 significant digits.
    assert energy == pytest.approx(float(python_client.predict("lj13", start)), rel=1e-15)
    np.testing.assert_allclose(gradient, python_client.gradient("lj13", start), rtol=1e-14)


def test_wxf_errors_are_failures_with_the_servers_message(transport_run):
    results = transport_run[0]
    status, code, message = wolfram_value(results["wxf-shape-error"])
    assert (status, code) == (400, "ShapeMismatch") and "got shape [1, 2]" in message
    assert wolfram_value(results["wxf-unknown-model"])[:2] == [404, "ModelNotFound"]


def test_wxf_requests_decode_with_wolframclient(transport_run, mnist):
    """The package's bytes, read by wolframclient: the array, its element type, the rules."""
    from wolframclient.deserializers import binary_deserialize

    results = transport_run[0]
    image = binary_deserialize(bytes(wolfram_value(results["wxf-request-image"])))
    assert image.dtype == np.float32 and image.shape == (28, 28)  # NumericArray "Real32"
    np.testing.assert_array_equal(image, mnist[0][0])
    vjp = binary_deserialize(bytes(wolfram_value(results["wxf-request-vjp"])))
    assert set(vjp) == {"x", "cotangent"} and vjp["cotangent"] == 0.5
    assert vjp["x"].dtype == np.float64  # box_volume's input is FP64: "Real64"
    np.testing.assert_array_equal(vjp["x"], [2.0, 4.0, 8.0])


def test_wolframclient_replies_decode_in_the_package(transport_run):
    results = transport_run[0]
    np.testing.assert_allclose(
        wolfram_value(results["decode-golden-reply"]), golden_v2_logits(), rtol=0, atol=1e-6
    )
    assert wolfram_value(results["decode-failure"]) == [
        400,
        "ShapeMismatch",
        "model 'x' expects [-1, 3]",
    ]
    assert wolfram_value(results["decode-rank3"]) == np.arange(12.0).reshape(2, 3, 2).tolist()
    assert results["decode-specials"] == "{Indeterminate, Infinity, -Infinity, 1.5}"
    assert wolfram_value(results["decode-scalar"]) == -4.5e-7
    assert results["decode-hostile"] == results["decode-hostile-array"] == "Failure"
    assert results["decode-hostile-leaked"] == "False"
    assert results["decode-not-wxf"] == "Failure"


def test_standin_binary_serialize_equals_wolframclient_byte_for_byte(transport_run):
    from wolframclient.language import wl

    expected = [
        wxf(np.array([[1.5, -2.0]], dtype=np.float32)),
        wxf({"x": np.array([2.0, 4.0, 8.0]), "cotangent": 0.5}),
        wxf(wl.Failure("MLBridge", {"MessageTemplate": "é", "Status": 400})),
        wxf([1, 300, 70000, 2**40, -5, 2.5, "s"]),
    ]
    got = [bytes(b) for b in wolfram_value(transport_run[0]["serialize-table"])]
    assert got == expected


def test_text_replies_of_any_rank_with_nan_and_infinities(transport_run):
    results = transport_run[0]
    assert results["text-rank3-specials"] == "{{{1., Infinity}}, {{-Infinity, Indeterminate}}}"
    assert wolfram_value(results["text-rank4"]) == [1, 1, 1, 2]
    assert results["text-scalar-nan"] == "Indeterminate"


def test_every_request_names_the_format_it_accepts(transport_run):
    requests = transport_run[2]
    accepted = {(r["method"], r["path"], r["headers"].get("content-type")): r for r in requests}
    assert accepted[("GET", "/v2", "application/json")]["headers"]["accept"] == "application/json"
    assert accepted[("POST", "/rank3", TEXT_TYPE)]["headers"]["accept"] == TEXT_TYPE
    assert accepted[("POST", "/rank3", WXF_TYPE)]["headers"]["accept"] == WXF_TYPE
    # Only the script's own URLRead call, without headers, goes out with URLRead's default.
    defaults = [r["path"] for r in requests if r["headers"]["accept"] == "*/*"]
    assert defaults == ["/v2/models/labels"]
    assert all(r["headers"]["user-agent"].startswith("Wolfram HTTPClient") for r in requests)


def test_the_server_proves_itself_once_before_the_secret_is_sent(transport_run):
    """One proof per (URL, secret) and session, without the secret, before any request with it."""
    requests = transport_run[2]
    proofs = [i for i, r in enumerate(requests) if r["path"].startswith(PROOF_PATH)]
    assert len(proofs) == 1, [requests[i]["path"] for i in proofs]
    proof = requests[proofs[0]]
    assert "authorization" not in proof["headers"]
    assert re.fullmatch(r"[0-9a-f]{64}", proof["path"].removeprefix(PROOF_PATH))
    carrying = [i for i, r in enumerate(requests) if "authorization" in r["headers"]]
    assert carrying and proofs[0] < min(carrying)


def test_a_trailing_slash_in_the_url_gives_no_double_slash(transport_run, fake_server):
    results, _, requests = transport_run
    assert wolfram_value(results["fake-connect-url"]) == fake_server[0]
    assert requests and not any("//" in r["path"] for r in requests)


def test_json_without_charset_is_read_as_utf8(transport_run):
    results = transport_run[0]
    labels = ["".join(map(chr, codes)) for codes in wolfram_value(results["fake-labels-codes"])]
    assert labels == LABELS
    # The stand-in's "Body", like URLRead's, decodes a reply that names no charset byte by
    # byte: read that way the labels garble, which is why the package reads the bytes.
    garbled = [
        "".join(map(chr, codes)) for codes in wolfram_value(results["fake-body-labels-codes"])
    ]
    assert garbled[1] == "café".encode().decode("latin-1")
    message = "".join(map(chr, wolfram_value(results["fake-utf8-error"])))
    assert message == "modèle"


def test_replies_of_any_rank_come_back_in_both_transports(transport_run):
    results = transport_run[0]
    assert results["fake-rank3-text"] == "{{{1., 2.}, {Indeterminate, -Infinity}}}"
    assert results["fake-rank3-wxf"] == "{{{1., 2.}, {Indeterminate, -Infinity}}}"


def test_foreign_replies_are_failures_without_import_messages(transport_run):
    results, output, _ = transport_run
    status, code, message = wolfram_value(results["fake-html-json"])
    assert (status, code) == (502, "HTTPError")
    assert "with text/html instead of JSON: <html><body><h1>502 Bad Gateway" in message
    assert "proxy" not in message
    status, _, message = wolfram_value(results["fake-html-cas"])
    assert status == 502 and f"instead of {TEXT_TYPE}" in message
    assert "::" not in between(output, "foreign replies start", "foreign replies end")


def test_a_manual_proxy_setting_is_named_in_the_failure(transport_run):
    results = transport_run[0]
    for key in ("fake-html-json-proxy", "fake-unreachable-proxy"):
        assert "may capture 127.0.0.1: add 127.0.0.1 and localhost" in results[key], key


def test_unreachable_server_is_failed_with_a_message_in_urlread_and_quiet_in_the_package(
    transport_run,
):
    results, output, _ = transport_run
    assert results["raw-unreachable"] == "$Failed"
    assert output.count("URLRead::invhttp") == 1, "only the direct URLRead call may print it"
    assert "URLRead::" not in between(
        output, "package unreachable start", "package unreachable end"
    )
    assert results["package-unreachable"] == '"NoServer"'
    assert wolfram_value(results["package-unreachable-predict"]) == "NoServer"


def test_connection_files_and_urls_that_are_not_mlbridge_s(transport_run):
    results = transport_run[0]
    assert (
        results["no-url"].startswith('Failure["MLBridge", ') and '"NoServer"' in results["no-url"]
    )
    assert 'server.json lacks \\"url\\" or \\"token_file\\"' in results["no-url"]
    assert '"ClientError", "expected a server URL' in results["bad-url"]
    assert "got the arguments {8123}" in results["bad-arguments"]


def test_windows_server_environment_empties_python_variables(transport_run):
    """Whether ProcessEnvironment replaces or merges (the stand-in merges), Python ignores them."""
    results = transport_run[0]
    assert wolfram_value(results["windows-argv-head"]) == sys.executable  # no env -i there
    assert results["windows-child"] == "\"'' '' False\""


def test_training_report_plots_loss_and_accuracy(transport_run):
    results = transport_run[0]
    assert results["plot-head"] == "GraphicsRow"
    lines = [np.array(line) for line in wolfram_value(results["plot-lines"])]
    epochs = np.array([1.0, 2.0, 3.0])
    expected = [2.0 / epochs, 2.2 / epochs, 1 - 0.5 / epochs, 1 - 0.6 / epochs]
    assert len(lines) == len(expected)
    for line, values in zip(lines, expected, strict=True):
        np.testing.assert_allclose(line, np.column_stack([epochs, values]))
    assert wolfram_value(results["plot-no-validation-lines"]) == 2
    assert '"ClientError", "cannot read a training report' in results["plot-missing-file"]


# Trust (tests/auth_test.wl): the files and URLs the secret may go to, the server's proof,
# HMAC-SHA256 against Python's hmac, and signed requests (docs/security.md).

AUTH_SCRIPT = HERE / "tests" / "auth_test.wl"
PROOF_FAILURE = (
    "the server at {url} could not prove it knows the secret; not sending it "
    "(is this really your mlbridge server?)"
)
RUNS_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
HMAC_KEY_LENGTHS = (0, 1, 32, 63, 64, 65, 131, 7)
HMAC_MESSAGE_LENGTHS = (0, 1, 55, 56, 63, 64, 65, 1000)


def trust_home(root: Path, name: str, server, **modes) -> Path:
    """A copy of the server's home with its files in the modes given (default: private)."""
    home = root / name
    home.mkdir()
    token = home / "token"
    token.write_text(server.token + "\n")
    token.chmod(modes.get("token", 0o600))
    document = {**server.info, "url": modes.get("url", server.url), "token_file": str(token)}
    published = home / ("server.real.json" if modes.get("link") else "server.json")
    published.write_text(json.dumps(document))
    published.chmod(modes.get("json", 0o600))
    if modes.get("link"):
        (home / "server.json").symlink_to(published)
    home.chmod(modes.get("folder", 0o700))
    if modes.get("owner") is not None:
        os.chown(home, modes["owner"], modes["owner"])
    return home


@pytest.fixture(scope="module")
def trust_cases(server, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """Homes whose folder, server.json or token file others could touch, and a private one."""
    root = tmp_path_factory.mktemp("trust")
    cases = {
        "private": {},
        "open-folder": {"folder": 0o777},
        "open-json": {"json": 0o644},
        "open-token": {"token": 0o640},
        "linked-json": {"link": True},
        "remote-http": {"url": "http://example.org:8123"},
    }
    if RUNS_AS_ROOT:  # only root can give a folder away
        cases["foreign"] = {"owner": 65534}
    homes = {name: trust_home(root, name, server, **modes) for name, modes in cases.items()}
    loose = root / "loose-token"
    loose.write_text(server.token + "\n")
    loose.chmod(0o644)
    return root, homes


def wolfram_bytes(data: bytes) -> str:
    return "{" + ", ".join(str(b) for b in data) + "}"


def hmac_cases() -> list[tuple[bytes, bytes]]:
    """Keys and messages around SHA-256's block (64) and padding (55/56) lengths, random bytes."""
    import random

    rng = random.Random(20260512)
    return [
        (rng.randbytes(k), rng.randbytes(m))
        for k, m in zip(HMAC_KEY_LENGTHS, HMAC_MESSAGE_LENGTHS, strict=True)
    ]


def liar_reply(method: str, path: str, content_type: str) -> tuple[int, str, bytes]:
    """A server that answers every proof with a well-formed but wrong one, and anything else."""
    from mlbridge.auth import server_proof

    if path.startswith(PROOF_PATH):
        proof = server_proof("some-other-secret", path.removeprefix(PROOF_PATH))
        return 200, "application/json", json.dumps({"proof": proof}).encode()
    return 200, "application/json", b'{"name": "mlbridge", "version": "liar"}'


def stranger_reply(method: str, path: str, content_type: str) -> tuple[int, str, bytes]:
    """A server that knows nothing of proofs (whatever took over a dead server's port)."""
    if path.startswith(PROOF_PATH):
        return 404, "text/html", b"<html>not found</html>"
    return 200, "application/json", b'{"name": "mlbridge", "version": "stranger"}'


@pytest.fixture(scope="module")
def auth_run(server, trust_cases, tmp_path_factory) -> tuple[dict, dict]:
    """Run tests/auth_test.wl once: its results, and what each scripted server was sent (and
    their URLs, as "liar-url" and "stranger-url")."""
    out = tmp_path_factory.mktemp("wolfram-auth")
    cases = hmac_cases()
    (out / "hmac.m").write_text(
        "{" + ", ".join(f"{{{wolfram_bytes(k)}, {wolfram_bytes(m)}}}" for k, m in cases) + "}\n"
    )
    root, homes = trust_cases
    with (
        recording_server(liar_reply) as (liar, liar_requests),
        recording_server(stranger_reply) as (stranger, stranger_requests),
        recording_server(fake_reply) as (recorder, recorder_requests),
    ):
        env = {
            **server.env,
            "MLBRIDGE_TEST_PACKAGE": str(PACKAGE),
            "MLBRIDGE_TEST_TRUST": str(root),
            "MLBRIDGE_TEST_CASES": ",".join(homes),
            "MLBRIDGE_TEST_LIAR_URL": liar,
            "MLBRIDGE_TEST_STRANGER_URL": stranger,
            "MLBRIDGE_TEST_RECORDER_URL": recorder,
            "MLBRIDGE_TEST_FAKE_TOKEN": str(private_token(out)),
            "MLBRIDGE_TEST_HMAC": str(out / "hmac.m"),
            "PYTHONPATH": str(HERE / "tests"),
        }
        output = run_mathics(AUTH_SCRIPT, env, out)
    found = parse_results(output)
    assert found.get("done") == "True", f"the script stopped early:\n{output}"
    sent = {"liar": liar_requests, "stranger": stranger_requests, "recorder": recorder_requests}
    return found, sent | {"liar-url": liar, "stranger-url": stranger}


def test_a_private_copy_of_the_home_connects(auth_run, server):
    assert wolfram_value(auth_run[0]["trust-private"]) == server.url


def test_a_home_folder_others_can_write_is_refused(auth_run, trust_cases):
    home = trust_cases[1]["open-folder"]
    assert wolfram_value(auth_run[0]["trust-open-folder"]) == [
        "Untrusted",
        f"{home} is writable by others (mode 777); run: chmod go-w {home}",
    ]


def test_connection_and_token_files_others_can_read_are_refused(auth_run, trust_cases):
    results, homes = auth_run[0], trust_cases[1]
    published = homes["open-json"] / "server.json"
    assert wolfram_value(results["trust-open-json"]) == [
        "Untrusted",
        f"{published} is open to others (mode 644); run: chmod 600 {published}",
    ]
    token = homes["open-token"] / "token"
    assert wolfram_value(results["trust-open-token"]) == [
        "Untrusted",
        f"{token} is open to others (mode 640); run: chmod 600 {token}",
    ]


def test_an_explicit_token_file_gets_the_same_check(auth_run, trust_cases):
    loose = trust_cases[0] / "loose-token"
    assert wolfram_value(auth_run[0]["trust-loose-token"]) == [
        "Untrusted",
        f"{loose} is open to others (mode 644); run: chmod 600 {loose}",
    ]


def test_symbolic_links_and_other_users_files_are_refused(auth_run, trust_cases):
    results, homes = auth_run[0], trust_cases[1]
    link = homes["linked-json"] / "server.json"
    assert wolfram_value(results["trust-linked-json"]) == [
        "Untrusted",
        f"{link} is a symbolic link; refusing to trust it with secrets",
    ]
    if RUNS_AS_ROOT:
        assert wolfram_value(results["trust-foreign"]) == [
            "Untrusted",
            f"{homes['foreign']} belongs to another user; refusing to trust it with secrets",
        ]


def test_http_goes_only_to_this_machine(auth_run):
    results = auth_run[0]
    for key, url in (
        ("trust-remote-http", "http://example.org:8123"),
        ("url-remote-http", "http://example.org:8123"),
        ("url-userinfo", "http://127.0.0.1@example.org"),  # the host is example.org
    ):
        code, message = wolfram_value(results[key])
        assert code == "ClientError", key
        assert message.startswith(f"{url} is not on this machine; use https for a remote server")
    assert wolfram_value(results["url-control"]) == [
        "ClientError",
        "the server URL holds a control character (code 10); refusing it",
    ]
    code, message = wolfram_value(results["url-scheme"])
    assert code == "ClientError" and message.startswith("expected a server URL such as")
    assert wolfram_value(results["url-accepted"]) == [None] * 7
    assert wolfram_value(results["url-refused"]) == [True] * 7
    code, message = wolfram_value(results["ca-file-on-http"])
    assert code == "ClientError" and message.startswith('"CAFile" applies to https servers')


def test_a_server_that_cannot_prove_the_secret_never_receives_it(auth_run):
    results, sent = auth_run
    urls = {
        "liar": sent["liar-url"],
        "liar-signed": sent["liar-url"],
        "stranger": sent["stranger-url"],
    }
    for key, url in urls.items():
        assert wolfram_value(results[key]) == ["ServerProof", PROOF_FAILURE.format(url=url)], key
    for server_name in ("liar", "stranger"):
        requests = sent[server_name]
        assert requests, f"the {server_name} was never asked"
        assert all(r["path"].startswith(PROOF_PATH) for r in requests), server_name
        assert not any("authorization" in r["headers"] for r in requests), server_name
        assert not any(FAKE_SECRET.encode() in r["body"] for r in requests), server_name
    assert len(sent["liar"]) == 2  # each attempt asks anew: a failure is not remembered


def test_the_proof_is_asked_once_per_url_and_secret(auth_run):
    requests = auth_run[1]["recorder"]
    proofs = [r for r in requests if r["path"].startswith(PROOF_PATH)]
    assert len(proofs) == 1  # three connects, Bearer and signed, one proof
    assert requests[0] is proofs[0]


def test_signed_requests_verify_with_the_servers_own_check(auth_run):
    """Every signed request the recorder got passes mlbridge's check_signed and check_body."""
    import hashlib

    from mlbridge.auth import TokenAuthenticator

    results, sent = auth_run
    rank3 = "{{{1., 2.}, {Indeterminate, -Infinity}}}"
    assert results["recorder-bearer"] == results["recorder-signed-text"] == rank3
    assert results["recorder-signed-wxf"] == rank3
    assert wolfram_value(results["recorder-signed-models"]) == ["rank3"]
    authenticator = TokenAuthenticator(FAKE_SECRET, Path("token"))
    signed = [
        r for r in sent["recorder"] if "MLBridge-HMAC" in r["headers"].get("authorization", "")
    ]
    bearer = [r for r in sent["recorder"] if "Bearer" in r["headers"].get("authorization", "")]
    assert len(signed) >= 5 and bearer
    assert all(r["headers"]["authorization"] == f"Bearer {FAKE_SECRET}" for r in bearer)
    for request in signed:
        header = request["headers"]["authorization"]
        assert FAKE_SECRET not in header and FAKE_SECRET.encode() not in request["body"]
        claim = authenticator.check_signed(
            header, request["method"], request["path"], request["time"]
        )
        authenticator.check_body(claim, hashlib.sha256(request["body"]).hexdigest())
    assert {r["method"] for r in signed} == {"GET", "POST"}
    assert any(r["body"] for r in signed)


def test_signed_requests_to_the_real_server(auth_run, server):
    results = auth_run[0]
    assert wolfram_value(results["signed-connect"]) == [server.url, True]
    assert wolfram_value(results["signed-box"]) == [64.0, [16.0, 8.0, 4.0], [32.0, 16.0, 8.0]]
    assert "box_volume" in wolfram_value(results["signed-models"])
    code, message = wolfram_value(results["signed-error"])
    assert code == "ShapeMismatch" and "got shape [1, 2]" in message
    status, message = wolfram_value(results["signed-wrong-secret"])
    assert status == 401 and "wrong signature" in message


def test_hmac_sha256_equals_pythons_hmac(auth_run):
    import hashlib
    import hmac

    results = auth_run[0]
    cases = hmac_cases()
    assert wolfram_value(results["hmac"]) == [
        hmac.new(key, message, hashlib.sha256).hexdigest() for key, message in cases
    ]
    assert wolfram_value(results["sha256"]) == [hashlib.sha256(m).hexdigest() for _, m in cases]
    reference = hmac.new(b"s3cret", b"mlbridge server proof v1\n" + b"00" * 32, hashlib.sha256)
    assert wolfram_value(results["proof-reference"]) == reference.hexdigest()
    secret = "sécret秘".encode()
    assert wolfram_value(results["hmac-utf8"]) == (
        hmac.new(secret, b"mlbridge server proof v1", hashlib.sha256).hexdigest()
    )


def test_nonces_are_fresh_lowercase_hex(auth_run):
    nonces = wolfram_value(auth_run[0]["nonces"])
    assert len(set(nonces)) == 3
    assert all(re.fullmatch(r"[0-9a-f]{64}", nonce) for nonce in nonces)


# HTTPS (tests/tls_test.wl): `mlbridge serve --tls-cert` with a certificate made here, trusted
# through its CA file (server.json's "ca_file" or "CAFile"), reached through curl.

TLS_SCRIPT = HERE / "tests" / "tls_test.wl"
OPENSSL = Path("/usr/bin/openssl")


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 and its key (0600), made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [str(OPENSSL), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


@pytest.fixture(scope="module")
def tls_run(server, tmp_path_factory) -> tuple[dict, Path, str]:
    """Run tests/tls_test.wl against an https server: results, its certificate, its URL."""
    from support import start_server

    if not OPENSSL.exists() or shutil.which("curl") is None:
        pytest.skip("the https test needs /usr/bin/openssl and curl")
    root = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(root / "cert")
    other_ca, _ = self_signed(root / "other")
    running = start_server(root / "home", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        env = {
            **running.env,
            "MLBRIDGE_TEST_PACKAGE": str(PACKAGE),
            "MLBRIDGE_TEST_OTHER_CA": str(other_ca),
            "MLBRIDGE_TEST_HTTP_URL": server.url,
            "MLBRIDGE_TEST_HTTP_TOKEN": str(server.token_file),
            "PYTHONPATH": str(HERE / "tests"),
        }
        output = run_mathics(TLS_SCRIPT, env, root)
    finally:
        running.stop()
    found = parse_results(output)
    assert found.get("done") == "True", f"the script stopped early:\n{output}"
    return found, cert, running.url


def test_https_with_the_ca_file_from_server_json(tls_run):
    results, cert, url = tls_run
    assert url.startswith("https://127.0.0.1:")
    assert wolfram_value(results["connect"]) == [url, str(cert), False]
    assert wolfram_value(results["box"]) == [64.0, [16.0, 8.0, 4.0], [32.0, 16.0, 8.0]]
    code, message = wolfram_value(results["error"])
    assert code == "ShapeMismatch" and "got shape [1, 2]" in message
    assert wolfram_value(results["signed"]) == [True, 64.0, [6.0, 3.0, 2.0]]


def test_https_replies_equal_the_http_ones(tls_run):
    results = tls_run[0]
    https, http = wolfram_value(results["mnist-https"]), wolfram_value(results["mnist-http"])
    assert len(https) == 10
    assert https == http  # the same WXF float32 logits, bit for bit


def test_https_with_an_explicit_url_and_ca_file(tls_run):
    results, _, url = tls_run
    assert wolfram_value(results["explicit"]) == url
    assert wolfram_value(results["localhost"]) == url.replace("127.0.0.1", "localhost")
    assert "box_volume" in wolfram_value(results["localhost-models"])


def test_https_is_never_unverified(tls_run):
    results, cert, url = tls_run
    code, message = wolfram_value(results["no-ca"])
    assert code == "NoServer"  # the kernel's own store does not vouch for it: nothing is sent
    assert '"CAFile" -> the PEM file of its certificate' in message
    code, message = wolfram_value(results["other-ca"])
    assert code == "TLSError"
    assert message.startswith(f"cannot verify the server at {url} with the CA file ")
    assert "(curl: (60) SSL certificate problem" in message
    code, message = wolfram_value(results["missing-ca"])
    assert code == "ClientError" and message.startswith(f"cannot read the CA file {cert}.missing")


# Install steps and the documentation review, statically: what no interpreter here can run.

PACLET = HERE / "MLBridge"
README = HERE / "README.md"
PACLET_SCRIPT = HERE / "tests" / "paclet_test.wl"
FLOOR = (12, 0)  # the oldest Wolfram Language the package supports
# Every System` symbol the package uses, with the version that introduced it (the "History"
# line of its reference page). A symbol missing here fails the test until its page is checked.
INTRODUCED = {
    "$Failed": "1.0",
    "$HomeDirectory": "1.0",
    "$InputFileName": "6.0",
    "$InternetProxyRules": "7.0",
    "$OperatingSystem": "1.0",
    "All": "2.0",
    "AllTrue": "10.2",
    "AnyTrue": "10.2",
    "ArrayDepth": "1.0",
    "ArrayQ": "1.0",
    "Association": "10.0",
    "AssociationQ": "10.0",
    "Automatic": "1.0",
    "AxesLabel": "1.0",
    "Begin": "1.0",
    "BeginPackage": "1.0",
    "BinaryDeserialize": "11.1",
    "BinaryFormat": "4.0",
    "BinaryReadList": "6.0",
    "BinarySerialize": "11.1",
    "BinaryWrite": "6.0",
    "BitXor": "2.0",
    "ByteArray": "10.1",
    "ByteArrayToString": "11.2",
    "Cases": "1.0",
    "CharacterEncoding": "3.0",
    "Characters": "2.0",
    "Close": "1.0",
    "ColorConvert": "7.0",
    "CreateFile": "7.0",
    "DataRange": "6.0",
    "DeleteFile": "1.0",
    "DigitCharacter": "5.1",
    "Dimensions": "1.0",
    "DirectedInfinity": "1.0",
    "DirectoryName": "2.0",
    "End": "1.0",
    "EndOfString": "5.1",
    "EndPackage": "1.0",
    "Environment": "1.0",
    "Except": "2.0",
    "Exp": "1.0",
    "Failure": "10.0",
    "FailureQ": "10.0",
    "False": "1.0",
    "FileExistsQ": "7.0",
    "FileNameJoin": "7.0",
    "First": "1.0",
    "Flatten": "1.0",
    "FreeQ": "1.0",
    "FromDigits": "3.0",
    "Function": "1.0",
    "GenerateSymmetricKey": "10.1",
    "Get": "1.0",
    "GetEnvironment": "10.0",
    "GraphicsRow": "6.0",
    "HTTPRequest": "11.0",
    "Hash": "1.0",
    "Head": "1.0",
    "HoldComplete": "3.0",
    "HoldPattern": "3.0",
    "If": "1.0",
    "Image": "7.0",
    "ImageData": "7.0",
    "ImageResize": "7.0",
    "ImageSize": "2.0",
    "Import": "4.0",
    "ImportString": "4.0",
    "Indeterminate": "1.0",
    "Infinity": "1.0",
    "InputForm": "1.0",
    "Integer": "1.0",
    "IntegerDigits": "1.0",
    "IntegerQ": "1.0",
    "IntegerString": "6.0",
    "Join": "1.0",
    "KeyValuePattern": "11.0",
    "Keys": "10.0",
    "Last": "1.0",
    "Length": "1.0",
    "List": "1.0",
    "ListLinePlot": "6.0",
    "ListQ": "1.0",
    "Map": "1.0",
    "MapThread": "2.0",
    "MatchQ": "1.0",
    "Max": "1.0",
    "MemberQ": "1.0",
    "Method": "4.0",
    "Min": "1.0",
    "Missing": "6.0",
    "Mod": "1.0",
    "Module": "2.0",
    "N": "1.0",
    "None": "2.0",
    "Normal": "1.0",
    "Null": "1.0",
    "NumberForm": "1.0",
    "NumberQ": "1.0",
    "NumericArray": "12.0",
    "OpenRead": "1.0",
    "OpenWrite": "1.0",
    "OptionQ": "2.0",
    "OptionValue": "1.0",
    "Options": "1.0",
    "OptionsPattern": "6.0",
    "PadRight": "5.0",
    "PlotLabel": "1.0",
    "PlotLegends": "9.0",
    "Position": "1.0",
    "ProcessEnvironment": "10.0",
    "Quiet": "6.0",
    "Quotient": "1.0",
    "Range": "1.0",
    "Real": "1.0",
    "RegularExpression": "5.1",
    "ReleaseHold": "1.0",
    "RemoveAlphaChannel": "8.0",
    "Replace": "1.0",
    "Rest": "1.0",
    "Return": "1.0",
    "Riffle": "6.0",
    "Rule": "1.0",
    "RuleDelayed": "1.0",
    "RunProcess": "10.0",
    "Select": "1.0",
    "SelectFirst": "10.0",
    "Short": "1.0",
    "SortBy": "6.0",
    "String": "1.0",
    "StringDrop": "2.0",
    "StringJoin": "1.0",
    "StartOfString": "5.1",
    "StringLength": "1.0",
    "StringMatchQ": "1.0",
    "StringPosition": "2.0",
    "StringQ": "2.0",
    "StringReplace": "1.0",
    "StringSplit": "5.1",
    "StringTake": "2.0",
    "StringTrim": "5.1",
    "Switch": "1.0",
    "Take": "1.0",
    "Times": "1.0",
    "ToCharacterCode": "2.0",
    "ToExpression": "1.0",
    "ToLowerCase": "1.0",
    "ToString": "1.0",
    "ToUpperCase": "1.0",
    "Total": "5.0",
    "Transpose": "1.0",
    "True": "1.0",
    "TrueQ": "1.0",
    "URLRead": "11.0",
    "UnixTime": "10.1",
    "Values": "10.0",
    "Which": "1.0",
    "WhitespaceCharacter": "5.1",
    "With": "1.0",
}
# Newer than the floor, read only where defined (the package checks AssociationQ first).
GUARDED = {"$DefaultProxyRules", "Manual"}
IMAGE_TYPES = {"Bit", "Byte", "Bit16", "Real32", "Real64"}  # ImageData's types since 12.0


def package_code() -> str:
    """The package (MLBridge.wl and the files it reads) without comments and string contents."""
    sources = sorted(PACKAGE.parent.glob("*.wl"))
    text = "\n".join(path.read_text() for path in sources if path.name != "init.wl")
    code = re.sub(r"\(\*.*?\*\)", "", text, flags=re.S)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', code, flags=re.S)


def test_every_builtin_the_package_uses_exists_in_12_0() -> None:
    used = set(re.findall(r"(?<![\w`$])\$?[A-Z][A-Za-z0-9]*", package_code()))
    used = {name for name in used if not name.startswith("MLBridge")} - GUARDED
    unknown = used - INTRODUCED.keys()
    assert not unknown, f"check these against their reference pages, then list them: {unknown}"
    late = {n for n in used if tuple(map(int, INTRODUCED[n].split("."))) > FLOOR}
    assert not late, f"introduced after {FLOOR}: {late}"


def test_image_data_uses_only_documented_types() -> None:
    types = re.findall(r'ImageData\[[^\]]*\],\s*"(\w+)"\]', PACKAGE.read_text())
    assert types and set(types) <= IMAGE_TYPES, types


def test_paclet_has_the_files_its_documented_install_route_needs() -> None:
    """PacletDirectoryLoad/PacletDirectoryAdd read PacletInfo.m; Needs finds Kernel/MLBridge.wl."""
    from mlbridge import __version__

    assert not (PACLET / "PacletInfo.wl").exists(), "12.0 documents PacletInfo.m only"
    info = (PACLET / "PacletInfo.m").read_text()
    assert re.search(r"^Paclet\[", info, re.MULTILINE)
    assert re.search(r'\bName -> "MLBridge"', info)
    assert re.search(rf'\bVersion -> "{re.escape(__version__)}"', info), "paclet and wheel agree"
    assert '{"Kernel", Root -> "Kernel", Context -> "MLBridge`"}' in info
    assert 'BeginPackage["MLBridge`"]' in (PACLET / "Kernel" / "MLBridge.wl").read_text()
    assert "MLBridge.wl" in (PACLET / "Kernel" / "init.wl").read_text()
    package = (PACLET / "Kernel" / "MLBridge.wl").read_text()
    for helper in ("Crypto.wl", "Trust.wl", "Curl.wl"):  # read by MLBridge.wl from its folder
        assert f'"{helper}"' in package and (PACLET / "Kernel" / helper).exists(), helper


def test_readme_installs_with_documented_functions_only() -> None:
    section = README.read_text().split("## Install")[1].split("\n## ")[0]
    blocks = re.findall(r"```wolfram\n(.*?)```", section, re.S)
    calls = {name for block in blocks for name in re.findall(r"\b([A-Z]\w*)\[", block)}
    assert calls <= {"PacletDirectoryLoad", "PacletDirectoryAdd", "Needs", "Get", "FileNameJoin"}
    assert {"PacletDirectoryLoad", "PacletDirectoryAdd", "Needs"} <= calls
    assert "PacletInstall[" not in section


def test_paclet_descriptor_parses_and_its_kernel_folder_resolves_the_context(tmp_path) -> None:
    env = {**os.environ, "MLBRIDGE_TEST_PACLET": str(PACLET), "PYTHONPATH": str(HERE / "tests")}
    results = parse_results(run_mathics(PACLET_SCRIPT, env, tmp_path))
    assert results["descriptor-head"] == "Paclet"
    assert results["loaded"] == "True"
