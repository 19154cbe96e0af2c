"""A conversation's LLM work is bounded: tool handlers in flight, queued tool calls and queued
``llm:event`` callbacks (before, every ``llm:tool-call`` and every ``llm:event`` started a task
of its own: a peer sending 10,000 of them started 10,000 tasks)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from jambonz_trio import Call, JambonzServer, open_conversation, serve_jambonz
from jambonz_trio.commands import LlmToolOutputCommand
from jambonz_trio.llm import tool_output
from jambonz_trio.messages import LlmEvent, ToolCall
from jambonz_trio.testing import FakeCall, open_fake_call
from jambonz_trio.verbs import Llm

TOOL_HOOK = "/jt/tool/1"
EVENT_HOOK = "/jt/llm-event/1"
VERB = Llm(vendor="openai", model="gpt-4o-realtime-preview", llm_options={"instructions": "help"})


class Agent:
    """An llm verb whose tool handler and event callback wait for :attr:`release`."""

    def __init__(self, **limits: int) -> None:
        self.limits = limits
        self.release = trio.Event()
        self.running = 0
        self.peak = 0
        self.tools_started: list[str] = []
        self.events: list[Any] = []
        self.convo: Any = None

    async def tool(self, tc: ToolCall) -> dict[str, Any]:
        self.tools_started.append(tc.tool_call_id or "")
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return tool_output("openai", tc, "ok")

    async def on_event(self, event: LlmEvent) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.release.wait()
            self.events.append(event.data["n"])
        finally:
            self.running -= 1

    async def __call__(self, call: Call) -> None:
        async with open_conversation(call, **self.limits) as convo:
            self.convo = convo
            await convo.llm(VERB, on_tool_call=self.tool, on_event=self.on_event)
            await call.wait_closed()


def _outputs(fc: FakeCall) -> list[str]:
    return [c.command.tool_call_id for c in fc.commands if isinstance(c.command, LlmToolOutputCommand)]


async def test_tool_handlers_in_flight_and_queued_are_bounded(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """100 tool calls at once, default limits (8 in flight, 32 queued): 8 handlers run, 32
    wait and run in order of arrival as slots free, 60 are dropped (counted, a few warning
    lines). Before: 100 handlers at once."""
    agent = Agent()
    server: JambonzServer = await nursery.start(serve_jambonz, agent)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        for i in range(100):
            await fc.llm_tool_call(TOOL_HOOK, f"c{i}", "lookup")
        await fc.wait_idle(1)
        assert agent.peak == 8 and agent.tools_started == [f"c{i}" for i in range(8)]
        assert agent.convo.tool_calls_dropped == 60
        assert caplog.text.count("dropped") <= 6  # rate-limited: 5 lines, then one per 10 s
        agent.release.set()
        await fc.wait_idle(1)
        assert agent.tools_started == [f"c{i}" for i in range(40)]  # the queue is FIFO
        assert sorted(_outputs(fc)) == sorted(f"c{i}" for i in range(40))
        assert agent.peak == 8
        await fc.hangup()


async def test_a_queued_tool_call_past_its_deadline_is_not_started(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A tool call's time (4 ack deadlines, 16 s) counts from its arrival: one that waited in
    the queue that long is given up without calling the handler (the model stopped waiting)."""
    agent = Agent(max_tool_calls=1, max_queued_tool_calls=4)
    server: JambonzServer = await nursery.start(serve_jambonz, agent)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        for i in range(3):
            await fc.llm_tool_call(TOOL_HOOK, f"c{i}", "lookup")
        with caplog.at_level(logging.WARNING):
            await fc.wait_idle(20)
        assert agent.tools_started == ["c0"]  # timed out after 16 s; c1 and c2 expired queued
        assert caplog.text.count("got no answer in time") == 3
        assert _outputs(fc) == []
        await fc.hangup()


async def test_llm_events_run_one_at_a_time_in_order_and_are_bounded(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """300 ``llm:event`` messages while the callback is busy: one callback at a time, in
    order; 256 wait (the default queue), the rest are dropped and counted."""
    agent = Agent()
    server: JambonzServer = await nursery.start(serve_jambonz, agent)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        for n in range(300):
            await fc.llm_event(EVENT_HOOK, {"type": "response.audio_transcript.delta", "n": n})
        await fc.wait_idle(1)
        assert agent.peak == 1
        assert agent.convo.llm_events_dropped == 300 - 1 - 256
        agent.release.set()
        await fc.wait_idle(1)
        assert agent.events == list(range(257))
        await fc.hangup()


async def test_limits_are_validated(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    refused: list[str] = []

    async def app(call: Call) -> None:
        for limits in ({"max_tool_calls": 0}, {"max_queued_tool_calls": -1}, {"max_queued_llm_events": -1}):
            with pytest.raises(ValueError, match="max_") as info:
                async with open_conversation(call, **limits):
                    pass
            refused.append(str(info.value))
        await call.hangup()

    server: JambonzServer = await nursery.start(serve_jambonz, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
    assert len(refused) == 3
