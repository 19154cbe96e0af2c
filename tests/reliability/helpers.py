"""Shared pieces of the reliability suite: real-socket jambonz-like clients, hand-made frames,
resource probes (tasks, fds, RSS) and bounded polling.

Everything here talks to 127.0.0.1 only, and every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pytest
import trio
from wsproto.events import AcceptConnection

from tests.admission.helpers import basic
from tests.engine.helpers import RawClient

__all__ = [
    "AUTH",
    "Client",
    "PASSWORD",
    "USER",
    "ErrorRecorder",
    "Latencies",
    "SHARED_TASKS",
    "RawClient",
    "all_tasks",
    "connect_call",
    "drip",
    "fd_count",
    "frame",
    "hook_loop",
    "open_raw",
    "proc_status",
    "session_data",
    "slow_enabled",
    "task_names",
    "tasks_living",
    "wait_until",
]

USER = "jambonz"
PASSWORD = "pa:ss"
AUTH: tuple[bytes, bytes] = (b"Authorization", basic(USER, PASSWORD))


def slow_enabled() -> bool:
    """The full-size load tests run only with ``JAMBONZ_TRIO_SLOW=1``."""
    return os.environ.get("JAMBONZ_TRIO_SLOW") == "1"


slow = pytest.mark.skipif(not slow_enabled(), reason="full-size load test: set JAMBONZ_TRIO_SLOW=1")


def session_data(call_sid: str) -> dict[str, Any]:
    return {
        "call_sid": call_sid,
        "account_sid": "acct-1",
        "from": "+15083084809",
        "to": "+15083728299",
        "direction": "inbound",
        "call_status": "trying",
    }


# -- resource probes -------------------------------------------------------------------------


def fd_count(pid: int | str = "self") -> int:
    """Open file descriptors of a process (Linux ``/proc``)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


#: the library's one deadline task per trio run (jambonz_trio/_timers.py), started with the
#: first call and living as long as the run: not a call's task
SHARED_TASKS = ("jambonz_trio deadlines",)


def tasks_living() -> int:
    """Living trio tasks, the library's run-wide deadline task left out."""
    shared = sum(1 for task in all_tasks() if task.name in SHARED_TASKS)
    return trio.lowlevel.current_statistics().tasks_living - shared


def all_tasks() -> list[trio.lowlevel.Task]:
    """Every living trio task of the run (system tasks included)."""
    out: list[trio.lowlevel.Task] = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        out.append(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return out


def task_names() -> list[str]:
    """Every living trio task but the run-wide deadline task, as ``name @ file:line`` of
    where it is suspended."""
    out: list[str] = []
    for task in all_tasks():
        if task.name in SHARED_TASKS:
            continue
        frames = list(task.iter_await_frames())
        where = f"{frames[-1][0].f_code.co_filename}:{frames[-1][1]}" if frames else "?"
        out.append(f"{task.name} @ {where}")
    return sorted(out)


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """``VmRSS`` / ``VmHWM`` (peak RSS) of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


async def wait_until(predicate: Callable[[], bool], within: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``within`` (real seconds) passes. Bounded."""
    with trio.move_on_after(within):
        for _ in range(int(within / interval) + 2):
            if predicate():
                return True
            await trio.sleep(interval)
    return bool(predicate())


class ErrorRecorder(logging.Handler):
    """Collects every record at ``level`` or above from the ``jambonz_trio`` loggers."""

    def __init__(self, level: int = logging.ERROR) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]

    def count(self, text: str) -> int:
        return sum(text in m for m in self.messages())


@attrs.define
class Latencies:
    samples: list[float] = attrs.Factory(list)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def pct(self, p: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> dict[str, float]:
        return {
            "n": len(self.samples),
            "p50_ms": round(self.pct(50) * 1000, 2),
            "p99_ms": round(self.pct(99) * 1000, 2),
            "max_ms": round(max(self.samples, default=0.0) * 1000, 2),
        }


# -- clients -----------------------------------------------------------------------------------


#: The shared hand-driven client (tests/engine/helpers.py).
Client = RawClient


async def open_raw(
    port: int,
    path: str = "/app",
    *,
    headers: Sequence[tuple[bytes, bytes]] = (AUTH,),
    subprotocols: list[str] | None = None,
    auto_pong: bool = True,
) -> tuple[Client, Any]:
    """TCP connect + upgrade. Returns the client and the handshake event (accept or reject)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    client = Client(stream, auto_pong=auto_pong)
    try:
        event = await client.handshake(path, subprotocols=subprotocols, extra_headers=list(headers))
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return client, event


async def connect_call(port: int, sid: str, *, path: str = "/app", msgid: str | None = None) -> Client:
    """A live call: upgrade (with credentials), ``session:new``, its ack checked."""
    client, event = await open_raw(port, path)
    if not isinstance(event, AcceptConnection):
        await client.drop()
        raise AssertionError(f"{sid}: handshake refused: {event!r}")
    mid = msgid or f"{sid}-new"
    await client.send("session:new", mid, session_data(sid), call_sid=sid)
    ack = await client.receive()
    if ack is None or ack.get("type") != "ack" or ack.get("msgid") != mid:
        await client.drop()
        raise AssertionError(f"{sid}: bad session:new ack {ack!r}")
    await client.answer_receipt()  # the Pong jambonz's client sends as it reads the ack
    return client


async def drip(stream: trio.abc.SendStream, data: bytes, interval: float = 0.1) -> None:
    """Send ``data`` one byte every ``interval`` seconds (slowloris), until done or the peer
    is gone."""
    try:
        for byte in data:
            await stream.send_all(bytes([byte]))
            await trio.sleep(interval)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def frame(opcode: int, payload: bytes, *, fin: bool = True, declared: int | None = None) -> bytes:
    """A masked client frame built by hand (zero mask, so the payload goes as is).

    ``declared`` overrides the length in the header (to announce more than is sent)."""
    length = len(payload) if declared is None else declared
    head = bytes([(0x80 if fin else 0) | opcode])
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    return head + b"\x00\x00\x00\x00" + payload


def text_json(mtype: str, msgid: str, data: dict[str, Any] | None = None, **env: Any) -> bytes:
    out: dict[str, Any] = {"type": mtype, "msgid": msgid, **env, "data": data or {}}
    return json.dumps(out).encode()


async def hook_loop(
    client: Client, sid: str, stop: trio.Event, lat: Latencies, lost: list[str], *, pause: float
) -> None:
    """Send ``verb:hook`` after ``verb:hook`` on a live call until ``stop``, recording each
    answer's latency; the first answer missing after 4.5 s goes to ``lost`` and ends the loop."""
    i = 0
    while not stop.is_set():
        i += 1
        msgid = f"{sid}-{i}"
        t0 = trio.current_time()
        await client.send("verb:hook", msgid, {}, hook=f"/{msgid}", call_sid=sid)
        with trio.move_on_after(4.5):
            reply = await client.receive()
            if reply is not None and reply.get("msgid") == msgid:
                lat.add(trio.current_time() - t0)
                await trio.sleep(pause)
                continue
        lost.append(msgid)
        return
