"""FM-38 soak: connect -> ``session:new`` -> hangup cycles against a server in a subprocess.

Run by hand (prints a JSON report, exits 1 if a bound is broken)::

    python -m tests.reliability.soak --cycles 10000 --concurrency 8

The server's RSS is sampled (from its ``/proc/PID/status``, after ``gc.collect()``) once the
first ``--sample-after`` cycles are done and again at the end; the report says how many
``Call`` objects (and connection objects) the server still holds. Only 127.0.0.1; the run
is bounded by the cycle count and by ``--time-limit``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from typing import Any

import trio

from .helpers import connect_call
from .procs import ServerProcess, server_process

#: A server tuned for churn: nothing parks for long, nothing waits for pings.
SOAK_CONFIG: dict[str, Any] = {
    "app": "answer",
    "server": {"handshake_timeout": 2.0, "first_message_timeout": 2.0},
    "call": {"close_timeout": 1.0, "reconnect_grace": 2.0},
}

RSS_GROWTH_LIMIT_KB = 5 * 1024


async def one_cycle(port: int, sid: str) -> None:
    """What jambonz does for a short call: open, ``session:new``, ``call:status`` completed,
    close 1000 (it does not wait for the app's Close; we do, bounded, to count it)."""
    client = await connect_call(port, sid)
    try:
        await client.send(
            "call:status", f"{sid}-st", {"call_sid": sid, "call_status": "completed"}, call_sid=sid
        )
        await client.close(1000)
        with trio.move_on_after(2):
            for _ in range(10):
                if await client.receive() is None:
                    break
    finally:
        await client.drop()


async def run_cycles(server: ServerProcess, count: int, first: int, concurrency: int) -> int:
    """``count`` cycles with ``concurrency`` workers; returns how many failed."""
    counter = itertools.count(first)
    end = first + count
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for n in counter:
            if n >= end:
                return
            try:
                with trio.fail_after(10):
                    await one_cycle(server.port, f"soak-{n}")
            except (AssertionError, OSError, trio.BrokenResourceError, trio.TooSlowError, EOFError):
                failures += 1

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return failures


async def wait_settled(server: ServerProcess, tasks: int, within: float = 10.0) -> dict[str, Any]:
    """Stats once the server has no call and no connection left and is back to ``tasks``
    living tasks (bounded: a leak still shows after ``within`` seconds). The counters drop a
    moment before the last tasks of a call have returned."""
    stats = await server.stats()
    with trio.move_on_after(within):
        for _ in range(int(within / 0.05) + 1):
            if (
                stats["calls"] == 0
                and stats["connections"] == 0
                and stats["pending"] == 0
                and stats["tasks"] <= tasks
            ):
                break
            await trio.sleep(0.05)
            stats = await server.stats()
    return stats


async def soak(
    cycles: int, *, sample_after: int = 1000, concurrency: int = 8, time_limit: float = 600.0
) -> dict[str, Any]:
    """Run the soak and return the report (figures only; the caller judges them)."""
    assert cycles > sample_after > 0
    started = time.monotonic()
    with trio.fail_after(time_limit):
        async with server_process(SOAK_CONFIG) as server:
            before = await server.stats()
            failures = await run_cycles(server, sample_after, 0, concurrency)
            after_first = await wait_settled(server, before["tasks"])
            failures += await run_cycles(server, cycles - sample_after, sample_after, concurrency)
            end = await wait_settled(server, before["tasks"])
            alive = server.alive()
    elapsed = time.monotonic() - started
    return {
        "cycles": cycles,
        "failures": failures,
        "seconds": round(elapsed, 1),
        "cycles_per_second": round(cycles / elapsed, 1),
        "rss_kb_start": before["rss_kb"],
        "rss_kb_after_first": after_first["rss_kb"],
        "rss_kb_end": end["rss_kb"],
        "rss_growth_kb": end["rss_kb"] - after_first["rss_kb"],
        "fds_start": before["fds"],
        "fds_end": end["fds"],
        "tasks_start": before["tasks"],
        "tasks_end": end["tasks"],
        "calls_end": end["calls"],
        "connections_end": end["connections"],
        "call_objects_end": end["call_objects"],
        "connection_objects_end": end["connection_objects"],
        "websocket_objects_end": end["websocket_objects"],
        "server_alive": alive,
    }


def verdict(report: dict[str, Any]) -> list[str]:
    """The FM-38 bounds a report breaks (empty: it passed)."""
    problems = []
    if report["failures"]:
        problems.append(f"{report['failures']} cycles failed")
    if report["rss_growth_kb"] > RSS_GROWTH_LIMIT_KB:
        problems.append(f"RSS grew {report['rss_growth_kb']} KiB after the first sample")
    for key in ("call_objects_end", "connection_objects_end", "websocket_objects_end", "calls_end"):
        if report[key]:
            problems.append(f"{key} = {report[key]}")
    if report["fds_end"] != report["fds_start"] or report["tasks_end"] != report["tasks_start"]:
        problems.append("fds or tasks not back to their start values")
    if not report["server_alive"]:
        problems.append("the server process died")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--sample-after", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=600.0)
    args = parser.parse_args(argv)
    report = trio.run(
        lambda: soak(
            args.cycles,
            sample_after=args.sample_after,
            concurrency=args.concurrency,
            time_limit=args.time_limit,
        )
    )
    problems = verdict(report)
    report["problems"] = problems
    print(json.dumps(report, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
