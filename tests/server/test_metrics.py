"""The server's own counters write what prometheus_client's Counter, Histogram and Gauge write.

The reference is prometheus_client itself, fed the same observations in the same order;
only the ``_created`` timestamps differ (each side's clock when a series began).
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from mlbridge.server.metrics import (
    BATCH_BUCKETS,
    BATCH_SIZE,
    LATENCY,
    LATENCY_BUCKETS,
    QUEUE_DEPTH,
    REQUESTS,
    ServerMetrics,
)

REQUESTS_SEEN = [  # (route, model, status, seconds), bucket edges included
    ("/{name}", "mnist", 200, 0.0003),
    ("/{name}", "mnist", 200, 0.0005),
    ("/v2/models/{name}/infer", "mnist-cnn", 200, 0.0001),
    ("/{name}", "mnist", 400, 0.002),
    ("/{name}", "-", 404, 12.0),
    ("/v2", "-", 401, 0.0),
]
BATCHES_SEEN = [("mnist", 1, 0), ("mnist", 7, 3), ("mnist-cnn", 1024, 0), ("mnist", 2000, 1)]
CREATED = re.compile(r"^(\w+_created\{.*\}) \S+$", re.MULTILINE)


def reference() -> bytes:
    """What prometheus_client's own metrics write for the same observations."""
    registry = CollectorRegistry()
    requests = Counter(*REQUESTS, ["route", "model", "code"], registry=registry)
    latency = Histogram(*LATENCY, ["route", "model"], buckets=LATENCY_BUCKETS, registry=registry)
    sizes = Histogram(*BATCH_SIZE, ["model"], buckets=BATCH_BUCKETS, registry=registry)
    depth = Gauge(*QUEUE_DEPTH, ["model"], registry=registry)
    for route, model, status, seconds in REQUESTS_SEEN:
        requests.labels(route, model, str(status)).inc()
        latency.labels(route, model).observe(seconds)
    for model, rows, waiting in BATCHES_SEEN:
        sizes.labels(model).observe(rows)
        depth.labels(model).set(waiting)
    return generate_latest(registry)


def ours() -> bytes:
    metrics = ServerMetrics()
    for route, model, status, seconds in REQUESTS_SEEN:
        counter, histogram = metrics.series(route, model, status)
        counter.inc()
        histogram.observe(seconds)
    for model, rows, waiting in BATCHES_SEEN:
        metrics.observe_batch(model, rows, waiting)
    return metrics.exposition()


def without_created_times(exposition: bytes) -> str:
    return CREATED.sub(r"\1 <time>", exposition.decode())


def test_the_exposition_is_prometheus_clients_own() -> None:
    expected = without_created_times(reference())
    assert "mlbridge_batch_size_bucket" in expected and "<time>" in expected
    assert without_created_times(ours()) == expected


def test_an_empty_exposition_still_names_every_family() -> None:
    empty = CollectorRegistry()
    Counter(*REQUESTS, ["route", "model", "code"], registry=empty)
    Histogram(*LATENCY, ["route", "model"], buckets=LATENCY_BUCKETS, registry=empty)
    Histogram(*BATCH_SIZE, ["model"], buckets=BATCH_BUCKETS, registry=empty)
    Gauge(*QUEUE_DEPTH, ["model"], registry=empty)
    assert ServerMetrics().exposition() == generate_latest(empty)
