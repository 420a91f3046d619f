"""Prometheus metrics and the access log: one measurement per request, outside the routes.

The app (:class:`~mlbridge.server.fastpath.ServedApp`) times each HTTP request and hands
it to :class:`RequestObserver`, which takes its route template and model from the routing
result (``scope["route"]``, ``path_params``) and feeds :class:`ServerMetrics` (served at
``GET /metrics``) and, when enabled, one JSON log line (no payloads, no secrets). A model
label is only ever a served model's name, so no request can grow the label set.

:class:`ServerMetrics` counts in plain numbers (:class:`Tally`, :class:`Buckets`), updated
on the event loop only, and writes them as prometheus_client's ``Counter``, ``Histogram``
and ``Gauge`` would (the same families, samples and ``_created`` series, through the same
``generate_latest``), at a fraction of their cost per request (no locks, no label
lookups, one bisection instead of a loop over the buckets).
"""

from __future__ import annotations

import json
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Metric, generate_latest
from prometheus_client.utils import floatToGoString
from starlette.types import Scope

access_log = logging.getLogger("mlbridge.access")
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
UNKNOWN = "-"
REQUESTS = ("mlbridge_requests", "HTTP requests answered, by route, model and status code")
LATENCY = ("mlbridge_request_duration_seconds", "Time from request to the end of the reply")
BATCH_SIZE = ("mlbridge_batch_size", "Examples computed per runtime call of a batching model")
QUEUE_DEPTH = ("mlbridge_queue_depth", "Requests waiting in a model's batcher")
Labels = dict[str, str]


class Tally:
    """A counter of one label set: its value and when it was made."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self) -> None:
        self.value += 1


class Buckets:
    """A histogram of one label set: observations per upper bound (the last one +Inf)."""

    __slots__ = ("bounds", "counts", "created", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0  # the sum of the observations
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value
        self.total += value


class ServerMetrics:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency_bounds = (*map(float, LATENCY_BUCKETS), float("inf"))
        self.batch_bounds = (*map(float, BATCH_BUCKETS), float("inf"))
        self._series: dict[tuple[str, str, int], tuple[Tally, Buckets]] = {}  # bounded: labels
        self._requests: dict[tuple[str, str, str], Tally] = {}  # (route, model, code)
        self._latency: dict[tuple[str, str], Buckets] = {}  # (route, model)
        self._batching: dict[str, tuple[Buckets, list[float]]] = {}  # model -> size, depth
        self.registry.register(self)

    def series(self, route: str, model: str, status: int) -> tuple[Tally, Buckets]:
        """The request counter and latency histogram of these labels (looked up once each)."""
        key = (route, model, status)
        found = self._series.get(key)
        if found is None:
            requests = self._requests.setdefault((route, model, str(status)), Tally())
            latency = self._latency.get((route, model))
            if latency is None:
                latency = self._latency[(route, model)] = Buckets(self.latency_bounds)
            found = self._series[key] = (requests, latency)
        return found

    def observe_batch(self, model: str, rows: int, waiting: int) -> None:
        """Record one runtime call of a batcher and the requests left waiting behind it."""
        found = self._batching.get(model)
        if found is None:
            found = self._batching[model] = (Buckets(self.batch_bounds), [0.0])
        found[0].observe(rows)
        found[1][0] = waiting

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """The four families, as prometheus_client's own metrics would write them."""
        requests = Metric(*REQUESTS, "counter")
        for (route, model, code), tally in self._requests.items():
            labels = {"route": route, "model": model, "code": code}
            requests.add_sample(REQUESTS[0] + "_total", labels, tally.value)
            requests.add_sample(REQUESTS[0] + "_created", labels, tally.created)
        yield requests
        latency = Metric(*LATENCY, "histogram")
        for (route, model), buckets in self._latency.items():
            add_histogram(latency, {"route": route, "model": model}, buckets)
        yield latency
        batch_size = Metric(*BATCH_SIZE, "histogram")
        queue_depth = Metric(*QUEUE_DEPTH, "gauge")
        for model, (sizes, depth) in self._batching.items():
            add_histogram(batch_size, {"model": model}, sizes)
            queue_depth.add_sample(QUEUE_DEPTH[0], {"model": model}, depth[0])
        yield batch_size
        yield queue_depth


def add_histogram(family: Metric, labels: Labels, buckets: Buckets) -> None:
    """A histogram's samples: cumulative buckets, count, sum, creation time."""
    seen = 0
    for bound, count in zip(buckets.bounds, buckets.counts):
        seen += count
        family.add_sample(family.name + "_bucket", {**labels, "le": floatToGoString(bound)}, seen)
    family.add_sample(family.name + "_count", labels, seen)
    family.add_sample(family.name + "_sum", labels, buckets.total)
    family.add_sample(family.name + "_created", labels, buckets.created)


class RequestObserver:
    """Records every HTTP request (see the module docstring)."""

    def __init__(self, metrics: ServerMetrics, served: Callable[[str], bool], log: bool) -> None:
        self.metrics = metrics
        self.served = served  # whether a name is a served model (bounds the label set)
        self.log = log

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        """One request answered ``status`` after ``seconds``."""
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
