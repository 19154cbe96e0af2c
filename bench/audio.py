#!/usr/bin/env python3
"""Audio-stream benchmark (issue 15): how many concurrent 8 kHz mono streams one jambonz-trio
process echoes in real time, its CPU and memory per stream, and the latency the echo adds.

    python3 bench/audio.py            # 3 runs (about 10 minutes on 2 cores)
    python3 bench/audio.py --quick    # one short run

The app is examples/echo_bot.py's audio route (every frame echoed, a mark each second), in a
fresh process per measurement; the load is bench/loadgen/audio_loadgen.js (Node ``ws``): N
streams, each a metadata frame then a 320-byte frame every 20 ms, spread over the period.

"Late": a frame whose echo is back more than 20 ms after it was sent (the next frame is then
already due), or never. A load of N streams is sustained when at most 1% of its frames are late
over the measured window. Each run steps N up (x1.5) until a load is not sustained, then bisects
between the last sustained and the first failed load (to 5%). CPU per stream = the app's
utime+stime over the window / window / N (a fraction of one core); memory per stream = (RSS with
the N streams open - RSS of the idle app) / N; latency p50/p99 over every echoed frame. Figures
are the medians of the runs. Needs Node 20+ and ``npm install --prefix bench`` (``ws``); uses
127.0.0.1 only; not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOADGEN = BENCH / "loadgen" / "audio_loadgen.js"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
APP = """
import sys, trio
sys.path.insert(0, {repo!r})
from examples import echo_bot
from jambonz_trio import ServerConfig, serve_jambonz

async def main():
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: serve_jambonz(
            echo_bot.routes(), port=0, task_status=task_status,
            # the load generator plays the media server, listed as docs/audio.md advises
            config=ServerConfig(max_connections=20000, trusted_sources=("127.0.0.1",))))
        print("ready", server.port, flush=True)
trio.run(main)
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class App:
    """The echo app in a fresh process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", APP.format(repo=str(REPO))],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "ready":
            self.close()
            raise RuntimeError("the echo app did not start")
        self.port = int(line[1])
        time.sleep(0.3)
        self.idle_rss = rss_kib(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def measure(n: int, seconds: float, warmup: float) -> dict[str, Any]:
    """One load of ``n`` streams against a fresh app."""
    app = App()
    try:
        url = f"ws://127.0.0.1:{app.port}/echo/audio"
        gen = subprocess.Popen(
            ["node", str(LOADGEN), url, str(n), str(seconds), str(warmup)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=BENCH,
        )
        # the window: the loadgen says when its counted window starts (after connecting and
        # the warm-up); the app's CPU is read over most of that window
        assert gen.stderr is not None
        if gen.stderr.readline().strip() != "window":
            gen.kill()
            raise RuntimeError("the load generator failed before its window")
        time.sleep(0.5)
        cpu0, gen0, t0 = cpu_seconds(app.proc.pid), cpu_seconds(gen.pid), time.monotonic()
        time.sleep(max(0.5, seconds - 2.0))
        cpu1, gen1, t1 = cpu_seconds(app.proc.pid), cpu_seconds(gen.pid), time.monotonic()
        busy = os.getloadavg()[0]
        rss = rss_kib(app.proc.pid)
        out, err = gen.communicate(timeout=seconds + warmup + 120)
        if gen.returncode != 0:
            raise RuntimeError(f"loadgen failed: {err.strip()[:300]}")
        result: dict[str, Any] = json.loads(out)
        result["cpu_per_stream"] = (cpu1 - cpu0) / (t1 - t0) / n
        result["cpu_total"] = (cpu1 - cpu0) / (t1 - t0)
        result["loadgen_cpu"] = (gen1 - gen0) / (t1 - t0)
        result["loadavg_1min"] = busy
        result["rss_per_stream_kib"] = (rss - app.idle_rss) / n
        result["sustained"] = result["lateFraction"] <= 0.01
        return result
    finally:
        app.close()


def _report(n: int, r: dict[str, Any]) -> None:
    log(
        f"  N={n}: late {100 * r['lateFraction']:.2f}%, p99 {r['p99']:.1f} ms, app {r['cpu_total']:.2f} core,"
        f" loadgen {r['loadgen_cpu']:.2f} core (send lag p99 {r['sendLagP99']:.1f} ms),"
        f" load {r['loadavg_1min']:.2f}"
    )


def find_limit(start: int, seconds: float, warmup: float, cap: int) -> tuple[int, list[dict[str, Any]]]:
    """Step N up until a load is not sustained, then bisect; returns the largest sustained N."""
    loads: list[dict[str, Any]] = []
    good, bad, n = 0, None, start
    while n <= cap:
        r = measure(n, seconds, warmup)
        loads.append(r)
        _report(n, r)
        if not r["sustained"]:
            bad = n
            break
        good = n
        n = int(n * 1.5)
    while bad is not None and bad - good > max(5, good // 20):
        n = (good + bad) // 2
        r = measure(n, seconds, warmup)
        loads.append(r)
        _report(n, r)
        if r["sustained"]:
            good = n
        else:
            bad = n
    return good, loads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run, short windows")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per load")
    parser.add_argument(
        "--fixed", type=int, default=100, help="streams of the per-stream CPU/latency figures"
    )
    parser.add_argument("--cap", type=int, default=3000)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds = 1, 5.0
    if not (BENCH / "node_modules" / "ws").exists():
        subprocess.run(["npm", "install", "--prefix", str(BENCH), "--no-audit", "--no-fund"], check=True)
    with socket.socket() as s:  # 127.0.0.1 only
        s.bind(("127.0.0.1", 0))
    load = os.getloadavg()
    log(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    runs: list[dict[str, Any]] = []
    for i in range(args.runs):
        log(f"run {i + 1}/{args.runs}: {args.fixed} streams")
        fixed = measure(args.fixed, args.seconds, 3.0)
        log(f"  p50 {fixed['p50']:.2f} ms p99 {fixed['p99']:.2f} ms, late {100 * fixed['lateFraction']:.2f}%")
        log(f"run {i + 1}/{args.runs}: limit")
        limit, loads = find_limit(100, args.seconds, 3.0, args.cap)
        runs.append({"fixed": fixed, "limit": limit, "loads": loads, "loadavg": os.getloadavg()})
    med = statistics.median
    summary = {
        "runs": len(runs),
        "streams_sustained": med([r["limit"] for r in runs]),
        "limits": [r["limit"] for r in runs],
        "fixed_streams": args.fixed,
        "cpu_per_stream_core": med([r["fixed"]["cpu_per_stream"] for r in runs]),
        "rss_per_stream_kib": med([r["fixed"]["rss_per_stream_kib"] for r in runs]),
        "echo_p50_ms": med([r["fixed"]["p50"] for r in runs]),
        "echo_p99_ms": med([r["fixed"]["p99"] for r in runs]),
        "late_fraction_fixed": med([r["fixed"]["lateFraction"] for r in runs]),
        "loadavg_before": load,
        "loadavg_after": os.getloadavg(),
    }
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / "audio-latest.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
