"""After big requests the server gives their memory back (mlbridge/server/memory.py).

Without the fixed mmap threshold, glibc kept 60-110 MB of a 10,000-image request's buffers
in the heap for good (docs/performance.md); a real server on the demo models must come back
to within :data:`KEPT_MB` of where it was once warmed up.
"""

from __future__ import annotations

import os

import httpx
import numpy as np
import psutil
import pytest
from support import RunningServer, start_server

from mlbridge.codecs.mathematica import format_list
from mlbridge.codecs.v2 import encode_request
from mlbridge.codecs.wxf import WxfCodec

pytestmark = pytest.mark.slow
KEPT_MB = 30
IMAGES = np.random.default_rng(0).random((10_000, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    env = {"MLBRIDGE_MAX_BODY_MB": "256", "MLBRIDGE_BODY_BUDGET_MB": "512"}
    running = start_server(tmp_path_factory.mktemp("big") / "home", env={**os.environ, **env})
    yield running
    running.stop()


def rss_mb(server: RunningServer) -> float:
    return psutil.Process(server.process.pid).memory_info().rss / 1e6


def test_big_requests_leave_no_lasting_memory(big: RunningServer) -> None:
    v2_body, v2_headers = encode_request({"input": IMAGES})
    bodies = [
        ("/v2/models/mnist/infer", v2_body, v2_headers),
        ("/v2/models/mnist-cnn/infer", v2_body, v2_headers),
        ("/mnist", WxfCodec().encode_tensor(IMAGES), {"Content-Type": WxfCodec.media_type}),
        ("/mnist", format_list(IMAGES[:3000]).encode(), {"Content-Type": "text/plain"}),
    ]
    with httpx.Client(base_url=big.url, headers=big.auth, timeout=300) as client:
        small = client.post("/mnist", content=format_list(IMAGES[:1]).encode())
        assert small.status_code == 200, small.text
        warmed = rss_mb(big)
        for path, body, headers in bodies:
            reply = client.post(path, content=body, headers=headers)
            assert reply.status_code == 200, reply.text[:300]
        after = rss_mb(big)
    assert after - warmed <= KEPT_MB, f"RSS {warmed:.0f} MB before, {after:.0f} MB after"
