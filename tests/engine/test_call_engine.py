"""The per-call engine: acks, the watchdog, commands, liveness, failures (FM-08..FM-27)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from wsproto.events import Ping

from jambonz_trio import (
    AckOutcome,
    Call,
    CallClosed,
    CallStatus,
    Event,
    JambonzMessage,
    JambonzServer,
    LateAck,
    LocalProtocolError,
    MessageTooLarge,
    NotDelivered,
    Overflow,
    ServerConfig,
    VerbHook,
    serve_jambonz,
)
from jambonz_trio._engine import CallEngine
from jambonz_trio.commands import RedirectCommand, parse_command
from jambonz_trio.messages import (
    DialConfirm,
    Disconnected,
    JambonzErrorReport,
    UnknownMessage,
)
from jambonz_trio.testing import open_fake_call
from jambonz_trio.testing._fake import flux_speech_result
from jambonz_trio.verbs import Enqueue, Gather, Hangup, Pause, Play, Say, Verb
from tests.helpers import Serve, answer_and_wait, recording, start

from .helpers import SESSION_DATA, PassThroughStream, RawClient, inner_enter, new_call, raw_client

# -- acks and the watchdog ------------------------------------------------------------------


def _answers_late(
    kind: type[JambonzMessage], verbs: list[Verb], outcome: list[AckOutcome]
) -> Callable[[Call], Awaitable[None]]:
    """An app that answers ``session:new`` at once and every ``kind`` request 6 s late (past
    the 4 s watchdog) with ``verbs``, recording the outcomes."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            if isinstance(event, kind):
                await trio.sleep(6)
                outcome.append(await call.ack(event, verbs))

    return app


async def test_fm21_watchdog_answers_late_hook_then_redirect(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    outcome: list[AckOutcome] = []
    server = await serve(_answers_late(VerbHook, [Hangup()], outcome))
    async with raw_client(server) as client:
        await new_call(client)
        t0 = trio.current_time()
        await client.send("verb:hook", "h1", {"reason": "timeout"}, hook="/g", call_sid="sid-1")
        first = await client.receive()
        assert first == {"type": "ack", "msgid": "h1", "data": []}
        assert trio.current_time() - t0 == pytest.approx(4.0, abs=0.01)
        second = await client.receive()
        assert second is not None
        assert trio.current_time() - t0 == pytest.approx(6.0, abs=0.01)
        assert parse_command(second).to_wire() == second
        assert second["command"] == "redirect" and second["data"] == [{"verb": "hangup"}]
        assert "msgid" not in second
    assert outcome == [AckOutcome.REDIRECTED]


async def test_fm21_session_new_watchdog_sends_holding_verbs(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    async def app(call: Call) -> None:
        await trio.sleep(10)
        await call.ack(call.session, [Say(text="late")])
        await call.wait_closed()

    server = await serve(app, holding_verbs=[Pause(length=3)])
    async with raw_client(server) as client:
        ack = await new_call(client)
        assert ack == {"type": "ack", "msgid": "m1", "data": [{"verb": "pause", "length": 3}]}
        redirect = await client.receive()
        assert redirect is not None and redirect["command"] == "redirect"
        assert redirect["data"] == [{"verb": "say", "text": "late"}]


@pytest.mark.parametrize("late_ack", [LateAck.REDIRECT, LateAck.RAISE])
async def test_fm21_a_late_dial_confirm_answer_is_dropped_whatever_the_policy(
    serve: Serve, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, late_ack: LateAck
) -> None:
    """A ``dial:confirm`` answer's verbs are for the callee; after the watchdog's empty ack
    jambonz bridged it, and a ``redirect`` would replace the caller's program (its ``dial``):
    the late answer is dropped and logged, never sent, and ``Call.ack`` says ``DROPPED`` (it
    does not raise under ``LateAck.RAISE``: there is nothing the app could do instead)."""
    outcome: list[AckOutcome] = []
    app = _answers_late(DialConfirm, [Say(text="Press 1 to accept"), Pause(length=2)], outcome)
    server = await serve(app, late_ack=late_ack)
    caplog.set_level(logging.WARNING, logger="jambonz_trio.call")
    async with raw_client(server) as client:
        await new_call(client)
        await client.send("dial:confirm", "dc1", {"call_sid": "child"}, hook="/confirm", call_sid="sid-1")
        assert await client.receive() == {"type": "ack", "msgid": "dc1", "data": []}  # the watchdog, at 4 s
        with trio.move_on_after(10):
            extra = await client.receive()
            pytest.fail(f"nothing more may be sent, got {extra}")
    assert outcome == [AckOutcome.DROPPED]
    assert any("late answer to dc1 dropped" in r.getMessage() for r in caplog.records)


async def test_fm21_a_late_wait_hook_answer_is_dropped_not_sent_as_a_redirect(
    serve: Serve, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An enqueue ``waitHook`` answer plays inside the ``enqueue`` (FS v0.9.8
    ``lib/tasks/enqueue.js:314-384``). After the watchdog's empty ack (which ends jambonz's
    wait loop, ``:165``), a late answer sent as a ``redirect`` would replace the program and
    kill the ``enqueue`` (``lib/session/call-session.js:2280-2289``, ``:2119-2125``): the
    caller would leave the queue. The late answer is dropped, whatever it carries."""
    outcome: list[AckOutcome] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Enqueue(name="support", wait_hook="/hold-music")])
        async for event in call:
            if isinstance(event, VerbHook) and event.hook == "/hold-music":
                await trio.sleep(6)
                outcome.append(await call.ack(event, [Play(url="https://example.com/hold.mp3")]))

    server = await serve(app)
    caplog.set_level(logging.WARNING, logger="jambonz_trio.call")
    async with open_fake_call(server.connect_memory) as fc:
        ack = await fc.start()
        waited = await fc.wait_hook(ack.first(Enqueue))
        assert waited.verbs == []  # the watchdog's, at 4 s: jambonz stops asking
        await fc.expect_no_command(within=10)
        await fc.hangup()
    assert outcome == [AckOutcome.DROPPED]
    assert any("late answer to" in r.getMessage() for r in caplog.records)


_CONF_STATUS = {"event": "join", "conference_sid": "conf:acct:room", "friendly_name": "room", "members": 2}


@pytest.mark.parametrize(
    ("url", "data"),
    [
        pytest.param("/conf-status", _CONF_STATUS, id="conference-statusHook"),
        pytest.param("/partial", {"speech": {"is_final": False, "alternatives": []}}, id="partialResultHook"),
        pytest.param("/turn", flux_speech_result("I need to", "EagerEndOfTurn"), id="flux-early-turn"),
        pytest.param("/turn", flux_speech_result("I need to", "TurnResumed"), id="flux-turn-resumed"),
    ],
)
async def test_fm21_a_late_answer_to_a_hook_whose_answer_jambonz_ignores_is_dropped(
    serve: Serve,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    url: str,
    data: dict[str, Any],
) -> None:
    """A conference ``statusHook``, a gather's ``partialResultHook`` and a deepgramflux
    gather's early turn reports await an ack whose verbs jambonz ignores (FS v0.9.8
    ``lib/tasks/conference.js:715-742``, ``lib/tasks/gather.js:1108-1118``): the conference or
    the gather runs on. Answered after the watchdog, such an answer sent as a ``redirect``
    would replace the program and kill that verb: it is dropped and logged, on a bare Call."""
    outcome: list[AckOutcome] = []

    async def app(call: Call) -> None:
        gather = Gather(input=["speech"], action_hook="/turn", partial_result_hook="/partial")
        await call.ack(call.session, [gather])
        async for event in call:
            if isinstance(event, VerbHook):
                await trio.sleep(6)
                outcome.append(await call.ack(event, [Say(text="late"), Hangup()]))

    server = await serve(app)
    caplog.set_level(logging.WARNING, logger="jambonz_trio.call")
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        assert (await fc.hook(url, data)).verbs == []  # the watchdog's, at 4 s
        await fc.expect_no_command(within=10)
        await fc.hangup()
    assert outcome == [AckOutcome.DROPPED]
    assert any("late answer to" in r.getMessage() for r in caplog.records)


async def test_fm23_out_of_order_acks(serve: Serve) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        first = await call.next_event()
        second = await call.next_event()
        assert isinstance(first, VerbHook) and isinstance(second, VerbHook)
        await call.ack(second, [Hangup()])
        await call.ack(first)
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        await client.send("verb:hook", "p1", {"speech": {}}, hook="/partial", call_sid="sid-1")
        await client.send("verb:hook", "a1", {"reason": "timeout"}, hook="/action", call_sid="sid-1")
        acks = [await client.receive(), await client.receive()]
        assert acks == [
            {"type": "ack", "msgid": "a1", "data": [{"verb": "hangup"}]},
            {"type": "ack", "msgid": "p1", "data": []},
        ]


async def test_fm22_engine_refuses_bad_acks(serve: Serve) -> None:
    errors: list[str] = []
    done = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        status = await call.next_event()
        assert isinstance(status, CallStatus)
        requests: list[JambonzMessage | str] = [status, call.session, "nope"]
        for request in requests:
            try:
                await call.ack(request)
            except LocalProtocolError as exc:
                errors.append(type(exc).__name__)
        with pytest.raises(LocalProtocolError):
            await call.ack(call.session, [])
        done.set()
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        await client.send("call:status", "s1", {"call_status": "in-progress"}, call_sid="sid-1")
        with trio.fail_after(5):
            await done.wait()
    assert errors == ["LocalProtocolError", "AlreadyAcked", "LocalProtocolError"]


async def test_fm19_unknown_type_with_msgid_is_delivered_and_acked_at_deadline(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[Any] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        seen.append(await call.next_event())
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        t0 = trio.current_time()
        await client.send("foo:bar", "u1", {"x": 1}, call_sid="sid-1")
        ack = await client.receive()
        assert ack == {"type": "ack", "msgid": "u1", "data": []}
        assert trio.current_time() - t0 == pytest.approx(4.0, abs=0.01)
    assert isinstance(seen[0], UnknownMessage) and seen[0].type == "foo:bar"


async def test_fm20_jambonz_error_is_surfaced(serve: Serve) -> None:
    seen: list[Any] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        seen.append(await call.next_event())

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        data = {"msg": "InvalidMessage", "details": "bad", "content": "{oops"}
        await client.send("jambonz:error", "e1", data, call_sid="sid-1")
        assert await client.receive() is None  # handler returned: the call closes
    assert isinstance(seen[0], JambonzErrorReport) and seen[0].content == "{oops"
    assert client.close_code == 1000


async def test_i19_11_owed_acks_are_bounded_and_watchdog_warnings_rate_limited(
    serve: Serve, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 19 #11: a flood of distinct msgids the app never answers. At most
    ``max_owed_acks`` stay owed; past it each request is answered at once (empty, as the
    watchdog would at its deadline); the watchdog's warnings are rate-limited per call."""
    flood = 1000

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        await call.wait_closed()  # never reads its events: every hook goes unanswered

    server = await serve(app, max_owed_acks=100)
    caplog.set_level(logging.WARNING, logger="jambonz_trio.call")
    async with raw_client(server) as client:
        await new_call(client)
        t0 = trio.current_time()
        for i in range(flood):
            await client.send("verb:hook", f"f{i}", {}, hook="/flood", call_sid="sid-1")
        await trio.testing.wait_all_tasks_blocked()
        call = server.calls["sid-1"]
        assert call.statistics().acks_owed <= 100
        early = []
        for _ in range(flood - 100):
            frame = await client.receive()
            assert frame is not None and frame["type"] == "ack" and frame["data"] == []
            early.append(frame["msgid"])
        assert trio.current_time() - t0 < 1.0  # at once, not at the 4 s deadline
        assert early == [f"f{i}" for i in range(100, flood)]  # the ones past the bound
        late = [str(((await client.receive()) or {}).get("msgid")) for _ in range(100)]
        assert sorted(late) == sorted(f"f{i}" for i in range(100))  # the watchdog, at 4 s
        assert call.statistics().acks_owed == 0
        assert call.statistics().auto_acked == flood
    warnings = [r for r in caplog.records if "the watchdog answered" in r.getMessage()]
    assert 1 <= len(warnings) <= 5  # old: one line per request


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[1, 2]",
        "null",
        '{"type": 5}',
        '{"a": NaN}',
        "[" * 5000 + "]" * 5000,
        '{"type": "verb:hook", "msgid": "x", "data": "str"}',
        '{"n": ' + "9" * 5000 + "}",
        '{"type": "verb:hook"}',
    ],
)
async def test_fm18_bad_frames_never_break_the_call(serve: Serve, bad: str) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            if isinstance(event, VerbHook):
                await call.ack(event, [Hangup()])

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        await client.send_text(bad)
        await client.send("verb:hook", "h1", {}, hook="/g", call_sid="sid-1")
        reply = await client.receive()
        if reply is not None and reply.get("msgid") == "x":  # the bad frame's msgid got answered
            reply = await client.receive()
        assert reply == {"type": "ack", "msgid": "h1", "data": [{"verb": "hangup"}]}


async def test_fm17_binary_frame_ignored(serve: Serve) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        event = await call.next_event()
        assert isinstance(event, VerbHook)
        await call.ack(event, [Hangup()])
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        await client.send_bytes(b'{"type":"verb:hook","msgid":"b","data":{}}')
        await client.send("verb:hook", "h1", {}, hook="/g", call_sid="sid-1")
        assert await client.receive() == {
            "type": "ack",
            "msgid": "h1",
            "data": [{"verb": "hangup"}],
        }


async def test_fm14_oversize_inbound_closes_1009(nursery: trio.Nursery) -> None:
    config = ServerConfig(max_inbound_bytes=24 * 1024)

    async def app(call: Call) -> None:
        await answer_and_wait(call)

    server: JambonzServer = await nursery.start(
        lambda task_status: serve_jambonz(app, config=config, task_status=task_status)
    )
    async with raw_client(server) as client:
        await new_call(client)
        # 15,000 emoji: 60,000 bytes but only 15,000 characters (F7)
        await client.send("verb:hook", "big", {"text": "\U0001f600" * 15000}, hook="/g", call_sid="sid-1")
        assert await client.receive() is None
        assert client.close_code == 1009


async def test_fm15_outbound_too_large_refused_locally(serve: Serve) -> None:
    results: list[str] = []

    async def app(call: Call) -> None:
        with pytest.raises(MessageTooLarge):
            await call.ack(call.session, [Say(text="é" * 13000)])  # 26,000 bytes
        await call.ack(call.session, [Say(text="fits")])
        with pytest.raises(LocalProtocolError):
            await call.redirect([Say(text="\ud800")])  # FM-16: lone surrogate
        await call.redirect([Say(text="next")])
        results.append("ok")
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as client:
        ack = await new_call(client)
        assert ack == {"type": "ack", "msgid": "m1", "data": [{"verb": "say", "text": "fits"}]}
        cmd = await client.receive()
        assert cmd is not None and cmd["data"] == [{"verb": "say", "text": "next"}]
    assert results == ["ok"]


# -- commands -------------------------------------------------------------------------------


async def test_commands_refused_before_session_new_ack(serve: Serve) -> None:
    async def app(call: Call) -> None:
        with pytest.raises(LocalProtocolError, match="session:new"):
            await call.hangup()
        await call.ack(call.session, [Say(text="hi")])
        await call.hangup()
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        assert await client.receive() == {
            "type": "command",
            "command": "call:status",
            "data": {"call_status": "completed"},
        }


async def test_every_call_command_method_sends_the_08_shape(serve: Serve) -> None:
    from jambonz_trio.verbs import Config, Dub

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        await call.redirect([Say(text="r")], queue=True)
        await call.redirect_to_hook("/new")
        await call.redirect_legs(child_call=[Hangup()])
        await call.hangup()
        await call.reject()
        await call.mute(call_sid="child")
        await call.unmute()
        await call.conference_mute("mute")
        await call.conference_hold("hold", wait_hook="/hold")
        await call.conference_participant("tag", tag="vip")
        await call.listen_status("pause")
        await call.stream_status("resume")
        await call.transcribe_status("pause")
        await call.whisper([Say(text="psst")], call_sid="child")
        await call.sip_request("INFO", content_type="text/plain", content="x", headers={"X-A": "1"})
        await call.send_dtmf("5", duration=300)
        await call.record("startCallRecording", siprec_server_url="sip:srs@x", recording_id="r1")
        await call.configure(Config(notify_events=True))
        await call.create_call({"from": "+1", "to": {"type": "phone", "number": "+2"}, "call_hook": "/x"})
        await call.dub(Dub(action="addTrack", track="music"))
        await call.boost_audio("+6 dB")
        await call.media_path("no-media")
        await call.llm_tool_output("t1", {"type": "conversation.item.create"})
        await call.llm_update({"type": "session.update"})
        await call.tts_flush()
        await call.tts_clear()
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        frames = []
        for _ in range(26):
            frame = await client.receive()
            assert frame is not None
            frames.append(frame)
    names = [f["command"] for f in frames]
    assert len(set(names)) == 22  # the 23 minus tts:tokens (covered by the streaming test)
    for frame in frames:
        assert "call_sid" not in frame
        assert parse_command(frame).to_wire() == frame  # the shape 0.9.8's handler reads
    by_name: dict[str, dict[str, Any]] = {}
    for frame in frames:
        by_name.setdefault(frame["command"], frame)
    assert by_name["sip:request"]["data"] == {
        "sip_request": {
            "method": "INFO",
            "content_type": "text/plain",
            "content": "x",
            "headers": {"X-A": "1"},
        }
    }
    assert by_name["dtmf"]["data"] == {"dtmf": {"digit": "5", "duration": 300}}
    assert by_name["mute:status"]["callSid"] == "child"
    assert by_name["llm:tool-output"]["tool_call_id"] == "t1"
    assert "data" not in by_name["tts:flush"]


async def test_command_from_another_task(serve: Serve) -> None:
    async def app(call: Call) -> None:
        await answer_and_wait(call)

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        call = server.calls.get("sid-1")
        assert call is not None
        await call.wait_session_acked()
        await call.redirect([Say(text="from outside")])
        frame = await client.receive()
        assert frame is not None and frame["data"] == [{"verb": "say", "text": "from outside"}]


async def test_tts_tokens_back_pressure(serve: Serve, autojump_clock: trio.testing.MockClock) -> None:
    results: list[str | None] = []
    done = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        for word in ("one", "two"):
            result = await call.send_tts_tokens(word)
            results.append(result.status)
        done.set()
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        first = await client.receive()
        assert first is not None and first["data"] == {"id": 1, "tokens": "one"}
        await client.send(
            "tts:tokens-result",
            "r1",
            {"id": 1, "status": "failed", "reason": "full"},
            call_sid="sid-1",
        )
        await client.send("tts:streaming-event", "e1", {"event_type": "stream_paused"}, call_sid="sid-1")
        with trio.move_on_after(30) as scope:  # nothing is resent while paused (virtual time)
            await client.receive()
        assert scope.cancelled_caught
        await client.send("tts:streaming-event", "e2", {"event_type": "stream_resumed"}, call_sid="sid-1")
        resent = await client.receive()
        assert resent is not None and resent["data"]["tokens"] == "one"
        await client.send(
            "tts:tokens-result",
            "r2",
            {"id": resent["data"]["id"], "status": "ok"},
            call_sid="sid-1",
        )
        nxt = await client.receive()
        assert nxt is not None and nxt["data"]["tokens"] == "two"
        await client.send(
            "tts:tokens-result", "r3", {"id": nxt["data"]["id"], "status": "ok"}, call_sid="sid-1"
        )
        with trio.fail_after(5):
            await done.wait()
    assert results == ["ok", "ok"]


# -- failures and closing ------------------------------------------------------------------


async def test_fm08_handler_raises_after_ack(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        raise RuntimeError("boom")

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        redirect = await client.receive()
        assert redirect == {
            "type": "command",
            "command": "redirect",
            "queueCommand": False,
            "data": [{"verb": "hangup"}],
        }
        assert await client.receive() is None
        assert client.close_code == 1000
    assert "boom" in caplog.text and "sid-1" in caplog.text


async def test_fm08_a_crashed_handler_closes_by_error(serve: Serve) -> None:
    """``CloseInfo.by`` documents ``"error"`` for a crashed handler; before, the call closed as
    ``by="app"`` with reason ``handler finished``, like one that returned."""
    calls: list[Call] = []

    async def app(call: Call) -> None:
        calls.append(call)
        await call.ack(call.session, [Say(text="hi")])
        raise RuntimeError("boom")

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        assert (await client.receive() or {}).get("command") == "redirect"  # the fallback verbs
        assert await client.receive() is None
        assert (client.close_code, client.close_reason) == (1000, "handler failed")
    info = await calls[0].wait_closed()
    assert (info.code, info.reason, info.by) == (1000, "handler failed", "error")


async def test_fm08_a_returning_handler_closes_by_app(serve: Serve) -> None:
    calls: list[Call] = []

    async def app(call: Call) -> None:
        calls.append(call)
        await call.ack(call.session, [Say(text="hi")])

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        assert await client.receive() is None
        assert (client.close_code, client.close_reason) == (1000, "handler finished")
    info = await calls[0].wait_closed()
    assert (info.code, info.reason, info.by) == (1000, "handler finished", "app")


async def test_fm08_handler_raises_before_ack_answers_with_fallback(serve: Serve) -> None:
    async def app(call: Call) -> None:
        raise RuntimeError("boom")

    server = await serve(app)
    async with raw_client(server) as client:
        assert await new_call(client) == {
            "type": "ack",
            "msgid": "m1",
            "data": [{"verb": "hangup"}],
        }
        assert await client.receive() is None
        assert client.close_code == 1000


async def test_fm08_one_crash_does_not_touch_other_calls(serve: Serve) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            if isinstance(event, VerbHook):
                if event.hook == "/crash":
                    raise RuntimeError("boom")
                await call.ack(event, [Hangup()])

    server = await serve(app)
    async with trio.open_nursery() as inner:
        clients: list[RawClient] = []
        for i in range(10):
            cm = raw_client(server)
            clients.append(await inner_enter(inner, cm))
            await new_call(clients[-1], sid=f"sid-{i}")
        await clients[0].send("verb:hook", "c", {}, hook="/crash", call_sid="sid-0")
        assert (await clients[0].receive() or {}).get("command") == "redirect"
        for i, c in enumerate(clients[1:], start=1):
            await c.send("verb:hook", f"h{i}", {}, hook="/g", call_sid=f"sid-{i}")
            assert await c.receive() == {
                "type": "ack",
                "msgid": f"h{i}",
                "data": [{"verb": "hangup"}],
            }
        inner.cancel_scope.cancel()


async def test_strict_mode_reraises(autojump_clock: trio.testing.MockClock) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        raise RuntimeError("strict boom")

    with pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            server = await start(nursery, app, strict=True)
            async with raw_client(server) as client:
                await new_call(client)
                await client.receive()
                await trio.sleep(60)
    assert info.group_contains(RuntimeError, match="strict boom")


async def test_fm27_normal_end_is_callclosed_not_a_group(serve: Serve) -> None:
    raised: list[BaseException] = []
    done = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        try:
            while True:
                await call.next_event()
        except BaseException as exc:
            raised.append(exc)
            done.set()
            raise

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        await client.close(1000)
        assert await client.receive() is None
    with trio.fail_after(5):
        await done.wait()
    assert type(raised[0]) is CallClosed
    assert raised[0].code == 1000


async def test_fm25_close_codes_validated(serve: Serve) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        for bad in (999, 1005, 1006, 1015, 2999, 5000):
            with pytest.raises(ValueError, match="close code"):
                await call.aclose(bad)
        await call.aclose(4000, "x" * 300)

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        assert await client.receive() is None
        assert client.close_code == 4000


# -- liveness and back-pressure --------------------------------------------------------------


async def test_fm11_half_open_peer_is_aborted(serve: Serve, autojump_clock: trio.testing.MockClock) -> None:
    events: list[Any] = []
    got_event = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        events.append(await call.next_event())
        got_event.set()

    server = await serve(app, ping_interval=20, ping_timeout=10)
    async with raw_client(server, auto_pong=False) as client:
        await new_call(client)
        t0 = trio.current_time()
        with trio.fail_after(120):
            await got_event.wait()
        assert trio.current_time() - t0 == pytest.approx(30, abs=1.1)
    assert isinstance(events[0], Disconnected)


async def test_fm12_idle_call_kept_alive_by_pings(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    async def app(call: Call) -> None:
        await answer_and_wait(call)

    server = await serve(app, ping_interval=20, ping_timeout=10)
    async with raw_client(server) as client:
        await new_call(client)
        with trio.move_on_after(600):
            await client.receive()  # answers pings; returns only on a frame or close
        assert 29 <= client.pings <= 30
        call = server.calls.get("sid-1")
        assert call is not None and call.state.value == "connected"


async def test_fm10_peer_that_stops_reading(serve: Serve, autojump_clock: trio.testing.MockClock) -> None:
    failures: list[BaseException] = []
    failed = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        t0 = trio.current_time()
        try:
            for i in range(1000):
                await call.redirect([Say(text=f"{i} " + "x" * 1000)])
        except NotDelivered as exc:
            failures.append(exc)
            failed.set()
            assert trio.current_time() - t0 == pytest.approx(5.0, abs=0.5)
        await trio.sleep_forever()

    server = await serve(app, send_timeout=5)
    stream = await server.connect_memory(lockstep=True)
    client = RawClient(stream)
    await client.handshake()
    await client.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
    assert (await client.receive() or {}).get("type") == "ack"  # ...then it never reads again
    with trio.fail_after(60):
        await failed.wait()
    call = server.calls.get("sid-1")
    assert call is not None and call.state.value == "disconnected"


async def test_fm13_slow_handler_does_not_block_bookkeeping(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        await trio.sleep(60)  # never reads events

    server = await serve(app, event_queue_size=16, overflow=Overflow.DROP)
    async with raw_client(server) as client:
        await new_call(client)
        for i in range(200):
            await client.send("call:status", f"s{i}", {"call_status": "in-progress"}, call_sid="sid-1")
        t0 = trio.current_time()
        await client.send("verb:hook", "h1", {}, hook="/g", call_sid="sid-1")
        assert await client.receive() == {"type": "ack", "msgid": "h1", "data": []}
        assert trio.current_time() - t0 == pytest.approx(4.0, abs=0.01)
        call = server.calls.get("sid-1")
        assert call is not None
        stats = call.statistics()
        assert stats.events_queued == 16 and stats.events_dropped == 185


async def test_s11_secrets_never_logged(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def app(call: Call) -> None:
        log = logging.getLogger("test.app")
        log.info("call %r info %r session %r", call, call.info, call.session)
        await call.ack(call.session, [Say(text="hi")])
        raise RuntimeError("crash")

    server = await serve(app)
    async with raw_client(server) as client:
        await new_call(client)
        await client.receive()
    assert "s3cret-value" not in caplog.text


async def test_fm36_a_msgid_too_long_to_echo_does_not_take_the_server_down(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Review r1: a msgid the ack could not echo (over ``maxPayload``) must not take the server down."""
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


async def test_fm36_a_failing_watchdog_ends_only_its_call(
    serve: Serve, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review r1 (FM-36): whatever escapes one call's task (here its watchdog) is logged, not
    raised, and ends only that call."""
    auto_answer = CallEngine._auto_answer

    async def boom(engine: CallEngine, owed: Any) -> None:
        if engine.call_sid == "evil":
            raise RuntimeError("a bug in the watchdog")
        await auto_answer(engine, owed)

    monkeypatch.setattr(CallEngine, "_auto_answer", boom)

    async def app(call: Call) -> None:
        await answer_and_wait(call)

    server = await serve(app)
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


async def test_fm36_callclosed_of_another_call_is_a_handler_failure(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Review r9: a ``CallClosed`` of another call (a handler following another leg) is a
    handler failure, not a server crash."""
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


async def test_fm11_slow_auto_answers_do_not_shorten_the_pong_deadline(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Keepalive review (issue 8): two hooks go unanswered while the peer reads only every 6 s (but answers pings within
    1 s): the watchdog's writes take a while, and the ping's deadlines must start after them."""
    events: list[Event] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            events.append(event)

    server = await serve(app, ping_interval=4, ping_timeout=10, send_timeout=10)
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


class CongestedLink(PassThroughStream):
    """Writes trickle out 3 bytes every 2 s while ``slow`` is set."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.slow = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        rest = bytes(data)
        while rest:
            n = 3 if self.slow else len(rest)
            await self.inner.send_all(rest[:n])
            rest = rest[n:]
            if self.slow and rest:
                await trio.sleep(2)


async def test_fm10_a_ping_cut_half_way_ends_the_socket(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Keepalive review (issue 8): a Ping cut by send_timeout after 3 of its bytes: nothing may be written after it (the
    peer would read garbage); the socket is reported lost and commands wait for a reconnect."""
    calls: list[Call] = []
    app = recording(calls, "hi")

    server = await start(nursery, app, ping_interval=20, ping_timeout=30, send_timeout=1)
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
