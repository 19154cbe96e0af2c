"""``python -m jambonz_trio``: run a demo call, or simulate jambonz against any app.

``demo`` runs the IVR of ``examples/ivr.py`` in this process and plays scripted calls against
it through the fake jambonz (no sockets, no jambonz). ``simulate`` drives any jambonz WebSocket
app - written with this library or not - through a call over a real socket.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from ._protocol._verbs import Gather
from .testing import (
    CallData,
    Caller,
    ConnectFailed,
    Digits,
    FakeJambonzError,
    HandshakeRejected,
    Speech,
    SubprotocolMissing,
    open_fake_call,
    run_call,
    tcp_connector,
)

__all__ = ["main"]


class Printer:
    """Prints the call, one line per step, as a person would tell it."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, who: str, text: str) -> None:
        print(f"  {who:<8} {text}", file=self.out, flush=True)


# -- demo -----------------------------------------------------------------------------------

_DEMO_CALLS: list[tuple[str, str, str | Digits | None]] = [
    ("A caller who speaks", "+15083084809", "I would like to check my balance"),
    ("A caller who presses keys", "+15085550123", Digits("42")),
    ("A caller who stays silent", "+15085550188", None),
    ("A blocked caller: the supervisor task takes over", "+15550000001", "hello?"),
]


def _example(name: str) -> Any:
    """``examples/<name>.py``: installed as ``jambonz_trio._examples.<name>``. Run from a source
    checkout (``python -m jambonz_trio`` in the repository root puts the source package first on
    ``sys.path``, where ``_examples`` does not exist) it is loaded from ``examples/`` beside it."""
    try:
        return importlib.import_module(f"jambonz_trio._examples.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("jambonz_trio._examples", f"jambonz_trio._examples.{name}"):
            raise
        source = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"_jambonz_trio_example_{name}", source)
        if spec is None or spec.loader is None or not source.is_file():
            raise
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def demo(out: TextIO) -> None:
    """Serve ``examples/ivr.py``'s app in this process and play four calls against it."""
    ivr = _example("ivr")
    printer = Printer(out)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: ivr.serve(port=0, task_status=task_status))
        print(
            f"examples/ivr.py is serving in this process (port {server.port}, path {ivr.PATH}).",
            file=out,
        )
        for title, number, said in _DEMO_CALLS:
            print(f"\n== {title}", file=out)
            async with open_fake_call(
                server.connect_memory, path=ivr.PATH, call=CallData(from_=number)
            ) as fc:
                await run_call(fc, Caller(said), on_step=printer, idle=0.5)
            print(f"  (the app sent {len(fc.acks)} acks and {len(fc.commands)} commands)", file=out)
        nursery.cancel_scope.cancel()
    print(
        "\nDone: four calls, no jambonz needed. Run the tests with the README's test command.",
        file=out,
    )


# -- simulate -------------------------------------------------------------------------------


async def simulate(args: argparse.Namespace, out: TextIO) -> None:
    printer = Printer(out)

    def answer(gather: Gather) -> Speech | Digits | None:
        if args.interactive:
            prompt = "  caller   say something (digits: #123, empty: silence)> "
            try:
                text = input(prompt).strip()
            except EOFError:
                return None
            if text.startswith("#") and text[1:]:
                return Digits(text[1:])
            return Speech(text) if text else None
        if args.digits:
            return Digits(args.digits)
        return Speech(args.speech) if args.speech else None

    print(f"calling {args.url} as jambonz would", file=out)
    async with open_fake_call(
        tcp_connector(args.url),
        username=args.username,
        password=args.password,
        call=CallData(from_=args.from_, to=args.to),
    ) as fc:
        await run_call(fc, Caller(on_gather=answer), on_step=printer, idle=args.idle)
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
