"""The Wolfram Language package MLBridge, run in Mathics3 against a real `mlbridge serve`.

Mathics3 has no HTTP client, so tests/standin.wl supplies URLRead/HTTPRequest on top of a
test-only Python builtin that really goes over a socket (tests/pymathics/mlbridge_http.py).
The package itself is loaded unchanged. The script prints `RESULT<TAB>key<TAB>value` lines.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="module")
def python_client(server):
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
