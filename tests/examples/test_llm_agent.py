"""examples/llm_agent.py: greeting, the llm verb, tool calls answered with llm:tool-output."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from examples import llm_agent
from jambonz_trio import JambonzServer
from jambonz_trio.commands import LlmToolOutputCommand, RedirectCommand
from jambonz_trio.testing import (
    Caller,
    Connector,
    ExpectationFailed,
    ToolCallScript,
    open_fake_call,
    run_call,
    tcp_connector,
)
from jambonz_trio.verbs import Hangup, Llm, Say, Verb

from .helpers import capture_serve


def function_output(command: LlmToolOutputCommand) -> Any:
    """The tool's result inside OpenAI's ``conversation.item.create`` payload."""
    assert command.data["type"] == "conversation.item.create"
    item = command.data["item"]
    assert item["type"] == "function_call_output" and item["call_id"] == command.tool_call_id
    return json.loads(item["output"])


@pytest.fixture
async def server(nursery: trio.Nursery) -> JambonzServer:
    started: JambonzServer = await nursery.start(partial(llm_agent.serve, port=0))
    return started


async def talk(
    connector: Connector, *tools: tuple[str, str, Any], reason: str = "normal conversation end"
) -> tuple[list[str], Llm, list[LlmToolOutputCommand]]:
    """Place a call where the model calls ``tools`` (id, name, args) and then ends the session.

    Plays the call like jambonz: each ``say`` finishes (``verb:status``), the ``llm`` verb
    sends the tool calls and collects the outputs, then its action hook fires. Returns what
    the caller heard, the llm verb and the tool outputs.
    """
    said: list[str] = []
    outputs: list[LlmToolOutputCommand] = []

    async def play_say(verbs: Sequence[Verb]) -> None:
        say = verbs[-1]
        assert isinstance(say, Say) and isinstance(say.text, str)
        said.append(say.text)
        await fc.verb_status("finished", id=say.id, name="say")

    async with open_fake_call(connector, path=llm_agent.PATH) as fc:
        await play_say((await fc.start()).verbs)
        llm = (await fc.expect_command(RedirectCommand)).verbs[0]
        assert isinstance(llm, Llm) and llm.tool_hook is not None
        for tool_call_id, name, args in tools:
            await fc.llm_tool_call(str(llm.tool_hook), tool_call_id, name, args)
            outputs.append(await fc.expect_command(LlmToolOutputCommand))
        await play_say(
            (await fc.hook(str(llm.action_hook), {"completion_reason": reason}, verb_id=llm.id)).verbs
        )
        assert (await fc.expect_command(RedirectCommand)).verbs == (Hangup(),)
        await fc.hangup(by="jambonz")
    assert fc.violations == []
    return said, llm, outputs


async def test_weather_tool_call_is_answered_with_canned_data(server: JambonzServer) -> None:
    said, _, outputs = await talk(
        server.connect_memory,
        ("call_1", "get_weather", {"city": "Paris"}),
        ("call_2", "get_weather", {"city": "Atlantis"}),
    )
    assert [o.tool_call_id for o in outputs] == ["call_1", "call_2"]
    assert function_output(outputs[0]) == {"city": "Paris", "temperature_c": 21, "sky": "sunny"}
    assert function_output(outputs[1]) == {"city": "Atlantis", "error": "no weather data for this city"}
    assert said == ["Hello from jambonz. Ask me about the weather.", "Thanks for calling. Goodbye."]


async def test_unknown_tool_gets_an_error_output(server: JambonzServer) -> None:
    _, _, [output] = await talk(server.connect_memory, ("call_9", "book_flight", {"to": "Rome"}))
    assert output.tool_call_id == "call_9"
    assert function_output(output) == {"error": "unknown tool book_flight"}


async def test_the_llm_verb(server: JambonzServer) -> None:
    _, llm, _ = await talk(server.connect_memory)
    assert (llm.vendor, llm.model, llm.auth) == ("openai", llm_agent.MODEL, None)
    assert llm.llm_options["response_create"]["instructions"] == llm_agent.INSTRUCTIONS
    assert llm.llm_options["session_update"]["tools"][0]["name"] == "get_weather"
    assert llm.events == ["response.audio_transcript.done"]
    assert llm.tool_hook and llm.event_hook and llm.action_hook  # set by the conversation


async def test_model_events_are_logged_and_the_greeting_comes_first(
    server: JambonzServer, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.INFO, logger="llm_agent")
    async with open_fake_call(server.connect_memory, path=llm_agent.PATH) as fc:
        ack = await fc.start()
        greeting = ack.verbs[-1]
        assert greeting == Say(text="Hello from jambonz. Ask me about the weather.", id=greeting.id)
        await fc.expect_no_command(within=1)  # the llm verb waits for the greeting to finish
        await fc.verb_status("finished", id=greeting.id, name="say")

        llm = (await fc.expect_command(RedirectCommand)).verbs[0]
        assert isinstance(llm, Llm)

        await fc.llm_event(
            str(llm.event_hook), {"type": "response.audio_transcript.done", "transcript": "Hi!"}
        )
        await fc.llm_tool_call(str(llm.tool_hook), "call_3", "get_weather", {"city": "tokyo"})
        output = await fc.expect_command(LlmToolOutputCommand)
        assert function_output(output) == {"city": "tokyo", "temperature_c": 26, "sky": "humid, cloudy"}

        ack = await fc.hook(
            str(llm.action_hook), {"completion_reason": "normal conversation end"}, verb_id=llm.id
        )
        assert [v.text for v in ack.verbs if isinstance(v, Say)] == ["Thanks for calling. Goodbye."]
        await fc.verb_status("finished", id=ack.verbs[0].id, name="say")
        assert (await fc.expect_command(RedirectCommand)).verbs == (Hangup(),)
        await fc.hangup(by="jambonz")
    messages = [r.getMessage() for r in caplog.records if r.name == "llm_agent"]
    assert "agent said: Hi!" in messages
    assert any("model session ended (normal conversation end)" in m for m in messages)


async def test_caller_hanging_up_during_the_model_session(
    server: JambonzServer, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.INFO)
    async with open_fake_call(server.connect_memory, path=llm_agent.PATH) as fc:
        greeting = (await fc.start()).verbs[-1]
        await fc.verb_status("finished", id=greeting.id, name="say")
        assert isinstance((await fc.expect_command(RedirectCommand)).verbs[0], Llm)
        call = server.calls[fc.call.call_sid]
        await fc.hangup()  # while talking to the model
        await call.wait_closed()
    assert any(r.getMessage().endswith(": the caller hung up") for r in caplog.records)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_over_tcp_with_an_api_key(nursery: trio.Nursery) -> None:
    server: JambonzServer = await nursery.start(partial(llm_agent.serve, port=0, api_key="sk-test"))
    url = f"ws://127.0.0.1:{server.port}{llm_agent.PATH}"
    with trio.fail_after(10):
        said, llm, [output] = await talk(tcp_connector(url), ("call_1", "get_weather", {"city": "London"}))
    assert llm.auth == {"apiKey": "sk-test"}
    assert function_output(output)["sky"] == "light rain"
    assert said[-1] == "Thanks for calling. Goodbye."


async def test_run_call_can_play_the_agent(server: JambonzServer) -> None:
    failure: ExpectationFailed | None = None
    async with open_fake_call(server.connect_memory, path=llm_agent.PATH, strict=False) as fc:
        try:
            await run_call(fc, Caller(tool_calls=[ToolCallScript("get_weather", {"city": "Paris"})]))
        except ExpectationFailed as exc:
            failure = exc  # leave the block normally: the fake hangs up cleanly
    if failure is not None:
        raise failure
    [output] = [c.command for c in fc.commands if isinstance(c.command, LlmToolOutputCommand)]
    assert function_output(output)["city"] == "Paris"


def test_main_takes_the_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    seen = capture_serve(monkeypatch, llm_agent)
    llm_agent.main(["--port", "9001"])
    assert seen == {"host": "127.0.0.1", "port": 9001, "api_key": "sk-env"}
    llm_agent.main(["--api-key", "sk-flag"])
    assert seen["api_key"] == "sk-flag"
