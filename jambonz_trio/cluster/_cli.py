"""``python -m jambonz_trio calls --redis URL``: the cluster's live calls as JSON lines."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, TextIO

import trio

from .._log import get_logger
from ._cluster import open_cluster
from ._errors import ClusterUnavailable
from ._model import CallEnded, CallsSnapshot, CallStarted, CallUpdated, ClusterCall, ClusterEvent

__all__ = ["calls"]


_Change = CallStarted | CallUpdated | CallEnded


def _event_json(event: _Change) -> dict[str, Any]:
    if isinstance(event, CallEnded):
        return {"event": "end", "call_sid": event.call_sid, "member": event.member, "why": event.why}
    kind = "start" if isinstance(event, CallStarted) else "update"
    return {"event": kind, "call": event.call.to_json()}


def _changes(event: ClusterEvent, shown: dict[str, ClusterCall]) -> list[_Change]:
    """What ``event`` changes in the view printed so far (``shown``, updated): the event
    itself, or for a snapshot (the watch's first, and one after every gap) the calls that
    started, changed or ended since that view."""
    if not isinstance(event, CallsSnapshot):
        if isinstance(event, CallEnded):
            shown.pop(event.call_sid, None)
        else:
            shown[event.call.call_sid] = event.call
        return [event]
    now = {call.call_sid: call for call in event.calls}
    changes: list[_Change] = [
        CallEnded(sid, call.member, "ended during a gap") for sid, call in shown.items() if sid not in now
    ]
    for sid, call in now.items():
        before = shown.get(sid)
        if before is None:
            changes.append(CallStarted(call))
        elif before != call:
            changes.append(CallUpdated(call))
    shown.clear()
    shown.update(now)
    return changes


async def _run(args: argparse.Namespace, out: TextIO) -> None:
    get_logger("jambonz_trio.cluster").setLevel(logging.ERROR)  # the one-line error says it all
    async with open_cluster(args.redis, namespace=args.namespace) as cluster:
        shown: dict[str, ClusterCall] = {}
        for call in await cluster.list_calls():
            shown[call.call_sid] = call
            print(json.dumps(call.to_json()), file=out, flush=True)
        if args.watch:
            async with cluster.watch_calls() as events:
                async for event in events:
                    for change in _changes(event, shown):
                        print(json.dumps(_event_json(change)), file=out, flush=True)


def calls(args: argparse.Namespace, out: TextIO) -> int:
    """Print every live call of the cluster, one JSON object per line (``call_sid``,
    ``member``, ``reconnect_count``, ``from``, ``to``, ...); with ``--watch`` then one line per
    change (``start``, ``update``, ``end``; after a gap in the watch, Redis unreachable, the
    changes it missed), until Ctrl-C (exit status 130). Exit status 1 with a one-line error when Redis
    cannot be reached."""
    try:
        trio.run(_run, args, out)
    except KeyboardInterrupt:  # how a person ends --watch
        return 130
    except ClusterUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
