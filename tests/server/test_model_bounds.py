"""Decoding is bounded by what the model can take, before anything is allocated: a model
whose axes are all fixed refuses a bigger tensor in the decoder, in the caller's format."""

from __future__ import annotations

import numpy as np
from starlette.testclient import TestClient
from support.fakes import AUTH, EchoRuntime, fake_models, in_process_app, served

from mlbridge.codecs.mathematica import parse_list
from mlbridge.codecs.wxf import WxfCodec
from mlbridge.protocol import ModelSignature, TensorSpec
from mlbridge.registry import ModelRegistry


class FixedEchoRuntime(EchoRuntime):
    """The echo model with an input of exactly 2 x 3 numbers."""

    fake_signature = ModelSignature(
        inputs=(TensorSpec("input", "FP32", (2, 3)),),
        outputs=(TensorSpec("output", "FP32", (2, 3)),),
    )


def client() -> TestClient:
    fixed = served("fixed", FixedEchoRuntime(), gradient_unavailable="a test model")
    return TestClient(in_process_app(ModelRegistry([*fake_models(), fixed])), headers=AUTH)


def test_a_fixed_shape_model_refuses_more_numbers_in_the_decoder() -> None:
    with client() as http:
        fits = http.post("/fixed", content=b"{{1, 2, 3}, {4, 5, 6}}")
        assert fits.status_code == 200, fits.text
        np.testing.assert_array_equal(parse_list(fits.content), [[1, 2, 3], [4, 5, 6]])
        too_many = http.post("/fixed", content=b"{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}")
        assert too_many.status_code == 400
        assert b"holds 9 numbers; at most 6 are accepted here" in too_many.content
        assert too_many.content.startswith(b"Failure[")
        header = WxfCodec().encode_tensor(np.zeros((1000, 1000), np.float32))
        wxf = http.post("/fixed", content=header, headers={"Content-Type": WxfCodec.media_type})
        assert wxf.status_code == 400 and b"at most 6 are accepted" in wxf.content


def test_a_batch_axis_bounds_only_whole_rows_and_unknown_models_are_not_decoded() -> None:
    with client() as http:
        rows = http.post("/echo", content=b"{" + b", ".join([b"{1, 2, 3}"] * 500) + b"}")
        assert rows.status_code == 200 and parse_list(rows.content).shape == (500, 3)
        unknown = http.post("/nothere", content=b"{1, 2, 3}")
        assert unknown.status_code == 404 and b"nothere" in unknown.content
