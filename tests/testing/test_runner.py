"""``run_call``'s caller and jambonz's side of the program (issue 18)."""

from __future__ import annotations

import trio
import trio.testing

from jambonz_trio import Call, JambonzServer, VerbStatus, serve_jambonz
from jambonz_trio.testing import Caller, Digits, HangUp, Speech, open_fake_call, run_call
from jambonz_trio.verbs import Config, Gather, Hangup, Say


async def replace_during_gather(call: Call) -> None:
    """Starts a gather, and replaces the program as soon as jambonz reports it started."""
    await call.ack(call.session, [Config(notify_events=True), Gather(id="g1", action_hook="/g")])
    async for event in call:
        if isinstance(event, VerbStatus) and event.event == "starting" and event.verb_id == "g1":
            await call.redirect([Say(text="Replaced"), Hangup()])


async def test_an_async_caller_waits_while_the_call_goes_on_and_a_redirect_cancels_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``on_gather`` was synchronous (a scripted caller could not wait) and commands
    were only followed between verbs."""
    server: JambonzServer = await nursery.start(serve_jambonz, replace_during_gather)
    asked: list[str] = []
    cancelled: list[bool] = []

    async def on_gather(gather: Gather) -> Speech | Digits | HangUp | None:
        asked.append(gather.id or "")
        try:
            await trio.sleep_forever()  # the person never finishes the sentence
        finally:
            cancelled.append(True)

    story: list[tuple[str, str]] = []
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            await run_call(fc, Caller(on_gather=on_gather), on_step=lambda *step: story.append(step))
    assert asked == ["g1"] and cancelled == [True]
    assert ("command", 'redirect (replace): say "Replaced"; hangup') in story
    sent = [(m.type, dict(m.data)) for m in fc.sent]
    assert not any(t == "verb:hook" for t, _ in sent)  # a killed gather calls no actionHook
    statuses = [d["event"] for t, d in sent if t == "verb:status" and d.get("id") == "g1"]
    # jambonz still reports the killed gather finished (FS v0.9.8 call-session.js:1378-1380)
    assert statuses == ["starting", "finished"]


async def test_hang_up_is_an_answer(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    async def ask_twice(call: Call) -> None:
        await call.ack(call.session, [Gather(action_hook="/g", input=["speech"])])
        async for _event in call:
            pass

    server: JambonzServer = await nursery.start(serve_jambonz, ask_twice)
    async with open_fake_call(server.connect_memory) as fc:
        await run_call(fc, Caller(HangUp()))
    assert fc.is_over and not fc.acks[1:]
    final = [m for m in fc.sent if m.type == "call:status"][-1]
    assert final.data["call_status"] == "completed" and final.data["call_termination_by"] == "caller"
