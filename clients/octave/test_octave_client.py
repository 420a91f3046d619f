"""The Octave/MATLAB client, run in a real GNU Octave against a real server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

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
    bad_token = tmp_path / "token-with-newline"
    bad_token.write_text(f'{server.token}\nurl = "http://10.0.0.1"\n')
    out = octave(caught(f"mlbridge_connect('{server.url}', '{bad_token}')"), env, tmp_path)
    assert out.startswith("mlbridge:notoken\n") and not log.exists()
    # A model name is percent-encoded: it cannot add a line, and names a model (not found).
    model = "['mnist' char(10) 'output = \"/tmp/stolen\"']"
    out = octave(caught(f"mlbridge_models({model})"), env, tmp_path)
    assert out.split(":")[0] == "mlbridge" and "(HTTP 404 from GET" in out
    configs = log.read_text()
    assert "/v2/models/mnist%0Aoutput%20%3D%20%22%2Ftmp%2Fstolen%22" in configs
    assert [line.split(" = ")[0] for line in configs.split("----")[0].splitlines()] == [
        "url",
        "request",
        "header",
        "header",
        "output",
        "write-out",
        "connect-timeout",
        "noproxy",
        "globoff",
    ]
    assert not (tmp_path / "stolen").exists()


def test_connection_failure_is_mlbridge_connection_in_octave(server, tmp_path):
    call = f"mlbridge_models(mlbridge_connect('http://127.0.0.1:9', '{server.token_file}'))"
    identifier, message = octave(caught(call), server.env, tmp_path).splitlines()[:2]
    assert identifier == "mlbridge:connection"
    assert message.startswith("mlbridge: GET http://127.0.0.1:9/v2/models failed (curl exit 7)")


def test_matlab_branch_through_a_standin_for_matlab_net_http(
    server, images_file, v2_infer, batch, tmp_path
):
    """mlbridge_http_matlab with stand-in classes that do the HTTP through curl."""
    folder = private_copy(tmp_path, "mlbridge_http_matlab")
    body = (TESTDATA / "mnist-8000.request.v2.json").read_text().replace("'", "''")
    script = f"addpath('{MATLAB_STANDIN}'); cd('{folder}');\n" + (
        f"[s, t] = mlbridge_http_matlab('{server.url}/v2/models', '{server.token}', 'GET', '');\n"
        "printf('models %d %s\\n', s, strjoin({jsondecode(t).models.name}, ','));\n"
        "o = getappdata(0, 'MLBRIDGE_STANDIN_OPTIONS');\n"
        "printf('options %d %d %d\\n', o.UseProxy, o.SavePayload, o.ConvertResponse);\n"
        f"[s, t] = mlbridge_http_matlab('{server.url}/v2/models/mnist/infer', '{server.token}', "
        f"'POST', '{body.strip()}');\n"
        "printf('infer %d %s\\n', s, sprintf('%.9g ', jsondecode(t).outputs.data));\n"
        f"[s, t] = mlbridge_http_matlab(['{server.url}/v2/models/caf' char([195 169])], "
        f"'{server.token}', 'GET', '');\n"
        "printf('missing %d %s\\n', s, jsondecode(t).error);\n"
        + caught(f"mlbridge_http_matlab('http://127.0.0.1:9/v2', '{server.token}', 'GET', '')")
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
