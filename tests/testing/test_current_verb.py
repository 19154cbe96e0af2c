"""The fake is as strict as jambonz about what runs (issue 18 items 5, 6).

* ``mute:status`` only acts during ``dial`` / ``conference`` (FS v0.9.8
  ``lib/session/call-session.js:1719-1727``), ``whisper`` only during ``dial`` / ``listen``
  (``:1805-1815``); otherwise jambonz logs and ignores them, so a test must not pass on them.
* A gather reports digits only when its ``input`` includes ``"digits"`` (FS
  ``lib/tasks/gather.js:400-416``; the default is ``["digits"]``, ``:45-47``) and speech only
  when it includes ``"speech"`` (``:96``).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from jambonz_trio import Call, JambonzServer, VerbHook, serve_jambonz
from jambonz_trio.messages import VerbStatus
from jambonz_trio.testing import Caller, DialOutcome, Digits, ProtocolViolation, open_fake_call, run_call
from jambonz_trio.verbs import Conference, Config, Dial, Gather, Hangup, Listen, Say, Target

from ._apps import GATHER, TinyApp, app_running, started_call

DIAL: dict[str, Any] = {"verb": "dial", "target": [{"type": "phone", "number": "+15551230000"}]}
LISTEN: dict[str, Any] = {"verb": "listen", "url": "wss://example.com/audio"}
MUTE = ("mute:status", {"mute_status": "mute"})
WHISPER = ("whisper", {"whisper": [{"verb": "say", "text": "psst"}]})


@pytest.mark.parametrize(
    ("program", "command", "ignored"),
    [
        ([GATHER], MUTE, True),
        ([GATHER], WHISPER, True),
        ([{"verb": "say", "text": "hi"}, DIAL], MUTE, False),
        ([DIAL], WHISPER, False),
        ([{"verb": "conference", "name": "room"}], MUTE, False),
        ([{"verb": "conference", "name": "room"}], WHISPER, True),
        ([LISTEN], WHISPER, False),
        ([LISTEN], MUTE, True),
    ],
)
async def test_by_hand_a_command_no_verb_of_the_program_can_take_is_a_violation(
    autojump_clock: trio.abc.Clock,
    program: list[dict[str, Any]],
    command: tuple[str, dict[str, Any]],
    ignored: bool,
) -> None:
    """Driven by hand the fake does not know which verb runs: it flags a command when no verb
    of the program the app gave could be the one that takes it."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered(program)
        await s.command(*command)

    async with started_call(app_side, strict=False) as fc:
        cmd = await fc.expect_command(command[0])
        kinds = [v.kind for v in fc.violations]
        assert kinds == (["ignored-command"] if ignored else [])
        assert fc.commands[-1].command == cmd  # recorded all the same
        if ignored:
            assert "1719-1727" in fc.violations[0].message or "1805-1815" in fc.violations[0].message


async def test_by_hand_strict_mode_raises_it(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered([GATHER])
        await s.command(*MUTE)

    async with started_call(app_side) as fc:
        with pytest.raises(ProtocolViolation, match="only during dial or conference"):
            await fc.expect_command("mute:status")


async def test_a_redirect_that_brings_a_dial_makes_mute_valid(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered([GATHER])
        await s.command("redirect", [DIAL])
        await s.command(*MUTE)

    async with started_call(app_side) as fc:
        await fc.expect_command("redirect")
        await fc.expect_command("mute:status")
        assert fc.violations == []


class Supervised:
    """A verb-level app whose 'supervisor' mutes and whispers as soon as a verb starts."""

    def __init__(self, program: list[Any], on: str) -> None:
        self.program = program
        self.on = on

    async def __call__(self, call: Call) -> None:
        await call.ack(call.session, [Config(notify_events=True), *self.program])
        async for event in call:
            if isinstance(event, VerbStatus) and event.event == "starting" and event.verb_name == self.on:
                await call.mute()
                await call.whisper([Say(text="psst")])


async def _run(server: JambonzServer, caller: Caller, *, strict: bool = True) -> Any:
    async with open_fake_call(server.connect_memory, strict=strict) as fc:
        await run_call(fc, caller)
    return fc


async def test_run_call_knows_the_running_verb(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: both commands passed during a plain gather, though jambonz ignores them."""
    gather = Gather(action_hook="/g", input=["speech"])
    server: JambonzServer = await nursery.start(serve_jambonz, Supervised([gather, Hangup()], "gather"))
    with pytest.raises(ProtocolViolation) as info:
        await _run(server, Caller("hi"))
    assert [v.kind for v in info.value.violations] == ["ignored-command"]
    assert "mute:status while gather runs" in info.value.violations[0].message
    fc = await _run(server, Caller("hi"), strict=False)
    assert [v.message.split(":")[0] for v in fc.violations] == ["mute", "whisper while gather runs"]


async def test_run_call_accepts_them_during_a_dial(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    dial = Dial(target=[Target(type="phone", number="+15551230000")], action_hook="/dialed")
    server: JambonzServer = await nursery.start(serve_jambonz, Supervised([dial, Hangup()], "dial"))
    fc = await _run(server, Caller(dials=[DialOutcome()]))
    assert [c.name for c in fc.commands] == ["mute:status", "whisper"]
    assert fc.violations == []


# -- item 6: input the gather does not listen for ----------------------------------------


async def test_digits_for_a_speech_only_gather_are_refused_before_sending(
    autojump_clock: trio.abc.Clock,
) -> None:
    hooks: list[dict[str, Any]] = []
    speech_only = {**GATHER, "input": ["speech"], "id": "g1"}

    async def app_side(app: TinyApp) -> None:
        s = await app.answered([speech_only])
        hook = await s.recv_type("verb:hook")  # the only one: the refused ones never went out
        hooks.append(hook["data"])
        await s.ack(hook)

    async with app_running(app_side) as app, open_fake_call(app.connector) as fc:
        gather = (await fc.start()).first(Gather)
        with pytest.raises(
            ProtocolViolation, match=r"digits result for a gather whose input is \['speech'\]"
        ):
            await fc.gather_digits(gather, "42")
        with pytest.raises(ProtocolViolation, match="digits result for a gather"):
            await fc.gather_digits("/gather", "42")  # by hook: found in the app's program
        await fc.gather_speech(gather, "fine")
        assert [h["reason"] for h in hooks] == ["speechDetected"]  # nothing was sent before


async def test_speech_for_a_default_gather_is_unheard(autojump_clock: trio.abc.Clock) -> None:
    """A gather without ``input`` listens for digits only."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered([{"verb": "gather", "actionHook": "/gather"}])
        for _ in range(2):
            await s.ack(await s.recv_type("verb:hook"))

    async with started_call(app_side, strict=False) as fc:
        await fc.gather_timeout("/gather")
        assert fc.violations == []
        await fc.gather_speech("/gather", "hello")  # lenient: recorded, and sent as asked
        assert [v.kind for v in fc.violations] == ["unheard-input"]


async def test_run_call_caller_keys_on_a_speech_only_gather(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: the runner sent a ``dtmfDetected`` result jambonz would never send. Strict: a
    violation; lenient: jambonz ignores the keys and the gather times out."""
    results: list[str | None] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Gather(action_hook="/g", input=["speech"])])
        async for event in call:
            if isinstance(event, VerbHook) and event.hook == "/g":
                results.append(event.gather.reason)
                await call.ack(event, [Hangup()])

    server: JambonzServer = await nursery.start(serve_jambonz, app)
    with pytest.raises(ProtocolViolation, match="digits result for a gather"):
        await _run(server, Caller(Digits("42")))
    fc = await _run(server, Caller(Digits("42")), strict=False)
    assert results == ["timeout"] and [v.kind for v in fc.violations] == ["unheard-input"]


@pytest.mark.parametrize(
    ("verb", "command"),
    [(Listen(url="wss://example.com/audio"), "whisper"), (Conference(name="room"), "mute:status")],
)
async def test_run_call_accepts_them_while_a_listen_or_conference_runs(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, verb: Any, command: str
) -> None:
    """Before: ``run_call`` ran ``listen`` and ``conference`` in no time, so a whisper or mute
    sent when they start (valid on jambonz, where they run until something ends them) was an
    ``ignored-command`` violation."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Config(notify_events=True), verb, Hangup()])
        async for event in call:
            if isinstance(event, VerbStatus) and event.event == "starting" and event.verb_name == verb.VERB:
                await (call.mute() if command == "mute:status" else call.whisper([Say(text="psst")]))

    server: JambonzServer = await nursery.start(serve_jambonz, app)
    fc = await _run(server, Caller())
    assert [c.name for c in fc.commands] == [command]
    assert fc.violations == []
