"""The R client, run in a real Rscript against a real server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support import TESTDATA

RSCRIPT = shutil.which("Rscript")
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


def test_wrong_secret_is_refused(server, tmp_path):
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-secret\n")
    call = f"mlbridge_models(conn = mlbridge_connect('{server.url}', '{wrong}'))"
    out = rscript(caught(call), server.env, tmp_path)
    assert "HTTP 401" in out


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
    def error_of(call: str) -> str:
        handler = "error = function(e) cat(conditionMessage(e), '\\n')"
        return rscript(
            f"tryCatch({{ {call}; cat('NO ERROR\\n') }}, {handler})", server.env, tmp_path
        )

    out = error_of("mlbridge_gradient('box_volume', rbind(c(2, 4, 8), c(1, 2, 3)), c(1, 2, 3))")
    assert "dy must have the shape" in out and "[2]" in out
    out = error_of("mlbridge_gradient('mnist', array(0, c(2, 28, 28)), matrix(1, 10, 2))")
    assert "dy must have the shape" in out, "a transposed cotangent must not be misread"
    out = error_of("mlbridge_jacobian('box_volume', rbind(c(2, 4, 8), c(1, 2, 3)))")
    assert "one example" in out
    expected = v2_error("GET", "/v2/models/no-such-model")
    out = error_of("mlbridge_gradient('no-such-model', c(2, 4, 8))")
    assert expected in out and "HTTP 404" in out
