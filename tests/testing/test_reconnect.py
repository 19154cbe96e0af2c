"""Close codes and reconnects: graceful 1000, unexpected closes, drops, the back-off, the
session:new re-keying of protocol.md §6.2 step 6, reconnect-ack timeouts and 1009."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import trio
import trio_websocket

from jambonz_trio.testing import (
    AckAbandoned,
    AckTimeout,
    CallData,
    FakeJambonzError,
    InvalidInitialVerbs,
    NeverSent,
    ProtocolViolation,
    open_fake_call,
)

from ._apps import GATHER, HANGUP, SAY, AppSocket, TinyApp, app_running, started_call


async def test_app_closes_with_1000(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.close(1000)

    async with app_running(app_side) as app, open_fake_call(app.connector) as fc:
        await fc.start()
        record = await fc.expect_close(1000)
        assert record.connection == 1
        assert fc.closed_gracefully
        await fc.status("in-progress")  # silently dropped, like jambonz
        ack = await fc.hook("/gather", {"reason": "timeout"})
        assert ack.delivered is False
        assert ack.verbs == []
        with pytest.raises(FakeJambonzError, match="never reconnects"):
            await fc.reconnect()
        await trio.sleep(30)
        assert app.connects == 1
        assert fc.connection_count == 1
        assert [m.type for m in fc.sent] == ["session:new", "call:status"]


async def test_app_closes_with_1000_while_hook_pending(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.recv_type("verb:hook")
        await s.close(1000)

    async with started_call(app_side) as fc:
        with pytest.raises(AckAbandoned, match="closed the socket with 1000"):
            await fc.hook("/gather")


async def test_unexpected_close_reconnects_with_session_data(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: dict[str, Any] = {}

    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        new = await s.recv_type("session:new")
        await s.ack(new, [SAY, GATHER])
        await s.recv_type("call:status")
        seen["new"] = new
        await s.close(4000)
        seen["closed_at"] = trio.current_time()
        s2 = await app.accept()
        seen["accepted_at"] = trio.current_time()
        rec = await s2.recv_type("session:reconnect")
        seen["reconnect"] = rec
        await trio.sleep(1)  # the queued status must wait for this ack
        await s2.ack(rec)
        seen["status"] = await s2.recv_type("call:status")
        seen["status_at"] = trio.current_time()

    async with started_call(app_side) as fc:
        await fc.expect_close(4000)
        assert not fc.connected
        await fc.status("in-progress")  # queued: the socket is down
        ack = await fc.reconnect()  # waits for the automatic reconnect
        assert ack.request_type == "session:reconnect"
        assert fc.connection_count == 2
        await trio.sleep(1)
    rec = seen["reconnect"]
    assert seen["accepted_at"] - seen["closed_at"] == pytest.approx(0.0)  # the send connects at once
    assert rec["call_sid"] == seen["new"]["call_sid"]
    assert rec["data"] == seen["new"]["data"]
    assert rec["msgid"] != seen["new"]["msgid"]
    assert seen["status"]["data"]["call_status"] == "in-progress"
    assert seen["status_at"] - seen["accepted_at"] == pytest.approx(1.0)


async def test_automatic_reconnect_after_backoff(autojump_clock: trio.abc.Clock) -> None:
    times: list[float] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.close(4001)
        times.append(trio.current_time())
        s2 = await app.accept()
        times.append(trio.current_time())
        await s2.ack(await s2.recv_type("session:reconnect"))

    async with started_call(app_side) as fc:
        await fc.expect_close(4001)
        await fc.reconnect()
    assert times[1] - times[0] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("max_reconnects", "gaps"),
    [(5, [0.5, 1.0, 2.0, 4.0]), (8, [0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0])],
)
async def test_backoff_grows_and_reconnects_are_capped(
    autojump_clock: trio.abc.Clock, max_reconnects: int, gaps: list[float]
) -> None:
    opened: list[float] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.close(4000)
        while True:
            s = await app.accept()
            opened.append(trio.current_time())
            await s.ack(await s.recv_type("session:reconnect"))
            await s.close(4000)

    async with (
        app_running(app_side) as app,
        open_fake_call(app.connector, max_reconnects=max_reconnects) as fc,
    ):
        t0 = trio.current_time()
        await fc.start()
        await trio.sleep(120)
        assert fc.connection_count == max_reconnects  # jambonz's rc caps the connections
        assert not fc.connected
    assert [round(b - a, 3) for a, b in zip([t0, *opened], opened, strict=False)] == gaps


async def test_inflight_hook_abandoned_on_unexpected_close(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        hook = await s.recv_type("verb:hook")
        await s.close(4000)
        s2 = await app.accept()
        rec = await s2.recv_type("session:reconnect")
        await s2.ack(hook)  # answering the old msgid on the new socket
        await s2.ack(rec)

    async with started_call(app_side) as fc:
        with pytest.raises(AckAbandoned, match="the socket closed"):
            await fc.gather_timeout("/gather")
        with pytest.raises(ProtocolViolation, match="abandoned that request"):
            await fc.reconnect()


async def test_drop_then_reconnect(autojump_clock: trio.abc.Clock) -> None:
    seen: list[Any] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        seen.append(await s.closed_code())
        s2 = await app.accept()
        rec = await s2.recv_type("session:reconnect")
        await s2.ack(rec)
        for _ in range(2):
            seen.append((await s2.recv())["type"])

    async with app_running(app_side) as app, open_fake_call(app.connector) as fc:
        await fc.start()
        await fc.drop(reconnect=False)
        assert not fc.connected
        await trio.sleep(10)
        assert app.connects == 1  # no automatic reconnect
        with pytest.raises(FakeJambonzError, match="no open socket"):
            await fc.drop()
        ack = await fc.reconnect()
        assert ack.request_type == "session:reconnect"
        await fc.status("in-progress")
        await fc.tts_streaming_event("stream_open")
        with pytest.raises(FakeJambonzError, match="the socket is open"):
            await fc.reconnect()
        await trio.sleep(1)
    assert seen == [1006, "call:status", "tts:streaming-event"]


async def test_send_while_dropped_reconnects_and_queues(autojump_clock: trio.abc.Clock) -> None:
    order: list[str] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.closed_code()
        s2 = await app.accept()
        rec = await s2.recv_type("session:reconnect")
        order.append("reconnect")
        await s2.command("redirect", [HANGUP])  # commands are accepted at once
        await trio.sleep(2)
        await s2.ack(rec)
        hook = await s2.recv_type("verb:hook")
        order.append(hook["hook"])
        await s2.ack(hook, [HANGUP])

    async with started_call(app_side) as fc:
        await fc.drop(reconnect=False)
        ack = await fc.hook("/after-drop")  # triggers the reconnect, waits in the queue
        assert ack.verb_names == ["hangup"]
        assert ack.connection == 2
        await fc.expect_command("redirect")
    assert order == ["reconnect", "/after-drop"]


async def test_reconnect_ack_timeout_hangs_up(autojump_clock: trio.abc.Clock) -> None:
    seen: list[Any] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.close(4000)
        s2 = await app.accept()
        await s2.recv_type("session:reconnect")  # never acked
        status = await s2.recv_type("call:status")
        seen.append(status["data"])
        seen.append(await s2.closed_code())

    async with started_call(app_side) as fc:
        await fc.expect_close(4000)
        t0 = trio.current_time()
        with pytest.raises(AckTimeout) as info:
            await fc.reconnect()
        assert info.value.msg_type == "session:reconnect"
        assert trio.current_time() - t0 == pytest.approx(5.5)
        await trio.sleep(1)
        assert fc.is_over
    assert seen[0]["call_status"] == "completed"
    assert seen[0]["call_termination_by"] == "jambonz"
    assert seen[1] == 1000


async def test_drop_before_session_new_ack_rekeys(autojump_clock: trio.abc.Clock) -> None:
    """The ack of the next session:reconnect answers session:new. (This test used to expect the
    "trying" call:status to follow: jambonz 0.9.8 never sends it on this path, see
    test_nothing_more_reaches_the_app_after_a_rekeyed_session_new.)"""
    seen: dict[str, Any] = {}

    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        seen["new"] = await s.recv_type("session:new")
        await s.close(4002)  # e.g. the app crashed before answering
        s2 = await app.accept()
        rec = await s2.recv_type("session:reconnect")
        seen["reconnect"] = rec
        await trio.sleep(3)  # the original 5 s timer no longer applies
        await s2.ack(rec, [SAY, GATHER])
        with trio.move_on_after(10):
            seen["trying"] = await s2.recv_type("call:status")

    async with app_running(app_side) as app, open_fake_call(app.connector, strict=False) as fc:
        ack = await fc.start()
        assert ack.request_type == "session:new"
        assert ack.msgid == seen["reconnect"]["msgid"] != seen["new"]["msgid"]
        assert ack.verb_names == ["say", "gather"]
        assert ack.connection == 2
        assert trio.current_time() - fc.transcript[0].time > 3
        await trio.sleep(11)
        (held,) = fc.violations
        assert held.kind == "never-sent" and held.message.startswith("call:status ")
    assert seen["reconnect"]["data"] == seen["new"]["data"]
    assert "trying" not in seen  # jambonz 0.9.8 queues it for good


async def test_rekeyed_session_new_needs_verbs(autojump_clock: trio.abc.Clock) -> None:
    codes: list[int] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        await s.recv_type("session:new")
        await s.close(4002)
        s2 = await app.accept()
        await s2.ack(await s2.recv_type("session:reconnect"))  # a plain reconnect ack
        codes.append(await s2.closed_code())

    async with app_running(app_side) as app, open_fake_call(app.connector) as fc:
        with pytest.raises(InvalidInitialVerbs, match="non-empty verb array"):
            await fc.start()
        await trio.sleep(1)
    assert codes == [1001]


async def test_oversize_frame_closes_1009_and_reconnects(autojump_clock: trio.abc.Clock) -> None:
    seen: list[Any] = []
    prefix = '{"type":"command","command":"redirect","data":[{"verb":"say","text":"'
    suffix = '"}]}'

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        at_limit = prefix + "x" * (24576 - len(prefix) - len(suffix)) + suffix
        assert len(at_limit.encode()) == 24576
        await s.send(at_limit)  # exactly the limit: fine
        # 8193 characters but 24579 UTF-8 bytes: the limit is in bytes
        await s.send(prefix + "€" * ((24577 - len(prefix) - len(suffix)) // 3 + 1) + suffix)
        seen.append(await s.closed_code())
        seen.append(trio.current_time())
        s2 = await app.accept()
        seen.append(trio.current_time())
        await s2.ack(await s2.recv_type("session:reconnect"))

    async with started_call(app_side) as fc:
        await fc.expect_command("redirect")
        with pytest.raises(ProtocolViolation, match="over jambonz's maxPayload") as info:
            await fc.wait_idle(0.1)
        assert info.value.violations[0].kind == "oversize-frame"
        ack = await fc.reconnect()
        assert ack.connection == 2
    assert seen[0] == 1009
    assert seen[2] - seen[1] == pytest.approx(0.5)


async def test_giant_frame_over_the_character_limit(autojump_clock: trio.abc.Clock) -> None:
    codes: list[int] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.send("x" * 200_000)
        codes.append(await s.closed_code())

    async with started_call(app_side, strict=False) as fc:
        await trio.sleep(0.2)
        assert [v.kind for v in fc.violations] == ["oversize-frame"]
    assert codes == [1009]


async def test_auto_reconnect_off(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.close(4000)

    async with (
        app_running(app_side) as app,
        open_fake_call(app.connector, auto_reconnect=False, call=CallData()) as fc,
    ):
        await fc.start()
        await fc.expect_close(4000)
        await trio.sleep(30)
        assert app.connects == 1


async def test_a_send_after_the_timer_reconnects_ran_out_still_reconnects(
    autojump_clock: trio.abc.Clock,
) -> None:
    """jambonz caps only its *timer-driven* reconnects at ``rc``: ``_onSocketClosed`` checks
    ``connections < maxReconnects`` (FS v0.9.8 ``lib/utils/ws-requestor.js:455``), but
    ``request()`` connects whenever it has no socket, without that check (``:123-128``), and a
    successful open sends ``session:reconnect`` (``:367``). docs/protocol.md §6.2 step 2
    ("checked"). With ``#rc=1`` no timer reconnects after a drop, yet the next hook connects a
    second socket and reaches the app. The fake drops the message instead (``_core.py``
    ``_emit``: "max attempts connecting"), so the app's reconnect path is never exercised."""
    seen: list[str] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.close(4000)
        s2 = await app.accept()
        await s2.ack(await s2.recv_type("session:reconnect"))
        hook = await s2.recv_type("verb:hook")
        seen.append(hook["hook"])
        await s2.ack(hook)

    async with app_running(app_side) as app, open_fake_call(app.connector, max_reconnects=1) as fc:
        await fc.start()
        await fc.expect_close(4000)
        await trio.sleep(30)
        assert app.connects == 1  # rc=1: no timer-driven reconnect, as in jambonz
        ack = await fc.hook("/after-the-cap")  # jambonz: connects, session:reconnect, then this
        assert ack.connection == 2
    assert seen == ["/after-the-cap"]


async def test_queued_requests_go_out_before_queued_notifications_after_a_reconnect(
    autojump_clock: trio.abc.Clock,
) -> None:
    """After the ``session:reconnect`` ack jambonz flushes its queue in one loop: a queued
    request is re-sent at once through ``request()``, a queued notification only on the next
    event-loop turn (``setImmediate``) (FS v0.9.8 ``lib/utils/ws-requestor.js:215-226``, the
    flush at ``:296-313``; docs/protocol.md §6.2 step 4). So a ``call:status`` queued before a
    ``verb:hook`` reaches the app *after* it. The fake flushes in arising order."""
    order: list[str] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.closed_code()
        await _record_after_reconnect(app, order, 2)

    async with started_call(app_side) as fc:
        await fc.drop(reconnect=False)
        await fc.status("in-progress")  # a notification: starts the reconnect, queued
        await fc.hook("/queued")  # a request, queued behind it
        await trio.sleep(1)
    assert order == ["verb:hook", "call:status"]


async def _record_after_reconnect(app: TinyApp, order: list[str], n: int) -> AppSocket:
    """Accept the next socket, ack its ``session:reconnect``, then note the types of the
    ``n`` messages that follow in ``order`` (acking hooks). Returns the socket."""
    s = await app.accept()
    await s.ack(await s.recv_type("session:reconnect"))
    for _ in range(n):
        msg = await s.recv()
        order.append(msg["type"])
        if msg["type"] == "verb:hook":
            await s.ack(msg)
    return s


async def _rekeyed(app: TinyApp) -> AppSocket:
    """The app side of a re-keyed ``session:new``: the first socket closes (4002) before it is
    answered; the answer goes as the ack of the next socket's ``session:reconnect``. Returns
    that second socket."""
    s = await app.accept()
    await s.recv_type("session:new")
    await s.close(4002)
    s2 = await app.accept()
    await s2.ack(await s2.recv_type("session:reconnect"), [SAY, GATHER])
    return s2


async def test_nothing_more_reaches_the_app_after_a_rekeyed_session_new(
    autojump_clock: trio.abc.Clock,
) -> None:
    """When the socket drops before ``session:new`` is answered, jambonz re-keys it to the
    ``session:reconnect`` msgid and sends that reconnect as a notification (FS v0.9.8
    ``lib/utils/ws-requestor.js:244-261``). The ack resolves ``_reconnectPromise`` (``:282-284``)
    but only the send callback of an ack-awaited send (``:296-311``), not taken on this path,
    clears it, so every later message is queued by ``:184-186`` for good: the call goes deaf
    (docs/protocol.md §6.2 step 6, "checked": a later ``verb:hook`` and ``call:status`` never went
    out). The fake delivers them normally, so a test of "the app recovers from a crash before
    answering" passes against the fake and fails against jambonz. (FakeCall.reconnect's
    docstring admits the fake does not reproduce this; not even a violation is recorded.)

    Now: the fake holds them too and records a ``never-sent`` violation for each still held
    ``ack_timeout`` seconds later; a request then fails with ``NeverSent`` (jambonz would
    wait for ever), in any mode."""
    later: list[str] = []

    async def app_side(app: TinyApp) -> None:
        s2 = await _rekeyed(app)
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            while True:
                msg = await s2.recv()
                later.append(msg["type"])
                if msg["type"] == "verb:hook":
                    await s2.ack(msg)

    async with app_running(app_side) as app, open_fake_call(app.connector, strict=False) as fc:
        await fc.start()
        t0 = trio.current_time()
        with pytest.raises(NeverSent, match=r"verb:hook .* would never reach the app") as info:
            await fc.hook("/gather", {"reason": "timeout"})
        assert trio.current_time() == t0 + 5  # held ack_timeout, not for ever
        assert info.value.msg_type == "verb:hook"
        await fc.status("in-progress")
        await trio.sleep(6)
        # ("trying" and the hook were held at the same instant: their order is not defined)
        assert sorted(v.message.split()[0] for v in fc.violations) == [
            "call:status",
            "call:status",
            "verb:hook",
        ]
        assert {v.kind for v in fc.violations} == {"never-sent"}
        assert all("ws-requestor.js:184-186" in v.message for v in fc.violations)
    assert later == []  # jambonz 0.9.8 sends nothing more on this call, not even "trying"


async def test_a_rekeyed_session_new_is_a_violation_in_strict_mode(autojump_clock: trio.abc.Clock) -> None:
    """Strict mode (the default) makes it loud: ``start()`` gets its ack, and the next call
    into the fake once the "trying" has been held ``ack_timeout`` seconds raises it, naming
    why."""

    async def app_side(app: TinyApp) -> None:
        s2 = await _rekeyed(app)
        await s2.closed_code()

    async with app_running(app_side) as app, open_fake_call(app.connector) as fc:
        with pytest.raises(
            ProtocolViolation, match=r"\[never-sent\] call:status .* queues every later message"
        ):
            await fc.start()
            t0 = trio.current_time()
            await fc.wait_idle(10)
        assert trio.current_time() == t0 + 5
        assert fc.acks[0].verb_names == ["say", "gather"]  # session:new was answered all the same


async def test_another_reconnect_frees_what_a_rekeyed_session_new_held(
    autojump_clock: trio.abc.Clock,
) -> None:
    """jambonz's queue stays stuck only until an ordinary ``session:reconnect`` is acked: its
    send callback clears the flag and flushes (FS v0.9.8 ``lib/utils/ws-requestor.js:296-313``),
    so a second drop frees the call; the fake does the same (requests first, :215-226)."""
    order: list[str] = []

    async def app_side(app: TinyApp) -> None:
        s2 = await _rekeyed(app)
        await s2.closed_code()
        s3 = await app.accept()
        await s3.ack(await s3.recv_type("session:reconnect"))
        for _ in range(3):
            msg = await s3.recv()
            if msg["type"] == "verb:hook":
                order.append("verb:hook")
                await s3.ack(msg)
            else:
                order.append(f"{msg['type']} {msg['data']['call_status']}")

    async with app_running(app_side) as app, open_fake_call(app.connector, strict=False) as fc:
        await fc.start()
        with pytest.raises(NeverSent):
            await fc.hook("/gather", {"reason": "timeout"})
        await fc.status("in-progress")
        await fc.drop()
        await fc.reconnect()  # an ordinary one: session:new was acked meanwhile
        await trio.sleep(1)
        assert fc.connection_count == 3
    assert order == ["verb:hook", "call:status trying", "call:status in-progress"]


async def test_a_held_message_released_in_time_is_no_violation(autojump_clock: trio.abc.Clock) -> None:
    """An app that closes the socket (not with 1000) soon after the re-keyed answer gets what
    jambonz held, late, on the next socket (its reconnect is an ordinary one,
    ``ws-requestor.js:296-311``): no ``never-sent`` violation, strict mode; a request held
    meanwhile is acked as usual."""
    order: list[str] = []

    async def app_side(app: TinyApp) -> None:
        s2 = await _rekeyed(app)
        await trio.sleep(1)  # nothing comes: jambonz holds it all
        await s2.close(1012)
        s3 = await _record_after_reconnect(app, order, 2)
        await s3.closed_code()

    async with app_running(app_side) as app, open_fake_call(app.connector) as fc:
        await fc.start()
        t0 = trio.current_time()
        ack = await fc.hook("/gather", {"reason": "timeout"})
        assert ack.connection == 3 and trio.current_time() - t0 < 5
        await fc.wait_idle(10)
        assert fc.violations == [] and [c.code for c in fc.closes] == [4002, 1012]
        await fc.hangup()
    assert order == ["verb:hook", "call:status"]
