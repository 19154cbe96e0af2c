"""Helpers of the audio stream tests: a server with audio routes, a raw client, and a client
whose server end has hooks (``spied_client``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
import trio_websocket

from jambonz_trio import AudioRoute, JambonzServer, Route, ServerConfig, serve_jambonz
from jambonz_trio.verbs import BidirectionalAudio, Listen

STREAMING = BidirectionalAudio(enabled=True, streaming=True, sample_rate=8000)
CLIPS = BidirectionalAudio(enabled=True, streaming=False)


def listen(
    url: str = "/audio",
    *,
    bidi: BidirectionalAudio | None = STREAMING,
    sample_rate: int = 8000,
    **options: Any,
) -> Listen:
    """A listen verb the tests open audio sockets for."""
    return Listen(url=url, sample_rate=sample_rate, bidirectional_audio=bidi, **options)


async def start_server(
    nursery: trio.Nursery, routes: Sequence[Route | AudioRoute], config: ServerConfig | None = None
) -> JambonzServer:
    server: JambonzServer = await nursery.start(
        lambda task_status: serve_jambonz(routes, config=config, task_status=task_status)
    )
    return server


@asynccontextmanager
async def raw_client(
    server: JambonzServer,
    path: str = "/audio",
    *,
    subprotocols: Sequence[str] = ("audio.drachtio.org",),
    headers: Sequence[tuple[bytes, bytes]] = (),
    lockstep: bool = False,
    metadata: dict[str, Any] | str | bytes | None = None,
    queue_size: int = 64,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A plain websocket client on an in-memory connection (``lockstep``: no buffering, so a
    client that stops reading stops the server's writes). Sends ``metadata`` first if given."""
    stream = await server.connect_memory(lockstep=lockstep)
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]
            "localhost",
            path,
            subprotocols=list(subprotocols),
            extra_headers=list(headers),
            message_queue_size=queue_size,
        )
        if metadata is not None:
            await ws.send_message(json.dumps(metadata) if isinstance(metadata, dict) else metadata)
        try:
            yield ws
        finally:
            nursery.cancel_scope.cancel()


class Spy(trio.abc.Stream):
    """The server's end of an in-memory connection, with hooks: ``after_receive(data)`` runs
    (synchronously) when a read returns; a write for which ``slow_send(data)`` is true returns
    only once :attr:`slow` is set (a busy loop, a TLS record, ...). ``upgraded``: the 101 went
    out."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.upgraded = False
        self.after_receive: Callable[[bytes], None] | None = None
        self.slow_send: Callable[[bytes], bool] | None = None
        self.slow = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)
        if bytes(data).startswith(b"HTTP/1.1 101"):
            self.upgraded = True
        if self.slow_send is not None and self.slow_send(bytes(data)):
            await self.slow.wait()

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if self.after_receive is not None:
            self.after_receive(bytes(data))
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def spied_client(
    server: JambonzServer, path: str = "/audio", headers: Sequence[tuple[bytes, bytes]] = ()
) -> AsyncIterator[tuple[trio_websocket.WebSocketConnection, Spy]]:
    """A websocket client whose connection's server end is a :class:`Spy`."""
    client, server_side = trio.testing.memory_stream_pair()
    spy = Spy(server_side)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, spy)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            client,  # type: ignore[arg-type]
            "localhost",
            path,
            subprotocols=["audio.drachtio.org"],
            extra_headers=list(headers),
        )
        try:
            yield ws, spy
        finally:
            nursery.cancel_scope.cancel()
