"""Every route of the app declares who may call it, and refuses everyone else in its own format.

The routes are enumerated from the app itself, so a route added tomorrow is tested
tomorrow; a plain Starlette route (no declared access) fails the first test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Route
from support.fakes import SECRET
from wolframclient.deserializers import binary_deserialize

from mlbridge.auth import server_proof
from mlbridge.codecs import wxf
from mlbridge.server.app import ROUTES
from mlbridge.server.cas import CasRoute
from mlbridge.server.policy import Access, DeclaredRoute, JsonRoute

PATH_PARAMETERS = {"name": "echo", "version": "1"}  # a served model, its served version
CHALLENGE = 'Bearer realm="mlbridge"'
WRONG = {"Authorization": "Bearer not-the-secret"}
TEXT_BODY = b"{1., 2., 3.}"
WXF = "application/vnd.wolfram.wxf"
# How a CAS caller may ask for a format: (headers, body) -> the reply's decoder.
CAS_FORMATS = {
    "text by default": ({}, TEXT_BODY),
    "WXF by Content-Type": ({"Content-Type": WXF}, wxf.dumps(np.ones(3))),
    "WXF by Accept": ({"Accept": WXF}, TEXT_BODY),
    "JSON by Content-Type": ({"Content-Type": "application/json"}, b"[1, 2, 3]"),
    "JSON by Accept": ({"Accept": "application/json"}, TEXT_BODY),
}


def undeclared(routes: list[BaseRoute]) -> list[str]:
    """The routes that declare no access rule."""
    return [
        getattr(route, "path", repr(route))
        for route in routes
        if not (isinstance(route, DeclaredRoute) and isinstance(route.access, Access))
    ]


def url(route: Route) -> str:
    return route.path.format(**{name: PATH_PARAMETERS[name] for name in route.param_convertors})


def method(route: Route) -> str:
    return "POST" if "POST" in (route.methods or ()) else "GET"


def guarded(app) -> list[Route]:
    return [route for route in app.routes if route.access is not Access.OPEN]


def request(client, route: Route, headers: dict[str, str], body: bytes = b""):
    if method(route) == "GET":
        return client.get(url(route), headers=headers)
    return client.post(url(route), headers=headers, content=body or b'{"inputs": []}')


def test_every_route_declares_its_access(app) -> None:
    assert app.routes, "the app has no routes"
    assert undeclared(app.routes) == []


def test_a_route_without_a_declared_access_is_caught() -> None:
    async def metrics(request):
        return PlainTextResponse("")

    assert undeclared([*ROUTES, Route("/metrics", metrics)]) == ["/metrics"]


def test_only_the_health_checks_are_open(app) -> None:
    open_paths = sorted(route.path for route in app.routes if route.access is Access.OPEN)
    assert open_paths == ["/v2/health/live", "/v2/health/proof", "/v2/health/ready"]


def test_open_routes_answer_without_the_secret(app, anon) -> None:
    for route in app.routes:
        if route.access is Access.OPEN and route.path != "/v2/health/proof":
            reply = request(anon, route, {})
            assert reply.status_code == 200, f"{route.path}: {reply.text}"
    nonce = "ab" * 16
    proof = anon.get(f"/v2/health/proof?nonce={nonce}").json()["proof"]
    assert proof == server_proof(SECRET, nonce)
    assert anon.get("/v2/health/proof?nonce=xyz").status_code == 400


@pytest.mark.parametrize("headers", [{}, WRONG], ids=["no secret", "wrong secret"])
def test_json_routes_refuse_in_json(app, anon, headers) -> None:
    routes = [route for route in guarded(app) if isinstance(route, JsonRoute)]
    assert routes
    for route in routes:
        reply = request(anon, route, headers)
        assert reply.status_code == 401, f"{method(route)} {route.path} answered {reply.text}"
        assert reply.headers["www-authenticate"] == CHALLENGE
        assert reply.json()["code"] == "Unauthorized", route.path
        assert SECRET not in reply.text


def cas_failure(content_type: str, body: bytes) -> dict:
    """The fields of a CAS error reply, whatever its format."""
    if content_type.startswith("application/json"):
        document = json.loads(body)
        return {"Status": document["status"], "Code": document["code"], "WXF": False}
    if content_type == WXF:
        failure = binary_deserialize(body)
        assert str(failure.head) == "Failure" and failure.args[0] == "MLBridge"
        return {**failure.args[1], "WXF": True}
    text = body.decode()
    assert text.startswith('Failure["MLBridge", <|"MessageTemplate" -> "'), text
    assert '"Status" -> 401, "Code" -> "Unauthorized"|>]' in text
    return {"Status": 401, "Code": "Unauthorized", "WXF": False}


@pytest.mark.parametrize("secret", [None, "header", "first line"])
@pytest.mark.parametrize("fmt", sorted(CAS_FORMATS))
def test_cas_routes_refuse_in_the_negotiated_format(app, anon, fmt: str, secret) -> None:
    routes = [route for route in guarded(app) if isinstance(route, CasRoute)]
    assert routes
    headers, body = CAS_FORMATS[fmt]
    if secret == "header":
        headers = {**headers, **WRONG}
    elif secret == "first line":
        body = b"not-the-secret\n" + body
    for route in routes:
        reply = anon.post(url(route), headers=headers, content=body)
        assert reply.status_code == 401, f"{route.path}: {reply.text}"
        assert reply.headers["www-authenticate"] == CHALLENGE
        content_type = reply.headers["content-type"]
        fields = cas_failure(content_type, reply.content)
        assert fields["Status"] == 401 and fields["Code"] == "Unauthorized"
        assert fields["WXF"] == ("WXF" in fmt), f"{fmt}: answered {content_type}"
        assert ("JSON" in fmt) == content_type.startswith("application/json")
        assert SECRET.encode() not in reply.content


def test_the_first_line_secret_works_on_every_cas_route(app, anon) -> None:
    for route in app.routes:
        if isinstance(route, CasRoute):
            reply = anon.post(url(route), content=SECRET.encode() + b"\n" + TEXT_BODY)
            assert reply.status_code == 200, f"{route.path}: {reply.text}"


def test_the_first_line_secret_is_not_a_secret_on_json_routes(anon) -> None:
    body = SECRET.encode() + b'\n{"inputs": []}'
    assert anon.post("/v2/models/echo/infer", content=body).status_code == 401


def test_the_bearer_secret_works_on_every_route(app, http) -> None:
    for route in app.routes:
        reply = request(http, route, {}, TEXT_BODY if isinstance(route, CasRoute) else b"")
        assert reply.status_code != 401, f"{route.path}: {reply.text}"


@pytest.mark.parametrize(
    ("family", "access"),
    [
        (JsonRoute, Access.SECRET_OR_FIRST_LINE),
        (CasRoute, Access.OPEN),
    ],
)
def test_an_access_rule_the_family_cannot_enforce_is_refused(family, access) -> None:
    async def endpoint(*args):
        raise AssertionError("never called")

    with pytest.raises(ValueError, match=f"cannot have access {access.name}"):
        family("/somewhere", endpoint, access=access)


def test_every_route_must_name_its_access() -> None:
    async def endpoint(*args):
        raise AssertionError("never called")

    for family in (JsonRoute, CasRoute):
        with pytest.raises(TypeError, match="access"):
            family("/somewhere", endpoint)
