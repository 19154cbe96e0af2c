"""The fake holds the app to jambonz 0.9.8's rules: jambonz:error replies, unknown acks,
malformed or early commands, binary and oversize frames, strict vs lenient mode."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from jambonz_trio._protocol import DtmfCommand, RedirectCommand, TtsFlushCommand
from jambonz_trio.testing import AckTimeout, InvalidVerbs, ProtocolViolation, open_fake_call

from ._apps import HANGUP, SAY, TinyApp, app_running, started_call


@pytest.mark.parametrize(
    ("frame", "details"),
    [
        ("not json", "Expecting value: line 1 column 1 (char 0)"),
        ('{"type": "ack", "msgid": NaN}', "Unexpected token 'N', \"NaN\" is not valid JSON"),
        ("null", "Cannot destructure property 'type' of 'obj' as it is null."),
        ("[]", "type property not supplied"),
        ('"ack"', "type property not supplied"),
        ("5", "type property not supplied"),
        ('{"msgid": "x"}', "type property not supplied"),
        ('{"type": ""}', "type property not supplied"),
        ('{"type": "tts:tokens", "data": {}}', "invalid type property: tts:tokens"),
        ('{"type": 7}', "invalid type property: 7"),
        ('{"type": "ack"}', "msgid not supplied"),
        ('{"type": "ack", "msgid": ""}', "msgid not supplied"),
        ('{"type": "command", "data": []}', "command property not supplied"),
        ('{"type": "command", "command": "redirect"}', "data property not supplied"),
        (
            '{"type": "command", "command": "boostAudioSignal", "data": 0}',
            "data property not supplied",
        ),
        ('{"type": "command", "command": "mute:status", "data": ""}', "data property not supplied"),
    ],
)
async def test_invalid_message_gets_jambonz_error(
    autojump_clock: trio.abc.Clock, frame: str, details: str
) -> None:
    replies: list[dict[str, Any]] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.send(frame)
        replies.append(await s.recv_type("jambonz:error"))
        await s.command("redirect", [HANGUP])

    async with started_call(app_side) as fc:
        with pytest.raises(ProtocolViolation, match="invalid-message") as info:
            await fc.expect_command("redirect")
        assert info.value.violations[0].frame == frame
        # the socket stays open and later traffic works
        await fc.expect_command("redirect")
        assert fc.jambonz_errors == [{"msg": "InvalidMessage", "details": details, "content": frame}]
    reply = replies[0]
    assert reply["data"] == {"msg": "InvalidMessage", "details": details, "content": frame}
    assert reply["call_sid"] == fc.call.call_sid
    assert "hook" not in reply


@pytest.mark.parametrize("command", ["tts:flush", "tts:clear"])
async def test_no_data_commands_are_fine(autojump_clock: trio.abc.Clock, command: str) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.command(command)

    async with started_call(app_side) as fc:
        await fc.wait_idle(1)
        assert [c.name for c in fc.commands] == [command]
        assert fc.jambonz_errors == []
        if command == "tts:flush":
            assert isinstance(fc.commands[0].command, TtsFlushCommand)
            assert fc.tts_flushes == 1


async def test_empty_redirect_array_is_truthy_for_jambonz(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.command("redirect", [])

    async with started_call(app_side) as fc:
        cmd = await fc.expect_command(RedirectCommand)
        assert cmd.verbs == ()
        assert fc.jambonz_errors == []


async def test_unknown_ack_fails_at_next_call(autojump_clock: trio.abc.Clock) -> None:
    statuses: list[str] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        status = await s.recv_type("call:status")
        statuses.append(status["msgid"])
        await s.send({"type": "ack", "msgid": status["msgid"]})  # call:status wants no ack
        await s.send({"type": "ack", "msgid": "nosuchmsgid"})

    async with started_call(app_side) as fc:
        await fc.status("in-progress")
        await trio.sleep(1)
        with pytest.raises(ProtocolViolation) as info:
            await fc.status("in-progress")
        kinds = [v.kind for v in info.value.violations]
        assert kinds == ["unknown-ack", "unknown-ack"]
        assert "does not wait for acks to call:status" in str(info.value)
        assert "never sent that msgid" in str(info.value)
        # reported once only
        await fc.status("in-progress")
    assert statuses


async def test_late_and_duplicate_acks(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        hook = await s.recv_type("verb:hook")
        await trio.sleep(6)
        await s.ack(hook)  # after the 5 s deadline
        hook = await s.recv_type("verb:hook")
        await s.ack(hook)
        await s.ack(hook)  # duplicate

    async with started_call(app_side) as fc:
        with pytest.raises(AckTimeout, match="no ack for verb:hook"):
            await fc.hook("/a")
        await trio.sleep(2)
        with pytest.raises(ProtocolViolation, match="after the ack timeout"):
            await fc.hook("/b")
        with pytest.raises(ProtocolViolation, match="already acked"):
            await fc.hook("/b")
            await fc.wait_idle(1)


@pytest.mark.parametrize(
    ("command", "data", "match"),
    [
        ("dtmf", {"digit": "1", "duration": 250}, "dtmf data must be"),
        ("sip:request", {"method": "INFO"}, "sip:request data must be"),
        ("call:status", "completed", "call:status data must be"),
        ("listen:status", "pause", "listen:status data must be"),
        ("tag", {"data": {"a": 1}}, "invalid command 'tag'"),
        ("redirect", {"nonsense": 1}, "unexpected keys"),
    ],
)
async def test_command_shapes_0_9_8_cannot_read(
    autojump_clock: trio.abc.Clock, command: str, data: Any, match: str
) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.command(command, data)

    async with started_call(app_side) as fc:
        with pytest.raises(ProtocolViolation, match=match) as info:
            await fc.expect_command()
        assert info.value.violations[0].kind == "invalid-command"
        assert fc.commands == []
        assert fc.jambonz_errors == []  # jambonz only logs these


async def test_redirect_with_invalid_verbs(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.command("redirect", [{"verb": "gather", "actionHook": 5}])

    async with started_call(app_side) as fc:
        with pytest.raises(InvalidVerbs, match="gather"):
            await fc.expect_command("redirect")


async def test_snake_call_sid_is_a_violation_but_delivered(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.command("dtmf", {"dtmf": {"digit": "5"}}, call_sid="abc")

    async with started_call(app_side) as fc:
        with pytest.raises(ProtocolViolation, match="use 'callSid'"):
            await fc.wait_idle(1)
        cmd = await fc.expect_command(DtmfCommand)
        assert cmd.digit == "5"
        assert cmd.call_sid is None  # jambonz targets the session's own call


async def test_camel_callsid_is_fine(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.command("dtmf", {"dtmf": {"digit": "5"}}, callSid="leg-2")

    async with started_call(app_side) as fc:
        cmd = await fc.expect_command(DtmfCommand)
        assert cmd.call_sid == "leg-2"


async def test_command_before_session_new_ack(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        new = await s.recv_type("session:new")
        await s.command("redirect", [SAY])
        await s.ack(new, [SAY])
        await s.recv_type("call:status")
        await s.command("redirect", [HANGUP])

    async with app_running(app_side) as app, open_fake_call(app.connector) as fc:
        with pytest.raises(ProtocolViolation, match="before the session:new ack") as info:
            await fc.start()
        assert info.value.violations[0].kind == "early-command"
        cmd = await fc.expect_command(RedirectCommand)  # the early one was dropped
        assert cmd.verbs[0].VERB == "hangup"


async def test_binary_frame_is_flagged_but_parsed(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        frame = {"type": "command", "command": "redirect", "data": [HANGUP]}
        await s.send(json.dumps(frame).encode())

    async with started_call(app_side) as fc:
        with pytest.raises(ProtocolViolation, match="binary frame"):
            await fc.wait_idle(1)
        await fc.expect_command("redirect")


async def test_lenient_mode_records_without_raising(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.send("garbage")
        await s.recv_type("jambonz:error")
        await s.send({"type": "ack", "msgid": "nope"})
        await s.command("dtmf", {"digit": "1"})
        await s.command("redirect", [HANGUP])

    async with app_running(app_side) as app:
        async with open_fake_call(app.connector, strict=False) as fc:
            await fc.start()
            await fc.expect_command("redirect")
        kinds = [v.kind for v in fc.violations]
        assert kinds == ["invalid-message", "unknown-ack", "invalid-command"]


async def test_unreported_violation_raised_at_exit(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.send({"type": "ack", "msgid": "stale"})

    async with app_running(app_side) as app:
        with pytest.raises(ProtocolViolation, match="stale"):
            async with open_fake_call(app.connector) as fc:
                await fc.start()
                await trio.sleep(1)  # not a fake call: nothing raised yet


async def test_strict_violation_interrupts_a_wait(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.recv_type("verb:hook")
        await s.send("oops")  # instead of the ack

    async with started_call(app_side) as fc:
        start = trio.current_time()
        with pytest.raises(ProtocolViolation, match="oops"):
            await fc.hook("/gather", {"reason": "timeout"})
        assert trio.current_time() - start < 1


async def test_ack_timeout_after_a_cancelled_wait_is_reported(autojump_clock: trio.abc.Clock) -> None:
    """The test gives up on a hook before jambonz would: the ack timeout that follows has no
    waiter left to raise AckTimeout, so strict mode reports it at the next call."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.recv_type("verb:hook")  # never acked

    async with started_call(app_side) as fc:
        with trio.move_on_after(1):
            await fc.hook("/gather", {"reason": "timeout"})
        with pytest.raises(ProtocolViolation, match="no ack for verb:hook") as info:
            await fc.wait_idle(10)
        assert [v.kind for v in info.value.violations] == ["ack-timeout"]
        await fc.wait_idle(1)  # reported once only


async def test_ack_timeout_at_the_cancel_deadline_is_reported(autojump_clock: trio.abc.Clock) -> None:
    """The test's deadline and jambonz's fall on the same tick: whether the wait is cancelled
    before or after the ack timeout is recorded (trio picks the order), it is reported."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.recv_type("verb:hook")  # never acked

    async with started_call(app_side) as fc:
        with trio.move_on_after(5):  # ack_timeout
            await fc.hook("/gather", {"reason": "timeout"})
        with pytest.raises(ProtocolViolation, match="no ack for verb:hook"):
            await fc.wait_idle(1)


async def test_ack_timeout_after_a_cancelled_wait_is_raised_at_exit(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.recv_type("verb:hook")  # never acked

    async with app_running(app_side) as app:
        with pytest.raises(ProtocolViolation, match="no ack for verb:hook"):
            async with open_fake_call(app.connector) as fc:
                await fc.start()
                with trio.move_on_after(1):
                    await fc.hook("/gather")
                await trio.sleep(10)  # not a fake call: nothing raised yet


async def test_invalid_verbs_after_a_cancelled_wait_are_reported(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        hook = await s.recv_type("verb:hook")
        await trio.sleep(2)
        await s.ack(hook, [{"verb": "gather", "actionHook": 5}])

    async with started_call(app_side) as fc:
        with trio.move_on_after(1):
            await fc.hook("/gather")
        with pytest.raises(InvalidVerbs, match="gather"):
            await fc.wait_idle(5)


async def test_lenient_mode_records_a_cancelled_waits_ack_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.recv_type("verb:hook")  # never acked

    async with started_call(app_side, strict=False) as fc:
        with trio.move_on_after(1):
            await fc.hook("/gather")
        await fc.wait_idle(10)
        assert [v.kind for v in fc.violations] == ["ack-timeout"]
