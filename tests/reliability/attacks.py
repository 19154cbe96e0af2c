"""Admission attacks (issue 19, items 8-10) replayed against a server in a subprocess while
legitimate calls start and established calls run hooks.

One run = one attack kind for ``duration`` seconds. Meanwhile legitimate new calls start from
127.0.0.1 at ``legit_rate`` per second, each as jambonz would: TCP connect, upgrade with Basic
credentials, ``session:new``, close. A new call *gets through* if its 101 arrives within
jambonz's 1.5 s handshake timeout and its ``session:new`` is acked within 5 s. Established
calls (connected before the attack) send a ``verb:hook`` every 0.1 s and expect the app's own
answer within 4.5 s.

Attack kinds (the attacker's sockets come from 127.0.0.2 upwards: on Linux all of 127/8 is
loopback, so each is a separate source address for the server):

- ``silent``: up to ``sockets`` connections that never send a byte, opened at ``open_rate``/s;
- ``dribble``: the same, each sending a valid request head one byte every 0.1 s;
- ``heads``: ``heads_rate`` request heads per second, each ~15 KB of ``head_headers`` tiny
  header lines (CPU before authentication);
- ``flood``: ``flood_calls`` authenticated calls each sending ``flood_messages``
  ``call:status`` as fast as TCP takes them.

``open_route`` plans run the same against a route without credentials: the legitimate calls'
address never becomes known (no reserve), only the per-source rule keeps room for them.

``python -m tests.reliability.attacks ATTACK [--repo DIR] [--size full]`` prints the JSON
report; ``--repo`` runs the server from another checkout (for before/after figures).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
from wsproto.events import AcceptConnection

from .helpers import AUTH, Client, Latencies, drip, frame, session_data, text_json
from .procs import server_process

JAMBONZ_HANDSHAKE_TIMEOUT = 1.5
LEGIT_SOURCE = "127.0.0.1"


def attacker_source(i: int) -> str:
    """The i-th attacker address: 127.0.0.2, 127.0.0.3, ..."""
    return f"127.0.0.{2 + i}"


@attrs.frozen(kw_only=True)
class Plan:
    attack: str
    duration: float = 3.0
    legit_rate: float = 10.0
    established: int = 10
    sources: int = 1
    #: seconds of attack before the legitimate calls start
    warmup: float = 1.0
    # silent / dribble: ``sockets`` held at a time, each replaced as soon as it is cut
    sockets: int = 256
    #: open the first ``sockets`` at once, or ``open_rate`` a second
    burst: bool = True
    open_rate: float = 51.0
    # heads
    heads_rate: float = 400.0
    head_headers: int = 3000
    # flood
    flood_calls: int = 50
    flood_messages: int = 2000
    #: no credentials on the route: nobody becomes known, there is no reserve
    open_route: bool = False
    #: ServerConfig keyword arguments for the server (besides its defaults)
    server: dict[str, Any] = attrs.field(factory=dict)


BOUNDED: dict[str, Plan] = {
    "silent": Plan(attack="silent"),
    "silent-open": Plan(attack="silent", open_route=True),
    "dribble": Plan(attack="dribble", sources=8),
    "heads": Plan(attack="heads"),
    "flood": Plan(attack="flood", flood_calls=150),
}
#: The sizes of issue 19: 300 flooding calls; 600 legitimate calls through a slowloris of 256
#: sockets opened 51 a second (then ~51 new a second against a 5 s handshake deadline).
FULL: dict[str, Plan] = {
    "silent": Plan(attack="silent", duration=12.0, legit_rate=50.0, established=50, warmup=6.0, burst=False),
    "silent-open": Plan(
        attack="silent", duration=12.0, legit_rate=50.0, established=50, warmup=6.0, open_route=True
    ),
    "dribble": Plan(
        attack="dribble", duration=12.0, legit_rate=50.0, established=50, sources=8, warmup=6.0, burst=False
    ),
    "heads": Plan(attack="heads", duration=10.0, legit_rate=6.0, established=50),
    "flood": Plan(attack="flood", duration=10.0, legit_rate=6.0, established=20, flood_calls=300),
}


@attrs.define
class Tally:
    legit_started: int = 0
    legit_ok: int = 0
    legit_failures: dict[str, int] = attrs.Factory(dict)
    handshake: Latencies = attrs.Factory(Latencies)
    hooks: Latencies = attrs.Factory(Latencies)
    hooks_lost: list[str] = attrs.Factory(list)
    attack_connections: int = 0
    attack_refused: int = 0

    def fail(self, why: str) -> None:
        self.legit_failures[why] = self.legit_failures.get(why, 0) + 1


def upgrade_head(extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    lines = [
        b"GET /app HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
        b"Sec-WebSocket-Protocol: ws.jambonz.org",
    ]
    lines += [name + b": " + value for name, value in extra or []]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def hostile_head(headers: int) -> bytes:
    """A complete upgrade head padded with ``headers`` tiny header lines (``X:1``, 5 bytes
    each: 3,000 of them are ~15 KB, under the 16 KiB head cap)."""
    return upgrade_head()[:-2] + b"X:1\r\n" * headers + b"\r\n"


async def _connect(source: str, port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port, local_address=source)


async def _until_closed(stream: trio.SocketStream) -> bytes:
    """Read until the server closes; returns the first bytes it sent (a refusal, or b"")."""
    first = b""
    while True:
        try:
            chunk = await stream.receive_some(4096)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return first
        if not chunk:
            return first
        if not first:
            first = bytes(chunk)


# -- legitimate traffic ------------------------------------------------------------------------


async def legit_call(port: int, sid: str, tally: Tally) -> None:
    tally.legit_started += 1
    t0 = trio.current_time()
    try:
        with trio.move_on_after(JAMBONZ_HANDSHAKE_TIMEOUT) as scope:
            stream = await _connect(LEGIT_SOURCE, port)
        if scope.cancelled_caught:
            tally.fail("connect timeout")
            return
    except OSError:
        tally.fail("connect error")
        return
    client = Client(stream)
    try:
        event: Any = None
        with trio.move_on_at(t0 + JAMBONZ_HANDSHAKE_TIMEOUT):
            try:
                event = await client.handshake("/app", extra_headers=[AUTH])
            except (EOFError, trio.BrokenResourceError):
                event = "closed"
        if not isinstance(event, AcceptConnection):
            status = getattr(event, "status_code", None)
            tally.fail(f"handshake {status or event or 'timeout'}")
            return
        tally.handshake.add(trio.current_time() - t0)
        ack: dict[str, Any] | None = None
        with trio.move_on_after(5.0):
            await client.send("session:new", f"{sid}-new", session_data(sid), call_sid=sid)
            ack = await client.receive()
        if ack is None or ack.get("msgid") != f"{sid}-new":
            tally.fail("session:new not acked")
            return
        tally.legit_ok += 1
        await client.close()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        tally.fail("connection lost")
    finally:
        await trio.aclose_forcefully(stream)


async def established_call(
    port: int,
    sid: str,
    tally: Tally,
    stop: trio.Event,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A call set up before the attack (reported started once acked), then a hook every 0.1 s."""
    stream = await _connect(LEGIT_SOURCE, port)
    client = Client(stream)
    try:
        with trio.fail_after(10):
            event = await client.handshake("/app", extra_headers=[AUTH])
            assert isinstance(event, AcceptConnection), event
            await client.send("session:new", f"{sid}-new", session_data(sid), call_sid=sid)
            assert (await client.receive() or {}).get("msgid") == f"{sid}-new"
        task_status.started()
        i = 0
        while not stop.is_set():
            i += 1
            t0 = trio.current_time()
            mid = f"{sid}-{i}"
            await client.send("verb:hook", mid, {}, hook=f"/h{i}", call_sid=sid)
            reply: dict[str, Any] | None = None
            with trio.move_on_after(4.5):
                reply = await client.receive()
            if reply is None or reply.get("msgid") != mid or not reply.get("data"):
                tally.hooks_lost.append(f"{mid}: {reply!r}")
                return
            tally.hooks.add(trio.current_time() - t0)
            with trio.move_on_after(0.1):
                await stop.wait()
    finally:
        await trio.aclose_forcefully(stream)


# -- attackers -----------------------------------------------------------------------------------


async def _paced(rate: float, stop: trio.Event, spawn: Callable[[int], Awaitable[None]]) -> None:
    """Call ``spawn(i)`` ``rate`` times a second (each in its own task) until ``stop``."""
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        i = 0
        while not stop.is_set():
            nursery.start_soon(spawn, i)
            i += 1
            with trio.move_on_at(t0 + i / rate):
                await stop.wait()


async def slowloris(plan: Plan, port: int, tally: Tally, stop: trio.Event) -> None:
    """``plan.sockets`` workers, each holding one connection and opening the next as soon as
    the server cuts it (after a 503, a second later: holding slots is the point, not a
    connection flood). They start all at once (``burst``) or ``open_rate`` a second."""
    dribble = upgrade_head([AUTH])[:-1] if plan.attack == "dribble" else b""

    async def hold(stream: trio.SocketStream) -> bool:
        """Until the server cuts the connection (or the attack ends); True if refused."""
        async with trio.open_nursery() as nursery:
            if dribble:
                nursery.start_soon(drip, stream, dribble)
            refused = False
            with trio.move_on_at(ends):
                refused = (await _until_closed(stream)).startswith(b"HTTP/1.1 503")
            nursery.cancel_scope.cancel()
        return refused

    async def worker(i: int) -> None:
        if not plan.burst:
            await trio.sleep(i / plan.open_rate)
        while not stop.is_set():
            try:
                stream = await _connect(attacker_source(i % plan.sources), port)
            except OSError:
                await trio.sleep(0.1)
                continue
            tally.attack_connections += 1
            try:
                refused = await hold(stream)
            finally:
                await trio.aclose_forcefully(stream)
            if refused:
                tally.attack_refused += 1
                with trio.move_on_after(1.0):
                    await stop.wait()

    async with trio.open_nursery() as nursery:
        ends = trio.current_time() + plan.warmup + plan.duration + 8
        for i in range(plan.sockets):
            nursery.start_soon(worker, i)
            if plan.burst and i % 20 == 19:
                await trio.sleep(0.01)
        await stop.wait()
        nursery.cancel_scope.cancel()


async def heads(plan: Plan, port: int, tally: Tally, stop: trio.Event) -> None:
    head = hostile_head(plan.head_headers)

    async def one(i: int) -> None:
        try:
            stream = await _connect(attacker_source(i % plan.sources), port)
        except OSError:
            return
        tally.attack_connections += 1
        try:
            with trio.move_on_after(10):
                await stream.send_all(head)
                if not (await _until_closed(stream)).startswith(b"HTTP/1.1 101"):
                    tally.attack_refused += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    await _paced(plan.heads_rate, stop, one)


async def open_flood_calls(plan: Plan, port: int) -> list[tuple[str, Client]]:
    """The flooding calls, authenticated and acked, before the measurement starts."""
    out: list[tuple[str, Client]] = []
    limiter = trio.CapacityLimiter(20)

    async def one(i: int) -> None:
        async with limiter:
            sid = f"flood-{i}"
            stream = await _connect(attacker_source(i % plan.sources), port)
            client = Client(stream)
            event = await client.handshake("/app", extra_headers=[AUTH])
            assert isinstance(event, AcceptConnection), event
            await client.send("session:new", f"{sid}-new", session_data(sid), call_sid=sid)
            assert (await client.receive() or {}).get("msgid") == f"{sid}-new"
            out.append((sid, client))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(plan.flood_calls):
                nursery.start_soon(one, i)
    return out


async def flood(plan: Plan, calls: list[tuple[str, Client]], tally: Tally, stop: trio.Event) -> None:
    async def one(sid: str, client: Client) -> None:
        status = {"call_status": "in-progress", "sip_status": 200}
        payload = frame(0x1, text_json("call:status", "", status, call_sid=sid))
        batch = payload * 100
        try:
            for _ in range(plan.flood_messages // 100):
                if stop.is_set():
                    return
                await client.stream.send_all(batch)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    tally.attack_connections = len(calls)
    async with trio.open_nursery() as nursery:
        for sid, client in calls:
            nursery.start_soon(one, sid, client)
        await stop.wait()
        nursery.cancel_scope.cancel()


# -- one run ---------------------------------------------------------------------------------


async def run(plan: Plan, *, repo: Path | None = None) -> dict[str, Any]:
    """Replay ``plan`` against a fresh server subprocess; returns the report."""
    tally = Tally()
    config = {"server": plan.server, "call": {"ping_interval": 30}, "auth": not plan.open_route}
    async with server_process(config, repo=repo) as server:
        port = server.port
        stop_established, stop_attack = trio.Event(), trio.Event()
        flood_calls = await open_flood_calls(plan, port) if plan.attack == "flood" else []
        async with trio.open_nursery() as outer:
            for i in range(plan.established):
                await outer.start(established_call, port, f"live-{i}", tally, stop_established)
            # one legitimate call first: the server learns jambonz's address, as it would in
            # production long before any attack
            await legit_call(port, "warm-up", tally)
            tally.legit_started = tally.legit_ok = 0
            tally.handshake.samples.clear()
            t0 = trio.current_time()
            async with trio.open_nursery() as attack:
                if plan.attack in ("silent", "dribble"):
                    attack.start_soon(slowloris, plan, port, tally, stop_attack)
                elif plan.attack == "heads":
                    attack.start_soon(heads, plan, port, tally, stop_attack)
                elif plan.attack == "flood":
                    attack.start_soon(flood, plan, flood_calls, tally, stop_attack)
                else:
                    raise ValueError(plan.attack)
                await trio.sleep(plan.warmup)  # let the attack build up
                async with trio.open_nursery() as legit:

                    async def start_legit(i: int) -> None:
                        await legit_call(port, f"new-{i}", tally)

                    legit_stop = trio.Event()
                    legit.start_soon(_paced, plan.legit_rate, legit_stop, start_legit)
                    await trio.sleep(plan.duration)
                    legit_stop.set()
                stop_attack.set()
                attack.cancel_scope.deadline = trio.current_time() + 15
            stop_established.set()
        for _, client in flood_calls:
            await client.drop()
        elapsed = trio.current_time() - t0
        stats = await server.stats()
        alive = server.alive()
    return {
        "attack": plan.attack + ("-open" if plan.open_route else ""),
        "plan": attrs.asdict(plan),
        "elapsed_s": round(elapsed, 1),
        "legit_started": tally.legit_started,
        "legit_ok": tally.legit_ok,
        "legit_success": round(tally.legit_ok / max(1, tally.legit_started), 3),
        "legit_failures": tally.legit_failures,
        "handshake": tally.handshake.summary(),
        "hooks": tally.hooks.summary(),
        "hooks_lost": len(tally.hooks_lost),
        "attack_connections": tally.attack_connections,
        "attack_refused": tally.attack_refused,
        "server_refused": stats["refused"],
        "server_peak_rss_kb": stats["hwm_kb"],
        "server_alive": alive,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("attack", choices=sorted(BOUNDED))
    parser.add_argument("--size", choices=["bounded", "full"], default="bounded")
    parser.add_argument("--repo", type=Path, default=None, help="run the server from this checkout")
    args = parser.parse_args()
    plan = (FULL if args.size == "full" else BOUNDED)[args.attack]
    report = trio.run(partial(run, plan, repo=args.repo))
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
