"""``python -m jambonz_trio``: run a demo call, or simulate jambonz against any app.

``demo`` runs the IVR of ``examples/ivr.py`` in this process and plays scripted calls against
it through the fake jambonz (no sockets, no jambonz). ``simulate`` drives any jambonz WebSocket
app - written with this library or not - through a call over a real socket.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import trio

from ._protocol._outbound import CallStatusCommand, Command, Redirect
from ._protocol._verbs import Dial, Gather, Hangup, Pause, Play, Say, SipDecline
from ._protocol._verbs_base import Verb
from .testing import (
    AckRecord,
    CallData,
    ConnectFailed,
    FakeCall,
    FakeJambonzError,
    HandshakeRejected,
    SubprotocolMissing,
    open_fake_call,
    tcp_connector,
)

__all__ = ["describe_command", "describe_verb", "main"]


def describe_verb(verb: Verb) -> str:
    """One readable line for a verb."""
    if isinstance(verb, Say):
        text = verb.text if isinstance(verb.text, str) else " | ".join(verb.text or [])
        return f'say "{text}"'
    if isinstance(verb, Play):
        return f"play {verb.url}"
    if isinstance(verb, Pause):
        return f"pause {verb.length}s"
    if isinstance(verb, Gather):
        inputs = "+".join(verb.input or ["digits"])
        prompt = f", prompt: {describe_verb(verb.say)}" if verb.say is not None else ""
        return f"gather {inputs} -> {_hook_name(verb.action_hook)} (timeout {verb.timeout}s{prompt})"
    if isinstance(verb, Dial):
        return f"dial {len(verb.target)} target(s) -> {_hook_name(verb.action_hook)}"
    if isinstance(verb, SipDecline):
        return f"sip:decline {verb.status}"
    if isinstance(verb, Hangup):
        return "hangup"
    return verb.VERB


def _hook_name(hook: Any) -> str:
    return str(getattr(hook, "url", hook))


def describe_command(command: Command) -> str:
    """One readable line for a command."""
    wire = command.to_wire()
    data = wire.get("data")
    if isinstance(command, Redirect):
        how = "append" if command.queue else "replace"
        return f"redirect ({how}): " + "; ".join(describe_verb(v) for v in command.verbs)
    if isinstance(command, CallStatusCommand):
        return f"call:status {command.call_status}"
    return f"{wire['command']} {data}" if data is not None else str(wire["command"])


class Printer:
    """Prints the call, one line per step, as a person would tell it."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def line(self, who: str, text: str) -> None:
        print(f"  {who:<8} {text}", file=self.out, flush=True)

    def ack(self, ack: AckRecord) -> None:
        if not ack.verbs:
            self.line("app", "(acked, no change)")
        for verb in ack.verbs:
            self.line("app", describe_verb(verb))

    def commands(self, fc: FakeCall, seen: int) -> int:
        for record in fc.commands[seen:]:
            self.line("command", describe_command(record.command))
        return len(fc.commands)


# -- the caller's side ----------------------------------------------------------------------

Answer = Callable[[Gather], "str | None"]  # returns speech, "dtmf:123", or None for silence


async def play_call(
    fc: FakeCall, answer: Answer, printer: Printer, *, idle: float = 2.0, speaking: float = 0.05
) -> None:
    """Walk the program jambonz would run: speak (``speaking`` seconds per say/play/pause),
    gather (asking ``answer``), follow redirects, and hang up when the app does (or, after
    ``idle`` seconds with nothing left to run, as the caller)."""
    ack = await fc.start()
    printer.line("jambonz", f"session:new  {fc.call.from_} -> {fc.call.to}")
    printer.ack(ack)
    program = list(ack.verbs)
    seen = printer.commands(fc, 0)
    while True:
        seen, program, ended = _apply_commands(fc, seen, program, printer)
        if ended:
            await fc.hangup(by="jambonz")
            return
        if not program:
            with trio.move_on_after(idle):
                while len(fc.commands) == seen and not fc.is_over:
                    await fc.wait_idle(0.05)
            if len(fc.commands) > seen:
                continue
            if not fc.is_over:
                printer.line("caller", "(hangs up)")
                await fc.hangup()
            return
        verb = program.pop(0)
        if isinstance(verb, Say | Play | Pause):
            await fc.wait_idle(speaking)  # the verb plays; commands may arrive meanwhile
            continue
        if isinstance(verb, Hangup | SipDecline):
            printer.line("jambonz", f"runs {describe_verb(verb)}: the call ends")
            await fc.hangup(by="jambonz")
            return
        if isinstance(verb, Gather) and verb.action_hook is not None:
            hook = _hook_name(verb.action_hook)
            said = answer(verb)
            if said is None:
                printer.line("caller", "(silence)")
                ack = await fc.gather_timeout(hook)
            elif said.startswith("dtmf:"):
                printer.line("caller", f"presses {said[5:]}")
                ack = await fc.gather_digits(hook, said[5:])
            else:
                printer.line("caller", f'says "{said}"')
                ack = await fc.gather_speech(hook, said)
            printer.line("jambonz", f"verb:hook {hook}")
            printer.ack(ack)
            if ack.verbs:
                program = list(ack.verbs)
        seen = printer.commands(fc, seen)


def _apply_commands(
    fc: FakeCall, seen: int, program: list[Verb], printer: Printer
) -> tuple[int, list[Verb], bool]:
    for record in fc.commands[seen:]:
        printer.line("command", describe_command(record.command))
        cmd = record.command
        if isinstance(cmd, Redirect):
            program = list(cmd.verbs) if not cmd.queue else [*program, *cmd.verbs]
        elif isinstance(cmd, CallStatusCommand) and cmd.call_status == "completed":
            return len(fc.commands), program, True
    return len(fc.commands), program, False


# -- demo -----------------------------------------------------------------------------------

_DEMO_CALLS: list[tuple[str, str, str | None]] = [
    ("A caller who speaks", "+15083084809", "I would like to check my balance"),
    ("A caller who presses keys", "+15085550123", "dtmf:42"),
    ("A caller who stays silent", "+15085550188", None),
    ("A blocked caller: the supervisor task takes over", "+15550000001", "hello?"),
]


async def demo(out: TextIO) -> None:
    """Serve ``examples/ivr.py``'s app in this process and play four calls against it."""
    ivr: Any = importlib.import_module("jambonz_trio._examples.ivr")  # examples/ivr.py, installed
    printer = Printer(out)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: ivr.serve(port=0, task_status=task_status))
        print(
            f"examples/ivr.py is serving in this process (port {server.port}, path {ivr.PATH}).",
            file=out,
        )
        for title, caller, said in _DEMO_CALLS:
            print(f"\n== {title}", file=out)
            async with open_fake_call(
                server.connect_memory, path=ivr.PATH, call=CallData(from_=caller)
            ) as fc:
                await play_call(fc, _scripted(said), printer, idle=0.5)
            print(f"  (the app sent {len(fc.acks)} acks and {len(fc.commands)} commands)", file=out)
        nursery.cancel_scope.cancel()
    print(
        "\nDone: four calls, no jambonz needed. Run the tests with the README's test command.",
        file=out,
    )


def _scripted(said: str | None) -> Answer:
    def answer(_gather: Gather) -> str | None:
        return said

    return answer


# -- simulate -------------------------------------------------------------------------------


async def simulate(args: argparse.Namespace, out: TextIO) -> None:
    printer = Printer(out)

    def answer(gather: Gather) -> str | None:
        if args.interactive:
            prompt = "  caller   say something (or dtmf:123, empty for silence)> "
            try:
                text = input(prompt).strip()
            except EOFError:
                return None
            return text or None
        if args.digits:
            return f"dtmf:{args.digits}"
        return str(args.speech) if args.speech else None

    print(f"calling {args.url} as jambonz would", file=out)
    async with open_fake_call(
        tcp_connector(args.url),
        username=args.username,
        password=args.password,
        call=CallData(from_=args.from_, to=args.to),
    ) as fc:
        await play_call(fc, answer, printer, idle=args.idle)
    print(f"call ended: {len(fc.acks)} acks, {len(fc.commands)} commands", file=out)


def _explain(exc: BaseException) -> str:
    if isinstance(exc, HandshakeRejected):
        return f"the app refused the WebSocket upgrade: {exc}"
    if isinstance(exc, SubprotocolMissing):
        return f"the app did not select the ws.jambonz.org subprotocol (jambonz drops such sockets): {exc}"
    if isinstance(exc, ConnectFailed):
        return f"could not connect: {exc}"
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jambonz_trio", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run examples/ivr.py in-process and play scripted calls against it")
    sim = sub.add_parser("simulate", help="drive any jambonz WebSocket app through a call")
    sim.add_argument("url", help="ws://host:port/path of the app")
    sim.add_argument("--username")
    sim.add_argument("--password")
    sim.add_argument("--from", dest="from_", default="+15083084809")
    sim.add_argument("--to", default="+15083728299")
    what = sim.add_mutually_exclusive_group()
    what.add_argument("--speech", help="what the caller says at every gather")
    what.add_argument("--digits", help="what the caller presses at every gather")
    what.add_argument("--interactive", action="store_true", help="type the caller's answers")
    sim.add_argument("--idle", type=float, default=2.0, help="seconds to wait for commands when idle")
    args = parser.parse_args(argv)
    out = sys.stdout
    try:
        if args.command == "demo":
            trio.run(demo, out)
        else:
            trio.run(simulate, args, out)
    except KeyboardInterrupt:
        return 130
    except (FakeJambonzError, BaseExceptionGroup) as exc:
        failure = _first_failure(exc)
        if failure is None:
            raise
        print(f"error: {_explain(failure)}", file=sys.stderr)
        return 1
    return 0


def _first_failure(exc: BaseException) -> FakeJambonzError | None:
    if isinstance(exc, FakeJambonzError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_failure(inner)
            if found is not None:
                return found
    return None
