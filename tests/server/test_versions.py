"""Versioned V2 routes: each model serves version 1; any other is a 404 that names it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import v2_json

from mlbridge.codecs import v2

IMAGE = np.zeros((1, 28, 28), np.float32)


@pytest.mark.parametrize("suffix", ["", "/ready", "/infer"])
def test_an_unknown_version_is_a_404_naming_the_served_one(http, suffix: str) -> None:
    path = f"/v2/models/mnist/versions/7{suffix}"
    reply = http.post(path, json=v2_json(IMAGE)) if suffix == "/infer" else http.get(path)
    assert reply.status_code == 404
    assert reply.json() == {
        "error": "model 'mnist' has version 1 only; got version '7'",
        "code": "ModelNotFound",
    }


def test_version_1_works_on_every_versioned_route(http) -> None:
    meta = http.get("/v2/models/mnist/versions/1")
    assert meta.status_code == 200 and meta.json()["versions"] == ["1"]
    assert http.get("/v2/models/mnist/versions/1/ready").json() == {"name": "mnist", "ready": True}
    reply = http.post("/v2/models/mnist/versions/1/infer", json=v2_json(IMAGE))
    assert reply.status_code == 200 and reply.json()["model_version"] == "1"


def test_the_model_list_names_each_version(http) -> None:
    assert {m["version"] for m in http.get("/v2/models").json()["models"]} == {"1"}


def test_json_infer_responses_carry_the_model_version(http) -> None:
    reply = http.post("/v2/models/mnist/infer", json=v2_json(IMAGE))
    assert reply.status_code == 200
    assert reply.json()["model_name"] == "mnist" and reply.json()["model_version"] == "1"


def test_binary_infer_responses_carry_the_model_version(http) -> None:
    body, headers = v2.encode_request({"input": IMAGE})
    reply = http.post("/v2/models/mnist/infer", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    length = int(reply.headers[v2.HEADER_LENGTH])
    assert json.loads(reply.content[:length])["model_version"] == "1"
    decoded = v2.decode_response(reply.content, str(length))
    assert decoded.model_version == "1" and decoded.outputs["output"].shape == (1, 10)
