"""After a drop before jambonz read the ``session:new`` answer, feature-server 0.9.8 re-keys it
to the next ``session:reconnect`` and then holds every later message of the call for good
(FS v0.9.8 ``lib/utils/ws-requestor.js:86-91``, ``:184``, ``:244-260``, ``:296-311``). The
library closes the socket once (1012) when the answer on the new socket is proven read and
jambonz stays quiet for ``CallConfig.rekey_quiet``: jambonz's ordinary reconnect releases the
queue (``:367``, ``:421-458``, ``:537-538``). docs/reconnects.md."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from jambonz_trio import Call, CallStatus, VerbHook
from jambonz_trio.messages import Disconnected, Reconnected
from jambonz_trio.testing import open_fake_call
from jambonz_trio.verbs import Hangup, Say
from tests.helpers import Serve

from .helpers import SESSION_DATA, raw_client, reconnect

RELEASE = "jambonz 0.9.8 holds this call's traffic after a re-keyed session:new; reconnecting to release it"
STUCK_WARNING = "may leave later traffic of this call queued"


def slow_app(events: list[Any], answered: trio.Event | None = None) -> Any:
    """Answers ``session:new`` only once ``go`` is set (the socket drops first), then answers
    hooks with a hang-up and records every event."""
    go = trio.Event()

    async def app(call: Call) -> None:
        await go.wait()
        await call.ack(call.session, [Say(text="hello")])
        if answered is not None:
            answered.set()
        async for event in call:
            events.append(event)
            if isinstance(event, VerbHook):
                await call.ack(event, [Hangup()])

    app.go = go  # type: ignore[attr-defined]
    return app


async def test_a_stuck_call_is_released_by_one_close(
    serve: Serve, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """jambonz (a raw client) sends nothing after the re-keyed answer: the library closes the
    socket with 1012 ``rekey_quiet`` after the receipt Pong; jambonz's reconnect is answered
    as an ordinary one and what it held then reaches the app. The app sees the drop it caused
    (Disconnected 1012, Reconnected), nothing lost."""
    caplog.set_level(logging.INFO)
    events: list[Any] = []
    app = slow_app(events)
    server = await serve(app)
    sid = "sid-1"
    async with raw_client(server) as first:
        await first.send("session:new", "m1", {**SESSION_DATA, "call_sid": sid}, call_sid=sid)
        await trio.testing.wait_all_tasks_blocked()
        await first.drop()
    call = server.calls[sid]
    async with raw_client(server) as second:
        await second.send("session:reconnect", "r1", {**SESSION_DATA, "call_sid": sid}, call_sid=sid)
        app.go.set()
        ack = await second.receive()
        assert ack is not None and ack["msgid"] == "r1" and ack["data"][0]["verb"] == "say"
        await second.answer_receipt()
        t0 = trio.current_time()
        with trio.fail_after(30):
            assert await second.receive() is None  # the library closed the socket
        assert second.close_code == 1012
        assert trio.current_time() - t0 == pytest.approx(1.0, abs=0.01)  # rekey_quiet
    assert call.state.value == "disconnected" and call.close_info is None and server.calls[sid] is call
    async with raw_client(server) as third:
        assert await reconnect(third, msgid="r2") == {"type": "ack", "msgid": "r2", "data": []}
        await third.answer_receipt()
        await third.send("call:status", "s1", {"call_status": "trying"}, call_sid=sid)  # released
        await third.send("verb:hook", "h1", {}, hook="/gather", call_sid=sid)
        hook_ack = await third.receive()
        assert hook_ack is not None and hook_ack["msgid"] == "h1"
        with trio.move_on_after(5):
            assert await third.receive() is None, "no second close"
        assert third.close_code is None
    assert [type(e).__name__ for e in events] == [
        "Disconnected",  # socket 1
        "Reconnected",
        "Disconnected",  # the library's close
        "Reconnected",
        "CallStatus",
        "VerbHook",
        "Disconnected",  # socket 3 (the test's end)
    ]
    assert events[2] == Disconnected(code=1012, reason="reconnect to release held messages")
    assert isinstance(events[3], Reconnected) and events[3].count == 2 == call.reconnect_count
    assert isinstance(events[4], CallStatus) and events[4].call_status == "trying"
    messages = [r.getMessage() for r in caplog.records]
    assert sum(RELEASE in m for m in messages) == 1
    assert not any(STUCK_WARNING in m for m in messages)


async def test_no_close_when_jambonz_sends_after_the_reconnect(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """The answer was written on socket 1 and its receipt Pong never came: the library sends it
    again on the reconnect. jambonz had read it (its reconnect is an ordinary one): it sends
    its queued traffic right after the ack, and the library leaves the socket alone."""
    events: list[Any] = []
    app = slow_app(events)
    app.go.set()
    server = await serve(app)
    sid = "sid-1"
    async with raw_client(server, auto_pong=False) as first:
        await first.send("session:new", "m1", {**SESSION_DATA, "call_sid": sid}, call_sid=sid)
        assert (await first.receive() or {}).get("msgid") == "m1"
        await first.drop()  # the receipt Ping is never answered
    async with raw_client(server) as second:
        ack = await reconnect(second)
        assert ack is not None and ack["msgid"] == "r1" and ack["data"][0]["verb"] == "say"  # again
        await second.answer_receipt()
        await second.send("call:status", "s1", {"call_status": "in-progress"}, call_sid=sid)
        with trio.move_on_after(10):
            await second.receive()
            pytest.fail("the library closed or sent something")
        assert second.close_code is None
    assert [type(e).__name__ for e in events[:3]] == ["Disconnected", "Reconnected", "CallStatus"]


@pytest.mark.parametrize(
    "options", [{"rekey_quiet": None}, {"rekey_quiet": 0}, {"reconnect_budget": 2}], ids=repr
)
async def test_no_close_when_disabled_or_out_of_budget(
    serve: Serve,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
    options: dict[str, Any],
) -> None:
    """``rekey_quiet=None`` (or 0) turns the close off; so does a budget that leaves jambonz
    no reconnect (``reconnect_budget=2``: its second connection is its last, rc). Today's
    warning instead, and the socket stays open."""
    caplog.set_level(logging.INFO)
    events: list[Any] = []
    app = slow_app(events)
    server = await serve(app, **options)
    sid = "sid-1"
    async with raw_client(server) as first:
        await first.send("session:new", "m1", {**SESSION_DATA, "call_sid": sid}, call_sid=sid)
        await trio.testing.wait_all_tasks_blocked()
        await first.drop()
    async with raw_client(server) as second:
        await second.send("session:reconnect", "r1", {**SESSION_DATA, "call_sid": sid}, call_sid=sid)
        app.go.set()
        assert (await second.receive() or {}).get("msgid") == "r1"
        await second.answer_receipt()
        with trio.move_on_after(10):
            await second.receive()
            pytest.fail("the library closed or sent something")
        assert second.close_code is None
    messages = [r.getMessage() for r in caplog.records]
    assert any(STUCK_WARNING in m for m in messages)
    assert not any(RELEASE in m for m in messages)


async def test_the_fake_releases_what_it_held(serve: Serve, autojump_clock: trio.testing.MockClock) -> None:
    """Against the fake jambonz, strict: the app answers ``session:new`` after the drop (on the
    re-keyed ``session:reconnect``); the fake holds the "trying" and the gather result as
    jambonz 0.9.8 does; the library's close makes it reconnect and release them: the hook is
    answered, no violation (``never-sent`` or other) is left."""
    events: list[Any] = []
    answered = trio.Event()
    app = slow_app(events, answered)
    server = await serve(app)
    async with open_fake_call(server.connect_memory) as fc:
        async with trio.open_nursery() as nursery:

            async def start() -> None:
                ack = await fc.start()
                assert ack.msgid != ack.request.msgid  # answered on the session:reconnect msgid

            nursery.start_soon(start)
            await trio.testing.wait_all_tasks_blocked()
            await fc.drop()
            app.go.set()
        ack = await fc.gather_digits("/gather", "7")
        assert ack.verbs == [Hangup()] and ack.connection == 3
        assert [c.code for c in fc.closes] == [1012]
        await fc.hangup()
        assert fc.violations == []
    # (jambonz re-sends queued requests before queued notifications, ws-requestor.js:215-226)
    names = ["Disconnected", "Reconnected", "Disconnected", "Reconnected", "VerbHook", "CallStatus"]
    assert [type(e).__name__ for e in events[:6]] == names
    assert isinstance(events[5], CallStatus) and events[5].call_status == "trying"


async def test_a_call_first_seen_on_a_reconnect_is_not_closed_when_jambonz_has_no_reconnect_left(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """A call first seen here through ``session:reconnect`` (an app restart, a drained call):
    jambonz has made at least 2 connections already (``:367``). With ``rc=2``
    (``reconnect_budget=2``) it has no reconnect left (``:455``: 2 < 2 is false): the
    library must not close the socket, as it does not for a known call in the same position
    (test_no_close_when_disabled_or_out_of_budget). It counted the first-seen reconnect as
    0 reconnects (``reconnect_allowed(0, 2)``) and closed with 1012: jambonz never came
    back, the call was lost."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hello")])
        async for _event in call:
            pass

    server = await serve(app, reconnect_budget=2)
    sid = "sid-1"
    async with raw_client(server) as client:
        await client.send("session:reconnect", "r1", {**SESSION_DATA, "call_sid": sid}, call_sid=sid)
        ack = await client.receive()
        assert ack is not None and ack["msgid"] == "r1"
        await client.answer_receipt()
        with trio.move_on_after(10):
            got = await client.receive()
            assert got is not None, f"the library closed the socket ({client.close_code})"
        assert client.close_code is None


async def test_no_release_close_when_the_server_could_not_park_the_call(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """``max_parked_calls=1`` and one call already waits for its reconnect. A second call is
    held by jambonz after a re-keyed ``session:new``; the library's release close parks it
    like a drop, the table refuses it, and the library gives up the call it closed itself
    ("too many disconnected calls"): a connected, working call lost by the library's own
    choice. (It should not close when the call cannot be parked.)"""
    go = trio.Event()

    async def app(call: Call) -> None:
        if call.call_sid == "sid-y":
            await go.wait()
        await call.ack(call.session, [Say(text="hello")])
        async for _event in call:
            pass

    server = await serve(app, max_parked_calls=1)
    async with raw_client(server) as y1:
        await y1.send("session:new", "n1", {**SESSION_DATA, "call_sid": "sid-y"}, call_sid="sid-y")
        await trio.testing.wait_all_tasks_blocked()
        await y1.drop()
    call_y = server.calls["sid-y"]
    async with raw_client(server) as y2:
        await y2.send("session:reconnect", "r1", {**SESSION_DATA, "call_sid": "sid-y"}, call_sid="sid-y")
        await trio.testing.wait_all_tasks_blocked()
        async with raw_client(server) as x:
            await x.send("session:new", "m1", {**SESSION_DATA, "call_sid": "sid-x"}, call_sid="sid-x")
            assert (await x.receive() or {}).get("msgid") == "m1"
            await x.answer_receipt()
            await x.drop()  # parked: waits reconnect_grace (60 s) for jambonz
        await trio.testing.wait_all_tasks_blocked()
        assert server.calls["sid-x"].state.value == "disconnected"
        go.set()
        assert (await y2.receive() or {}).get("msgid") == "r1"
        await y2.answer_receipt()
        with trio.move_on_after(5):
            await y2.receive()
        await trio.testing.wait_all_tasks_blocked()
        # (checked with y2 still open: its end, below, is a drop the table refuses too)
        assert call_y.close_info is None, (
            f"the library closed the socket ({y2.close_code}) and then gave the call up: {call_y.close_info}"
        )
