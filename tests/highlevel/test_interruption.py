"""An outside task interrupts a conversation on purpose (issue 18 item 4).

jambonz 0.9.8 on a ``redirect`` command with verbs and ``queueCommand: false`` replaces the
program and kills the running verb (FS ``lib/session/call-session.js:2280-2303``,
``replaceApplication`` ``:2082-2137``); a killed gather resolves without calling its
actionHook (``lib/tasks/gather.js:354-365``, ``_resolve('killed')`` matches none of the
result reasons at ``:1389-1425``), and the session loop reports it ``finished`` all the same
(``lib/session/call-session.js:1378-1380``). Before the fix the handler stayed in
``convo.gather()`` forever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from jambonz_trio import (
    Call,
    CallConfig,
    DisconnectedCommands,
    JambonzServer,
    NotDelivered,
    OperationInterrupted,
    ServerConfig,
    open_conversation,
    serve_jambonz,
)
from jambonz_trio.commands import DtmfCommand, RedirectCommand
from jambonz_trio.testing import AckAbandoned, FakeCall, open_fake_call
from jambonz_trio.verbs import Gather, Say

from ..engine.helpers import SESSION_DATA, raw_client


class Agent:
    """A conversation that reports what happened to its gather, then says ``after`` and waits."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.interruptions: list[OperationInterrupted] = []
        self.go = trio.Event()
        self.pause_after_gather = False

    async def __call__(self, call: Call) -> None:
        async with open_conversation(call) as convo:
            try:
                result = await convo.gather("What is your question?")
                self.outcomes.append(f"answer {result.transcript}")
            except OperationInterrupted as exc:
                self.interruptions.append(exc)
                self.outcomes.append("interrupted")
            if self.pause_after_gather:
                await self.go.wait()
            await convo.say("after")
            await call.wait_closed()


@asynccontextmanager
async def in_gather(nursery: trio.Nursery, agent: Agent) -> AsyncIterator[tuple[FakeCall, Call]]:
    """A call whose conversation waits in its gather (``jt-1``); yields the fake and the call
    as another task of the server's process sees it."""
    server: JambonzServer = await nursery.start(serve_jambonz, agent)
    async with open_fake_call(server.connect_memory) as fc:
        gather = (await fc.start()).first(Gather)
        assert gather.id == "jt-1"
        yield fc, server.calls[fc.call.call_sid]


async def test_a_supervisors_redirect_interrupts_the_gather_in_progress(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    agent = Agent()
    async with in_gather(nursery, agent) as (fc, call):
        goodbye = [Say(text="A supervisor takes over. Goodbye")]
        await call.redirect(goodbye)  # from this task, not the handler's
        assert (await fc.expect_command(RedirectCommand)).verbs == tuple(goodbye)
        await fc.verb_status("finished", id="jt-1", name="gather")  # jambonz: the killed gather
        with trio.fail_after(120):  # virtual seconds: before the fix it waited for ever
            nxt = await fc.expect_command(RedirectCommand, within=120)
        assert agent.outcomes == ["interrupted"]
        exc = agent.interruptions[0]
        assert exc.operation == "gather" and isinstance(exc.command, RedirectCommand)
        # the conversation carries on: its next operation is appended to the new program
        assert nxt.queue and nxt.verbs == (Say(text="after", id="jt-2"),)
        await fc.hangup()


async def test_a_gather_jambonz_reports_finished_without_its_hook_was_killed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Killed by something the conversation did not send (another process, a
    ``redirect_legs(child_call=...)``): only jambonz's ``verb:status`` tells."""
    agent = Agent()
    async with in_gather(nursery, agent) as (fc, _call):
        await fc.verb_status("finished", id="jt-1", name="gather")
        nxt = await fc.expect_command(RedirectCommand, within=10)
        assert nxt.verbs == (Say(text="after", id="jt-2"),)
        assert agent.outcomes == ["interrupted"] and agent.interruptions[0].command is None
        await fc.hangup()


async def test_appending_from_another_task_interrupts_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    agent = Agent()
    async with in_gather(nursery, agent) as (fc, call):
        await call.redirect([Say(text="queued")], queue=True)
        await call.send_dtmf("1")  # not a redirect
        await fc.expect_command(RedirectCommand)
        await fc.expect_command(DtmfCommand)
        ack = await fc.gather_speech("/jt/gather/1", "hello")
        assert ack.verbs == [Say(text="after", id="jt-2")]
        assert agent.outcomes == ["answer hello"]
        await fc.hangup()


async def test_a_hook_result_followed_by_an_outside_redirect_is_released_not_answered(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The gather's result came, then a supervisor replaced the program before the handler's
    next operation: answering the hook with verbs would replace the supervisor's program in
    turn (an actionHook ack's verbs replace the application, FS ``lib/tasks/task.js:254-259``),
    so the hook is acked empty and the next operation is appended."""
    agent = Agent()
    agent.pause_after_gather = True
    async with in_gather(nursery, agent) as (fc, call), trio.open_nursery() as inner:
        acks = []

        async def answer() -> None:
            acks.append(await fc.gather_speech("/jt/gather/1", "hello"))

        inner.start_soon(answer)
        await trio.testing.wait_all_tasks_blocked()
        assert agent.outcomes == ["answer hello"]
        await call.redirect([Say(text="Goodbye")])
        agent.go.set()
        supervisor = await fc.expect_command(RedirectCommand)
        assert supervisor.verbs == (Say(text="Goodbye"),) and not supervisor.queue
        nxt = await fc.expect_command(RedirectCommand)
        assert nxt.queue and nxt.verbs == (Say(text="after", id="jt-2"),)
        await trio.testing.wait_all_tasks_blocked()
        assert [a.verbs for a in acks] == [[]]
        await fc.hangup()


async def test_the_conversations_own_cancellation_kill_is_not_an_interruption(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    outcomes: list[str] = []

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            with trio.move_on_after(3):
                await convo.gather("Quick")
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(3):
                    await convo.gather("Again")
            outcomes.append("cancelled twice")
            await call.wait_closed()

    server: JambonzServer = await nursery.start(serve_jambonz, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        kill = await fc.expect_command(RedirectCommand, within=10)
        assert kill.verbs == ()
        again = await fc.expect_command(RedirectCommand)
        assert isinstance(again.verbs[0], Gather)
        assert (await fc.expect_command(RedirectCommand, within=10)).verbs == ()
        await fc.wait_idle(1)
        assert outcomes == ["cancelled twice"]
        await fc.hangup()


async def test_an_outside_redirect_already_being_written_is_not_answered_over(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    """The supervisor's redirect is on its way out (the socket is slow) when the handler's next
    operation answers the gather's hook. Writes go out in the order they start, so the hook's
    ack reaches jambonz after the redirect: before the fix the conversation, told only once
    the redirect's write had ended, answered the hook with its verbs, which replaced the
    supervisor's program (FS ``lib/tasks/task.js:254-259``)."""
    agent = Agent()
    agent.pause_after_gather = True
    server: JambonzServer = await nursery.start(serve_jambonz, agent)
    # a write waits for our read; time stands still (no watchdog, however loaded the machine)
    async with raw_client(server, lockstep=True) as client:
        await client.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
        first = await client.receive()
        assert first is not None and first["type"] == "ack"
        speech = {"reason": "speechDetected", "speech": {"alternatives": [{"transcript": "hello"}]}}
        await client.send("verb:hook", "h1", speech, call_sid="sid-1", hook=first["data"][-1]["actionHook"])
        await trio.testing.wait_all_tasks_blocked()
        assert agent.outcomes == ["answer hello"]
        nursery.start_soon(server.calls["sid-1"].redirect, [Say(text="Goodbye")])
        await trio.testing.wait_all_tasks_blocked()  # the supervisor's write has started
        agent.go.set()
        await trio.testing.wait_all_tasks_blocked()  # the handler's next operation too
        supervisor, answer, nxt = [await client.receive() for _ in range(3)]
        assert supervisor is not None and supervisor["command"] == "redirect"
        assert supervisor["data"] == [{"verb": "say", "text": "Goodbye"}] and not supervisor["queueCommand"]
        assert answer == {"type": "ack", "msgid": "h1", "data": []}
        assert nxt is not None and nxt["command"] == "redirect" and nxt["queueCommand"]
        assert nxt["data"] == [{"verb": "say", "id": "jt-2", "text": "after"}]


async def test_a_redirect_that_cannot_start_out_interrupts_nothing(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    """jambonz has closed the socket (4000: it will reconnect) and the call has not noticed
    yet; with ``disconnected_commands=FAIL`` a supervisor's redirect raises ``NotDelivered``
    without a byte written. The gather still runs on jambonz: the conversation must keep
    waiting for it."""
    agent = Agent()
    config = ServerConfig(call=CallConfig(disconnected_commands=DisconnectedCommands.FAIL))
    server: JambonzServer = await nursery.start(partial(serve_jambonz, agent, config=config))
    async with raw_client(server, lockstep=True) as client:
        await client.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
        assert (await client.receive() or {}).get("type") == "ack"
        call = server.calls["sid-1"]
        await client.close(4000)
        await trio.testing.wait_all_tasks_blocked()  # the server's Close reply waits for our read
        with pytest.raises(NotDelivered) as info:
            await call.redirect([Say(text="Goodbye")])
        assert not info.value.maybe_sent
        await trio.testing.wait_all_tasks_blocked()
        assert agent.outcomes == []


async def test_a_late_answer_queued_behind_an_outside_redirect_does_not_replace_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The disconnected twin of the test above. The gather's result came, the socket dropped
    (jambonz abandons the hook), a supervisor's redirect waits for the reconnect, and then the
    handler's next operation answers the abandoned hook: a late answer goes out as a
    *replacing* redirect. Queued behind the supervisor's, it replaced the supervisor's program
    on the flush. The supervisor's queued redirect counts from when it is queued (FIFO: what
    the conversation queues later goes out after it), so the late answer is appended."""
    agent = Agent()
    agent.pause_after_gather = True
    async with in_gather(nursery, agent) as (fc, call), trio.open_nursery() as inner:

        async def answer() -> None:
            with pytest.raises(AckAbandoned):  # jambonz abandons the hook at the drop
                await fc.gather_speech("/jt/gather/1", "hello")

        inner.start_soon(answer)
        await trio.testing.wait_all_tasks_blocked()
        assert agent.outcomes == ["answer hello"]
        await fc.drop(reconnect=False)
        await trio.testing.wait_all_tasks_blocked()
        assert not fc.connected and call.state.name != "CONNECTED"
        goodbye = [Say(text="A supervisor takes over. Goodbye")]
        inner.start_soon(call.redirect, goodbye)  # waits for the reconnect
        await trio.testing.wait_all_tasks_blocked()
        agent.go.set()  # the next operation answers the abandoned hook: a late answer
        await trio.testing.wait_all_tasks_blocked()
        await fc.reconnect()
        supervisor = await fc.expect_command(RedirectCommand)
        assert supervisor.verbs == tuple(goodbye) and not supervisor.queue
        nxt = await fc.expect_command(RedirectCommand)
        assert nxt.verbs == (Say(text="after", id="jt-2"),)
        assert nxt.queue  # appended after the supervisor's program; before the fix it replaced it
        await fc.hangup()


@pytest.mark.parametrize("grouped", [False, True])
async def test_a_handler_that_lets_the_interruption_out_leaves_the_supervisors_program_alone(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, grouped: bool
) -> None:
    """Before: a handler that did not catch ``OperationInterrupted`` failed, and the fallback
    verbs (a hang-up) went out as a *replacing* ``redirect``: the supervisor's program never
    played, the caller was hung up, and the supervisor had been told "ok". The program was
    replaced on purpose by this process (``exc.command``), so jambonz has one to run: the
    call closes with 1000 as when the handler returns (jambonz plays the new program, then
    hangs up), without the fallback."""

    async def careless(call: Call) -> None:
        async with open_conversation(call) as convo:
            if grouped:  # (a nursery in the handler wraps it in an ExceptionGroup)
                async with trio.open_nursery() as inner:
                    inner.start_soon(convo.gather, "What is your question?")
            else:
                await convo.gather("What is your question?")  # never catches the interruption
            await convo.say("unreachable")

    server: JambonzServer = await nursery.start(serve_jambonz, careless)
    async with open_fake_call(server.connect_memory) as fc:
        assert (await fc.start()).first(Gather).id == "jt-1"
        takeover = [Say(text="A supervisor takes over")]
        await server.calls[fc.call.call_sid].redirect(takeover)
        assert (await fc.expect_command(RedirectCommand)).verbs == tuple(takeover)
        await fc.verb_status("finished", id="jt-1", name="gather")
        closed = await fc.expect_close(1000, within=10)
        assert closed.reason == "handler finished"
        assert [c.command for c in fc.commands if isinstance(c.command, RedirectCommand)] == [
            RedirectCommand(verbs=tuple(takeover))
        ]


async def _drain_events(call: Call) -> None:
    while True:
        await call.next_event()  # raises CallClosed once the call is over and drained


async def test_a_handler_whose_tasks_all_end_with_the_call_is_not_a_failure(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """jambonz ends the call while a handler waits in two tasks of its own nursery: both raise
    ``CallClosed``, grouped. That is the call's own end, as for a lone ``CallClosed``. Before,
    the group counted as a crash: an ERROR with a traceback ("handler raised"), fallback verbs
    sent to a closed call, and a re-raise in strict mode."""

    async def two_waits(call: Call) -> None:
        await call.ack(call.session, [Say(text="hello")])
        async with trio.open_nursery() as inner:
            for _ in range(2):
                inner.start_soon(_drain_events, call)

    server: JambonzServer = await nursery.start(
        partial(serve_jambonz, two_waits, config=ServerConfig(call=CallConfig(strict=True)))
    )
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.hangup()
    await trio.testing.wait_all_tasks_blocked()
    assert "handler raised" not in caplog.text
    assert server.statistics().calls == 0
