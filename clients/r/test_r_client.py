"""The R client, run in a real Rscript against a real server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import TESTDATA

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
