"""Helpers of the audio stream tests: a server with audio routes, and a raw client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
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
