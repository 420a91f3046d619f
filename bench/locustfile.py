"""Locust scenario: one MNIST image per request as V2 JSON, Bearer header, no think time.

    locust -f bench/locustfile.py --headless -u 8 -r 8 -t 15s --host http://127.0.0.1:PORT

``python -m bench`` runs it (bench/locust_run.py) against mlbridge, MLServer and the ASGI
echo floor. Settings come from the environment: ``BENCH_PATH`` (default
``/v2/models/mnist/infer``), ``BENCH_BODY`` (a file holding the request body) and
``BENCH_TOKEN_FILE`` (the server's token file; no header when unset). Always run it
``--headless``: Locust's web UI would listen on every interface.
"""

from __future__ import annotations

import os
from pathlib import Path

from locust import FastHttpUser, constant, task

PATH = os.environ.get("BENCH_PATH", "/v2/models/mnist/infer")
BODY = Path(os.environ["BENCH_BODY"]).read_bytes()
TOKEN_FILE = os.environ.get("BENCH_TOKEN_FILE")
HEADERS = {"Content-Type": "application/json"}
if TOKEN_FILE:
    HEADERS["Authorization"] = "Bearer " + Path(TOKEN_FILE).read_text().strip()


class InferUser(FastHttpUser):
    """A client that sends the next request as soon as the last one is answered."""

    wait_time = constant(0)

    @task
    def infer(self) -> None:
        self.client.post(PATH, data=BODY, headers=HEADERS, name="infer")
