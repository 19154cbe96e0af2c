"""examples/ivr.py, driven through the fake jambonz the way a user would test it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from examples import ivr
from jambonz_trio import JambonzServer
from jambonz_trio.commands import CallStatusCommand, Redirect
from jambonz_trio.testing import CallData, FakeCall, HandshakeRejected, open_fake_call, tcp_connector
from jambonz_trio.verbs import Gather, Hangup, Say
from tests.engine.helpers import RawClient


@asynccontextmanager
async def ivr_call(server: JambonzServer, caller: str = "+15551234567") -> AsyncIterator[FakeCall]:
    async with open_fake_call(server.connect_memory, path=ivr.PATH, call=CallData(from_=caller)) as fc:
        yield fc


@pytest.fixture
async def server(nursery: trio.Nursery) -> JambonzServer:
    started: JambonzServer = await nursery.start(partial(ivr.serve, port=0))
    return started


async def test_greeting_then_speech(server: JambonzServer) -> None:
    async with ivr_call(server) as fc:
        ack = await fc.start()
        assert ack.verbs == [
            Say(text="Hello from jambonz"),
            Gather(
                input=["speech", "digits"],
                action_hook="/gather",
                timeout=10,
                say=Say(text="Say something"),
            ),
        ]
        ack = await fc.gather_speech("/gather", "yes")
        assert ack.verbs == [Say(text="You said: yes"), Hangup()]
        await fc.expect_no_command(within=0.1)
        await fc.hangup()


async def test_digits(server: JambonzServer) -> None:
    async with ivr_call(server) as fc:
        await fc.start()
        ack = await fc.gather_digits("/gather", "42")
        assert ack.verbs == [Say(text="You pressed: 42"), Hangup()]


async def test_timeout_hangs_up(server: JambonzServer) -> None:
    async with ivr_call(server) as fc:
        await fc.start()
        ack = await fc.gather_timeout("/gather")
        assert ack.verbs == [Hangup()]


async def test_blocked_caller_gets_redirect_then_hangup(server: JambonzServer) -> None:
    """No ``mute`` any more: jambonz ignores it outside a dial or conference, and the fake
    now says so (issue 18 item 5)."""
    async with ivr_call(server, caller="+15550000001") as fc:
        await fc.start()
        assert (await fc.expect_command(Redirect)).verbs == (Say(text="redirected"),)
        assert (await fc.expect_command(CallStatusCommand)).call_status == "completed"
        assert [c.name for c in fc.commands] == ["redirect", "call:status"]


async def test_other_callers_get_no_commands(server: JambonzServer) -> None:
    async with ivr_call(server, caller="+15083084809") as fc:
        await fc.start()
        await fc.expect_no_command(within=0.2)


async def test_state_survives_a_reconnect_after_session_new(
    server: JambonzServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with ivr_call(server) as fc:
        await fc.start()
        call = server.calls[fc.call.call_sid]
        await fc.drop()
        ack = await fc.reconnect()
        assert ack.request_type == "session:reconnect"
        assert server.calls[fc.call.call_sid] is call and call.reconnect_count == 1
        ack = await fc.gather_speech("/gather", "still here")
        assert ack.verbs == [Say(text="You said: still here"), Hangup()]
        assert call.user_data["hooks"] == 1


async def test_state_survives_a_drop_before_the_session_new_ack(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """jambonz re-keys the unanswered session:new to the session:reconnect msgid."""
    slow = trio.Event()

    async def slow_ivr(call: Call) -> None:
        await slow.wait()  # the app is slow to answer: the socket drops first
        await ivr.ivr(call)

    from jambonz_trio import Call, Route, serve_jambonz

    server: JambonzServer = await nursery.start(
        lambda task_status: serve_jambonz(Route(path=ivr.PATH, handler=slow_ivr), task_status=task_status)
    )
    async with ivr_call(server) as fc:
        async with trio.open_nursery() as inner:
            inner.start_soon(_start_expecting_rekey, fc)
            await trio.testing.wait_all_tasks_blocked()
            await fc.drop()
            slow.set()
        call = server.calls[fc.call.call_sid]
        assert fc.acks[0].request_type == "session:new"
        assert fc.acks[0].verb_names == ["say", "gather"]
        ack = await fc.gather_digits("/gather", "7")
        assert ack.verbs == [Say(text="You pressed: 7"), Hangup()]
        assert call.user_data["hooks"] == 1


async def _start_expecting_rekey(fc: FakeCall) -> None:
    ack = await fc.start()
    assert ack.msgid != ack.request.msgid  # answered on the session:reconnect msgid


async def test_basic_auth_over_tcp(nursery: trio.Nursery) -> None:
    server: JambonzServer = await nursery.start(
        partial(ivr.serve, port=0, username="jambonz", password="s3:cret")
    )
    url = f"ws://127.0.0.1:{server.port}{ivr.PATH}"
    with trio.fail_after(10):
        async with open_fake_call(tcp_connector(url), username="jambonz", password="s3:cret") as fc:
            assert (await fc.start()).verb_names == ["say", "gather"]
        with pytest.raises(HandshakeRejected, match="401"):
            async with open_fake_call(tcp_connector(url), username="jambonz", password="wrong"):
                pass


async def test_a_transcript_over_the_frame_limit_is_capped(server: JambonzServer) -> None:
    """Issue 19 item 13: before, the echo ack raised MessageTooLarge and the call ended with
    an ERROR."""
    async with ivr_call(server) as fc:
        await fc.start()
        ack = await fc.gather_speech("/gather", "x" * 30_000)
        assert ack.verbs == [Say(text="You said: " + "x" * 500 + "..."), Hangup()]


async def test_a_lone_surrogate_in_a_transcript_is_replaced(server: JambonzServer) -> None:
    """Issue 19 item 13: ``"\\ud800"`` is valid JSON (jambonz's ``JSON.stringify`` writes such
    escapes) that no UTF-8 frame can carry back; before, the echo ack raised. Sent raw: the
    fake jambonz cannot encode it either."""
    stream = await server.connect_memory()
    client = RawClient(stream)
    await client.handshake(ivr.PATH)
    await client.send("session:new", "m1", {"call_sid": "sid-1", "from": "+1555"}, call_sid="sid-1")
    assert (await client.receive() or {}).get("type") == "ack"
    speech = {"is_final": True, "alternatives": [{"transcript": "bad \ud800 text"}]}
    await client.send("verb:hook", "h1", {"reason": "speechDetected", "speech": speech}, hook="/gather")
    reply = await client.receive()
    assert reply == {
        "type": "ack",
        "msgid": "h1",
        "data": [{"verb": "say", "text": "You said: bad ? text"}, {"verb": "hangup"}],
    }
    await trio.aclose_forcefully(stream)
