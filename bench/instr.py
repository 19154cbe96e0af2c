#!/usr/bin/env python3
"""Deterministic per-call costs of the server (issue 16): instruction counts and event counts.

Timed CPU moves by +-30 % on a shared box; instruction counts do not. This tool runs the IVR
contract of bench/README.md (``session:new`` -> ack, ``verb:hook /gather`` -> ack,
``call:status``, close 1000, each ack's receipt Ping answered with a Pong as Node ``ws`` does)
N times against one app process and reports what one call costs that process:

    python bench/instr.py callgrind --app trio   # valgrind --tool=callgrind instructions per call
    python bench/instr.py callgrind --app floorws
    python bench/instr.py counts --app trio      # Python function calls, cancel scopes,
                                                 # checkpoints, task steps per call

``callgrind`` runs the app under valgrind twice (``--small`` and ``--big`` calls, each after the
same warm-up) and divides the difference of the totals by the difference of the calls, which
cancels start-up, imports and warm-up. The client (``drive``: a minimal hand-written websocket
client, frames masked with a zero key) runs in a separate process, not measured. Apps:
``trio`` (bench/apps/trio_app.py's handler on ``serve_jambonz``) and ``floorws``
(bench/apps/floor_wsproto_app.py, the bare trio + wsproto floor).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH / "apps"))

_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
_HEAD = (
    "GET /ivr HTTP/1.1\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
    "Connection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "Sec-WebSocket-Protocol: ws.jambonz.org\r\nHost: 127.0.0.1:{port}\r\n\r\n"
)


def _templates() -> dict[str, str]:
    """The loadgen's message templates (bench/loadgen/payloads.js), as its JSON text."""
    script = (
        "const p=require(process.argv[1]);"
        "process.stdout.write(JSON.stringify({s:p.SESSION_NEW,g:p.GATHER_HOOK,c:p.COMPLETED}))"
    )
    out = subprocess.run(
        ["node", "-e", script, str(BENCH / "loadgen" / "payloads.js")], check=True, capture_output=True
    ).stdout
    loaded: dict[str, str] = json.loads(out)
    return loaded


def _frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (masked, with a zero key: the payload goes as is)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


class _Reader:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError
        self.buf += data

    async def head(self) -> None:
        while b"\r\n\r\n" not in self.buf:
            await self._fill()
        end = self.buf.index(b"\r\n\r\n") + 4
        if not self.buf.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(bytes(self.buf[:end]).decode())
        del self.buf[:end]

    async def frame(self) -> tuple[int, bytes]:
        while True:
            if len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                at = 2
                if n == 126:
                    at = 4
                    n = struct.unpack_from("!H", self.buf, 2)[0] if len(self.buf) >= 4 else -1
                elif n == 127:
                    at = 10
                    n = struct.unpack_from("!Q", self.buf, 2)[0] if len(self.buf) >= 10 else -1
                if n >= 0 and len(self.buf) >= at + n:
                    opcode = self.buf[0] & 0x0F
                    payload = bytes(self.buf[at : at + n])
                    del self.buf[: at + n]
                    return opcode, payload
            await self._fill()


async def _until_text(reader: _Reader) -> bytes:
    """The next text frame; Pings on the way are answered (as Node ``ws`` does)."""
    while True:
        opcode, payload = await reader.frame()
        if opcode == 0x9:
            await reader.stream.send_all(_frame(0xA, payload))
        elif opcode == 0x1:
            return payload
        elif opcode == 0x8:
            raise EOFError("closed early")


async def _one_call(port: int, templates: dict[str, str], n: int) -> None:
    sid = f"0000{n:04x}-0000-4000-8000-{n:012x}"
    ids = {
        "__CALLSID__": sid,
        "__CALLID__": f"{sid}@10.0.13.72",
        "__SBCCALLID__": f"{n:032x}@0.0.0.0",
        "__TRACEID__": f"{n:032x}",
    }

    def fill(template: str, msgid: str) -> bytes:
        text = template.replace("__MSGID__", msgid)
        for k, v in ids.items():
            text = text.replace(k, v)
        return text.encode()

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        reader = _Reader(stream)
        await stream.send_all(_HEAD.format(key=_KEY.decode(), port=port).encode())
        await reader.head()
        await stream.send_all(_frame(0x1, fill(templates["s"], f"s{n}")))
        ack = json.loads(await _until_text(reader))
        assert ack["type"] == "ack" and ack["msgid"] == f"s{n}", ack
        await stream.send_all(_frame(0x1, fill(templates["g"], f"g{n}")))
        ack = json.loads(await _until_text(reader))
        assert ack["type"] == "ack" and ack["data"][-1]["verb"] == "hangup", ack
        await stream.send_all(_frame(0x1, fill(templates["c"], f"c{n}")) + _frame(0x8, b"\x03\xe8"))
        while True:
            opcode, payload = await reader.frame()
            if opcode == 0x9:
                await stream.send_all(_frame(0xA, payload))
            elif opcode == 0x8:
                break
    finally:
        await stream.aclose()


async def drive(port: int, calls: int, concurrency: int, first: int = 0) -> None:
    """Run ``calls`` IVR calls, ``concurrency`` at a time; raises on a contract violation."""
    templates = _templates()
    counter = iter(range(first, first + calls))

    async def worker() -> None:
        for n in counter:
            await _one_call(port, templates, n)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)


# -- the apps --------------------------------------------------------------------------------


async def _start_app(app: str, port: int, nursery: trio.Nursery) -> None:
    """Start ``app`` listening on ``port`` in ``nursery``."""
    if app == "trio":
        from trio_app import ivr

        from jambonz_trio import Route, ServerConfig, serve_jambonz

        await nursery.start(
            partial(
                serve_jambonz,
                Route(path="/ivr", handler=ivr),
                host="127.0.0.1",
                port=port,
                config=ServerConfig(max_connections=12_000),
            )
        )
    else:
        from floor_wsproto_app import handler

        await nursery.start(partial(trio.serve_tcp, handler, port, host="127.0.0.1"))


def serve(app: str, port: int, ready: Path) -> None:
    """Serve ``app`` on ``port`` until SIGINT; write ``ready`` once listening."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await _start_app(app, port, nursery)
            await trio.Path(ready).write_text("ok")

    trio.run(_until_sigint, main)


async def _until_sigint(main: Any) -> None:
    """Run ``main`` until SIGINT, then cancel it (a clean exit: callgrind and the profiler
    write their output)."""
    async with trio.open_nursery() as nursery:

        async def stop() -> None:
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(stop)
        await main()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run_served(cmd: list[str], port: int, ready: Path, phases: list[tuple[int, int]], conc: int) -> None:
    """Start ``cmd`` (an app serving ``port``), drive each ``(first, calls)`` phase, SIGINT it."""
    proc = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + 600
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the app did not start")
            time.sleep(0.2)
        for first, calls in phases:
            if calls:
                trio.run(drive, port, calls, conc, first)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=600)


def callgrind(app: str, small: int, big: int, warmup: int, conc: int) -> dict[str, Any]:
    """Instructions per call of ``app`` (see the module docstring)."""
    totals = {}
    for calls in (small, big):
        with tempfile.TemporaryDirectory() as tmp:
            port = _free_port()
            ready = Path(tmp) / "ready"
            out = Path(tmp) / "callgrind.out"
            cmd = [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                "--quiet",
                sys.executable,
                __file__,
                "serve",
                "--app",
                app,
                "--port",
                str(port),
                "--ready",
                str(ready),
            ]
            _run_served(cmd, port, ready, [(0, warmup), (warmup, calls)], conc)
            text = out.read_text(errors="replace")
            found = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
            assert found is not None, "no totals in the callgrind output"
            totals[calls] = int(found.group(1))
    per_call = (totals[big] - totals[small]) / (big - small)
    return {"app": app, "totals": totals, "instructions_per_call": round(per_call)}


class _Steps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0
        self.spawned = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1


def counts_serve(app: str, port: int, ready: Path, out: Path) -> None:
    """Serve; on SIGUSR1 (the warm-up is over) start counting, until SIGINT; write counts."""
    profiler = cProfile.Profile()
    steps = _Steps()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await _start_app(app, port, nursery)
            with trio.open_signal_receiver(signal.SIGUSR1) as signals:
                await trio.Path(ready).write_text("ok")
                async for _ in signals:
                    break
            trio.lowlevel.add_instrument(steps)
            profiler.enable()

    trio.run(_until_sigint, main)
    profiler.disable()
    profiler.dump_stats(out.with_suffix(".pstats"))
    stats = pstats.Stats(profiler)
    total = 0
    by_name: dict[str, int] = {}
    for (file, _line, name), (_cc, nc, *_rest) in stats.stats.items():  # type: ignore[attr-defined]
        total += nc
        key = f"{Path(file).name}:{name}"
        by_name[key] = by_name.get(key, 0) + nc
    scopes = sum(v for k, v in by_name.items() if k.startswith("_run.py:") and k.endswith("__enter__"))
    checkpoints = sum(
        by_name.get(k, 0)
        for k in (
            "_run.py:checkpoint",
            "_run.py:cancel_shielded_checkpoint",
            "_traps.py:wait_task_rescheduled",
        )
    )
    out.write_text(
        json.dumps(
            {
                "function_calls": total,
                "cancel_scope_enters": scopes,
                "checkpoints_and_waits": checkpoints,
                "task_steps": steps.steps,
                "tasks_spawned": steps.spawned,
                "top": sorted(by_name.items(), key=lambda kv: -kv[1])[:40],
            }
        )
    )


def counts(app: str, calls: int, warmup: int, conc: int, keep: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        ready, out = Path(tmp) / "ready", Path(tmp) / "counts.json"
        cmd = [sys.executable, __file__, "counts-serve", "--app", app, "--port", str(port)]
        cmd += ["--ready", str(ready), "--out", str(out)]
        proc = subprocess.Popen(cmd)
        try:
            while not ready.exists():
                if proc.poll() is not None:
                    raise RuntimeError("the app did not start")
                time.sleep(0.1)
            trio.run(drive, port, warmup, conc, 0)
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.5)  # (bench tooling) lets the app switch the profiler on
            trio.run(drive, port, calls, conc, warmup)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        data: dict[str, Any] = json.loads(out.read_text())
        if keep is not None:
            keep.write_bytes(out.with_suffix(".pstats").read_bytes())
    per_call = {k: round(v / calls, 1) for k, v in data.items() if isinstance(v, int)}
    top = [(name, round(n / calls, 1)) for name, n in data["top"]]
    return {"app": app, "calls": calls, "per_call": per_call, "top": top}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    cg = sub.add_parser("callgrind")
    cg.add_argument("--app", choices=("trio", "floorws"), default="trio")
    cg.add_argument("--small", type=int, default=50)
    cg.add_argument("--big", type=int, default=250)
    cg.add_argument("--warmup", type=int, default=30)
    cg.add_argument("--concurrency", type=int, default=10)
    ct = sub.add_parser("counts")
    ct.add_argument("--app", choices=("trio", "floorws"), default="trio")
    ct.add_argument("--calls", type=int, default=1000)
    ct.add_argument("--warmup", type=int, default=200)
    ct.add_argument("--concurrency", type=int, default=10)
    ct.add_argument("--top", type=int, default=0, help="also list the N most called functions")
    ct.add_argument("--pstats", type=Path, help="keep the cProfile statistics here")
    sv = sub.add_parser("serve")
    sv.add_argument("--app", choices=("trio", "floorws"), default="trio")
    sv.add_argument("--port", type=int, required=True)
    sv.add_argument("--ready", type=Path, required=True)
    cs = sub.add_parser("counts-serve")
    cs.add_argument("--app", choices=("trio", "floorws"), default="trio")
    cs.add_argument("--port", type=int, required=True)
    cs.add_argument("--ready", type=Path, required=True)
    cs.add_argument("--out", type=Path, required=True)
    dr = sub.add_parser("drive")
    dr.add_argument("--port", type=int, required=True)
    dr.add_argument("--calls", type=int, default=100)
    dr.add_argument("--concurrency", type=int, default=10)
    args = ap.parse_args()
    if args.cmd == "callgrind":
        print(json.dumps(callgrind(args.app, args.small, args.big, args.warmup, args.concurrency)))
    elif args.cmd == "counts":
        result = counts(args.app, args.calls, args.warmup, args.concurrency, args.pstats)
        top = result.pop("top")
        print(json.dumps(result))
        for name, n in top[: args.top]:
            print(f"  {n:8.1f}  {name}")
    elif args.cmd == "serve":
        serve(args.app, args.port, args.ready)
    elif args.cmd == "counts-serve":
        counts_serve(args.app, args.port, args.ready, args.out)
    else:
        trio.run(drive, args.port, args.calls, args.concurrency, 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
