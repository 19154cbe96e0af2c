"""A long-running support line with an operator console on stdin.

Run it::

    python examples/supervisor.py --host 127.0.0.1 --port 8080 --agent +15557654321

and point a jambonz application's call hook at ``ws://<host>:8080/support``. Each caller is
asked what the call is about, then connected to the agent (``dial``). Meanwhile the operator
types commands on stdin, acting on live calls from outside their handlers, through the
server's registry (``server.calls``)::

    list                          live calls: sid, caller, state, topic
    mute <call_sid>               mute the caller's leg during the dial (mute:status)
    unmute <call_sid>
    whisper <call_sid> <text>     say <text> to the agent's leg only (whisper)
    hangup <call_sid>             end the call (call:status completed)
    help

The console is :func:`control`: it takes any async iterable of lines, so tests feed it from
memory; :class:`StdinLines` is the one the program uses. The call handler catches
:class:`~jambonz_trio.CallClosed`, the normal way out when the operator (or the caller) hangs up
while it awaits a verb. Per-call data the operator sees (the topic) lives in
``call.user_data``, readable from any task.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import AsyncIterable, Callable, Sequence

import trio

from jambonz_trio import (
    BasicAuth,
    Call,
    CallClosed,
    JambonzServer,
    JambonzTrioError,
    Route,
    open_conversation,
    serve_jambonz,
)
from jambonz_trio.verbs import Say, Target

PATH = "/support"
DEFAULT_AGENT = "+15557654321"
#: How long an operator command may wait (e.g. for a disconnected call to come back).
COMMAND_TIMEOUT = 5.0
HELP = "commands: list | mute <call_sid> | unmute <call_sid> | whisper <call_sid> <text> | hangup <call_sid>"

log = logging.getLogger("supervisor")

Reply = Callable[[str], None]


async def support_line(call: Call, *, agent: Target) -> None:
    """The call handler: ask what the call is about, then connect the caller to the agent."""
    async with open_conversation(call) as convo:
        try:
            await convo.say("Hello from jambonz. This call may be monitored.")
            topic = await convo.gather("In a few words, what is your call about?", input_timeout=10)
            call.user_data["topic"] = topic.transcript or topic.digits or "(no answer)"
            await convo.say("Connecting you to an agent.")
            result = await convo.dial(agent, ring_timeout=30)
            if result.dial_call_status != "completed":
                await convo.say("Sorry, no agent is available. Please call again later.")
            await convo.hangup()
        except CallClosed:
            log.info("call %s ended (%s)", call.call_sid, call.close_info)


def describe(call: Call) -> str:
    """One ``list`` line."""
    topic = call.user_data.get("topic", "-")
    return f"{call.call_sid}  {call.from_} -> {call.to}  {call.state.value}  topic: {topic}"


async def execute(server: JambonzServer, line: str) -> str:
    """Run one console command against the server's live calls; returns the reply."""
    words = line.split(maxsplit=2)
    if not words:
        return ""
    command, args = words[0].lower(), words[1:]
    if command == "list":
        return "\n".join(describe(call) for call in server.calls.values()) or "no live calls"
    if command == "help" or command not in ("mute", "unmute", "whisper", "hangup") or not args:
        return HELP
    if command == "whisper" and len(args) < 2:
        return "usage: whisper <call_sid> <text>"
    call = server.calls.get(args[0])
    if call is None:
        return f"no live call {args[0]}"
    try:
        with trio.fail_after(COMMAND_TIMEOUT):
            if command == "mute":
                await call.mute()
            elif command == "unmute":
                await call.unmute()
            elif command == "whisper":
                await call.whisper([Say(text=args[1])])
            else:
                await call.hangup()
    except (JambonzTrioError, trio.TooSlowError) as exc:
        return f"{command} {call.call_sid}: failed ({type(exc).__name__}: {exc})"
    return f"{command} {call.call_sid}: ok"


async def control(server: JambonzServer, lines: AsyncIterable[str], reply: Reply = print) -> None:
    """The operator console: one command per line, until ``lines`` ends."""
    async for line in lines:
        answer = await execute(server, line)
        if answer:
            reply(answer)


class StdinLines:
    """The lines typed on stdin, as an async iterator (read in a worker thread)."""

    def __aiter__(self) -> StdinLines:
        return self

    async def __anext__(self) -> str:
        line: str = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line:
            raise StopAsyncIteration
        return line


def agent_target(agent: str) -> Target:
    """``sip:...`` dials a SIP URI; anything else a phone number."""
    if agent.startswith("sip:"):
        return Target(type="sip", sip_uri=agent)
    return Target(type="phone", number=agent)


def route(agent: str, username: str | None = None, password: str | None = None) -> Route:
    """The ``/support`` application, with Basic auth when both credentials are given."""
    auth = BasicAuth(username=username, password=password) if username and password else None
    handler = functools.partial(support_line, agent=agent_target(agent))
    return Route(path=PATH, handler=handler, auth=auth)


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    agent: str = DEFAULT_AGENT,
    username: str | None = None,
    password: str | None = None,
    commands: AsyncIterable[str] | None = None,
    reply: Reply = print,
    task_status: trio.TaskStatus[JambonzServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the support line, and the console on ``commands`` if given, until cancelled.

    The server outlives the console: when ``commands`` ends (stdin closed), calls go on.
    """
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_jambonz(
                route(agent, username, password), host=host, port=port, task_status=task_status
            )
        )
        if commands is not None:
            nursery.start_soon(control, server, commands, reply)
        task_status.started(server)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (credentials default to ``JAMBONZ_WS_USERNAME`` / ``_PASSWORD``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--agent", default=DEFAULT_AGENT, help="number or sip: URI to connect to")
    parser.add_argument("--username", default=os.environ.get("JAMBONZ_WS_USERNAME"))
    parser.add_argument("--password", default=os.environ.get("JAMBONZ_WS_PASSWORD"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"serving ws://{args.host}:{args.port}{PATH}; {HELP}", flush=True)
    trio.run(
        lambda: serve(
            host=args.host,
            port=args.port,
            agent=args.agent,
            username=args.username,
            password=args.password,
            commands=StdinLines(),
            reply=lambda text: print(text, flush=True),
        )
    )


if __name__ == "__main__":
    main()
