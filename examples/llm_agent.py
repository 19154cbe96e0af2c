"""A voice agent on OpenAI's realtime model (the ``llm`` verb), with a tool the app implements.

Run it::

    python examples/llm_agent.py --host 127.0.0.1 --port 8080 [--api-key sk-...]

and point a jambonz application's call hook at ``ws://<host>:8080/agent``. The API key
(flag, or ``OPENAI_API_KEY``) goes in the verb's ``auth``; without one, jambonz uses the
account's own OpenAI credential.

The caller is greeted with a ``say``, then talks to the model. jambonz runs the speech-to-speech
session; when the model calls ``get_weather``, jambonz sends ``llm:tool-call`` and the app
answers with ``llm:tool-output``. :meth:`Conversation.llm` routes the tool calls to
:func:`on_tool_call` (each in its own task, so a slow tool never blocks the call) and returns
when the model session ends; :func:`jambonz_trio.llm.tool_output` builds the payload shape
OpenAI wants (feature-server 0.9.8 passes it through to the vendor as is). The weather is
canned: no network. The model's spoken replies arrive as ``llm:event``s and are logged.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from typing import Any

import trio

from jambonz_trio import Call, CallClosed, JambonzServer, Route, open_conversation, serve_jambonz
from jambonz_trio.llm import tool_output
from jambonz_trio.messages import LlmEvent, ToolCall
from jambonz_trio.verbs import Llm

PATH = "/agent"
VENDOR = "openai"
MODEL = "gpt-4o-realtime-preview"
INSTRUCTIONS = (
    "You are a friendly weather assistant on a phone call. Keep answers short. "
    "Use the get_weather tool for any question about the weather in a city."
)
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name, e.g. Paris"}},
            "required": ["city"],
        },
    }
]
#: Canned weather, by lower-case city name.
WEATHER: dict[str, dict[str, Any]] = {
    "paris": {"temperature_c": 21, "sky": "sunny"},
    "london": {"temperature_c": 14, "sky": "light rain"},
    "tokyo": {"temperature_c": 26, "sky": "humid, cloudy"},
}

log = logging.getLogger("llm_agent")


def get_weather(city: str) -> dict[str, Any]:
    """The tool itself (a real app would call a weather service here)."""
    found = WEATHER.get(city.strip().lower())
    if found is None:
        return {"city": city, "error": "no weather data for this city"}
    return {"city": city, **found}


async def on_tool_call(tool_call: ToolCall) -> dict[str, Any]:
    """Answer one ``llm:tool-call``: the returned dict is sent as ``llm:tool-output``."""
    args = tool_call.args if isinstance(tool_call.args, dict) else {}
    if tool_call.name == "get_weather":
        return tool_output(VENDOR, tool_call, get_weather(str(args.get("city", ""))))
    return tool_output(VENDOR, tool_call, {"error": f"unknown tool {tool_call.name}"}, is_error=True)


async def on_event(event: LlmEvent) -> None:
    """Log what the model said (OpenAI realtime events, snake_cased by jambonz)."""
    if event.data.get("type") == "response.audio_transcript.done":
        log.info("agent said: %s", event.data.get("transcript"))


def llm_verb(api_key: str | None = None) -> Llm:
    """The ``llm`` verb; the conversation adds its action, tool and event hooks."""
    return Llm(
        vendor=VENDOR,
        model=MODEL,
        auth={"apiKey": api_key} if api_key else None,
        llm_options={
            "response_create": {"modalities": ["text", "audio"], "instructions": INSTRUCTIONS},
            "session_update": {"tools": TOOLS, "tool_choice": "auto"},
        },
        events=["response.audio_transcript.done"],
    )


async def agent(call: Call, *, api_key: str | None = None) -> None:
    """The call handler: greet, hand the call to the model, hang up when it is done."""
    async with open_conversation(call) as convo:
        try:
            await convo.say("Hello from jambonz. Ask me about the weather.")
            result = await convo.llm(llm_verb(api_key), on_tool_call=on_tool_call, on_event=on_event)
            log.info("call %s: model session ended (%s)", call.call_sid, result.completion_reason)
            await convo.say("Thanks for calling. Goodbye.")
            await convo.hangup()
        except CallClosed:  # the usual end: the caller hangs up while talking to the model
            log.info("call %s: the caller hung up", call.call_sid)


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    api_key: str | None = None,
    task_status: trio.TaskStatus[JambonzServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the agent on ``/agent`` until cancelled."""

    async def handler(call: Call) -> None:
        await agent(call, api_key=api_key)

    await serve_jambonz(Route(path=PATH, handler=handler), host=host, port=port, task_status=task_status)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"serving ws://{args.host}:{args.port}{PATH}", flush=True)
    trio.run(lambda: serve(host=args.host, port=args.port, api_key=args.api_key))


if __name__ == "__main__":
    main()
