"""The Octave/MATLAB client, run in a real GNU Octave against a real server."""

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
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from support import TESTDATA

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


def private_file(path: Path, text: str) -> Path:
    """``path`` holding ``text``, mode 0600: a token file the client accepts."""
    path.write_text(text)
    path.chmod(0o600)
    return path


def unproven(url: str) -> str:
    """The client's refusal of a server that did not prove it knows the secret."""
    return (
        f"the server at {url} could not prove it knows the secret; not sending it "
        "(is this really your mlbridge server?)"
    )


def octave_text(text: str) -> str:
    """``text`` as an Octave single-quoted string."""
    return "'" + text.replace("'", "''") + "'"


def option_names(config: str) -> list[str]:
    """The option names of a curl config file, in order."""
    return [line.split(" = ")[0] for line in config.strip().splitlines()]


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
    # The server cannot prove it knows a secret it does not have: refused before it is sent.
    wrong = private_file(tmp_path / "wrong-token", "not-the-secret\n")
    call = f"mlbridge_models(mlbridge_connect('{server.url}', '{wrong}'))"
    identifier, message = octave(caught(call), server.env, tmp_path).splitlines()[:2]
    assert identifier == "mlbridge:unproven"
    assert message == f"mlbridge: {unproven(server.url)}"


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
    lines = log.read_text().splitlines()
    assert len(lines) == 4, "two calls: the server's proof, then the model list"
    for args, mode in zip(lines[::2], lines[1::2]):
        assert server.token not in args
        assert args.startswith("-sS -K ")
        assert mode == "700"
        assert not Path(args.split()[2]).parent.exists(), "the private temp folder was left behind"


# Gradients: mlbridge_gradient, mlbridge_jacobian

# show(name, a) prints "name [size] v1 v2 ..." with a's elements in row-major order, exactly.
SHOW = (
    "show = @(name, a) printf('%s %s %s\\n', name, mat2str(size(a)), "
    "sprintf('%.17g ', permute(a, ndims(a):-1:1)));\n"
)
NO_GRADIENT_MODEL = "linear-lite.tflite"  # TFLite carries no gradient


def shown(out: str) -> dict[str, np.ndarray]:
    """The arrays ``show`` printed, by name, shaped as Octave sized them."""
    arrays = {}
    for line in out.splitlines():
        name, rest = line.split(" ", 1)
        size, _, values = rest.partition("] ")
        shape = [int(v) for v in size.strip("[]").split()]
        arrays[name] = np.array(values.split(), dtype=np.float64).reshape(shape)
    return arrays


def lj13_start() -> np.ndarray:
    """A perturbed 13-atom icosahedron, as in the design notes' Lennard-Jones example."""
    golden = (1 + 5**0.5) / 2
    vertices = [(0.0, a, b) for a in (-1, 1) for b in (-golden, golden)]
    ring = np.array([np.roll(v, k) for v in vertices for k in range(3)])
    ring *= 1.1 / np.linalg.norm(ring, axis=1, keepdims=True)
    return np.vstack([np.zeros(3), ring]) + 0.01 * np.sin(np.arange(39)).reshape(13, 3)


def octave_matrix(array: np.ndarray) -> str:
    """A 2-D array as Octave matrix text, every float64 exact."""
    return "[" + "; ".join(" ".join(f"{v:.17g}" for v in row) for row in array) + "]"


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
        "show('row', mlbridge_gradient('box_volume', [2 4 8]));\n"
        "show('column', mlbridge_gradient('box_volume', [2; 4; 8]));\n"
        "show('batch', mlbridge_gradient('box_volume', [2 4 8; 1 2 3]));\n"
        "show('vjp', mlbridge_gradient('box_volume', [2 4 8], 0.5));\n"
        "show('vjpbatch', mlbridge_gradient('box_volume', [2 4 8; 1 2 3], [1; 0.5]));\n"
        "show('jacobian', mlbridge_jacobian('box_volume', [2 4 8]));\n"
        "show('value', mlbridge_predict('box_volume', [2; 4; 8]));\n"
    )
    found = shown(octave(script, server.env, tmp_path))
    np.testing.assert_array_equal(found["row"], [[32, 16, 8]])
    np.testing.assert_array_equal(found["column"], [[32], [16], [8]])
    np.testing.assert_array_equal(found["batch"], [[32, 16, 8], [6, 3, 2]])
    np.testing.assert_array_equal(found["vjp"], [[16, 8, 4]])
    np.testing.assert_array_equal(found["vjpbatch"], [[32, 16, 8], [3, 1.5, 1]])
    np.testing.assert_array_equal(found["jacobian"], [[32, 16, 8]])
    np.testing.assert_array_equal(found["value"], [[64]])


def test_mnist_gradient_matches_the_python_client(
    server, batch, images_file, python_client, tmp_path
):
    images, _ = batch
    script = (
        READ_IMAGES.format(images=images_file)
        + SHOW
        + (
            "show('one', mlbridge_gradient('mnist', squeeze(x(1, :, :))));\n"
            "show('batch', mlbridge_gradient('mnist', x));\n"
            "show('vjp', mlbridge_gradient('mnist', x(1:2, :, :), [1:10; 10:-1:1]));\n"
        )
    )
    found = shown(octave(script, server.env, tmp_path))
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
            "img = squeeze(x(1, :, :));\n"
            "show('jacobian', mlbridge_jacobian('mnist', img));\n"
            "show('row4', mlbridge_gradient('mnist', img, [0 0 0 0 1 0 0 0 0 0]));\n"
        )
    )
    found = shown(octave(script, server.env, tmp_path))
    assert found["jacobian"].shape == (10, 28, 28)
    np.testing.assert_allclose(
        found["jacobian"], python_client.jacobian("mnist", images[0]), atol=1e-6
    )
    np.testing.assert_allclose(found["jacobian"][4], found["row4"], atol=1e-6)


def test_lj13_gradient_keeps_float64(server, python_client, tmp_path):
    start = lj13_start()
    script = SHOW + (
        f"x = {octave_matrix(start)};\n"
        "show('energy', mlbridge_predict('lj13', x));\n"
        "show('gradient', mlbridge_gradient('lj13', x));\n"
        "show('jacobian', mlbridge_jacobian('lj13', x));\n"
    )
    found = shown(octave(script, server.env, tmp_path))
    expected = python_client.gradient("lj13", start)
    assert found["gradient"].shape == found["jacobian"].shape == (13, 3)
    np.testing.assert_allclose(found["gradient"], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(found["jacobian"], expected, rtol=1e-12, atol=1e-12)
    energy = float(python_client.predict("lj13", start))
    assert float(found["energy"][0, 0]) == pytest.approx(energy, rel=1e-14)


def test_model_without_gradient_raises_the_servers_reason(no_gradient_server, tmp_path):
    conn = f"mlbridge_connect('{no_gradient_server.url}', '{no_gradient_server.token_file}')"
    for call in (
        f"mlbridge_gradient('linear-lite', zeros(28, 28), {conn})",
        f"mlbridge_jacobian('linear-lite', zeros(28, 28), {conn})",
    ):
        out = octave(caught(call), no_gradient_server.env, tmp_path)
        identifier, message = out.splitlines()[:2]
        assert identifier == "mlbridge:GradientUnavailable"
        assert message.startswith(
            "mlbridge: model 'linear-lite' serves no gradient: TFLite models carry no gradient"
        )


def test_gradient_argument_errors(server, v2_error, tmp_path):
    out = octave(
        caught("mlbridge_gradient('box_volume', [2 4 8; 1 2 3], [1 2 3])"), server.env, tmp_path
    )
    assert out.startswith("mlbridge:usage\n") and "[2]" in out
    out = octave(
        caught("mlbridge_gradient('mnist', zeros(2, 28, 28), ones(10, 2))"), server.env, tmp_path
    )
    assert out.startswith("mlbridge:usage\n"), "a transposed cotangent must not be misread"
    out = octave(caught("mlbridge_jacobian('box_volume', [2 4 8; 1 2 3])"), server.env, tmp_path)
    assert out.startswith("mlbridge:usage\n") and "one example" in out
    expected = v2_error("GET", "/v2/models/no-such-model")
    out = octave(caught("mlbridge_gradient('no-such-model', [2 4 8])"), server.env, tmp_path)
    assert expected in out and "HTTP 404" in out


def test_readme_fminunc_example_relaxes_lj13(server, tmp_path):
    readme = (CLIENT / "README.md").read_text()
    blocks = [block.split("```")[0] for block in readme.split("```matlab\n")[1:]]
    (objective,) = [b for b in blocks if b.startswith("function [e, g] = lj_energy(p)")]
    (tmp_path / "lj_energy.m").write_text(objective)
    script = (
        f"start = {octave_matrix(lj13_start() + 0.02 * np.cos(np.arange(39)).reshape(13, 3))};\n"
        "options = optimset('GradObj', 'on', 'TolFun', 1e-10, 'TolX', 1e-10);\n"
        "[p, e] = fminunc(@lj_energy, start(:), options);\n"
        "printf('%.10f\\n', e);"
    )
    energy = float(octave(script, server.env, tmp_path).split()[-1])
    assert energy == pytest.approx(-44.326801, abs=1e-5)


# Char and string arguments, URLs that could inject into curl's config file, the MATLAB
# branch through a stand-in for matlab.net.http, trailing singleton dimensions.

STRING_STANDIN = CLIENT / "tests" / "string_standin"  # MATLAB's string class, for Octave
MATLAB_STANDIN = CLIENT / "tests" / "matlab_standin"  # matlab.net.http, through curl
PRIVATE = CLIENT / "private"


def private_copy(tmp_path: Path, *names: str) -> Path:
    """Copies of private helpers in a folder of their own, so a test can call them."""
    folder = tmp_path / "helpers"
    folder.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(PRIVATE / f"{name}.m", folder)
    return folder


# astext(r): a char result as it is, numbers with 17 significant digits.
TEXT = "function s = astext(r)\n if ischar(r) s = r; else s = sprintf('%.17g ', r); end\nend\n"


def test_entry_points_take_char_and_string_arguments_alike(server, images_file, tmp_path):
    """Each entry point called with the char forms and with strings gives the same answer."""
    setup = READ_IMAGES.format(images=images_file) + (
        f"addpath('{STRING_STANDIN}');\n"
        "img = squeeze(x(1, :, :));\n"
        f"url = '{server.url}'; tok = '{server.token_file}';\n"
    )
    calls = {
        "connect": "c = mlbridge_connect({url}, {tok}); r = c.url;",
        "models": "r = strjoin(mlbridge_models(mlbridge_connect({url}, {tok})), ',');",
        "meta": "m = mlbridge_models({mnist}); r = m.name;",
        "predict": "r = mlbridge_predict({mnist}, img);",
        "gradient": "r = mlbridge_gradient({box}, [2 4 8], 0.5);",
        "jacobian": "r = mlbridge_jacobian({box}, [2 4 8]);",
        "handmade": "r = strjoin(mlbridge_models(struct('url', {url}, 'token', {secret})), ',');",
    }
    script = setup + f"secret = '{server.token}';\n" + TEXT
    for name, call in calls.items():
        for form, wrap in (("char", "{}"), ("string", "string({})")):
            args = {
                k: wrap.format(v)
                for k, v in {
                    "url": "url",
                    "tok": "tok",
                    "mnist": "'mnist'",
                    "box": "'box_volume'",
                    "secret": "secret",
                }.items()
            }
            script += call.format(**args) + f"\nprintf('{name} {form} %s\\n', astext(r));\n"
    answers = {}
    for line in octave(script, server.env, tmp_path).splitlines():
        name, form, value = line.split(" ", 2)
        answers[name, form] = value
    for name in calls:
        assert answers[name, "char"] == answers[name, "string"], name
    assert "mnist" in answers["models", "char"].split(",")
    assert answers["gradient", "char"] == "16 8 4 "


def test_a_string_array_is_a_usage_error(server, tmp_path):
    script = f"addpath('{STRING_STANDIN}');\n" + caught(
        "mlbridge_predict(string('mnist', 'mnist-cnn'), zeros(28, 28))"
    )
    identifier, message = octave(script, server.env, tmp_path).splitlines()[:2]
    assert identifier == "mlbridge:usage"
    assert message == "mlbridge: MODEL must be one string; got a string array of size [1 2]"


def test_text_helpers_convert_and_refuse(tmp_path):
    """Unit tests of the private helpers: text conversion, URL check, model path encoding."""
    folder = private_copy(tmp_path, "mlbridge_text", "mlbridge_check_url", "mlbridge_model_path")
    script = f"addpath('{STRING_STANDIN}'); cd('{folder}');\n" + "\n".join(
        [
            "printf('%s|%s\\n', mlbridge_text('abc', 'X'), class(mlbridge_text('abc', 'X')));",
            "t = mlbridge_text(string('abc'), 'X'); printf('%s|%s\\n', t, class(t));",
            caught("mlbridge_text(string('a', 'b'), 'X')"),
            caught("mlbridge_text(42, 'X')"),
            caught("mlbridge_text({'a'}, 'X')"),
            caught("mlbridge_text(['ab'; 'cd'], 'X')"),
            "disp(mlbridge_check_url('http://127.0.0.1:8123//'));",
            "disp(mlbridge_check_url(string('http://localhost:1/')));",
            "disp(mlbridge_check_url('https://[::1]:443'));",
            caught("mlbridge_check_url(['http://127.0.0.1:8123' char(10) 'output = \"/tmp/x\"'])"),
            caught("mlbridge_check_url('http://192.168.1.2:8123')"),
            caught("mlbridge_check_url('file:///etc/passwd')"),
            caught("mlbridge_check_url('http://127.0.0.1:8123/a b')"),
            "disp(mlbridge_model_path('mnist-cnn.vjp', '/infer'));",
            "disp(mlbridge_model_path(['a/b?c' char(10)]));",
            "disp(mlbridge_model_path(string(['caf' char([195 169])])));",
        ]
    )
    out = octave(script, {**os.environ}, tmp_path).splitlines()
    assert out[0] == "abc|char" and out[1] == "abc|char"
    assert out[2:4] == [
        "mlbridge:usage",
        "mlbridge: X must be one string; got a string array of size [1 2]",
    ]
    assert out[4] == out[6] == out[8] == "mlbridge:usage"
    assert out[10:13] == ["http://127.0.0.1:8123", "http://localhost:1", "https://[::1]:443"]
    assert out[13] == out[15] == out[17] == out[19] == "mlbridge:usage"
    assert 'got "http://127.0.0.1:8123?output = "/tmp/x""' in out[14]
    assert out[21:] == [
        "/v2/models/mnist-cnn.vjp/infer",
        "/v2/models/a%2Fb%3Fc%0A",
        "/v2/models/caf%C3%A9",
    ]


def spy_curl(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A curl on PATH that appends its config file to a log, then runs the real curl."""
    spy = tmp_path / "bin"
    spy.mkdir()
    log = tmp_path / "curl-configs.log"
    (spy / "curl").write_text(
        f"#!/bin/sh\ncat \"$3\" >> '{log}'\necho '----' >> '{log}'\n"
        f"exec '{shutil.which('curl')}' \"$@\"\n"
    )
    (spy / "curl").chmod(0o755)
    return {"PATH": f"{spy}{os.pathsep}{os.environ['PATH']}"}, log


def test_control_characters_never_reach_curls_config(server, tmp_path):
    path, log = spy_curl(tmp_path)
    env = {**server.env, **path}
    injected = f"['{server.url}' char(10) 'output = \"{tmp_path}/stolen\"']"
    out = octave(caught(f"mlbridge_connect({injected}, '{server.token_file}')"), env, tmp_path)
    assert out.startswith("mlbridge:usage\n") and not log.exists(), "refused before curl ran"
    out = octave(
        caught(f"mlbridge_connect('http://10.0.0.1:8123', '{server.token_file}')"), env, tmp_path
    )
    assert out.startswith("mlbridge:usage\n") and not log.exists()
    bad_token = private_file(
        tmp_path / "token-with-newline", f'{server.token}\nurl = "http://10.0.0.1"\n'
    )
    out = octave(caught(f"mlbridge_connect('{server.url}', '{bad_token}')"), env, tmp_path)
    assert out.startswith("mlbridge:notoken\n") and not log.exists()
    # A model name is percent-encoded: it cannot add a line, and names a model (not found).
    model = "['mnist' char(10) 'output = \"/tmp/stolen\"']"
    out = octave(caught(f"mlbridge_models({model})"), env, tmp_path)
    assert out.split(":")[0] == "mlbridge" and "(HTTP 404 from GET" in out
    configs = log.read_text()
    assert "/v2/models/mnist%0Aoutput%20%3D%20%22%2Ftmp%2Fstolen%22" in configs
    proof, request = [option_names(config) for config in configs.split("----")[:2]]
    common = ["output", "write-out", "connect-timeout", "noproxy", "globoff", "path-as-is"]
    assert proof == ["url", "request", "header", *common], "no Authorization header"
    assert request == ["url", "request", "header", "header", *common]
    assert not (tmp_path / "stolen").exists()


def test_connection_failure_is_mlbridge_connection_in_octave(server, tmp_path):
    call = f"mlbridge_models(mlbridge_connect('http://127.0.0.1:9', '{server.token_file}'))"
    identifier, message = octave(caught(call), server.env, tmp_path).splitlines()[:2]
    assert identifier == "mlbridge:connection"
    # The first request is the one asking for the server's proof.
    assert message.startswith("mlbridge: GET http://127.0.0.1:9/v2/health/proof?nonce=")
    assert "failed (curl exit 7): curl: (7) " in message


def test_matlab_branch_through_a_standin_for_matlab_net_http(
    server, images_file, v2_infer, batch, tmp_path
):
    """mlbridge_http_matlab with stand-in classes that do the HTTP through curl."""
    folder = private_copy(tmp_path, "mlbridge_http_matlab")
    bearer = f"'Bearer {server.token}'"
    body = (TESTDATA / "mnist-8000.request.v2.json").read_text().replace("'", "''")
    script = f"addpath('{MATLAB_STANDIN}'); cd('{folder}');\n" + (
        f"[s, t] = mlbridge_http_matlab('{server.url}/v2/models', 'GET', [], {bearer}, '');\n"
        "printf('models %d %s\\n', s, strjoin({jsondecode(t).models.name}, ','));\n"
        "o = getappdata(0, 'MLBRIDGE_STANDIN_OPTIONS');\n"
        "printf('options %d %d %d\\n', o.UseProxy, o.SavePayload, o.ConvertResponse);\n"
        f"[s, t] = mlbridge_http_matlab('{server.url}/v2/models/mnist/infer', 'POST', "
        f"uint8('{body.strip()}'), {bearer}, '');\n"
        "printf('infer %d %s\\n', s, sprintf('%.9g ', jsondecode(t).outputs.data));\n"
        f"[s, t] = mlbridge_http_matlab(['{server.url}/v2/models/caf' char([195 169])], "
        f"'GET', [], {bearer}, '');\n"
        "printf('missing %d %s\\n', s, jsondecode(t).error);\n"
        + caught(f"mlbridge_http_matlab('http://127.0.0.1:9/v2', 'GET', [], {bearer}, '')")
    )
    lines = octave(script, server.env, tmp_path).splitlines()
    assert lines[0].startswith("models 200 ") and "mnist" in lines[0].split()[2].split(",")
    assert lines[1] == "options 0 1 0", "UseProxy off, raw payload kept, no conversion"
    status, *values = lines[2].split()[1:]
    assert status == "200"
    golden = json.loads((TESTDATA / "mnist-8000.reply.v2.json").read_text())["outputs"][0]["data"]
    np.testing.assert_allclose(np.array(values, dtype=float), golden, atol=1e-5)
    assert lines[3].startswith("missing 404 ") and "'café'" in lines[3]
    assert lines[4] == "mlbridge:connection"
    assert lines[5].startswith("mlbridge: GET http://127.0.0.1:9/v2 failed: Could not connect")


def channel_and_scalar_models(folder: Path) -> tuple[Path, np.ndarray]:
    """'channel': [N,28,28,1] -> [N,10] (Reshape, MatMul); 'double': FP64 [N] -> 2x, [N]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = (np.random.default_rng(1).normal(size=(784, 10)) * 0.01).astype(np.float32)
    graphs = {
        "channel": helper.make_graph(
            [
                helper.make_node("Reshape", ["input", "shape"], ["flat"]),
                helper.make_node("MatMul", ["flat", "W"], ["output"]),
            ],
            "channel",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 28, 28, 1])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
            [
                numpy_helper.from_array(np.array([-1, 784], np.int64), "shape"),
                numpy_helper.from_array(weights, "W"),
            ],
        ),
        "double": helper.make_graph(
            [helper.make_node("Mul", ["input", "two"], ["output"])],
            "double",
            [helper.make_tensor_value_info("input", TensorProto.DOUBLE, ["N"])],
            [helper.make_tensor_value_info("output", TensorProto.DOUBLE, ["N"])],
            [numpy_helper.from_array(np.array(2.0), "two")],
        ),
    }
    folder.mkdir()
    for name, graph in graphs.items():
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, folder / f"{name}.onnx")
    return folder, weights


def test_trailing_singleton_dimensions_and_scalar_examples(batch, images_file, tmp_path):
    """One 28x28 image for a [-1,28,28,1] model (MATLAB drops the trailing 1); scalars."""
    from support import start_server

    models, weights = channel_and_scalar_models(tmp_path / "models")
    running = start_server(tmp_path / "home", str(models))
    try:
        script = (
            READ_IMAGES.format(images=images_file)
            + SHOW
            + (
                "show('one', mlbridge_predict('channel', squeeze(x(1, :, :))));\n"
                "show('batch', mlbridge_predict('channel', x(1:3, :, :)));\n"
                "show('grad', mlbridge_gradient('channel', squeeze(x(1, :, :))));\n"
                "show('jac', mlbridge_jacobian('channel', squeeze(x(1, :, :))));\n"
                "show('scalar', mlbridge_predict('double', 3));\n"
                "show('scalars', mlbridge_predict('double', [1 2 3]));\n"
                "show('dscalar', mlbridge_gradient('double', 3));\n"
                "show('jscalar', mlbridge_jacobian('double', 3));\n"
            )
        )
        found = shown(octave(script, running.env, tmp_path))
    finally:
        running.stop()
    images = batch[0]
    expected = images.reshape(-1, 784) @ weights
    np.testing.assert_allclose(found["one"], expected[:1], atol=1e-5)
    np.testing.assert_allclose(found["batch"], expected[:3], atol=1e-5)
    assert found["grad"].shape == (28, 28)
    np.testing.assert_allclose(found["grad"], weights.sum(axis=1).reshape(28, 28), atol=1e-5)
    assert found["jac"].shape == (10, 28, 28)
    np.testing.assert_allclose(found["jac"], weights.T.reshape(10, 28, 28), atol=1e-6)
    assert found["scalar"].tolist() == [[6.0]] and found["scalars"].tolist() == [[2.0, 4.0, 6.0]]
    assert found["dscalar"].tolist() == [[2.0]] and found["jscalar"].tolist() == [[2.0]]


# Trust (issues #10, #12): the connection and token files' owner and mode, the URL, the
# server's proof that it knows the secret, https with a CA file, signed requests.

OTHER_USER = 65534  # nobody


def copied_home(folder: Path, server, token: str | None = None) -> Path:
    """A home folder (0700) whose server.json (0600) and token file (0600) name ``server``."""
    folder.mkdir(mode=0o700)
    token_file = private_file(folder / "token", (token or server.token) + "\n")
    document = {**server.info, "token_file": str(token_file)}
    private_file(folder / "server.json", json.dumps(document))
    return folder


def test_open_or_foreign_connection_files_are_refused_before_curl_runs(server, tmp_path):
    homes = {name: copied_home(tmp_path / name, server) for name in ("folder", "json", "token")}
    homes["folder"].chmod(0o777)
    (homes["json"] / "server.json").chmod(0o644)
    (homes["token"] / "token").chmod(0o640)
    homes["grouped"] = copied_home(tmp_path / "grouped", server)
    homes["grouped"].chmod(0o770)  # group-writable
    homes["linked-json"] = copied_home(tmp_path / "linked-json", server)
    (homes["linked-json"] / "server.json").rename(tmp_path / "elsewhere.json")
    (homes["linked-json"] / "server.json").symlink_to(tmp_path / "elsewhere.json")
    homes["linked-home"] = tmp_path / "linked-home"
    homes["linked-home"].symlink_to(copied_home(tmp_path / "real-home", server))
    explicit = tmp_path / "open-token"
    explicit.write_text(server.token + "\n")
    explicit.chmod(0o644)
    expected = {
        "folder": f"{homes['folder']} is writable by others (mode 777); "
        f"run: chmod go-w {homes['folder']}",
        "json": f"{homes['json']}/server.json is open to others (mode 644); "
        f"run: chmod 600 {homes['json']}/server.json",
        "token": f"{homes['token']}/token is open to others (mode 640); "
        f"run: chmod 600 {homes['token']}/token",
        "grouped": f"{homes['grouped']} is writable by others (mode 770); "
        f"run: chmod go-w {homes['grouped']}",
        "linked-json": f"{homes['linked-json']}/server.json is a symbolic link; "
        "refusing to trust it with secrets",
        "linked-home": f"{homes['linked-home']} is a symbolic link; refusing to trust it with "
        "secrets",
        "explicit": f"{explicit} is open to others (mode 644); run: chmod 600 {explicit}",
    }
    if os.geteuid() == 0:  # only root can give a file away
        homes["foreign"] = copied_home(tmp_path / "foreign", server)
        os.chown(homes["foreign"] / "token", OTHER_USER, OTHER_USER)
        expected["foreign"] = (
            f"{homes['foreign']}/token belongs to another user; refusing to trust it with secrets"
        )
    calls = {
        name: f"setenv('MLBRIDGE_HOME', '{home}'); mlbridge_models()"
        for name, home in homes.items()
    }
    calls["explicit"] = f"mlbridge_models(mlbridge_connect('{server.url}', '{explicit}'))"
    path, log = spy_curl(tmp_path)
    script = "".join(f"disp('{name}');\n" + caught(call) + "\n" for name, call in calls.items())
    lines = octave(script, {**server.env, **path}, tmp_path).splitlines()
    found = {lines[k]: lines[k + 1 : k + 3] for k in range(0, len(lines), 3)}
    assert found == {
        name: ["mlbridge:untrusted", f"mlbridge: {text}"] for name, text in expected.items()
    }
    assert not log.exists(), "refused before any request"


def test_private_connection_files_are_accepted(server, tmp_path):
    # The same copies, closed as the server writes them, work; a home others may only
    # read (0755) is fine too: what matters is that no one else can plant files in it.
    strict = copied_home(tmp_path / "strict", server)
    readable = copied_home(tmp_path / "readable", server)
    readable.chmod(0o755)
    script = "".join(
        f"setenv('MLBRIDGE_HOME', '{home}'); printf('%s\\n', strjoin(mlbridge_models(), ','));\n"
        for home in (strict, readable)
    )
    for line in octave(script, server.env, tmp_path).splitlines():
        assert "mnist" in line.split(",")


def test_file_status_through_ls_agrees_with_lstat(tmp_path):
    """MATLAB's way (`ls -ldn`) and Octave's (lstat) against Python's os.lstat."""
    paths = []
    for name, mode in (("d777", 0o777), ("d700", 0o700), ("d1777", 0o1777), ("d2750", 0o2750)):
        (tmp_path / name).mkdir()
        (tmp_path / name).chmod(mode)
        paths.append(tmp_path / name)
    for name, mode in (("f644", 0o644), ("f600", 0o600), ("f4755", 0o4755), ("f2745", 0o2745)):
        (tmp_path / name).write_text("x")
        (tmp_path / name).chmod(mode)
        paths.append(tmp_path / name)
    (tmp_path / "link").symlink_to(tmp_path / "f600")
    (tmp_path / "it's").write_text("a quote in the name")
    paths += [tmp_path / "link", tmp_path / "it's"]
    folder = private_copy(tmp_path, "mlbridge_file_status", "mlbridge_file_status_ls")
    show = "printf('%d %d %o\\n', s.link, s.uid, bitand(s.mode, 4095));\n"
    script = f"cd('{folder}');\n" + "".join(
        f"s = {function}({octave_text(str(p))}); {show}"
        for p in paths
        for function in ("mlbridge_file_status_ls", "mlbridge_file_status")
    )
    lines = octave(script, {**os.environ}, tmp_path).splitlines()
    for k, path in enumerate(paths):
        info = os.lstat(path)
        expected = f"{int(path.is_symlink())} {info.st_uid} {info.st_mode & 0o7777:o}"
        assert lines[2 * k] == lines[2 * k + 1] == expected, path


def test_url_check_allows_https_anywhere_and_http_on_loopback_only(tmp_path):
    folder = private_copy(tmp_path, "mlbridge_text", "mlbridge_check_url")
    accepted = {
        "http://127.0.0.1:8123/": "http://127.0.0.1:8123",
        "http://127.255.0.1": "http://127.255.0.1",
        "http://[::1]:80/base/": "http://[::1]:80/base",
        "https://example.org:8443": "https://example.org:8443",
        "https://10.0.0.1/mlbridge": "https://10.0.0.1/mlbridge",
        "https://[2001:db8::1]:443": "https://[2001:db8::1]:443",
    }
    remote = ["http://example.org:8123", "http://10.0.0.1", "http://127.0.0.256", "http://[::2]"]
    malformed = [
        "ftp://127.0.0.1/",
        "http://user@127.0.0.1:8123",
        "http://127.0.0.1:8123/a#b",
        "http://127.0.0.1:8123/a?b",
        "https://example.org/caf\u00e9",
        "http://127.0.0.1:8123/\x7f",
    ]
    script = f"cd('{folder}');\n" + "\n".join(
        caught(f"disp(mlbridge_check_url('{url}'))") for url in [*accepted, *remote, *malformed]
    )
    out = octave(script, {**os.environ}, tmp_path)
    lines = out.splitlines()
    assert lines[: 2 * len(accepted)] == [
        line for url in accepted.values() for line in (url, "NO ERROR")
    ]
    refusals = lines[2 * len(accepted) :]
    for k, url in enumerate(remote):
        assert refusals[2 * k : 2 * k + 2] == [
            "mlbridge:usage",
            f"mlbridge: {url} is not on this machine; use https for a remote server "
            "(http only on 127.0.0.1, localhost or [::1])",
        ]
    rest = refusals[2 * len(remote) :]
    assert rest[::2] == ["mlbridge:usage"] * len(malformed), out
    assert all("must be an http(s) URL" in message for message in rest[1::2])


def test_connect_options_are_checked(server, tmp_path):
    tok = server.token_file
    calls = {
        "odd": "mlbridge_connect('Sign')",
        "unknown": f"mlbridge_connect('{server.url}', '{tok}', 'Verify', false)",
        "sign": "mlbridge_connect('Sign', 'yes')",
        "http-ca": f"mlbridge_connect('{server.url}', '{tok}', 'CAFile', '{tok}')",
        "one": f"mlbridge_connect('{server.url}')",
    }
    script = "".join(f"disp('{name}');\n" + caught(call) + "\n" for name, call in calls.items())
    lines = octave(script, server.env, tmp_path).splitlines()
    found = {lines[k]: lines[k + 1 : k + 3] for k in range(0, len(lines), 3)}
    assert {name: identifier for name, (identifier, _) in found.items()} == dict.fromkeys(
        calls, "mlbridge:usage"
    )
    assert "name-value pairs" in found["odd"][1]
    assert "unknown option" in found["unknown"][1]
    assert "'Sign' must be true or false" in found["sign"][1]
    assert f"a CA file verifies an https server; {server.url} is http" in found["http-ca"][1]
    script = "c = mlbridge_connect('Sign', true); printf('%d|%s|%s\\n', c.sign, c.ca_file, c.url);"
    assert octave(script, server.env, tmp_path).strip() == f"1||{server.url}"


def test_hmac_sha256_matches_python(tmp_path):
    """The HMAC built on hash('sha256'), against Python's hmac: keys up to and past 64 bytes."""
    rng = np.random.default_rng(12)
    keys = [rng.bytes(n) for n in (0, 1, 31, 63, 64, 65, 100, 200)] + [b"s3cret"]
    messages = [
        b"",
        b"mlbridge server proof v1\n" + b"00" * 32,
        bytes(range(256)) * 3,
        rng.bytes(1000),
        "caf\u00e9 \u2713".encode(),
    ]
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("".join(f"{k.hex()}\n{m.hex()}\n" for k in keys for m in messages))
    folder = private_copy(tmp_path, "mlbridge_sha256", "mlbridge_hmac_sha256")
    script = f"cd('{folder}');\n" + (
        "bytes = @(h) uint8(sscanf(h, '%2x')).';\n"
        f"fid = fopen('{vectors}');\n"
        "while true\n"
        " k = fgetl(fid); if ~ischar(k), break; end\n"
        " m = fgetl(fid);\n"
        " printf('%s %s\\n', mlbridge_hmac_sha256(bytes(k), bytes(m)), ...\n"
        "        mlbridge_sha256(bytes(m)));\n"
        "end\n"
        "fclose(fid);\n"
        # Text is taken as its UTF-8 bytes, as the secret and the signed messages are.
        "text = ['caf' char([195 169]) ' ' char([226 156 147])];\n"
        "printf('%s\\n', mlbridge_hmac_sha256('s3cret', text));\n"
    )
    lines = octave(script, {**os.environ}, tmp_path).splitlines()
    expected = [
        f"{hmac.new(k, m, hashlib.sha256).hexdigest()} {hashlib.sha256(m).hexdigest()}"
        for k in keys
        for m in messages
    ]
    assert lines[:-1] == expected
    assert lines[-1] == hmac.new(b"s3cret", messages[-1], hashlib.sha256).hexdigest()


@contextmanager
def fake_server(answer: str) -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A server that cannot prove it knows the secret; yields its URL and what it received.

    ``answer``: "wrong" (a well-formed proof under another secret), "missing" (404) or
    "garbage" (200, not JSON). Any other route answers 200 with a model list, so that a
    client that sent its secret anyway would succeed.
    """
    received: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append((self.path, self.headers.get("Authorization")))
            status, body = 200, b'{"models": [{"name": "stolen"}]}'
            if self.path.startswith("/v2/health/proof"):
                nonce = self.path.rpartition("=")[2].encode()
                label = b"mlbridge server proof v1\n"
                proof = hmac.new(b"a guess", label + nonce, hashlib.sha256).hexdigest()
                status, body = {
                    "wrong": (200, json.dumps({"proof": proof}).encode()),
                    "missing": (404, b'{"error": "not found"}'),
                    "garbage": (200, b"<html>hello</html>"),
                }[answer]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", received
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("answer", ["wrong", "missing", "garbage"])
def test_a_server_that_cannot_prove_it_knows_the_secret_never_receives_it(server, answer, tmp_path):
    with fake_server(answer) as (url, received):
        home = copied_home(tmp_path / "home", server)
        document = {**json.loads((home / "server.json").read_text()), "url": url}
        private_file(home / "server.json", json.dumps(document))
        tok = home / "token"
        calls = [
            "mlbridge_models()",  # found through server.json
            f"mlbridge_models(mlbridge_connect('{url}', '{tok}'))",
            f"mlbridge_predict('mnist', zeros(28), mlbridge_connect('{url}', '{tok}', 'Sign', 1))",
        ]
        env = {**server.env, "MLBRIDGE_HOME": str(home)}
        out = octave("\n".join(caught(call) for call in calls), env, tmp_path)
    assert out.splitlines() == ["mlbridge:unproven", f"mlbridge: {unproven(url)}"] * len(calls)
    assert [authorization for _, authorization in received] == [None] * len(calls)
    for path, _ in received:
        assert re.fullmatch(r"/v2/health/proof\?nonce=[0-9a-f]{64}", path), path
    assert len({path for path, _ in received}) == len(calls), "a fresh nonce each time"


def test_the_proof_is_asked_once_per_server_and_secret(server, tmp_path):
    path, log = spy_curl(tmp_path)
    wrong = private_file(tmp_path / "wrong-token", "not-the-secret\n")
    script = (
        "mlbridge_models(); mlbridge_models('mnist');\n"
        "mlbridge_predict('box_volume', [2 4 8]);\n"
        "mlbridge_gradient('box_volume', [2 4 8], mlbridge_connect('Sign', true));\n"
        + caught(f"mlbridge_models(mlbridge_connect('{server.url}', '{wrong}'))")
    )
    out = octave(script, {**server.env, **path}, tmp_path).splitlines()
    assert out == ["mlbridge:unproven", f"mlbridge: {unproven(server.url)}"]
    configs = log.read_text().split("----\n")[:-1]
    urls = [re.search(r'^url = "(.*)"$', config, re.M).group(1) for config in configs]
    proofs = [k for k, url in enumerate(urls) if "/v2/health/proof?nonce=" in url]
    assert proofs == [0, len(urls) - 1], "one for the secret, one for the wrong secret"
    assert all("Authorization" not in configs[k] for k in proofs)
    assert len(urls) >= 6


def recorded_curl(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A curl on PATH that keeps each config file and body it is given, then runs curl."""
    spy, records = tmp_path / "bin", tmp_path / "records"
    spy.mkdir()
    records.mkdir()
    (spy / "curl").write_text(
        "#!/bin/sh\n"
        'id=$(basename "$(dirname "$3")")\n'
        f"cp \"$3\" '{records}'/$id.cfg\n"
        'body=$(sed -n \'s/^data-binary = "@\\(.*\\)"$/\\1/p\' "$3")\n'
        f'if [ -n "$body" ]; then cp "$body" \'{records}\'/$id.body; fi\n'
        f"exec '{shutil.which('curl')}' \"$@\"\n"
    )
    (spy / "curl").chmod(0o755)
    return {"PATH": f"{spy}{os.pathsep}{os.environ['PATH']}"}, records


def config_values(config: str) -> dict[str, list[str]]:
    """A curl config's ``name = "value"`` lines: the values of each name, unescaped."""
    values: dict[str, list[str]] = {}
    for line in config.splitlines():
        name, _, quoted = line.partition(" = ")
        text = re.sub(r"\\(.)", r"\1", quoted[1:-1]) if quoted else ""
        values.setdefault(name, []).append(text)
    return values


def check_signature(request: dict[str, list[str]], body: bytes, secret: str) -> str:
    """Recompute a signed request's signature (auth spec section 4); return its nonce."""
    (authorization,) = [h for h in request["header"] if h.startswith("Authorization: ")]
    scheme, _, rest = authorization.removeprefix("Authorization: ").partition(" ")
    assert scheme == "MLBridge-HMAC-SHA256"
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    assert sorted(fields) == ["body", "nonce", "sig", "ts"]
    assert abs(int(fields["ts"]) - time.time()) < 60
    assert re.fullmatch(r"[0-9a-f]{32,128}", fields["nonce"])
    assert fields["body"] == hashlib.sha256(body).hexdigest()
    parts = urlsplit(request["url"][0])
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    message = "\n".join(
        [request["request"][0], target, fields["ts"], fields["nonce"], fields["body"]]
    )
    expected = hmac.new(
        secret.encode(), b"mlbridge request v1\n" + message.encode(), hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(fields["sig"], expected)
    return fields["nonce"]


def test_signed_requests_keep_the_secret_off_the_wire(server, tmp_path):
    path, records = recorded_curl(tmp_path)
    script = SHOW + (
        "c = mlbridge_connect('Sign', true);\n"
        "printf('%s\\n', strjoin(mlbridge_models(c), ','));\n"
        "show('gradient', mlbridge_gradient('box_volume', [2 4 8], 0.5, c));\n"
        "show('jacobian', mlbridge_jacobian('box_volume', [2 4 8], c));\n"
    )
    out = octave(script, {**server.env, **path}, tmp_path)
    models, *rest = out.splitlines()
    assert "mnist" in models.split(",")
    found = shown("\n".join(rest))
    np.testing.assert_array_equal(found["gradient"], [[16, 8, 4]])
    np.testing.assert_array_equal(found["jacobian"], [[32, 16, 8]])
    nonces, methods = [], []
    for config in sorted(records.glob("*.cfg")):
        text = config.read_text()
        assert server.token not in text and "Bearer" not in text
        request = config_values(text)
        if "/v2/health/proof?" in request["url"][0]:
            assert not any(h.startswith("Authorization") for h in request["header"])
            continue
        body = config.with_suffix(".body")
        nonces.append(
            check_signature(request, body.read_bytes() if body.exists() else b"", server.token)
        )
        methods.append(request["request"][0])
    assert {"GET", "POST"} <= set(methods), "signed with and without a body"
    assert len(set(nonces)) == len(nonces) >= 4, "a fresh nonce per request"


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost, 127.0.0.1 and ::1, and its key, made by openssl."""
    folder.mkdir()
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
        ],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    return cert, key


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """A server on https with a self-signed certificate (server.json names it as ca_file)."""
    from support import start_server

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_certificate(folder / "cert")
    running = start_server(folder / "home", "--tls-cert", str(cert), "--tls-key", str(key))
    yield running
    running.stop()


def test_https_with_the_ca_file_from_server_json_or_given(tls_server, tmp_path):
    info = tls_server.info
    assert tls_server.url.startswith("https://") and info["ca_file"]
    url, tok, ca = tls_server.url, tls_server.token_file, info["ca_file"]
    script = SHOW + (
        "c = mlbridge_connect(); printf('%s\\n', c.ca_file);\n"
        "printf('%s\\n', strjoin(mlbridge_models(), ','));\n"
        f"given = mlbridge_connect('{url}', '{tok}', 'CAFile', '{ca}');\n"
        "show('given', mlbridge_gradient('box_volume', [2 4 8], given));\n"
        "signed = mlbridge_connect('Sign', true);\n"
        "show('signed', mlbridge_gradient('box_volume', [2 4 8], signed));\n"
    )
    lines = octave(script, tls_server.env, tmp_path).splitlines()
    assert lines[0] == ca
    assert "mnist" in lines[1].split(",")
    found = shown("\n".join(lines[2:]))
    np.testing.assert_array_equal(found["given"], [[32, 16, 8]])
    np.testing.assert_array_equal(found["signed"], [[32, 16, 8]])


@pytest.mark.parametrize("ca", ["none", "other"])
def test_https_refuses_a_certificate_it_cannot_verify(tls_server, ca, tmp_path):
    url, tok = tls_server.url, tls_server.token_file
    option = ""
    if ca == "other":
        other, _ = self_signed_certificate(tmp_path / "other")
        option = f", 'CAFile', '{other}'"
    call = f"mlbridge_models(mlbridge_connect('{url}', '{tok}'{option}))"
    identifier, message = octave(caught(call), tls_server.env, tmp_path).splitlines()[:2]
    assert identifier == "mlbridge:connection"
    assert message.startswith(f"mlbridge: GET {url}/v2/health/proof?nonce=")
    assert "(curl exit 60)" in message and "'CAFile' option" in message


def test_matlab_branch_verifies_https_with_the_ca_file(tls_server, tmp_path):
    """mlbridge_http_matlab passes the CA file as CertificateFilename, and nothing without one."""
    folder = private_copy(tmp_path, "mlbridge_http_matlab")
    url, ca = tls_server.url, tls_server.info["ca_file"]
    bearer = f"'Bearer {tls_server.token}'"
    script = f"addpath('{MATLAB_STANDIN}'); cd('{folder}');\n" + (
        f"[s, t] = mlbridge_http_matlab('{url}/v2/models', 'GET', [], {bearer}, '{ca}');\n"
        "o = getappdata(0, 'MLBRIDGE_STANDIN_OPTIONS');\n"
        "printf('models %d %s\\n', s, strjoin({jsondecode(t).models.name}, ','));\n"
        "printf('%s\\n', o.CertificateFilename);\n"
        + caught(f"mlbridge_http_matlab('{url}/v2/models', 'GET', [], {bearer}, '')")
        + "\no = getappdata(0, 'MLBRIDGE_STANDIN_OPTIONS'); printf('%s\\n', o.CertificateFilename);"
    )
    lines = octave(script, tls_server.env, tmp_path).splitlines()
    assert lines[0].startswith("models 200 ") and "mnist" in lines[0].split()[2].split(",")
    assert lines[1] == ca
    assert lines[2] == "mlbridge:connection"
    assert lines[4] == "default", "no CertificateFilename passed: MATLAB's own store"
