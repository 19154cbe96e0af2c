"""The engine drives any :class:`~jambonz_trio._connection.Connection`, not only the server's
websocket: the seam a relayed call (frames from another process, no Pings of its own) plugs
into. Here a connection made of memory channels carries a whole call."""

from __future__ import annotations

import json
from collections.abc import Callable

import trio
import trio.testing

from jambonz_trio import Call, CallConfig, VerbHook
from jambonz_trio._connection import CloseReason, Connection, ConnectionClosed
from jambonz_trio._engine import CallEngine, Link
from jambonz_trio._protocol._messages import parse_message
from jambonz_trio.lowlevel import Identity
from jambonz_trio.verbs import Say

from .helpers import SESSION_DATA, msg


class ChannelConnection:
    """A connection whose frames come from a memory channel; keepalive and receipts delegated
    (``pings`` and ``receipts`` false), so the engine must never ping it."""

    pings = False
    receipts = False

    def __init__(self) -> None:
        self.to_app, self._inbound = trio.open_memory_channel[str](16)
        self.sent: list[str] = []
        self.on_pong: Callable[[bytes], None] | None = None
        self.closes: list[CloseReason] = []
        self.aborted = False
        self._reason: CloseReason | None = None

    @property
    def close_reason(self) -> CloseReason | None:
        return self._reason

    @property
    def close_unanswered(self) -> bool:
        return False

    async def receive(self) -> str:
        try:
            return await self._inbound.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ConnectionClosed(self._reason or CloseReason(1006, None)) from None

    async def send(self, message: str) -> None:
        if self._reason is not None:
            raise ConnectionClosed(self._reason)
        await trio.lowlevel.checkpoint()
        self.sent.append(message)

    async def ping(self, payload: bytes) -> None:
        raise AssertionError("the engine pinged a connection whose pings are delegated")

    async def close(self, code: int, reason: str | None) -> None:
        self._reason = CloseReason(code, reason)
        self.closes.append(self._reason)
        await self.to_app.aclose()

    async def abort(self) -> None:
        self.aborted = True
        self._inbound.close()


async def test_a_call_runs_on_a_connection_that_is_not_a_websocket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    conn = ChannelConnection()
    typed: Connection = conn  # it implements the interface (checked by mypy)
    first = parse_message(json.loads(msg("session:new", "m1", SESSION_DATA, call_sid="sid-1")))
    engine = CallEngine(first, config=CallConfig(ping_interval=1.0), identity=Identity(route="/"))
    link = Link(typed)
    hooks: list[str | None] = []

    async def handler(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            assert isinstance(event, VerbHook)
            hooks.append(event.hook)
            await call.ack(event, [Say(text="bye")])
            return

    async with trio.open_nursery() as nursery:
        await engine.attach(link, first, trio.current_time())
        nursery.start_soon(engine.run, handler)
        nursery.start_soon(engine.serve, link)
        await trio.sleep(60)  # sixty keepalive intervals: no Ping may be attempted
        await conn.to_app.send(msg("verb:hook", "h1", {}, hook="/g", call_sid="sid-1"))
    engine.detach(link)

    assert hooks == ["/g"]
    assert [json.loads(text) for text in conn.sent] == [
        {"type": "ack", "msgid": "m1", "data": [{"verb": "say", "text": "hi"}]},
        {"type": "ack", "msgid": "h1", "data": [{"verb": "say", "text": "bye"}]},
    ]
    assert conn.closes == [CloseReason(1000, "handler finished")] and conn.aborted
    assert engine.call.close_info is not None and engine.call.close_info.by == "app"
    assert engine.call.statistics().frames_sent == 2


async def test_a_relayed_connection_that_drops_parks_the_call(autojump_clock: trio.testing.MockClock) -> None:
    """Without pings nothing proves jambonz read the ``session:new`` answer: when the connection
    drops it is kept for the reconnect (sent again on it), as for a socket that died before
    its receipt Pong."""
    conn = ChannelConnection()
    first = parse_message(json.loads(msg("session:new", "m1", SESSION_DATA, call_sid="sid-1")))
    engine = CallEngine(first, config=CallConfig(), identity=Identity(route="/"))
    link = Link(conn)

    async def handler(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        await call.wait_closed()

    async with trio.open_nursery() as nursery:
        await engine.attach(link, first, trio.current_time())
        nursery.start_soon(engine.run, handler)
        nursery.start_soon(engine.serve, link)
        await trio.sleep(1)
        await conn.abort()  # the relay lost the socket
        await trio.sleep(1)
        assert engine.call.state.value == "disconnected"
        assert engine.protocol.session.value == "resend"
        nursery.cancel_scope.cancel()
