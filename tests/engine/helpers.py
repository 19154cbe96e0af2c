"""Small raw-websocket helpers for engine tests (below the fake jambonz)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

from jambonz_trio import JambonzServer

SESSION_DATA: dict[str, Any] = {
    "call_sid": "sid-1",
    "account_sid": "acct-1",
    "from": "+15083084809",
    "to": "+15083728299",
    "direction": "inbound",
    "call_status": "trying",
    "env_vars": {"API_KEY": "s3cret-value"},
}


@asynccontextmanager
async def raw_ws(
    server: JambonzServer,
    *,
    path: str = "/",
    headers: list[tuple[bytes, bytes]] | None = None,
    lockstep: bool = False,
) -> AsyncIterator[WebSocketConnection]:
    """A bare jambonz-like websocket to ``server`` over memory streams."""
    stream = await server.connect_memory(lockstep=lockstep)
    async with trio.open_nursery() as nursery:
        ws = await wrap_client_stream(
            nursery,
            cast(trio.SocketStream, stream),
            "localhost",
            path,
            subprotocols=["ws.jambonz.org"],
            extra_headers=headers or [],
        )
        try:
            yield ws
        finally:
            with trio.move_on_after(1):
                await ws.aclose()
            nursery.cancel_scope.cancel()


def msg(mtype: str, msgid: str, data: dict[str, Any] | None = None, **env: Any) -> str:
    out: dict[str, Any] = {"type": mtype, "msgid": msgid, **env}
    out["data"] = data if data is not None else {}
    return json.dumps(out)


async def recv(ws: WebSocketConnection) -> dict[str, Any]:
    text = await ws.get_message()
    assert isinstance(text, str)
    out: dict[str, Any] = json.loads(text)
    return out


class RawClient:
    """A jambonz-like websocket client on wsproto, driven by hand (no background reader):
    it reads only when asked, so tests control pongs, back-pressure and close races."""

    def __init__(self, stream: trio.abc.Stream, *, auto_pong: bool = True) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.auto_pong = auto_pong
        self.pings = 0
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._events: list[Any] = []
        self._text: list[str] = []

    async def handshake(
        self,
        path: str = "/",
        *,
        subprotocols: list[str] | None = None,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Any:
        await self.stream.send_all(
            self.ws.send(
                Request(
                    host="localhost",
                    target=path,
                    subprotocols=["ws.jambonz.org"] if subprotocols is None else subprotocols,
                    extra_headers=extra_headers or [],
                )
            )
        )
        return await self._next_raw()

    async def _next_raw(self) -> Any:
        while not self._events:
            data = bytes(await self.stream.receive_some(65536))
            self.ws.receive_data(data if data else None)
            self._events.extend(self.ws.events())
            if not data and not self._events:
                raise EOFError
        return self._events.pop(0)

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(self.ws.send(BytesMessage(data=data)))

    async def send(self, mtype: str, msgid: str, data: dict[str, Any] | None = None, **env: Any) -> None:
        await self.send_text(msg(mtype, msgid, data, **env))

    async def receive(self) -> dict[str, Any] | None:
        """The next text message as JSON, or ``None`` once the server closed.

        Pings are answered while the connection is open (a Ping parsed in the same read as a
        Close can no longer be answered, and is not); the Close frame's code and reason are
        recorded."""
        while True:
            try:
                event = await self._next_raw()
            except EOFError:
                return None
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text = "".join(self._text)
                    self._text.clear()
                    out: dict[str, Any] = json.loads(text)
                    return out
            elif isinstance(event, Ping):
                self.pings += 1
                if self.auto_pong and self.ws.state is ConnectionState.OPEN:
                    await self._send_quietly(event.response())
            elif isinstance(event, CloseConnection):
                self.close_code, self.close_reason = event.code, event.reason
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    await self._send_quietly(event.response())
                return None

    async def answer_receipt(self) -> None:
        """Read the Ping the server writes right after an answer and answer it, as jambonz's
        own client does on arrival (the Pong proves the answer was read: docs/reconnects.md).
        Anything else read first stays queued for :meth:`receive`."""
        event = await self._next_raw()
        if isinstance(event, Ping):
            self.pings += 1
            if self.auto_pong and self.ws.state is ConnectionState.OPEN:
                await self._send_quietly(event.response())
        else:
            self._events.insert(0, event)

    async def _send_quietly(self, event: Any) -> None:
        try:
            await self.stream.send_all(self.ws.send(event))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def close(self, code: int = 1000) -> None:
        """Send Close if the connection is still open (no-op otherwise)."""
        if self.ws.state is ConnectionState.OPEN:
            await self._send_quietly(CloseConnection(code=code))

    async def drop(self) -> None:
        await trio.aclose_forcefully(self.stream)


@asynccontextmanager
async def raw_client(
    server: JambonzServer,
    path: str = "/",
    *,
    lockstep: bool = False,
    auto_pong: bool = True,
) -> AsyncIterator[RawClient]:
    stream = await server.connect_memory(lockstep=lockstep)
    client = RawClient(stream, auto_pong=auto_pong)
    event = await client.handshake(path)
    assert isinstance(event, AcceptConnection), event
    try:
        yield client
    finally:
        await trio.aclose_forcefully(stream)
