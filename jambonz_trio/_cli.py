"""``python -m jambonz_trio``: run a demo call, or simulate jambonz against any app.

``demo`` runs the IVR of ``examples/ivr.py`` in this process and plays scripted calls against
it through the fake jambonz (no sockets, no jambonz). ``simulate`` drives any jambonz WebSocket
app - written with this library or not - through a call over a real socket (with ``--audio`` it
also plays jambonz's media server for ``listen`` verbs, the WAV file as the caller's voice, and
writes what the app played back to ``--played``). ``calls`` prints the live calls of a
Redis-backed cluster (the ``redis`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import math
import os
import sys
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from ._protocol._verbs import Gather
from .testing import (
    AudioSource,
    CallData,
    Caller,
    ConnectFailed,
    Digits,
    FakeCall,
    FakeJambonzError,
    HandshakeRejected,
    HangUp,
    Speech,
    SubprotocolMissing,
    open_fake_call,
    run_call,
    tcp_connector,
    write_wav,
)
from .testing._media import FakeAudioStream

__all__ = ["main"]


class Printer:
    """Prints the call, one line per step, as a person would tell it."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._prompting = False

    def __call__(self, who: str, text: str) -> None:
        if self._prompting:  # a step while the caller types: not on the prompt's line
            print(file=self.out)
            self._prompting = False
        print(f"  {who:<8} {text}", file=self.out, flush=True)

    def prompt(self, text: str) -> None:
        """Print ``text`` with no newline (the caller types after it)."""
        print(text, end="", file=self.out, flush=True)
        self._prompting = True

    def answered(self) -> None:
        self._prompting = False  # the person's Enter ended the line


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


class StdinLines:
    """Lines from a file descriptor (stdin), read without blocking the trio loop.

    One worker thread does blocking ``os.read`` calls for the whole session and hands complete
    lines to the loop through a channel: while a person types, the loop keeps running (pongs,
    pushed commands), and no line is lost between two prompts. The thread never holds a Python
    I/O lock (``os.read``, not ``sys.stdin``), so abandoning it at exit is safe; it is a daemon
    thread. Start it with ``nursery.start_soon(lines.run)``.
    """

    def __init__(self, fd: int = 0) -> None:
        self._fd = fd
        self._send, self._receive = trio.open_memory_channel[str](math.inf)
        self.eof = False

    async def run(self) -> None:
        """Read until end of file (or until cancelled: the thread is then abandoned)."""
        token = trio.lowlevel.current_trio_token()
        await trio.to_thread.run_sync(self._pump, token, abandon_on_cancel=True)

    def _pump(self, token: trio.lowlevel.TrioToken) -> None:
        pending = b""
        while True:
            chunk = os.read(self._fd, 4096)
            if chunk:
                *lines, pending = (pending + chunk).split(b"\n")
            else:  # end of file: a last line without a newline still counts
                lines, pending = ([pending] if pending else []), b""
            try:
                for line in lines:
                    text = line.decode("utf-8", "replace")
                    trio.from_thread.run_sync(self._send.send_nowait, text, trio_token=token)
                if not chunk:
                    trio.from_thread.run_sync(self._send.close, trio_token=token)
                    return
            except trio.RunFinishedError:
                return

    async def readline(self) -> str | None:
        """The next line without its newline, or ``None`` at end of file."""
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            self.eof = True
            return None


class ScriptedCaller:
    """``simulate``'s caller: answers in order (the last one repeats) or typed by a person,
    and hangs up at gather number ``turns + 1``."""

    PROMPT = "  caller   say something (digits: #123, empty: silence, end of input: hang up)> "

    def __init__(
        self,
        answers: Sequence[Speech | Digits],
        *,
        turns: int,
        lines: StdinLines | None = None,
        printer: Printer | None = None,
    ) -> None:
        self.answers = list(answers)
        self.turns = turns
        self.lines = lines
        self.printer = printer
        self.asked = 0

    async def __call__(self, gather: Gather) -> Speech | Digits | HangUp | None:
        self.asked += 1
        if self.asked > self.turns:
            return HangUp()
        if self.lines is not None:
            return await self._typed()
        if not self.answers:
            return None
        return self.answers[min(self.asked, len(self.answers)) - 1]

    async def _typed(self) -> Speech | Digits | HangUp | None:
        assert self.lines is not None
        if self.printer is not None:
            self.printer.prompt(self.PROMPT)
        text = await self.lines.readline()
        if self.printer is not None:
            self.printer.answered()
        if text is None:
            return HangUp()
        text = text.strip()
        if text.startswith("#") and text[1:]:
            return Digits(text[1:])
        return Speech(text) if text else None


class _Answer(argparse.Action):
    """``--speech`` / ``--digits``: appended, in command-line order, to ``args.answers``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        answers = list(getattr(namespace, "answers", None) or [])
        answers.append(Digits(values) if option_string == "--digits" else Speech(values))
        namespace.answers = answers


async def simulate(args: argparse.Namespace, out: TextIO) -> int:
    printer = Printer(out)
    print(f"calling {args.url} as jambonz would", file=out)
    async with trio.open_nursery() as nursery:
        lines = None
        if args.interactive:
            lines = StdinLines()
            nursery.start_soon(lines.run)
        caller = ScriptedCaller(args.answers or [], turns=args.turns, lines=lines, printer=printer)
        async with open_fake_call(
            args.connector,
            username=args.username,
            password=args.password,
            call=CallData(from_=args.from_, to=args.to),
        ) as fc:
            speaker = Caller(on_gather=caller, audio=args.audio_source, audio_pace=None if args.fast else 1.0)
            try:
                await run_call(fc, speaker, on_step=printer, idle=args.idle)
            except FakeJambonzError:
                await _hang_up(fc)  # as jambonz ends a call: nothing left parked in the app
                raise
        nursery.cancel_scope.cancel()
    print(f"call ended: {len(fc.acks)} acks, {len(fc.commands)} commands", file=out)
    status = 0
    for index, stream in enumerate(fc.audio_streams, start=1):
        try:
            _save_played(stream, Path(args.played), index, out)
        except OSError as exc:  # (an explicit --played was checked before the call; the default not)
            print(
                f"error: could not write {exc.filename or args.played}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            status = 1
    return status


async def _hang_up(fc: FakeCall) -> None:
    """End the call the way the caller hanging up does (``call:status`` completed, close 1000),
    whatever violations are still pending (strict mode raises one per call to the fake), so
    that the app does not park it for a reconnect that never comes. Shielded, bounded."""
    with trio.CancelScope(shield=True), trio.move_on_after(5):
        for _ in range(16):
            if fc.is_over:
                return
            with contextlib.suppress(FakeJambonzError):
                await fc.hangup()


def _unwritable(path: Path) -> str | None:
    """Why a file cannot be written at ``path`` (``None``: it looks writable)."""
    if path.is_dir():
        return "is a directory"
    if not path.parent.is_dir():
        return f"no directory {str(path.parent)!r}"
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return "not writable"
    return None


def _save_played(stream: FakeAudioStream, base: Path, index: int, out: TextIO) -> None:
    """Write what the app played on one audio socket (streamed audio, else its raw clips)."""
    path = base if index == 1 else base.with_name(f"{base.stem}-{index}{base.suffix}")
    if stream.played and stream.playback_rate:
        write_wav(path, stream.played, stream.playback_rate)
        print(f"wrote {stream.played_seconds:.2f} s the app streamed back to {path}", file=out)
        return
    clips = [c for c in stream.clips if c.content_type == "raw"]
    if clips and len({c.sample_rate for c in clips}) == 1:
        write_wav(path, b"".join(c.audio for c in clips), clips[0].sample_rate)
        print(f"wrote {len(clips)} playAudio clip(s) to {path}", file=out)
    elif stream.clips:
        print(
            f"audio socket {index}: {len(stream.clips)} playAudio clip(s), not written (mixed formats)",
            file=out,
        )
    else:
        print(f"audio socket {index}: the app played nothing back", file=out)


#: What went wrong, by the class of a failed connect (the most specific first).
_CONNECT_FAILURES: tuple[tuple[type[ConnectFailed], str], ...] = (
    (HandshakeRejected, "the app refused the WebSocket upgrade"),
    (
        SubprotocolMissing,
        "the app did not select the ws.jambonz.org subprotocol (jambonz drops such sockets)",
    ),
    (ConnectFailed, "could not connect"),
)


def _explain(exc: BaseException) -> str:
    for cls, what in _CONNECT_FAILURES:
        if isinstance(exc, cls):
            return f"{what}: {exc}"
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jambonz_trio", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run examples/ivr.py in-process and play scripted calls against it")
    sim = sub.add_parser("simulate", help="drive any jambonz WebSocket app through a call")
    sim.add_argument("url", help="ws://host[:port]/path or wss://host[:port]/path of the app")
    sim.add_argument("--username")
    sim.add_argument("--password")
    sim.add_argument("--from", dest="from_", default="+15083084809")
    sim.add_argument("--to", default="+15083728299")
    sim.add_argument(
        "--speech",
        action=_Answer,
        dest="answers",
        metavar="TEXT",
        help="what the caller says at the next gather; repeat for later gathers (the last repeats)",
    )
    sim.add_argument(
        "--digits",
        action=_Answer,
        dest="answers",
        metavar="KEYS",
        help="what the caller presses at the next gather; mixes with --speech, in order",
    )
    sim.add_argument(
        "--interactive",
        action="store_true",
        help="type the caller's answers (the call goes on while you type)",
    )
    sim.add_argument(
        "--turns",
        type=int,
        default=10,
        help="gathers the caller answers before hanging up at the next one (default 10)",
    )
    sim.add_argument("--idle", type=float, default=2.0, help="seconds to wait for commands when idle")
    sim.add_argument(
        "--audio", metavar="FILE.wav", help="what the caller says into each listen (16-bit PCM WAV)"
    )
    sim.add_argument(
        "--played",
        metavar="OUT.wav",
        help="where to write what the app played back (default played.wav)",
    )
    sim.add_argument("--fast", action="store_true", help="send the caller's audio as fast as possible")
    calls = sub.add_parser("calls", help="print the live calls of a Redis cluster, one JSON object per line")
    calls.add_argument("--redis", required=True, help="redis://[user:password@]host:port/db (or rediss://)")
    calls.add_argument("--namespace", default="default", help="the cluster's namespace")
    calls.add_argument("--watch", action="store_true", help="then print calls as they start, change and end")
    args = parser.parse_args(argv)
    if args.command == "simulate":
        if args.interactive and args.answers:
            parser.error("--interactive cannot be combined with --speech / --digits")
        if bool(args.username) != bool(args.password):  # one alone would not be sent (as by jambonz)
            parser.error("--username and --password go together: give both, or neither")
        try:  # before anything starts: a bad URL is a usage error, not a failed call
            args.connector = tcp_connector(args.url)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.played is None:
            args.played = "played.wav"
        else:  # written after the call: a path that cannot be written would end it in a traceback
            problem = _unwritable(Path(args.played))
            if problem is not None:
                print(f"error: --played {args.played}: {problem}", file=sys.stderr)
                return 2
    args.audio_source = None
    if getattr(args, "audio", None):
        try:
            args.audio_source = AudioSource.from_wav(args.audio)
        except (OSError, EOFError, ValueError, wave.Error) as exc:
            parser.error(f"--audio {args.audio}: {exc}")
    out = sys.stdout
    if args.command == "calls":  # needs the redis extra: imported only here
        from .cluster._cli import calls as list_calls

        return list_calls(args, out)
    try:
        if args.command == "demo":
            trio.run(demo, out)
        else:
            return trio.run(simulate, args, out)
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
