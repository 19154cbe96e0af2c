"""The command line: ``demo`` and ``simulate`` (with clear errors, not tracebacks)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import wave
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from examples import echo_bot, ivr
from jambonz_trio import Call, CallConfig, JambonzServer, ServerConfig, open_conversation, serve_jambonz
from jambonz_trio._call import engine_of
from jambonz_trio._cli import main
from jambonz_trio.cluster import CallsSnapshot, Cluster, ClusterCall, ClusterEvent
from jambonz_trio.commands import WhisperCommand
from jambonz_trio.testing import AudioSource, write_wav
from jambonz_trio.verbs import Say
from tests.cluster.redis import namespace, shared_redis_url

# What a non-editable install run from the repository root sees: the source package first on
# sys.path, and no jambonz_trio._examples in it (the README's demo command does exactly that).
_SOURCE_CHECKOUT = """
import importlib.abc, runpy, sys

class NoInstalledExamples(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith("jambonz_trio._examples"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoInstalledExamples())
sys.argv = ["jambonz_trio", "demo"]
runpy.run_module("jambonz_trio", run_name="__main__")
"""


@pytest.mark.parametrize("layout", ["installed", "source-checkout"])
def test_demo_runs_a_call_end_to_end(layout: str) -> None:
    argv = ["-m", "jambonz_trio", "demo"] if layout == "installed" else ["-c", _SOURCE_CHECKOUT]
    out = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert 'caller   says "I would like to check my balance"' in out
    assert 'app      say "You said: I would like to check my balance"' in out
    assert 'app      say "You pressed: 42"' in out
    assert "mute:status" not in out  # jambonz ignores it during a gather (issue 18 item 5)
    assert 'command  redirect (replace): say "redirected"' in out
    assert "command  call:status completed" in out


async def run_cli(*argv: str) -> int:
    code: int = await trio.to_thread.run_sync(main, list(argv))
    return code


async def test_simulate_drives_an_app_over_tcp(
    nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await nursery.start(partial(ivr.serve, port=0, username="u", password="p"))
    url = f"ws://127.0.0.1:{server.port}{ivr.PATH}"
    assert await run_cli("simulate", url, "--username", "u", "--password", "p", "--speech", "yes") == 0
    out = capsys.readouterr().out
    assert 'app      say "You said: yes"' in out and "hangup" in out


async def test_simulate_clear_error_for_401(
    nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await nursery.start(partial(ivr.serve, port=0, username="u", password="p"))
    assert (
        await run_cli("simulate", f"ws://127.0.0.1:{server.port}/ivr", "--username", "u", "--password", "x")
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "401" in err and "Traceback" not in err


async def test_simulate_clear_error_for_refused_connection(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert await run_cli("simulate", f"ws://127.0.0.1:{port}/x") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not connect") and "Traceback" not in err


async def _raw_app(behaviour: str, request: WebSocketRequest) -> None:
    if behaviour == "no-subprotocol":
        ws = await request.accept()
        await trio.sleep_forever()
    ws = await request.accept(subprotocol="ws.jambonz.org")
    first = json.loads(await ws.get_message())
    if behaviour == "bad-verbs":
        await ws.send_message(
            json.dumps({"type": "ack", "msgid": first["msgid"], "data": [{"verb": "sayy"}]})
        )
    await trio.sleep_forever()  # "silent": never acks


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [("no-subprotocol", "subprotocol"), ("silent", "480"), ("bad-verbs", "sayy")],
)
async def test_simulate_clear_errors_for_broken_apps(
    nursery: trio.Nursery, capsys: pytest.CaptureFixture[str], behaviour: str, expected: str
) -> None:
    server = await nursery.start(serve_websocket, partial(_raw_app, behaviour), "127.0.0.1", 0, None)
    assert await run_cli("simulate", f"ws://127.0.0.1:{server.port}/app") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err


async def test_simulate_hangs_up_after_a_violation_leaving_nothing_parked(
    nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a strict violation ended ``simulate`` by dropping the socket without a close, as
    a crash would: the app parked the call for its ``reconnect_grace`` (60 s) and kept listing
    it. The violation is still the error (status 1), and the caller now hangs up first
    (``call:status`` completed, close 1000), as jambonz would end the call."""
    ended: list[tuple[int | None, str]] = []
    done = trio.Event()

    async def whispers_during_a_say(call: Call) -> None:
        await call.ack(call.session, [Say(text="hello"), Say(text="still here")])
        await call.send_command(WhisperCommand(verbs=(Say(text="psst"),)))  # jambonz ignores it
        await call.wait_closed()
        assert call.close_info is not None
        ended.append((call.close_info.code, call.close_info.by))
        done.set()

    server: JambonzServer = await nursery.start(partial(serve_jambonz, whispers_during_a_say, port=0))
    assert await run_cli("simulate", f"ws://127.0.0.1:{server.port}/") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "whisper" in err and "Traceback" not in err
    with trio.fail_after(5):  # (before: 60 s, the reconnect grace)
        await done.wait()
    assert ended == [(1000, "jambonz")]
    assert server.calls.parked_count == 0 and len(server.calls) == 0


class Output:
    """A subprocess's stdout, read on demand."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.text = ""

    async def wait_for(self, needle: str) -> None:
        while needle not in self.text:
            chunk = await self.stream.receive_some()
            assert chunk, f"the process ended before printing {needle!r}:\n{self.text}"
            self.text += chunk.decode()


async def echo_once(call: Call) -> None:
    async with open_conversation(call) as convo:
        answer = await convo.gather("Say something")
        await convo.say(f"You said: {answer.transcript}")
        await convo.hangup()


async def test_simulate_interactive_keeps_the_call_alive_while_the_caller_types(
    nursery: trio.Nursery,
) -> None:
    """Issue 18 item 1: ``input()`` blocked the trio loop while the person typed: no pongs
    (the app's keepalive aborted the socket) and pushed commands only showed after Enter.
    A real process, its stdin a pipe written slowly while the app pings and pushes."""
    config = ServerConfig(call=CallConfig(ping_interval=0.05, ping_timeout=5.0))
    server: JambonzServer = await nursery.start(partial(serve_jambonz, echo_once, port=0, config=config))
    new_calls = server.calls.new_calls()
    argv = [sys.executable, "-m", "jambonz_trio", "simulate", f"ws://127.0.0.1:{server.port}/"]
    process = await trio.lowlevel.open_process(
        [*argv, "--interactive", "--idle", "0.2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    out = Output(process.stdout)
    try:
        with trio.fail_after(60):  # a bound for a loaded machine, not a timing assertion
            call = await new_calls.receive()
            await out.wait_for("say something (digits")  # the gather waits for the person
            link = engine_of(call).link
            assert link is not None
            pongs = trio.Semaphore(0)
            on_pong = link.conn.on_pong
            assert on_pong is not None

            def counting(payload: bytes) -> None:
                on_pong(payload)
                pongs.release()

            link.conn.on_pong = counting
            await process.stdin.send_all(b"hel")  # typing slowly: half a line
            for _ in range(5):  # pings answered while the line is unfinished
                await pongs.acquire()
            await call.redirect([Say(text="Please hold")], queue=True)
            await out.wait_for('redirect (append): say "Please hold"')  # shown before Enter
            await process.stdin.send_all(b"lo\n")
            await out.wait_for("call ended")
            assert await process.wait() == 0
    finally:
        process.kill()
    assert 'caller   says "hello"' in out.text
    assert 'app      say "You said: hello"' in out.text
    assert call.reconnect_count == 0 and "abandoning" not in out.text


async def echo_forever(call: Call) -> None:
    async with open_conversation(call) as convo:
        while True:
            answer = await convo.gather("Say something")
            await convo.say(f"You said: {answer.transcript or answer.digits}")


async def test_simulate_answers_a_sequence_and_stops_at_the_turn_limit(
    nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18 item 9: ``--speech X`` answered every gather with X, so an echo loop never
    ended. Answers come in order (the last repeats) and the caller hangs up after ``--turns``."""
    server: JambonzServer = await nursery.start(partial(serve_jambonz, echo_forever, port=0))
    url = f"ws://127.0.0.1:{server.port}/"
    argv = ["simulate", url, "--speech", "one", "--digits", "42", "--speech", "three", "--turns", "4"]
    with trio.fail_after(60):
        assert await run_cli(*argv, "--idle", "0.2") == 0
    out = capsys.readouterr().out
    answers = [line.strip() for line in out.splitlines() if line.strip().startswith("caller")]
    assert answers == [
        'caller   says "one"',
        "caller   presses 42",
        'caller   says "three"',
        'caller   says "three"',
        "caller   (hangs up)",
    ]
    assert 'say "You said: 42"' in out and "call ended" in out


async def test_simulate_with_audio_writes_what_the_app_played(
    nursery: trio.Nursery, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--audio`` feeds a WAV file into the app's listen; ``--played`` gets what it played
    back: for the echo bot, the same audio."""
    server = await nursery.start(partial(echo_bot.serve, port=0))
    speech = AudioSource.tone(500, seconds=1.5, sample_rate=16000)  # converted to the listen's 8 kHz
    source = write_wav(tmp_path / "in.wav", speech.pcm, 16000)
    played = tmp_path / "out.wav"
    url = f"ws://127.0.0.1:{server.port}{echo_bot.PATH}"
    code = await run_cli(
        "simulate", url, "--audio", str(source), "--played", str(played), "--fast", "--idle", "0.3"
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "listen /echo/audio (8000 Hz mono, streams audio back)" in out
    assert "marks second-1 (playout)" in out and f"wrote 1.50 s the app streamed back to {played}" in out
    with wave.open(str(played)) as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (8000, 1)
        assert wav.readframes(wav.getnframes()) == speech.converted(8000)


@pytest.mark.parametrize(
    "url", ["localhost:8080/ivr", "http://127.0.0.1:8080/ivr", "ws://127.0.0.1:99999/ivr", "ws:///ivr"]
)
def test_simulate_reports_a_url_without_ws_scheme_as_a_usage_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``simulate localhost:8080/ivr`` (no ``ws://``) is the first thing a user may type: a
    one-line usage error (status 2) naming the accepted forms, before anything starts, not an
    exception-group traceback."""
    try:
        code = main(["simulate", url])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    assert code != 0
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err and "ws://" in err
    assert code == 2 and err.count("\n") == 1 and "wss://" in err and repr(url) in err
    assert "calling" not in captured.out


@pytest.mark.parametrize("given", [["--username", "u"], ["--password", "p"]])
def test_simulate_refuses_a_username_without_a_password_and_back(
    given: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """jambonz sends Basic credentials only when the hook has both, and so does the fake: one
    alone was dropped without a word, and the app's 401 then blamed the credentials."""
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "ws://127.0.0.1:1/x", *given])
    assert exited.value.code == 2
    assert "--username and --password go together" in capsys.readouterr().err


def test_simulate_refuses_an_unreadable_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    with pytest.raises(SystemExit):
        main(["simulate", "ws://127.0.0.1:1/x", "--audio", str(bad)])
    assert "--audio" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["missing-directory", "a-directory"])
async def test_simulate_refuses_a_played_path_it_cannot_write_before_the_call(
    nursery: trio.Nursery, capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str
) -> None:
    """``--played`` is written after the call: a path that cannot be written is a usage error
    up front, not a traceback once the call is over."""
    server = await nursery.start(partial(echo_bot.serve, port=0))
    source = write_wav(tmp_path / "in.wav", AudioSource.tone(500, seconds=0.5, sample_rate=8000).pcm, 8000)
    played = tmp_path / "missing" / "out.wav" if where == "missing-directory" else tmp_path
    url = f"ws://127.0.0.1:{server.port}{echo_bot.PATH}"
    code = await run_cli("simulate", url, "--audio", str(source), "--played", str(played), "--fast")
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith(f"error: --played {played}: ") and captured.err.count("\n") == 1
    assert "calling" not in captured.out  # nothing started


async def test_simulate_reports_a_default_played_path_it_cannot_write_without_a_traceback(
    nursery: trio.Nursery,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default ``played.wav`` (in the working directory) was not checked, an explicit
    ``--played`` only: when it could not be written the call ended in a traceback. Checking it
    up front would refuse calls that play nothing back, so the write's failure is reported
    instead: an error line and status 1."""
    server = await nursery.start(partial(echo_bot.serve, port=0))
    source = write_wav(tmp_path / "in.wav", AudioSource.tone(500, seconds=0.5, sample_rate=8000).pcm, 8000)
    (tmp_path / "played.wav").mkdir()  # (a directory: unwritable even for root)
    monkeypatch.chdir(tmp_path)
    url = f"ws://127.0.0.1:{server.port}{echo_bot.PATH}"
    code = await run_cli("simulate", url, "--audio", str(source), "--fast", "--idle", "0.3")
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert captured.err.startswith("error: could not write played.wav: ") and "Traceback" not in captured.err
    assert "call ended" in captured.out


@pytest.mark.parametrize("url", ["redis://:6379", "rediss://:secret@/0"])
def test_calls_reports_a_redis_url_without_a_host_as_a_usage_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calls", "--redis", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: expected a ") and "(no host)" in err and err.count("\n") == 1
    assert "secret" not in err


def test_calls_watch_ends_on_ctrl_c_with_status_130_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = shared_redis_url()
    watch_calls = Cluster.watch_calls

    @contextlib.asynccontextmanager
    async def watch_then_ctrl_c(self: Cluster, **kwargs: Any) -> AsyncIterator[Any]:
        async with watch_calls(self, **kwargs) as events:
            signal.raise_signal(signal.SIGINT)  # the person watching presses Ctrl-C
            yield events

    monkeypatch.setattr(Cluster, "watch_calls", watch_then_ctrl_c)
    try:
        code = main(["calls", "--redis", url, "--namespace", namespace(), "--watch"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C ended calls --watch in a KeyboardInterrupt traceback")
    assert code == 130
    assert capsys.readouterr().err == ""


def test_calls_watch_reports_what_changed_across_a_gap(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``calls --watch`` prints one line per change. A snapshot of the watch (its first, and
    one after every gap) is compared with what was printed: a call that started between the
    list and the watch, or ended while Redis was unreachable, is reported."""
    gone = ClusterCall(call_sid="ended-during-the-gap", member="m1")
    late = ClusterCall(call_sid="started-before-the-watch", member="m1")
    moved = ClusterCall(call_sid="moved", member="m1")

    async def listed(self: Cluster) -> list[ClusterCall]:
        return [gone, moved]

    @contextlib.asynccontextmanager
    async def watch(self: Cluster, **kwargs: Any) -> AsyncIterator[Any]:
        with trio.fail_after(10):  # (closed mid-connection, coredis 6.9 leaves streams unclosed)
            await self.wait_registered()
        send, receive = trio.open_memory_channel[ClusterEvent](8)
        send.send_nowait(CallsSnapshot((gone, moved, late)))  # one call more than listed
        send.send_nowait(CallsSnapshot((late, attrs.evolve(moved, member="m2"))))  # after a gap
        send.close()
        yield receive

    monkeypatch.setattr(Cluster, "list_calls", listed)
    monkeypatch.setattr(Cluster, "watch_calls", watch)
    assert main(["calls", "--redis", shared_redis_url(), "--namespace", namespace(), "--watch"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        gone.to_json(),
        moved.to_json(),
        {"event": "start", "call": late.to_json()},
        {"event": "end", "call_sid": gone.call_sid, "member": "m1", "why": "ended during a gap"},
        {"event": "update", "call": attrs.evolve(moved, member="m2").to_json()},
    ]
