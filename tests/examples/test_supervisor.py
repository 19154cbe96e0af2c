"""examples/supervisor.py: the support line, and operator commands reaching live calls."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from examples import supervisor
from jambonz_trio import Call, JambonzServer, Route
from jambonz_trio.commands import CallStatusCommand, MuteStatusCommand, RedirectCommand, WhisperCommand
from jambonz_trio.testing import (
    CallData,
    Caller,
    DialOutcome,
    FakeCall,
    HandshakeRejected,
    open_fake_call,
    run_call,
    tcp_connector,
)
from jambonz_trio.verbs import Dial, Gather, Say, Target
from tests.helpers import start

from .helpers import capture_serve, heard


class Console:
    """The operator's terminal, in memory: type a line, read the reply."""

    def __init__(self) -> None:
        self.send_line, self.lines = trio.open_memory_channel[str](0)
        self._send_reply, self._replies = trio.open_memory_channel[str](100)

    def reply(self, text: str) -> None:
        self._send_reply.send_nowait(text)

    async def type(self, line: str) -> str:
        with trio.fail_after(5):
            await self.send_line.send(line)
            return await self._replies.receive()


@asynccontextmanager
async def running(
    username: str | None = None, password: str | None = None
) -> AsyncIterator[tuple[JambonzServer, Console]]:
    console = Console()
    async with trio.open_nursery() as nursery:
        server: JambonzServer = await nursery.start(
            lambda task_status: supervisor.serve(
                port=0,
                username=username,
                password=password,
                commands=console.lines,
                reply=console.reply,
                task_status=task_status,
            )
        )
        yield server, console
        nursery.cancel_scope.cancel()


async def until_dialling(fc: FakeCall, topic: str) -> Dial:
    """Play the call up to the dial, as jambonz would; returns the dial verb."""
    ack = await fc.start()
    say = ack.verbs[-1]
    assert say == Say(text="Hello from jambonz. This call may be monitored.", id=say.id)
    await fc.verb_status("finished", id=say.id, name="say")
    gather = (await fc.expect_command(RedirectCommand)).verbs[0]
    assert isinstance(gather, Gather) and gather.say == Say(text="In a few words, what is your call about?")
    ack = await fc.gather_speech(str(gather.action_hook), topic, verb_id=gather.id)
    say = ack.verbs[0]
    assert say == Say(text="Connecting you to an agent.", id=say.id)
    await fc.verb_status("finished", id=say.id, name="say")
    dial = (await fc.expect_command(RedirectCommand)).verbs[0]
    assert isinstance(dial, Dial)
    return dial


async def test_operator_mutes_whispers_and_hangs_up_a_live_call(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with running() as (server, console):
        assert await console.type("list") == "no live calls"
        async with open_fake_call(
            server.connect_memory, path=supervisor.PATH, call=CallData(from_="+15551112222")
        ) as fc:
            dial = await until_dialling(fc, "my invoice")
            assert dial.target == [Target(type="phone", number=supervisor.DEFAULT_AGENT)]
            sid = fc.call.call_sid
            call = server.calls[sid]

            listing = await console.type("list")
            assert listing.startswith(f"{sid}  +15551112222 -> ") and listing.endswith("topic: my invoice")

            assert await console.type(f"mute {sid}") == f"mute {sid}: ok"
            assert (await fc.expect_command(MuteStatusCommand)).mute_status == "mute"
            assert await console.type(f"unmute {sid}") == f"unmute {sid}: ok"
            assert (await fc.expect_command(MuteStatusCommand)).mute_status == "unmute"
            assert await console.type(f"whisper {sid} the caller is a VIP") == f"whisper {sid}: ok"
            assert (await fc.expect_command(WhisperCommand)).verbs == (Say(text="the caller is a VIP"),)

            assert await console.type(f"hangup {sid}") == f"hangup {sid}: ok"
            assert (await fc.expect_command(CallStatusCommand)).call_status == "completed"
            await fc.hangup(by="jambonz")  # jambonz ends the call as asked
            await call.wait_closed()
            assert sid not in server.calls
            await fc.wait_idle(1)
            # the handler, interrupted in its dial, ended quietly
            assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
            assert await console.type("list") == "no live calls"
            assert await console.type(f"mute {sid}") == f"no live call {sid}"


async def test_bad_commands_get_help_and_change_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        running() as (server, console),
        open_fake_call(server.connect_memory, path=supervisor.PATH) as fc,
    ):
        await fc.start()
        sid = fc.call.call_sid
        assert await console.type("frobnicate") == supervisor.HELP
        assert await console.type("mute") == supervisor.HELP
        assert await console.type("help") == supervisor.HELP
        assert await console.type(f"whisper {sid}") == "usage: whisper <call_sid> <text>"
        assert await console.type("hangup nope") == "no live call nope"
        await fc.expect_no_command(within=1)


async def test_a_command_before_the_session_new_ack_is_reported(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """jambonz would drop a command sent before the session:new ack: the console says so."""
    hold = trio.Event()

    async def slow(call: Call) -> None:
        await hold.wait()  # the app is slow to answer
        await supervisor.support_line(call, agent=supervisor.agent_target(supervisor.DEFAULT_AGENT))

    server = await start(nursery, Route(path=supervisor.PATH, handler=slow))
    async with (
        open_fake_call(server.connect_memory, path=supervisor.PATH) as fc,
        trio.open_nursery() as inner,
    ):
        inner.start_soon(fc.start)
        await trio.testing.wait_all_tasks_blocked()
        sid = fc.call.call_sid
        answer = await supervisor.execute(server, f"mute {sid}")
        assert answer.startswith(f"mute {sid}: failed (LocalProtocolError")
        hold.set()
    assert [c.name for c in fc.commands] == []


async def test_caller_reaches_the_agent_and_hears_goodbye_when_nobody_answers() -> None:
    steps: list[tuple[str, str]] = []
    async with running() as (server, _), open_fake_call(server.connect_memory, path=supervisor.PATH) as fc:
        await run_call(
            fc,
            Caller("billing", dials=[DialOutcome(dial_call_status="no-answer", dial_sip_status=480)]),
            on_step=lambda who, text: steps.append((who, text)),
        )
    assert heard(steps) == [
        "Hello from jambonz. This call may be monitored.",
        "In a few words, what is your call about?",
        "Connecting you to an agent.",
        "Sorry, no agent is available. Please call again later.",
    ]
    assert ("jambonz", "runs hangup: the call ends") in steps


async def test_console_over_tcp_with_basic_auth() -> None:
    async with running(username="ops", password="s3cret") as (server, console):
        url = f"ws://127.0.0.1:{server.port}{supervisor.PATH}"
        with trio.fail_after(10):
            async with open_fake_call(tcp_connector(url), username="ops", password="s3cret") as fc:
                await fc.start()
                sid = fc.call.call_sid
                assert (await console.type("list")).startswith(sid)
                assert await console.type(f"hangup {sid}") == f"hangup {sid}: ok"
                assert (await fc.expect_command(CallStatusCommand)).call_status == "completed"
            with pytest.raises(HandshakeRejected, match="401"):
                async with open_fake_call(tcp_connector(url)):
                    pass


async def test_stdin_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("list\nhangup abc\n"))
    got = [line async for line in supervisor.StdinLines()]
    assert got == ["list\n", "hangup abc\n"]


def test_main_parses_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAMBONZ_WS_USERNAME", "env-user")
    monkeypatch.setenv("JAMBONZ_WS_PASSWORD", "env-pass")
    seen = capture_serve(monkeypatch, supervisor)
    supervisor.main(["--host", "0.0.0.0", "--port", "9000", "--agent", "sip:agent@example.com"])
    assert seen["host"] == "0.0.0.0" and seen["port"] == 9000
    assert seen["agent"] == "sip:agent@example.com"
    assert supervisor.agent_target(str(seen["agent"])) == Target(type="sip", sip_uri="sip:agent@example.com")
    assert (seen["username"], seen["password"]) == ("env-user", "env-pass")
    assert isinstance(seen["commands"], supervisor.StdinLines)
