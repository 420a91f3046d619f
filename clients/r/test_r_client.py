"""The R client, run in a real Rscript against a real server."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from support import TESTDATA

RSCRIPT = shutil.which("Rscript")
OPENSSL = shutil.which("openssl")
CLIENT = Path(__file__).resolve().parent / "mlbridge.R"

pytestmark = [
    pytest.mark.clients,
    pytest.mark.skipif(RSCRIPT is None, reason="R (`Rscript`) is not installed"),
]

READ_IMAGES = """
v <- readBin('{images}', "numeric", n = 20 * 784, size = 4, endian = "little")
x <- aperm(array(v, c(28, 28, 20)), c(3, 2, 1))
"""
# Golden payloads (tests/testdata/README.md): image 8000, digit 4, as a V2 JSON request and
# the server's recorded reply, decoded here by R's own jsonlite.
GOLDEN = """
req <- jsonlite::fromJSON('{testdata}/mnist-8000.request.v2.json', simplifyVector = FALSE)
golden <- jsonlite::fromJSON('{testdata}/mnist-8000.reply.v2.json', simplifyVector = FALSE)
req <- req$inputs[[1]]
golden <- golden$outputs[[1]]
stopifnot(identical(as.integer(unlist(req$shape)), c(1L, 28L, 28L)))
stopifnot(identical(as.integer(unlist(golden$shape)), c(1L, 10L)))
data <- as.numeric(unlist(req$data))
img <- matrix(data, 28, 28, byrow = TRUE)  # V2 data is row-major: 28 values per image row
stopifnot(identical(img, x[1, , ]))  # both hold float32 values exactly
expected <- as.numeric(unlist(golden$data))
one <- mlbridge_predict('mnist', img)
batch <- mlbridge_predict('mnist', aperm(array(data, c(28, 28, 1)), c(3, 2, 1)))
stopifnot(length(one) == 10, identical(dim(batch), c(1L, 10L)))
cat('one-image', max(abs(one - expected)), '\\n')
cat('batch-of-one', max(abs(batch[1, ] - expected)), '\\n')
cat('digit', which.max(one) - 1, '\\n')
"""
WRITE_ROWS = (
    "write.table(format(L, digits = 9), quote = FALSE, row.names = FALSE, col.names = FALSE)"
)


def rscript(script: str, env: dict[str, str], cwd: Path) -> str:
    """Run ``script`` in Rscript with the client sourced; return its stdout."""
    path = cwd / "check.R"
    path.write_text(f"source('{CLIENT}')\n{script}\n")
    done = subprocess.run(
        [RSCRIPT, "--vanilla", str(path)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"Rscript failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def error_of(call: str, env: dict[str, str], cwd: Path) -> str:
    """The message of the error ``call`` raises in R ("NO ERROR" if none)."""
    handler = "error = function(e) cat(conditionMessage(e), '\\n')"
    return rscript(f"tryCatch({{ {call}; cat('NO ERROR\\n') }}, {handler})", env, cwd)


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    """``path`` holding ``text``, created with ``mode`` (never readable by others first)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(text)
    path.chmod(mode)
    return path


def caught(call: str) -> str:
    """R code that runs ``call`` and prints the error it raises."""
    return (
        f"tryCatch({{ {call}; cat('NO ERROR\\n') }},\n"
        " mlbridge_error = function(e)\n"
        "   cat(class(e)[1], e$code, conditionMessage(e), sep = '\\n'))"
    )


@pytest.mark.parametrize("model", ["mnist", "mnist-cnn"])
def test_batch_predictions_match_labels_and_server(
    model, server, batch, images_file, v2_infer, tmp_path
):
    images, labels = batch
    script = READ_IMAGES.format(images=images_file) + (
        f"L <- mlbridge_predict('{model}', x)\nstopifnot(identical(dim(L), c(20L, 10L)))\n"
        + WRITE_ROWS
    )
    logits = np.loadtxt(rscript(script, server.env, tmp_path).splitlines())
    assert logits.shape == (20, 10)
    assert (logits.argmax(axis=1) == labels).sum() >= 19
    np.testing.assert_allclose(logits, v2_infer(model, images), rtol=1e-5, atol=1e-5)


def test_golden_request_gives_the_golden_reply(server, images_file, tmp_path):
    script = READ_IMAGES.format(images=images_file) + GOLDEN.format(testdata=TESTDATA)
    found = dict(line.split() for line in rscript(script, server.env, tmp_path).splitlines())
    assert found["digit"] == "4"
    assert float(found["one-image"]) <= 1e-5, "28x28 matrix: logits differ from the golden"
    assert float(found["batch-of-one"]) <= 1e-5, "1x28x28 array: logits differ from the golden"


def test_single_image_matrix_is_read_row_by_column(server, batch, images_file, tmp_path):
    _, labels = batch
    script = READ_IMAGES.format(images=images_file) + (
        "conn <- mlbridge_connect()\n"
        "for (n in 1:20) {\n"
        "  l <- mlbridge_predict('mnist', x[n, , ], conn)\n"  # x[n, , ] is img[row, col]
        "  stopifnot(is.numeric(l), is.null(dim(l)), length(l) == 10)\n"
        "  cat(which.max(l) - 1, '\\n')\n"
        "}"
    )
    digits = np.array(rscript(script, server.env, tmp_path).split(), dtype=int)
    assert (digits == labels).sum() >= 19


def test_transposed_images_are_mostly_wrong(server, batch, images_file, tmp_path):
    # Guards the test above: were the layout ignored, accuracy would not drop.
    _, labels = batch
    script = READ_IMAGES.format(images=images_file) + (
        "L <- mlbridge_predict('mnist', aperm(x, c(1, 3, 2)))\n" + WRITE_ROWS
    )
    logits = np.loadtxt(rscript(script, server.env, tmp_path).splitlines())
    assert (logits.argmax(axis=1) == labels).sum() < 15


def test_models_lists_demo_models_and_metadata(server, tmp_path):
    script = (
        "cat(mlbridge_models(), sep = '\\n')\n"
        "meta <- mlbridge_models('mnist')\n"
        "cat('shape', unlist(meta$inputs[[1]]$shape), '\\n')"
    )
    lines = [line.strip() for line in rscript(script, server.env, tmp_path).splitlines()]
    assert {"mnist", "mnist-cnn"} <= set(lines)
    assert "shape -1 28 28" in lines


def test_wrong_shape_raises_the_servers_message(server, v2_error, tmp_path):
    expected = v2_error(
        "POST",
        "/v2/models/mnist/infer",
        {
            "inputs": [
                {"name": "input", "shape": [1, 28, 27], "datatype": "FP32", "data": [0.0] * 28 * 27}
            ]
        },
    )
    out = rscript(caught("mlbridge_predict('mnist', matrix(0, 28, 27))"), server.env, tmp_path)
    assert out.startswith("mlbridge_error\n")
    assert expected in out
    assert "HTTP 400" in out


def test_unknown_model_raises_the_servers_message(server, v2_error, tmp_path):
    expected = v2_error("GET", "/v2/models/no-such-model")
    out = rscript(
        caught("mlbridge_predict('no-such-model', matrix(0, 28, 28))"), server.env, tmp_path
    )
    assert expected in out
    assert "HTTP 404" in out


def test_wrong_secret_is_refused_before_it_is_sent(server, tmp_path):
    wrong = private_file(tmp_path / "wrong-token", "not-the-secret\n")
    call = f"mlbridge_models(conn = mlbridge_connect('{server.url}', '{wrong}'))"
    out = error_of(call, server.env, tmp_path)
    assert f"the server at {server.url} could not prove it knows the secret" in out


def test_no_server_is_a_clear_error(tmp_path):
    empty = tmp_path / "home"
    empty.mkdir()
    script = "tryCatch(mlbridge_models(), error = function(e) cat(conditionMessage(e), '\\n'))"
    out = rscript(script, {**os.environ, "MLBRIDGE_HOME": str(empty)}, tmp_path)
    assert "no server found" in out


# Gradients: mlbridge_gradient, mlbridge_jacobian

# show(name, a) prints "name dims v1 v2 ..." with a's elements in row-major order, exactly.
SHOW = """
show <- function(name, a) {
  d <- if (is.null(dim(a))) length(a) else dim(a)
  v <- if (length(d) > 1) aperm(a, rev(seq_along(d))) else a
  cat(name, paste(d, collapse = "x"), sprintf("%.17g", as.numeric(v)), "\\n")
}
"""
NO_GRADIENT_MODEL = "linear-lite.tflite"  # TFLite carries no gradient


def shown(out: str) -> dict[str, np.ndarray]:
    """The arrays ``show`` printed, by name, shaped as R dimensioned them."""
    arrays = {}
    for line in out.splitlines():
        name, dims, *values = line.split()
        shape = [int(d) for d in dims.split("x")]
        arrays[name] = np.array(values, dtype=np.float64).reshape(shape)
    return arrays


def lj13_start() -> np.ndarray:
    """A perturbed 13-atom icosahedron, as in the design notes' Lennard-Jones example."""
    golden = (1 + 5**0.5) / 2
    vertices = [(0.0, a, b) for a in (-1, 1) for b in (-golden, golden)]
    ring = np.array([np.roll(v, k) for v in vertices for k in range(3)])
    ring *= 1.1 / np.linalg.norm(ring, axis=1, keepdims=True)
    return np.vstack([np.zeros(3), ring]) + 0.01 * np.sin(np.arange(39)).reshape(13, 3)


def r_matrix(array: np.ndarray) -> str:
    """A 2-D array as an R matrix expression, every float64 exact."""
    values = ", ".join(f"{v:.17g}" for v in array.ravel())
    return f"matrix(c({values}), {array.shape[0]}, byrow = TRUE)"


@pytest.fixture(scope="module")
def python_client(server):
    from mlbridge.client import Client

    with Client(home=server.home) as client:
        yield client


@pytest.fixture(scope="module")
def no_gradient_server(tmp_path_factory):
    """A second server whose only model, 'linear-lite', serves no gradient."""
    from support import start_server  # the top import line is shared with other edits

    running = start_server(
        tmp_path_factory.mktemp("nograd") / "home", str(TESTDATA / "models" / NO_GRADIENT_MODEL)
    )
    yield running
    running.stop()


def test_box_volume_gradient_jacobian_and_vjp_are_exact(server, tmp_path):
    script = SHOW + (
        "b <- rbind(c(2, 4, 8), c(1, 2, 3))\n"
        "show('vector', mlbridge_gradient('box_volume', c(2, 4, 8)))\n"
        "show('row', mlbridge_gradient('box_volume', matrix(c(2, 4, 8), 1)))\n"
        "show('batch', mlbridge_gradient('box_volume', b))\n"
        "show('vjp', mlbridge_gradient('box_volume', c(2, 4, 8), 0.5))\n"
        "show('vjpbatch', mlbridge_gradient('box_volume', b, dy = c(1, 0.5)))\n"
        "show('jacobian', mlbridge_jacobian('box_volume', c(2, 4, 8)))\n"
        "show('value', mlbridge_predict('box_volume', c(2, 4, 8)))\n"
    )
    found = shown(rscript(script, server.env, tmp_path))
    np.testing.assert_array_equal(found["vector"], [32, 16, 8])
    np.testing.assert_array_equal(found["row"], [[32, 16, 8]])
    np.testing.assert_array_equal(found["batch"], [[32, 16, 8], [6, 3, 2]])
    np.testing.assert_array_equal(found["vjp"], [16, 8, 4])
    np.testing.assert_array_equal(found["vjpbatch"], [[32, 16, 8], [3, 1.5, 1]])
    np.testing.assert_array_equal(found["jacobian"], [32, 16, 8])
    np.testing.assert_array_equal(found["value"], [64])


def test_mnist_gradient_matches_the_python_client(
    server, batch, images_file, python_client, tmp_path
):
    images, _ = batch
    script = (
        READ_IMAGES.format(images=images_file)
        + SHOW
        + (
            "show('one', mlbridge_gradient('mnist', x[1, , ]))\n"
            "show('batch', mlbridge_gradient('mnist', x))\n"
            "show('vjp', mlbridge_gradient('mnist', x[1:2, , ], rbind(1:10, 10:1)))\n"
        )
    )
    found = shown(rscript(script, server.env, tmp_path))
    assert found["one"].shape == (28, 28)
    assert found["batch"].shape == (20, 28, 28)
    np.testing.assert_allclose(found["one"], python_client.gradient("mnist", images[0]), atol=1e-6)
    np.testing.assert_allclose(found["batch"], python_client.gradient("mnist", images), atol=1e-6)
    cotangent = np.array([np.arange(1, 11), np.arange(10, 0, -1)], dtype=np.float32)
    expected = python_client.gradient("mnist", images[:2], cotangent)
    np.testing.assert_allclose(found["vjp"], expected, atol=1e-5)
    assert np.abs(found["one"]).max() > 1e-3, "a zero gradient would match trivially"


def test_mnist_jacobian_rows_are_the_unit_vjps(server, batch, images_file, python_client, tmp_path):
    images, _ = batch
    script = (
        READ_IMAGES.format(images=images_file)
        + SHOW
        + (
            "show('jacobian', mlbridge_jacobian('mnist', x[1, , ]))\n"
            "show('row4', mlbridge_gradient('mnist', x[1, , ], c(0, 0, 0, 0, 1, 0, 0, 0, 0, 0)))\n"
        )
    )
    found = shown(rscript(script, server.env, tmp_path))
    assert found["jacobian"].shape == (10, 28, 28)
    np.testing.assert_allclose(
        found["jacobian"], python_client.jacobian("mnist", images[0]), atol=1e-6
    )
    np.testing.assert_allclose(found["jacobian"][4], found["row4"], atol=1e-6)


def test_lj13_gradient_keeps_float64(server, python_client, tmp_path):
    start = lj13_start()
    script = SHOW + (
        f"x <- {r_matrix(start)}\n"
        "show('energy', mlbridge_predict('lj13', x))\n"
        "show('gradient', mlbridge_gradient('lj13', x))\n"
        "show('jacobian', mlbridge_jacobian('lj13', x))\n"
    )
    found = shown(rscript(script, server.env, tmp_path))
    expected = python_client.gradient("lj13", start)
    assert found["gradient"].shape == found["jacobian"].shape == (13, 3)
    np.testing.assert_array_equal(found["gradient"], expected)
    np.testing.assert_array_equal(found["jacobian"], expected)
    assert float(found["energy"][0]) == float(python_client.predict("lj13", start))


def test_readme_optim_example_relaxes_lj13(server, tmp_path):
    readme = (CLIENT.parent / "README.md").read_text()
    blocks = [block.split("```")[0] for block in readme.split("```r\n")[1:]]
    (example,) = [b for b in blocks if "optim(" in b]
    start = lj13_start() + 0.02 * np.cos(np.arange(39)).reshape(13, 3)
    script = f"start <- {r_matrix(start)}\n{example}\ncat(sprintf('%.10f', fit$value), '\\n')"
    energy = float(rscript(script, server.env, tmp_path).split()[-1])
    assert energy == pytest.approx(-44.326801, abs=1e-5)


def test_model_without_gradient_is_an_mlbridge_error(no_gradient_server, tmp_path):
    conn = f"mlbridge_connect('{no_gradient_server.url}', '{no_gradient_server.token_file}')"
    for call in (
        f"mlbridge_gradient('linear-lite', matrix(0, 28, 28), conn = {conn})",
        f"mlbridge_jacobian('linear-lite', matrix(0, 28, 28), conn = {conn})",
    ):
        out = rscript(caught(call), no_gradient_server.env, tmp_path)
        kind, code, message = out.splitlines()[:3]
        assert (kind, code) == ("mlbridge_error", "GradientUnavailable")
        assert message.startswith(
            "mlbridge: model 'linear-lite' serves no gradient: TFLite models carry no gradient"
        )


def test_gradient_argument_errors(server, v2_error, tmp_path):
    def error_in_session(call: str) -> str:
        return error_of(call, server.env, tmp_path)

    out = error_in_session(
        "mlbridge_gradient('box_volume', rbind(c(2, 4, 8), c(1, 2, 3)), c(1, 2, 3))"
    )
    assert "dy must have the shape" in out and "[2]" in out
    out = error_in_session("mlbridge_gradient('mnist', array(0, c(2, 28, 28)), matrix(1, 10, 2))")
    assert "dy must have the shape" in out, "a transposed cotangent must not be misread"
    out = error_in_session("mlbridge_jacobian('box_volume', rbind(c(2, 4, 8), c(1, 2, 3)))")
    assert "one example" in out
    expected = v2_error("GET", "/v2/models/no-such-model")
    out = error_in_session("mlbridge_gradient('no-such-model', c(2, 4, 8))")
    assert expected in out and "HTTP 404" in out


# Trust: the connection and token files, URLs, the server's proof, https, signed requests

UNPROVEN = (
    "mlbridge: the server at {url} could not prove it knows the secret; "
    "not sending it (is this really your mlbridge server?)"
)
PROOF_LABEL = "mlbridge server proof v1\n"
SIGNED = "MLBridge-HMAC-SHA256"


def private_home(tmp_path: Path, server) -> Path:
    """A home folder (0700) whose server.json (0600) names ``server`` and a copy of its token."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    token = private_file(home / "token", server.token + "\n")
    private_file(home / "server.json", json.dumps({**server.info, "token_file": str(token)}))
    return home


def home_env(home: Path) -> dict[str, str]:
    return {**os.environ, "MLBRIDGE_HOME": str(home)}


LIST_MODELS = "cat(mlbridge_models(), sep = '\\n')"


@pytest.mark.parametrize(
    ("name", "mode", "problem"),
    [
        ("", 0o777, "is writable by others (mode 777); run: chmod go-w"),
        ("", 0o720, "is writable by others (mode 720); run: chmod go-w"),
        ("server.json", 0o644, "is open to others (mode 644); run: chmod 600"),
        ("token", 0o644, "is open to others (mode 644); run: chmod 600"),
        ("token", 0o601, "is open to others (mode 601); run: chmod 600"),
    ],
)
def test_open_home_or_files_are_refused(server, tmp_path, name, mode, problem):
    home = private_home(tmp_path, server)
    path = home / name if name else home
    path.chmod(mode)
    out = error_of("mlbridge_models()", home_env(home), tmp_path)
    assert out.strip() == f"mlbridge: {path} {problem} {path}"
    path.chmod(0o600 if name else 0o755)  # the fix the message names, or a stricter one
    assert "mnist" in rscript(LIST_MODELS, home_env(home), tmp_path).split()


@pytest.mark.parametrize("name", ["", "server.json", "token"])
def test_symbolic_links_are_refused(server, tmp_path, name):
    real = private_home(tmp_path, server)
    if name:
        home, path = real, real / name
        path.rename(real / f"{name}.real")
        path.symlink_to(real / f"{name}.real")
    else:
        home = path = tmp_path / "link"
        home.symlink_to(real)
    out = error_of("mlbridge_models()", home_env(home), tmp_path)
    assert out.strip() == f"mlbridge: {path} is a symbolic link; refusing to trust it with secrets"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
@pytest.mark.parametrize("name", ["", "server.json", "token"])
def test_someone_elses_files_are_refused(server, tmp_path, name):
    home = private_home(tmp_path, server)
    path = home / name if name else home
    os.chown(path, 65534, -1)  # nobody
    out = error_of("mlbridge_models()", home_env(home), tmp_path)
    assert out.strip() == (
        f"mlbridge: {path} belongs to another user; refusing to trust it with secrets"
    )


def test_explicit_token_file_gets_the_same_check(server, tmp_path):
    token = private_file(tmp_path / "token", server.token, 0o644)
    call = f"mlbridge_models(conn = mlbridge_connect('{server.url}', '{token}'))"
    out = error_of(call, server.env, tmp_path)
    assert out.strip() == f"mlbridge: {token} is open to others (mode 644); run: chmod 600 {token}"
    token.chmod(0o600)
    assert "mnist" in rscript(f"cat({call}, sep = '\\n')", server.env, tmp_path).split()


# URL as written in R source -> the connection's URL, or a fragment of the refusal.
URLS = {
    "http://127.0.0.1:8123/": "http://127.0.0.1:8123",
    "http://localhost:8123": "http://localhost:8123",
    "http://127.5.6.7:8123/prefix": "http://127.5.6.7:8123/prefix",
    "http://[::1]:8123": "http://[::1]:8123",
    "HTTP://[0:0:0:0:0:0:0:1]:8123": "http://[0:0:0:0:0:0:0:1]:8123",
    "https://example.org:8443": "https://example.org:8443",
    "https://10.1.2.3": "https://10.1.2.3",
    "http://example.org:8123": "http://example.org:8123 is not on this machine; use https for a "
    "remote server",
    "http://10.0.0.1:8123": "http://10.0.0.1:8123 is not on this machine",
    "http://127.0.0.1.example.org": "http://127.0.0.1.example.org is not on this machine",
    "http://127.0.0.01:8123": "http://127.0.0.01:8123 is not on this machine",
    "http://[::2]:8123": "http://[::2]:8123 is not on this machine",
    "http://[::ffff:127.0.0.1]:8123": "is not on this machine",
    "http://127.0.0.1@example.org:8123": "expected an http or https URL",
    "ftp://127.0.0.1:8123": "expected an http or https URL",
    "http://127.0.0.1:8123/x?y=1": "expected an http or https URL",
    "http://127.0.0.1:8123/\\r\\nX-Evil: 1": (
        'the URL "http://127.0.0.1:8123/\\r\\nX-Evil: 1" holds control characters; '
        "refusing to use it"
    ),
    "http://127.0.0.1:8123/\\x7f": "holds control characters",
    "http://127.0.0.1:8123/\\t": "holds control characters",
}


def test_urls_are_checked_before_any_request(tmp_path):
    token = private_file(tmp_path / "token", "s3cret\n")
    urls = ", ".join(f'"{url}"' for url in URLS)
    script = (
        f"for (url in c({urls}))\n"
        f"  cat(tryCatch(mlbridge_connect(url, '{token}')$url, error = conditionMessage), '\\n')"
    )
    lines = rscript(script, dict(os.environ), tmp_path).splitlines()
    assert len(lines) == len(URLS)
    for (url, expected), line in zip(URLS.items(), lines, strict=True):
        if expected.startswith(("http://", "https://")) and " " not in expected:
            assert line.strip() == expected, url
        else:
            assert line.startswith("mlbridge_connect: ") and expected in line, url


class FakeServer:
    """A stand-in on loopback that records every request; ``behaviour`` picks its answers.

    "wrong", "missing", "html": a proof that is wrong, a 404, an HTML page (and, were the
    secret sent anyway, a model list); "honest": knows ``secret`` and serves a model that
    doubles its input.
    """

    def __init__(self, behaviour: str, secret: str = "") -> None:
        self.behaviour, self.secret = behaviour, secret
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.answer(self)

            def do_POST(self) -> None:
                fake.answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length", 0)))
        self.requests.append(
            {
                "method": request.command,
                "target": request.path,
                "authorization": request.headers.get("Authorization"),
                "body": body,
            }
        )
        status, reply = self.reply(request.path, body)
        data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def reply(self, target: str, body: bytes) -> tuple[int, dict | bytes]:
        path, query = urlsplit(target).path, parse_qs(urlsplit(target).query)
        if path == "/v2/health/proof":
            nonce = query.get("nonce", [""])[0]
            message = (PROOF_LABEL + nonce).encode()
            honest = hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()
            return {
                "wrong": (200, {"proof": "0" * 64}),
                "missing": (404, {"error": "no such route"}),
                "html": (200, b"<html>welcome</html>"),
                "honest": (200, {"proof": honest}),
            }[self.behaviour]
        if path == "/v2/models":
            return 200, {"models": [{"name": "double"}]}
        if path.endswith("/infer"):
            tensor = json.loads(body)["inputs"][0]
            doubled = [2 * value for value in tensor["data"]]
            return 200, {"outputs": [{**tensor, "name": "y", "data": doubled}]}
        spec = {"datatype": "FP64", "shape": [-1, 3]}
        return 200, {
            "name": path.rsplit("/", 1)[-1],
            "inputs": [{"name": "x", **spec}],
            "outputs": [{"name": "y", **spec}],
            "parameters": {},
        }

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server():
    started: list[FakeServer] = []

    def start(behaviour: str, secret: str = "") -> FakeServer:
        started.append(FakeServer(behaviour, secret))
        return started[-1]

    yield start
    for fake in started:
        fake.close()


def is_proof_request(request: dict) -> bool:
    return request["method"] == "GET" and bool(
        re.fullmatch(r"/v2/health/proof\?nonce=[0-9a-f]{64}", request["target"])
    )


@pytest.mark.parametrize(
    ("behaviour", "found_by", "sign"),
    [
        ("wrong", "argument", False),
        ("wrong", "argument", True),
        ("wrong", "server.json", False),
        ("missing", "argument", False),
        ("html", "server.json", False),
    ],
)
def test_server_that_cannot_prove_never_gets_the_secret(
    fake_server, tmp_path, behaviour, found_by, sign
):
    secret = "the-real-secret-0123456789"
    fake = fake_server(behaviour)
    token = private_file(tmp_path / "token", secret + "\n")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    info = {"url": fake.url, "pid": os.getpid(), "token_file": str(token)}
    private_file(home / "server.json", json.dumps(info))
    connect = (
        f"mlbridge_connect(sign = {str(sign).upper()})"
        if found_by == "server.json"
        else f"mlbridge_connect('{fake.url}', '{token}', sign = {str(sign).upper()})"
    )
    out = error_of(f"mlbridge_models(conn = {connect})", home_env(home), tmp_path)
    assert out.strip() == UNPROVEN.format(url=fake.url)
    assert len(fake.requests) == 1 and is_proof_request(fake.requests[0])
    assert fake.requests[0]["authorization"] is None
    assert secret not in repr(fake.requests)


def test_proof_is_asked_once_per_server_and_secret(fake_server, tmp_path):
    secret = "the-real-secret-0123456789"
    fake = fake_server("honest", secret)
    token = private_file(tmp_path / "token", secret + "\n")
    connect = f"mlbridge_connect('{fake.url}', '{token}')"
    script = (
        f"first <- {connect}\n"
        "cat(mlbridge_models(conn = first), mlbridge_models(conn = first), '\\n')\n"
        f"again <- {connect}\n"
        "cat(mlbridge_models(conn = again), '\\n')\n"
    )
    assert rscript(script, dict(os.environ), tmp_path).split() == ["double"] * 3
    proof, *others = fake.requests
    assert is_proof_request(proof) and proof["authorization"] is None
    assert [r["target"] for r in others] == ["/v2/models"] * 3
    assert {r["authorization"] for r in others} == {f"Bearer {secret}"}


def checked_signature(request: dict, secret: str) -> dict[str, str]:
    """The fields of a signed request's Authorization header, after checking them all."""
    scheme, _, fields = request["authorization"].partition(" ")
    assert scheme == SIGNED
    claim = dict(field.strip().split("=", 1) for field in fields.split(","))
    assert set(claim) == {"ts", "nonce", "body", "sig"}
    assert abs(time.time() - int(claim["ts"])) <= 60
    assert re.fullmatch(r"[0-9a-f]{32,128}", claim["nonce"])
    assert claim["body"] == hashlib.sha256(request["body"]).hexdigest()
    fields = [request["method"], request["target"], claim["ts"], claim["nonce"], claim["body"]]
    message = "\n".join(["mlbridge request v1", *fields])
    expected = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(claim["sig"], expected), f"bad signature on {request['target']}"
    return claim


def test_signed_requests_sign_the_exact_target_and_body(fake_server, tmp_path):
    secret = "the-real-secret-0123456789"
    fake = fake_server("honest", secret)
    token = private_file(tmp_path / "token", secret + "\n")
    script = (
        f"conn <- mlbridge_connect('{fake.url}', '{token}', sign = TRUE)\n"
        "cat(mlbridge_models(conn = conn), '\\n')\n"
        "cat(sprintf('%.17g', mlbridge_predict('a b/c', c(1.5, 1/3, -2), conn)), '\\n')\n"
    )
    name, *doubled = rscript(script, dict(os.environ), tmp_path).split()
    assert name == "double"
    assert [float(v) for v in doubled] == [3.0, 2 / 3, -4.0]
    proof, *signed = fake.requests
    assert is_proof_request(proof)
    targets = ["/v2/models", "/v2/models/a%20b%2Fc", "/v2/models/a%20b%2Fc/infer"]
    assert [r["target"] for r in signed] == targets
    claims = [checked_signature(request, secret) for request in signed]
    assert len({claim["nonce"] for claim in claims}) == len(claims), "nonces must be fresh"
    assert signed[-1]["body"], "the infer request has a body"
    assert secret not in repr(fake.requests)


HMAC_CASES = [
    ("s3cret", PROOF_LABEL + "00" * 32),  # the spec's reference value
    ("k", ""),
    ("k" * 100, "a key longer than a block, and a long message: " + "x" * 300),
    ("sécret ✓", "ünïcode\nlines\n"),
]


def test_hmac_matches_pythons(tmp_path):
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(HMAC_CASES), encoding="utf-8")
    script = (
        f"cases <- jsonlite::fromJSON('{cases}', simplifyVector = FALSE)\n"
        "for (case in cases) cat(.mlbridge_hmac(case[[1]], case[[2]]), '\\n')"
    )
    expected = [
        hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()
        for key, message in HMAC_CASES
    ]
    assert rscript(script, dict(os.environ), tmp_path).split() == expected


def test_signed_requests_are_accepted_and_checked_by_the_server(server, tmp_path):
    script = SHOW + (
        "conn <- mlbridge_connect(sign = TRUE)\n"
        "show('gradient', mlbridge_gradient('box_volume', c(2, 4, 8), conn = conn))\n"
        "show('value', mlbridge_predict('box_volume', rbind(c(2, 4, 8), c(1, 2, 3)), conn))\n"
        # The server does check: the same signed request a second time is a replay.
        "url <- paste0(conn$url, '/v2/models')\n"
        "header <- c(Authorization = .mlbridge_signature(conn$token, 'GET', '/v2/models', raw()))\n"
        "for (try in c('first', 'replay'))\n"
        "  show(try, httr::status_code(.mlbridge_send(conn, 'GET', url, raw(), header)))\n"
    )
    found = shown(rscript(script, server.env, tmp_path))
    np.testing.assert_array_equal(found["gradient"], [32, 16, 8])
    np.testing.assert_array_equal(found["value"], [64, 6])
    assert (found["first"][0], found["replay"][0]) == (200, 401)


SUBJECT_ALT_NAMES = "DNS:localhost,IP:127.0.0.1,IP:::1"


def self_signed_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 made by the openssl command, and its key."""
    cert, key = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    names = ["-subj", "/CN=localhost", "-addext", f"subjectAltName={SUBJECT_ALT_NAMES}"]
    subprocess.run(
        [OPENSSL or "openssl", *request, *names, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    return cert, key


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """A server on https with a self-signed certificate, which server.json names as ca_file."""
    from support import start_server

    if OPENSSL is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_certificate(folder, "server")
    running = start_server(folder / "home", "--tls-cert", str(cert), "--tls-key", str(key))
    yield running
    running.stop()


def test_https_server_found_through_server_json(tls_server, tmp_path):
    assert tls_server.url.startswith("https://127.0.0.1:")
    ca_file = tls_server.info["ca_file"]
    script = (
        "conn <- mlbridge_connect()\n"
        "cat(conn$url, conn$ca_file, '\\n')\n"
        "cat(mlbridge_models(conn = conn), '\\n')\n"
        "cat(mlbridge_gradient('box_volume', c(2, 4, 8), conn = conn), '\\n')\n"
        "signed <- mlbridge_connect(sign = TRUE)\n"
        "cat(mlbridge_gradient('box_volume', c(1, 2, 3), conn = signed), '\\n')\n"
    )
    where, models, gradient, signed = rscript(script, tls_server.env, tmp_path).splitlines()
    assert where.split() == [tls_server.url, str(Path(ca_file).resolve())]
    assert "mnist" in models.split()
    assert [float(v) for v in gradient.split()] == [32, 16, 8]
    assert [float(v) for v in signed.split()] == [6, 3, 2]


def test_https_certificate_is_always_verified(tls_server, tmp_path):
    other, _ = self_signed_certificate(tmp_path, "other")
    ca_file = tls_server.info["ca_file"]
    nowhere = {k: v for k, v in os.environ.items() if k != "MLBRIDGE_HOME"}  # no server.json
    explicit = f"mlbridge_connect('{tls_server.url}', '{tls_server.token_file}'"
    trusted = f"mlbridge_models(conn = {explicit}, ca_file = '{ca_file}'))"
    out = rscript(f"cat({trusted})", nowhere, tmp_path)
    assert "mnist" in out.split()
    refusals = [
        error_of(f"mlbridge_models(conn = {explicit}))", nowhere, tmp_path),  # the system's store
        error_of(f"mlbridge_models(conn = {explicit}, ca_file = '{other}'))", nowhere, tmp_path),
        error_of(
            f"mlbridge_models(conn = mlbridge_connect(ca_file = '{other}'))",
            tls_server.env,
            tmp_path,
        ),
    ]
    for out in refusals:
        assert out.startswith(f"mlbridge: GET {tls_server.url}/v2/health/proof?nonce="), out
        assert "certificate" in out, out


def test_ca_file_is_for_https_only(server, tmp_path):
    cert = private_file(tmp_path / "cert.pem", "not used\n")
    call = f"mlbridge_connect('{server.url}', '{server.token_file}', ca_file = '{cert}')"
    out = error_of(call, server.env, tmp_path)
    assert out.strip() == f"mlbridge: ca_file is for https servers; {server.url} is http"
    call = f"mlbridge_connect('https://localhost:1', '{server.token_file}', ca_file = 'no.pem')"
    out = error_of(call, server.env, tmp_path)
    assert "CA file no.pem does not exist (expected a PEM certificate)" in out
