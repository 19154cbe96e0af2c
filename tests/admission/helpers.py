"""Raw-HTTP and websocket helpers for the admission tests (real sockets and memory streams)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from trio_websocket import WebSocketConnection

from jambonz_trio import Call, Handler, JambonzServer, VerbHook
from jambonz_trio.verbs import Say
from tests.helpers import basic, msg, open_ws, recv, session_data, start

__all__ = ["basic", "msg", "recv", "session_data", "start"]  # shared helpers, re-exported

Headers = Sequence[tuple[bytes, bytes]]

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
#: The headers jambonz's ``ws`` client sends on the upgrade (minus auth).
UPGRADE: tuple[tuple[bytes, bytes], ...] = (
    (b"Host", b"127.0.0.1"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Sec-WebSocket-Key", KEY),
    (b"Sec-WebSocket-Version", b"13"),
    (b"Sec-WebSocket-Protocol", b"ws.jambonz.org"),
)


def build_request(
    target: bytes = b"/app",
    *,
    method: bytes = b"GET",
    version: bytes = b"HTTP/1.1",
    headers: Headers = UPGRADE,
    replace: Headers = (),
    drop: Sequence[bytes] = (),
    extra: Headers = (),
) -> bytes:
    """A hand-made request head. ``replace`` swaps the values of base headers (by name),
    ``drop`` removes base headers, ``extra`` appends more (duplicates allowed)."""
    replaced = {name.lower(): value for name, value in replace}
    dropped = {name.lower() for name in drop}
    lines = [method + b" " + target + b" " + version]
    for name, value in headers:
        key = name.lower()
        if key not in dropped:
            lines.append(name + b": " + replaced.get(key, value))
    lines += [name + b": " + value for name, value in extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@attrs.frozen
class Response:
    """What a raw client saw: ``status`` is ``None`` if the server closed without answering."""

    status: int | None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    raw: bytes = b""

    def get(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


async def _receive(stream: trio.abc.ReceiveStream) -> bytes:
    try:
        return bytes(await stream.receive_some(65536))
    except trio.BrokenResourceError:  # RST from the peer counts as a close
        return b""


async def read_response(stream: trio.abc.ReceiveStream, *, to_eof: bool = True) -> Response:
    """Read one HTTP response head (and, with ``to_eof``, everything up to the close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await _receive(stream)
        if not chunk:
            assert data == b"", f"connection closed mid-response: {data!r}"
            return Response(status=None)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if to_eof:
        while chunk := await _receive(stream):
            body += chunk
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    headers = tuple((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines))
    return Response(status=int(status), headers=headers, body=body, raw=data)


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await _receive(stream):
        data += chunk
    return data


async def exchange(port: int, request: bytes, *, source: str | None = None) -> Response:
    """Send ``request`` on a fresh TCP connection (from the local address ``source``, e.g.
    ``127.0.0.2``: all of 127/8 is loopback) and read the response.

    A refusal must be followed by the server closing the connection; a 101 is read only up
    to its head and the connection is then dropped."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    async with stream:
        await stream.send_all(request)
        response = await read_response(stream, to_eof=False)
        if response.status not in (None, 101):
            # everything after the head must be the body, then EOF
            rest = await read_to_eof(stream)
            response = attrs.evolve(response, body=response.body + rest)
        return response


async def exchange_memory(server: JambonzServer, request: bytes) -> tuple[Response, trio.abc.Stream]:
    """Same over ``server.connect_memory()``; returns the client stream too."""
    client = await server.connect_memory()
    await client.send_all(request)
    return await read_response(client, to_eof=False), client


def make_handler(name: str) -> Handler:
    """Acks ``session:new`` with ``Say(name)`` and every ``verb:hook`` with ``Say(name:hook)``."""

    async def handler(call: Call) -> None:
        await call.ack(call.session, [Say(text=name)])
        async for event in call:
            if isinstance(event, VerbHook):
                await call.ack(event, [Say(text=f"{name}:{event.hook}")])

    return handler


@asynccontextmanager
async def ws_client(
    port: int,
    path: str = "/app",
    *,
    headers: Headers = (),
    stream: trio.abc.Stream | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """A jambonz-like websocket client over TCP (or over ``stream`` if given)."""
    async with open_ws(stream or await trio.open_tcp_stream("127.0.0.1", port), path, headers=headers) as ws:
        yield ws


async def new_session(ws: WebSocketConnection, call_sid: str, msgid: str = "m1") -> Any:
    """Send ``session:new`` and return the ack's verbs."""
    await ws.send_message(msg("session:new", msgid, session_data(call_sid), call_sid=call_sid))
    ack = await recv(ws)
    assert ack["type"] == "ack"
    assert ack["msgid"] == msgid
    return ack["data"]


async def hook(ws: WebSocketConnection, call_sid: str, msgid: str, name: str) -> Any:
    """Send a ``verb:hook`` and return the ack's verbs."""
    await ws.send_message(msg("verb:hook", msgid, {}, hook=name, call_sid=call_sid))
    ack = await recv(ws)
    assert ack["type"] == "ack"
    assert ack["msgid"] == msgid
    return ack["data"]


def say(text: str) -> list[dict[str, Any]]:
    return [{"verb": "say", "text": text}]


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def settle(predicate: Any, rounds: int = 200) -> bool:
    """Let every other task run to a blocking point, up to ``rounds`` times, until
    ``predicate()`` holds. No real time passes beyond what the I/O itself takes."""
    for _ in range(rounds):
        if predicate():
            return True
        await trio.testing.wait_all_tasks_blocked()
        await trio.lowlevel.checkpoint()
    return bool(predicate())
