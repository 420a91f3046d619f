"""Regenerate the golden payloads from a running server (after retraining the demo models):

    MLBRIDGE_HOME=... .venv/bin/python tests/testdata/make_golden.py

Every wire format carries MNIST image 8000 (float32 [28,28], pixels / 255) to
model ``mnist``; see README.md beside this file for each file's headers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the support module

from support import MNIST_DIR, v2_json

from mlbridge.client import Client
from mlbridge.codecs import v2
from mlbridge.codecs.mathematica import format_list
from mlbridge.codecs.wxf import loads as wxf_loads
from mlbridge.training.data import load_mnist_idx

HERE = Path(__file__).resolve().parent
V2_BINARY_HEADER = HERE / "mnist-8000.request.v2bin.header-length"


def image() -> np.ndarray:
    return (load_mnist_idx(MNIST_DIR)[0][8000] / 255.0).astype(np.float32)


def requests(picture: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Request body and headers of each format, by file stem."""
    v2_body, v2_headers = v2.encode_request({"input": picture[np.newaxis]})
    return {
        "text": (format_list(picture).encode(), {"Content-Type": "text/x-mathematica"}),
        "wxf": (
            (HERE / "mnist-8000.request.wxf").read_bytes(),
            {"Content-Type": "application/vnd.wolfram.wxf"},
        ),
        "v2.json": (
            json.dumps(v2_json(picture[np.newaxis])).encode(),
            {"Content-Type": "application/json"},
        ),
        "v2bin": (v2_body, v2_headers),
    }


PATHS = {
    "text": "/mnist",
    "wxf": "/mnist",
    "v2.json": "/v2/models/mnist/infer",
    "v2bin": "/v2/models/mnist/infer",
}


def main() -> None:
    client = Client()
    picture = image()
    assert np.array_equal(wxf_loads((HERE / "mnist-8000.request.wxf").read_bytes()), picture)
    token = {"Authorization": f"Bearer {client._token}"}
    for stem, (body, headers) in requests(picture).items():
        reply = httpx.post(client.url + PATHS[stem], content=body, headers={**headers, **token})
        reply.raise_for_status()
        if stem != "wxf":
            (HERE / f"mnist-8000.request.{stem}").write_bytes(body)
        (HERE / f"mnist-8000.reply.{stem}").write_bytes(reply.content)
        if stem == "v2bin":
            V2_BINARY_HEADER.write_text(headers["Inference-Header-Content-Length"] + "\n")
            (HERE / "mnist-8000.reply.v2bin.header-length").write_text(
                reply.headers["inference-header-content-length"] + "\n"
            )


if __name__ == "__main__":
    main()
