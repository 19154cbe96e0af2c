#!/usr/bin/env python3
"""One command for the jambonz-trio benchmark (issue 8): set up, run, print the table.

    python3 bench/run.py            # full run (about 5-7 minutes on 2 cores)
    python3 bench/run.py --quick    # a smoke run (1 round, small numbers)
    python3 bench/run.py --profile  # py-spy profile of the jambonz-trio app under the IVR load

Three apps with the same contract (examples/ivr.py's IVR) are driven by one Node load
generator that behaves like jambonz's client (bench/loadgen): the jambonz-trio app, the
official Node SDK (@jambonz/node-client-ws) and the PyPI Python SDK (jambonz-python-sdk). Every
app runs in a fresh process per measurement, warmed up first; the runs alternate A B C A B C ...
CPU is the app's own utime+stime from /proc/PID/stat (all threads), RSS from /proc/PID/status.
Only 127.0.0.1 is used; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
LOADGEN = BENCH / "loadgen" / "loadgen.js"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

APPS = ("trio", "node", "pysdk")
LABEL = {
    "trio": "jambonz-trio",
    "node": "node-client-ws",
    "pysdk": "jambonz-python-sdk",
    # reference floors (not peers, not run by default): the contract with no library at all
    "floor": "bare trio-websocket",
    "floorws": "bare wsproto",
    # jambonz-trio on 2 worker processes (jambonz_trio.workers, SO_REUSEPORT), not by default
    "trio2": "jambonz-trio, 2 workers",
    # the same app on another jambonz_trio (--baseline-python): before/after in one run
    "base": "jambonz-trio (baseline)",
}
#: the load generators (bench/loadgen --client): light, and one as heavy as jambonz's own client
CLIENTS = ("light", "jambonz")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- set-up ------------------------------------------------------------------------------------


def _digest(*parts: str | Path) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(Path(p).read_bytes() if isinstance(p, Path) else p.encode())
    return h.hexdigest()


def _venv(path: Path, installs: list[list[str]], digest: str) -> Path:
    python = path / "bin" / "python"
    marker = path / ".bench-ok"
    if python.exists() and marker.exists() and marker.read_text() == digest:
        return python
    log(f"setting up {path.relative_to(REPO)} ...")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    for args in installs:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True
        )
    marker.write_text(digest)
    return python


def setup(args: argparse.Namespace) -> dict[str, list[str]]:
    """Install what is missing (idempotent) and return the command line of each app."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        sys.exit("node and npm (Node 20+) are needed")
    if args.skip_setup:
        peers = BENCH / ".venv-peers" / "bin" / "python"
        trio_python = Path(args.trio_python) if args.trio_python else BENCH / ".venv-trio" / "bin" / "python"
        return _commands(trio_python, peers)
    lock = BENCH / "node_modules" / ".package-lock.json"
    if not lock.exists() or lock.stat().st_mtime < (BENCH / "package.json").stat().st_mtime:
        log("npm install (ws, @jambonz/node-client-ws) ...")
        subprocess.run(
            ["npm", "install", "--prefix", str(BENCH), "--no-audit", "--no-fund", "--loglevel=error"],
            check=True,
        )
    peers = _venv(
        BENCH / ".venv-peers",
        [["-r", str(BENCH / "requirements-peers.txt")]],
        _digest(BENCH / "requirements-peers.txt"),
    )
    if args.trio_python:
        trio_python = Path(args.trio_python)
    else:
        trio_python = _venv(
            BENCH / ".venv-trio",
            [["-e", str(REPO)], ["-r", str(BENCH / "requirements-tools.txt")]],
            _digest(REPO / "pyproject.toml", BENCH / "requirements-tools.txt"),
        )
    return _commands(trio_python, peers)


def _commands(trio_python: Path, peers: Path) -> dict[str, list[str]]:
    return {
        "trio": [str(trio_python), str(BENCH / "apps" / "trio_app.py")],
        "node": ["node", str(BENCH / "apps" / "node_app.js")],
        "pysdk": [str(peers), str(BENCH / "apps" / "pysdk_app.py")],
        "floor": [str(trio_python), str(BENCH / "apps" / "floor_app.py")],
        "floorws": [str(trio_python), str(BENCH / "apps" / "floor_wsproto_app.py")],
        "trio2": [str(trio_python), str(BENCH / "apps" / "trio_workers_app.py")],
    }


def raise_nofile(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (want, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))
            return limit
        except (ValueError, OSError):
            continue
    return soft


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_ms(pid: int) -> float:
    """utime + stime of the whole process (all threads), in ms."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / TICK


def descendants(pid: int) -> list[int]:
    """The pids of ``pid``'s children, their children, ... (from /proc)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = [int(k) for k in (task / "children").read_text().split()]
                out += kids
                todo += kids
    return out


def tree_cpu_ms(pid: int) -> tuple[float, list[float]]:
    """utime + stime of ``pid`` and its descendants (ms), and of each descendant."""
    kids = []
    for kid in descendants(pid):
        with contextlib.suppress(OSError):
            kids.append(cpu_ms(kid))
    return cpu_ms(pid) + sum(kids), kids


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class App:
    """One app process on a fresh port; stderr goes to a log file."""

    def __init__(self, name: str, cmd: list[str], tag: str, prefix: list[str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = RESULTS / "logs" / f"{tag}-{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*(prefix or []), *cmd, str(self.port)],
            cwd=BENCH,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid
        self.url = f"ws://127.0.0.1:{self.port}/ivr"
        self._wait_listening()

    def _wait_listening(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if self.name != "node" else signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@contextlib.contextmanager
def running(name: str, cmd: list[str], tag: str, prefix: list[str] | None = None) -> Iterator[App]:
    app = App(name, cmd, tag, prefix)
    try:
        yield app
    finally:
        app.stop()


def loadgen(
    url: str,
    mode: str,
    calls: int,
    concurrency: int,
    *,
    hooks: int = 0,
    max_s: float = 300,
    client: str = "light",
) -> dict[str, Any]:
    """Run the load generator to completion; its JSON plus its own CPU time."""
    cmd = ["node", str(LOADGEN), "--url", url, "--mode", mode, "--calls", str(calls)]
    cmd += ["--concurrency", str(concurrency), "--max-s", str(max_s), "--client", client]
    if hooks:
        cmd += ["--hooks", str(hooks)]
    proc = subprocess.Popen(cmd, cwd=BENCH, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        out, _ = proc.communicate(timeout=max_s + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return _loadgen_result(out, proc.returncode)


def _loadgen_result(out: bytes, rc: int) -> dict[str, Any]:
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"loadgen printed no result (exit {rc})")
    result: dict[str, Any] = json.loads(lines[-1])
    result["exit"] = rc
    return result


def settle(seconds: float = 0.5) -> None:
    time.sleep(seconds)


# -- scenarios ---------------------------------------------------------------------------------


def ivr_run(
    name: str, cmd: list[str], calls: int, conc: int, tag: str, client: str = "light"
) -> dict[str, Any]:
    """CPU of the app (with its worker processes, if any) per IVR call; the generator's
    ``client``: light, or as heavy as jambonz's own."""
    with running(name, cmd, tag) as app:
        loadgen(app.url, "ivr", 200, 50, client=client)  # warm-up, not measured
        settle()
        (c0, kids0), t0 = tree_cpu_ms(app.pid), time.monotonic()
        r = loadgen(app.url, "ivr", calls, conc, max_s=240, client=client)
        settle()
        c1, kids1 = tree_cpu_ms(app.pid)
        r["app_cpu_ms"] = c1 - c0
        r["app_cpu_ms_per_call"] = (c1 - c0) / calls
        if kids0 and len(kids0) == len(kids1):  # workers: each one's share of the app's CPU
            r["worker_cpu_ms"] = [b - a for a, b in zip(kids0, kids1, strict=True)]
        r["wall_s"] = time.monotonic() - t0
        r["app_rss_kib"] = rss_kib(app.pid)
    return r


def long_run(name: str, cmd: list[str], hooks: int, tag: str) -> dict[str, Any]:
    with running(name, cmd, tag) as app:
        loadgen(app.url, "long", 1, 1, hooks=200)  # warm-up
        settle()
        c0 = cpu_ms(app.pid)
        r = loadgen(app.url, "long", 1, 1, hooks=hooks, max_s=120)
        settle()
        r["app_cpu_ms_per_hook"] = (cpu_ms(app.pid) - c0) / hooks
    return r


def idle_run(name: str, cmd: list[str], calls: int, tag: str) -> dict[str, Any]:
    with running(name, cmd, tag) as app:
        loadgen(app.url, "ivr", 50, 10)  # warm-up: imports, first allocations
        settle(1.0)
        return _hold(app, calls)


def churn_run(name: str, cmd: list[str], calls: int, cycles: int, tag: str) -> dict[str, Any]:
    """One process holds ``calls`` idle calls, lets them all end, and again, ``cycles`` times:
    its RSS with the calls held and after they ended, per cycle (flat: no growth per cycle)."""
    with running(name, cmd, tag) as app:
        loadgen(app.url, "ivr", 50, 10)
        settle(1.0)
        rss0 = rss_kib(app.pid)
        held, after = [], []
        for _ in range(cycles):
            r = _hold(app, calls)
            held.append(r["rss_held_kib"])
            settle(2.0)
            after.append(rss_kib(app.pid))
        return {"rss_start_kib": rss0, "rss_held_kib": held, "rss_after_kib": after, "calls": calls}


def _hold(app: App, calls: int) -> dict[str, Any]:
    """Open ``calls`` idle calls on ``app``, measure, end them (bench/loadgen --mode idle)."""
    rss0 = rss_kib(app.pid)
    c0 = cpu_ms(app.pid)
    gen = subprocess.Popen(
        [
            "node",
            str(LOADGEN),
            "--url",
            app.url,
            "--mode",
            "idle",
            "--calls",
            str(calls),
            "--concurrency",
            "100",
            "--hold-max-s",
            "120",
            "--max-s",
            "240",
        ],
        cwd=BENCH,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert gen.stdin is not None and gen.stdout is not None
    held_line = gen.stdout.readline().decode()  # bounded by --max-s in the generator
    held = json.loads(held_line) if held_line.startswith("{") else {"held": 0}
    open_cpu = cpu_ms(app.pid) - c0
    settle(2.0)
    rss1 = rss_kib(app.pid)
    with contextlib.suppress(BrokenPipeError):
        gen.stdin.write(b"release\n")
        gen.stdin.close()
    out = gen.stdout.read()
    gen.wait(60)
    r = _loadgen_result(out, gen.returncode) if out.strip() else {"exit": gen.returncode}
    n = max(1, int(held.get("held", 0)))
    r.update(
        held=held.get("held", 0),
        held_failed=held.get("failed"),
        open_s=held.get("open_s"),
        rss_before_kib=rss0,
        rss_held_kib=rss1,
        rss_per_call_kib=(rss1 - rss0) / n,
        open_cpu_ms_per_call=open_cpu / n,
    )
    return r


# -- profile -----------------------------------------------------------------------------------


def profile(cmds: dict[str, list[str]], calls: int, conc: int) -> None:
    """Attach py-spy to the warmed-up jambonz-trio app during the IVR load; summarise it."""
    py_spy = Path(cmds["trio"][0]).parent / "py-spy"
    if not py_spy.exists():
        sys.exit(f"py-spy not found next to {cmds['trio'][0]} (pip install py-spy)")
    RESULTS.mkdir(exist_ok=True)
    for fmt, out in (("speedscope", "profile-trio.speedscope.json"), ("raw", "profile-trio.collapsed.txt")):
        with running("trio", cmds["trio"], f"profile-{fmt}") as app:
            loadgen(app.url, "ivr", 200, 50)  # warm-up: imports and lazy set-up stay out of the profile
            spy = subprocess.Popen(
                [
                    str(py_spy),
                    "record",
                    "-r",
                    "250",
                    "--gil",
                    "--nonblocking",
                    "--format",
                    fmt,
                    "-o",
                    str(RESULTS / out),
                    "--pid",
                    str(app.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            r = loadgen(app.url, "ivr", calls, conc, max_s=240)
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            log(f"  {fmt}: {r['completed']} calls, errors {r['error_count']}")
    summarise_profile(RESULTS / "profile-trio.collapsed.txt")


def _package(frame: str) -> str:
    m = re.search(r"\((.*?):\d+\)$", frame)
    path = m.group(1) if m else ""
    for key in ("jambonz_trio", "trio_websocket", "wsproto", "h11", "cattrs", "attr", "outcome", "trio"):
        if f"{key}/" in path:
            return key
    if "json/" in path:
        return "json"
    return "stdlib/other"


def summarise_profile(path: Path, top: int = 30) -> None:
    """Self time by function and by package, inclusive time by function (line numbers folded)."""
    self_t: dict[str, int] = {}
    pkg: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n_s = line.rpartition(" ")
        n = int(n_s)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += n
        self_t[frames[-1]] = self_t.get(frames[-1], 0) + n
        p = _package(stack.split(";")[-1])
        pkg[p] = pkg.get(p, 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    print(f"\nprofile: {total} samples ({path.name})\nself time by package:")
    for p, n in sorted(pkg.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * n / total:5.1f}%  {p}")
    print("top self time by function:")
    for f, n in sorted(self_t.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f}%  {f}")
    print("top inclusive time (functions of jambonz_trio, trio_websocket, wsproto, json, cattrs):")
    keys = ("jambonz_trio/", "trio_websocket/", "wsproto/", "json/", "cattrs/")
    rows = [(f, n) for f, n in incl.items() if any(k in f for k in keys)]
    for f, n in sorted(rows, key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f}%  {f}")


# -- report ------------------------------------------------------------------------------------


def med(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def report(results: dict[str, Any], apps: tuple[str, ...]) -> str:
    ivr = results["ivr"]
    rows: list[tuple[str, dict[str, float | None], int]] = []

    def metric(label: str, runs: dict[str, list[dict[str, Any]]], fn: Any, nd: int = 3) -> None:
        vals = {}
        for a in apps:
            got = [fn(r) for r in runs.get(a, [])]
            vals[a] = med([g for g in got if g is not None])
        rows.append((label, vals, nd))

    def lat(kind: str, q: str) -> Any:
        return lambda r: r["latency_ms"][kind].get(q)

    metric("app CPU ms per call (IVR)", ivr, lambda r: r["app_cpu_ms_per_call"])
    metric("session:new ack p50 ms", ivr, lat("session_new", "p50"), 2)
    metric("session:new ack p99 ms", ivr, lat("session_new", "p99"), 2)
    metric("verb:hook ack p50 ms", ivr, lat("verb_hook", "p50"), 2)
    metric("verb:hook ack p99 ms", ivr, lat("verb_hook", "p99"), 2)
    metric("handshake p99 ms", ivr, lat("handshake", "p99"), 2)

    def errors(label: str, runs: dict[str, list[dict[str, Any]]]) -> None:
        total = {a: [{"e": sum(r["error_count"] for r in runs.get(a, []))}] for a in apps}
        metric(label, total, lambda r: r["e"], 0)

    errors("IVR errors (sum of runs)", ivr)
    heavy = results.get("ivr_jambonz") or {}
    if heavy:
        metric("jambonz-like client: app CPU ms per call", heavy, lambda r: r["app_cpu_ms_per_call"])
        metric("jambonz-like client: session:new ack p99 ms", heavy, lat("session_new", "p99"), 2)
        metric("jambonz-like client: verb:hook ack p99 ms", heavy, lat("verb_hook", "p99"), 2)
        errors("jambonz-like client: IVR errors (sum of runs)", heavy)
    metric("busiest worker's share of the CPU (%)", ivr, _busiest_share, 1)
    if results.get("long"):
        metric("long call: app CPU ms per hook", results["long"], lambda r: r["app_cpu_ms_per_hook"])
        metric("long call: hooks/s", results["long"], lambda r: r.get("hooks_per_s"), 0)
        metric("long call: verb:hook p99 ms", results["long"], lat("verb_hook", "p99"), 2)
    for n, runs in sorted(results.get("idle", {}).items(), key=lambda kv: int(kv[0])):
        metric(f"RSS KiB per idle call ({int(n):,} held)", runs, lambda r: r["rss_per_call_kib"], 1)
        metric(f"calls held of {int(n):,}", runs, lambda r: r["held"], 0)
    pairs = [
        (x, y)
        for x, y in (
            ("trio", "node"),
            ("trio", "pysdk"),
            ("pysdk", "node"),
            ("trio", "floorws"),
            ("trio2", "trio"),
            ("trio", "base"),
            ("base", "floorws"),
        )
        if x in apps and y in apps
    ]
    rows = [(label, vals, nd) for label, vals, nd in rows if any(v is not None for v in vals.values())]
    lines = [
        f"| metric (median of runs) | {' | '.join(LABEL[a] for a in apps)} |"
        + "".join(f" {x} / {y} |" for x, y in pairs),
        "|---" * (len(apps) + 1 + len(pairs)) + "|",
    ]
    for label, vals, nd in rows:
        line = f"| {label} | " + " | ".join(fmt(vals[a], nd) for a in apps) + " |"
        counts = "errors" in label or "held of" in label or "share" in label
        line += "".join(" |" if counts else f" {ratio(vals[x], vals[y])} |" for x, y in pairs)
        lines.append(line)
    for a, d in (results.get("churn") or {}).items():
        lines.append("")
        held = ", ".join(f"{k / 1024:.1f}" for k in d["rss_held_kib"])
        after = ", ".join(f"{k / 1024:.1f}" for k in d["rss_after_kib"])
        lines.append(
            f"churn ({LABEL[a]}): {d['calls']:,} calls held and ended {len(d['rss_held_kib'])} times in one "
            f"process: RSS held {held} MiB; after {after} MiB (start {d['rss_start_kib'] / 1024:.1f} MiB)"
        )
    lin = results.get("linearity")
    if lin:
        lines.append("")
        for a, d in lin.items():
            lines.append(
                f"linearity ({LABEL[a]}): {d['small_calls']:,} calls -> "
                f"{d['small_cpu_ms']:.0f} ms CPU (median); "
                f"{d['big_calls']:,} calls -> {d['big_cpu_ms']:.0f} ms CPU: {d['ratio']:.2f}x the CPU for "
                f"{d['big_calls'] / d['small_calls']:.0f}x the calls"
            )
    return "\n".join(lines)


def _busiest_share(r: dict[str, Any]) -> float | None:
    """With workers: the busiest one's share of the workers' CPU (50 % is an even spread)."""
    workers = r.get("worker_cpu_ms")
    if not workers or sum(workers) <= 0:
        return None
    return 100.0 * max(workers) / sum(workers)


def machine() -> dict[str, str]:
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {"nproc": str(os.cpu_count()), "cpu": model, "python": sys.version.split()[0], "node": node}


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--idle", type=int, default=2000, help="idle-hold size for every app (0: skip)")
    ap.add_argument("--idle-big", type=int, default=10000, help="a bigger idle hold (0: skip)")
    ap.add_argument("--idle-big-apps", default="trio", help="apps for the bigger idle hold")
    ap.add_argument("--churn", type=int, default=3, help="cycles of the bigger hold in one process (0: skip)")
    ap.add_argument("--long-hooks", type=int, default=5000, help="verb:hook round trips of the long call")
    ap.add_argument("--linearity", type=int, default=10, help="x the calls for the linearity run (0: skip)")
    ap.add_argument("--linearity-apps", default="trio", help="apps for the linearity run")
    ap.add_argument("--apps", default=",".join(APPS))
    ap.add_argument(
        "--clients",
        default=",".join(CLIENTS),
        help="load generators for the IVR runs: light (the table's first rows), jambonz (as heavy as "
        "jambonz's own client)",
    )
    ap.add_argument("--quick", action="store_true", help="1 round, small numbers")
    ap.add_argument("--profile", action="store_true", help="only profile the jambonz-trio app")
    ap.add_argument(
        "--trio-python", help="interpreter with jambonz_trio installed (default: bench/.venv-trio)"
    )
    ap.add_argument("--skip-setup", action="store_true")
    ap.add_argument(
        "--baseline-python",
        help="an interpreter whose jambonz_trio is the baseline (e.g. main's): adds app 'base'",
    )
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.calls, args.idle, args.idle_big, args.long_hooks, args.linearity, args.churn = (
            1,
            500,
            500,
            0,
            1000,
            0,
            0,
        )

    t_start = time.monotonic()
    nofile = raise_nofile()
    cmds = setup(args)
    if args.baseline_python:
        cmds["base"] = [args.baseline_python, str(BENCH / "apps" / "trio_app.py")]
    RESULTS.mkdir(exist_ok=True)
    if args.profile:
        profile(cmds, args.calls, args.concurrency)
        return
    apps = tuple(a for a in args.apps.split(",") if a)
    idle_plan = [(args.idle, apps)] if args.idle else []
    idle_plan = [(n, tuple(a for a in held if a != "trio2")) for n, held in idle_plan]
    if args.idle_big:
        idle_plan.append((args.idle_big, tuple(a for a in args.idle_big_apps.split(",") if a in apps)))
    if max((n for n, _ in idle_plan), default=0) + 200 > nofile:
        log(f"warning: open-files limit {nofile} is low for the idle holds")
    results: dict[str, Any] = {"machine": machine(), "args": vars(args), "ivr": {}, "long": {}, "idle": {}}
    log(f"machine: {results['machine']}; open files limit {nofile}")

    clients = [c for c in args.clients.split(",") if c]
    for rnd in range(1, args.rounds + 1):
        for client in clients:
            key = "ivr" if client == "light" else f"ivr_{client}"
            for a in apps:
                t0 = time.monotonic()
                r = ivr_run(a, cmds[a], args.calls, args.concurrency, f"r{rnd}-{key}", client)
                results.setdefault(key, {}).setdefault(a, []).append(r)
                lat = r["latency_ms"]
                log(
                    f"[{time.monotonic() - t_start:5.0f}s] round {rnd} IVR ({client} client) {LABEL[a]:>18}: "
                    f"{r['app_cpu_ms_per_call']:.3f} ms CPU/call, "
                    f"session:new p99 {lat['session_new'].get('p99')} ms, "
                    f"verb:hook p99 {lat['verb_hook'].get('p99')} ms, errors {r['error_count']} "
                    f"({time.monotonic() - t0:.0f}s)"
                )
        if args.long_hooks:
            for a in (x for x in apps if x != "trio2"):
                r = long_run(a, cmds[a], args.long_hooks, f"r{rnd}-long")
                results["long"].setdefault(a, []).append(r)
                log(
                    f"[{time.monotonic() - t_start:5.0f}s] round {rnd} long {LABEL[a]:>18}: "
                    f"{r['app_cpu_ms_per_hook']:.3f} ms CPU/hook, {r.get('hooks_per_s')} hooks/s, "
                    f"errors {r['error_count']}"
                )

    for n, idle_apps in idle_plan:
        for a in idle_apps:
            r = idle_run(a, cmds[a], n, f"idle{n}")
            results["idle"].setdefault(str(n), {}).setdefault(a, []).append(r)
            log(
                f"[{time.monotonic() - t_start:5.0f}s] idle {n} {LABEL[a]:>18}: held {r['held']} "
                f"in {r['open_s']} s, {r['rss_per_call_kib']:.1f} KiB/call "
                f"(RSS {r['rss_before_kib']} -> {r['rss_held_kib']} KiB), errors {r.get('error_count')}"
            )
    if args.churn and args.idle_big:
        results["churn"] = {}
        for a in (x for x in args.idle_big_apps.split(",") if x in apps):
            r = churn_run(a, cmds[a], args.idle_big, args.churn, "churn")
            results["churn"][a] = r
            log(
                f"[{time.monotonic() - t_start:5.0f}s] churn {LABEL[a]}: {args.idle_big} calls x "
                f"{args.churn}: RSS held {r['rss_held_kib']} KiB, after {r['rss_after_kib']} KiB "
                f"(start {r['rss_start_kib']})"
            )
    # reshape idle: size -> app -> runs
    results["idle"] = {n: runs for n, runs in results["idle"].items()}

    if args.linearity:
        results["linearity"] = {}
        for a in [x for x in args.linearity_apps.split(",") if x in apps]:
            big = args.calls * args.linearity
            r = ivr_run(a, cmds[a], big, args.concurrency, "linearity")
            small = med([x["app_cpu_ms"] for x in results.get("ivr", {}).get(a, [])])
            results["linearity"][a] = {
                "small_calls": args.calls,
                "small_cpu_ms": small,
                "big_calls": big,
                "big_cpu_ms": r["app_cpu_ms"],
                "ratio": r["app_cpu_ms"] / small if small else None,
                "run": r,
            }
            log(
                f"[{time.monotonic() - t_start:5.0f}s] linearity {LABEL[a]}: {big} calls, "
                f"{r['app_cpu_ms_per_call']:.3f} ms CPU/call, errors {r['error_count']}"
            )

    table = report(
        {
            "ivr": results.get("ivr", {}),
            "ivr_jambonz": results.get("ivr_jambonz", {}),
            "long": results["long"],
            "idle": results["idle"],
            "linearity": results.get("linearity"),
            "churn": results.get("churn"),
        },
        apps,
    )
    m = results["machine"]
    header = (
        f"machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}, Node {m['node']}; "
        f"IVR {args.calls:,} calls / {args.concurrency} concurrent, {args.rounds} rounds, "
        f"apps alternating; total {time.monotonic() - t_start:.0f} s"
    )
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "latest.md").write_text(header + "\n\n" + table + "\n")
    print(header + "\n\n" + table)


if __name__ == "__main__":
    main()
