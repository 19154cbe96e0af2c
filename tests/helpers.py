"""Helpers shared by every test directory (one copy of each): jambonz's payloads and frames,
a server to test against, a jambonz-like websocket client, and the apps most tests serve.

Directory helpers (``tests/engine/helpers.py``, ``tests/admission/helpers.py``,
``tests/reliability/helpers.py``) keep only what is theirs: a frame-level client, hand-made
HTTP requests, process probes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import attrs
import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

from jambonz_trio import (
    Call,
    CallConfig,
    JambonzServer,
    JambonzTrioError,
    Route,
    ServerConfig,
    VerbHook,
    serve_jambonz,
)
from jambonz_trio.verbs import Say

App = Callable[[Call], Awaitable[None]]
#: The ``serve`` fixture (tests/conftest.py): ``server = await serve(app, **options)``, like
#: :func:`start` in the test's nursery.
Serve = Callable[..., Awaitable[JambonzServer]]

#: The ``data`` of a ``session:new`` (``env_vars`` holds a secret: logs must never show it).
SESSION_DATA: dict[str, Any] = {
    "call_sid": "sid-1",
    "account_sid": "acct-1",
    "from": "+15083084809",
    "to": "+15083728299",
    "direction": "inbound",
    "call_status": "trying",
    "env_vars": {"API_KEY": "s3cret-value"},
}


def session_data(call_sid: str) -> dict[str, Any]:
    """:data:`SESSION_DATA` for the call ``call_sid``."""
    return {**SESSION_DATA, "call_sid": call_sid}


def msg(mtype: str, msgid: str, data: dict[str, Any] | None = None, **env: Any) -> str:
    """A jambonz message as the text of one frame (``data`` defaults to ``{}``)."""
    out: dict[str, Any] = {"type": mtype, "msgid": msgid, **env}
    out["data"] = data if data is not None else {}
    return json.dumps(out)


def basic(user: bytes | str, password: bytes | str) -> bytes:
    """The ``Authorization`` value of HTTP Basic auth."""
    u = user.encode() if isinstance(user, str) else user
    p = password.encode() if isinstance(password, str) else password
    return b"Basic " + base64.b64encode(u + b":" + p)


def basic_headers(user: str, password: str) -> list[tuple[bytes, bytes]]:
    """The header list of a handshake with Basic auth."""
    return [(b"authorization", basic(user, password))]


_SERVER_FIELDS = frozenset(f.name for f in attrs.fields(ServerConfig))


async def start(nursery: trio.Nursery, app: App | Route | Sequence[Route], **options: Any) -> JambonzServer:
    """Serve ``app`` on 127.0.0.1 (a free port) in ``nursery``. ``options`` are
    :class:`ServerConfig` and :class:`CallConfig` fields, by name (they share none)."""
    server_options = {k: v for k, v in options.items() if k in _SERVER_FIELDS}
    call = CallConfig(**{k: v for k, v in options.items() if k not in _SERVER_FIELDS})
    config = ServerConfig(**server_options, call=call)
    server: JambonzServer = await nursery.start(
        lambda task_status: serve_jambonz(app, config=config, task_status=task_status)
    )
    return server


async def answer_and_wait(call: Call) -> None:
    """Answer ``session:new`` with a ``say`` and wait for the call to end."""
    await call.ack(call.session, [Say(text="hi")])
    await call.wait_closed()


def recording(calls: list[Call], text: str = "hi") -> App:
    """An app that notes each call in ``calls``, answers ``session:new`` with ``say text`` and
    waits for the call to end."""

    async def app(call: Call) -> None:
        calls.append(call)
        await call.ack(call.session, [Say(text=text)])
        await call.wait_closed()

    return app


async def answering(call: Call) -> None:
    """Answer ``session:new`` with ``hi`` and every hook with ``ok <hook>``, whatever fails."""
    await call.ack(call.session, [Say(text="hello")])
    async for event in call:
        if isinstance(event, VerbHook):
            try:
                await call.ack(event, [Say(text=f"ok {event.hook}")])
            except JambonzTrioError:
                pass


@asynccontextmanager
async def open_ws(
    stream: trio.abc.Stream, path: str = "/", *, headers: Sequence[tuple[bytes, bytes]] = ()
) -> AsyncIterator[WebSocketConnection]:
    """A jambonz-like websocket client (trio-websocket) over ``stream``; closed at the end."""
    async with trio.open_nursery() as nursery:
        ws = await wrap_client_stream(
            nursery,
            cast(trio.SocketStream, stream),
            "127.0.0.1",
            path,
            subprotocols=["ws.jambonz.org"],
            extra_headers=list(headers),
        )
        try:
            yield ws
        finally:
            with trio.move_on_after(1):
                await ws.aclose()
            nursery.cancel_scope.cancel()


async def recv(ws: WebSocketConnection) -> dict[str, Any]:
    """The next message, as JSON."""
    text = await ws.get_message()
    assert isinstance(text, str)
    out: dict[str, Any] = json.loads(text)
    return out
