"""examples/ivr_conversation.py: the IVR of examples/ivr.py in the conversation style.

The two send different wire verbs (the conversation turns ``notifyEvents`` on and names its
own hooks), so these tests compare what the caller hears, played through the fake jambonz.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from examples import ivr, ivr_conversation
from jambonz_trio import JambonzServer
from jambonz_trio.commands import CallStatusCommand, RedirectCommand
from jambonz_trio.testing import (
    CallData,
    Caller,
    Connector,
    Digits,
    HandshakeRejected,
    HangUp,
    Speech,
    open_fake_call,
    run_call,
    tcp_connector,
)
from jambonz_trio.verbs import Config, Gather, Hangup, Say

from .helpers import capture_serve, heard

Serve = Callable[..., Awaitable[None]]


async def place_call(
    connector: Connector, caller: Caller, **kwargs: Any
) -> tuple[list[tuple[str, str]], list[Gather]]:
    """Play one whole call; returns the narration and the gathers the caller met."""
    steps: list[tuple[str, str]] = []
    gathers: list[Gather] = []
    answer = caller.answer

    async def on_gather(gather: Gather) -> Speech | Digits | HangUp | None:
        gathers.append(gather)
        return await answer(gather)

    async with open_fake_call(connector, path=ivr.PATH, **kwargs) as fc:
        await run_call(fc, Caller(on_gather=on_gather), on_step=lambda who, text: steps.append((who, text)))
        assert fc.is_over
    return steps, gathers


async def start(nursery: trio.Nursery, serve: Serve, **kwargs: Any) -> JambonzServer:
    server: JambonzServer = await nursery.start(partial(serve, port=0, **kwargs))
    return server


@pytest.mark.parametrize(
    ("answer", "reply"),
    [
        (Speech("yes"), ["You said: yes"]),
        (Speech("x" * 30_000), ["You said: " + "x" * 500 + "..."]),  # issue 19 item 13: capped
        (Digits("42"), ["You pressed: 42"]),
        (None, []),  # 10 s of silence: straight to the hang-up
    ],
)
@pytest.mark.parametrize("serve", [ivr.serve, ivr_conversation.serve], ids=["callback", "conversation"])
async def test_the_caller_hears_the_same_ivr(
    nursery: trio.Nursery, serve: Serve, answer: Speech | Digits | None, reply: list[str]
) -> None:
    server = await start(nursery, serve)
    steps, gathers = await place_call(server.connect_memory, Caller(answer))
    assert heard(steps) == ["Hello from jambonz", "Say something", *reply]
    [gather] = gathers
    assert gather.input == ["speech", "digits"] and gather.timeout == 10
    assert gather.say == Say(text="Say something")
    assert steps[-1] == ("jambonz", "runs hangup: the call ends")  # the app hung up, not the caller


@pytest.mark.parametrize("serve", [ivr.serve, ivr_conversation.serve], ids=["callback", "conversation"])
async def test_both_versions_take_the_portal_variables(nursery: trio.Nursery, serve: Serve) -> None:
    """The conversation version serves ivr.py's route: the same variables change what the
    caller hears and how long the gather waits."""
    server = await start(nursery, serve)
    data = CallData(env_vars={"GREETING": "Welcome to Acme", "GATHER_TIMEOUT": 3})
    steps, gathers = await place_call(server.connect_memory, Caller(Speech("yes")), call=data)
    assert heard(steps) == ["Welcome to Acme", "Say something", "You said: yes"]
    assert gathers[0].timeout == 3


async def test_wire_shape_of_the_conversation_version(nursery: trio.Nursery) -> None:
    server = await start(nursery, ivr_conversation.serve)
    async with open_fake_call(server.connect_memory, path=ivr.PATH) as fc:
        await run_call(fc, Caller("yes"))
    assert fc.acks[0].verbs == [Config(notify_events=True), Say(text="Hello from jambonz", id="jt-1")]
    assert fc.acks[1].verbs == [Say(text="You said: yes", id="jt-3")]  # answers the gather's hook
    redirects = [c.command for c in fc.commands if isinstance(c.command, RedirectCommand)]
    assert [type(r.verbs[0]) for r in redirects] == [Gather, Hangup]
    assert all(r.queue for r in redirects)
    assert fc.violations == []


async def test_blocked_caller_gets_redirect_then_hangup(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """The supervisor's redirect interrupts the conversation's greeting (issue 18 item 4): the
    handler catches ``OperationInterrupted`` and leaves the call to the supervisor."""
    server = await start(nursery, ivr_conversation.serve)
    async with open_fake_call(
        server.connect_memory, path=ivr.PATH, call=CallData(from_="+15550000001")
    ) as fc:
        await fc.start()
        assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="redirected"),)
        assert (await fc.expect_command(CallStatusCommand)).call_status == "completed"
        assert [c.name for c in fc.commands] == ["redirect", "call:status"]
        await fc.hangup(by="jambonz")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_other_callers_get_no_supervisor_commands(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start(nursery, ivr_conversation.serve, blocklist=["+15550000009"])
    async with open_fake_call(
        server.connect_memory, path=ivr.PATH, call=CallData(from_="+15550000001")
    ) as fc:
        await fc.start()
        await fc.expect_no_command(within=2)  # the say is still "playing": nothing else comes


async def test_a_reconnect_during_the_gather_is_invisible_to_the_handler(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start(nursery, ivr_conversation.serve)
    async with open_fake_call(server.connect_memory, path=ivr.PATH) as fc:
        ack = await fc.start()
        await fc.verb_status("finished", id=ack.verbs[-1].id, name="say")
        gather = (await fc.expect_command(RedirectCommand)).verbs[0]
        assert isinstance(gather, Gather)
        call = server.calls[fc.call.call_sid]
        # jambonz reports the gather started (notifyEvents is on): it had the redirect, so the
        # drop below does not make the conversation send it again
        await fc.verb_status("starting", id=gather.id, name="gather")
        await fc.drop()
        await fc.reconnect()
        assert server.calls[fc.call.call_sid] is call and call.reconnect_count == 1
        ack = await fc.gather_speech(str(gather.action_hook), "still here", verb_id=gather.id)
        assert [v.text for v in ack.verbs if isinstance(v, Say)] == ["You said: still here"]
        await fc.verb_status("finished", id=ack.verbs[0].id, name="say")
        assert isinstance((await fc.expect_command(RedirectCommand)).verbs[0], Hangup)
        await fc.hangup(by="jambonz")


async def test_caller_hanging_up_mid_gather_is_not_an_error(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start(nursery, ivr_conversation.serve)
    async with open_fake_call(server.connect_memory, path=ivr.PATH) as fc:
        ack = await fc.start()
        await fc.verb_status("finished", id=ack.verbs[-1].id, name="say")
        await fc.expect_command(RedirectCommand)  # the gather
        call = server.calls[fc.call.call_sid]
        await fc.hangup()
        await call.wait_closed()
        await fc.wait_idle(1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def test_basic_auth_over_tcp(nursery: trio.Nursery) -> None:
    server = await start(nursery, ivr_conversation.serve, username="jambonz", password="s3:cret")
    url = f"ws://127.0.0.1:{server.port}{ivr.PATH}"
    with trio.fail_after(10):
        steps, _ = await place_call(
            tcp_connector(url), Caller("over tcp"), username="jambonz", password="s3:cret"
        )
        assert heard(steps) == ["Hello from jambonz", "Say something", "You said: over tcp"]
        with pytest.raises(HandshakeRejected, match="401"):
            async with open_fake_call(tcp_connector(url), username="jambonz", password="wrong"):
                pass


def test_main_parses_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAMBONZ_WS_USERNAME", "env-user")
    monkeypatch.setenv("JAMBONZ_WS_PASSWORD", "env-pass")
    seen = capture_serve(monkeypatch, ivr_conversation)
    ivr_conversation.main(["--port", "9000", "--password", "flag-pass", "--blocklist", "+1", "+2"])
    assert seen == {
        "host": "127.0.0.1",
        "port": 9000,
        "username": "env-user",
        "password": "flag-pass",
        "blocklist": ["+1", "+2"],
    }
