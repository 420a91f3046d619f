"""Signed requests (docs/security.md): the secret never crosses the wire; stale, replayed or
altered requests are 401, on the V2 routes and the CAS routes alike."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from starlette.testclient import TestClient
from support.fakes import SECRET

from mlbridge.auth import ReplayGuard, request_signature, sign_request
from mlbridge.codecs.mathematica import parse_list

V2_INFER = "/v2/models/echo/infer"
V2_BODY = json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
).encode()
CAS_BODY = b"{{1., 2., 3.}}"


def signed(method: str, target: str, body: bytes = b"", **kw) -> dict[str, str]:
    return {"Authorization": sign_request(SECRET, method, target, body, **kw)}


def test_signed_requests_are_answered_on_every_kind_of_route(anon: TestClient) -> None:
    assert anon.get("/v2", headers=signed("GET", "/v2")).json()["name"] == "mlbridge"
    reply = anon.post(V2_INFER, content=V2_BODY, headers=signed("POST", V2_INFER, V2_BODY))
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"][0]["data"] == [1.0, 2.0, 3.0]
    cas = anon.post("/echo", content=CAS_BODY, headers=signed("POST", "/echo", CAS_BODY))
    assert cas.status_code == 200, cas.text
    np.testing.assert_array_equal(parse_list(cas.content), [[1.0, 2.0, 3.0]])


def test_the_query_string_is_part_of_what_is_signed(anon: TestClient) -> None:
    target = "/v2/models/echo"
    good = anon.get(target + "?x=1", headers=signed("GET", target + "?x=1"))
    assert good.status_code == 200, good.text
    moved = anon.get(target + "?x=2", headers=signed("GET", target + "?x=1"))
    assert moved.status_code == 401 and "wrong signature" in moved.json()["error"]


@pytest.mark.parametrize("route", [V2_INFER, "/echo"])
def test_a_replayed_request_is_refused(anon: TestClient, route: str) -> None:
    body = V2_BODY if route == V2_INFER else CAS_BODY
    headers = signed("POST", route, body)
    assert anon.post(route, content=body, headers=headers).status_code == 200
    again = anon.post(route, content=body, headers=headers)
    assert again.status_code == 401
    assert b"seen before (a replay)" in again.content


@pytest.mark.parametrize("route", [V2_INFER, "/echo"])
@pytest.mark.parametrize("age_s", [-3600, -61, 61])
def test_an_old_or_future_timestamp_is_refused(anon: TestClient, route: str, age_s: int) -> None:
    body = V2_BODY if route == V2_INFER else CAS_BODY
    headers = signed("POST", route, body, now=time.time() + age_s)
    reply = anon.post(route, content=body, headers=headers)
    assert reply.status_code == 401
    assert b"the server's clock" in reply.content


@pytest.mark.parametrize("route", [V2_INFER, "/echo"])
def test_a_body_altered_after_signing_is_refused(anon: TestClient, route: str) -> None:
    body = V2_BODY if route == V2_INFER else CAS_BODY
    headers = signed("POST", route, body)
    altered = body.replace(b"2", b"7")
    reply = anon.post(route, content=altered, headers=headers)
    assert reply.status_code == 401
    assert b"does not match its signature" in reply.content


def test_wrong_key_method_or_path_is_refused(anon: TestClient) -> None:
    wrong_key = {"Authorization": sign_request("not-the-secret", "GET", "/v2")}
    assert anon.get("/v2", headers=wrong_key).status_code == 401
    assert anon.get("/v2/models", headers=signed("GET", "/v2")).status_code == 401
    reply = anon.post(V2_INFER, content=V2_BODY, headers=signed("GET", V2_INFER, V2_BODY))
    assert reply.status_code == 401 and "wrong signature" in reply.json()["error"]


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("MLBridge-HMAC-SHA256 ", "missing ts, nonce, body, sig"),
        ("MLBridge-HMAC-SHA256 ts=1, nonce=ab, body=00, sig=00", "nonce must be"),
        ("MLBridge-HMAC-SHA256 ts=soon, nonce=" + "a" * 32 + ", body=0, sig=0", "Unix time"),
        ("MLBridge-HMAC-SHA256 ts=1, nonce=" + "a" * 32 + ", body=0, sig=0", "64 lowercase"),
    ],
)
def test_malformed_signatures_say_what_is_wrong(anon: TestClient, header: str, says: str) -> None:
    reply = anon.get("/v2", headers={"Authorization": header})
    assert reply.status_code == 401 and says in reply.json()["error"], reply.text


def test_the_signature_covers_every_field() -> None:
    base = ("s3cret", "POST", "/mnist", "1700000000", "ab" * 16, "cd" * 32)
    reference = request_signature(*base)
    for index, value in enumerate(("other", "GET", "/mnist2", "1700000001", "ef" * 16, "01" * 32)):
        changed = list(base)
        changed[index] = value
        assert request_signature(*changed) != reference, f"field {index} is not signed"


def test_the_replay_guard_forgets_only_after_the_window_and_is_bounded() -> None:
    guard = ReplayGuard(window_s=60, capacity=3)
    assert guard.take("a", now=0) and not guard.take("a", now=100)
    assert guard.take("a", now=121)  # two windows later its timestamp would be refused anyway
    assert guard.take("b", now=121) and guard.take("c", now=121)
    assert not guard.take("d", now=121)  # full of fresh nonces: refuse rather than forget
