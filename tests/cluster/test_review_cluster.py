"""Review of the cluster (rev-cluster): each test shows one defect against a real Redis."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import attrs
import pytest
import trio

from jambonz_trio._cli import main
from jambonz_trio.cluster import CallsSnapshot, Cluster, ClusterCall, ClusterEvent, open_cluster
from jambonz_trio.testing import open_fake_call
from jambonz_trio.verbs import Say

from .apps import counting, run_member
from .redis import namespace, shared_redis_url
from .test_cluster import FAST, eventually

pytestmark = pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")


async def test_a_drained_call_keeps_its_user_data_when_its_removal_is_written_twice(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """A drain hands a call over: its directory entry is removed keeping its stored user_data
    for the member its reconnect reaches (``_removal`` gives ``~``). ``_removal`` forgets the
    hand-over as it builds the batch; when that write fails (one Redis error, or a reply that
    timed out after the script ran) the removal is queued again and written as a plain end,
    which deletes the user_data the drain stored."""
    config = attrs.evolve(FAST, keep_user_data=True)
    cluster, server = await nursery.start(partial(run_member, redis_url, ns, config, handler=counting))
    upsert = cluster._upsert
    failures = [TimeoutError("the reply to this write was lost")]

    async def once_failing(**kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await upsert(**kwargs)

    async with open_cluster(redis_url, namespace=ns, config=config) as control:
        with trio.fail_after(30):
            async with open_fake_call(server.connect_memory, auto_reconnect=False) as fc:
                await fc.start()
                sid = fc.call.call_sid
                assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text="hook 1")]
                await eventually(lambda: _stored_hooks(control, sid, 1), 5)
                # what a drain does to each call it closes (the member lives on while the
                # drain waits for its other calls to close)
                call = server.calls[sid]
                await cluster.hand_over([call])
                cluster._upsert = once_failing
                await call.aclose(1012, "server restarting")
                await fc.expect_close()
            await eventually(lambda: not failures, 5)
            await eventually(lambda: _listed_nowhere(control, sid), 5)
            assert await _stored_hooks(control, sid, 1)  # kept for the member its reconnect reaches


async def _listed_nowhere(cluster: Cluster, sid: str | None) -> bool:
    return await cluster._client.hget(cluster._keys.calls, sid or "") is None


async def _stored_hooks(cluster: Cluster, sid: str | None, hooks: int) -> bool:
    record = await cluster._client.hget(cluster._keys.userdata, sid or "")
    return record is not None and json.loads(json.loads(record)["v"]) == {"hooks": hooks}


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
