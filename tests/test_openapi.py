"""The OpenAPI document: true to the route table, served with the secret, and no input that
schemathesis generates from it gets a 500 from the in-process app."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from starlette.applications import Starlette
from starlette.testclient import TestClient
from support.fakes import AUTH, fake_registry, in_process_app

from mlbridge.server.app import ROUTES
from mlbridge.server.openapi import openapi_document
from mlbridge.server.policy import Access

DOCUMENT = openapi_document(ROUTES)
# Served names for schemathesis' {name}: every kind of model but the failing fake (its
# engine breaks on valid input: a 500 by design) and the slow one (half a second a call).
NAMES = ["echo", "echo.vjp", "mnist", "mnist.vjp", "no-such-model"]
FAST, DEEP = 3, 60  # schemathesis examples per operation: the fast suite, and -m slow


def methods(route: Any) -> set[str]:
    return {method.lower() for method in route.methods - {"HEAD"}}


def test_paths_and_methods_are_the_route_table() -> None:
    assert set(DOCUMENT["paths"]) == {route.path for route in ROUTES}
    for route in ROUTES:
        assert set(DOCUMENT["paths"][route.path]) == methods(route), route.path


def test_security_is_each_routes_declared_access() -> None:
    for route in ROUTES:
        for operation in DOCUMENT["paths"][route.path].values():
            if route.access is Access.OPEN:
                assert operation["security"] == [], route.path
            else:
                assert {"bearer": []} in operation["security"], route.path


def test_every_reference_resolves_and_operation_ids_are_unique() -> None:
    schemas = DOCUMENT["components"]["schemas"]

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for target in refs(DOCUMENT):
        assert target.removeprefix("#/components/schemas/") in schemas, target
    ids = [op["operationId"] for item in DOCUMENT["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_served_with_the_secret_only(http: TestClient, anon: TestClient) -> None:
    reply = http.get("/v2/openapi.json")
    assert reply.status_code == 200 and reply.json()["openapi"] == "3.1.0"
    assert set(reply.json()["paths"]) == set(DOCUMENT["paths"])
    assert anon.get("/v2/openapi.json").status_code == 401


@pytest.fixture(scope="module")
def own_app() -> Iterator[Starlette]:
    """An app of its own: the run reloads models through the repository route."""
    registry = fake_registry("mnist")
    yield in_process_app(registry)
    registry.close()


def with_served_names(document: dict) -> dict:
    """The document with {name} drawn from the served models, so requests reach them."""
    document = copy.deepcopy(document)
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "name":
                    parameter["schema"] = {"enum": NAMES}
                if parameter["name"] == "version":
                    parameter["schema"] = {"enum": ["1", "2"]}
    return document


def run_schemathesis(app: Starlette, examples: int) -> dict[str, set[int]]:
    """Every operation, ``examples`` generated requests each; no reply may be a 5xx."""
    schema = schemathesis.openapi.from_dict(with_served_names(openapi_document(app.routes)))
    schema.app = app
    statuses: dict[str, set[int]] = {}
    sent: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=examples <= FAST,
            suppress_health_check=list(HealthCheck),
        )
        @given(operation.as_strategy())
        def call(case: Any) -> None:
            reply = case.call(headers=AUTH)
            sent.append(reply.status_code)
            statuses.setdefault(f"{case.method} {case.path}", set()).add(reply.status_code)
            assert reply.status_code < 500, (case.method, case.formatted_path, reply.text[:300])

        call()
    print(f"schemathesis: {len(sent)} requests, {len(statuses)} operations, no 5xx")
    return statuses


def test_no_generated_request_gets_a_server_error(own_app: Starlette) -> None:
    """Schemathesis reads every operation of the document, and no reply is a 5xx."""
    statuses = run_schemathesis(own_app, FAST)
    assert len(statuses) == sum(len(item) for item in DOCUMENT["paths"].values())


@pytest.mark.slow
def test_no_generated_request_gets_a_server_error_deeply(own_app: Starlette) -> None:
    statuses = run_schemathesis(own_app, DEEP)
    print({operation: sorted(codes) for operation, codes in statuses.items()})
