"""Regression tests for the ten engine bugs found in review (reproducers r1..r10).

Each test failed on the code before the fix and is bounded (``trio.fail_after`` on the mock
clock), so a regression fails instead of hanging. The races of r4..r7 are forced: frames
queued behind a Close (r4) or behind one whose ack blocks on a lockstep stream the peer is not
reading (r5, r6), or the receive loop's two steps called back to back without a checkpoint
(r7; the reviewer's wire-level race is also run 30 times).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from wsproto.events import CloseConnection, TextMessage

from jambonz_trio import (
    AckOutcome,
    BasicAuth,
    Call,
    CallClosed,
    JambonzMessage,
    JambonzServer,
    NotDelivered,
    Route,
    VerbHook,
    serve_jambonz,
)
from jambonz_trio._call import engine_of
from jambonz_trio._engine import CallEngine
from jambonz_trio._protocol._messages import TtsTokensResult, parse_message
from jambonz_trio._protocol._state import SessionState
from jambonz_trio.messages import HookAbandoned, Reconnected
from jambonz_trio.verbs import Say

from .helpers import SESSION_DATA, RawClient, msg, raw_client
from .test_call_engine import answer_and_wait, new_call, start

#: An invalid frame (``data`` is not an object) that carries a msgid: the receive loop stops to
#: write an ack for it, which blocks on a lockstep stream until the peer reads.
BAD_FRAME = '{"type":"verb:hook","msgid":"bad","data":5}'


def hook_frames(client: RawClient, prefix: str, n: int = 3) -> bytes:
    return b"".join(
        client.ws.send(TextMessage(data=msg("verb:hook", f"{prefix}{i}", {}, hook="/h", call_sid="sid-1")))
        for i in range(n)
    )


async def reconnect(client: RawClient, sid: str = "sid-1", msgid: str = "r1") -> dict[str, Any] | None:
    await client.send("session:reconnect", msgid, {**SESSION_DATA, "call_sid": sid}, call_sid=sid)
    return await client.receive()


async def wait_ws_closed(call: Call) -> None:
    """Until trio-websocket has seen the peer's Close (the receive loop may lag behind)."""
    link = engine_of(call).link
    assert link is not None
    while link.conn.close_reason is None:
        await trio.lowlevel.checkpoint()


async def drain(client: RawClient) -> None:
    while await client.receive() is not None:
        pass


# -- r1: a msgid the ack could not echo must not take the server down -----------------------


async def test_review_r1_long_msgid_does_not_crash_the_server(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start(nursery, answer_and_wait)
    with trio.fail_after(30):
        async with raw_client(server) as bystander, raw_client(server) as evil:
            assert await new_call(bystander, "good", "b1") == {
                "type": "ack",
                "msgid": "b1",
                "data": [{"verb": "say", "text": "hi"}],
            }
            await new_call(evil, "evil", "m1")
            # old: the watchdog's empty ack (4 s later) raised MessageTooLarge out of the call's
            # nursery, through the calls nursery, out of serve_jambonz
            await evil.send("verb:hook", "x" * 30000, {}, hook="/h", call_sid="evil")
            await trio.sleep(5)
            for client, sid in ((bystander, "good"), (evil, "evil")):
                await client.send("verb:hook", "h1", {}, hook="/h", call_sid=sid)
                assert await client.receive() == {"type": "ack", "msgid": "h1", "data": []}
            assert server.calls["evil"].state.value == "connected"


async def test_review_r1_call_task_failure_is_contained(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FM-36: whatever escapes one call's task (here its watchdog) is logged, not raised."""
    auto_answer = CallEngine._auto_answer

    async def boom(engine: CallEngine, owed: Any) -> None:
        if engine.call_sid == "evil":
            raise RuntimeError("a bug in the watchdog")
        await auto_answer(engine, owed)

    monkeypatch.setattr(CallEngine, "_auto_answer", boom)

    async def app(call: Call) -> None:
        await answer_and_wait(call)

    server = await start(nursery, app)
    with trio.fail_after(30):
        async with raw_client(server) as bystander, raw_client(server) as evil:
            await new_call(bystander, "good", "b1")
            await new_call(evil, "evil", "m1")
            await evil.send("verb:hook", "e1", {}, hook="/h", call_sid="evil")
            # its watchdog failed at 4 s: fallback verbs, then a 1000 close (FM-08's ending)
            fallback = await evil.receive()
            assert fallback is not None and fallback["command"] == "redirect"
            assert fallback["data"] == [{"verb": "hangup"}]
            assert await evil.receive() is None
            assert evil.close_code == 1000
            await trio.testing.wait_all_tasks_blocked()
            assert "evil" not in server.calls
            await bystander.send("verb:hook", "h1", {}, hook="/h", call_sid="good")
            assert await bystander.receive() == {"type": "ack", "msgid": "h1", "data": []}


# -- r2: a cancelled handler closes with 1012 (jambonz reconnects), not 1000 -----------------


async def test_review_r2_cancelled_server_closes_calls_with_1012(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server_scope = trio.CancelScope()

    async def run_server(outer: trio.Nursery, task_status: trio.TaskStatus[JambonzServer]) -> None:
        with server_scope:
            # connections in a nursery that outlives the server's: the handlers are cancelled
            # while their sockets still work, so the close code they choose reaches jambonz
            await serve_jambonz(answer_and_wait, handler_nursery=outer, task_status=task_status)

    with trio.fail_after(30):
        async with trio.open_nursery() as outer:
            server: JambonzServer = await outer.start(run_server, outer)
            client = RawClient(await server.connect_memory())
            await client.handshake("/")
            await new_call(client)
            call = server.calls["sid-1"]
            server_scope.cancel()  # e.g. SIGTERM handled without drain()
            assert await client.receive() is None
            outer.cancel_scope.cancel()
    assert client.close_code == 1012  # old: 1000, "hang up, never reconnect"
    assert call.close_info is not None
    assert (call.close_info.code, call.close_info.by) == (1012, "server")


# -- r3: a failed watchdog ack of session:new keeps it owed for the reconnect ---------------


async def test_review_r3_failed_watchdog_ack_keeps_session_new_owed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    late: list[AckOutcome] = []

    async def app(call: Call) -> None:
        await trio.sleep(30)  # slow app: the watchdog answers session:new at 4 s
        late.append(await call.ack(call.session, [Say(text="welcome")]))
        await call.wait_closed()

    server = await start(nursery, app, send_timeout=1.0)
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


# -- r4: wait_session_acked() does not raise CallClosed on a call that is only disconnected ------


async def test_review_r4_wait_answered_survives_a_failed_ack(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
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
            await wait_ws_closed(call)
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

    server = await start(nursery, app)
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


# -- r5: frames read after a write declared the socket lost are abandoned, not owed ---------


async def test_review_r5_frames_after_a_failed_write_are_abandoned(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[str] = []
    out: dict[str, Any] = {}

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        requests: list[JambonzMessage] = []
        async with trio.open_nursery() as n:

            async def pusher() -> None:
                await wait_ws_closed(call)
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

    server = await start(nursery, app)
    with trio.fail_after(30):
        async with raw_client(server, lockstep=True) as first:
            await new_call(first)
            # one segment: a bad frame (its ack blocks: the peer is not reading), three hooks,
            # an abnormal Close; the hooks wait in the queue while the write above fails
            data = first.ws.send(TextMessage(data=BAD_FRAME)) + hook_frames(first, "h")
            await first.stream.send_all(data + first.ws.send(CloseConnection(code=4000)))
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


# -- r6: an older socket's receive loop never books its frames on a newer socket ------------


async def test_review_r6_stale_receive_loop_does_not_ack_on_the_new_socket(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        await wait_ws_closed(call)
        await call.hangup()  # sees ws.closed: the old socket is lost while its loop lives on
        await call.wait_closed()

    server = await start(nursery, app)
    with trio.fail_after(30):
        async with raw_client(server, lockstep=True) as first:
            await new_call(first)
            # the old loop blocks writing the bad frame's ack; three hooks wait behind it
            data = first.ws.send(TextMessage(data=BAD_FRAME)) + hook_frames(first, "old")
            await first.stream.send_all(data + first.ws.send(CloseConnection(code=4000)))
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


# -- r7: send_tts_tokens ends with CallClosed when 'full' and the call's end come together --


async def test_review_r7_tts_full_then_call_end_does_not_hang(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Deterministic: the receive loop's two steps (the 'full' result, then jambonz's Close)
    run back to back, before the sender task wakes up."""
    out: list[str] = []
    done = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        try:
            out.append(repr(await call.send_tts_tokens("hello")))
        except CallClosed:
            out.append("CallClosed")
        done.set()

    server = await start(nursery, app)
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


async def test_review_r7_tts_full_then_close_over_the_wire(autojump_clock: trio.testing.MockClock) -> None:
    """The reviewer's wire-level race, 30 times (the old code hung in about half of them)."""

    async def once() -> list[str]:
        out: list[str] = []
        finished = trio.Event()

        async def app(call: Call) -> None:
            await call.ack(call.session, [Say(text="hi")])
            try:
                out.append(repr(await call.send_tts_tokens("hello")))
            except CallClosed:
                out.append("CallClosed")
            finished.set()

        async with trio.open_nursery() as nursery:
            server = await start(nursery, app)
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


# -- r8: no zombie CONNECTED call on a dead socket -------------------------------------------


async def _events_only(call: Call) -> None:
    await call.ack(call.session, [Say(text="hi")])
    async for _event in call:
        pass


async def test_review_r8_bad_frame_with_huge_msgid_leaves_no_zombie(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start(nursery, _events_only, reconnect_grace=30)
    with trio.fail_after(120):
        async with raw_client(server) as client:
            await new_call(client)
            # old: _bad_frame's ack was over maxPayload; the connection task died, the call
            # was never told (CONNECTED forever, no keepalive, no reconnect grace)
            await client.send_text('{"type":"verb:hook","msgid":"%s","data":5}' % ("x" * 30000))
            await client.send("verb:hook", "h1", {}, hook="/h", call_sid="sid-1")
            assert await client.receive() == {"type": "ack", "msgid": "h1", "data": []}
            call = server.calls["sid-1"]
        await trio.sleep(1)
        assert call.state.value == "disconnected"
        await trio.sleep(30)
        assert call.close_info is not None and call.close_info.by == "lost"
        assert server.calls.get("sid-1") is None


async def test_review_r8_connection_task_failure_tells_the_call(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A connection task that dies with an exception (here: the bad frame's ack is over a
    small ``max_outbound_bytes``) must leave the call disconnected, not CONNECTED forever."""
    server = await start(nursery, _events_only, reconnect_grace=30, max_outbound_bytes=200)
    with trio.fail_after(120):
        async with raw_client(server) as client:
            await new_call(client)
            await client.send_text('{"type":"verb:hook","msgid":"%s","data":5}' % ("y" * 250))
            await client.send("verb:hook", "h1", {}, hook="/h", call_sid="sid-1")
            answer = await client.receive()
            call = server.calls["sid-1"]
        if answer is not None:  # the socket survived the bad frame: fine as well
            assert answer == {"type": "ack", "msgid": "h1", "data": []}
            await trio.sleep(1)
        assert call.state.value == "disconnected"  # old: "connected", on a dead socket
        await trio.sleep(31)
        assert call.close_info is not None and call.close_info.by == "lost"
        assert server.calls.get("sid-1") is None


# -- r9: a CallClosed of another call is a handler failure, not a server crash ---------------


async def test_review_r9_callclosed_of_another_call_is_contained(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    calls: dict[str | None, Call] = {}

    async def app(call: Call) -> None:
        calls[call.call_sid] = call
        await call.ack(call.session, [Say(text="hi")])
        if call.call_sid == "watcher":
            while True:  # follows the other leg (a bridge / supervisor)
                await calls["agent"].next_event()  # raises CallClosed when *that* call ends
        await call.wait_closed()

    server = await start(nursery, app)
    with trio.fail_after(30):
        async with (
            raw_client(server) as agent,
            raw_client(server) as watcher,
            raw_client(server) as bystander,
        ):
            for client, sid in ((agent, "agent"), (watcher, "watcher"), (bystander, "bystander")):
                await new_call(client, sid, "m-" + sid)
            await agent.close(1000)  # jambonz ends the agent's call normally
            assert await agent.receive() is None
            # the watcher's handler failed: fallback verbs, then the call ends
            fallback = await watcher.receive()
            assert fallback is not None and fallback["command"] == "redirect"
            assert fallback["data"] == [{"verb": "hangup"}]
            assert await watcher.receive() is None and watcher.close_code == 1000
            # old: the CallClosed escaped the calls nursery and serve_jambonz died
            await bystander.send("verb:hook", "h1", {}, hook="/h", call_sid="bystander")
            assert await bystander.receive() == {"type": "ack", "msgid": "h1", "data": []}
            assert list(server.calls) == ["bystander"]


# -- r10: S-9, a session:new cannot take over a live call of another owner -------------------


def _basic(user: str, password: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Basic " + base64.b64encode(f"{user}:{password}".encode()))]


async def test_review_r10_session_new_does_not_take_over_a_live_sid(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[Call] = []

    async def app(call: Call) -> None:
        seen.append(call)
        await answer_and_wait(call)

    routes = [
        Route(path="/a", handler=app, auth=BasicAuth(username="a", password="pa")),
        Route(path="/b", handler=app, auth=BasicAuth(username="b", password="pb")),
    ]
    server: JambonzServer = await nursery.start(
        lambda task_status: serve_jambonz(routes, task_status=task_status)
    )
    with trio.fail_after(30):
        a = RawClient(await server.connect_memory())
        await a.handshake("/a", extra_headers=_basic("a", "pa"))
        await new_call(a)
        victim = server.calls["sid-1"]
        b = RawClient(await server.connect_memory())
        await b.handshake("/b", extra_headers=_basic("b", "pb"))
        assert await new_call(b, msgid="x1") == {
            "type": "ack",
            "msgid": "x1",
            "data": [{"verb": "say", "text": "hi"}],
        }
        assert server.calls["sid-1"] is victim  # old: tenant B's call replaced it
        assert len(seen) == 2 and seen[1] is not victim and seen[1].isolated
        await a.drop()  # A's socket drops; jambonz reconnects A
        await trio.sleep(0.5)
        a2 = RawClient(await server.connect_memory())
        await a2.handshake("/a", extra_headers=_basic("a", "pa"))
        # old: A's reconnect found B's call, failed the owner check and became a third,
        # isolated call (answered by a new handler), orphaning A's own call
        assert await reconnect(a2) == {"type": "ack", "msgid": "r1", "data": []}
        assert victim.reconnect_count == 1 and victim.state.value == "connected"
        assert len(seen) == 2
        await b.drop()
        await a2.drop()
