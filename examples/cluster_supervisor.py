"""A control process for a cluster: list every live call and push commands into calls held by
any worker, from a process that serves no calls.

Run the IVR on two workers that share a Redis cluster, then point this at the same Redis::

    python examples/ivr.py --port 8080 --workers 2 --redis redis://127.0.0.1:6379/0
    python examples/cluster_supervisor.py --redis redis://127.0.0.1:6379/0 list
    python examples/cluster_supervisor.py --redis redis://127.0.0.1:6379/0 say-all "We close in 5 minutes"
    python examples/cluster_supervisor.py --redis redis://127.0.0.1:6379/0      # a console on stdin

Commands (one per line on stdin, or one on the command line)::

    list                      live calls of the whole cluster: sid, caller, member, reconnects
    mute <call_sid>           mute the caller (mute:status)
    unmute <call_sid>
    say <call_sid> <text>     replace the call's program with <text> (redirect)
    hangup <call_sid>         end the call (call:status completed)
    say-all <text>            say <text> on every live call, wherever it lives
    help

Each command goes to the member holding the call (:meth:`Cluster.call`), which runs it through
the call's own ``send_command``: queued while jambonz reconnects, refused before the call is
answered. :func:`execute` is the console's core; tests give it a cluster handle and lines.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import AsyncIterable, Callable, Sequence

import trio

from jambonz_trio import JambonzTrioError
from jambonz_trio.cluster import Cluster, ClusterCall, open_cluster
from jambonz_trio.verbs import Say

if __package__:
    from .supervisor import StdinLines
else:  # run as a script (python examples/cluster_supervisor.py): make ``examples`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from examples.supervisor import StdinLines

#: How long one command may wait (e.g. for a disconnected call to come back).
COMMAND_TIMEOUT = 5.0
HELP = "commands: list | mute <sid> | unmute <sid> | say <sid> <text> | hangup <sid> | say-all <text>"

log = logging.getLogger("cluster_supervisor")

Reply = Callable[[str], None]


def describe(call: ClusterCall) -> str:
    """One ``list`` line."""
    return f"{call.call_sid}  {call.from_} -> {call.to}  on {call.member}  reconnects: {call.reconnect_count}"


async def _one(cluster: Cluster, verb: str, sid: str, text: str = "") -> str:
    remote = cluster.call(sid)
    try:
        with trio.fail_after(COMMAND_TIMEOUT):
            if verb == "mute":
                await remote.mute()
            elif verb == "unmute":
                await remote.unmute()
            elif verb == "say":
                await remote.redirect([Say(text=text)])
            else:
                await remote.hangup()
    except (JambonzTrioError, trio.TooSlowError) as exc:
        return f"{verb} {sid}: failed ({type(exc).__name__}: {exc})"
    return f"{verb} {sid}: ok"


async def execute(cluster: Cluster, line: str) -> str:
    """Run one console command against the cluster's live calls; returns the reply."""
    words = line.split(maxsplit=2)
    if not words:
        return ""
    verb, args = words[0].lower(), words[1:]
    try:
        if verb == "list":
            return "\n".join(describe(call) for call in await cluster.list_calls()) or "no live calls"
        if verb == "say-all" and args:
            text = line.split(maxsplit=1)[1]
            replies: list[str] = []
            async with trio.open_nursery() as nursery:  # every call at once
                for call in await cluster.list_calls():

                    async def send(sid: str = call.call_sid) -> None:
                        replies.append(await _one(cluster, "say", sid, text))

                    nursery.start_soon(send)
            return "\n".join(sorted(replies)) or "no live calls"
    except JambonzTrioError as exc:  # ClusterUnavailable
        return f"{verb}: failed ({exc})"
    if verb not in ("mute", "unmute", "say", "hangup") or not args or (verb == "say" and len(args) < 2):
        return HELP
    return await _one(cluster, verb, args[0], args[1] if verb == "say" else "")


async def control(cluster: Cluster, lines: AsyncIterable[str], reply: Reply = print) -> None:
    """The console: one command per line, until ``lines`` ends."""
    async for line in lines:
        answer = await execute(cluster, line)
        if answer:
            reply(answer)


async def run(redis: str, command: Sequence[str]) -> None:
    """Join the cluster (as a member that serves no calls) and run ``command``, or the console."""
    async with open_cluster(redis) as cluster:
        if command:
            print(await execute(cluster, " ".join(command)), flush=True)
        else:
            print(HELP, flush=True)
            await control(cluster, StdinLines(), lambda text: print(text, flush=True))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", required=True, help="redis://[user:password@]host:port/db of the cluster")
    parser.add_argument("command", nargs="*", help="one command to run (default: a console on stdin)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    trio.run(run, args.redis, args.command)


if __name__ == "__main__":
    main()
