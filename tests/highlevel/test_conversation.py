"""The conversation API, driven by the fake jambonz running the program like 0.9.8 would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from jambonz_trio import (
    AudioRoute,
    Call,
    CallClosed,
    CallStatus,
    Conversation,
    JambonzServer,
    LocalProtocolError,
    Route,
    open_conversation,
)
from jambonz_trio.commands import CallStatusCommand, LlmToolOutputCommand, RedirectCommand
from jambonz_trio.llm import tool_output
from jambonz_trio.lowlevel import parse_message
from jambonz_trio.messages import Disconnected, GatherResult, HookAbandoned, ToolCall, VerbHook
from jambonz_trio.testing import (
    AckAbandoned,
    Caller,
    Digits,
    FakeCall,
    ToolCallScript,
    open_fake_call,
    run_call,
)
from jambonz_trio.testing._fake import flux_speech_result
from jambonz_trio.verbs import Config, DeepgramOptions, Gather, Listen, Llm, Recognizer, Say
from tests.audio.helpers import start_server
from tests.helpers import start

Handler = Callable[[Call], Awaitable[None]]


async def serve(nursery: trio.Nursery, app: Handler) -> JambonzServer:
    server = await start(nursery, app)
    return server


async def test_straight_line_ivr(nursery: trio.Nursery) -> None:
    results: list[GatherResult] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            await convo.say("Hello from jambonz")
            result = await convo.gather("Say something", input_timeout=10)
            results.append(result)
            await convo.say(f"You said: {result.transcript}")
            await convo.hangup()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await run_call(fc, Caller("yes"))
    assert results[0].transcript == "yes"
    first = fc.acks[0]
    assert first.request_type == "session:new"
    assert first.verbs == [Config(notify_events=True), Say(text="Hello from jambonz", id="jt-1")]
    gather = next(c.command for c in fc.commands if isinstance(c.command, RedirectCommand))
    assert isinstance(gather, RedirectCommand) and gather.queue
    assert isinstance(gather.verbs[0], Gather) and gather.verbs[0].action_hook == "/jt/gather/2"
    # the gather's hook is answered with the next operation's verbs: no extra round trip
    hook_ack = fc.acks[1]
    assert hook_ack.request_type == "verb:hook"
    assert hook_ack.verbs == [Say(text="You said: yes", id="jt-3")]
    assert fc.is_over


async def test_digits_and_timeout(nursery: trio.Nursery) -> None:
    seen: list[tuple[str | None, str | None, bool]] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            for _ in range(2):
                r = await convo.gather("Press something")
                seen.append((r.transcript, r.digits, r.timed_out))
            await convo.hangup()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await run_call(fc, Caller(Digits("42"), None))
    assert seen == [(None, "42", False), (None, None, True)]


async def test_cancelled_gather_is_killed_and_the_next_verb_runs(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    cancelled: list[bool] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            with trio.move_on_after(3) as scope:
                await convo.gather("Say something")
            cancelled.append(scope.cancelled_caught)
            await convo.say("Moving on")
            await call.wait_closed()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        ack = await fc.start()
        assert [v.VERB for v in ack.verbs] == ["config", "gather"]
        kill = await fc.expect_command(RedirectCommand, within=10)
        assert kill.verbs == () and not kill.queue  # replaces the program: the gather is killed
        nxt = await fc.expect_command(RedirectCommand)
        assert nxt.verbs == (Say(text="Moving on", id="jt-2"),)
        # a late result of the killed gather is acked empty, not taken as the next answer
        late = await fc.gather_speech("/jt/gather/1", "too late")
        assert late.verbs == []
        await fc.verb_status("finished", id="jt-2", name="say")
        await fc.hangup()
    assert cancelled == [True]


async def test_a_gather_cancelled_just_after_its_hook_came_answers_that_hook(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The gather's hook arrives (the operation is done) but the app's cancellation lands
    before the operation returns: the hook is answered at once by the kill, not left to the
    4 s watchdog. A call first seen through ``session:reconnect`` forces the interleaving: the
    operation waits up to 1 s for its verb to start (``_ensure_started``), and the hook comes
    within that wait."""
    scopes: list[trio.CancelScope] = []
    cancelled = trio.Event()

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            with trio.CancelScope() as scope:
                scopes.append(scope)
                await convo.gather("Say something")
            cancelled.set()
            await call.wait_closed()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start(kind="session:reconnect")
        acks: list[Any] = []
        t0 = trio.current_time()
        async with trio.open_nursery() as inner:

            async def hook() -> None:
                acks.append(await fc.gather_speech("/jt/gather/1", "yes"))

            inner.start_soon(hook)
            await trio.testing.wait_all_tasks_blocked()  # the hook is routed; the op still waits
            assert scopes and not cancelled.is_set()
            scopes[0].cancel()
        waited = trio.current_time() - t0
        assert cancelled.is_set() and acks[0].verbs == []
        assert waited < 1.0, f"the gather's hook was answered only after {waited:.1f} s (the watchdog)"
        await fc.hangup()


class _CancelBeforeTheHookIsRouted(trio.abc.Instrument):
    """Once armed, cancels ``scope`` just before the conversation's event pump takes its next
    step: a step that routes the next event, here the listen's hook. The listen's task, parked
    on that hook, is then rescheduled with the cancellation but runs only after the pump has
    routed the hook to it: the cancel lands just as the hook arrives, deterministically (trio
    would otherwise run the two in either order)."""

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None
        self.fired = False

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.scope is not None and not self.fired and task.name.endswith("Conversation._pump"):
            self.fired = True
            self.scope.cancel()


async def test_a_listen_cancelled_as_its_hook_arrives_leaves_that_hook_to_the_next_operation(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The app leaves its ``listen`` block (jambonz ends the verb and sends its hook) and its
    scope is cancelled just as that hook arrives: the hook was taken by the listen (routed to
    it) but the listen raised the cancellation without keeping it, so nobody answered it but
    the 4 s watchdog, and the next operation went out as a ``redirect``. The hook is now kept,
    as after a listen that returned: the next operation's verbs answer it."""
    cancelled: list[bool] = []
    instrument = _CancelBeforeTheHookIsRouted()

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            with trio.CancelScope() as scope:
                instrument.scope = scope
                async with convo.listen("/audio"):
                    pass  # leave at once: jambonz ends the verb, then sends its hook
            cancelled.append(scope.cancelled_caught)
            await convo.say("Moving on")
            await call.wait_closed()

    server = await start_server(nursery, [Route(path="/call", handler=app), AudioRoute(path="/audio")])
    async with open_fake_call(server.connect_memory, path="/call") as fc:
        verb = (await fc.start()).first(Listen)
        async with fc.open_listen(verb) as audio:
            await audio.wait_closed()  # the app left its block
        await trio.testing.wait_all_tasks_blocked()
        assert cancelled == []  # the listen waits for its hook
        trio.lowlevel.add_instrument(instrument)  # armed
        try:
            t0 = trio.current_time()
            ack = await fc.hook(verb, {"dial_call_duration": 0})
            waited = trio.current_time() - t0
        finally:
            trio.lowlevel.remove_instrument(instrument)
        assert instrument.fired and cancelled == [True]
        assert waited < 1.0, f"the listen's hook was answered only after {waited:.1f} s (the watchdog)"
        assert ack.verbs == [Say(text="Moving on", id="jt-2")]
        await fc.hangup()


async def test_a_listen_block_cancelled_after_jambonz_ended_the_verb_leaves_its_hook_to_the_next_operation(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The same when jambonz ends the verb (a ``finishOnKey``, ``maxLength``...) and sends its
    hook while the app is still inside its ``listen`` block, and the block is then cancelled."""
    scopes: list[trio.CancelScope] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            with trio.CancelScope() as scope:
                async with convo.listen("/audio"):
                    scopes.append(scope)
                    await trio.sleep_forever()
            await convo.say("Moving on")
            await call.wait_closed()

    server = await start_server(nursery, [Route(path="/call", handler=app), AudioRoute(path="/audio")])
    async with open_fake_call(server.connect_memory, path="/call") as fc:
        verb = (await fc.start()).first(Listen)
        async with fc.open_listen(verb):
            pass  # jambonz ends the verb: it closes the socket, then sends the hook
        acks: list[Any] = []
        t0 = trio.current_time()
        async with trio.open_nursery() as inner:

            async def hook() -> None:
                acks.append(await fc.hook(verb, {"dial_call_duration": 0}))

            inner.start_soon(hook)
            await trio.testing.wait_all_tasks_blocked()  # the hook is routed to the listen
            assert scopes and not acks
            scopes[0].cancel()
        waited = trio.current_time() - t0
        assert waited < 1.0, f"the listen's hook was answered only after {waited:.1f} s (the watchdog)"
        assert acks[0].verbs == [Say(text="Moving on", id="jt-2")]
        await fc.hangup()


# -- deepgramflux: early turn reports ---------------------------------------------------------------

EAGER_FLUX = Recognizer(vendor="deepgramflux", deepgram_options=DeepgramOptions(eager_eot_threshold=0.5))


async def test_a_flux_gathers_eager_end_of_turn_is_not_its_result(nursery: trio.Nursery) -> None:
    """A deepgramflux gather in eager mode calls its actionHook for Flux's ``EagerEndOfTurn``
    while it keeps listening, and ignores that ack's verbs (FS v0.9.8 lib/tasks/gather.js:
    1115-1118); its result comes in a second hook. The conversation took the first hook as
    the result and answered it with the next ``say``: jambonz dropped the say, and the
    operation waited for a ``verb:status`` that never came (the caller hung up on silence)."""
    results: list[GatherResult] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            result = await convo.gather("How can I help?", recognizer=EAGER_FLUX)
            results.append(result)
            await convo.say(f"You said: {result.transcript}")
            await convo.hangup()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        run = await run_call(fc, Caller("cancel my subscription"))
    hooks = [a for a in fc.acks if a.request.hook == "/jt/gather/1"]
    assert [a.request.data["speech"]["vendor"]["evt"]["event"] for a in hooks] == [
        "EagerEndOfTurn",
        "EndOfTurn",
    ]
    assert hooks[0].verbs == []  # answered at once, with nothing (jambonz ignores its verbs)
    assert hooks[1].verbs == [Say(text="You said: cancel my subscription", id="jt-2")]
    assert results[0].speech is not None and results[0].speech.is_final
    assert run.heard[-1] == "You said: cancel my subscription"


@pytest.mark.parametrize("early_turns", [True, False])
async def test_a_flux_gathers_early_turn_reports_reach_next_event_answered_if_asked(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, early_turns: bool
) -> None:
    """Each ``EagerEndOfTurn`` / ``TurnResumed`` hook is answered at once and, with
    ``early_turns=True``, handed to :meth:`Conversation.next_event` (for speculative work),
    already answered; the gather returns only the result (``EndOfTurn``). Unasked, they are
    kept nowhere: an app that never reads ``next_event`` no longer piles one up per pause of
    the caller (up to the queue's 256, then a warning per drop)."""
    results: list[GatherResult] = []
    early: list[VerbHook] = []
    answered: list[bool] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo, trio.open_nursery() as inner:

            async def watch() -> None:
                while True:
                    event = await convo.next_event()
                    if isinstance(event, VerbHook):
                        early.append(event)
                        answered.append(not call.awaiting_ack(event))

            inner.start_soon(watch)
            results.append(
                await convo.gather("How can I help?", recognizer=EAGER_FLUX, early_turns=early_turns)
            )
            await convo.hangup()
            inner.cancel_scope.cancel()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        gather = (await fc.start()).first(Gather)
        turns = [
            ("EagerEndOfTurn", "I need to"),
            ("TurnResumed", "I need to"),
            ("EagerEndOfTurn", "I need to cancel"),
        ]
        for event, text in turns:
            ack = await fc.hook(gather, flux_speech_result(text, event))
            assert ack.verbs == []
        ack = await fc.hook(gather, flux_speech_result("I need to cancel", "EndOfTurn"))
        assert [v.VERB for v in ack.verbs] == ["hangup"]
        await fc.hangup()
    assert [r.transcript for r in results] == ["I need to cancel"]
    events = [GatherResult.from_data(e.data).speech for e in early]
    expected = turns if early_turns else []
    assert [(s.raw["vendor"]["evt"]["event"], s.transcript) for s in events if s is not None] == expected
    assert answered == [True] * len(expected)


async def test_a_flux_gathers_abandoned_early_turn_report_is_not_its_result(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """An early turn report the socket dropped under before its answer (``HookAbandoned``:
    jambonz failed that request and the gather runs on) is not the gather's result either.
    The event is routed to the conversation directly: in the fake the conversation answers
    the hook as it arrives, before the engine can see a drop behind it."""
    results: list[GatherResult] = []
    convos: list[Conversation] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            convos.append(convo)
            results.append(await convo.gather("How can I help?", recognizer=EAGER_FLUX))
            await convo.hangup()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        gather = (await fc.start()).first(Gather)
        await trio.testing.wait_all_tasks_blocked()
        early = parse_message(
            {
                "type": "verb:hook",
                "msgid": "eager-1",
                "call_sid": fc.call.call_sid,
                "hook": "/jt/gather/1",
                "data": {**flux_speech_result("I need to", "EagerEndOfTurn"), "verb_id": "jt-1"},
            }
        )
        await convos[0]._route(HookAbandoned(message=early))
        await trio.testing.wait_all_tasks_blocked()
        assert results == []  # the gather still waits for its result
        ack = await fc.hook(gather, flux_speech_result("I need to cancel", "EndOfTurn"))
        assert [v.VERB for v in ack.verbs] == ["hangup"]
        await fc.hangup()
    assert [r.transcript for r in results] == ["I need to cancel"]


async def test_other_events_and_mixing_rules(nursery: trio.Nursery) -> None:
    got: list[Any] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            with pytest.raises(LocalProtocolError, match="consumed"):
                await call.next_event()
            with pytest.raises(LocalProtocolError, match="reserved"):
                async with open_conversation(call):
                    pass
            await convo.say("hi")
            got.append(await convo.next_event())
            await convo.hangup()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory, send_trying=False) as fc:
        await fc.start()
        await fc.status("in-progress")
        await fc.verb_status("finished", id="jt-1", name="say")
        await fc.expect_command(RedirectCommand)  # the hangup
        await fc.hangup()
    assert isinstance(got[0], CallStatus) and got[0].call_status == "in-progress"


async def test_an_option_an_operation_sets_itself_is_refused_naming_the_parameter_to_use(
    nursery: trio.Nursery,
) -> None:
    """Before: ``convo.gather("...", timeout=5)`` (the verb's own field name) crashed the
    handler with ``Gather() got multiple values for keyword argument 'timeout'``, an argument
    the app passed once; now the operation says which parameter to use, before sending."""
    refused: list[str] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            attempts: list[Callable[[], Awaitable[object]]] = [
                lambda: convo.gather("Your PIN?", timeout=5),
                lambda: convo.gather("Your PIN?", action_hook="/mine"),
                lambda: convo.gather(say=Say(text="Your PIN?")),
                lambda: convo.dial(timeout=30),
                lambda: convo.dial(target=[]),
            ]
            for attempt in attempts:
                with pytest.raises(TypeError) as info:
                    await attempt()
                refused.append(str(info.value))
            with pytest.raises(TypeError) as info:
                async with convo.listen("/audio", id="mine"):
                    pass
            refused.append(str(info.value))
            await convo.hangup()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        ack = await fc.start()
        assert ack.verb_names == ["config", "hangup"]  # nothing of the refused operations went out
        await fc.hangup()
    assert refused == [
        "gather() got 'timeout': pass input_timeout= (the gather verb's timeout)",
        "gather() got 'action_hook': the conversation sets the verb's action hook itself",
        "gather() got 'say': pass the prompt's text as the first argument",
        "dial() got 'timeout': pass ring_timeout= (the dial verb's timeout)",
        "dial() got 'target': pass the targets as positional arguments",
        "listen() got 'id': the conversation sets the verb's id itself",
    ]


async def test_conversation_survives_a_reconnect(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    results: list[str | None] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            result = await convo.gather("Say something")
            results.append(result.transcript)
            await convo.hangup()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.drop()
        await fc.reconnect()
        ack = await fc.gather_speech("/jt/gather/1", "after the drop")
        assert [v.VERB for v in ack.verbs] == ["hangup"]
        await fc.hangup()
    assert results == ["after the drop"]


async def test_llm_with_a_tool(nursery: trio.Nursery) -> None:
    calls: list[ToolCall] = []

    async def weather(tc: ToolCall) -> dict[str, Any]:
        calls.append(tc)
        return tool_output("openai", tc, {"city": tc.args["city"], "temp_c": 21})

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            result = await convo.llm(
                Llm(vendor="openai", model="gpt-4o-realtime-preview", llm_options={"instructions": "help"}),
                on_tool_call=weather,
            )
            await convo.say(f"Goodbye ({result.completion_reason})")
            await convo.hangup()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await run_call(fc, Caller(tool_calls=[ToolCallScript("get_weather", {"city": "Paris"}, "call_7")]))
    assert [c.name for c in calls] == ["get_weather"]
    output = next(c.command for c in fc.commands if isinstance(c.command, LlmToolOutputCommand))
    assert isinstance(output, LlmToolOutputCommand) and output.tool_call_id == "call_7"
    assert output.data == {
        "type": "conversation.item.create",
        "item": {
            "type": "function_call_output",
            "call_id": "call_7",
            "output": '{"city": "Paris", "temp_c": 21}',
        },
    }
    llm_verb = fc.acks[0].verbs[1]
    assert isinstance(llm_verb, Llm) and llm_verb.tool_hook == "/jt/tool/1"
    assert fc.acks[-1].verbs == [Say(text="Goodbye (normal conversation end)", id="jt-3")]


@pytest.mark.parametrize(
    ("vendor", "key"),
    [("ultravox", "invocation_id"), ("elevenlabs", "data"), ("deepgram", "data"), ("google", "toolResponse")],
)
def test_tool_output_shapes(vendor: str, key: str) -> None:
    tc = ToolCall(tool_call_id="t1", name="f", args={})
    assert key in tool_output(vendor, tc, "ok")
    with pytest.raises(ValueError, match="unknown llm vendor"):
        tool_output("acme", tc, "ok")


async def test_cancelling_a_pending_operation_of_a_dropped_call_does_not_hang(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Shutdown while an operation waits on a call whose socket is gone must return."""
    waiting = trio.Event()

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            waiting.set()
            await convo.gather("Say something")

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await serve(nursery, app)
            async with open_fake_call(server.connect_memory, auto_reconnect=False) as fc:
                await fc.start()
                await waiting.wait()
                await fc.drop()
            nursery.cancel_scope.cancel()


async def test_callclosed_inside_the_block_is_not_wrapped(nursery: trio.Nursery) -> None:
    caught: list[BaseException] = []

    async def app(call: Call) -> None:
        try:
            async with open_conversation(call) as convo:
                await convo.gather("Say something")
        except CallClosed as exc:
            caught.append(exc)

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.hangup()
    await trio.testing.wait_all_tasks_blocked()
    assert len(caught) == 1 and type(caught[0]) is CallClosed


async def test_prefix_route_handlers_see_the_request_path(nursery: trio.Nursery) -> None:
    paths: list[str] = []

    async def app(call: Call) -> None:
        paths.append(call.path)
        await call.ack(call.session, [Say(text="hi")])

    server = await start(nursery, Route(path="/agent", handler=app, prefix=True))
    async with open_fake_call(server.connect_memory, path="/agent/sales?lang=fr") as fc:
        await fc.start()
    assert paths == ["/agent/sales?lang=fr"]


# -- leaving the block ----------------------------------------------------------------------------


async def test_leaving_the_block_answers_the_hook_kept_for_a_next_operation(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The gather's hook is kept for the next operation's verbs; when the block ends instead,
    nobody else can answer it (the conversation consumed the event): the call sat in silence
    until the 4 s watchdog answered it, with a warning. Leaving the block answers it empty at
    once (jambonz carries on with its program)."""
    left = trio.Event()

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            await convo.gather("Say something")
        left.set()
        await call.wait_closed()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        t0 = trio.current_time()
        ack = await fc.gather_speech("/jt/gather/1", "yes")
        waited = trio.current_time() - t0
        assert left.is_set()
        assert ack.verbs == []
        assert waited < 1.0, f"the gather's hook was answered only after {waited:.1f} s (the watchdog)"
        await fc.hangup()


async def test_a_block_left_by_cancellation_still_answers_the_kept_hook(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The same when the block is left because its scope is cancelled (a shutdown, a deadline):
    the answer is shielded, so it still goes out at once, and the block is left."""
    scopes: list[trio.CancelScope] = []
    left = trio.Event()

    async def app(call: Call) -> None:
        with trio.CancelScope() as scope:
            async with open_conversation(call) as convo:
                await convo.gather("Say something")
                scopes.append(scope)
                await trio.sleep_forever()
        left.set()
        await call.wait_closed()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        async with trio.open_nursery() as inner:
            acks: list[Any] = []

            async def hook() -> None:
                acks.append(await fc.gather_speech("/jt/gather/1", "yes"))

            inner.start_soon(hook)
            t0 = trio.current_time()
            await trio.testing.wait_all_tasks_blocked()
            assert scopes, "the gather did not return"
            scopes[0].cancel()
        waited = trio.current_time() - t0
        assert left.is_set()
        assert acks[0].verbs == []
        assert waited < 1.0, f"the gather's hook was answered only after {waited:.1f} s (the watchdog)"
        await fc.hangup()


async def test_leaving_the_block_before_any_operation_leaves_session_new_to_the_app(
    nursery: trio.Nursery,
) -> None:
    """Only a hook the conversation kept is answered on leaving: an unanswered ``session:new``
    stays the app's to answer (an empty answer would be invalid)."""

    async def app(call: Call) -> None:
        async with open_conversation(call):
            pass
        await call.ack(call.session, [Say(text="Hello")])
        await call.wait_closed()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        ack = await fc.start()
        assert [v.VERB for v in ack.verbs] == ["say"]
        await fc.hangup()


# -- a drop right after the conversation's redirect was written ---------------------------------


async def test_an_operation_whose_redirect_a_drop_lost_is_sent_again_after_the_reconnect(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The ``say`` is done; the ``gather`` goes out as a queued ``redirect`` and the connection
    dies after jambonz read its first byte (the app's write succeeded). jambonz never saw the
    gather: once reconnected, the conversation sends it again (it used to wait for ever for a
    hook that could not come; examples/ivr_conversation.py lost ~1 call in 40 this way)."""
    results: list[str | None] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            await convo.say("Hello")
            results.append((await convo.gather("Say something")).transcript)
            await convo.hangup()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.wait_idle(0.5)  # the answer's receipt Ping came back: session:new is settled
        await fc.verb_status("starting", id="jt-1", name="say")
        fc.cut(after_received=1)  # the app's next frame (the gather's redirect) dies in flight
        await fc.verb_status("finished", id="jt-1", name="say")
        with trio.fail_after(10):
            redirect = await fc.expect_command(RedirectCommand)
        assert fc.connection_count == 2  # sent on the new socket, after the reconnect
        assert [v.VERB for v in redirect.verbs] == ["gather"] and not redirect.queue
        ack = await fc.gather_speech("/jt/gather/2", "yes")
        assert [v.VERB for v in ack.verbs] == ["hangup"]
        await fc.hangup()
    assert results == ["yes"]


class _MovesOn:
    """An app whose ``gather`` (after ``first``) is cancelled from the test (or, with
    ``cancel_on_disconnect``, by the app as soon as it reads ``Disconnected``), then, ``busy``
    seconds later, says "Moving on"; :meth:`moves_on` checks that only the ``say`` goes out
    after the reconnect, replacing the program."""

    def __init__(
        self,
        first: Callable[[Conversation], Awaitable[object]],
        *,
        cancel_on_disconnect: bool = False,
        busy: float = 0,
    ) -> None:
        self.first = first
        self.cancel_on_disconnect = cancel_on_disconnect
        self.busy = busy
        self.scopes: list[trio.CancelScope] = []
        self.moved_on, self.said = trio.Event(), trio.Event()

    async def __call__(self, call: Call) -> None:
        async with open_conversation(call) as convo, trio.open_nursery() as inner:
            if self.cancel_on_disconnect:
                inner.start_soon(self._cancel_on_disconnect, convo)
            await self.first(convo)
            with trio.CancelScope() as scope:
                self.scopes.append(scope)
                await convo.gather("Say something")
            self.moved_on.set()
            if self.busy:
                await trio.sleep(self.busy)  # the app does something else first
            await convo.say("Moving on")
            self.said.set()
            await call.wait_closed()
            inner.cancel_scope.cancel()

    async def _cancel_on_disconnect(self, convo: Conversation) -> None:
        while True:
            if isinstance(await convo.next_event(), Disconnected) and self.scopes:
                self.scopes[0].cancel()  # the caller's line is flaky: give up on the question

    async def cancel_while_down(self, fc: FakeCall) -> None:
        await fc.wait_idle(1)
        assert self.scopes and not fc.connected
        self.scopes[0].cancel()  # e.g. the app's own deadline for an answer
        await self.moves_on(fc)

    async def moves_on(self, fc: FakeCall) -> None:
        with trio.fail_after(5):
            await self.moved_on.wait()
        await fc.wait_idle(1)
        await fc.reconnect()
        await fc.wait_idle(5)
        after = [c.command for c in fc.commands if c.connection == 2]
        redirects = [c for c in after if isinstance(c, RedirectCommand)]
        assert [[v.VERB for v in c.verbs] for c in redirects] == [["say"]]
        assert not redirects[0].queue  # replaces the gather, had jambonz read it after all


async def test_an_operation_cancelled_while_the_socket_is_down_is_not_sent_again_after_the_reconnect(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The gather's redirect dies in flight; the app cancels the gather while the socket is
    down (nothing can be killed then) and moves on to a ``say``. Once jambonz reconnects, the
    cancelled gather is not sent again (it was: a replay replaces the program, so the caller
    heard the cancelled prompt and the ``say`` waited behind the gather's timeout); the ``say``
    replaces whatever jambonz may still run of the gather, and completes."""
    app = _MovesOn(lambda convo: convo.say("Hello"))
    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.wait_idle(0.5)
        await fc.verb_status("starting", id="jt-1", name="say")
        fc.cut(after_received=1, reconnect=False)  # the gather's redirect dies in flight
        await fc.verb_status("finished", id="jt-1", name="say")
        await app.cancel_while_down(fc)
        await fc.verb_status("finished", id="jt-3", name="say")
        with trio.fail_after(1):
            await app.said.wait()
        await fc.hangup()


async def test_an_operation_cancelled_while_its_unconfirmed_ack_waits_is_not_sent_again(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The same when the gather went out as the ack of the ``play``'s hook: that ack dies in
    flight (``AckUnconfirmed``), the app cancels the gather while the socket is down and moves
    on; after the reconnect only the ``say`` goes out."""
    app = _MovesOn(lambda convo: convo.play("https://example.com/hello.wav"))
    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await _lose_the_ack_carrying_the_gather(fc)
        await app.cancel_while_down(fc)
        await fc.hangup()


async def _lose_the_ack_carrying_the_gather(fc: FakeCall, *, owed_hooks: int = 0) -> None:
    """Start the call; the ack of the ``play``'s hook, carrying the ``gather``, dies in flight
    (``AckUnconfirmed``). ``owed_hooks`` foreign hooks the app owes at the drop are abandoned
    too: their ``HookAbandoned`` events come before the ``AckUnconfirmed``."""
    await fc.start()
    await fc.wait_idle(0.5)
    async with trio.open_nursery() as hooks:

        async def foreign(n: int) -> None:
            with pytest.raises(AckAbandoned):  # owed when the socket drops
                await fc.hook(f"/elsewhere/{n}", {})

        for n in range(owed_hooks):
            hooks.start_soon(foreign, n)
        await fc.wait_idle(0.1)
        fc.cut(after_received=1, reconnect=False)  # the ack carrying the gather dies in flight
        with pytest.raises(AckAbandoned):
            await fc.hook("/jt/play/1", {"reason": "playCompleted"})


async def test_an_operation_cancelled_on_the_disconnected_event_is_not_sent_again_after_the_reconnect(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The same when the app cancels the gather as soon as it reads ``Disconnected``: that is
    before the conversation handles the drop's ``AckUnconfirmed`` for the gather's ack, queued
    behind the ``HookAbandoned`` of the hooks the app owed at the drop (here five foreign ones).
    The cancelled gather is still known as an operation that is over, and not sent again."""
    app = _MovesOn(lambda convo: convo.play("https://example.com/hello.wav"), cancel_on_disconnect=True)
    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await _lose_the_ack_carrying_the_gather(fc, owed_hooks=5)
        await app.moves_on(fc)
        await fc.hangup()


async def test_the_operation_after_a_kill_lost_in_a_drop_replaces_the_cancelled_verb(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The gather is running (jambonz read its redirect) when the app cancels it, the socket
    still up: the killing ``redirect([])`` is written but the socket dies with it in flight
    (``CommandUnconfirmed``). jambonz may still run the gather, so the next operation's ``say``
    must replace it after the reconnect, not be appended behind it (it then waited for the
    gather's timeout)."""
    app = _MovesOn(lambda convo: convo.say("Hello"), busy=0.5)
    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.wait_idle(0.5)
        await fc.verb_status("starting", id="jt-1", name="say")
        await fc.verb_status("finished", id="jt-1", name="say")
        await fc.wait_idle(0.5)
        gathers = [c.command for c in fc.commands if isinstance(c.command, RedirectCommand)]
        assert [[v.VERB for v in c.verbs] for c in gathers] == [["gather"]]  # jambonz runs it
        fc.cut(after_received=1, reconnect=False)  # the kill's redirect dies in flight
        app.scopes[0].cancel()
        await app.moves_on(fc)
        await fc.hangup()


async def test_a_hangup_a_drop_lost_is_sent_again_after_the_reconnect(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """``convo.hangup()`` written as a ``redirect`` just before the connection dies, unread:
    it goes out again on the new socket instead of leaving the call silent for ever."""
    ended = trio.Event()

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            await convo.say("Bye")
            await convo.hangup()
        ended.set()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.wait_idle(0.5)
        fc.cut(after_received=1)
        await fc.verb_status("finished", id="jt-1", name="say")
        with trio.fail_after(10):
            redirect = await fc.expect_command(RedirectCommand)
        assert fc.connection_count == 2
        assert [v.VERB for v in redirect.verbs] == ["hangup"]
        await fc.hangup(by="jambonz")
    with trio.fail_after(1):
        await ended.wait()


async def test_call_hangup_a_drop_lost_is_sent_again_after_the_reconnect(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """``call.hangup()`` (``call:status`` ``completed``) written just before the connection dies
    and not seen read: the library sends it again once jambonz reconnects (a hangup jambonz
    did read ends the call, so it never reconnects to receive it twice)."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="Hello")])
        await call.wait_session_acked()
        async for event in call:
            if isinstance(event, CallStatus) and event.call_status == "in-progress":
                await call.hangup()

    server = await serve(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.wait_idle(0.5)
        fc.cut(after_received=1)
        await fc.status("in-progress")
        with trio.fail_after(10):
            command = await fc.expect_command(CallStatusCommand)
        assert fc.connection_count == 2 and command.call_status == "completed"
        await fc.hangup(by="jambonz")
