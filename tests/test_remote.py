"""Remote use (docs/deploy.md): https with a certificate made here, a long-lived secret from
``mlbridge token``, signed requests; all against real server processes on this machine."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import TEST_MODELS, RunningServer, start_server

from mlbridge.client import Client
from mlbridge.errors import ConfigError

pytestmark = pytest.mark.slow
x509 = pytest.importorskip("cryptography.x509", reason="cryptography makes the test certificate")
LINEAR = str(TEST_MODELS / "linear.onnx")
X = np.random.default_rng(0).random((28, 28), dtype=np.float32)  # one linear.onnx example
TEXT = ("{" + ",".join("{" + ",".join(f"{v:.9g}" for v in row) + "}" for row in X) + "}").encode()


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, 127.0.0.1 and ::1, and its key (0600)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert = folder / "cert.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file = folder / "key.pem"
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key_file


def mlbridge(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLBRIDGE_HOME": str(home)}
    command = [sys.executable, "-m", "mlbridge", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, tls) -> RunningServer:
    """A server open to the network (0.0.0.0) over https, serving a long-lived secret."""
    cert, key = tls
    home = tmp_path_factory.mktemp("remote") / "home"
    home.mkdir(mode=0o700)
    made = mlbridge("token", home=home)
    assert made.returncode == 0 and "wrote a new secret" in made.stdout, made.stderr
    secret_file = home / "secret"
    args = ["--host", "0.0.0.0", "--tls-cert", str(cert), "--tls-key", str(key)]
    args += ["--secret-file", str(secret_file), "--server-names", "localhost", LINEAR]
    running = start_server(home, *args)
    yield running
    running.stop()


def test_token_makes_a_private_secret_once_and_rotates_on_request(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert mlbridge("token", home=home).returncode == 0
    secret_file = home / "secret"
    first = secret_file.read_text()
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600" and len(first.strip()) >= 43
    kept = mlbridge("token", home=home)
    assert "already holds a secret" in kept.stdout and secret_file.read_text() == first
    rotated = mlbridge("token", "--rotate", home=home)
    assert rotated.returncode == 0 and secret_file.read_text() != first
    assert first.strip() not in rotated.stdout + rotated.stderr  # never printed


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--host", "0.0.0.0"], "give --tls-cert CERT.pem and --tls-key KEY.pem"),
        (["--tls-cert", "cert.pem"], "needs both --tls-cert CERT.pem and --tls-key KEY.pem"),
        (["--tls-cert", "nothere.pem", "--tls-key", "key.pem"], "nothere.pem: no such file"),
        (["--secret-file", "missing"], "make one with 'mlbridge token'"),
    ],
)
def test_unsafe_or_incomplete_remote_settings_are_refused(tmp_path: Path, args, says) -> None:
    done = mlbridge("serve", *args, LINEAR, home=tmp_path / "home")
    assert done.returncode == 1 and says in done.stderr and "Traceback" not in done.stderr


def test_a_key_others_can_read_is_refused(tmp_path: Path, tls) -> None:
    cert, key = tls
    shared = tmp_path / "shared-key.pem"
    shared.write_bytes(key.read_bytes())
    shared.chmod(0o644)
    done = mlbridge("serve", "--tls-cert", str(cert), "--tls-key", str(shared), home=tmp_path)
    assert done.returncode == 1 and "open to others (mode 644)" in done.stderr


def test_https_answers_the_python_client_and_curl_with_the_ca_file(remote, tls) -> None:
    cert, _ = tls
    assert remote.url.startswith("https://localhost:")
    assert remote.info["ca_file"] == str(cert)
    with Client(remote.url, token_file=remote.home / "secret", ca_file=cert) as client:
        assert client.predict("linear", X).shape == (10,)
    with Client(home=remote.home) as found:  # server.json names the URL, token and CA file
        assert found.models() == ["linear", "linear.vjp"]
    port = remote.url.rsplit(":", 1)[1]
    for host in ("localhost", "127.0.0.1"):
        curl = subprocess.run(
            ["curl", "-sS", "--cacert", str(cert), "-H", "@-", f"https://{host}:{port}/v2"],
            input=f"Authorization: Bearer {remote.token}\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert curl.returncode == 0 and '"name":"mlbridge"' in curl.stdout, curl.stderr


def test_without_the_ca_file_the_certificate_is_not_trusted(remote) -> None:
    client = Client(remote.url, token_file=remote.home / "secret")
    with pytest.raises(ConfigError, match="CERTIFICATE_VERIFY_FAILED"):
        client.models()


def test_plain_http_to_the_tls_port_gets_no_answer(remote) -> None:
    port = int(remote.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        plain.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        reply = plain.recv(4096)
    assert not reply.startswith(b"HTTP/1.1 200")


def https_post(remote: RunningServer, cert: Path, path: str, body: bytes, headers: dict) -> tuple:
    import http.client

    context = ssl.create_default_context(cafile=str(cert))
    port = int(remote.url.rsplit(":", 1)[1])
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_secret_on_the_first_line_is_refused_remotely(remote, tls) -> None:
    cert, _ = tls
    body = remote.token.encode() + b"\n" + TEXT
    status, reply = https_post(remote, cert, "/linear", body, {})
    assert status == 401 and b"first line is not accepted" in reply
    status, reply = https_post(remote, cert, "/linear", body.split(b"\n", 1)[1], remote.auth)
    assert status == 200, reply


def test_signed_requests_over_https_and_their_replay(remote, tls) -> None:
    from mlbridge.auth import sign_request

    cert, _ = tls
    with Client(remote.url, token_file=remote.home / "secret", ca_file=cert, sign=True) as client:
        assert client.gradient("linear", X).shape == (28, 28)
    body = TEXT
    headers = {"Authorization": sign_request(remote.token, "POST", "/linear", body)}
    assert https_post(remote, cert, "/linear", body, headers)[0] == 200
    status, reply = https_post(remote, cert, "/linear", body, headers)
    assert status == 401 and b"a replay" in reply
    headers = {"Authorization": sign_request(remote.token, "POST", "/linear", body)}
    status, reply = https_post(remote, cert, "/linear", body.replace(b"{", b"{-", 1), headers)
    assert status == 401 and b"does not match its signature" in reply


def test_a_remote_http_url_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ConfigError, match="not https"):
        Client("http://192.0.2.1:8123", token="never-sent")


def test_status_finds_and_verifies_the_https_server(remote) -> None:
    done = mlbridge("status", home=remote.home)
    assert done.returncode == 0, done.stderr
    assert f"running at {remote.url}" in done.stdout
