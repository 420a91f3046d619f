"""Prometheus metrics and the access log: one measurement per request, outside the routes.

:class:`ObservedApp` wraps the whole ASGI app: it times each request, takes its route
template and model from the routing result (``scope["route"]``, ``path_params``) and its
status from the reply, and feeds :class:`ServerMetrics` (served at ``GET /metrics``) and,
when enabled, one JSON log line (no payloads, no secrets). A model label is only ever a
served model's name, so no request can grow the label set.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("mlbridge.access")
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
UNKNOWN = "-"


class ServerMetrics:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # bounded: see labels
        self.requests = Counter(
            "mlbridge_requests", "HTTP requests answered, by route, model and status code",
            ["route", "model", "code"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "mlbridge_request_duration_seconds", "Time from request to the end of the reply",
            ["route", "model"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "mlbridge_batch_size", "Examples computed per runtime call of a batching model",
            ["model"], buckets=BATCH_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "mlbridge_queue_depth", "Requests waiting in a model's batcher",
            ["model"], registry=self.registry,
        )  # fmt: skip

    def series(self, route: str, model: str, status: int) -> tuple[Any, Any]:
        """The request counter and latency histogram of these labels (looked up once each)."""
        key = (route, model, status)
        found = self._series.get(key)
        if found is None:
            requests = self.requests.labels(route, model, str(status))
            found = self._series[key] = (requests, self.latency.labels(route, model))
        return found

    def observe_batch(self, model: str, rows: int, waiting: int) -> None:
        """Record one runtime call of a batcher and the requests left waiting behind it."""
        self.batch_size.labels(model).observe(rows)
        self.queue_depth.labels(model).set(waiting)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class ObservedApp:
    """Times every HTTP request and records it (see the module docstring)."""

    def __init__(
        self, app: ASGIApp, metrics: ServerMetrics, served: Callable[[str], bool], log: bool
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.served = served  # whether a name is a served model (bounds the label set)
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.record(scope, status, time.perf_counter() - start)

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", UNKNOWN)
        name = scope.get("path_params", {}).get("name", "")
        model = name if name and self.served(name) else UNKNOWN
        counter, histogram = self.metrics.series(template, model, status)
        counter.inc()
        histogram.observe(seconds)
        if self.log:
            line = {"method": scope["method"], "route": template, "model": model}
            line.update(status=status, ms=round(seconds * 1e3, 3))
            access_log.info(json.dumps(line))
