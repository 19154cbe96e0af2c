"""Issue 17 item 4: ``OPTIONS`` on a route's path answers its env-var schema, as jambonz's
api-server asks for it (``GET /v1/AppEnv?url=...`` -> ``OPTIONS`` to the call hook, no
credentials; jambonz-api-server v0.9.6 lib/utils/appenv_utils.js:14-41). Real sockets where the
wire matters; each answer is checked with the api-server's rules (``app_env_errors``, written
from lib/utils/appenv_schemaSchema.json)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from jambonz_trio import BasicAuth, EnvVar, Route
from jambonz_trio.testing import app_env_errors, fetch_app_env, tcp_connector

from .helpers import (
    UPGRADE,
    basic,
    build_request,
    exchange,
    exchange_memory,
    make_handler,
    new_session,
    read_to_eof,
    start,
    ws_client,
)

GREETING = EnvVar("GREETING", description="What callers hear first", default="Hello")
RETRIES = EnvVar("RETRIES", int, description="Attempts", required=True, enum=[1, 2, 3])
RATE = EnvVar("RATE", float, description="Speech rate", default=1.5)
RECORD = EnvVar("RECORD", bool, description="Record calls", default=False)
API_KEY = EnvVar("API_KEY", description="Vendor key", obscure=True, required=True)
NOTES = EnvVar("NOTES", description="Prompt", ui_hint="textarea")
TRUNK = EnvVar("TRUNK", description="Carrier for transfers", jambonz_resource="carriers")
ALL = (GREETING, RETRIES, RATE, RECORD, API_KEY, NOTES, TRUNK)

#: The schema jambonz's portal gets for ALL: wire names and types, unset options left out,
#: declaration order kept (the portal renders the fields in object order).
EXPECTED = {
    "GREETING": {"type": "string", "description": "What callers hear first", "default": "Hello"},
    "RETRIES": {"type": "number", "description": "Attempts", "required": True, "enum": [1, 2, 3]},
    "RATE": {"type": "number", "description": "Speech rate", "default": 1.5},
    "RECORD": {"type": "boolean", "description": "Record calls", "default": False},
    "API_KEY": {"type": "string", "description": "Vendor key", "required": True, "obscure": True},
    "NOTES": {"type": "string", "description": "Prompt", "uiHint": "textarea"},
    "TRUNK": {"type": "string", "description": "Carrier for transfers", "jambonzResource": "carriers"},
}

#: What Node's fetch sends for the api-server (no Upgrade, no Authorization).
API_SERVER_HEADERS = (
    (b"Host", b"127.0.0.1"),
    (b"Connection", b"keep-alive"),
    (b"Accept", b"application/json"),
    (b"accept-language", b"*"),
    (b"sec-fetch-mode", b"cors"),
    (b"user-agent", b"node"),
    (b"accept-encoding", b"gzip, deflate"),
)


def options(target: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    return build_request(target, method=b"OPTIONS", headers=API_SERVER_HEADERS, extra=extra)


def app(*env: EnvVar[Any], path: str = "/app", **kwargs: Any) -> Route:
    return Route(path=path, handler=make_handler(path), env=env, **kwargs)


async def test_options_answers_the_schema_jambonz_accepts(nursery: trio.Nursery) -> None:
    """The answer over TCP: 200, ``application/json``, a Content-Length, the connection closed;
    the body is exactly the declared schema and passes every rule of the api-server."""
    with trio.fail_after(10):
        server = await start(nursery, app(*ALL))
        response = await exchange(server.port, options(b"/app"))
        assert response.status == 200
        assert response.get("Content-Type") == ["application/json"]
        assert response.get("Content-Length") == [str(len(response.body))]
        assert response.get("Connection") == ["close"]
        assert "OPTIONS" in response.get("Allow")[0]
        schema = json.loads(response.body)
        assert schema == EXPECTED
        assert list(schema) == list(EXPECTED)  # declaration order
        assert app_env_errors(schema) == []
        assert server.statistics().refused == 0  # an answer, not a refusal


async def test_options_ignores_the_query_string(nursery: trio.Nursery) -> None:
    """The api-server keeps the call hook's query string (``ws://host/app?tenant=a`` ->
    ``OPTIONS /app?tenant=a``, appenv_utils.js:15-21): the route is matched on the path."""
    with trio.fail_after(10):
        server = await start(nursery, app(GREETING))
        plain = await exchange(server.port, options(b"/app"))
        query = await exchange(server.port, options(b"/app?tenant=a&x=1"))
        assert query.status == plain.status == 200
        assert query.body == plain.body


async def test_options_needs_no_credentials(nursery: trio.Nursery) -> None:
    """The api-server sends no credentials (appenv_utils.js:13): a route with Basic auth still
    answers its schema, with or without (even wrong) credentials, while its upgrade stays
    protected."""
    with trio.fail_after(10):
        route = app(GREETING, auth=BasicAuth(username="u", password="p"))
        server = await start(nursery, route)
        for extra in ((), ((b"Authorization", basic("u", "wrong")),)):
            response = await exchange(server.port, options(b"/app", extra))
            assert response.status == 200
            assert json.loads(response.body) == {"GREETING": EXPECTED["GREETING"]}
        assert (await exchange(server.port, build_request(b"/app"))).status == 401


async def test_options_without_variables_is_204_never_an_empty_object(nursery: trio.Nursery) -> None:
    """A route that declares nothing, and a path no route serves, answer 204 with no body (the
    portal shows no form) - never ``200 {}``, which the api-server refuses as an invalid schema
    (appenv_schemaSchema.json:5)."""
    with trio.fail_after(10):
        server = await start(nursery, [app(path="/plain"), app(GREETING, path="/vars")])
        for target in (b"/plain", b"/nowhere", b"/vars/", b"/"):
            response = await exchange(server.port, options(target))
            assert response.status == 204, target
            assert response.body == b""
            assert response.get("Content-Length") == []
        assert (await exchange(server.port, options(b"/vars"))).status == 200


async def test_each_route_answers_its_own_schema(nursery: trio.Nursery) -> None:
    """Several applications on one port: the route matched as for the websocket (exact, or
    prefix) answers; a prefix route answers on every path below it."""
    with trio.fail_after(10):
        routes = [
            app(GREETING, path="/a"),
            app(RETRIES, RECORD, path="/b"),
            Route(path="/agents", handler=make_handler("agents"), prefix=True, env=[RATE]),
        ]
        server = await start(nursery, routes)
        answers = {}
        for target in (b"/a", b"/b", b"/agents/sales?x=1", b"/agents"):
            response = await exchange(server.port, options(target))
            assert response.status == 200
            answers[target] = json.loads(response.body)
            assert app_env_errors(answers[target]) == []
        assert list(answers[b"/a"]) == ["GREETING"]
        assert list(answers[b"/b"]) == ["RETRIES", "RECORD"]
        assert answers[b"/agents/sales?x=1"] == answers[b"/agents"] == {"RATE": EXPECTED["RATE"]}


async def test_calls_and_options_share_the_port(nursery: trio.Nursery) -> None:
    """While a call is live on the route's websocket, the schema is answered on the same port,
    and the call goes on."""
    with trio.fail_after(10):
        server = await start(nursery, app(*ALL))
        async with ws_client(server.port, "/app") as ws:
            assert await new_session(ws, "sid-1") == [{"verb": "say", "text": "/app"}]
            schema = await fetch_app_env(tcp_connector(f"ws://127.0.0.1:{server.port}/app?tenant=a"))
            assert schema == EXPECTED
            assert len(server.calls) == 1


async def test_options_keeps_the_handshake_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """An OPTIONS head that never ends is cut at the handshake deadline like any request."""
    with trio.fail_after(60):
        server = await start(nursery, app(GREETING), handshake_timeout=5.0)
        client = await server.connect_memory()
        await client.send_all(b"OPTIONS /app HTTP/1.1\r\nHost: x\r\n")
        t0 = trio.current_time()
        assert await read_to_eof(client) == b""
        assert trio.current_time() - t0 == pytest.approx(5.0, abs=0.01)
        assert server.statistics().pending_handshakes == 0


async def test_options_counts_in_the_handshake_budget(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A pending OPTIONS holds a handshake slot (the pending cap applies to it), and an
    answered one gives its slot back at once."""
    with trio.fail_after(60):
        server = await start(nursery, app(GREETING), max_pending_handshakes=1, first_byte_timeout=5.0)
        stalled = await server.connect_memory()
        await stalled.send_all(b"OPTIONS /app HTTP/1.1\r\n")
        await trio.testing.wait_all_tasks_blocked()
        response, _ = await exchange_memory(server, options(b"/app"))
        assert response.status == 503
        await read_to_eof(stalled)  # cut at the deadline: the slot is free again
        response, client = await exchange_memory(server, options(b"/app"))
        assert response.status == 200
        assert json.loads(response.body + await read_to_eof(client)) == {"GREETING": EXPECTED["GREETING"]}
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().pending_handshakes == 0


async def test_upgrade_and_other_plain_requests_are_unchanged(nursery: trio.Nursery) -> None:
    """Declaring variables changes only the OPTIONS answer: a GET without upgrade is still 426,
    an upgrade by OPTIONS is still 405, the websocket is still admitted."""
    with trio.fail_after(10):
        server = await start(nursery, app(GREETING))
        assert (await exchange(server.port, build_request(b"/app", headers=UPGRADE[:1]))).status == 426
        assert (await exchange(server.port, build_request(b"/app", method=b"OPTIONS"))).status == 405
        assert (await exchange(server.port, build_request(b"/app"))).status == 101
