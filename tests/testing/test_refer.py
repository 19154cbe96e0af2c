"""``run_call``: a SIP REFER on a leg of a connected dial (``DialOutcome(refer=Refer(...))``),
as feature-server 0.9.8 handles it (``lib/tasks/dial.js:373-453``,
``lib/session/call-session.js:2858-2916``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

import pytest
import trio
import trio.testing

from jambonz_trio import Call, JambonzServer, VerbHook, serve_jambonz
from jambonz_trio.testing import Caller, CallRun, DialOutcome, FakeCall, Refer, open_fake_call, run_call
from jambonz_trio.verbs import Config, Dial, Hangup, Say, Target, Verb

AGENT = [Target(type="phone", number="+15550100")]
TRANSFER_TO = "sip:+15557654321@pbx.example.com"


def transfer_app(
    hooks: list[VerbHook], program: Sequence[Verb], answers: Mapping[str, Sequence[Verb]]
) -> Callable[[Call], Awaitable[None]]:
    """Starts ``program``; records every verb:hook and answers it from ``answers`` (by hook);
    the dial's actionHook ``/dialed`` with a goodbye."""

    async def app(call: Call) -> None:
        await call.ack(call.session, list(program))
        async for event in call:
            if isinstance(event, VerbHook):
                hooks.append(event)
                if event.hook == "/dialed":
                    await call.ack(event, [Say(text="Goodbye"), Hangup()])
                else:
                    await call.ack(event, list(answers.get(event.hook or "", [])))

    return app


async def transfer(
    nursery: trio.Nursery,
    program: Sequence[Verb],
    outcome: DialOutcome,
    answers: Mapping[str, Sequence[Verb]],
) -> tuple[FakeCall, CallRun, list[VerbHook]]:
    hooks: list[VerbHook] = []
    server: JambonzServer = await nursery.start(serve_jambonz, transfer_app(hooks, program, answers))
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(dials=[outcome]))
    return fc, run, hooks


def hook(hooks: list[VerbHook], url: str) -> VerbHook:
    (found,) = [h for h in hooks if h.hook == url]
    return found


async def test_the_callees_refer_asks_the_refer_hook_and_its_answer_is_the_callers_program(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` never sent a dial's referHook. The callee's REFER: the hook gets
    the callee's call info and ``refer_details`` (FS v0.9.8 ``lib/tasks/dial.js:394-406``);
    its verbs replace the caller's program (``:418``): the dial is killed as replaced, so its
    actionHook goes out and its answer is ignored (``:249``)."""
    dial = Dial(target=AGENT, action_hook="/dialed", refer_hook="/refer")
    outcome = DialOutcome(refer=Refer(to=TRANSFER_TO))
    answers = {"/refer": [Say(text="Transferring you"), Hangup()]}
    fc, run, hooks = await transfer(nursery, [dial], outcome, answers)
    refer, dialed = hook(hooks, "/refer"), hook(hooks, "/dialed")
    child = dialed.data["dial_call_sid"]
    assert [h.hook for h in hooks] == ["/refer", "/dialed"]
    assert refer.data["call_sid"] == child and refer.data["parent_call_sid"] == fc.call.call_sid
    assert dict(refer.data["refer_details"]) == {
        "sip_refer_to": f"<{TRANSFER_TO}>",
        "refer_to_user": "+15557654321",
        "sip_referred_by": f"<sip:{refer.data['to']}@127.0.0.1>",
        "referred_by_user": refer.data["to"],
        "referring_call_sid": child,
        "referred_call_sid": fc.call.call_sid,
    }
    assert dialed.data["dial_call_status"] == "completed"
    assert run.heard == ["Transferring you"]  # not the ignored "Goodbye"
    assert ("callee", f"transfers the call to {TRANSFER_TO} (a SIP REFER on the callee's leg)") in run.steps
    assert fc.violations == []


async def test_the_callers_refer_moves_the_callee_away_and_ends_the_dial(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The caller's REFER: the hook gets the caller's call info; its verbs are the callee's
    program, in a session of its own on a new socket (``session:adulting``, FS v0.9.8
    ``lib/utils/place-outdial.js:439-501``), not the caller's; the dial ends
    (``KillReason.ReferComplete``, ``lib/tasks/dial.js:431-435``) and its actionHook's answer
    is the caller's program."""
    dial = Dial(target=AGENT, action_hook="/dialed", refer_hook="/refer")
    refer = Refer(
        to="tel:+15557654321", by="caller", referred_by="sip:alice@example.com", user_agent="Yealink"
    )
    answers = {"/refer": [Say(text="For the callee")]}
    fc, run, hooks = await transfer(nursery, [dial], DialOutcome(refer=refer), answers)
    asked, dialed = hook(hooks, "/refer"), hook(hooks, "/dialed")
    assert asked.data["call_sid"] == fc.call.call_sid and "parent_call_sid" not in asked.data
    assert dict(asked.data["refer_details"]) == {
        "sip_refer_to": "<tel:+15557654321>",
        "refer_to_user": "+15557654321",
        "sip_referred_by": "<sip:alice@example.com>",
        "sip_user_agent": "Yealink",
        "referred_by_user": "alice",
        "referring_call_sid": fc.call.call_sid,
        "referred_call_sid": dialed.data["dial_call_sid"],
    }
    assert run.heard == ["Goodbye"]  # the caller never hears the callee's program
    adulting = [text for who, text in run.steps if who == "jambonz" and "session:adulting" in text]
    assert len(adulting) == 1 and 'say "For the callee"' in adulting[0]
    assert fc.violations == []


async def test_the_callers_refer_on_a_dial_without_one_asks_the_sessions_refer_hook(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A ``config`` verb's ``referHook`` is the session's (FS v0.9.8 ``lib/tasks/config.js:342-344``):
    the caller's REFER on a dial without one goes there (``lib/session/call-session.js:2858-2867``),
    ``refer_details`` with ``referred_call_sid`` null (``:2884-2893``); its verbs replace the
    caller's program (``:2896-2900``), killing the dial as replaced."""
    program = [Config(refer_hook="/session-refer"), Dial(target=AGENT, action_hook="/dialed")]
    outcome = DialOutcome(refer=Refer(to=TRANSFER_TO, by="caller"))
    answers = {"/session-refer": [Say(text="Transferring you"), Hangup()]}
    fc, run, hooks = await transfer(nursery, program, outcome, answers)
    details = dict(hook(hooks, "/session-refer").data["refer_details"])
    assert details["referring_call_sid"] == fc.call.call_sid
    assert "referred_call_sid" in details and details["referred_call_sid"] is None
    assert details["sip_referred_by"] == f"<sip:{fc.call.from_}@127.0.0.1>"
    assert "sip_user_agent" not in details
    assert [h.hook for h in hooks] == ["/session-refer", "/dialed"]
    assert run.heard == ["Transferring you"]
    assert fc.violations == []


@pytest.mark.parametrize("by", ["callee", "caller"])
async def test_a_refer_without_a_refer_hook_is_refused_and_the_dial_goes_on(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, by: str
) -> None:
    """No referHook for the REFER: jambonz answers 501 and nothing happens (FS v0.9.8
    ``lib/tasks/dial.js:449-451``; ``lib/session/call-session.js:2913-2914``). The callee's
    REFER never reaches the session's referHook (``dial.js:691``)."""
    program = [Config(refer_hook="/session-refer"), Dial(target=AGENT, action_hook="/dialed")]
    if by == "caller":
        program = program[1:]
    refer = Refer(to=TRANSFER_TO, by="caller" if by == "caller" else "callee")
    fc, run, hooks = await transfer(nursery, program, DialOutcome(refer=refer), {})
    assert [h.hook for h in hooks] == ["/dialed"]
    assert run.heard == ["Goodbye"]
    assert any("501" in text for who, text in run.steps if who == "jambonz")
    assert fc.violations == []


async def test_a_refer_hook_answering_no_verbs_changes_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """``[]`` from the referHook: jambonz accepts the REFER (202) and sets no new program
    (FS v0.9.8 ``lib/tasks/dial.js:441-443``): the dial runs on and ends as scripted."""
    dial = Dial(target=AGENT, action_hook="/dialed", refer_hook="/refer")
    fc, run, hooks = await transfer(nursery, [dial], DialOutcome(refer=Refer(to=TRANSFER_TO)), {})
    assert [h.hook for h in hooks] == ["/refer", "/dialed"]
    assert run.heard == ["Goodbye"]
    assert fc.violations == []


async def test_an_unanswered_dial_has_no_refer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    dial = Dial(target=AGENT, action_hook="/dialed", refer_hook="/refer")
    outcome = DialOutcome(dial_call_status="no-answer", dial_sip_status=487, refer=Refer(to=TRANSFER_TO))
    fc, run, hooks = await transfer(nursery, [dial], outcome, {})
    assert [h.hook for h in hooks] == ["/dialed"]
    assert (
        "jambonz",
        "the dial is not answered: no keys are captured, nobody holds or transfers",
    ) in run.steps
    assert fc.violations == []


def test_a_refer_to_something_jambonz_cannot_parse_is_refused() -> None:
    with pytest.raises(ValueError, match="sip:, sips: or tel:"):
        Refer(to="+15557654321")
    with pytest.raises(ValueError, match="referred_by"):
        Refer(to=TRANSFER_TO, referred_by="alice")
