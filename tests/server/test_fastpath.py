"""The lean path takes exactly the requests Starlette's router would give a lean route, and
they are guarded, recorded and logged as every other request is."""

from __future__ import annotations

import itertools
import json
import logging

import pytest
from starlette.routing import Match, Mount
from starlette.testclient import TestClient
from support.fakes import AUTH, HOME, SECRET, fake_registry

from mlbridge.auth import TokenAuthenticator
from mlbridge.server import cas
from mlbridge.server.app import create_app
from mlbridge.server.cas import CasRoute
from mlbridge.server.fastpath import AppState, HotRoutes, is_lean
from mlbridge.server.policy import Access, JsonRoute
from mlbridge.settings import load_settings

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE"]
ODD_PATHS = [
    "/",
    "/v2",
    "/v2/",
    "/v2/models",
    "/v2/models/echo/infer/",
    "/v2/models/echo/versions/1/infer",
    "/v2/models/echo/versions/2/infer",
    "/v2/repository/index",
    "/v2/shutdown",
    "/echo/gradient/more",
    "/echo%2Finfer",
    "/no-such-model",
    "/metrics",
    "/v2/health/live",
]


def router_choice(app, method: str, path: str):
    """The route Starlette's router gives a request, and its path parameters (or None)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in app.routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return route, child["path_params"]
    return None


def sample_paths(app) -> list[str]:
    """Every route's template filled in, and paths near them."""
    filled = [route.path.format(name="echo", version="1") for route in app.routes]
    return sorted({*filled, *ODD_PATHS})


def test_only_the_hot_routes_are_lean(app) -> None:
    lean = sorted(route.path for route in app.routes if is_lean(route))
    assert lean == [
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/{name}",
        "/{name}/gradient",
        "/{name}/jacobian",
    ]


def test_the_lean_path_takes_what_the_router_gives_a_lean_route(app) -> None:
    taken = 0
    for method, path in itertools.product(METHODS, sample_paths(app)):
        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        chosen = router_choice(app, method, path)
        route = app.hot.route(scope)
        if chosen is not None and is_lean(chosen[0]):
            assert route is chosen[0], (method, path)
            assert scope["path_params"] == chosen[1] and scope["route"] is route
            taken += 1
        else:
            assert route is None, (method, path, route.path)
    assert taken >= 8  # every lean route, and the odd paths that reach one


def test_a_mounted_prefix_goes_to_the_router(app) -> None:
    scope = {"type": "http", "method": "POST", "path": "/echo", "root_path": "/prefix"}
    assert app.hot.route(scope) is None


@pytest.fixture
def logged_app():
    settings = load_settings(environ={}, home=str(HOME), access_log=True, workers=2)
    return create_app(fake_registry(), TokenAuthenticator(SECRET, settings.token_file), settings)


def test_lean_and_routed_requests_are_recorded_and_logged_alike(logged_app, caplog) -> None:
    caplog.set_level(logging.INFO, logger="mlbridge.access")
    v2 = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    with TestClient(logged_app, headers=AUTH) as client:
        assert client.post("/v2/models/echo/infer", json=v2).status_code == 200  # lean
        assert client.post("/echo", content=b"{1., 2., 3.}").status_code == 200  # lean
        assert client.post("/echo", content=b"{1., 2.}").status_code == 400  # lean, an error
        assert client.get("/v2/models/echo").status_code == 200  # through the router
        assert client.post("/echo", headers={"host": "evil.example"}).status_code == 421
        exposition = client.get("/metrics").text
    lines = [json.loads(record.getMessage()) for record in caplog.records]
    seen = [(line["method"], line["route"], line["model"], line["status"]) for line in lines]
    assert seen == [
        ("POST", "/v2/models/{name}/infer", "echo", 200),
        ("POST", "/{name}", "echo", 200),
        ("POST", "/{name}", "echo", 400),
        ("GET", "/v2/models/{name}", "echo", 200),
        ("POST", "-", "-", 421),
        ("GET", "/metrics", "-", 200),
    ]
    assert 'mlbridge_requests_total{code="200",model="echo",route="/{name}"} 1.0' in exposition
    assert 'mlbridge_requests_total{code="421",model="-",route="-"} 1.0' in exposition
    assert all(line["ms"] >= 0 for line in lines)


def test_a_route_declared_earlier_keeps_its_requests() -> None:
    async def special(request):
        raise AssertionError("never called")

    shadowing = JsonRoute("/special/gradient", special, access=Access.SECRET, methods=["POST"])
    gradient = CasRoute("/{name}/gradient", cas.gradient, access=Access.SECRET_OR_FIRST_LINE)
    mounted = Mount("/mounted", routes=[])
    hot = HotRoutes(
        [shadowing, gradient, mounted, CasRoute("/{name}", cas.predict, access=Access.SECRET)]
    )

    def choice(path: str):
        return hot.route({"type": "http", "method": "POST", "path": path, "root_path": ""})

    assert choice("/special/gradient") is None  # the router's: not lean
    assert choice("/echo/gradient") is gradient
    assert choice("/echo") is None  # a Mount comes first: only the router can tell


def test_app_state_keeps_its_plain_attributes_in_step_with_starlettes_state() -> None:
    state = AppState()
    state.service = "a"
    state["settings"] = "b"
    assert (state.service, state["service"], state.settings, state["settings"]) == (
        "a",
        "a",
        "b",
        "b",
    )
    assert (
        vars(state)["service"] == "a" and vars(state)["settings"] == "b"
    )  # read without __getattr__
    assert sorted(state) == ["service", "settings"] and len(state) == 2
    del state.service
    del state["settings"]
    assert len(state) == 0 and not hasattr(state, "service") and not hasattr(state, "settings")
    with pytest.raises(AttributeError):
        _ = state.settings
