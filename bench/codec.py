"""Micro-benchmark of the verb and command codec: what one ack or command costs to (de)serialise.

    python bench/codec.py [--runs 5] [--number 20000]

Times, in microseconds per call (median of ``--runs`` runs of ``--number`` calls each):

* ``unstructure ivr``: the benchmark app's session:new answer (say + gather with a nested say),
  the per-call hot path of every ack;
* ``unstructure rich``: a config with synthesizer/recognizer (vendor options) and a dial;
* ``structure ivr`` / ``structure rich``: parsing those lists back (the fake jambonz's path);
* ``command redirect`` / ``command mute``: rendering a redirect and a ``mute:status`` command.

Single-threaded and short (a few seconds); numbers move with the machine's load, so compare runs
taken one after the other on the same machine.
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable
from typing import Any

from jambonz_trio import commands as c
from jambonz_trio import verbs as v

IVR = [
    v.Say(text="Hello from jambonz"),
    v.Gather(
        input=["speech", "digits"],
        action_hook="/gather",
        timeout=10,
        say=v.Say(text="Say something"),
    ),
]

RICH = [
    v.Config(
        synthesizer=v.Synthesizer(vendor="google", language="en-US", voice="en-US-Wavenet-C"),
        recognizer=v.Recognizer(
            vendor="deepgram",
            language="en-US",
            hints=["sales", "support"],
            deepgram_options=v.DeepgramOptions(model="nova-2", smart_formatting=True),
        ),
        barge_in=v.BargeIn(enable=True, input=["speech"], action_hook="/barge"),
    ),
    v.Dial(
        target=[v.Target(type="phone", number="+15551234567")],
        caller_id="+15557654321",
        action_hook="/dial-done",
        listen=v.Listen(url="wss://audio.example.com", mix_type="stereo"),
    ),
    v.Hangup(),
]


def cases() -> dict[str, Callable[[], Any]]:
    ivr_wire = v.unstructure_verbs(IVR)
    rich_wire = v.unstructure_verbs(RICH)
    redirect = c.Redirect(verbs=IVR)
    mute = c.MuteStatus(mute_status="mute", call_sid="leg-1")
    return {
        "unstructure ivr": lambda: v.unstructure_verbs(IVR),
        "unstructure rich": lambda: v.unstructure_verbs(RICH),
        "structure ivr": lambda: v.structure_verbs(ivr_wire),
        "structure rich": lambda: v.structure_verbs(rich_wire),
        "command redirect": redirect.to_wire,
        "command mute": mute.to_wire,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    for name, fn in cases().items():
        fn()  # build cattrs' lazily generated hooks outside the timing
        times = [timeit.timeit(fn, number=args.number) / args.number * 1e6 for _ in range(args.runs)]
        print(f"{name:18} {statistics.median(times):7.2f} us  (runs: {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
