"""The Redis-backed cluster in one process against a real Redis: directory, commands from
another handle, views, faults (Redis frozen, killed and restarted), secrets, import isolation."""

from __future__ import annotations

import inspect
import json
import logging
import ssl
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio
from coredis.exceptions import ResponseError

from jambonz_trio import Call, JambonzServer, LocalProtocolError, NotDelivered
from jambonz_trio._sync import leaves
from jambonz_trio.cluster import (
    CallEnded,
    CallNotFound,
    CallsSnapshot,
    CallStarted,
    CallUpdated,
    Cluster,
    ClusterCall,
    ClusterConfig,
    ClusterUnavailable,
    OwnerGone,
    _cluster,
    _scripts,
    open_cluster,
    redact,
)
from jambonz_trio.cluster._model import decode_command, encode_command, ranked_doc
from jambonz_trio.cluster._redis import LuaScript, ScriptFailed, make_client, tls_context
from jambonz_trio.cluster._scripts import Keys
from jambonz_trio.commands import CallStatusCommand, MuteStatusCommand, RawCommand, RedirectCommand
from jambonz_trio.lowlevel import ConnState
from jambonz_trio.testing import CallData, FakeCall, open_fake_call
from jambonz_trio.verbs import Say
from tests.helpers import answering as answer

from .apps import counting, run_member
from .helpers import (
    FAST_KEEPING,
    Member,
    Switch,
    flush_namespace,
    listed_nowhere,
    owned_by,
    stored_hooks,
    two_members_and_a_call,
)
from .redis import PrivateRedis

# coredis 6.9 leaves anyio memory streams unclosed when a connection attempt fails (see the
# _collect_coredis_leftovers fixture); here Redis is killed or refuses passwords on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")

FAST = ClusterConfig(member_ttl=1.0, op_timeout=0.3, reply_timeout=10.0)


async def started_calls(stack: AsyncExitStack, server: JambonzServer, n: int) -> list[FakeCall]:
    """``n`` fake calls to ``server`` (no reconnects), opened on ``stack``, each started."""
    fakes = [
        await stack.enter_async_context(open_fake_call(server.connect_memory, auto_reconnect=False))
        for _ in range(n)
    ]
    for fc in fakes:
        await fc.start()
    return fakes


async def eventually(check: Callable[[], object], within: float) -> None:
    """Wait until ``check()`` (sync, or returning an awaitable) is true; fail after ``within``
    seconds. For state held in Redis or another process, which no event here announces."""
    with trio.fail_after(within):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await trio.sleep(0.02)


async def test_a_call_is_listed_updated_watched_and_removed(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    member, server = await nursery.start(partial(run_member, redis_url, ns, FAST))
    async with open_cluster(redis_url, namespace=ns, config=FAST) as control:
        with trio.fail_after(10):
            data = CallData(from_="+15550001111", to="+15550002222")
            async with (
                open_fake_call(server.connect_memory, call=data) as fc,
                control.watch_calls() as events,
            ):
                assert await events.receive() == CallsSnapshot(())
                await fc.start()
                started = await events.receive()
                assert isinstance(started, CallStarted)
                listed = await control.list_calls()
                assert listed == [started.call]
                entry = listed[0]
                assert (entry.call_sid, entry.member, entry.from_, entry.to) == (
                    data.call_sid,
                    member.member,
                    "+15550001111",
                    "+15550002222",
                )
                assert (entry.account_sid, entry.application_sid) == (data.account_sid, data.application_sid)
                assert (entry.route, entry.user_hash, entry.reconnect_count) == ("/", None, 0)

                await fc.drop()
                await fc.reconnect()
                updated = await events.receive()
                assert isinstance(updated, CallUpdated) and updated.call.reconnect_count == 1
                info = await control.call(data.call_sid).info()
                assert info is not None and info.reconnect_count == 1

                # a session naming the live call's sid is served isolated: it never touches the entry
                async with open_fake_call(
                    server.connect_memory, call=CallData(call_sid=data.call_sid)
                ) as other:
                    await other.start()
                    await other.hangup()
                await member.wait_registered()
                assert await control.get_call(data.call_sid) == info

                await fc.hangup()
                assert await events.receive() == CallEnded(data.call_sid, member.member, "ended")
            assert await control.list_calls() == []
            assert await control.get_call(data.call_sid) is None
            with pytest.raises(CallNotFound):
                await control.call(data.call_sid).mute()
            assert member.member in await control.list_members()


async def test_a_member_swept_while_away_re_registers_and_leaves_no_stray_entry(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    member, server = await nursery.start(partial(run_member, redis_url, ns, FAST))
    async with (
        open_cluster(redis_url, namespace=ns, config=FAST) as control,
        open_fake_call(server.connect_memory) as fc,
    ):
        with trio.fail_after(10):
            await fc.start()
            await member.wait_registered()
            # what another member's sweep does when this one's beats stop reaching Redis
            assert await control._sweep_dead(member.member) == 1
            assert await control.get_call(fc.call.call_sid) is None
            # a write of the swept member arriving late is refused: no sweep would ever find it
            stray = ClusterCall(call_sid="stray", member=member.member)
            await member._apply([("stray", stray.dumps())])
            assert await control._client.hget(control._keys.calls, "stray") is None
            await member.wait_registered()  # it beats again, finds itself unknown, re-registers
            entry = await control.get_call(fc.call.call_sid)
            assert entry is not None and entry.member == member.member


async def test_a_member_back_from_a_redis_blip_does_not_take_back_a_call_that_moved(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """A member whose beats stop reaching Redis is swept; jambonz's reconnect of one of its
    calls lands on another member, which starts the call there (docs/deploying.md). When the
    first member is back, its re-registration must not put its stale, parked copy of that call
    back in the directory (commands would go to a copy whose reconnect never comes, and its
    end would unlist the live call): that copy ends there, as its reconnect grace would, and
    the entry stays with the member jambonz talks to. Its calls no other member took are
    registered again."""
    async with (
        _a_call_on_a(nursery, redis_url, ns) as (a, b, control, target, fc),
        open_fake_call(a.server.connect_memory, auto_reconnect=False) as stays,
    ):
        await stays.start()
        await eventually(lambda: owned_by(control, stays.call.call_sid, a.cluster.member), 5)
        sid, stale, back = await _dropped_then_moved(control, a, b, fc, target)
        await _back(a, back)
        assert await owned_by(control, sid, b.cluster.member)
        assert await owned_by(control, stays.call.call_sid, a.cluster.member)
        # A's copy ended (its reconnect went to B), and its end left B's entry alone
        await eventually(lambda: a.server.calls.get(sid) is None, 5)
        assert stale.close_info is not None and stale.close_info.by == "lost"
        await a.cluster.wait_registered()
        assert await owned_by(control, sid, b.cluster.member)
        assert b.server.calls[sid].state is ConnState.CONNECTED


async def test_a_member_back_from_a_redis_blip_takes_over_a_call_that_reconnected_to_it_meanwhile(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """The other side of the rule above: a call that jambonz reconnected to the swept member
    while it was away (from the member that had registered it since) is that member's, though
    the directory never saw the new socket: the re-registration takes its entry over, as the
    write the reconnect queued would have, and the call goes on there."""
    async with _a_call_on_a(nursery, redis_url, ns) as (a, b, control, target, fc):
        sid = fc.call.call_sid
        call = a.server.calls[sid]
        await fc.drop(reconnect=False)
        back = await _moved_while_away(control, a, b, fc, target)
        await fc.drop(reconnect=False)
        target.to = a.server.connect_memory
        await fc.reconnect()  # back to A's copy, which A cannot list yet
        assert a.server.calls[sid] is call and call.reconnect_count == 1
        await _back(a, back)
        assert await owned_by(control, sid, a.cluster.member)
        assert call.state is ConnState.CONNECTED
        assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text="hook 1")]


async def test_redis_restarted_empty_leaves_the_call_with_the_member_jambonz_talks_to(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """Two members hold a copy of one call: A's parked (jambonz reconnected the call to B while
    A was away from Redis), B's connected. Redis restarts empty and A re-registers first: the
    directory has nothing left to tell the copies apart, so the entries re-registrations write
    say which copy they list (connected or parked, and when its socket was bound, on Redis'
    clock). B's connected copy takes the entry over from A's parked one, and A, told, ends its
    stale copy; B's is never closed, and the next reconnect reaches B's handler."""
    async with _a_call_on_a(nursery, redis_url, ns) as (a, b, control, target, fc):
        sid, stale, a_back = await _dropped_then_moved(control, a, b, fc, target)
        moved = b.server.calls[sid]
        hooks = moved.user_data["hooks"]
        assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text=f"hook {hooks + 1}")]
        b_back = _cut_off(b)  # B reaches Redis only after A has re-registered
        await flush_namespace(control)  # Redis restarted, empty
        await _back(a, a_back)
        assert await owned_by(control, sid, a.cluster.member)  # A's parked copy, first
        await _back(b, b_back)
        assert await owned_by(control, sid, b.cluster.member)
        assert moved.state is ConnState.CONNECTED and b.server.calls.get(sid) is moved
        await eventually(lambda: a.server.calls.get(sid) is None, 5)  # A was told
        assert stale.close_info is not None and stale.close_info.by == "lost"
        await a.cluster.wait_registered()
        assert await owned_by(control, sid, b.cluster.member)  # A's copy's end left it alone
        await fc.drop(reconnect=False)
        target.to = a.server.connect_memory
        await fc.reconnect()  # lands on A: relayed to B's copy, whose handler goes on
        assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text=f"hook {hooks + 2}")]
        assert b.server.calls[sid] is moved and moved.reconnect_count == 1


async def test_an_outranked_re_registration_ends_its_copy_though_the_entry_s_member_is_dead(
    nursery: trio.Nursery, redis_url: str, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member's re-registration outranked by the entry of a member that stopped beating (not
    yet swept) is refused, and its copy ends, as when that member beats: the entry lists the
    copy jambonz talks to, and the call's next reconnect, relayed to a copy kept here, would
    get its stale state. Redis restarts empty; B re-registers the call first (its copy bound
    last) and stores its record, then stops beating, and A re-registers its stale parked copy
    before anyone swept B. (A's copy once took B's entry over: the reconnect was relayed to it,
    and its removal deleted B's record.) B's sweep marks the call orphaned and keeps B's
    record, and the call's reconnect, landing on a third member, restores B's user_data."""
    async with _a_call_on_a(nursery, redis_url, ns) as (a, b, control, target, fc):
        sid, stale, a_back = await _dropped_then_moved(control, a, b, fc, target)
        hooks = b.server.calls[sid].user_data["hooks"]
        assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text=f"hook {hooks + 1}")]
        c_cluster, c = await nursery.start(partial(run_member, redis_url, ns, FAST_KEEPING, handler=counting))
        await c_cluster.wait_registered()
        await flush_namespace(control)  # Redis restarted, empty
        await eventually(lambda: owned_by(control, sid, b.cluster.member), 5)  # B first
        await eventually(lambda: _record_of(control, sid, b.cluster.member, hooks + 1), 5)  # B stored
        record = await control._client.hget(control._keys.userdata, sid)
        sweep = control._sweep_dead
        await _dead_unswept(b, monkeypatch, a.cluster, c_cluster, control)
        assert a.server.calls.get(sid) is stale and stale.state is ConnState.DISCONNECTED
        await _back(a, a_back)
        await eventually(lambda: a.server.calls.get(sid) is None, 5)  # refused: A's copy ended
        entry = await control._client.hget(control._keys.calls, sid)
        assert ClusterCall.loads(entry or "").member == b.cluster.member  # (B's, dead)
        assert await control._client.hget(control._keys.userdata, sid) == record
        assert await sweep(b.cluster.member) == 1  # B's sweep marks it orphaned, keeps its record
        assert await control._client.zscore(control._keys.orphans, sid) is not None
        assert await control._client.hget(control._keys.userdata, sid) == record
        await _restored_on(c, fc, target, hooks + 1)


async def test_a_moved_notice_read_after_the_copy_was_bound_again_leaves_it(
    nursery: trio.Nursery, redis_url: str, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``moved`` notice is about the copy whose entry was taken over, not about whatever
    copy of the call the member holds when it reads it. After Redis restarted empty, B's
    re-registration takes the entry over from A's stale parked copy and tells A; before A reads
    the notice (its inbox task is slower than its directory task, say: it was in its Redis
    backoff), B's socket drops and jambonz reconnects to A, which binds its copy again and
    takes the entry back. A then read the notice and, its entry being written and nothing
    queued, closed the copy jambonz talks to (1012), leaving its own entry listing a call it
    no longer held. A now ends only the copy the notice names (its bind time)."""
    async with _a_call_on_a(nursery, redis_url, ns) as (a, b, control, target, fc):
        sid, stale, a_back = await _dropped_then_moved(control, a, b, fc, target)
        held: list[dict[str, Any]] = []
        monkeypatch.setattr(a.cluster, "_on_moved", held.append)  # A's inbox task lags
        b_back = _cut_off(b)
        await flush_namespace(control)  # Redis restarted, empty
        await _back(a, a_back)
        await _back(b, b_back)
        assert await owned_by(control, sid, b.cluster.member)
        await eventually(lambda: len(held) == 1, 5)  # A was told, and has not acted yet
        await fc.drop(reconnect=False)
        target.to = a.server.connect_memory
        await fc.reconnect()  # jambonz now talks to A's copy
        assert a.server.calls[sid] is stale and stale.state is ConnState.CONNECTED
        await eventually(lambda: owned_by(control, sid, a.cluster.member), 5)
        await a.cluster.wait_registered()
        monkeypatch.undo()
        a.cluster._on_moved(held[0])  # the notice, read late
        assert a.cluster.statistics().calls == 1 and a.server.calls.get(sid) is stale
        hooks = stale.user_data["hooks"]
        assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text=f"hook {hooks + 1}")]
        assert await owned_by(control, sid, a.cluster.member)


async def test_a_copy_moved_away_never_overwrites_the_user_data_its_holder_stored(
    nursery: trio.Nursery, redis_url: str, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the member holding a call's entry stores its user_data. After Redis restarted
    empty, B's re-registration takes the entry (and the stored record) over from A's stale
    copy, and B stores the call's user_data; A has not read the ``moved`` notice yet (its inbox
    task lags) when its stale copy's user_data changes, and its next beat stores it. The store
    wrote A's stale data over B's record (naming A: B's end of the call would not remove it,
    and a reconnect after B's death would restore A's data). It is refused now, nothing
    written, and A's copy is otherwise left as it was (the notice ends it)."""
    async with _a_call_on_a(nursery, redis_url, ns) as (a, b, control, target, fc):
        sid, stale, hooks = await _moved_unread(a, b, control, target, fc, monkeypatch)
        tried = _store_tried(a.cluster, sid, monkeypatch)
        stale.user_data["hooks"] = 99  # A's stale copy changes (a task of its app, say)
        with trio.fail_after(5):
            await tried.wait()  # A's beat tried to store it
        assert await _record_of(control, sid, b.cluster.member, hooks)
        assert a.server.calls.get(sid) is stale and stale.state is ConnState.DISCONNECTED


async def _moved_unread(
    a: Member, b: Member, control: Cluster, target: Switch, fc: FakeCall, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, Call, int]:
    """After Redis restarted empty, B's re-registration took the call's entry (and its stored
    record) over from A's stale parked copy; B answered one more hook and stored its
    user_data; A has not read the ``moved`` notice (its inbox task lags). The sid, A's stale
    copy, and the hook count B stored."""
    sid, stale, a_back = await _dropped_then_moved(control, a, b, fc, target)
    hooks = b.server.calls[sid].user_data["hooks"] + 1
    assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text=f"hook {hooks}")]
    monkeypatch.setattr(a.cluster, "_on_moved", lambda message: None)  # A's inbox task lags
    b_back = _cut_off(b)
    await flush_namespace(control)  # Redis restarted, empty
    await _back(a, a_back)
    await _back(b, b_back)
    assert await owned_by(control, sid, b.cluster.member)
    await eventually(lambda: stored_hooks(control, sid, hooks), 5)  # B stored its own
    return sid, stale, hooks


def _store_tried(cluster: Cluster, sid: str, monkeypatch: pytest.MonkeyPatch) -> trio.Event:
    """An event set once the member's ``STORE_USER_DATA`` (a beat's store) has run with ``sid``."""
    store, tried = cluster._store_ud, trio.Event()

    async def watched(**kwargs: Any) -> Any:
        found = await store(**kwargs)
        if sid in kwargs["args"]:
            tried.set()
        return found

    monkeypatch.setattr(cluster, "_store_ud", watched)
    return tried


async def _dead_unswept(member: Member, monkeypatch: pytest.MonkeyPatch, *others: Cluster) -> trio.Event:
    """The member stops beating (cut off from Redis) and is past its expiry, and ``others``
    never sweep it (until ``monkeypatch.undo()``): the event returned lets it back."""
    for cluster in others:

        async def no_sweep(*args: Any, **kwargs: Any) -> int:
            return 0

        monkeypatch.setattr(cluster, "_sweep_dead", no_sweep)
    back = _cut_off(member)

    async def dead() -> bool:
        return member.cluster.member not in await others[-1].list_members()

    await eventually(dead, 5)
    return back


async def _record_of(control: Cluster, sid: str, member: str, hooks: int) -> bool:
    """The call's stored record names ``member`` and holds its count after ``hooks``."""
    record = json.loads(await control._client.hget(control._keys.userdata, sid) or "{}")
    return record.get("member") == member and await stored_hooks(control, sid, hooks)


async def test_a_drain_leaves_a_call_another_live_member_holds_to_that_member(
    nursery: trio.Nursery, redis_url: str, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drain hands over only the calls no other live member holds. After Redis restarted
    empty, B's re-registration takes the entry (and the stored record) over from A's stale
    parked copy and B stores the call's user_data; A has not read the ``moved`` notice yet
    (its inbox task lags) when it drains, and hands its stale copy over with the rest. The
    hand-over wrote A's stale user_data over B's record (naming A, so B's end of the call
    would leave it behind) with an orphan mark, though B held the call: when B then died, the
    call's reconnect restored A's stale data on the member it reached, and the hooks B's
    handler had answered were lost. A leaves the call's record to B now: the call restored
    after B's death goes on from B's count."""
    async with _a_call_on_a(nursery, redis_url, ns) as (a, b, control, target, fc):
        sid, stale, hooks = await _moved_unread(a, b, control, target, fc, monkeypatch)
        c_cluster, c = await nursery.start(partial(run_member, redis_url, ns, FAST_KEEPING, handler=counting))
        await c_cluster.wait_registered()
        assert a.server.calls.get(sid) is stale  # A drains with the stale copy
        await a.server.drain(grace=0)
        assert await _record_of(control, sid, b.cluster.member, hooks)
        assert await control._client.zscore(control._keys.orphans, sid) is None
        assert b.server.calls[sid].state is ConnState.CONNECTED  # (it never was touched)
        # B dies: the call's reconnect lands on C, which restores it from B's record
        _cut_off(b)
        await control._sweep_dead(b.cluster.member)
        await _restored_on(c, fc, target, hooks)


async def test_a_drain_leaves_a_call_a_dead_member_held_to_that_member_s_sweep(
    nursery: trio.Nursery, redis_url: str, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test above with B dead, not yet swept (it stopped beating: up to about
    ``member_ttl / 3 + op_timeout`` before a sweep): A's hand-over of its stale copy wrote its
    user_data over B's record, named itself and added an orphan mark, so the reconnect after
    B's death restored A's stale data. A leaves any entry that names another member alone now,
    alive or dead: B's sweep marks the call orphaned and keeps B's record, which the call's
    reconnect restores."""
    async with _a_call_on_a(nursery, redis_url, ns) as (a, b, control, target, fc):
        sid, stale, hooks = await _moved_unread(a, b, control, target, fc, monkeypatch)
        c_cluster, c = await nursery.start(partial(run_member, redis_url, ns, FAST_KEEPING, handler=counting))
        await c_cluster.wait_registered()
        sweep = control._sweep_dead
        await _dead_unswept(b, monkeypatch, a.cluster, c_cluster, control)
        assert a.server.calls.get(sid) is stale  # A drains with the stale copy
        await a.server.drain(grace=0)
        assert await _record_of(control, sid, b.cluster.member, hooks)
        assert await control._client.zscore(control._keys.orphans, sid) is None
        assert await sweep(b.cluster.member) == 1  # B's sweep marks it orphaned, keeps its record
        assert await control._client.zscore(control._keys.orphans, sid) is not None
        assert await _record_of(control, sid, b.cluster.member, hooks)
        await _restored_on(c, fc, target, hooks)


async def _restored_on(server: JambonzServer, fc: FakeCall, target: Switch, hooks: int) -> None:
    """The call's socket drops and reconnects to ``server``, which restores the call from its
    stored record: its handler counts on from ``hooks``."""
    await fc.drop(reconnect=False)
    target.to = server.connect_memory
    await fc.reconnect()
    assert server.calls[fc.call.call_sid or ""].restored
    assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text=f"hook {hooks + 1}")]


async def test_a_drain_hands_over_a_call_whose_entry_it_has_not_written_yet(
    nursery: trio.Nursery, redis_url: str, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side of the rule above: A, holding the call, dies; its reconnect lands on B,
    which restores it from A's record and goes on (a hook more), and drains before its
    directory task has written the call's entry (the entry still names A, dead). The hand-over
    waits (bounded) for this member's queued directory writes of the calls it hands over: the
    entry is then B's, and B's newer user_data is what it keeps for the next reconnect."""
    async with _a_call_on_a(nursery, redis_url, ns) as (a, b, control, target, fc):
        sid = fc.call.call_sid or ""
        assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text="hook 1")]
        await eventually(lambda: _record_of(control, sid, a.cluster.member, 1), 5)
        await _dead_unswept(a, monkeypatch, b.cluster, control)
        flush, gate = b.cluster._flush, trio.Event()

        async def gated() -> None:
            await gate.wait()  # B's directory task is slow to write
            await flush()

        monkeypatch.setattr(b.cluster, "_flush", gated)
        await fc.drop(reconnect=False)
        target.to = b.server.connect_memory
        await fc.reconnect()
        assert b.server.calls[sid].restored
        assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text="hook 2")]
        entry = await control._client.hget(control._keys.calls, sid)
        assert ClusterCall.loads(entry or "").member == a.cluster.member  # B's not written yet
        until_written = b.cluster._until_written

        async def waiting(calls: list[tuple[str, Call]]) -> None:
            gate.set()  # the write comes while the hand-over waits for it
            await until_written(calls)

        monkeypatch.setattr(b.cluster, "_until_written", waiting)
        await b.server.drain(grace=0)
        assert await _record_of(control, sid, b.cluster.member, 2)
        assert await control._client.zscore(control._keys.orphans, sid) is not None


async def test_a_hand_over_writes_nothing_for_a_call_another_member_holds(redis_url: str, ns: str) -> None:
    """The rule under the tests above, on the script: a hand-over writes a call's record and
    orphan mark only for its own entry and for no entry (Redis restarted empty: even before
    the member is registered again); an entry naming another member is left alone, whether
    that member beats or stopped beating (on Redis' clock): its sweep marks the call orphaned
    and keeps its record. Under no entry, a record naming another member (a dead holder's, kept
    by its sweep for the call's reconnect) is not written over: the orphan mark alone. It
    answers the sids it left alone."""
    k = Keys(ns)
    far = 2**50  # (ms: an expiry far in the future on Redis' clock)
    async with make_client(redis_url, op_timeout=2.0) as client:
        hand_over = LuaScript(client, "HAND_OVER", _scripts.HAND_OVER, where="redis://here")

        async def run(*sids: str) -> list[str]:
            args: list[str | int] = ["me", 60_000]
            for sid in sids:
                args += [sid, json.dumps({"member": "me", "v": sid})]
            found = await hand_over(keys=[k.members, k.userdata, k.orphans, k.calls], args=args)
            return [str(sid) for sid in found]

        async def written(sid: str) -> bool:
            record = json.loads(await client.hget(k.userdata, sid) or "{}")
            mark = await client.zscore(k.orphans, sid)
            return record.get("v") == sid and record.get("member") == "me" and mark is not None

        try:
            assert await run("s-empty") == []  # nothing in Redis at all
            assert await written("s-empty")
            await client.zadd(k.members, {"me": far, "live": far, "dead": 1})
            for sid, member in [("s-mine", "me"), ("s-live", "live"), ("s-dead", "dead")]:
                await client.hset(k.calls, {sid: ClusterCall(call_sid=sid, member=member).dumps()})
            theirs = {
                sid: json.dumps({"member": member, "v": "theirs", "confirmed": True})
                for sid, member in [
                    ("s-live", "live"),
                    ("s-dead", "dead"),
                    ("s-gone", "dead"),
                ]
            }
            await client.hset(k.userdata, theirs)
            assert await run("s-mine", "s-live", "s-dead", "s-none", "s-gone") == [
                "s-live",
                "s-dead",
            ]
            assert [await written(sid) for sid in ("s-mine", "s-none")] == [True] * 2
            for sid, record in theirs.items():
                assert await client.hget(k.userdata, sid) == record
            for sid in ("s-live", "s-dead"):
                assert await client.zscore(k.orphans, sid) is None
            assert await client.zscore(k.orphans, "s-gone") is not None
        finally:
            await client.delete([k.members, k.userdata, k.orphans, k.calls])


async def test_a_dead_member_s_entry_refuses_an_outranked_re_registration_and_a_put_re_tags_its_record(
    redis_url: str, ns: str
) -> None:
    """The rule under
    ``test_an_outranked_re_registration_ends_its_copy_though_the_entry_s_member_is_dead``, on
    the scripts: an entry naming another member is held whether or not that member still
    beats. A re-registration its ``copy`` outranks, or a ``?`` one meeting it with no copy, is
    refused (nothing written: the record stays that member's, ``confirmed`` too), and so are
    the stale copy's stores. A put that takes an entry over (a copy bound since) re-tags the
    call's record as its member's (``confirmed`` goes) and its stores go through; so does a
    re-registration meeting no entry but another member's record (a drain's during a Redis
    restart): the live copy's stores are never blocked by it."""
    k = Keys(ns)
    far = 2**50
    theirs = json.dumps({"member": "dead", "v": "newer", "confirmed": True})
    async with make_client(redis_url, op_timeout=2.0) as client:
        upsert = LuaScript(client, "UPSERT", _scripts.UPSERT, where="redis://here")
        store = LuaScript(client, "STORE_USER_DATA", _scripts.STORE_USER_DATA, where="redis://here")

        async def write(doc: str) -> list[Any]:
            keys = [k.members, k.calls, k.events, k.orphans, k.member_calls("me"), k.userdata]
            return list(await upsert(keys=keys, args=["me", k.member_prefix, 100, 100, "s", doc]))

        async def stored() -> list[str]:
            mine = json.dumps({"member": "me", "v": "stale"})
            found = await store(keys=[k.members, k.userdata, k.calls], args=["me", "s", mine])
            return [str(sid) for sid in found]

        async def record() -> dict[str, Any]:
            return dict(json.loads(await client.hget(k.userdata, "s") or "{}"))

        def copy(member: str, bound: int) -> str:
            return ranked_doc(ClusterCall(call_sid="s", member=member), bound_ms=bound, connected=False)

        async def holder() -> str:
            return ClusterCall.loads(await client.hget(k.calls, "s") or "").member

        entry = ClusterCall(call_sid="s", member="me")
        try:
            await client.zadd(k.members, {"me": far, "dead": 1})
            await client.hset(k.calls, {"s": copy("dead", 900)})
            await client.hset(k.userdata, {"s": theirs})
            assert await write("?" + copy("me", 100)) == [0, "s"]  # outranked: refused
            assert await write(copy("me", 100)) == [0, "s"]
            assert await write("?" + entry.dumps()) == [0, "s"]  # no copy of its own: refused
            assert await holder() == "dead"
            assert await client.hget(k.userdata, "s") == theirs
            assert await stored() == ["s"]
            assert await client.hget(k.userdata, "s") == theirs
            # bound since: the write takes the entry over and re-tags the record
            assert await write(entry.dumps()) == [1]
            assert await holder() == "me"
            assert await record() == {"member": "me", "v": "newer"}
            assert await stored() == []
            assert await record() == {"member": "me", "v": "stale"}
            # no entry (Redis restarted), another member's drain left its record: re-tagged
            await client.hdel(k.calls, ["s"])
            await client.hset(k.userdata, {"s": json.dumps({"member": "other", "v": "drained"})})
            assert await write("?" + entry.dumps()) == [1]
            assert await record() == {"member": "me", "v": "drained"}
            assert await stored() == []
            assert await record() == {"member": "me", "v": "stale"}
        finally:
            await client.delete([k.members, k.calls, k.events, k.orphans, k.member_calls("me"), k.userdata])


async def test_re_registrations_of_one_call_by_two_members_keep_the_copy_bound_last(
    redis_url: str, ns: str
) -> None:
    """The rule under the test above, on the script: whichever member writes first, the copy
    whose socket was bound last (on Redis' clock) keeps the entry, connected or not; bound at
    the same time, a connected copy wins; the member whose entry is taken over is told (a
    ``moved`` entry in its inbox), the other is refused. A re-registration unchanged since its
    last write (``?``) never takes an entry written for a socket bound since (no ``copy``);
    one bound again since does, as before, and tells no one."""

    def copy(member: Cluster, sid: str, bound: int, connected: bool) -> str:
        return ranked_doc(
            ClusterCall(call_sid=sid, member=member.member), bound_ms=bound, connected=connected
        )

    async def holder(sid: str) -> str:
        entry = await a.get_call(sid)
        assert entry is not None
        return entry.member

    async def told(member: Cluster) -> list[tuple[str, str]]:
        entries = await member._client.xrange(member._keys.inbox(member.member))
        messages = [json.loads(str(e.field_values["m"])) for e in entries]
        return [(m["sid"], m["to"]) for m in messages if m.get("k") == "moved"]

    with trio.fail_after(10):
        async with (
            open_cluster(redis_url, namespace=ns, config=FAST) as a,
            open_cluster(redis_url, namespace=ns, config=FAST) as b,
        ):
            await a.wait_registered()
            await b.wait_registered()
            # bound later, though parked: takes the entry over, and A is told
            assert await a._apply([("s1", "?" + copy(a, "s1", 100, True))]) == []
            assert await b._apply([("s1", "?" + copy(b, "s1", 200, False))]) == []
            assert await holder("s1") == b.member
            # the other order: the copy bound earlier is refused
            assert await a._apply([("s1", "?" + copy(a, "s1", 100, True))]) == ["s1"]
            assert await holder("s1") == b.member
            # bound at the same time: the connected copy, in either order
            assert await a._apply([("s2", "?" + copy(a, "s2", 100, False))]) == []
            assert await b._apply([("s2", "?" + copy(b, "s2", 100, True))]) == []
            assert await a._apply([("s3", "?" + copy(a, "s3", 100, True))]) == []
            assert await b._apply([("s3", "?" + copy(b, "s3", 100, False))]) == ["s3"]
            assert [await holder(s) for s in ("s2", "s3")] == [b.member, a.member]
            # a plain entry (a socket bound there since): refused unless bound again since
            assert await a._apply([("s4", ClusterCall(call_sid="s4", member=a.member).dumps())]) == []
            assert await b._apply([("s4", "?" + copy(b, "s4", 900, True))]) == ["s4"]
            assert await b._apply([("s4", copy(b, "s4", 900, True))]) == []
            assert await holder("s4") == b.member
            assert await told(a) == [("s1", b.member), ("s2", b.member)]
            assert await told(b) == []


@asynccontextmanager
async def _a_call_on_a(
    nursery: trio.Nursery, url: str, ns: str
) -> AsyncIterator[tuple[Member, Member, Cluster, Switch, FakeCall]]:
    """:func:`two_members_and_a_call`, the call started on A and listed there (30 s)."""
    async with two_members_and_a_call(nursery, url, ns, within=30) as (a, b, control, target, fc):
        await fc.start()
        await eventually(lambda: owned_by(control, fc.call.call_sid, a.cluster.member), 5)
        yield a, b, control, target, fc


async def _dropped_then_moved(
    control: Cluster, a: Member, b: Member, fc: FakeCall, target: Switch
) -> tuple[str, Call, trio.Event]:
    """The call's socket drops from A (A's copy parks), then it moves to B while A is away
    (:func:`_moved_while_away`): its sid, A's stale copy, the event that lets A back."""
    sid = fc.call.call_sid or ""
    stale = a.server.calls[sid]
    await fc.drop(reconnect=False)
    await eventually(lambda: stale.state is ConnState.DISCONNECTED, 5)
    return sid, stale, await _moved_while_away(control, a, b, fc, target)


async def _moved_while_away(
    control: Cluster, a: Member, b: Member, fc: FakeCall, target: Switch
) -> trio.Event:
    """A's beats stop reaching Redis (until the event returned is set) and A is swept; the
    call, whose socket dropped from A, reconnects to B, which starts it there."""
    back = _cut_off(a)
    await control._sweep_dead(a.cluster.member)  # what B's sweep does once A expired
    target.to = b.server.connect_memory
    await fc.reconnect()
    assert b.server.calls[fc.call.call_sid].restored
    await eventually(lambda: owned_by(control, fc.call.call_sid, b.cluster.member), 5)
    return back


def _cut_off(member: Member) -> trio.Event:
    """The member's beats stop reaching Redis until the event returned is set (so it writes
    nothing to the directory: every write follows a beat that answered)."""
    back = trio.Event()
    heartbeat = member.cluster._heartbeat

    async def cut(**kwargs: Any) -> Any:
        if not back.is_set():
            raise TimeoutError(f"{member.cluster.member}'s link to Redis is down")
        return await heartbeat(**kwargs)

    member.cluster._heartbeat = cut  # type: ignore[assignment]
    return back


async def _back(member: Member, back: trio.Event) -> None:
    """The member reaches Redis again: it beats, finds itself unknown, re-registers."""
    resyncs = member.cluster.statistics().resyncs
    back.set()
    await eventually(lambda: member.cluster.statistics().resyncs > resyncs, 5)
    await member.cluster.wait_registered()


async def test_a_restored_call_that_ends_soon_leaves_no_stored_user_data_behind(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """A dead owner's call starts where its reconnect lands, its user_data restored from the
    record the owner stored (which names the owner). Registering the call there removes the
    orphan mark that would have swept the record: the new member takes the record over, so
    that the call's end removes it even before that member's first store (one beat,
    ``member_ttl / 3``)."""
    slow = attrs.evolve(FAST_KEEPING, member_ttl=30.0)  # B: no beat (no store) during the test
    quick = attrs.evolve(FAST_KEEPING, orphan_keep=1.0)  # A: stores at once; its orphans go fast
    b_cluster, b = await nursery.start(partial(run_member, redis_url, ns, slow, handler=counting))
    async with open_cluster(redis_url, namespace=ns, config=quick) as control:
        with trio.fail_after(30):
            await b_cluster.wait_registered()
            async with trio.open_nursery() as doomed:
                _a, a = await doomed.start(partial(run_member, redis_url, ns, quick, handler=counting))
                async with open_fake_call(a.connect_memory, auto_reconnect=False) as fc:
                    await fc.start()
                    sid = fc.call.call_sid
                    assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text="hook 1")]
                    await eventually(lambda: stored_hooks(control, sid, 1), 5)
                    data = fc.call
                    doomed.cancel_scope.cancel()  # the owner goes
            async with open_fake_call(b.connect_memory, auto_reconnect=False, call=data) as fc2:
                await fc2.start("session:reconnect")
                assert b.calls[sid].restored
                await fc2.gather_speech("/bye", "bye")  # the call ends at once
                await fc2.expect_close(1000)
            # the close frame comes before the call's task is over, and B queues the removal
            # only then: until B drops the call, wait_registered finds nothing pending
            await eventually(lambda: b_cluster.statistics().calls == 0, 5)
            await b_cluster.wait_registered()  # (the removal written)
            assert await listed_nowhere(control, sid)
            # a record with no live entry is removed only through its orphan mark
            k = control._keys
            record = await control._client.hget(k.userdata, sid)
            mark = await control._client.zscore(k.orphans, sid)
            assert record is None or mark is not None, record


async def test_a_re_registration_longer_than_member_ttl_keeps_the_member_alive(
    nursery: trio.Nursery, redis_url: str, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full re-registration writes its calls chunk by chunk, each write bounded by
    ``op_timeout``: with many calls and a slow Redis it takes longer than ``member_ttl``. The
    member beats between the chunks as its beats fall due, so the others never sweep it
    mid-write (which made the rest of its writes fail, and the re-registration start over,
    for ever while it outlasts ``member_ttl``). Eight calls in chunks of one, each write 0.25 s
    late, after Redis restarted empty: 2 s of writes, ``member_ttl`` 1 s. Real time: liveness
    is judged on Redis' clock."""
    monkeypatch.setattr(_cluster, "_CHUNK", 1)
    member, server = await nursery.start(partial(run_member, redis_url, ns, FAST))
    with trio.fail_after(20):
        async with (
            open_cluster(redis_url, namespace=ns, config=FAST) as control,  # sweeps every 1/3 s
            AsyncExitStack() as calls,
        ):
            fakes = await started_calls(calls, server, 8)
            await member.wait_registered()
            upsert = member._upsert

            async def slow(**kwargs: Any) -> Any:
                await trio.sleep(0.25)  # a slow Redis: each directory write takes this long
                return await upsert(**kwargs)

            member._upsert = slow
            async with control.watch_calls() as events:
                assert isinstance(await events.receive(), CallsSnapshot)
                resyncs = member.statistics().resyncs
                await flush_namespace(control)
                # one re-registration, done in about 2 s
                await eventually(lambda: member.statistics().resyncs > resyncs, 8)
                await member.wait_registered()
                member._upsert = upsert
                ended = []
                while True:
                    try:
                        event = events.receive_nowait()
                    except trio.WouldBlock:
                        break
                    if isinstance(event, CallEnded):
                        ended.append(event)
            assert ended == []  # never swept
            assert member.statistics().resyncs == resyncs + 1
            listed = {c.call_sid for c in await control.list_calls()}
            assert listed == {fc.call.call_sid for fc in fakes}


async def test_a_member_whose_every_write_spans_a_beat_still_sweeps_and_stores_user_data(
    nursery: trio.Nursery, redis_url: str, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each beat also sweeps the dead members and (``keep_user_data``) stores the user_data
    that changed. A beat made between two writes of a long flush (so the member is not swept
    mid-write) moves the next one forward: the directory task, at its next turn, found no beat
    due and went on flushing. Under steady churn against a slow Redis, where every flush
    spans the time a beat falls due, the member beat but never swept nor stored user_data: a
    dead member's calls stayed listed, and a call restored after a failover got stale data.
    Here two calls' entries are written again and again (each write queues its call's next
    update, as churn would), one write per chunk, the first of each flush lasting until a beat
    falls due: every beat falls between the two writes of a flush, never at a turn of the
    task. Within eight such beats a killed member's call is swept and a changed user_data
    stored. Real time: liveness is judged on Redis' clock."""
    monkeypatch.setattr(_cluster, "_CHUNK", 1)
    member, server = await nursery.start(partial(run_member, redis_url, ns, FAST_KEEPING))
    client, keys = member._client, member._keys
    with trio.fail_after(20):
        async with AsyncExitStack() as calls:
            fakes = await started_calls(calls, server, 2)
            await member.wait_registered()
            slow_sid, fast_sid = (fc.call.call_sid for fc in fakes)
            assert slow_sid is not None and fast_sid is not None
            upsert, beat = member._upsert, member._beat
            churn = True
            beats: list[bool] = []  # per beat: made while a flush was being written

            async def slow(**kwargs: Any) -> Any:
                sid = kwargs["args"][4]  # one call per write (_CHUNK)
                if sid == slow_sid:  # the flush's first write lasts until a beat falls due
                    await trio.sleep_until(member._next_beat)
                found = await upsert(**kwargs)
                if churn and sid in member._live:
                    member._queue(sid, member._live[sid][1])  # its next update, already waiting
                return found

            async def counted() -> bool:
                beats.append(member._flushing)
                present: bool = await beat()
                return present

            member._upsert = slow
            member._beat = counted
            member._queue(slow_sid, member._live[slow_sid][1])
            member._queue(fast_sid, member._live[fast_sid][1])
            await eventually(lambda: len(beats) >= 2, 5)  # the churn has its pace

            # a member killed (no leave), with a call; this member is the only one to sweep it
            async with trio.open_nursery() as doomed:
                dead, dead_server = await doomed.start(partial(run_member, redis_url, ns, FAST))
                async with open_fake_call(dead_server.connect_memory, auto_reconnect=False) as gone:
                    await gone.start()
                    await dead.wait_registered()

                    async def killed() -> None:
                        return None

                    dead._leave = killed
                    doomed.cancel_scope.cancel()
            assert await client.hexists(keys.calls, gone.call.call_sid or "")
            member._live[slow_sid][0].user_data["step"] = 1
            first = len(beats)
            await eventually(lambda: len(beats) >= first + 8, 10)
            during = beats[first:]
            swept = not await client.hexists(keys.calls, gone.call.call_sid or "")
            record = await client.hget(keys.userdata, slow_sid)
            stored = record is not None and json.loads(json.loads(record)["v"]) == {"step": 1}
            churn = False
            member._upsert, member._beat = upsert, beat
        assert all(during)  # every beat was made inside a flush, as the churn meant
        assert (swept, stored) == (True, True)
        assert member.statistics().resyncs == 1  # never swept itself


async def test_a_cluster_whose_members_all_died_leaves_no_key_without_an_expiry(
    redis_url: str, ns: str
) -> None:
    """Every heartbeat re-arms a PEXPIRE of the shared keys, but a PEXPIRE of a key that does
    not exist yet does nothing: the keys a member's first call creates (the calls hash, the
    events stream, the member's calls set) get their expiry from the write that creates them.
    A member that dies before its next beat (killed: no leave), with no other member to sweep
    it, leaves nothing for ever (once the members zset expires no sweep can find them)."""
    config = attrs.evolve(FAST, member_ttl=30.0)  # the next beat is 10 s away
    with trio.fail_after(20):
        async with trio.open_nursery() as doomed:
            cluster, server = await doomed.start(partial(run_member, redis_url, ns, config))
            await cluster.wait_registered()
            async with open_fake_call(server.connect_memory, auto_reconnect=False) as fc:
                await fc.start()
                await cluster.wait_registered()

                async def killed() -> None:  # no leave: the process is gone
                    return None

                cluster._leave = killed
                doomed.cancel_scope.cancel()
        client = make_client(redis_url, op_timeout=1.0)
        async with client:
            keys = [str(k) async for k in client.scan_iter(match=f"jt:{{{ns}}}*")]
            assert keys
            no_expiry = [k for k in keys if await client.pttl(k) < 0]
    assert no_expiry == []


async def test_commands_from_another_member_obey_the_local_rules(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    answer_now = trio.Event()

    async def slow_to_answer(call: Call) -> None:
        await answer_now.wait()
        await answer(call)

    _member, server = await nursery.start(partial(run_member, redis_url, ns, FAST, handler=slow_to_answer))
    async with open_cluster(redis_url, namespace=ns, config=FAST) as control:
        with trio.fail_after(10):
            async with open_fake_call(server.connect_memory) as fc:
                async with trio.open_nursery() as inner:
                    inner.start_soon(fc.start)
                    sid = fc.call.call_sid
                    await eventually(partial(control.get_call, sid), 5)
                    remote = control.call(sid)
                    with pytest.raises(LocalProtocolError, match="before the session:new ack"):
                        await remote.mute()  # refused by the owner's Call, as locally
                    answer_now.set()
                await remote.redirect([Say(text="one")])
                await remote.redirect([Say(text="two")], queue=True)
                await remote.send_command(
                    RawCommand(command="redirect", data=[{"verb": "say", "text": "raw"}])
                )
                assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="one"),)
                two = await fc.expect_command(RedirectCommand)
                assert two.verbs == (Say(text="two"),) and two.queue
                assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="raw"),)

                # while the socket is down the command waits on the owner, as locally
                await fc.drop()
                async with trio.open_nursery() as inner:
                    inner.start_soon(remote.hangup)
                    await trio.sleep(0.2)  # let it reach the owner and wait there
                    await fc.reconnect()
                assert (await fc.expect_command(CallStatusCommand)).call_status == "completed"

                # one request id is executed at most once
                await control.send_command(sid, RedirectCommand(verbs=(Say(text="once"),)), request_id="r-1")
                await control.send_command(sid, RedirectCommand(verbs=(Say(text="once"),)), request_id="r-1")
                assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="once"),)
                await fc.expect_no_command(within=0.3)
                assert _member.statistics().duplicates_dropped == 1

            with pytest.raises(CallNotFound):
                await control.send_command("no-such-call", MuteStatusCommand(mute_status="mute"))


async def test_a_command_retried_with_its_request_id_after_a_timeout_is_executed(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """send_command's docstring: give the same ``request_id`` to retry after
    ``NotDelivered(maybe_sent=True)``. An attempt that timed out while the call waited for a
    reconnect is dropped on the owner (never sent) and leaves no trace: the retry runs."""
    _member, server = await nursery.start(partial(run_member, redis_url, ns, FAST))
    async with open_cluster(redis_url, namespace=ns, config=attrs.evolve(FAST, reply_timeout=1.0)) as control:
        with trio.fail_after(20):
            async with a_disconnected_call(server, control) as (fc, call):
                sid = fc.call.call_sid or ""
                redirect = RedirectCommand(verbs=(Say(text="once"),))
                with pytest.raises(NotDelivered) as first:
                    await control.send_command(sid, redirect, request_id="retry-1")
                assert first.value.maybe_sent
                # the owner drops it (its sender gave up): it never went out
                await eventually(lambda: call.statistics().commands_queued == 0, 5)
                await fc.reconnect()
                await eventually(lambda: call.state is ConnState.CONNECTED, 5)
                await fc.expect_no_command(within=0.3)
                # the documented retry
                await control.send_command(sid, redirect, request_id="retry-1")
                assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="once"),)


async def test_one_request_id_in_flight_twice_runs_once_and_answers_the_attempt_still_waiting(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """Two sends of one request id at once (two tasks retrying, say) share one execution:
    the command goes out once, and the attempt whose sender gave up takes nothing with it."""
    member, server = await nursery.start(partial(run_member, redis_url, ns, FAST))
    async with open_cluster(redis_url, namespace=ns, config=attrs.evolve(FAST, reply_timeout=3.0)) as control:
        with trio.fail_after(20):
            async with a_disconnected_call(server, control) as (fc, call):
                sid = fc.call.call_sid or ""
                answered: list[str] = []

                async def send(
                    text: str, rid: str, *, task_status: trio.TaskStatus[trio.CancelScope]
                ) -> None:
                    with trio.CancelScope() as scope:
                        task_status.started(scope)
                        await control.send_command(
                            sid, RedirectCommand(verbs=(Say(text=text),)), request_id=rid
                        )
                        answered.append(text)

                async with trio.open_nursery() as senders:
                    first = await senders.start(send, "once", "twice")
                    await eventually(lambda: call.statistics().commands_queued == 1, 5)
                    await senders.start(send, "once", "twice")
                    await eventually(lambda: member.statistics().duplicates_dropped == 1, 5)
                    first.cancel()  # its sender gives up; the other attempt still waits
                    await eventually(partial(_in_inbox, control, member.member, "cancel"), 5)
                    # the owner reads its inbox in order: once a later command waits behind
                    # the first, the cancel was handled
                    await senders.start(send, "later", "later")
                    await eventually(lambda: len(member._lanes.get(sid, ())) == 1, 5)
                    assert call.statistics().commands_queued == 1
                    await fc.reconnect()
                for text in ("once", "later"):
                    assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text=text),)
                await fc.expect_no_command(within=0.3)
                assert sorted(answered) == ["later", "once"]


async def test_a_request_id_runs_once_whichever_member_sends_it(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """FM-43 on the owner itself: a command retried with its request id through the member
    that holds the call ran again (the owner's own sends skipped the de-duplication), while
    the same retry from another member was answered with the first outcome. One id now runs
    once, whichever member sends it, and commands from both wait in the call's one queue."""
    member, server = await nursery.start(partial(run_member, redis_url, ns, FAST))
    async with open_cluster(redis_url, namespace=ns, config=FAST) as control:
        with trio.fail_after(20):
            async with open_fake_call(server.connect_memory) as fc:
                await fc.start()
                sid = fc.call.call_sid or ""
                await eventually(lambda: owned_by(control, sid, member.member), 5)
                once = RedirectCommand(verbs=(Say(text="once"),))
                await member.send_command(sid, once, request_id="own-1")
                await member.send_command(sid, once, request_id="own-1")  # the owner retries
                await control.send_command(sid, once, request_id="own-1")  # another member too
                assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="once"),)
                await fc.expect_no_command(within=0.3)
                assert member.statistics().duplicates_dropped == 2
                # the owner's own commands keep their errors
                with pytest.raises(LocalProtocolError):
                    await member.send_command(sid, RawCommand(command="redirect", data="x" * 2_000_000))
            with pytest.raises(CallNotFound):
                await member.send_command(sid, once, request_id="own-2")


async def test_a_command_refused_before_it_went_out_leaves_no_trace_for_its_retry(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """``send_command``'s ``request_id`` contract: an attempt that never went out leaves no
    trace, so its retry runs the command. A command refused before the ``session:new``
    answer (``LocalProtocolError``: jambonz would drop it) was remembered under its id, and
    the retry after the answer got the same refusal, whichever member sent it."""
    answer_now = trio.Event()

    async def late_answer(call: Call) -> None:
        await answer_now.wait()
        await call.ack(call.session, [Say(text="hi")])
        await call.wait_closed()

    member, server = await nursery.start(partial(run_member, redis_url, ns, FAST, handler=late_answer))
    async with open_cluster(redis_url, namespace=ns, config=FAST) as control:
        with trio.fail_after(20):
            async with open_fake_call(server.connect_memory) as fc, trio.open_nursery() as inner:
                inner.start_soon(fc.start)
                sid = fc.call.call_sid or ""
                await eventually(lambda: owned_by(control, sid, member.member), 5)
                retried = RedirectCommand(verbs=(Say(text="retried"),))
                for sender, rid in ((member, "early-own"), (control, "early-remote")):
                    with pytest.raises(LocalProtocolError, match="session:new"):
                        await sender.send_command(sid, retried, request_id=rid)
                answer_now.set()
                await server.calls[sid].wait_session_acked()
                for sender, rid in ((member, "early-own"), (control, "early-remote")):
                    await sender.send_command(sid, retried, request_id=rid)
                    assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="retried"),)


async def test_a_member_restarted_with_its_id_ignores_what_was_sent_to_the_process_before(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """A member that crashed leaves its inbox behind (it expires with the namespace's keys, or
    goes with the sweep of the member): a process started with the same id found in it the
    commands and relay requests sent to the crashed one, for calls that died with it, and
    answered them (``CallNotFound`` to a sender that may be retrying, a relay refused) or,
    had the call reconnected to it meanwhile, ran them. What was sent before the member's
    first heartbeat is now ignored; what is sent to it after is served."""
    keys = Keys(ns)
    me, sender, holder = "restarted-member", "ghost-sender", "ghost-holder"
    async with make_client(redis_url, op_timeout=2.0) as client:
        for inbox in (keys.inbox(me), keys.inbox(sender), keys.inbox(holder)):
            await client.xadd(inbox, {"m": '{"k":"hello"}'})
            await client.pexpire(inbox, 60_000)
        stale_cmd = {"k": "cmd", "id": "before-the-crash", "a": "a1", "to": sender, "sid": "sid-old",
                     "cmd": encode_command(RedirectCommand(verbs=(Say(text="stale"),))), "ttl": 65_000}  # fmt: skip
        stale_relay = {"k": "relay", "r": "rid-old", "from": holder, "sid": "sid-old", "route": "/",
                       "user": None, "ttl": 60_000}  # fmt: skip
        await client.xadd(keys.inbox(me), {"m": json.dumps(stale_cmd)})
        await client.xadd(keys.inbox(me), {"m": json.dumps(stale_relay), "d": "{}"})

        member, server = await nursery.start(partial(run_member, redis_url, ns, FAST, member=me))
        async with open_cluster(redis_url, namespace=ns, config=FAST) as control:
            with trio.fail_after(20):
                await member.wait_registered()
                async with open_fake_call(server.connect_memory) as fc:
                    await fc.start()
                    sid = fc.call.call_sid or ""
                    await eventually(lambda: owned_by(control, sid, me), 5)
                    # read after the stale entries (one inbox, in order): served
                    await control.call(sid).redirect([Say(text="fresh")])
                    assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="fresh"),)
                    await fc.expect_no_command(within=0.3)
        assert member.statistics().commands_handled == 1
        for inbox in (keys.inbox(sender), keys.inbox(holder)):  # nothing answered
            entries = await client.xrange(inbox)
            assert [json.loads(str(e.field_values["m"]))["k"] for e in entries] == ["hello"]


async def test_a_member_restarted_with_its_id_leaves_the_calls_before_it_to_their_reconnects(
    nursery: trio.Nursery, redis_url: str, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that crashed leaves its calls in the directory; restarted with the same id
    before its expiry, the member's first re-registration removed them as ended, stored
    user_data and all: a command got ``CallNotFound`` (``OwnerGone`` with any other id) and a
    reconnect landing on any member started the call without its user_data (FM-49). The
    calls of the process before are now swept as a dead member's are: orphan marks, user_data
    kept ``orphan_keep``."""
    me = "restarted-member"
    record = json.dumps({"member": me, "route": "/", "user": None, "v": json.dumps({"hooks": 3})})
    with trio.fail_after(20):
        async with open_cluster(redis_url, namespace=ns, member=me, config=FAST_KEEPING) as before:
            await before.wait_registered()
            assert (
                await before._apply([("sid-old", ClusterCall(call_sid="sid-old", member=me).dumps())]) == []
            )
            keys = [before._keys.members, before._keys.userdata, before._keys.calls]
            assert await before._store_ud(keys=keys, args=[me, "sid-old", record]) == []

            async def crashed() -> None:  # no deregistration: its entries stay until its expiry
                pass

            monkeypatch.setattr(before, "_leave", crashed)
        member, _server = await nursery.start(partial(run_member, redis_url, ns, FAST_KEEPING, member=me))
        async with open_cluster(redis_url, namespace=ns, config=FAST_KEEPING) as control:
            await member.wait_registered()
            with pytest.raises(OwnerGone):
                await control.send_command("sid-old", RedirectCommand(verbs=(Say(text="x"),)))
            assert await control._client.hget(control._keys.userdata, "sid-old") == record


async def _in_inbox(cluster: Cluster, member: str, kind: str) -> bool:
    entries = await cluster._client.xrange(cluster._keys.inbox(member))
    return any(json.loads(str(entry.field_values["m"]))["k"] == kind for entry in entries)


@asynccontextmanager
async def a_disconnected_call(
    server: JambonzServer, control: Cluster
) -> AsyncIterator[tuple[FakeCall, Call]]:
    """A call of ``server``'s, listed in the directory, whose socket dropped (jambonz will
    reconnect: ``fc.reconnect()``): commands sent to it wait on its owner."""
    async with open_fake_call(server.connect_memory, auto_reconnect=False) as fc:
        await fc.start()
        call = server.calls[fc.call.call_sid]
        await eventually(partial(control.get_call, fc.call.call_sid or ""), 5)
        await fc.drop(reconnect=False)
        await eventually(lambda: call.state is ConnState.DISCONNECTED, 5)
        yield fc, call


async def test_a_frozen_redis_never_delays_a_call(
    nursery: trio.Nursery, own_redis: PrivateRedis, ns: str
) -> None:
    """Updates wait in the bounded, coalesced queue; acks go out at once; an overflow becomes
    one re-registration of exactly the live calls once Redis answers."""
    config = ClusterConfig(member_ttl=30.0, op_timeout=3.0, max_pending_updates=2)
    member, server = await nursery.start(partial(run_member, own_redis.url, ns, config))
    with trio.fail_after(10):
        await member.wait_registered()
    own_redis.freeze()
    try:
        calls = []
        async with trio.open_nursery() as holders:
            for _ in range(4):
                fc = await holders.start(_held_call, server)
                calls.append(fc)
            with trio.fail_after(2):  # far below op_timeout: nothing waited for Redis
                ack = await calls[0].hook("/x")
            assert ack.verbs == [Say(text="ok /x")]
            with trio.fail_after(2):
                await calls[0].hangup()
                # (the member drops the call when its task is over, after the close handshake)
                await eventually(lambda: member.statistics().calls == 3, 2)
            stats = member.statistics()
            assert stats.overflows == 1 and stats.pending_updates == 0
            assert stats.calls == 3  # the member still tracks its live calls itself
            own_redis.thaw()
            with trio.fail_after(15):
                await member.wait_registered()
                async with open_cluster(own_redis.url, namespace=ns, config=FAST) as control:
                    listed = {c.call_sid for c in await control.list_calls()}
            assert listed == {fc.call.call_sid for fc in calls[1:]}
            holders.cancel_scope.cancel()
    finally:
        own_redis.thaw()


async def _held_call(server: object, *, task_status: trio.TaskStatus[object]) -> None:
    async with open_fake_call(server.connect_memory) as fc:  # type: ignore[attr-defined]
        with trio.fail_after(2):
            await fc.start()
        task_status.started(fc)
        await trio.sleep_forever()


async def test_redis_killed_mid_call_then_back(
    nursery: trio.Nursery, own_redis: PrivateRedis, ns: str
) -> None:
    member, server = await nursery.start(partial(run_member, own_redis.url, ns, FAST))
    async with (
        open_cluster(own_redis.url, namespace=ns, config=FAST) as control,
        open_fake_call(server.connect_memory) as fc,
    ):
        with trio.fail_after(10):
            await fc.start()
            await member.wait_registered()
        own_redis.kill()
        with trio.fail_after(2):  # the local call goes on as in one process
            assert (await fc.hook("/during")).verbs == [Say(text="ok /during")]
            with pytest.raises(ClusterUnavailable) as refused:
                await control.list_calls()
            assert not refused.value.maybe_sent
            with pytest.raises(ClusterUnavailable) as failed:
                await control.call(fc.call.call_sid).mute()
            assert isinstance(failed.value, NotDelivered) and failed.value.maybe_sent is False
        own_redis.start()  # empty: Redis here keeps nothing on disk
        with trio.fail_after(15):  # the member re-registers itself and its call
            await eventually(lambda: member.statistics().redis_up, 15)
            await eventually(partial(control.get_call, fc.call.call_sid), 15)
            await control.call(fc.call.call_sid).redirect([Say(text="back")])
            assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="back"),)
        assert member.statistics().resyncs >= 2


async def test_the_password_is_never_logged(
    nursery: trio.Nursery, own_redis_with_password: PrivateRedis, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    redis = own_redis_with_password
    secret = "s3cr%2Fet-pw"  # percent-encoded in the URL: s3cr/et-pw on the wire
    url = redis.url.replace("s3cr/et-pw", secret)
    caplog.set_level(logging.DEBUG)
    member, server = await nursery.start(partial(run_member, url, ns, FAST))
    errors: list[BaseException] = []
    async with (
        open_cluster(url, namespace=ns, config=FAST) as control,
        open_fake_call(server.connect_memory) as fc,
    ):
        assert secret not in repr(control) and "***" in repr(control)
        with trio.fail_after(10):
            await fc.start()
            await member.wait_registered()
            assert [c.call_sid for c in await control.list_calls()] == [fc.call.call_sid]
        redis.kill()
        for attempt in (control.list_calls, control.call(fc.call.call_sid).mute):
            with pytest.raises(ClusterUnavailable) as failed:
                await attempt()
            errors.append(failed.value)
        await eventually(lambda: not member.statistics().redis_up, 10)
        redis.start()
        await eventually(partial(control.get_call, fc.call.call_sid), 15)
    async with open_cluster(url.replace(secret, "wrong-pw"), namespace=ns, config=FAST) as intruder:
        with pytest.raises(ClusterUnavailable) as denied:
            await intruder.list_calls()
        errors.append(denied.value)
    for error in errors:
        assert "s3cr" not in f"{error} {error!r} {error.__cause__}"
    logged = caplog.text + "".join(str(r.exc_info) for r in caplog.records)
    assert "Redis at redis://:***@127.0.0.1" in logged  # the outage was logged, redacted
    assert "s3cr" not in logged and "wrong-pw" not in logged


async def test_one_handle_serves_one_server(nursery: trio.Nursery, redis_url: str, ns: str) -> None:
    member, _server = await nursery.start(partial(run_member, redis_url, ns, FAST))
    from jambonz_trio import serve_jambonz

    refused: list[BaseException] = []
    try:
        await serve_jambonz(answer, cluster=member)
    except* RuntimeError as group:
        refused = leaves(group)
    assert [str(e) for e in refused] == ["this cluster handle already serves a server; open one per server"]


def test_importing_the_library_imports_no_redis_code() -> None:
    """Without a cluster nothing of it is imported or run: a call is served with coredis and
    anyio unimportable, and afterwards no cluster module is loaded."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"coredis", "anyio"}:
                    raise ImportError(f"{name} must not be imported")
                return None

        sys.meta_path.insert(0, Block())
        import trio
        import jambonz_trio, jambonz_trio.workers, jambonz_trio.testing, jambonz_trio._cli
        from jambonz_trio.testing import open_fake_call
        from jambonz_trio.verbs import Say

        async def app(call):
            await call.ack(call.session, [Say(text="hi")])
            await call.wait_closed()

        async def main():
            async with trio.open_nursery() as nursery:
                server = await nursery.start(jambonz_trio.serve_jambonz, app)
                async with open_fake_call(server.connect_memory) as fc:
                    await fc.start()
                    await fc.hangup()
                nursery.cancel_scope.cancel()

        trio.run(main)
        loaded = sorted(m for m in sys.modules if m.startswith(("coredis", "anyio", "jambonz_trio.cluster")))
        print(loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


async def test_every_lua_script_of_the_cluster_compiles(redis_url: str) -> None:
    """Every script of ``_scripts.py`` loads into a real Redis (``SCRIPT LOAD`` compiles it):
    a syntax error in one fails here, not only where that script runs."""
    scripts = {
        name: text
        for name, text in vars(_scripts).items()
        if name.isupper() and isinstance(text, str) and "redis.call" in text
    }
    assert {"HAND_OVER", "HEARTBEAT", "SWEEP", "UPSERT"} <= set(scripts)
    failed = {}
    async with make_client(redis_url, op_timeout=2.0) as client:
        for name, text in scripts.items():
            try:
                await client.script_load(text)
            except ResponseError as exc:
                failed[name] = str(exc)
    assert failed == {}


@pytest.mark.parametrize(
    ("source", "error"),
    [("local until = 1 return 0", "Error compiling script"), ("return nil + 1", "arithmetic on a nil")],
)
async def test_a_lua_script_failing_in_redis_is_an_error_naming_it_not_an_outage(
    redis_url: str, ns: str, caplog: pytest.LogCaptureFixture, source: str, error: str
) -> None:
    """A script that does not compile or fails as it runs, while Redis answers, is a bug: it
    is logged at ERROR with the script's name, and raised as ``ScriptFailed`` (still a
    ``ClusterUnavailable``, so the cluster's tasks carry on as without Redis)."""
    async with make_client(redis_url, op_timeout=2.0) as client:
        script = LuaScript(client, "BROKEN", source, where="redis://here")
        with pytest.raises(
            ScriptFailed, match=f"Lua script BROKEN failed in Redis at redis://here: .*{error}"
        ):
            await script(keys=[Keys(ns).members])
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "Lua script BROKEN" in errors[0], errors


def test_urls_are_redacted() -> None:
    assert redact("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("rediss://user:p%40ss@h/1") == "rediss://user:***@h/1"
    assert redact("redis://user@h") == "redis://user@h"
    assert redact("redis://h/0?password=pw&db=2") == "redis://h/0?password=***&db=2"


async def test_rediss_verifies_the_certificate_and_the_host_name(
    own_tls_redis: PrivateRedis, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default ``rediss://`` checks the certificate against the system's CAs *and* the host
    name (coredis alone checks no host name: it would accept the IP below)."""
    with trio.fail_after(10):
        async with open_cluster(own_tls_redis.url, namespace=ns, config=FAST) as cluster:
            with pytest.raises(ClusterUnavailable):  # the system's CAs never signed it
                await cluster.list_calls()
        monkeypatch.setenv("SSL_CERT_FILE", own_tls_redis.ca_file)  # now "the system" trusts it
        async with open_cluster(own_tls_redis.url, namespace=ns, config=FAST) as cluster:
            assert await cluster.list_calls() == []  # TLS to localhost: verified
        by_ip = own_tls_redis.url.replace("localhost", "127.0.0.1")
        async with open_cluster(by_ip, namespace=ns, config=FAST) as cluster:
            with pytest.raises(ClusterUnavailable):  # the certificate names localhost only
                await cluster.list_calls()
        trusted = ssl.create_default_context(cafile=own_tls_redis.ca_file)
        trusted.check_hostname = False  # the caller's own context wins
        async with open_cluster(by_ip, namespace=ns, config=FAST, ssl_context=trusted) as cluster:
            assert await cluster.list_calls() == []


def test_rediss_verifies_the_server_by_default() -> None:
    context = tls_context("rediss://redis.example:6380/0", None)
    assert context is not None and context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED
    assert tls_context("redis://h/0", None) is None
    assert tls_context("rediss://h/0?ssl_cert_reqs=none", None) is None  # the URL says
    given = ssl.create_default_context()
    assert tls_context("rediss://h/0", given) is given


def test_commands_travel_unchanged() -> None:
    typed = RedirectCommand(verbs=(Say(text="x"),), queue=True, call_sid="leg-2")
    assert decode_command(encode_command(typed)) == typed
    raw = RawCommand(command="future:thing", data={"a": 1}, call_sid="c")
    assert decode_command(encode_command(raw)) == raw
    assert decode_command(encode_command(raw)).to_wire() == raw.to_wire()


def test_an_op_timeout_not_below_a_third_of_member_ttl_is_refused() -> None:
    """ClusterConfig's docs: keep ``op_timeout`` below ``member_ttl / 3`` (a member beats every
    ``member_ttl / 3``; one slow reply plus a beat must fit in about ``member_ttl * 2/3``, or a
    Redis that answers slowly gets a live member swept). A config breaking it is refused, the
    message naming both values; at the limit too."""
    with pytest.raises(ValueError, match=r"op_timeout \(1\.0 s\).*member_ttl \(2\.0 s\)"):
        ClusterConfig(member_ttl=2.0)  # (op_timeout 1 s by default)
    with pytest.raises(ValueError, match=r"op_timeout \(0\.5 s\).*member_ttl \(1\.5 s\)"):
        ClusterConfig(member_ttl=1.5, op_timeout=0.5)
    with pytest.raises(ValueError, match="member_ttl"):
        attrs.evolve(FAST, op_timeout=1.0)
    assert ClusterConfig().op_timeout * 3 < ClusterConfig().member_ttl  # the defaults keep it
    assert ClusterConfig(member_ttl=1.0, op_timeout=0.3).op_timeout == 0.3


async def test_bad_urls_and_namespaces_are_refused() -> None:
    with pytest.raises(ValueError, match="redis://"):
        async with open_cluster("http://:pw@h/0"):
            pass
    with pytest.raises(ValueError, match="namespace"):
        async with open_cluster("redis://h/0", namespace="a{b}"):
            pass


def test_a_missing_redis_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from .redis import need

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        need("no Redis")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no Redis"):
        need("no Redis")
