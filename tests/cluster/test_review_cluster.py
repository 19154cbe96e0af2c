"""Review of the cluster (rev-cluster): each test shows one defect against a real Redis."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from jambonz_trio._cli import main
from jambonz_trio.cluster import CallsSnapshot, Cluster, ClusterCall, ClusterEvent

from .redis import namespace, shared_redis_url

pytestmark = pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")


def test_calls_watch_reports_what_changed_across_a_gap(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``calls --watch`` prints one line per change. It drops every CallsSnapshot, not only the
    first (which repeats the list it printed): a call that ended while Redis was unreachable
    (the watch's next snapshot no longer has it), or that started between the list and the
    watch's first snapshot, is never reported; the printed view stays wrong for ever."""
    url = shared_redis_url()
    gone = ClusterCall(call_sid="ended-during-the-gap", member="m1")
    late = ClusterCall(call_sid="started-before-the-watch", member="m1")

    async def listed(self: Cluster) -> list[ClusterCall]:
        return [gone]

    @contextlib.asynccontextmanager
    async def watch(self: Cluster, **kwargs: Any) -> AsyncIterator[Any]:
        send, receive = trio.open_memory_channel[ClusterEvent](8)
        send.send_nowait(CallsSnapshot((gone, late)))  # first snapshot: one call more
        send.send_nowait(CallsSnapshot((late,)))  # after a gap: the other one ended meanwhile
        send.close()
        yield receive

    monkeypatch.setattr(Cluster, "list_calls", listed)
    monkeypatch.setattr(Cluster, "watch_calls", watch)
    assert main(["calls", "--redis", url, "--namespace", namespace(), "--watch"]) == 0
    out = capsys.readouterr().out
    assert late.call_sid in out, out
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1].get("event") in ("end", "snapshot"), lines  # the end is reported somehow
