"""Admission under load, on real sockets: FM-04 (slowloris at scale while calls run) and FM-07
(file-descriptor exhaustion in a server subprocess with a lowered ``RLIMIT_NOFILE``).

The deadline itself is proven on virtual time in tests/admission/test_limits.py; here the
question is whether hundreds of stuck handshakes are all cut, and whether the live calls keep
their acks meanwhile. Bounded by default; ``JAMBONZ_TRIO_SLOW=1`` runs the catalogue's size
(1,000 silent + 200 dribbling sockets).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from jambonz_trio import BasicAuth, CallConfig, JambonzServer, Route, ServerConfig, serve_jambonz
from tests.admission.helpers import build_request

from .helpers import AUTH, PASSWORD, USER, Latencies, connect_call, drip, slow, wait_until
from .procs import server_process
from .test_chaos import app


@attrs.frozen
class Slowloris:
    silent: int
    dribbling: int
    calls: int
    handshake_timeout: float
    #: Scheduling slack allowed past the deadline: the *observed* cut lags the deadline by the
    #: time the loops take to see it (one loop for everything when ``separate`` is false).
    slack: float = 2.0
    #: Run the server in its own process (:mod:`.serverproc`), as in production, where the
    #: attackers are elsewhere: the server's loop is not also running 1,200 attacking sockets.
    separate: bool = False


async def _hooks(port: int, sid: str, lat: Latencies, stop: trio.Event, lost: list[str]) -> None:
    client = await connect_call(port, sid)
    try:
        for i in range(100_000):
            if stop.is_set():
                return
            t0 = trio.current_time()
            await client.send("verb:hook", f"{sid}-{i}", {}, hook=f"/h{i}", call_sid=sid)
            reply: dict[str, Any] | None = None
            with trio.move_on_after(4.5):
                reply = await client.receive()
            if reply is None or reply.get("msgid") != f"{sid}-{i}" or not reply.get("data"):
                lost.append(f"{sid}-{i}: {reply!r}")
                return
            lat.add(trio.current_time() - t0)
            with trio.move_on_after(0.05):
                await stop.wait()
    finally:
        await client.drop()


async def _held_until_cut(port: int, dribble: bytes | None, budget: float, cut_after: list[float]) -> None:
    """One slowloris socket: silent, or dribbling ``dribble`` a byte every 0.1 s. Records how
    long the server took to close it (``inf`` if it never did within ``budget``)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    t0 = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:
            if dribble:
                nursery.start_soon(drip, stream, dribble)
            with trio.move_on_after(budget):
                for _ in range(1000):
                    try:
                        if not await stream.receive_some(4096):
                            break
                    except trio.BrokenResourceError:
                        break
                cut_after.append(trio.current_time() - t0)
            nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def _server(plan: Slowloris) -> AsyncIterator[tuple[int, Callable[[], Awaitable[bool]]]]:
    """The server under attack: its port, and an async check that it holds no connection and
    no pending handshake (polled until true, for up to 5 s)."""
    server_config: dict[str, Any] = {
        "handshake_timeout": plan.handshake_timeout,
        "max_pending_handshakes": plan.silent + plan.dribbling + 100,
    }
    if plan.separate:
        async with server_process({"server": server_config, "call": {"ping_interval": 30}}) as proc:

            async def idle_in_process() -> bool:
                with trio.move_on_after(5):
                    while True:
                        stats = await proc.stats()
                        if (stats["connections"], stats["pending"]) == (0, 0):
                            return True
                        await trio.sleep(0.05)
                return False

            yield proc.port, idle_in_process
        return
    route = Route(path="/app", handler=app, auth=BasicAuth(username=USER, password=PASSWORD))
    config = ServerConfig(**server_config, call=CallConfig(ping_interval=30))
    async with trio.open_nursery() as nursery:
        server: JambonzServer = await nursery.start(partial(serve_jambonz, route, config=config))

        async def idle() -> bool:
            s = server.statistics
            return await wait_until(lambda: (s().connections, s().pending_handshakes) == (0, 0), 5)

        yield server.port, idle
        nursery.cancel_scope.cancel()


async def run_slowloris(plan: Slowloris) -> dict[str, Any]:
    report: dict[str, Any] = attrs.asdict(plan)
    async with _server(plan) as (port, idle):
        stop = trio.Event()
        lost: list[str] = []
        before, during = Latencies(), Latencies()
        async with trio.open_nursery() as calls:
            lat_ref = [before]

            async def call(i: int) -> None:
                # each sample goes to whichever phase is current
                sink = Latencies()
                task = partial(_hooks, port, f"live-{i}", sink, stop, lost)
                async with trio.open_nursery() as inner:
                    inner.start_soon(task)
                    while not stop.is_set():
                        with trio.move_on_after(0.05):
                            await stop.wait()
                        lat_ref[0].samples.extend(sink.samples)
                        sink.samples.clear()
                    lat_ref[0].samples.extend(sink.samples)

            for i in range(plan.calls):
                calls.start_soon(call, i)
            await trio.sleep(1.0)  # baseline latency, no attack
            lat_ref[0] = during
            cut_after: list[float] = []
            request = build_request(extra=[AUTH])
            budget = plan.handshake_timeout + 5.0
            async with trio.open_nursery() as attackers:
                for i in range(plan.silent + plan.dribbling):
                    dribble = request[:-1] if i >= plan.silent else None
                    attackers.start_soon(_held_until_cut, port, dribble, budget, cut_after)
                    if i % 50 == 49:
                        await trio.lowlevel.checkpoint()
            stop.set()
        report["closed"] = len(cut_after)
        report["slowest_cut_s"] = round(max(cut_after), 2)
        report["ack_rtt_before"] = before.summary()
        report["ack_rtt_during"] = during.summary()
        report["lost"] = len(lost)
        report["settled"] = settled = await idle()
    print("slowloris report:", json.dumps(report))
    assert lost == [], lost[:5]
    assert report["closed"] == plan.silent + plan.dribbling, report
    # every stuck handshake is cut at the total deadline (+ scheduling slack on a busy box)
    assert report["slowest_cut_s"] <= plan.handshake_timeout + plan.slack, report
    # the calls stay far inside jambonz's 5 s (2x baseline is not a stable bar on 2 shared
    # cores; the ratio is reported in docs/reliability.md)
    assert during.pct(99) < 1.0, report
    assert settled, report
    return report


async def test_fm04_slowloris_at_scale_bounded() -> None:
    """FM-04 / S-7: 300 silent + 60 dribbling sockets while 50 calls run hooks."""
    await run_slowloris(Slowloris(silent=300, dribbling=60, calls=50, handshake_timeout=1.0))


@slow
@pytest.mark.slow
async def test_fm04_slowloris_at_scale_full() -> None:
    """FM-04 / S-7 at the catalogue's size: 1,000 silent + 200 dribbling, 50 calls, against a
    server in its own process, as in production. In the test's own loop the 1,200 attacking
    sockets and the 50 callers outrun that loop on a 2-core VM (cuts observed up to 6 s late,
    by the attackers' clock), which measures the harness, not the server."""
    await run_slowloris(
        Slowloris(silent=1000, dribbling=200, calls=50, handshake_timeout=2.0, slack=3.0, separate=True)
    )


# -- FM-07: EMFILE ----------------------------------------------------------------------------


async def test_fm07_fd_exhaustion_then_recovery() -> None:
    """FM-07: a server limited to 64 fds is flooded with 150 idle connections (its accept()
    fails with EMFILE; trio backs off and retries). Once the flood is released a new call is
    served promptly, twice in a row, and the server is back to zero connections."""
    config = {
        "nofile": 64,
        # the idle sockets must hold their fds: no first-byte cut, no per-source cap
        "server": {
            "handshake_timeout": 30.0,
            "first_byte_timeout": 30.0,
            "max_pending_handshakes": 1000,
            "max_pending_per_source": None,
        },
        "call": {"ping_interval": 30},
    }
    async with server_process(config) as server:
        base = await server.stats()
        for attempt in range(2):
            flood: list[trio.SocketStream] = []
            try:
                with trio.fail_after(20):
                    for _ in range(150):
                        flood.append(await trio.open_tcp_stream("127.0.0.1", server.port))
                    for _ in range(200):
                        if server.stderr_count("EMFILE"):
                            break
                        await trio.sleep(0.05)
                    assert server.stderr_count("EMFILE"), server.stderr_tail()
                    stats = await server.stats()
                    assert stats["fds"] <= 64
            finally:
                for stream in flood:
                    await trio.aclose_forcefully(stream)
            t0 = trio.current_time()
            with trio.fail_after(10):
                sid = f"after-flood-{attempt}"
                client = await connect_call(server.port, sid)
                await client.send("verb:hook", "h", {}, hook="/x", call_sid=sid)
                reply = await client.receive()
                await client.drop()
            recovered_in = trio.current_time() - t0
            assert reply is not None and reply.get("msgid") == "h", reply
            print(f"FM-07: new call served {recovered_in:.3f} s after the flood was released")
            assert recovered_in < 3.0  # the catalogue's 1 s, with slack for a shared 2-core box
            for _ in range(200):
                stats = await server.stats()
                if stats["connections"] == 0 and stats["pending"] == 0:
                    break
                await trio.sleep(0.05)
            assert (stats["connections"], stats["pending"]) == (0, 0), stats
            assert stats["fds"] == base["fds"], (stats, base)
        assert server.alive()
