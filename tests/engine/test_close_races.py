"""Close races inside trio-websocket must stay inside one connection (FM-09, F2)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import trio
import trio.testing
from wsproto.events import CloseConnection, TextMessage

from jambonz_trio import Call, CallClosed, JambonzServer, VerbHook
from jambonz_trio._call import engine_of
from jambonz_trio._protocol._messages import TtsTokensResult, parse_message
from jambonz_trio.verbs import Hangup, Say
from tests.helpers import Serve, start

from .helpers import BAD_FRAME, drain, msg, new_call, raw_client


def masked_ping(payload: bytes = b"") -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x89, 0x80 | len(payload)]) + mask + body


async def test_fm09_ping_during_server_close_does_not_kill_the_server(
    serve: Serve,
) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        if call.call_sid == "victim":
            return  # the handler ends: the server starts the close handshake
        async for event in call:
            if isinstance(event, VerbHook):
                await call.ack(event, [Hangup()])

    server: JambonzServer = await serve(app)
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


def tts_sender(out: list[str], done: trio.Event) -> Callable[[Call], Awaitable[None]]:
    """An app that sends ``tts:tokens`` once and notes how it ended (``CallClosed``)."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        try:
            out.append(repr(await call.send_tts_tokens("hello")))
        except CallClosed:
            out.append("CallClosed")
        done.set()

    return app


async def test_fm27_tts_full_then_the_call_ending_raises_callclosed(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Review r7: deterministic; the receive loop's two steps (the 'full' result, then jambonz's Close)
    run back to back, before the sender task wakes up."""
    out: list[str] = []
    done = trio.Event()
    server = await serve(tts_sender(out, done))
    with trio.fail_after(120):
        async with raw_client(server) as client:
            await new_call(client)
            tokens = await client.receive()
            assert tokens is not None and tokens["type"] == "command" and tokens["command"] == "tts:tokens"
            call = server.calls["sid-1"]
            engine = engine_of(call)
            link = engine.link
            assert link is not None
            result = parse_message(
                {
                    "type": "tts:tokens-result",
                    "msgid": "t1",
                    "call_sid": "sid-1",
                    "data": {"id": tokens["data"]["id"], "status": "failed", "reason": "full"},
                }
            )
            assert isinstance(result, TtsTokensResult)
            await engine._on_message(link, result, trio.current_time())  # no checkpoint inside
            engine._connection_closed(link, 1000, "call ended")
            assert call.closed
            with trio.fail_after(60):  # old: waited forever on a fresh, never-set resume event
                await done.wait()
    assert out == ["CallClosed"]


async def test_fm27_tts_full_then_a_close_over_the_wire_raises_callclosed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Review r7: the reviewer's wire-level race, 30 times (the old code hung in about half of them)."""

    async def once() -> list[str]:
        out: list[str] = []
        finished = trio.Event()
        async with trio.open_nursery() as nursery:
            server = await start(nursery, tts_sender(out, finished))
            async with raw_client(server) as client:
                await new_call(client)
                tokens = await client.receive()
                assert tokens is not None
                tid = tokens["data"]["id"]
                # a bad frame first: the receive loop is busy writing its ack while
                # trio-websocket queues the result and processes the Close
                data = client.ws.send(TextMessage(data=BAD_FRAME))
                data += client.ws.send(
                    TextMessage(
                        data=msg(
                            "tts:tokens-result",
                            "t1",
                            {"id": tid, "status": "failed", "reason": "full"},
                            call_sid="sid-1",
                        )
                    )
                )
                await client.stream.send_all(data + client.ws.send(CloseConnection(code=1000)))
                await trio.sleep(0.1)
                await drain(client)
                with trio.move_on_after(60):  # old: hung in about half of the runs
                    await finished.wait()
            nursery.cancel_scope.cancel()
        return out

    results: dict[str, int] = {}
    with trio.fail_after(30 * 100):
        for _ in range(30):
            for r in await once() or ["HUNG"]:
                results[r] = results.get(r, 0) + 1
    assert results == {"CallClosed": 30}
