"""What metrics and traces cost per call (issue 17): a fixed number of calls through the fake
jambonz over memory streams, with telemetry off or on, in this process.

Run it from the repository (it imports ``jambonz_trio`` from ``sys.path``, so
``PYTHONPATH=<another checkout>`` measures that one with ``--mode off``)::

    python bench/observe.py --mode off --calls 200            # CPU seconds per call, median of --runs
    python bench/observe.py --mode on --calls 200
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/observe.py --mode off --calls 200 --runs 1  # instructions: see "Ir" in stderr

Each call: ``session:new`` (acked by the app), two ``verb:hook`` (acked), ``call:status``
completed and close 1000 (the fake's ``hangup``). ``on`` is ``ServerConfig(metrics=True,
tracing=True)`` with the OpenTelemetry SDK's ``TracerProvider`` and a no-op span processor
(spans are made and ended, not exported) and one scrape at the end. A first batch of calls
warms up before the measured ones.

Figures (2-core shared box, Python 3.11, callgrind instruction counts, one run each: counts
do not depend on the load). Per call = (count with 100 measured calls - count with 10) / 90,
both after 10 warm-up calls, so start-up and imports cancel out. A call's count includes the
fake jambonz's own work (most of it); ``main`` is the commit issue 17's work branched from
(6b30f99), run with ``PYTHONPATH`` pointing at an export of it.

=====================  ======================  ==================
mode                   instructions per call   vs main
=====================  ======================  ==================
main (no telemetry)    19.63 M                 1.000
off                    19.62 M                 0.999 (noise)
on (metrics+traces)    20.57 M                 1.048 (+0.94 M)
=====================  ======================  ==================

Timed medians of 5 runs x 200 calls (``process_time``) on the same box were too noisy to
separate the three (6.1, 5.5 and 4.6 ms per call, in the order above); use the counts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from typing import Any

import trio

from jambonz_trio import Call, Route, ServerConfig, VerbHook, serve_jambonz
from jambonz_trio.testing import CallData, open_fake_call
from jambonz_trio.verbs import Say


async def app(call: Call) -> None:
    await call.ack(call.session, [Say(text="hello")])
    async for event in call:
        if isinstance(event, VerbHook):
            await call.ack(event, [Say(text="ok")])


def _config(mode: str) -> ServerConfig:
    if mode == "off":
        return ServerConfig()
    from opentelemetry.sdk.trace import TracerProvider

    return ServerConfig(metrics=True, tracing=True, tracer_provider=TracerProvider())


async def _calls(connector: Any, n: int) -> None:
    for i in range(n):
        async with open_fake_call(connector, path="/app", call=CallData(call_sid=f"bench-{i}")) as fc:
            await fc.start()
            await fc.hook("/a")
            await fc.hook("/b")
            await fc.hangup()


async def _run(mode: str, calls: int, warmup: int) -> float:
    async with trio.open_nursery() as nursery:
        server: Any = await nursery.start(
            partial(serve_jambonz, Route(path="/app", handler=app), config=_config(mode))
        )
        await _calls(server.connect_memory, warmup)
        start = time.process_time()
        await _calls(server.connect_memory, calls)
        elapsed = time.process_time() - start
        if mode == "on":
            from prometheus_client import generate_latest

            assert b"jambonz_trio_calls_started_total" in generate_latest(server.metrics_registry)
        nursery.cancel_scope.cancel()
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["off", "on"], default="off")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    times = [trio.run(_run, args.mode, args.calls, args.warmup) for _ in range(args.runs)]
    per_call = statistics.median(times) / args.calls
    print(f"mode={args.mode} calls={args.calls} runs={args.runs} cpu_per_call_us={per_call * 1e6:.1f}")
    print(f"jambonz_trio from {__import__('jambonz_trio').__file__}", file=sys.stderr)
    print(f"all runs (s): {', '.join(f'{t:.3f}' for t in times)}", file=sys.stderr)


if __name__ == "__main__":
    main()
