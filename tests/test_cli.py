"""The command line: ``demo`` and ``simulate`` (with clear errors, not tracebacks)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from functools import partial

import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from examples import ivr
from jambonz_trio._cli import main

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
    assert "command  mute:status" in out
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
    assert await run_cli("simulate", f"ws://127.0.0.1:{server.port}/ivr", "--password", "x") == 1
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
