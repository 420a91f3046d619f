"""The Octave/MATLAB client, run in a real GNU Octave against a real server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import TESTDATA

OCTAVE = shutil.which("octave")
CLIENT = Path(__file__).resolve().parent

pytestmark = [
    pytest.mark.clients,
    pytest.mark.skipif(OCTAVE is None, reason="GNU Octave (`octave`) is not installed"),
]

READ_IMAGES = """
fid = fopen('{images}', 'r'); v = fread(fid, Inf, 'float32', 0, 'ieee-le'); fclose(fid);
x = permute(reshape(v, 28, 28, []), [3 2 1]);
"""
# Golden payloads (tests/testdata/README.md): image 8000, digit 4, as a V2 JSON request and
# the server's recorded reply, decoded here by Octave's own jsondecode.
GOLDEN = """
req = jsondecode(fileread('{testdata}/mnist-8000.request.v2.json')).inputs;
golden = jsondecode(fileread('{testdata}/mnist-8000.reply.v2.json')).outputs;
assert(isequal(req.shape(:).', [1 28 28]), 'golden request shape %s', mat2str(req.shape(:).'));
assert(isequal(golden.shape(:).', [1 10]), 'golden reply shape %s', mat2str(golden.shape(:).'));
img = reshape(req.data, 28, 28).';  % V2 data is row-major: 28 values per image row
assert(isequal(single(img), single(squeeze(x(1, :, :)))), 'golden request is not image 8000');
expected = golden.data(:).';
one = mlbridge_predict('mnist', img);
batch = mlbridge_predict('mnist', permute(reshape(req.data, fliplr(req.shape(:).')), [3 2 1]));
assert(isequal(size(one), [1 10]) && isequal(size(batch), [1 10]));
printf('one-image %.3g\\n', max(abs(one - expected)));
printf('batch-of-one %.3g\\n', max(abs(batch - expected)));
[~, k] = max(one); printf('digit %d\\n', k - 1);
"""
WRITE_ROWS = "fprintf([repmat('%.9g ', 1, size(L, 2)) '\\n'], L.');"


def octave(script: str, env: dict[str, str], cwd: Path) -> str:
    """Run ``script`` in Octave with the client on the path; return its stdout."""
    command = [
        OCTAVE,
        "--no-gui",
        "--quiet",
        "--no-init-file",
        "--eval",
        f"addpath('{CLIENT}');\n{script}",
    ]
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"octave failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def caught(call: str) -> str:
    """Octave code that runs ``call`` and prints the error it raises."""
    return (
        f"try\n {call};\n disp('NO ERROR');\ncatch err\n"
        " printf('%s\\n%s\\n', err.identifier, err.message);\nend"
    )


@pytest.mark.parametrize("model", ["mnist", "mnist-cnn"])
def test_batch_predictions_match_labels_and_server(
    model, server, batch, images_file, v2_infer, tmp_path
):
    images, labels = batch
    script = READ_IMAGES.format(images=images_file) + f"L = mlbridge_predict('{model}', x);\n"
    logits = np.loadtxt(octave(script + WRITE_ROWS, server.env, tmp_path).splitlines())
    assert logits.shape == (20, 10)
    assert (logits.argmax(axis=1) == labels).sum() >= 19
    np.testing.assert_allclose(logits, v2_infer(model, images), rtol=1e-5, atol=1e-5)


def test_golden_request_gives_the_golden_reply(server, images_file, tmp_path):
    script = READ_IMAGES.format(images=images_file) + GOLDEN.format(testdata=TESTDATA)
    found = dict(line.split() for line in octave(script, server.env, tmp_path).splitlines())
    assert found["digit"] == "4"
    assert float(found["one-image"]) <= 1e-5, "28x28 matrix: logits differ from the golden"
    assert float(found["batch-of-one"]) <= 1e-5, "1x28x28 array: logits differ from the golden"


def test_single_image_matrix_is_read_row_by_column(server, batch, images_file, tmp_path):
    _, labels = batch
    script = READ_IMAGES.format(images=images_file) + (
        "for n = 1:20\n"
        " img = squeeze(x(n, :, :));\n"  # img(row, col), as imshow shows it
        " l = mlbridge_predict('mnist', img);\n"
        " assert(isequal(size(l), [1 10]));\n"
        " [~, k] = max(l); printf('%d\\n', k - 1);\n"
        "end"
    )
    digits = np.array(octave(script, server.env, tmp_path).split(), dtype=int)
    assert (digits == labels).sum() >= 19


def test_transposed_images_are_mostly_wrong(server, batch, images_file, tmp_path):
    # Guards the test above: were the layout ignored, accuracy would not drop.
    _, labels = batch
    script = READ_IMAGES.format(images=images_file) + (
        "L = mlbridge_predict('mnist', permute(x, [1 3 2]));\n" + WRITE_ROWS
    )
    logits = np.loadtxt(octave(script, server.env, tmp_path).splitlines())
    assert (logits.argmax(axis=1) == labels).sum() < 15


def test_models_lists_demo_models_and_metadata(server, tmp_path):
    script = (
        "names = mlbridge_models(); printf('%s\\n', names{:});\n"
        "meta = mlbridge_models('mnist');\n"
        "printf('shape %s\\n', mat2str(meta.inputs(1).shape(:).'));"
    )
    lines = octave(script, server.env, tmp_path).splitlines()
    assert {"mnist", "mnist-cnn"} <= set(lines)
    assert "shape [-1 28 28]" in lines


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
    out = octave(caught("mlbridge_predict('mnist', zeros(28, 27))"), server.env, tmp_path)
    assert "NO ERROR" not in out
    assert expected in out
    assert "HTTP 400" in out


def test_unknown_model_raises_the_servers_message(server, v2_error, tmp_path):
    expected = v2_error("GET", "/v2/models/no-such-model")
    out = octave(caught("mlbridge_predict('no-such-model', zeros(28, 28))"), server.env, tmp_path)
    assert expected in out
    assert "HTTP 404" in out


def test_wrong_secret_is_refused(server, tmp_path):
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-secret\n")
    call = f"mlbridge_models(mlbridge_connect('{server.url}', '{wrong}'))"
    out = octave(caught(call), server.env, tmp_path)
    assert "HTTP 401" in out


def test_secret_stays_off_curl_command_line(server, tmp_path):
    # A curl on PATH that logs its arguments and its config folder's mode, then runs the real one.
    spy = tmp_path / "bin"
    spy.mkdir()
    log = tmp_path / "curl-args.log"
    (spy / "curl").write_text(
        "#!/bin/sh\n"
        f"echo \"$@\" >> '{log}'\n"
        f"stat -c '%a' \"$(dirname \"$3\")\" >> '{log}'\n"
        f"exec '{shutil.which('curl')}' \"$@\"\n"
    )
    (spy / "curl").chmod(0o755)
    env = {**server.env, "PATH": f"{spy}{os.pathsep}{server.env['PATH']}"}
    out = octave("printf('%s\\n', mlbridge_models(){:});", env, tmp_path)
    assert "mnist" in out.split()
    args, mode = log.read_text().splitlines()
    assert server.token not in args
    assert args.startswith("-sS -K ")
    assert mode == "700"
    assert not Path(args.split()[2]).parent.exists(), "the private temp folder was left behind"
