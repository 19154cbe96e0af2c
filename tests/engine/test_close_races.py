"""Close races inside trio-websocket must stay inside one connection (FM-09, F2)."""

from __future__ import annotations

import os

import trio
import trio.testing

from jambonz_trio import Call, JambonzServer, VerbHook
from jambonz_trio.verbs import Hangup, Say

from .helpers import raw_client
from .test_call_engine import new_call, start


def masked_ping(payload: bytes = b"") -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x89, 0x80 | len(payload)]) + mask + body


async def test_fm09_ping_during_server_close_does_not_kill_the_server(
    nursery: trio.Nursery,
) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        if call.call_sid == "victim":
            return  # the handler ends: the server starts the close handshake
        async for event in call:
            if isinstance(event, VerbHook):
                await call.ack(event, [Hangup()])

    server: JambonzServer = await start(nursery, app)
    async with raw_client(server) as healthy:
        await new_call(healthy, sid="healthy")
        async with raw_client(server) as victim:
            await victim.send("session:new", "v1", {"call_sid": "victim"}, call_sid="victim")
            assert (await victim.receive() or {}).get("type") == "ack"
            # wait for the server's Close frame, then answer it with a Ping instead of a Close
            data = await victim.stream.receive_some(1024)
            assert data[:1] == b"\x88"
            await victim.stream.send_all(masked_ping(b"race"))
            await trio.testing.wait_all_tasks_blocked()
        # the server is alive: the healthy call still gets its acks, and new calls work
        await healthy.send("verb:hook", "h1", {}, hook="/g", call_sid="healthy")
        assert await healthy.receive() == {
            "type": "ack",
            "msgid": "h1",
            "data": [{"verb": "hangup"}],
        }
        async with raw_client(server) as fresh:
            assert (await new_call(fresh, sid="fresh") or {}).get("type") == "ack"
