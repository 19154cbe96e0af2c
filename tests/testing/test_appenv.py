"""``fetch_app_env`` / ``app_env_errors``: jambonz's env-var schema discovery, checked against
a stand-in app over real sockets. Each verdict is the one jambonz-api-server v0.9.6 gives for
that answer (lib/routes/api/appenv.js:29-39: 200 with the schema, 400 "Invalid appenv schema",
204 for no schema)."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
import trio

from jambonz_trio.testing import (
    FakeJambonzError,
    InvalidAppEnvSchema,
    app_env_errors,
    fetch_app_env,
    tcp_connector,
)

GOOD = {
    "API_KEY": {"type": "string", "description": "key", "required": True, "obscure": True},
    "RETRIES": {"type": "number", "description": "n", "default": 2, "enum": [1, 2, 3]},
    "NOTES": {"type": "string", "description": "notes", "uiHint": "textarea", "jambonzResource": "carriers"},
}


def answer(status: int, body: bytes = b"", content_type: str = "application/json") -> bytes:
    reason = {200: "OK", 204: "No Content", 301: "Moved Permanently", 404: "Not Found"}[status]
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
    if status != 204:
        head += f"Content-Length: {len(body)}\r\n"
    if status == 301:
        head += "Location: /good\r\n"
    return (head + "Connection: close\r\n\r\n").encode() + body


def js(value: Any) -> bytes:
    return answer(200, json.dumps(value).encode())


#: path -> what the stand-in answers
ANSWERS = {
    "/good": js(GOOD),
    "/extra-field": js({"A": {"type": "boolean", "description": "a", "foo": 1}}),
    "/text-plain": answer(200, json.dumps(GOOD).encode(), "text/plain"),
    "/empty-object": js({}),
    "/bad-name": js({"greeting-text": {"type": "string", "description": "d"}}),
    "/no-description": js({"A": {"type": "string"}}),
    "/integer-type": js({"A": {"type": "integer", "description": "d"}}),
    "/per-path": js({"/ivr": {"A": {"type": "string", "description": "d"}}}),
    "/array": js([]),
    "/no-content": answer(204),
    "/not-found": answer(404, b"nope", "text/plain"),
    "/html": answer(200, b"<html></html>", "text/html"),
    "/zero": js(0),
    "/null": js(None),
    "/false": js(False),
    "/empty-string": js(""),
    "/redirect": answer(301),
    "/truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{",
}


async def stand_in(requests: list[bytes], stream: trio.SocketStream) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    requests.append(head)
    path = head.split(b" ")[1].split(b"?")[0].decode()
    await stream.send_all(ANSWERS[path])
    await stream.aclose()


@pytest.fixture
async def base(nursery: trio.Nursery) -> tuple[str, list[bytes]]:
    requests: list[bytes] = []
    listeners = await nursery.start(partial(trio.serve_tcp, partial(stand_in, requests), 0, host="127.0.0.1"))
    return f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}", requests


@pytest.mark.parametrize("path", ["/good", "/extra-field", "/text-plain"])
async def test_accepted_schemas(base: tuple[str, list[bytes]], path: str) -> None:
    """200 from the api-server: the schema as the app sent it (unknown fields pass, the
    Content-Type is not checked)."""
    url, _ = base
    with trio.fail_after(10):
        schema = await fetch_app_env(tcp_connector(url + path))
    assert schema == json.loads(ANSWERS[path].partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/empty-object", "at least one variable"),
        ("/bad-name", "'greeting-text' must match"),
        ("/no-description", "A: description is required"),
        ("/integer-type", "A: type must be one of string, number, boolean"),
        ("/per-path", "'/ivr' must match"),
        ("/array", "must be a JSON object"),
    ],
)
async def test_refused_schemas(base: tuple[str, list[bytes]], path: str, error: str) -> None:
    """400 "Invalid appenv schema" from the api-server: raised, saying why."""
    url, _ = base
    with trio.fail_after(10), pytest.raises(InvalidAppEnvSchema, match="Invalid appenv schema") as info:
        await fetch_app_env(tcp_connector(url + path))
    assert any(error in line for line in info.value.errors), info.value.errors


@pytest.mark.parametrize(
    "path", ["/no-content", "/not-found", "/html", "/zero", "/null", "/false", "/empty-string", "/truncated"]
)
async def test_no_schema(base: tuple[str, list[bytes]], path: str) -> None:
    """204 from the api-server (no form in the portal): a non-2xx status, a body that is not
    JSON (or cut short), a falsy JSON value."""
    url, _ = base
    with trio.fail_after(10):
        assert await fetch_app_env(tcp_connector(url + path)) is None


async def test_the_request_is_the_api_servers(base: tuple[str, list[bytes]]) -> None:
    """``OPTIONS`` with the call hook's path and query, ``Accept: application/json``, and no
    credentials even when the hook URL has some (appenv_utils.js:13-29)."""
    url, requests = base
    with trio.fail_after(10):
        await fetch_app_env(tcp_connector(url.replace("ws://", "ws://user:pass@") + "/good?tenant=a&x=1"))
    (request,) = requests
    assert request.startswith(b"OPTIONS /good?tenant=a&x=1 HTTP/1.1\r\n")
    assert b"\r\nAccept: application/json\r\n" in request
    assert b"authorization" not in request.lower()


async def test_redirects_and_unreachable_apps(base: tuple[str, list[bytes]]) -> None:
    """A redirect is refused loudly (jambonz would follow it; the fake does not); an app that
    cannot be reached gives no schema, as in jambonz."""
    url, _ = base
    with trio.fail_after(10):
        with pytest.raises(FakeJambonzError, match="redirected"):
            await fetch_app_env(tcp_connector(url + "/redirect"))
        closed = trio.socket.socket()
        await closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()  # nothing listens there
        assert await fetch_app_env(tcp_connector(f"ws://127.0.0.1:{port}/good")) is None


def test_app_env_errors_lists_every_problem() -> None:
    """Each rule of appenv_schemaSchema.json, one message per problem."""
    assert app_env_errors(GOOD) == []
    assert app_env_errors(
        {
            "A": {"type": "string"},
            "B": "not an object",
            "C": {"type": "number", "description": 3, "required": "yes", "obscure": 1},
            "D": {"type": "string", "description": "d", "default": None, "enum": "x"},
            "E": {"type": "boolean", "description": "d", "default": 1},  # type mismatch passes
        }
    ) == [
        "A: description is required",
        "B: must be an object",
        "C: description must be a string",
        "C: required must be a boolean",
        "C: obscure must be a boolean",
        "D: default must be a string, a number or a boolean",
        "D: enum must be an array",
    ]
