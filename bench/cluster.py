"""Benchmarks of issue 14: cross-member command latency, 1 vs 2 workers, relayed acks.

    python bench/cluster.py latency [--commands 1000] [--runs 3]
    python bench/cluster.py spread  [--calls 300] [--concurrency 10] [--runs 3]
    python bench/cluster.py relay   [--hooks 1000] [--runs 3]

Both start a private ``redis-server`` on a free loopback port (nothing on disk) and
``examples/ivr.py`` as the app, 127.0.0.1 only.

``latency``: one worker (``examples/ivr.py --redis``) holds a call from the fake jambonz of this
process; this process is a control member that sends ``redirect`` commands to it one after the
other through the cluster (lookup, the owner's inbox, the owner's ``Call.send_command``, the
answer in our inbox). Each sample is one ``send_command`` round trip, measured here. Reports
p50 / p99 per run and their medians.

``spread``: ``examples/ivr.py --workers N`` (N = 1, then 2) with a cluster; ``--calls`` short IVR
calls over TCP (``session:new``, a ``/gather`` hook, hang-up), ``--concurrency`` at a time, from
this process. Reports how the calls spread over the workers (from the cluster's view, while a
batch of calls is held open) and the workers' CPU time per call (utime + stime of the worker
processes from ``/proc``, before and after).

``relay``: two cluster members, each a process on its own port (``tests/cluster/member_process.py``,
which answers every hook at once). A call starts on member A; this process's fake jambonz sends
``--hooks`` ``verb:hook`` requests on a socket to A (direct), then drops it and reconnects to
member B, which relays the call to A, and sends as many again (relayed). Each sample is one
request -> ack round trip, measured by the fake jambonz. Reports p50 / p99 of each per run, the
p99 added by the relay, and their medians. The peer in the same run: one bare Redis hop as the
relay uses it (an ``XADD`` from one coredis client until a blocked ``XREAD`` of another returns
it); a relayed request and its ack take two such hops more than a direct one.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jambonz_trio.cluster import Cluster, ClusterConfig, open_cluster  # noqa: E402
from jambonz_trio.commands import RedirectCommand  # noqa: E402
from jambonz_trio.testing import CallData, open_fake_call, tcp_connector  # noqa: E402
from jambonz_trio.verbs import Say  # noqa: E402
from tests.cluster.redis import PrivateRedis, free_port  # noqa: E402


@contextmanager
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def start_ivr(redis: str, workers: int) -> Iterator[tuple[str, list[int]]]:
    """``examples/ivr.py --redis`` (one process, or ``--workers N``): its URL and the pids that
    serve calls."""
    port = free_port() if workers == 1 else 0
    args = [
        sys.executable,
        "examples/ivr.py",
        "--port",
        str(port),
        "--redis",
        redis,
        "--workers",
        str(workers),
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("serving ws://"):
            raise RuntimeError(f"examples/ivr.py did not start: {line!r}")
        if workers == 1:
            deadline = time.monotonic() + 30
            while True:  # it prints before it listens
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            pids = [proc.pid]
        else:
            tasks = Path(f"/proc/{proc.pid}/task").iterdir()  # workers are started from a thread
            pids = [int(c) for task in tasks for c in (task / "children").read_text().split()]
            pids = [p for p in pids if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        yield line.split()[1], pids
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_listed(control: Cluster, sids: list[str]) -> dict[str, str]:
    """sid -> member, once every sid is in the cluster's view."""
    with trio.fail_after(30):
        while True:
            listed = {c.call_sid: c.member for c in await control.list_calls()}
            if all(s in listed for s in sids):
                return listed
            await trio.sleep(0.05)


# -- latency --------------------------------------------------------------------------------


async def latency_run(redis: str, url: str, commands: int) -> list[float]:
    async with (
        open_cluster(redis, config=ClusterConfig(member_ttl=7.0, op_timeout=2.0)) as control,
        open_fake_call(tcp_connector(url), strict=False) as fc,
    ):
        await fc.start()
        await wait_listed(control, [fc.call.call_sid])
        remote = control.call(fc.call.call_sid)
        command = RedirectCommand(verbs=(Say(text="x"),), queue=True)
        samples: list[float] = []
        for i in range(commands + 100):
            start = time.perf_counter()
            await remote.send_command(command)
            if i >= 100:  # the first 100 warm up
                samples.append(time.perf_counter() - start)
        await fc.hangup()
    return samples


def latency(args: argparse.Namespace) -> dict[str, object]:
    p50s, p99s = [], []
    with redis_server() as redis:
        for run in range(args.runs):
            with start_ivr(redis.url, 1) as (url, _pids):
                samples = trio.run(latency_run, redis.url, url, args.commands)
            p50, p99 = percentile(samples, 0.5) * 1e3, percentile(samples, 0.99) * 1e3
            p50s.append(p50)
            p99s.append(p99)
            print(
                f"run {run + 1}: {len(samples)} commands, p50 {p50:.3f} ms, p99 {p99:.3f} ms", file=sys.stderr
            )
    return {
        "p50_ms": [round(x, 3) for x in p50s],
        "p99_ms": [round(x, 3) for x in p99s],
        "median_p50_ms": round(statistics.median(p50s), 3),
        "median_p99_ms": round(statistics.median(p99s), 3),
    }


# -- relay ----------------------------------------------------------------------------------


@contextmanager
def start_members(redis: str) -> Iterator[tuple[str, str]]:
    """Two member processes (``tests/cluster/member_process.py``): their URLs."""
    procs: list[subprocess.Popen[str]] = []
    urls: list[str] = []
    try:
        for _ in range(2):
            args = [sys.executable, "-m", "tests.cluster.member_process", "--redis", redis]
            args += ["--namespace", "bench-relay"]
            proc = subprocess.Popen(
                args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            procs.append(proc)
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            line = proc.stdout.readline() if ready else ""
            if not line.startswith("serving "):
                raise RuntimeError(f"member did not start: {line!r}")
            urls.append(f"ws://127.0.0.1:{line.split()[1]}/")
        yield urls[0], urls[1]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


class _Switch:
    def __init__(self, url: str) -> None:
        self.to = tcp_connector(url)

    async def __call__(self) -> trio.abc.Stream:
        return await self.to()


async def relay_run(redis: str, a: str, b: str, hooks: int) -> tuple[list[float], list[float]]:
    target = _Switch(a)
    async with (
        open_cluster(
            redis, namespace="bench-relay", config=ClusterConfig(member_ttl=7.0, op_timeout=2.0)
        ) as control,
        open_fake_call(target, path="/", strict=False, auto_reconnect=False) as fc,
    ):
        await fc.start()
        await wait_listed(control, [fc.call.call_sid])

        async def samples() -> list[float]:
            out: list[float] = []
            for i in range(hooks + 100):
                start = time.perf_counter()
                await fc.gather_speech("/gather", "x")
                if i >= 100:  # the first 100 warm up
                    out.append(time.perf_counter() - start)
            return out

        direct = await samples()
        await fc.drop(reconnect=False)
        target.to = tcp_connector(b)
        await fc.reconnect()
        relayed = await samples()
        await fc.hangup()
    return direct, relayed


async def redis_hop(redis: str, samples: int) -> list[float]:
    """One-way latency of a stream entry: XADD on one client until a blocked XREAD returns it."""
    from jambonz_trio.cluster._redis import make_client

    writer = make_client(redis, op_timeout=2.0)
    reader = make_client(redis, op_timeout=2.0, blocking=1.0)
    out: list[float] = []
    sent_at = [0.0]
    async with writer, reader, trio.open_nursery() as nursery:
        await writer.xadd("bench:hop", {"m": "x"})
        ready = trio.Event()

        async def read() -> None:
            last = str((await reader.xrevrange("bench:hop", count=1))[0].identifier)
            ready.set()
            while True:
                found = await reader.xread({"bench:hop": last}, block=1000, count=100)
                for entry in (found or {}).get("bench:hop", ()):
                    last = str(entry.identifier)
                    out.append(time.perf_counter() - sent_at[0])
                    got.set()

        nursery.start_soon(read)
        await ready.wait()
        for _ in range(samples):
            got = trio.Event()
            sent_at[0] = time.perf_counter()
            await writer.xadd("bench:hop", {"m": "x"})
            await got.wait()
        nursery.cancel_scope.cancel()
    return out


def relay(args: argparse.Namespace) -> dict[str, object]:
    rows: dict[str, list[float]] = {
        "direct_p50": [],
        "direct_p99": [],
        "relayed_p50": [],
        "relayed_p99": [],
        "redis_hop_p50": [],
        "redis_hop_p99": [],
    }
    with redis_server() as redis:
        for run in range(args.runs):
            with start_members(redis.url) as (a, b):
                direct, relayed = trio.run(relay_run, redis.url, a, b, args.hooks)
            hop = trio.run(redis_hop, redis.url, args.hooks)
            for name, samples in (("direct", direct), ("relayed", relayed), ("redis_hop", hop)):
                rows[f"{name}_p50"].append(percentile(samples, 0.5) * 1e3)
                rows[f"{name}_p99"].append(percentile(samples, 0.99) * 1e3)
            print(
                f"run {run + 1}: {args.hooks} hooks each; direct p50 {rows['direct_p50'][-1]:.3f} / p99 "
                f"{rows['direct_p99'][-1]:.3f} ms, relayed p50 {rows['relayed_p50'][-1]:.3f} / p99 "
                f"{rows['relayed_p99'][-1]:.3f} ms; one Redis hop p50 {rows['redis_hop_p50'][-1]:.3f} / p99 "
                f"{rows['redis_hop_p99'][-1]:.3f} ms",
                file=sys.stderr,
            )
    added = [r - d for d, r in zip(rows["direct_p99"], rows["relayed_p99"], strict=True)]
    result: dict[str, object] = {k: [round(x, 3) for x in v] for k, v in rows.items()}
    result |= {f"median_{k}_ms": round(statistics.median(v), 3) for k, v in rows.items()}
    result["p99_added_ms"] = [round(x, 3) for x in added]
    result["median_p99_added_ms"] = round(statistics.median(added), 3)
    return result


# -- spread ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_call(url: str) -> None:
    async with open_fake_call(tcp_connector(url), strict=False, call=CallData(from_="+15550100999")) as fc:
        await fc.start()
        await fc.gather_speech("/gather", "yes")
        await fc.hangup()


async def spread_run(
    redis: str, url: str, pids: list[int], calls: int, concurrency: int
) -> dict[str, object]:
    async with open_cluster(redis, config=ClusterConfig(member_ttl=7.0, op_timeout=2.0)) as control:
        async with AsyncExitStack() as stack:  # 40 calls held open: which worker has each?
            held = [
                await stack.enter_async_context(open_fake_call(tcp_connector(url), strict=False))
                for _ in range(40)
            ]
            for fc in held:
                await fc.start()
            listed = await wait_listed(control, [fc.call.call_sid for fc in held])
            per_worker: dict[str, int] = {}
            for fc in held:
                per_worker[listed[fc.call.call_sid]] = per_worker.get(listed[fc.call.call_sid], 0) + 1
        before = sum(cpu_seconds(p) for p in pids)
        started = time.perf_counter()
        limiter = trio.CapacityLimiter(concurrency)

        async def limited() -> None:
            async with limiter:
                await one_call(url)

        async with trio.open_nursery() as nursery:
            for _ in range(calls):
                nursery.start_soon(limited)
        wall = time.perf_counter() - started
        cpu = sum(cpu_seconds(p) for p in pids) - before
    return {
        "held_calls_per_worker": sorted(per_worker.values(), reverse=True),
        "cpu_ms_per_call": round(cpu / calls * 1e3, 3),
        "calls_per_second": round(calls / wall, 1),
    }


def spread(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {}
    with redis_server() as redis:
        for workers in (1, 2):
            runs: list[dict[str, object]] = []
            for run in range(args.runs):
                with start_ivr(redis.url, workers) as (url, pids):
                    result = trio.run(spread_run, redis.url, url, pids, args.calls, args.concurrency)
                runs.append(result)
                print(f"{workers} worker(s), run {run + 1}: {json.dumps(result)}", file=sys.stderr)
            out[f"workers_{workers}"] = {
                "runs": runs,
                "median_cpu_ms_per_call": statistics.median(_num(r["cpu_ms_per_call"]) for r in runs),
                "median_calls_per_second": statistics.median(_num(r["calls_per_second"]) for r in runs),
            }
    return out


def _num(value: object) -> float:
    assert isinstance(value, int | float)
    return float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--commands", type=int, default=1000)
    lat.add_argument("--runs", type=int, default=3)
    spr = sub.add_parser("spread")
    spr.add_argument("--calls", type=int, default=300)
    spr.add_argument("--concurrency", type=int, default=10)
    spr.add_argument("--runs", type=int, default=3)
    rel = sub.add_parser("relay")
    rel.add_argument("--hooks", type=int, default=1000)
    rel.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    result = {"latency": latency, "spread": spread, "relay": relay}[args.what](args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
