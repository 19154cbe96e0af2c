"""``run_call``'s caller and jambonz's side of the program (issue 18)."""

from __future__ import annotations

import trio
import trio.testing

from jambonz_trio import Call, JambonzServer, VerbHook, serve_jambonz
from jambonz_trio.messages import VerbStatus
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


# -- item 2: a drop while a hook waits for its ack ---------------------------------------


async def test_a_drop_while_a_hook_is_in_flight_reconnects_and_carries_on(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` (and so ``simulate``) raised ``AckAbandoned``. jambonz abandons
    the request, reports the failed gather (``jambonz:error`` and a ``call:status`` with
    ``error``, FS v0.9.8 ``lib/tasks/gather.js:1426-1447``), reconnects and carries on."""
    hook_arrived = trio.Event()
    release = trio.Event()

    async def slow_app(call: Call) -> None:
        await call.ack(call.session, [Gather(action_hook="/g", input=["speech"], id="g1")])
        async for event in call:
            if isinstance(event, VerbHook) and event.hook == "/g":
                hook_arrived.set()
                await release.wait()  # jambonz's socket dies meanwhile
                await call.ack(event, [Say(text="Thanks"), Hangup()])  # late: a redirect

    server: JambonzServer = await nursery.start(serve_jambonz, slow_app)
    story: list[tuple[str, str]] = []
    async with open_fake_call(server.connect_memory) as fc, trio.open_nursery() as inner:

        async def play() -> None:
            await run_call(fc, Caller("hello"), on_step=lambda *step: story.append(step))

        inner.start_soon(play)
        await hook_arrived.wait()
        await fc.drop()
        release.set()
    assert fc.connection_count == 2 and fc.is_over
    assert ("jambonz", "the socket dropped before the ack: verb:hook abandoned; carrying on") in story
    assert fc.jambonz_errors == []  # the app sent nothing jambonz could not parse
    sent = [m for m in fc.sent if m.type in ("jambonz:error", "call:status")]
    error = next(m for m in sent if m.type == "jambonz:error")
    assert dict(error.data) == {"msg": "invalid actionHook response", "verb": "gather", "id": "g1"}
    assert any(m.data.get("error") == "invalid actionHook response" for m in sent)
    assert ("heard", "Thanks") in story  # the late answer, sent as a redirect after the reconnect


# -- item 8: what the caller heard -------------------------------------------------------


async def by_acks(call: Call) -> None:
    await call.ack(call.session, [Say(text="Hello"), Gather(action_hook="/g", say=Say(text="Name?"))])
    async for event in call:
        if isinstance(event, VerbHook):
            await call.ack(event, [Say(text="Bye"), Hangup()])


async def by_redirects(call: Call) -> None:
    await call.ack(call.session, [Config(notify_events=True)])
    await call.redirect([Say(text="Hello"), Gather(action_hook="/g", say=Say(text="Name?"))], queue=True)
    async for event in call:
        if isinstance(event, VerbHook):
            await call.ack(event)
            await call.redirect([Say(text="Bye"), Hangup()])


async def test_what_the_caller_heard_does_not_depend_on_ack_or_redirect(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: the narration read ``app: say "Hello"`` for an ack but ``command: redirect
    (append): ...; say "Hello"`` for a redirect, and nothing else told what was played."""
    heard = []
    for app in (by_acks, by_redirects):
        server: JambonzServer = await nursery.start(serve_jambonz, app)
        steps: list[tuple[str, str]] = []
        async with open_fake_call(server.connect_memory) as fc:
            run = await run_call(fc, Caller(Digits("1")), on_step=lambda *step, s=steps: s.append(step))
        assert run.steps == steps
        assert [text for who, text in steps if who == "heard"] == run.heard
        heard.append(run.heard)
    assert heard[0] == heard[1] == ["Hello", "Name?", "Bye"]


async def test_on_gather_may_return_a_plain_str_like_positional_answers(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: a ``str`` from ``on_gather`` (sync or ``async``) raised ``TypeError`` while
    ``Caller("yes")`` took it as speech."""

    async def echo_twice(call: Call) -> None:
        await call.ack(call.session, [Gather(action_hook="/g", input=["speech"], id="g1")])
        async for event in call:
            if isinstance(event, VerbHook) and event.hook == "/g":
                said = event.data["speech"]["alternatives"][0]["transcript"]
                more = [Gather(action_hook="/g2", input=["speech"], id="g2")]
                await call.ack(event, [Say(text=f"You said {said}"), *more])
            elif isinstance(event, VerbHook) and event.hook == "/g2":
                said = event.data["speech"]["alternatives"][0]["transcript"]
                await call.ack(event, [Say(text=f"Then {said}"), Hangup()])

    def plain(gather: Gather) -> str:
        return f"plain {gather.id}"

    async def awaited(gather: Gather) -> str:
        await trio.sleep(1)
        return f"awaited {gather.id}"

    for on_gather, word in ((plain, "plain"), (awaited, "awaited")):
        server: JambonzServer = await nursery.start(serve_jambonz, echo_twice)
        async with open_fake_call(server.connect_memory) as fc:
            with trio.fail_after(30):
                run = await run_call(fc, Caller(on_gather=on_gather))
        assert run.heard == [f"You said {word} g1", f"Then {word} g2"]
