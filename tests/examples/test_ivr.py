"""examples/ivr.py, driven through the fake jambonz the way a user would test it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from examples import ivr
from jambonz_trio import JambonzServer
from jambonz_trio.commands import CallStatusCommand, RedirectCommand
from jambonz_trio.testing import (
    CallData,
    FakeCall,
    HandshakeRejected,
    app_env_errors,
    fetch_app_env,
    open_fake_call,
    tcp_connector,
)
from jambonz_trio.verbs import Gather, Hangup, Say
from tests.admission.helpers import exchange, settle
from tests.engine.helpers import RawClient
from tests.helpers import start
from tests.operations.helpers import scrape, scrape_request, value

from .helpers import capture_serve


@asynccontextmanager
async def ivr_call(
    server: JambonzServer, caller: str = "+15551234567", env_vars: dict[str, Any] | None = None
) -> AsyncIterator[FakeCall]:
    data = CallData(from_=caller) if env_vars is None else CallData(from_=caller, env_vars=env_vars)
    async with open_fake_call(server.connect_memory, path=ivr.PATH, call=data) as fc:
        yield fc


@pytest.fixture
async def server(nursery: trio.Nursery) -> JambonzServer:
    started: JambonzServer = await nursery.start(partial(ivr.serve, port=0))
    return started


async def test_greeting_then_speech(server: JambonzServer) -> None:
    async with ivr_call(server) as fc:
        ack = await fc.start()
        assert ack.verbs == [
            Say(text="Hello from jambonz"),
            Gather(
                input=["speech", "digits"],
                action_hook="/gather",
                timeout=10,
                say=Say(text="Say something"),
            ),
        ]
        ack = await fc.gather_speech("/gather", "yes")
        assert ack.verbs == [Say(text="You said: yes"), Hangup()]
        await fc.expect_no_command(within=0.1)
        await fc.hangup()


async def test_options_answers_the_portal_its_variables(nursery: trio.Nursery) -> None:
    """jambonz's portal (through its api-server) sends ``OPTIONS`` to the call hook URL, query
    string and all, without credentials: the IVR answers its two variables, in a schema the
    api-server accepts - over a real socket, with Basic auth on the calls."""
    with trio.fail_after(10):
        server: JambonzServer = await nursery.start(partial(ivr.serve, port=0, username="u", password="p"))
        url = f"ws://127.0.0.1:{server.port}{ivr.PATH}?tenant=acme"
        schema = await fetch_app_env(tcp_connector(url))  # raises if jambonz would refuse it
        assert schema == {
            "GREETING": {
                "type": "string",
                "description": "What callers hear first",
                "default": "Hello from jambonz",
            },
            "GATHER_TIMEOUT": {
                "type": "number",
                "description": "Seconds to wait for the caller to say or press something",
                "default": 10,
            },
        }
        assert app_env_errors(schema) == []
        assert await fetch_app_env(tcp_connector(f"ws://127.0.0.1:{server.port}/other")) is None


async def test_portal_values_change_the_greeting(server: JambonzServer) -> None:
    """The values saved in the portal arrive in ``session:new`` (``env_vars``) and change what
    the caller hears and how long the gather waits."""
    async with ivr_call(server, env_vars={"GREETING": "Welcome to Acme", "GATHER_TIMEOUT": 5}) as fc:
        ack = await fc.start()
        assert ack.verbs == [
            Say(text="Welcome to Acme"),
            Gather(
                input=["speech", "digits"], action_hook="/gather", timeout=5, say=Say(text="Say something")
            ),
        ]


async def test_wrong_typed_timeout_falls_back_to_the_default(
    server: JambonzServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A timeout saved as text (values are unchecked when the app was unreachable at save time)
    is logged by name and replaced by the default; the greeting still applies."""
    async with ivr_call(server, env_vars={"GREETING": "Hi", "GATHER_TIMEOUT": "fifteen"}) as fc:
        ack = await fc.start()
        assert ack.verbs[0] == Say(text="Hi")
        gather = ack.verbs[1]
        assert isinstance(gather, Gather) and gather.timeout == 10
    assert any("env var GATHER_TIMEOUT should be an integer" in r.getMessage() for r in caplog.records)
    assert not any("fifteen" in r.getMessage() for r in caplog.records)


async def test_digits(server: JambonzServer) -> None:
    async with ivr_call(server) as fc:
        await fc.start()
        ack = await fc.gather_digits("/gather", "42")
        assert ack.verbs == [Say(text="You pressed: 42"), Hangup()]


async def test_timeout_hangs_up(server: JambonzServer) -> None:
    async with ivr_call(server) as fc:
        await fc.start()
        ack = await fc.gather_timeout("/gather")
        assert ack.verbs == [Hangup()]


async def test_blocked_caller_gets_redirect_then_hangup(server: JambonzServer) -> None:
    """No ``mute`` any more: jambonz ignores it outside a dial or conference, and the fake
    now says so (issue 18 item 5)."""
    async with ivr_call(server, caller="+15550000001") as fc:
        await fc.start()
        assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="redirected"),)
        assert (await fc.expect_command(CallStatusCommand)).call_status == "completed"
        assert [c.name for c in fc.commands] == ["redirect", "call:status"]


async def test_other_callers_get_no_commands(server: JambonzServer) -> None:
    async with ivr_call(server, caller="+15083084809") as fc:
        await fc.start()
        await fc.expect_no_command(within=0.2)


async def test_state_survives_a_reconnect_after_session_new(
    server: JambonzServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with ivr_call(server) as fc:
        await fc.start()
        call = server.calls[fc.call.call_sid]
        await fc.drop()
        ack = await fc.reconnect()
        assert ack.request_type == "session:reconnect"
        assert server.calls[fc.call.call_sid] is call and call.reconnect_count == 1
        ack = await fc.gather_speech("/gather", "still here")
        assert ack.verbs == [Say(text="You said: still here"), Hangup()]
        assert call.user_data["hooks"] == 1


async def test_state_survives_a_drop_before_the_session_new_ack(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """jambonz re-keys the unanswered session:new to the session:reconnect msgid, and 0.9.8
    then holds every later message of the call (docs/protocol.md §6.2 step 6); the library
    closes the socket once (1012) when jambonz stays quiet, and jambonz's ordinary reconnect
    releases the gather result: the same Call, with its state, answers it. (Strict: a message
    held for good would be a violation.)"""
    slow = trio.Event()

    async def slow_ivr(call: Call) -> None:
        await slow.wait()  # the app is slow to answer: the socket drops first
        await ivr.ivr(call)

    from jambonz_trio import Call

    server = await start(nursery, ivr.route(handler=slow_ivr))
    async with ivr_call(server) as fc:
        async with trio.open_nursery() as inner:
            inner.start_soon(_start_expecting_rekey, fc)
            await trio.testing.wait_all_tasks_blocked()
            await fc.drop()
            slow.set()
        call = server.calls[fc.call.call_sid]
        assert fc.acks[0].request_type == "session:new"
        assert fc.acks[0].verb_names == ["say", "gather"]
        ack = await fc.gather_digits("/gather", "7")  # held, then released by the close
        assert ack.verbs == [Say(text="You pressed: 7"), Hangup()]
        assert [c.code for c in fc.closes] == [1012] and ack.connection == 3
        assert server.calls[fc.call.call_sid] is call and call.user_data["hooks"] == 1
        assert fc.violations == []


async def _start_expecting_rekey(fc: FakeCall) -> None:
    ack = await fc.start()
    assert ack.msgid != ack.request.msgid  # answered on the session:reconnect msgid


async def test_basic_auth_over_tcp(nursery: trio.Nursery) -> None:
    server: JambonzServer = await nursery.start(
        partial(ivr.serve, port=0, username="jambonz", password="s3:cret")
    )
    url = f"ws://127.0.0.1:{server.port}{ivr.PATH}"
    with trio.fail_after(10):
        async with open_fake_call(tcp_connector(url), username="jambonz", password="s3:cret") as fc:
            assert (await fc.start()).verb_names == ["say", "gather"]
        with pytest.raises(HandshakeRejected, match="401"):
            async with open_fake_call(tcp_connector(url), username="jambonz", password="wrong"):
                pass


async def test_a_transcript_over_the_frame_limit_is_capped(server: JambonzServer) -> None:
    """Issue 19 item 13: before, the echo ack raised MessageTooLarge and the call ended with
    an ERROR."""
    async with ivr_call(server) as fc:
        await fc.start()
        ack = await fc.gather_speech("/gather", "x" * 30_000)
        assert ack.verbs == [Say(text="You said: " + "x" * 500 + "..."), Hangup()]


async def test_a_lone_surrogate_in_a_transcript_is_replaced(server: JambonzServer) -> None:
    """Issue 19 item 13: ``"\\ud800"`` is valid JSON (jambonz's ``JSON.stringify`` writes such
    escapes) that no UTF-8 frame can carry back; before, the echo ack raised. Sent raw: the
    fake jambonz cannot encode it either."""
    stream = await server.connect_memory()
    client = RawClient(stream)
    await client.handshake(ivr.PATH)
    await client.send("session:new", "m1", {"call_sid": "sid-1", "from": "+1555"}, call_sid="sid-1")
    assert (await client.receive() or {}).get("type") == "ack"
    speech = {"is_final": True, "alternatives": [{"transcript": "bad \ud800 text"}]}
    await client.send("verb:hook", "h1", {"reason": "speechDetected", "speech": speech}, hook="/gather")
    reply = await client.receive()
    assert reply == {
        "type": "ack",
        "msgid": "h1",
        "data": [{"verb": "say", "text": "You said: bad ? text"}, {"verb": "hangup"}],
    }
    await trio.aclose_forcefully(stream)


async def test_done_when_metrics_flag_serves_options_and_metrics_after_real_calls(
    nursery: trio.Nursery,
) -> None:
    """Issue 17's done-when: ``examples/ivr.py --metrics`` (``serve(metrics=True)``, see
    :func:`test_metrics_flag`) answers ``OPTIONS /ivr`` with its env-var schema and serves
    ``/metrics`` (behind the call hook's Basic auth) with the call counter and the ack-latency
    histogram after real calls placed over TCP."""
    with trio.fail_after(20):
        server: JambonzServer = await nursery.start(
            partial(ivr.serve, port=0, username="u", password="p", metrics=True)
        )
        url = f"ws://127.0.0.1:{server.port}{ivr.PATH}"
        schema = await fetch_app_env(tcp_connector(url))
        assert schema is not None and list(schema) == ["GREETING", "GATHER_TIMEOUT"]
        assert app_env_errors(schema) == []
        for n in range(2):
            async with open_fake_call(
                tcp_connector(url), username="u", password="p", call=CallData(call_sid=f"m-{n}")
            ) as fc:
                await fc.start()
                ack = await fc.gather_speech("/gather", "yes")
                assert ack.verbs == [Say(text="You said: yes"), Hangup()]
                await fc.hangup()
        assert await settle(lambda: server.statistics().calls == 0)
        assert (await exchange(server.port, scrape_request())).status == 401
        samples = await scrape(server, auth=("u", "p"))
    assert value(samples, "jambonz_trio_calls_started_total") == 2
    assert value(samples, "jambonz_trio_calls_ended_total", by="jambonz") == 2
    assert value(samples, "jambonz_trio_ack_latency_seconds_count", by="app") == 4
    assert value(samples, "jambonz_trio_ack_latency_seconds_bucket", by="app", le="+Inf") == 4
    assert value(samples, "jambonz_trio_acks_total", outcome="acked") == 4


def test_metrics_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--metrics`` reaches ``serve(metrics=True)``; without it, metrics stay off."""
    seen = capture_serve(monkeypatch, ivr)
    ivr.main(["--metrics", "--username", "u", "--password", "p"])
    assert seen["metrics"] is True
    seen.clear()
    ivr.main([])
    assert "metrics" not in seen


_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("second_signal", [False, True])
async def test_one_process_drains_on_sigterm(second_signal: bool) -> None:
    """``python examples/ivr.py`` without ``--workers`` (one process, what deploying.md's
    audio section recommends) ran plain ``trio.run``: SIGTERM killed it with its calls, no
    drain, no 1012 for jambonz to reconnect elsewhere (Ctrl-C printed a traceback), and with
    ``--port 0`` it printed port 0. It now serves until SIGTERM or SIGINT, then drains: a live
    call is closed with 1012 after ``--grace`` and the process exits 0. A second signal (a
    Ctrl-C during a long drain) stops it at once: the calls are closed with 1012 or dropped,
    and jambonz reconnects them elsewhere either way."""
    grace = "600" if second_signal else "0"
    command = [sys.executable, "examples/ivr.py", "--port", "0", "--grace", grace]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(trio.run_process, command, cwd=_ROOT, stdout=subprocess.PIPE, check=False)
        )
        try:
            with trio.fail_after(60):
                assert process.stdout is not None
                line = b""
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive_some(1)
                match = re.fullmatch(rb"serving ws://127\.0\.0\.1:(\d+)/ivr\n", line)
                assert match is not None and int(match[1]) != 0, line
                url = f"ws://127.0.0.1:{int(match[1])}{ivr.PATH}"
                async with open_fake_call(tcp_connector(url), auto_reconnect=False) as fc:
                    assert (await fc.start()).verbs[0] == Say(text="Hello from jambonz")
                    process.send_signal(signal.SIGTERM)
                    if second_signal:  # far within the 600 s grace: the call is cut short
                        process.send_signal(signal.SIGINT)
                        closed = await fc.expect_close(within=30)
                        # the handler's cancellation closes with 1012, unless the socket was
                        # dropped first (1006): either way not 1000, so jambonz reconnects
                        assert closed.code in (1012, 1006)
                    else:
                        closed = await fc.expect_close(1012, within=30)
                        assert closed.code == 1012
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
