"""``run_call``'s caller and jambonz's side of the program (issue 18)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio
import trio.testing

from jambonz_trio import Call, JambonzServer, VerbHook, serve_jambonz
from jambonz_trio.commands import LlmToolOutputCommand
from jambonz_trio.messages import DialConfirm, LlmToolCall, SessionRedirect, VerbStatus
from jambonz_trio.testing import (
    Caller,
    CallRun,
    ConferenceOutcome,
    DialOutcome,
    Digits,
    FakeCall,
    HangUp,
    Speech,
    ToolCallScript,
    describe_verb,
    open_fake_call,
    run_call,
)
from jambonz_trio.verbs import (
    Conference,
    Config,
    Dial,
    Gather,
    Hangup,
    HookSpec,
    Llm,
    Play,
    RawVerb,
    Redirect,
    Say,
    SipRequest,
    Tag,
    Target,
    Transcribe,
    Verb,
)

from ._apps import GATHER, SAY, TinyApp, app_running


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


def test_the_narration_of_a_verb_names_only_the_options_it_has() -> None:
    """Before: a dial without an actionHook read ``dial 1 target(s) -> None`` and a gather
    without a timeout ``(timeout Nones, ...)`` in run_call's narration."""
    phone = Target(type="phone", number="+15551234567")
    assert describe_verb(Dial(target=[phone])) == "dial 1 target(s)"
    assert describe_verb(Dial(target=[phone], action_hook="/dialed")) == "dial 1 target(s) -> /dialed"
    assert describe_verb(Gather(input=["speech"])) == "gather speech"
    assert (
        describe_verb(Gather(action_hook="/g", timeout=5, say=Say(text="PIN?")))
        == 'gather digits -> /g (timeout 5s, prompt: say "PIN?")'
    )
    assert describe_verb(Gather(say=Say(text="PIN?"))) == 'gather digits (prompt: say "PIN?")'


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
        _, run = await played(nursery, echo_twice, Caller(on_gather=on_gather))
        assert run.heard == [f"You said {word} g1", f"Then {word} g2"]


# -- redirect commands to hooks (call_hook / child_call_hook) ----------------------------


async def _stuck(gather: Gather) -> Speech | Digits | HangUp | None:
    """A caller who never finishes the sentence (only a kill ends the gather)."""
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def played(
    nursery: trio.Nursery, app: Callable[[Call], Awaitable[None]], caller: Caller | None = None
) -> tuple[FakeCall, CallRun]:
    """Serve ``app`` and play one call to it with ``run_call`` (bounded: 30 s): the fake call,
    over, and what ``run_call`` returned."""
    server: JambonzServer = await nursery.start(serve_jambonz, app)
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, caller if caller is not None else Caller())
    return fc, run


def redirects_to_hooks(
    program: list[Verb],
    when: Callable[[VerbStatus], bool],
    redirects: list[SessionRedirect],
    answer: list[Verb],
    **hooks: str,
) -> Callable[[Call], Awaitable[None]]:
    """An app that answers ``session:new`` with ``Config(notify_events=True)`` and
    ``program``, calls ``call.redirect_to_hook(**hooks)`` at each ``verb:status`` ``when``
    accepts, and answers every ``session:redirect`` (kept in ``redirects``) with ``answer``."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Config(notify_events=True), *program])
        async for event in call:
            if isinstance(event, VerbStatus) and when(event):
                await call.redirect_to_hook(**hooks)
            elif isinstance(event, SessionRedirect):
                redirects.append(event)
                await call.ack(event, list(answer))

    return app


def _starting(verb_id: str) -> Callable[[VerbStatus], bool]:
    return lambda status: status.event == "starting" and status.verb_id == verb_id


async def test_a_redirect_to_a_call_hook_plays_the_answer_as_the_new_program(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` left ``redirect_to_hook(call_hook)`` unanswered: no
    ``session:redirect`` went out and the gather ran on. jambonz sends ``session:redirect`` to
    the new hook with the call info and runs the answer as the program, killing the running
    verb (FS v0.9.8 ``lib/session/call-session.js:1595-1598``, ``:1639-1642``)."""
    redirects: list[SessionRedirect] = []

    move_on_start = redirects_to_hooks(
        [Gather(id="g1", action_hook="/g")],
        _starting("g1"),
        redirects,
        [Say(text="Moved"), Hangup()],
        call_hook="/next",
    )
    fc, run = await played(nursery, move_on_start, Caller(on_gather=_stuck))
    assert [r.hook for r in redirects] == ["/next"]
    assert redirects[0].data["call_sid"] == fc.call.call_sid
    assert run.heard == ["Moved"]
    sent = [(m.type, dict(m.data)) for m in fc.sent]
    assert not any(t == "verb:hook" for t, _ in sent)  # the killed gather calls no actionHook
    assert [d["event"] for t, d in sent if t == "verb:status" and d.get("id") == "g1"] == [
        "starting",
        "finished",
    ]


async def test_a_falsy_call_hook_answer_kills_the_running_verb_and_the_program_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A falsy ``session:redirect`` answer (here none) kills the running verb and the rest of
    the program runs (FS v0.9.8 ``lib/session/call-session.js:1649-1652``)."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered([{"verb": "config", "notifyEvents": True}, GATHER | {"id": "g1"}, SAY])
        while (msg := await s.recv())["type"] != "verb:status" or msg["data"].get("id") != "g1":
            pass
        await s.command("redirect", {"call_hook": "/next"})
        while (msg := await s.recv())["type"] != "session:redirect":
            pass
        await s.send({"type": "ack", "msgid": msg["msgid"]})
        await s.closed_code()

    async with app_running(app_side) as app, open_fake_call(app.connector, strict=False) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(on_gather=_stuck))
    assert run.heard == [SAY["text"]]
    assert [v.kind for v in fc.violations] == ["refused-ack-data"]


DIAL = Dial(id="d1", target=[Target(type="phone", number="+15551230000")], action_hook="/dialed")


async def test_a_child_call_hook_redirect_adults_the_child_and_kills_the_dial(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``child_call_hook`` was ignored. While a dial is connected jambonz sends
    ``session:redirect`` with the *child's* call info (FS v0.9.8
    ``lib/session/call-session.js:1600-1606``); the answer becomes the child's program on a
    session of its own (``:1623-1638``); with no ``call_hook`` the dial is killed (``:1649-1652``,
    reason hangup), so its actionHook goes out and its answer is the new program
    (``lib/tasks/dial.js:249``, ``:270``)."""
    redirects: list[SessionRedirect] = []

    async def transfer(call: Call) -> None:
        await call.ack(call.session, [Config(notify_events=True), DIAL])
        async for event in call:
            if isinstance(event, VerbStatus) and event.event == "starting" and event.verb_id == "d1":
                await call.redirect_to_hook(child_call_hook="/child")
            elif isinstance(event, SessionRedirect):
                redirects.append(event)
                await call.ack(event, [Say(text="Hello callee")])
            elif isinstance(event, VerbHook) and event.hook == "/dialed":
                await call.ack(event, [Say(text="Back to you"), Hangup()])

    server: JambonzServer = await nursery.start(serve_jambonz, transfer)
    story: list[tuple[str, str]] = []
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(), on_step=lambda *step: story.append(step))
    assert [r.hook for r in redirects] == ["/child"]
    child = redirects[0].data
    assert child["direction"] == "outbound" and child["parent_call_sid"] == fc.call.call_sid
    hook = next(m for m in fc.sent if m.type == "verb:hook")
    assert hook.data["dial_call_sid"] == child["call_sid"]
    assert run.heard == ["Back to you"]  # the callee's "Hello callee" plays on the child leg
    assert any(who == "jambonz" and "session:adulting" in text for who, text in story)


async def test_a_child_call_hook_without_a_connected_dial_still_kills_the_running_verb(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """No connected dial: no ``session:redirect`` for the child (FS v0.9.8
    ``lib/session/call-session.js:1602-1606``), but with no ``call_hook`` the running verb is
    killed all the same (``:1649-1652``) and the program goes on."""
    redirects: list[SessionRedirect] = []

    misplaced = redirects_to_hooks(
        [Gather(id="g1", action_hook="/g"), Say(text="Next")],
        _starting("g1"),
        redirects,
        [],
        child_call_hook="/child",
    )
    _, run = await played(nursery, misplaced, Caller(on_gather=_stuck))
    assert redirects == [] and run.heard == ["Next"]


async def test_a_child_call_hook_while_no_verb_runs_loses_the_call_hook_answer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """With no verb running, jambonz's ``_lccCallHook`` throws reading the running verb's
    ``sd`` (FS v0.9.8 ``lib/session/call-session.js:1601-1602``), after the parent's
    ``session:redirect`` went out (``:1596-1598``): its answer is never used."""
    redirects: list[SessionRedirect] = []

    late = redirects_to_hooks(
        [],
        lambda status: status.event == "finished",
        redirects,
        [Say(text="Lost"), Hangup()],
        call_hook="/parent",
        child_call_hook="/child",
    )
    _, run = await played(nursery, late)
    assert [r.hook for r in redirects] == ["/parent"] and run.heard == []


# -- the redirect verb -------------------------------------------------------------------


def redirect_then(
    answer: Sequence[Verb],
    redirects: list[SessionRedirect],
    hook: str | HookSpec = "/next",
    *,
    first: Verb | None = None,
) -> Callable[[Call], Awaitable[None]]:
    """An app whose program is a ``redirect`` verb (``first``, else one to ``hook``), then a
    ``say``; it answers the ``session:redirect`` with ``answer``."""
    redirect = first if first is not None else Redirect(id="r1", action_hook=hook)

    async def app(call: Call) -> None:
        await call.ack(call.session, [redirect, Say(text="After the redirect")])
        async for event in call:
            if isinstance(event, SessionRedirect):
                redirects.append(event)
                await call.ack(event, list(answer))

    return app


async def test_the_redirect_verb_sends_session_redirect_and_its_answer_is_the_program(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` skipped the ``redirect`` verb silently (no ``session:redirect``,
    the next verb played). jambonz sends its actionHook as ``session:redirect`` with the call
    info and ``verb_id``; a non-empty verb array answer replaces the program, an empty one
    carries on (FS v0.9.8 ``lib/tasks/task.js:226``, ``:233``, ``:253-260``)."""
    heard = []
    answers: list[list[Verb]] = [[Say(text="Moved"), Hangup()], []]
    for answer in answers:
        redirects: list[SessionRedirect] = []
        fc, run = await played(nursery, redirect_then(answer, redirects))
        (redirect,) = redirects
        assert redirect.hook == "/next" and redirect.data["verb_id"] == "r1"
        assert redirect.data["call_sid"] == fc.call.call_sid
        heard.append(run.heard)
    assert heard == [["Moved"], ["After the redirect"]]


async def test_the_redirect_verb_to_an_absolute_url_leaves_this_app(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """An absolute URL hands the call to a new socket (FS v0.9.8 ``lib/tasks/redirect.js:20-33``,
    ``lib/session/call-session.js:126-135``): this app gets no ``session:redirect`` and no
    more verbs run here; ``run_call`` says so and ends the call."""
    redirects: list[SessionRedirect] = []
    app = redirect_then([Say(text="Never")], redirects, hook="wss://other.example.com/app")
    server: JambonzServer = await nursery.start(serve_jambonz, app)
    story: list[tuple[str, str]] = []
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(), on_step=lambda *step: story.append(step))
    assert redirects == [] and run.heard == [] and fc.is_over
    assert any(
        who == "jambonz" and "wss://other.example.com/app goes to a new socket" in text for who, text in story
    )


async def test_the_redirect_verbs_relative_status_hook_changes_nothing_on_the_socket(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A relative ``statusHook`` only renames the ``call:status`` hook (FS v0.9.8
    ``lib/tasks/redirect.js:73-74``), which a socket does not carry: the redirect goes on."""
    redirects: list[SessionRedirect] = []
    redirect = Redirect(id="r1", action_hook="/next", status_hook="/status")
    fc, run = await played(nursery, redirect_then([Say(text="Moved")], redirects, first=redirect))
    assert len(redirects) == 1 and run.heard == ["Moved"]
    assert any(who == "jambonz" and "statusHook /status" in text for who, text in run.steps)
    assert fc.sent[-1].type == "call:status" and fc.sent[-1].data["call_status"] == "completed"


async def test_the_redirect_verbs_absolute_status_hook_closes_the_apps_socket(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` ignored a ``redirect`` verb's ``statusHook``. An absolute one gets
    a notifier of its own and jambonz 0.9.8 closes the old one, which on a WebSocket app is
    the app's own socket (FS v0.9.8 ``lib/tasks/redirect.js:57-71``,
    ``lib/middleware.js:335-336``, ``lib/utils/ws-requestor.js:325-339``): closed with 1000,
    the ``session:redirect`` discarded (``ws-requestor.js:81-84``), no ``call:status`` here.
    (This library refuses to send one, see tests/protocol/test_verbs.py; an app of another
    SDK may, as here with a raw verb.)"""
    redirects: list[SessionRedirect] = []
    redirect = RawVerb(
        data={
            "verb": "redirect",
            "id": "r1",
            "actionHook": "/next",
            "statusHook": "https://status.example.com/cb",
        }
    )
    fc, run = await played(nursery, redirect_then([Say(text="Never")], redirects, first=redirect))
    assert redirects == [] and run.heard == [] and fc.is_over
    assert [m.type for m in fc.sent] == ["session:new", "call:status"]  # only the "trying"
    assert any(who == "jambonz" and "closes" in text and "1000" in text for who, text in run.steps)


async def test_the_redirect_verb_with_an_object_hook_ends_the_call(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """jambonz 0.9.8 asks whether the actionHook is absolute with ``u.startsWith`` on the
    object (FS ``lib/utils/base-requestor.js:68-72``, operator precedence): the ``TypeError``
    fails the verb and the exec loop stops (``lib/session/call-session.js:1389-1391``): the
    call ends, no ``session:redirect`` goes out. (This library refuses to send one, see
    tests/protocol/test_verbs.py; an app of another SDK may, as here with a raw verb.)"""
    redirects: list[SessionRedirect] = []
    raw = RawVerb(data={"verb": "redirect", "actionHook": {"url": "/next", "method": "POST"}})
    app = redirect_then([Say(text="Never")], redirects, first=raw)
    fc, run = await played(nursery, app)
    assert redirects == [] and run.heard == []
    final = [m for m in fc.sent if m.type == "call:status"][-1]
    assert final.data["call_termination_by"] == "jambonz"


# -- killed verbs that still report ------------------------------------------------------


async def test_a_killed_play_still_sends_its_action_hook_and_its_answer_wins(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: a ``play`` killed by a redirect sent no actionHook. jambonz sends it
    (``reason: playCompleted``, FS v0.9.8 ``lib/tasks/play.js:91-95``) expecting an answer, and
    a non-empty one replaces the program the redirect had just put in place
    (``lib/tasks/task.js:253-260``)."""

    async def app(call: Call) -> None:
        play = Play(id="p1", url="https://example.com/hold.mp3", action_hook="/played")
        await call.ack(call.session, [Config(notify_events=True), play])
        async for event in call:
            if isinstance(event, VerbStatus) and event.event == "starting" and event.verb_id == "p1":
                await call.redirect([Say(text="Replaced")])
            elif isinstance(event, VerbHook) and event.hook == "/played":
                await call.ack(event, [Say(text="From the hook"), Hangup()])

    fc, run = await played(nursery, app)
    hook = next(m for m in fc.sent if m.type == "verb:hook")
    assert hook.data["reason"] == "playCompleted" and hook.data["verb_id"] == "p1"
    assert run.heard == ["play https://example.com/hold.mp3", "From the hook"]


async def test_a_conference_sends_its_action_hook_when_it_ends_or_is_killed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` never sent a conference's actionHook. jambonz sends it when the
    conference is over for this call, a kill included (FS v0.9.8
    ``lib/tasks/conference.js:108-110``, ``:117-134``), and its answer is the program."""
    hooks: list[VerbHook] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Conference(name="room", action_hook="/conf")])
        async for event in call:
            if isinstance(event, VerbHook) and event.hook == "/conf":
                hooks.append(event)
                await call.ack(event, [Say(text="The conference is over"), Hangup()])

    _, run = await played(nursery, app)
    assert len(hooks) == 1 and run.heard == ["The conference is over"]


async def test_a_waiting_conference_loops_its_wait_hook_until_it_starts(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` never asked a conference's waitHook. A caller who may not start the
    conference (``start_conference_on_enter`` false) waits, and jambonz asks the waitHook with
    the raw call info and plays its answer, again and again until the conference starts or
    the answer is ``[]`` (FS v0.9.8 ``lib/tasks/conference.js:161-163``, ``:240-253``,
    ``:650-686``)."""
    waits: list[VerbHook] = []
    room = Conference(name="room", start_conference_on_enter=False, wait_hook="/wait", action_hook="/conf")

    async def app(call: Call) -> None:
        await call.ack(call.session, [room])
        async for event in call:
            if isinstance(event, VerbHook) and event.hook == "/wait":
                waits.append(event)
                await call.ack(event, [Play(url="hold.mp3")] if len(waits) < 3 else [])
            elif isinstance(event, VerbHook) and event.hook == "/conf":
                await call.ack(event, [Say(text="Bye"), Hangup()])

    server: JambonzServer = await nursery.start(serve_jambonz, app)
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller())  # one round, then the conference starts
    assert len(waits) == 1 and run.heard == ["play hold.mp3", "Bye"]
    assert "sip" not in waits[0].data and waits[0].data["call_sid"] == fc.call.call_sid
    waits.clear()
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(conferences=[ConferenceOutcome(waits=5)]))
    # the third answer is [] and ends the loop: the caller waits in silence until it starts
    assert len(waits) == 3 and run.heard == ["play hold.mp3", "play hold.mp3", "Bye"]
    waits.clear()
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(conferences=[ConferenceOutcome(running=True)]))
    assert waits == [] and run.heard == ["Bye"]  # a running conference is joined at once


async def test_a_conference_plays_its_enter_hook_before_the_caller_joins(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` never asked a conference's enterHook. jambonz asks it as the caller
    joins (or starts) the conference and plays its answer first (FS v0.9.8
    ``lib/tasks/conference.js:340-350``, ``:650-686``); a refused answer is skipped."""
    order: list[str] = []

    async def app(call: Call) -> None:
        room = Conference(
            name="room", enter_hook="/enter", status_hook="/st", status_events=["join"], action_hook="/conf"
        )
        await call.ack(call.session, [room])
        async for event in call:
            if isinstance(event, VerbHook):
                order.append(event.hook or "")
                answers: dict[str, list[Verb]] = {
                    "/enter": [Say(text="Welcome to the room")],
                    "/conf": [Hangup()],
                }
                await call.ack(event, answers.get(event.hook or "", []))

    _, run = await played(nursery, app)
    assert order == ["/enter", "/st", "/conf"] and run.heard == ["Welcome to the room"]


async def test_a_conference_sends_the_status_events_it_lists_to_its_status_hook(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` never sent a conference's statusHook events. jambonz sends the
    ``status_events`` listed, as ``verb:hook`` with the event, ``members``, the conference's
    sid and name and the call info (FS v0.9.8 ``lib/tasks/conference.js:57-61``,
    ``:714-742``): ``start`` and ``join`` as the caller starts it (``:335-337``, ``:384``),
    ``leave`` and ``end`` as it ends (``:618-647``). jambonz ignores the answer: it is not
    the program."""
    events: list[VerbHook] = []

    async def app(call: Call) -> None:
        room = Conference(
            name="room",
            status_hook="/st",
            status_events=["start", "join", "leave", "end", "start-talking"],
            action_hook="/conf",
        )
        await call.ack(call.session, [room])
        async for event in call:
            if isinstance(event, VerbHook) and event.hook == "/st":
                events.append(event)
                await call.ack(event, [Say(text="ignored")])
            elif isinstance(event, VerbHook) and event.hook == "/conf":
                await call.ack(event, [Say(text="Bye"), Hangup()])

    fc, run = await played(nursery, app)
    assert [(e.data["event"], e.data["members"]) for e in events] == [
        ("start", 0),
        ("join", 1),
        ("leave", 0),
        ("end", 0),
    ]
    first = events[0].data
    assert first["conference_sid"] == f"conf:{fc.call.account_sid}:room" and first["friendly_name"] == "room"
    assert first["call_sid"] == fc.call.call_sid and first["time"].endswith("Z")
    assert run.heard == ["Bye"]  # the statusHook's answer does not play
    assert fc.violations == []


def screening_app(accept: str, calls: list[DialConfirm | VerbHook]) -> Callable[[Call], Awaitable[None]]:
    """A call-screening app: its confirmHook asks the callee to press ``accept``."""

    async def app(call: Call) -> None:
        dial = Dial(
            target=[Target(type="phone", number="+15550100")], confirm_hook="/screen", action_hook="/dialed"
        )
        await call.ack(call.session, [dial])
        async for event in call:
            if isinstance(event, DialConfirm):
                calls.append(event)
                ask = Say(text=f"Press {accept} to take the call")
                await call.ack(event, [Gather(input=["digits"], action_hook="/screened", say=ask)])
            elif isinstance(event, VerbHook) and event.hook == "/screened":
                calls.append(event)
                taken = event.data.get("digits") == accept
                await call.ack(event, [Say(text="Connecting")] if taken else [Hangup()])
            elif isinstance(event, VerbHook) and event.hook == "/dialed":
                calls.append(event)
                await call.ack(event, [Say(text=f"Dial {event.data['dial_call_status']}"), Hangup()])

    return app


async def test_a_dial_confirm_hook_plays_to_the_callee_and_a_hangup_declines_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` never sent a dial's confirmHook. When the callee answers, jambonz
    sends ``dial:confirm`` with the child leg's call info and plays the answer to the callee,
    whose hooks carry the child's call info (FS v0.9.8 ``lib/utils/place-outdial.js:310``,
    ``:389-425``, ``lib/tasks/task.js:227``); still connected after, the callee is bridged
    (``:428``); hung up on, declined: the dial ends with the answered leg's results,
    ``in-progress`` (``lib/tasks/dial.js:701-710``, ``:748-756``)."""
    calls: list[DialConfirm | VerbHook] = []
    server: JambonzServer = await nursery.start(serve_jambonz, screening_app("1", calls))
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(dials=[DialOutcome(callee=Caller(Digits("1")))]))
    confirm, screened, dialed = calls
    child = confirm.data["call_sid"]
    assert confirm.data["parent_call_sid"] == fc.call.call_sid and child != fc.call.call_sid
    assert screened.data["call_sid"] == child and screened.data["digits"] == "1"
    assert dialed.data["dial_call_status"] == "completed" and dialed.data["dial_call_sid"] == child
    assert run.heard == ["Dial completed"]  # the prompt and "Connecting" played to the callee
    calls.clear()
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(dials=[DialOutcome(callee=Caller(Digits("2")))]))
    assert [type(c).__name__ for c in calls] == ["DialConfirm", "VerbHook", "VerbHook"]
    assert calls[2].data["dial_call_status"] == "in-progress" and calls[2].data["dial_sip_status"] == 200
    assert run.heard == ["Dial in-progress"]
    assert fc.violations == []


async def test_a_redirect_while_an_llm_waits_for_a_tool_output_kills_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` waited for the tool output regardless and raised ``TooSlowError``.
    jambonz kills the ``llm`` (no more tool calls) and still sends its actionHook with the
    default ``completion_reason`` (FS v0.9.8 ``lib/tasks/llm/llms/openai_s2s.js:91-93``,
    ``:140-144``, ``:149-155``)."""
    tool_calls: list[LlmToolCall] = []

    async def app(call: Call) -> None:
        llm = Llm(vendor="openai", llm_options={}, tool_hook="/tool", action_hook="/llm-done")
        await call.ack(call.session, [llm])
        async for event in call:
            if isinstance(event, LlmToolCall):
                tool_calls.append(event)
                await call.redirect([Say(text="A person will help you"), Hangup()])
            elif isinstance(event, VerbHook) and event.hook == "/llm-done":
                assert event.data["completion_reason"] == "normal conversation end"
                await call.ack(event)

    server: JambonzServer = await nursery.start(serve_jambonz, app)
    scripts = [ToolCallScript("transfer", {}), ToolCallScript("again", {}, tool_call_id="call_2")]
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(tool_calls=scripts))
    assert [t.data["name"] for t in tool_calls] == ["transfer"]
    assert any(a.request.hook == "/llm-done" for a in fc.acks)
    assert not any(isinstance(r.command, LlmToolOutputCommand) for r in fc.commands)
    assert run.heard == ["A person will help you"]


# -- verbs run_call does not simulate, and the transcribe verb ---------------------------


async def test_a_verb_run_call_does_not_simulate_is_narrated(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``sip:request`` (and every other verb ``run_call`` has no branch for) was
    skipped without a word; a test author could not tell its actionHook never went out."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Tag(data={"a": 1}), SipRequest(method="INFO", action_hook="/info")])
        await call.wait_closed()

    server: JambonzServer = await nursery.start(serve_jambonz, app)
    story: list[tuple[str, str]] = []
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            await run_call(fc, Caller(), on_step=lambda *step: story.append(step))
    skipped = [text for who, text in story if who == "jambonz" and "not simulated by run_call" in text]
    assert [text.split(":")[0] for text in skipped] == ["tag", "sip"]
    assert "its actionHook is not sent" in skipped[1]


async def test_the_transcribe_verb_holds_the_program_until_a_command_ends_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` skipped ``transcribe`` and played the next verb at once. jambonz
    runs it until it is killed (FS v0.9.8 ``lib/tasks/transcribe.js:136``): what follows it
    waits; here a redirect ends it."""

    async def app(call: Call) -> None:
        program = [
            Config(notify_events=True),
            Transcribe(id="t1", transcription_hook="/t"),
            Say(text="Never"),
        ]
        await call.ack(call.session, program)
        async for event in call:
            if isinstance(event, VerbStatus) and event.event == "starting" and event.verb_id == "t1":
                await trio.sleep(5)
                await call.redirect([Say(text="Done transcribing"), Hangup()])

    server: JambonzServer = await nursery.start(serve_jambonz, app)
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(), idle=10)
    assert run.heard == ["Done transcribing"]


async def test_a_gathers_play_prompt_is_heard(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: only a ``say`` prompt was played (and heard); a ``play`` prompt was not."""

    async def app(call: Call) -> None:
        gather = Gather(action_hook="/g", play=Play(url="https://example.com/menu.mp3"))
        await call.ack(call.session, [gather])
        async for event in call:
            if isinstance(event, VerbHook):
                await call.ack(event, [Hangup()])

    _, run = await played(nursery, app, Caller(Digits("1")))
    assert run.heard == ["play https://example.com/menu.mp3"]


# -- a gather without an actionHook ------------------------------------------------------


async def test_a_gather_without_an_action_hook_takes_the_callers_answer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` skipped a gather without an actionHook without asking the caller,
    so the caller's first answer went to the next gather. jambonz runs it like any gather (the
    caller's keys or speech resolve it, FS v0.9.8 ``lib/tasks/gather.js:1313-1420``) and only
    ``performAction`` does nothing without an actionHook (``lib/tasks/task.js:225``): the
    answer is consumed and dropped, and the program goes on."""
    hooks: list[VerbHook] = []

    async def app(call: Call) -> None:
        program = [
            Gather(input=["digits"], say=Say(text="Any key")),
            Gather(input=["digits"], action_hook="/g"),
        ]
        await call.ack(call.session, program)
        async for event in call:
            if isinstance(event, VerbHook):
                hooks.append(event)
                await call.ack(event, [Hangup()])

    story: list[tuple[str, str]] = []
    server: JambonzServer = await nursery.start(serve_jambonz, app)
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(Digits("1"), Digits("2")), on_step=lambda *s: story.append(s))
    assert [h.data.get("digits") for h in hooks] == ["2"]
    assert run.heard == ["Any key"]
    assert ("caller", "presses 1") in story
    assert any("no actionHook" in text for who, text in story if who == "jambonz")


async def test_a_hang_up_at_a_gather_without_an_action_hook_ends_the_call(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Gather(input=["digits"]), Say(text="Never heard")])
        await call.wait_closed()

    fc, run = await played(nursery, app, Caller(HangUp()))
    assert run.heard == []
    assert fc.call.call_status == "completed"
    assert fc.sent[-1].data["call_termination_by"] == "caller"


async def test_a_callees_gather_without_an_action_hook_takes_the_callees_answer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The same on the callee of a confirmHook program: its first answer goes to the gather
    without an actionHook, the second to the one with it."""
    screened: list[VerbHook] = []

    async def app(call: Call) -> None:
        dial = Dial(target=[Target(type="phone", number="+15550100")], confirm_hook="/screen")
        await call.ack(call.session, [dial, Hangup()])
        async for event in call:
            if isinstance(event, DialConfirm):
                program = [Gather(input=["digits"]), Gather(input=["digits"], action_hook="/screened")]
                await call.ack(event, program)
            elif isinstance(event, VerbHook) and event.hook == "/screened":
                screened.append(event)
                await call.ack(event)

    callee = Caller(Digits("1"), Digits("2"))
    await played(nursery, app, Caller(dials=[DialOutcome(callee=callee)]))
    assert [h.data.get("digits") for h in screened] == ["2"]


# -- a connected dial's dtmfHook and onHoldHook ------------------------------------------


def call_center_app(
    hooks: list[VerbHook], dial: Dial, hold_answer: list[Verb] | None = None
) -> Callable[[Call], Awaitable[None]]:
    """Dials an agent with ``dial``; records every verb:hook; the onHoldHook is answered with
    ``hold_answer``, the dial's actionHook with a goodbye."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [dial])
        async for event in call:
            if not isinstance(event, VerbHook):
                continue
            hooks.append(event)
            if event.hook == "/hold":
                await call.ack(event, hold_answer or [])
            elif event.hook == "/dialed":
                await call.ack(event, [Say(text="Goodbye"), Hangup()])
            else:
                await call.ack(event, [Say(text="jambonz ignores this")])

    return app


AGENT = [Target(type="phone", number="+15550100")]


async def test_a_connected_dial_sends_its_dtmf_hook_for_the_keys_it_captures(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` never sent a dial's dtmfHook. Once the callee is bridged, jambonz
    watches each leg's keys for the ``dtmfCapture`` patterns and sends ``verb:hook`` to the
    dtmfHook with ``dtmf`` (the pattern) and that leg's call info, ignoring the answer (FS
    v0.9.8 ``lib/tasks/dial.js:115-122``, ``:494-518``, ``:922-923``;
    ``lib/utils/dtmf-collector.js:20-39``: the keys so far must end with a pattern)."""
    hooks: list[VerbHook] = []
    dial = Dial(
        target=AGENT, action_hook="/dialed", dtmf_hook="/dtmf", dtmf_capture={"childCall": ["*1", "#"]}
    )
    story: list[tuple[str, str]] = []
    server: JambonzServer = await nursery.start(serve_jambonz, call_center_app(hooks, dial))
    outcome = DialOutcome(callee_keys="5*1#")
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(dials=[outcome]), on_step=lambda *s: story.append(s))
    dtmf = [h for h in hooks if h.hook == "/dtmf"]
    assert [h.data["dtmf"] for h in dtmf] == ["*1", "#"]
    dialed = next(h for h in hooks if h.hook == "/dialed")
    child = dialed.data["dial_call_sid"]
    assert all(h.data["call_sid"] == child for h in dtmf)  # the callee's leg: its call info
    assert all(h.data["parent_call_sid"] == fc.call.call_sid for h in dtmf)
    assert run.heard == ["Goodbye"]  # the dtmfHook's answer is ignored
    assert ("callee", "presses 5*1#") in story
    assert fc.violations == []


async def test_a_dial_captures_the_callers_keys_only_as_0_9_8_parses_dtmf_capture(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """jambonz 0.9.8 puts ``dtmfCapture.parentCall``'s keys on the callee's leg
    (``lib/tasks/dial.js:41-43``): with the object form no key of the caller is captured."""
    hooks: list[VerbHook] = []
    dial = Dial(target=AGENT, action_hook="/dialed", dtmf_hook="/dtmf", dtmf_capture={"parentCall": ["*2"]})
    story: list[tuple[str, str]] = []
    server: JambonzServer = await nursery.start(serve_jambonz, call_center_app(hooks, dial))
    outcome = DialOutcome(caller_keys="*2", callee_keys="*2")
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            await run_call(fc, Caller(dials=[outcome]), on_step=lambda *s: story.append(s))
    dtmf = [h for h in hooks if h.hook == "/dtmf"]
    assert len(dtmf) == 1 and dtmf[0].data["dtmf"] == "*2"
    assert dtmf[0].data["call_sid"] != fc.call.call_sid  # the callee's press
    assert any("dial.js:41-43" in text for who, text in story if who == "jambonz")


async def test_a_dial_without_a_dtmf_hook_captures_no_keys(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    hooks: list[VerbHook] = []
    dial = Dial(target=AGENT, action_hook="/dialed", dtmf_capture={"childCall": ["1"]})
    server: JambonzServer = await nursery.start(serve_jambonz, call_center_app(hooks, dial))
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            await run_call(fc, Caller(dials=[DialOutcome(caller_keys="1", callee_keys="1")]))
    assert [h.hook for h in hooks] == ["/dialed"]


async def test_the_callee_putting_the_caller_on_hold_asks_the_on_hold_hook(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``run_call`` never sent a dial's onHoldHook. When the callee puts the call on
    hold (a re-INVITE with hold SDP), jambonz asks the onHoldHook with the call info and
    ``hold_detail`` (the re-INVITE's From and To) and plays the answer's ``say`` / ``play`` /
    ``pause`` on the caller's leg; 0.9.8 asks once (the loop tests an ``isOnHold`` it never
    sets) (FS v0.9.8 ``lib/tasks/dial.js:757-760``, ``:807-828``, ``:1091-1136``)."""
    hooks: list[VerbHook] = []
    dial = Dial(target=AGENT, action_hook="/dialed", on_hold_hook="/hold")
    music = [Say(text="Please hold"), Play(url="https://example.com/hold.mp3")]
    server: JambonzServer = await nursery.start(serve_jambonz, call_center_app(hooks, dial, music))
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(dials=[DialOutcome(hold=True)]))
    hold = [h for h in hooks if h.hook == "/hold"]
    assert len(hold) == 1
    assert hold[0].data["call_sid"] == fc.call.call_sid  # the parent's call info
    detail = hold[0].data["hold_detail"]
    # the callee's re-INVITE on the child leg: To is the side jambonz called from
    assert set(detail) == {"from", "to"} and fc.call.to in detail["to"] and detail["from"] != detail["to"]
    assert run.heard == ["Please hold", "play https://example.com/hold.mp3", "Goodbye"]
    assert fc.violations == []


async def test_an_on_hold_answer_jambonz_refuses_plays_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    hooks: list[VerbHook] = []
    dial = Dial(target=AGENT, action_hook="/dialed", on_hold_hook="/hold")
    server: JambonzServer = await nursery.start(
        serve_jambonz, call_center_app(hooks, dial, [Say(text="Hold on"), Hangup()])
    )
    async with open_fake_call(server.connect_memory, strict=False) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(dials=[DialOutcome(hold=True)]))
    assert run.heard == ["Goodbye"]
    assert [v.kind for v in fc.violations] == ["refused-ack-data"]


async def test_a_hold_without_an_on_hold_hook_asks_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    hooks: list[VerbHook] = []
    dial = Dial(target=AGENT, action_hook="/dialed")
    server: JambonzServer = await nursery.start(serve_jambonz, call_center_app(hooks, dial))
    async with open_fake_call(server.connect_memory) as fc:
        with trio.fail_after(30):
            run = await run_call(fc, Caller(dials=[DialOutcome(hold=True)]))
    assert [h.hook for h in hooks] == ["/dialed"] and run.heard == ["Goodbye"]
