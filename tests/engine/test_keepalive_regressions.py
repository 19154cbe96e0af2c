"""Regressions from the review of the keepalive once it moved into the watchdog (issue 8):
a stale clock after slow auto-answers, and a Ping cut half-way by its send deadline."""

from __future__ import annotations

import trio
import trio.testing
from wsproto.events import Ping

from jambonz_trio import Call, CallConfig, Event, ServerConfig, serve_jambonz
from jambonz_trio.commands import RedirectCommand
from jambonz_trio.messages import Disconnected
from jambonz_trio.verbs import Say

from .helpers import SESSION_DATA, RawClient


async def test_slow_auto_answers_do_not_shorten_the_pong_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Two hooks go unanswered while the peer reads only every 6 s (but answers pings within
    1 s): the watchdog's writes take a while, and the ping's deadlines must start after them."""
    events: list[Event] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            events.append(event)

    config = ServerConfig(call=CallConfig(ping_interval=4, ping_timeout=10, send_timeout=10))
    server = await nursery.start(
        lambda task_status: serve_jambonz(app, config=config, task_status=task_status)
    )
    stream = await server.connect_memory(lockstep=True)
    client = RawClient(stream, auto_pong=False)
    await client.handshake()
    await client.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
    ack = await client.receive()
    assert ack is not None and ack["type"] == "ack"
    await client.send("verb:hook", "h1", {}, hook="/a", call_sid="sid-1")
    await client.send("verb:hook", "h2", {}, hook="/b", call_sid="sid-1")
    pongs = 0
    t0 = trio.current_time()
    while trio.current_time() - t0 < 40:
        await trio.sleep(6)
        data = await stream.receive_some(65536)
        assert data, "the server dropped a healthy peer"
        client.ws.receive_data(bytes(data))
        for event in client.ws.events():
            if isinstance(event, Ping):
                await trio.sleep(1)
                await stream.send_all(client.ws.send(event.response()))
                pongs += 1
    assert pongs >= 3
    assert not any(isinstance(e, Disconnected) for e in events)


class CongestedLink(trio.abc.Stream):
    """Writes trickle out 3 bytes every 2 s while ``slow`` is set."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.slow = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        rest = bytes(data)
        while rest:
            n = 3 if self.slow else len(rest)
            await self.inner.send_all(rest[:n])
            rest = rest[n:]
            if self.slow and rest:
                await trio.sleep(2)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_ping_cut_half_way_ends_the_socket(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A Ping cut by send_timeout after 3 of its bytes: nothing may be written after it (the
    peer would read garbage); the socket is reported lost and commands wait for a reconnect."""
    calls: list[Call] = []

    async def app(call: Call) -> None:
        calls.append(call)
        await call.ack(call.session, [Say(text="hi")])
        await call.wait_closed()

    config = ServerConfig(call=CallConfig(ping_interval=20, ping_timeout=30, send_timeout=1))
    server = await nursery.start(
        lambda task_status: serve_jambonz(app, config=config, task_status=task_status)
    )
    client_end, server_end = trio.testing.memory_stream_pair()
    link = CongestedLink(server_end)
    nursery.start_soon(server.handle_stream, link)
    client = RawClient(client_end)
    await client.handshake()
    await client.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
    ack = await client.receive()
    assert ack is not None and ack["type"] == "ack"
    await trio.sleep(19.5)
    link.slow = True
    await trio.sleep(2)  # the 1 s send_timeout cuts the Ping after 3 bytes
    link.slow = False
    assert calls[0].state.value == "disconnected"
    with trio.move_on_after(1):  # a command now waits for a reconnect instead of following
        await calls[0].send_command(RedirectCommand(verbs=(Say(text="next"),)))
    assert calls[0].statistics().frames_sent == 1  # the session:new ack; nothing after the cut
