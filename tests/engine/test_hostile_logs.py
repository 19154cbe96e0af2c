"""Issue 19 item 3: peer-supplied values are escaped and capped in the library's logs, and a
peer cannot make one call write a line per bad frame or per unanswered request."""

from __future__ import annotations

import json
import logging

import pytest
import trio
import trio.testing

from jambonz_trio import Call, DisconnectedCommands, JambonzMessage, open_conversation
from jambonz_trio._log import MAX_VALUE_CHARS, CallLog, get_logger, safe
from jambonz_trio.messages import Disconnected
from jambonz_trio.verbs import Say
from tests.helpers import Serve

from .helpers import SESSION_DATA, raw_client

LINE_CAP = 4 * MAX_VALUE_CHARS + 1000  # a few capped arguments plus the library's own text


async def _deaf(call: Call) -> None:
    await call.ack(call.session, [Say(text="hi")])
    await call.wait_closed()


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("jambonz_trio")]


def test_safe_escapes_line_breaks_and_caps() -> None:
    assert safe("a\nb\r\x1b[31m\u2028\ud800") == "a\\nb\\r\\x1b[31m\\u2028\\ud800"
    long = safe("x" * 1_000_000)
    assert long == "x" * MAX_VALUE_CHARS + f"...[{1_000_000 - MAX_VALUE_CHARS} more chars]"
    assert safe("caf\u00e9 \U0001f600") == "caf\u00e9 \U0001f600"  # printable text is kept


def test_every_library_logger_sanitises_its_arguments(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    for name in ("jambonz_trio.call", "jambonz_trio.server", "jambonz_trio.conversation"):
        get_logger(name).warning("x %s %r %d %.1f", "a\nINFO forged" + "y" * 10_000, "b\n", 7, 1.5)
    for line in _lines(caplog):
        assert "\n" not in line and len(line) < LINE_CAP
        assert line.startswith("x a\\nINFO forged") and " 7 1.5" in line


def test_throttle_is_a_token_bucket_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    clog = CallLog(get_logger("jambonz_trio.call"), "sid", lambda: now[0])
    with caplog.at_level(logging.INFO):
        written = [clog.throttled("a", logging.WARNING, "bad %d", i) for i in range(1000)]
        assert sum(written) == CallLog.BURST
        assert clog.throttled("b", logging.WARNING, "other kind")  # its own budget
        now[0] += CallLog.INTERVAL
        assert clog.throttled("a", logging.WARNING, "bad again")
        clog.summary()  # nothing left unreported
        assert not clog.throttled("a", logging.WARNING, "bad once more")  # the bucket is empty
        clog.summary()
    lines = _lines(caplog)
    assert len(lines) == CallLog.BURST + 3
    assert lines[-2] == f"call sid: bad again ({1000 - CallLog.BURST} similar messages not logged)"
    assert lines[-1] == "call sid: 1 repeated messages were not logged (a: 1)"


async def test_huge_call_sid_and_bad_frame_flood_stay_small(
    serve: Serve, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A 400,000-character call sid and 1,000 eight-byte bad frames: before the fix, 1,000
    WARNING lines of 400 KB each."""
    caplog.set_level(logging.INFO)
    server = await serve(_deaf)
    sid = "s" * 400_000
    async with raw_client(server) as client:
        await client.send("session:new", "m1", {**SESSION_DATA, "call_sid": sid}, call_sid=sid)
        assert (await client.receive() or {}).get("type") == "ack"
        for _ in range(1000):
            await client.send_text("not json")
        await client.send("call:status", "s1", {"call_status": "in-progress"}, call_sid=sid)
        await trio.sleep(1)
        call = server.calls.get(sid)
        assert call is not None and call.statistics().frames_received >= 1000
    lines = _lines(caplog)
    assert all(len(line) < LINE_CAP for line in lines), max(map(len, lines))
    assert sum("protocol error" in line for line in lines) <= CallLog.BURST + 1


async def test_newline_in_call_sid_cannot_forge_a_line(
    serve: Serve, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await serve(_deaf)
    sid = "sid-1\nCRITICAL root: forged"
    async with raw_client(server) as client:
        await client.send("session:new", "m1", {**SESSION_DATA, "call_sid": sid}, call_sid=sid)
        await client.receive()
        await client.send_text('{"type": "verb:hook\\n", "msgid": "x\\ny"}')
        await trio.sleep(1)
    lines = _lines(caplog)
    assert any("sid-1\\nCRITICAL" in line for line in lines)
    assert not any("\n" in line for line in lines)


async def test_unanswered_request_flood_writes_a_bounded_number_of_warnings(
    serve: Serve, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """2,000 distinct msgids nobody answers: the watchdog answers each (jambonz must not wait)
    but logs a burst and one line per interval, not 2,000 (200,000 lines in the issue)."""
    caplog.set_level(logging.INFO)
    server = await serve(_deaf)
    async with raw_client(server) as client:
        await client.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
        await client.receive()
        for i in range(2000):
            await client.send("verb:hook", f"h{i}", {}, call_sid="sid-1", hook="/x")
        acks = 0
        with trio.fail_after(60):
            while acks < 2000:
                reply = await client.receive()
                assert reply is not None
                acks += reply.get("type") == "ack"
        await client.close()
        await trio.sleep(1)
    watchdog = [line for line in _lines(caplog) if "the watchdog answered" in line]
    assert len(watchdog) <= CallLog.BURST + 2
    assert any(
        "repeated messages were not logged" in line and "watchdog: " in line for line in _lines(caplog)
    )


async def test_event_flood_into_a_conversation_writes_a_bounded_number_of_warnings(
    serve: Serve, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A conversation app that never reads ``next_event()`` (most do not) and 2,000
    ``call:status`` messages: past its event queue, one WARNING per message before the fix."""
    caplog.set_level(logging.INFO)

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            await convo.say("hi")
            await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as client:
        await client.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
        assert (await client.receive() or {}).get("type") == "ack"
        for i in range(2000):
            await client.send("call:status", f"s{i}", {"call_status": "in-progress"}, call_sid="sid-1")
        await trio.sleep(1)
        await client.close()
        await trio.sleep(1)
    full = [line for line in _lines(caplog) if "conversation event queue full" in line]
    assert 1 <= len(full) <= CallLog.BURST + 2, len(full)
    assert any("repeated messages were not logged (queue full: " in line for line in _lines(caplog))


async def test_a_peer_type_in_an_error_the_handler_lets_escape_cannot_forge_a_line(
    serve: Serve, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Tracebacks are logged as they are, so the library's own error texts must not carry raw
    peer strings: before, acking an unknown message type raised ``LocalProtocolError`` with the
    type verbatim (any length, newlines included), and the handler's crash logged it."""
    caplog.set_level(logging.INFO)

    async def ack_everything(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            if isinstance(event, JambonzMessage):
                await call.ack(event)  # an app bug: not every message is a request

    server = await serve(ack_everything)
    forged = "x:y\nCRITICAL root: forged" + "z" * 100_000
    async with raw_client(server) as client:
        await client.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
        await client.receive()
        await client.send_text(json.dumps({"type": forged, "call_sid": "sid-1", "data": {}}))
        await trio.sleep(1)
    crash = [r for r in caplog.records if r.exc_info and "handler raised" in r.getMessage()]
    assert len(crash) == 1
    text = caplog.text
    assert "LocalProtocolError" in text and "\nCRITICAL root: forged" not in text
    assert len(text) < 20_000


async def test_a_peer_sid_in_not_delivered_cannot_forge_a_line(
    serve: Serve, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The same for the call sid in ``NotDelivered`` (``disconnected_commands=FAIL``)."""
    caplog.set_level(logging.INFO)

    async def hangs_up_when_disconnected(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            if isinstance(event, Disconnected):
                await call.hangup()  # raises NotDelivered at once; not caught

    server = await serve(hangs_up_when_disconnected, disconnected_commands=DisconnectedCommands.FAIL)
    sid = "sid-1\nCRITICAL root: forged" + "z" * 100_000
    async with raw_client(server) as client:
        await client.send("session:new", "m1", {**SESSION_DATA, "call_sid": sid}, call_sid=sid)
        await client.receive()
        await client.drop()
        await trio.sleep(1)
    assert [r for r in caplog.records if r.exc_info and "handler raised NotDelivered" in r.getMessage()]
    text = caplog.text
    assert "is disconnected" in text and "\nCRITICAL root: forged" not in text
    assert len(text) < 20_000
