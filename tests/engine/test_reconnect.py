"""Reconnect continuity and the call registry (FM-24, FM-28..FM-35, S-9, FM-26)."""

from __future__ import annotations

import gc
import logging
import weakref
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.events import CloseConnection, Pong, TextMessage

from jambonz_trio import (
    AckOutcome,
    BasicAuth,
    Call,
    CallClosed,
    CommandQueueFull,
    DisconnectedCommands,
    JambonzMessage,
    JambonzServer,
    NotDelivered,
    Route,
    VerbHook,
)
from jambonz_trio._call import engine_of
from jambonz_trio.commands import RedirectCommand
from jambonz_trio.lowlevel import SessionState
from jambonz_trio.messages import AckUnconfirmed, CommandUnconfirmed, HookAbandoned, Reconnected
from jambonz_trio.verbs import Hangup, Say
from tests.helpers import Serve, answer_and_wait, recording, start

from .helpers import (
    BAD_FRAME,
    SESSION_DATA,
    PassThroughStream,
    RawClient,
    drain,
    hooks_behind_a_blocked_write,
    msg,
    new_call,
    raw_client,
    receive_command,
    reconnect,
    start_and_drop,
    wait_link_closed,
)


async def test_fm28_same_call_across_a_drop(serve: Serve) -> None:
    events: list[Any] = []
    hooked = trio.Event()
    reconnected = trio.Event()

    async def app(call: Call) -> None:
        call.user_data["state"] = {"step": 1}
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            events.append(event)
            if isinstance(event, VerbHook) and event.hook == "/first":
                hooked.set()  # never answered: the socket drops first
            elif isinstance(event, Reconnected):
                reconnected.set()
            elif isinstance(event, VerbHook):
                call.user_data["state"]["step"] += 1
                await call.ack(event, [Hangup()])

    server = await serve(app)
    call = await start_and_drop(server, hook="/first", delivered=hooked)
    assert server.calls.get("sid-1") is call
    assert call.state.value == "disconnected"
    async with raw_client(server) as second:
        t0 = trio.current_time()
        assert await reconnect(second) == {"type": "ack", "msgid": "r1", "data": []}
        assert trio.current_time() - t0 < 0.1
        await reconnected.wait()
        assert server.calls.get("sid-1") is call
        with pytest.raises(Exception, match="abandoned"):
            engine_of(call).protocol.ack("h1")
        await second.send("verb:hook", "h2", {}, hook="/second", call_sid="sid-1")
        assert await second.receive() == {
            "type": "ack",
            "msgid": "h2",
            "data": [{"verb": "hangup"}],
        }
    kinds = [type(e).__name__ for e in events]
    # (a last Disconnected follows when the test's second socket goes away)
    assert kinds[:5] == ["VerbHook", "Disconnected", "HookAbandoned", "Reconnected", "VerbHook"]
    abandoned = events[2]
    assert isinstance(abandoned, HookAbandoned) and abandoned.message.msgid == "h1"
    assert call.user_data["state"] == {"step": 2}
    assert call.reconnect_count == 1


async def test_fm28_late_answer_to_abandoned_hook_becomes_redirect(serve: Serve) -> None:
    outcomes: list[AckOutcome] = []
    got_hook = trio.Event()
    may_answer = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        hook = await call.next_event()
        got_hook.set()
        await may_answer.wait()
        assert isinstance(hook, VerbHook)
        outcomes.append(await call.ack(hook, [Say(text="after")]))
        await call.wait_closed()

    server = await serve(app)
    await start_and_drop(server, hook="/g", delivered=got_hook)
    may_answer.set()  # answered while disconnected: waits as a queued redirect
    await trio.testing.wait_all_tasks_blocked()
    async with raw_client(server) as second:
        assert await reconnect(second) == {"type": "ack", "msgid": "r1", "data": []}
        frame = await second.receive()
        assert frame == {
            "type": "command",
            "command": "redirect",
            "queueCommand": False,
            "data": [{"verb": "say", "text": "after"}],
        }
    assert outcomes == [AckOutcome.REDIRECTED]


@pytest.mark.parametrize("answer_first", [True, False])
async def test_fm29_drop_before_session_new_ack(
    serve: Serve, autojump_clock: trio.testing.MockClock, answer_first: bool
) -> None:
    outcomes: list[AckOutcome] = []

    async def app(call: Call) -> None:
        await trio.sleep(0.3 if answer_first else 0.8)
        outcomes.append(await call.ack(call.session, [Say(text="welcome")]))
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as first:
        await first.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
        await trio.sleep(0.1)
        await first.drop()
    await trio.sleep(0.4)  # jambonz's first back-off is 500 ms
    async with raw_client(server) as second:
        ack = await reconnect(second, msgid="r1")
        assert ack == {"type": "ack", "msgid": "r1", "data": [{"verb": "say", "text": "welcome"}]}
        with trio.fail_after(10):
            # no second frame; jambonz sending nothing more, the library closes the socket so
            # that jambonz's ordinary reconnect releases what 0.9.8 holds (test_rekey_release.py)
            assert await second.receive() is None
        assert second.close_code == 1012
    assert outcomes == [AckOutcome.DEFERRED if answer_first else AckOutcome.ACKED]


async def test_fm24_commands_wait_for_the_reconnect_ack_in_order(serve: Serve) -> None:
    server = await serve(answer_and_wait)
    call = await start_and_drop(server)
    sent: list[str] = []

    async def push(i: int) -> None:
        await call.redirect([Say(text=f"c{i}")])
        sent.append(f"c{i}")

    async with trio.open_nursery() as pushers:
        for i in range(3):
            pushers.start_soon(push, i)
            await trio.testing.wait_all_tasks_blocked()
        assert call.statistics().commands_queued == 3
        assert sent == []
        async with raw_client(server) as second:
            assert await reconnect(second) == {"type": "ack", "msgid": "r1", "data": []}
            texts = [((await second.receive()) or {})["data"][0]["text"] for _ in range(3)]
    assert texts == ["c0", "c1", "c2"]
    assert sorted(sent) == ["c0", "c1", "c2"]


async def test_fm24_queue_overflow_and_fail_fast(serve: Serve) -> None:
    server = await serve(answer_and_wait, max_queued_commands=2)
    call = await start_and_drop(server)
    async with trio.open_nursery() as pushers:
        for _ in range(2):
            pushers.start_soon(call.hangup)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(CommandQueueFull):
            await call.hangup()
        pushers.cancel_scope.cancel()  # cancelled waiters leave the queue, unsent
    assert call.statistics().commands_queued == 0

    server2 = await serve(answer_and_wait, disconnected_commands=DisconnectedCommands.FAIL)
    call2 = await start_and_drop(server2)
    with pytest.raises(NotDelivered):
        await call2.hangup()


async def test_queued_commands_fail_when_the_call_is_lost(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    server = await serve(answer_and_wait, reconnect_grace=30)
    call = await start_and_drop(server)
    with pytest.raises(NotDelivered, match="call ended"):
        await call.hangup()
    assert call.close_info is not None and call.close_info.by == "lost"


async def test_fm32_grace_period_frees_the_call(serve: Serve, autojump_clock: trio.testing.MockClock) -> None:
    server = await serve(answer_and_wait, reconnect_grace=30)
    call = await start_and_drop(server)
    ref = weakref.ref(call)
    t0 = trio.current_time()
    info = await call.wait_closed()
    del call
    assert trio.current_time() - t0 == pytest.approx(30, abs=0.01)
    assert info.by == "lost"
    await trio.testing.wait_all_tasks_blocked()
    assert "sid-1" not in server.calls
    gc.collect()
    assert ref() is None


async def test_fm30_unknown_call_sid_reconnect_is_a_new_call(serve: Serve) -> None:
    seen: list[Call] = []
    app = recording(seen, "resumed")

    server = await serve(app)
    async with raw_client(server) as client:
        ack = await reconnect(client, sid="restarted")
        assert ack == {"type": "ack", "msgid": "r1", "data": [{"verb": "say", "text": "resumed"}]}
    assert len(seen) == 1 and seen[0].restored and seen[0].call_sid == "restarted"


async def test_fm31_newest_socket_wins(serve: Serve) -> None:
    server = await serve(answer_and_wait)
    async with raw_client(server) as old:
        await new_call(old)
        call = server.calls["sid-1"]
        async with raw_client(server) as new:
            assert await reconnect(new) == {"type": "ack", "msgid": "r1", "data": []}
            assert await old.receive() is None  # the older socket was closed
            await call.hangup()
            frame = await new.receive()
            assert frame is not None and frame["command"] == "call:status"
        assert server.calls["sid-1"] is call and call.reconnect_count == 1


@pytest.mark.parametrize("first_type", ["session:redirect", "session:adulting"])
async def test_fm33_redirect_or_adulting_opens_a_new_call(serve: Serve, first_type: str) -> None:
    seen: list[Call] = []

    async def app(call: Call) -> None:
        seen.append(call)
        await call.ack(call.session, [Hangup()])
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server, "/adulting") as client:
        data = {**SESSION_DATA, "call_sid": "child-1", "parent_call_info": {"call_sid": "sid-0"}}
        await client.send(first_type, "a1", data, hook="/new")  # no envelope call_sid
        assert await client.receive() == {
            "type": "ack",
            "msgid": "a1",
            "data": [{"verb": "hangup"}],
        }
    assert seen[0].session.type == first_type and seen[0].call_sid == "child-1"


async def test_fm34_reconnect_budget_warning(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    server = await serve(answer_and_wait)
    async with raw_client(server) as client:
        await new_call(client)
        await client.drop()
    for i in range(5):
        async with raw_client(server) as client:
            assert await reconnect(client, msgid=f"r{i}") == {
                "type": "ack",
                "msgid": f"r{i}",
                "data": [],
            }
            await client.drop()
    assert server.calls["sid-1"].reconnect_count == 5
    warnings = [r for r in caplog.records if "reconnect" in r.getMessage() and "#1098" in r.getMessage()]
    assert len(warnings) == 2  # at rc - 1 = 4, and at 5


async def test_fm35_legacy_reconnect_without_session_reconnect(serve: Serve) -> None:
    events: list[Any] = []
    done = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            events.append(event)
            if isinstance(event, VerbHook):
                await call.ack(event, [Hangup()])
                done.set()

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        await client.drop()
    async with raw_client(server) as client:
        # hook payloads carry the call's info (docs/protocol.md §9.2), so the owner check holds
        await client.send("verb:hook", "h1", SESSION_DATA, hook="/g", call_sid="sid-1")
        assert await client.receive() == {
            "type": "ack",
            "msgid": "h1",
            "data": [{"verb": "hangup"}],
        }
        await done.wait()
    assert [type(e).__name__ for e in events][:3] == ["Disconnected", "Reconnected", "VerbHook"]


async def test_s9_reconnect_from_another_tenant_cannot_take_over(nursery: trio.Nursery) -> None:
    seen: list[Call] = []
    app = recording(seen, "hi")

    routes = [
        Route(path="/a", handler=app, auth=BasicAuth(username="a", password="pa")),
        Route(path="/b", handler=app, auth=BasicAuth(username="b", password="pb")),
    ]
    server = await start(nursery, routes)
    import base64

    def auth(user: str, pw: str) -> list[tuple[bytes, bytes]]:
        return [(b"authorization", b"Basic " + base64.b64encode(f"{user}:{pw}".encode()))]

    stream = await server.connect_memory()
    a = RawClient(stream)
    await a.handshake("/a", extra_headers=auth("a", "pa"))
    await a.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
    await a.receive()
    await a.drop()
    victim = server.calls["sid-1"]
    stream = await server.connect_memory()
    b = RawClient(stream)
    await b.handshake("/b", extra_headers=auth("b", "pb"))
    assert await reconnect(b) == {
        "type": "ack",
        "msgid": "r1",
        "data": [{"verb": "say", "text": "hi"}],
    }
    assert server.calls["sid-1"] is victim and victim.reconnect_count == 0
    assert victim.state.value == "disconnected"
    assert len(seen) == 2 and seen[1] is not victim
    await b.drop()


async def test_supervisor_pushes_commands_while_the_call_reconnects(nursery: trio.Nursery) -> None:
    """A task that never answered the call pushes commands before, during and after a drop.

    Frames written to a socket just before the peer vanished can be lost like on any TCP
    connection, so the drop is placed between batches; what is pushed while disconnected
    must arrive after the reconnect ack, in order, and every failure must be reported."""
    server = await start(nursery, answer_and_wait)
    delivered: list[str] = []
    dropped = trio.Event()
    new_calls = server.calls.new_calls()

    async def push(call: Call, text: str) -> None:
        while True:
            try:
                await call.redirect([Say(text=text)], queue=True)
                break
            except NotDelivered as exc:  # in flight as the socket died: reported, so retry
                assert exc.maybe_sent
        delivered.append(text)

    async def supervisor() -> None:
        call = await new_calls.receive()
        await call.wait_session_acked()
        for i in range(3):
            await push(call, f"s{i}")
        await dropped.wait()
        for i in range(3, 6):
            await push(call, f"s{i}")

    nursery.start_soon(supervisor)
    await trio.testing.wait_all_tasks_blocked()
    received: list[str] = []
    async with raw_client(server) as first:
        await new_call(first)
        for _ in range(3):
            received.append(((await first.receive()) or {})["data"][0]["text"])
        await first.drop()
    await trio.testing.wait_all_tasks_blocked()
    dropped.set()
    await trio.testing.wait_all_tasks_blocked()
    assert server.calls["sid-1"].statistics().commands_queued == 1  # the others wait behind it
    async with raw_client(server) as second:
        assert (await reconnect(second) or {})["type"] == "ack"
        while len(received) < 6:
            frame = await second.receive()
            assert frame is not None and frame["type"] == "command"
            received.append(frame["data"][0]["text"])
    assert received == [f"s{i}" for i in range(6)]
    assert delivered == received


# -- FM-26: cancellation around every outbound operation -------------------------------------


@settings(deadline=None, max_examples=150)
@given(
    cancel_at=st.sampled_from([0.0, 0.001, 0.005, 0.01, 0.02, 0.05]),
    read_delay=st.sampled_from([0.0, 0.003, 0.008, 0.03]),
    op=st.sampled_from(["ack", "command"]),
)
def test_fm26_cancel_never_leaves_half_sent_state(cancel_at: float, read_delay: float, op: str) -> None:
    """A caller's cancel scope expiring around ack/send_command (virtual time, lockstep
    stream so the write really blocks until the peer reads): either the frame reached the peer
    or the call knows it did not - the msgid is still owed, or the command raised."""
    trio.run(
        _fm26_scenario,
        cancel_at,
        read_delay,
        op,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


async def _fm26_scenario(cancel_at: float, read_delay: float, op: str) -> None:
    ready = trio.Event()
    finished = trio.Event()
    outcome: dict[str, Any] = {}

    async def app(call: Call) -> None:
        if op == "command":
            await call.ack(call.session, [Say(text="hi")])
        ready.set()
        with trio.move_on_after(cancel_at) as scope:
            if op == "ack":
                await call.ack(call.session, [Say(text="x" * 2000)])
            else:
                await call.redirect([Say(text="x" * 2000)])
            outcome["returned"] = True
        outcome["cancelled"] = scope.cancelled_caught
        outcome["owed"] = engine_of(call).protocol.is_owed(call.session.msgid)
        finished.set()
        await call.wait_closed()

    frames: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        server = await start(nursery, app, ack_deadline=4.5)
        async with raw_client(server, lockstep=True) as client:
            await client.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
            if op == "command":
                await client.receive()
            await ready.wait()
            with trio.move_on_after(3):  # virtual; before the watchdog's deadline
                while True:
                    await trio.sleep(read_delay)
                    frame = await client.receive()
                    if frame is None:
                        break
                    frames.append(frame)
        await finished.wait()
        nursery.cancel_scope.cancel()
    delivered = len(frames) == 1
    assert len(frames) <= 1
    if outcome.get("returned"):
        assert delivered, "returned normally but nothing arrived"
    if op == "ack":
        assert delivered != outcome["owed"], outcome  # on the wire exactly when no longer owed
    else:
        assert delivered == bool(outcome.get("returned")) or outcome["cancelled"]


async def test_session_new_answer_lost_in_a_drop_is_resent_on_the_reconnect(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Issue 12: the app's session:new ack was written into a socket that died before jambonz
    read it; jambonz re-keys its session:new to the reconnect, whose ack must carry the verbs."""
    outcomes: list[AckOutcome] = []

    async def app(call: Call) -> None:
        outcomes.append(await call.ack(call.session, [Say(text="welcome")]))
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as first:
        await first.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
        await trio.testing.wait_all_tasks_blocked()  # the ack is written, never read
        await first.drop()
    await trio.sleep(0.5)
    async with raw_client(server) as second:
        assert await reconnect(second) == {
            "type": "ack",
            "msgid": "r1",
            "data": [{"verb": "say", "text": "welcome"}],
        }
    assert outcomes == [AckOutcome.ACKED]


async def test_session_new_answer_proven_read_is_not_sent_again(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """The Pong to the receipt Ping written after the answer proves jambonz read it: the
    reconnect is then an ordinary one, acked empty."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="welcome")])
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as first:
        assert await new_call(first) == {
            "type": "ack",
            "msgid": "m1",
            "data": [{"verb": "say", "text": "welcome"}],
        }
        assert first.pings == 1  # the receipt Ping, answered by new_call
        await trio.testing.wait_all_tasks_blocked()
        await first.drop()
    async with raw_client(server) as second:
        assert await reconnect(second) == {"type": "ack", "msgid": "r1", "data": []}


class _Writes(PassThroughStream):
    """The server's end of a memory stream, recording every ``send_all`` (one write each)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        await self.inner.send_all(data)


async def test_an_answer_and_its_receipt_ping_leave_in_one_write(
    nursery: trio.Nursery, serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """The receipt Ping rides in the answer's own write (one write, the Ping's frame right
    after the answer's); while it waits for its Pong, the next answer goes alone and gets a
    Ping of its own once that Pong came (docs/reconnects.md "The rule")."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="welcome")])
        async for event in call:
            if isinstance(event, VerbHook):
                await call.ack(event, [Say(text=event.hook or "")])

    server = await serve(app)
    client_end, server_end = trio.testing.memory_stream_pair()
    recorded = _Writes(server_end)
    nursery.start_soon(server.handle_stream, recorded)
    client = RawClient(client_end, auto_pong=False)
    await client.handshake("/")
    await client.send("session:new", "m1", {**SESSION_DATA, "call_sid": "sid-1"}, call_sid="sid-1")
    await trio.testing.wait_all_tasks_blocked()
    answer = recorded.writes[-1]
    assert len(recorded.writes) == 2  # the 101, then the answer with its Ping
    assert b'"msgid":"m1"' in answer and answer.endswith(b"\x89\x03jt1")  # FIN Ping, 3 bytes
    assert (await client.receive() or {}).get("msgid") == "m1"
    # no Pong yet: the next answer goes alone, its Ping waits for that Pong
    await client.send("verb:hook", "h1", {}, hook="/a", call_sid="sid-1")
    await trio.testing.wait_all_tasks_blocked()
    assert len(recorded.writes) == 3 and not recorded.writes[-1].endswith(b"jt2")
    assert (await client.receive() or {}).get("msgid") == "h1"
    assert client.pings == 1  # jt1, read before h1 (and not answered)
    await client.stream.send_all(client.ws.send(Pong(payload=b"jt1")))  # jambonz's Pong, late
    await trio.testing.wait_all_tasks_blocked()
    assert recorded.writes[3:] == [b"\x89\x03jt2"]  # h1's own receipt Ping, once jt1's Pong came
    engine = engine_of(server.calls["sid-1"])
    assert engine.protocol.receipt_due is False


async def test_hook_answer_lost_in_a_drop_is_reported(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Issue 12 #2: a verb:hook answer written just before the drop, never proven read: the
    app gets AckUnconfirmed (ack returned ACKED), it is counted, and a proven one is not."""
    events: list[Any] = []
    outcomes: list[AckOutcome] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            events.append(event)
            if isinstance(event, VerbHook):
                outcomes.append(await call.ack(event, [Say(text=f"answer {event.hook}")]))

    server = await serve(app)
    async with raw_client(server) as first:
        await new_call(first)
        await first.send("verb:hook", "h1", {}, hook="/read", call_sid="sid-1")
        assert (await first.receive() or {}).get("msgid") == "h1"
        await first.answer_receipt()  # jambonz's Pong: h1 proven read
        await first.send("verb:hook", "h2", {}, hook="/lost", call_sid="sid-1")
        await trio.testing.wait_all_tasks_blocked()  # answered, written, never read
        await first.drop()
    await trio.testing.wait_all_tasks_blocked()
    call = server.calls["sid-1"]
    assert outcomes == [AckOutcome.ACKED, AckOutcome.ACKED]
    unconfirmed = [e for e in events if isinstance(e, AckUnconfirmed)]
    assert [(e.message.msgid, e.verbs) for e in unconfirmed] == [("h2", (Say(text="answer /lost"),))]
    assert call.statistics().acks_unconfirmed == 1
    with pytest.raises(Exception, match="already answered"):
        await call.ack("h2", [Say(text="again")])  # answered: the event says what to do


async def test_commands_lost_in_a_drop_are_reported_and_a_hangup_is_sent_again(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """A command written just before the drop and never proven read (no Pong to a Ping written
    after it) may never have reached jambonz: a proven one is forgotten, an unproven one is
    reported (CommandUnconfirmed) and counted, and an unproven hang-up is sent again, first,
    once jambonz reconnects."""
    events: list[Any] = []
    mute, go = trio.Event(), trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        await mute.wait()
        await call.mute()  # proven read below
        await go.wait()
        await call.redirect([Say(text="lost?")], queue=True)
        await call.hangup()
        async for event in call:
            events.append(event)

    server = await serve(app)
    async with raw_client(server) as first:
        await new_call(first)
        await trio.testing.wait_all_tasks_blocked()
        mute.set()
        assert (await first.receive() or {}).get("command") == "mute:status"
        await first.answer_receipt()  # jambonz's Pong: the mute was read
        await trio.testing.wait_all_tasks_blocked()
        first.auto_pong = False  # from now on jambonz reads nothing more (no Pong comes back)
        go.set()
        assert (await first.receive() or {}).get("command") == "redirect"
        assert (await first.receive() or {}).get("command") == "call:status"
        await trio.testing.wait_all_tasks_blocked()
        await first.drop()
    await trio.testing.wait_all_tasks_blocked()
    call = server.calls["sid-1"]
    unconfirmed = [e for e in events if isinstance(e, CommandUnconfirmed)]
    assert [e.command for e in unconfirmed] == [RedirectCommand(verbs=(Say(text="lost?"),), queue=True)]
    assert call.statistics().commands_unconfirmed == 2  # the redirect and the hang-up
    async with raw_client(server) as second:
        assert await reconnect(second) == {"type": "ack", "msgid": "r1", "data": []}
        assert await receive_command(second) == ("call:status", {"call_status": "completed"})


async def test_tts_tokens_lost_in_a_drop_fail_their_sender(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """A ``tts:tokens`` written just before the drop and never proven read gets no
    ``tts:tokens-result``: jambonz may never have had it. Its sender waited for that result
    until the call ended; it now fails with ``NotDelivered(maybe_sent=True)`` when the drop
    reports the command unconfirmed (also a ``CommandUnconfirmed`` event), and the call goes on."""
    outcome: list[BaseException | str] = []
    events: list[Any] = []
    done = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi", stream=True)])
        try:
            await call.send_tts_tokens("Hello there.")
            outcome.append("returned")
        except NotDelivered as exc:
            outcome.append(exc)
        done.set()
        async for event in call:
            events.append(event)

    server = await serve(app)
    async with raw_client(server) as first:
        await new_call(first)
        first.auto_pong = False  # jambonz reads nothing more: the tokens are not proven read
        assert (await first.receive() or {}).get("command") == "tts:tokens"
        await trio.testing.wait_all_tasks_blocked()
        await first.drop()
    with trio.fail_after(30):  # (the reconnect grace is 60 s)
        await done.wait()
    assert len(outcome) == 1 and isinstance(outcome[0], NotDelivered)
    assert outcome[0].maybe_sent
    assert [type(e.command).__name__ for e in events if isinstance(e, CommandUnconfirmed)] == [
        "TtsTokensCommand"
    ]
    async with raw_client(server) as second:
        assert await reconnect(second) == {"type": "ack", "msgid": "r1", "data": []}
    assert not server.calls["sid-1"].closed


async def test_a_hangup_whose_resend_a_second_drop_cuts_is_sent_again_on_the_next_reconnect(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """The hang-up the library sends again after a drop (it may never have reached jambonz)
    is the library's own to deliver: when the connection dies again under that resend, it
    goes out once more on the next reconnect (a hang-up cannot run twice), not dropped."""
    go = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        await go.wait()
        await call.hangup()
        await call.wait_closed()

    server = await serve(app)
    with trio.fail_after(60):
        await _resend_cut(server, go)


async def _resend_cut(server: JambonzServer, go: trio.Event) -> None:
    async with raw_client(server) as first:
        await new_call(first)
        await trio.testing.wait_all_tasks_blocked()
        first.auto_pong = False  # jambonz reads nothing more: the hang-up is not proven read
        go.set()
        assert (await first.receive() or {}).get("command") == "call:status"
        await first.drop()
    await trio.testing.wait_all_tasks_blocked()
    async with raw_client(server, lockstep=True) as second:  # a write ends once jambonz read it
        assert await reconnect(second) == {"type": "ack", "msgid": "r1", "data": []}
        await trio.testing.wait_all_tasks_blocked()  # the resent hang-up is being written...
        await second.drop()  # ...and the connection dies under it
    await trio.testing.wait_all_tasks_blocked()
    assert not server.calls["sid-1"].closed
    async with raw_client(server) as third:
        assert await reconnect(third, msgid="r2") == {"type": "ack", "msgid": "r2", "data": []}
        assert await receive_command(third) == ("call:status", {"call_status": "completed"})


async def test_fm29_a_holding_answer_cut_by_a_drop_goes_out_on_the_reconnect(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Review r3: a failed watchdog ack of ``session:new`` keeps it owed for the reconnect."""
    late: list[AckOutcome] = []

    async def app(call: Call) -> None:
        await trio.sleep(30)  # slow app: the watchdog answers session:new at 4 s
        late.append(await call.ack(call.session, [Say(text="welcome")]))
        await call.wait_closed()

    # (rekey_quiet=None: this jambonz stays quiet after the re-keyed answer, and the
    # library's release close, test_rekey_release.py, would come before the late redirect)
    server = await serve(app, send_timeout=1.0, rekey_quiet=None)
    with trio.fail_after(60):
        async with raw_client(server, lockstep=True) as first:
            await first.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
            await trio.sleep(6)  # never reads: the watchdog's write times out at 4 + 1 s
            call = server.calls["sid-1"]
            assert call.state.value == "disconnected"
            assert engine_of(call).protocol.is_owed("m1")  # old: not owed, "answered" by the lost ack
            # the holding answer may not have arrived: kept, to go out on the reconnect
            assert engine_of(call).protocol.session is SessionState.RESEND
        async with raw_client(server) as second:
            # jambonz re-keys its unanswered session:new to the reconnect (protocol.md 6.2):
            # an empty ack here would be an empty answer to session:new (SIP 480)
            assert await reconnect(second) == {
                "type": "ack",
                "msgid": "r1",
                "data": [{"verb": "pause", "length": 1}],
            }
            redirect = await second.receive()
            assert redirect is not None and redirect["command"] == "redirect"
            assert redirect["data"] == [{"verb": "say", "text": "welcome"}]
    assert late == [AckOutcome.REDIRECTED]


async def test_i19_12_wait_session_acked_survives_an_answer_lost_in_a_drop(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Review r4: ``wait_session_acked()`` does not raise ``CallClosed`` on a call that is only disconnected."""
    out: dict[str, Any] = {}

    async def app(call: Call) -> None:
        async def waiter() -> None:
            try:
                await call.wait_session_acked()
                out["wait_session_acked"] = "returned"
            except CallClosed as exc:
                out["wait_session_acked"] = f"CallClosed({exc}) while state={call.state.value}"

        async with trio.open_nursery() as n:
            n.start_soon(waiter)
            # jambonz closed, but the receive loop still drains the frames queued before the
            # Close: the call still says CONNECTED, so ack() writes, and the write fails
            await wait_link_closed(call)
            out["state_at_ack"] = call.state.value
            try:
                out["ack"] = await call.ack(call.session, [Say(text="hi")])
            except NotDelivered:
                out["ack"] = "NotDelivered"
            async for event in call:
                if isinstance(event, Reconnected):
                    if out["ack"] == "NotDelivered":  # the old contract: answer again
                        out["second_ack"] = await call.ack(call.session, [Say(text="hi")])
                    break
        await call.wait_closed()

    server = await serve(app)
    with trio.fail_after(30):
        async with raw_client(server) as first:
            await first.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
            for i in range(6):  # queued behind the session:new
                await first.send("call:status", f"s{i}", {"call_status": "ringing"}, call_sid="sid-1")
            await first.close(4000)  # abnormal: jambonz reconnects
            await trio.sleep(1)
        # old: wait_session_acked raised; then (issue 19 #12) ack raised NotDelivered: the answer
        # now waits for the reconnect instead
        assert out == {"state_at_ack": "connected", "ack": AckOutcome.DEFERRED}
        async with raw_client(server) as second:
            assert await reconnect(second) == {
                "type": "ack",
                "msgid": "r1",
                "data": [{"verb": "say", "text": "hi"}],
            }
            await trio.testing.wait_all_tasks_blocked()
        assert "second_ack" not in out
        assert out["wait_session_acked"] == "returned"


async def test_fm28_frames_read_after_a_failed_write_are_abandoned(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Review r5: frames read after a write declared the socket lost are abandoned, not owed."""
    events: list[str] = []
    out: dict[str, Any] = {}

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        requests: list[JambonzMessage] = []
        async with trio.open_nursery() as n:

            async def pusher() -> None:
                await wait_link_closed(call)
                out["state_when_ws_closed"] = call.state.value
                await call.hangup()  # sees ws.closed: the socket is lost; queued for the reconnect

            n.start_soon(pusher)
            async for event in call:
                events.append(type(event).__name__)
                if isinstance(event, VerbHook):
                    requests.append(event)
                elif isinstance(event, HookAbandoned):
                    requests.append(event.message)
                elif isinstance(event, Reconnected):
                    out["acks_owed"] = call.statistics().acks_owed
                    for request in requests:
                        try:
                            out[request.msgid] = await call.ack(request, [Say(text="late")])
                        except Exception as exc:
                            out[request.msgid] = repr(exc)
                    break

    server = await serve(app)
    with trio.fail_after(30):
        async with raw_client(server, lockstep=True) as first:
            await new_call(first)
            # the hooks wait in the queue while the bad frame's ack write fails
            await hooks_behind_a_blocked_write(first, "h")
            await trio.sleep(0.1)
            await drain(first)
        async with raw_client(server) as second:
            assert await reconnect(second) == {"type": "ack", "msgid": "r1", "data": []}
            frames = [await second.receive() for _ in range(4)]
    assert out["state_when_ws_closed"] == "connected"
    # old: the hooks were booked as owed on the lost socket: VerbHook events, acks_owed 3
    # forever, and ack() raised LocalProtocolError("the call's socket is down")
    assert events == ["Disconnected", "HookAbandoned", "HookAbandoned", "HookAbandoned", "Reconnected"]
    assert out["acks_owed"] == 0
    assert [out[f"h{i}"] for i in range(3)] == [AckOutcome.REDIRECTED] * 3
    assert frames[0] == {"type": "command", "command": "call:status", "data": {"call_status": "completed"}}
    assert [f is not None and f["command"] for f in frames[1:]] == ["redirect"] * 3


async def test_a_tts_result_read_after_the_socket_was_declared_lost_reaches_its_sender(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """A ``tts:tokens-result`` jambonz wrote before an abnormal close, read after a write
    declared the socket lost, is still jambonz's answer: it reaches the waiting sender (it was
    delivered only as an event, and the sender waited for ever)."""
    out: dict[str, Any] = {}
    sent, answered = trio.Event(), trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi", stream=True)])
        async with trio.open_nursery() as n:

            async def pusher() -> None:
                await sent.wait()
                await wait_link_closed(call)
                out["state_when_ws_closed"] = call.state.value
                await call.tts_flush()  # sees the Close: the socket is lost; queued

            n.start_soon(pusher)
            result = await call.send_tts_tokens("Hello there.")
            out["result"] = (result.id, result.status)
            answered.set()
        await call.wait_closed()

    server = await serve(app)
    with trio.fail_after(30):
        async with raw_client(server, lockstep=True) as first:
            await new_call(first)
            assert (await first.receive() or {}).get("command") == "tts:tokens"
            await first.answer_receipt()  # jambonz read the tokens
            sent.set()
            # its result waits behind a bad frame whose ack write blocks, then an abnormal Close
            result = msg("tts:tokens-result", "t1", {"id": 1, "status": "ok"}, call_sid="sid-1")
            frames = [BAD_FRAME, result]
            data = b"".join(first.ws.send(TextMessage(data=f)) for f in frames)
            await first.stream.send_all(data + first.ws.send(CloseConnection(code=4000)))
            await trio.sleep(0.1)
            await drain(first)
        with trio.move_on_after(10):  # (the reconnect grace is 60 s)
            await answered.wait()
    assert out["state_when_ws_closed"] == "connected"
    assert out.get("result") == (1, "ok")


async def test_fm31_an_old_socket_never_books_frames_on_the_new_one(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Review r6: an older socket's receive loop never books its frames on a newer socket."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        await wait_link_closed(call)
        await call.hangup()  # sees ws.closed: the old socket is lost while its loop lives on
        await call.wait_closed()

    server = await serve(app)
    with trio.fail_after(30):
        async with raw_client(server, lockstep=True) as first:
            await new_call(first)
            # the old loop blocks writing the bad frame's ack; three hooks wait behind it
            await hooks_behind_a_blocked_write(first, "old")
            await trio.sleep(0.5)  # jambonz's reconnect back-off
            call = server.calls["sid-1"]
            assert call.state.value == "disconnected"
            async with raw_client(server) as second:
                assert await reconnect(second) == {"type": "ack", "msgid": "r1", "data": []}
                await first.drop()  # old: the old loop's write fails and it reads on
                await trio.sleep(0.1)
                assert engine_of(call).protocol.generation == 2
                assert [o.msgid for o in engine_of(call).protocol.owed()] == []  # old: old0..old2 owed
                frames: list[dict[str, Any]] = []
                with trio.move_on_after(6):  # past the watchdog's 4 s
                    while (frame := await second.receive()) is not None:
                        frames.append(frame)
    # old: the watchdog also acked old0..old2, msgids of the old socket, on the new one
    assert frames == [{"type": "command", "command": "call:status", "data": {"call_status": "completed"}}]
