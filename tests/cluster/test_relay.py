"""The reconnect relay in one process, two members against a real Redis: a reconnect that
lands on the member not holding the call reaches the call where it runs (same ``Call``, same
handler), closes cross both ways, the identity rules hold across members, a dead owner's call
starts with its ``user_data`` restored, and Redis faults end a relay in a known state.

The fake jambonz connects through :class:`Switch`, so a test decides which member each socket
reaches (in memory; ``test_relay_processes.py`` does the same over TCP between processes)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import attrs
import pytest
import trio

from jambonz_trio import Call, CallConfig, JambonzServer, ServerConfig
from jambonz_trio._call import engine_of
from jambonz_trio.cluster import Cluster, ClusterCall, OwnerGone
from jambonz_trio.cluster._relay import RelayedConnection
from jambonz_trio.commands import RedirectCommand
from jambonz_trio.lowlevel import ConnState
from jambonz_trio.testing import CallData, FakeCall, open_fake_call
from jambonz_trio.verbs import Say
from tests.engine.helpers import SESSION_DATA, new_call, raw_client, reconnect
from tests.helpers import msg, open_ws, recv
from tests.operations.helpers import scrape_memory, value

from .apps import counting, run_member
from .helpers import FAST_KEEPING as FAST
from .helpers import (
    Member,
    Switch,
    listed_nowhere,
    owned_by,
    stored_hooks,
    two_members,
    two_members_and_a_call,
)
from .redis import PrivateRedis
from .test_cluster import eventually

pytestmark = pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")


async def test_a_reconnect_on_another_member_reaches_the_call(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    async with two_members_and_a_call(nursery, redis_url, ns, within=20) as (a, b, control, target, fc):
        assert (await fc.start()).verbs == [Say(text="hello 0")]
        sid = fc.call.call_sid
        call = a.server.calls[sid]
        assert (await fc.gather_speech("/gather", "one")).verbs == [Say(text="hook 1")]
        await eventually(lambda: control.get_call(sid), 5)

        await fc.drop(reconnect=False)
        await eventually(lambda: call.state is ConnState.DISCONNECTED, 5)
        # commands sent meanwhile, from another process's handle, wait on the owner, in order
        async with trio.open_nursery() as senders:
            senders.start_soon(partial(control.call(sid).redirect, [Say(text="first")], queue=True))
            await eventually(partial(_queued, call, 1), 5)
            senders.start_soon(partial(control.call(sid).redirect, [Say(text="second")], queue=True))
            # the owner runs a call's commands one at a time: the second waits behind it
            await eventually(lambda: len(a.cluster._lanes.get(sid, ())) == 1, 5)
            target.to = b.server.connect_memory
            reconnect = await fc.reconnect()  # acked by the owner, through the relay
            assert reconnect.verbs == []
            for text in ("first", "second"):
                assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text=text),)

        assert b.server.calls.get(sid) is None and len(b.server.calls.all_calls()) == 0
        assert a.server.calls[sid] is call and call.reconnect_count == 1
        assert b.cluster.statistics().relays_holding == 1
        assert a.cluster.statistics().relays_serving == 1
        # the same handler carries on: its per-call counter goes on from 1
        assert (await fc.gather_speech("/gather", "two")).verbs == [Say(text="hook 2")]
        await control.call(sid).redirect([Say(text="from afar")])
        assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="from afar"),)
        # the directory still lists it once, on its owner, with its reconnect counted
        await eventually(lambda: _counted(control, sid, a.cluster.member, 1), 5)

        # the handler ends: its close (1000) reaches jambonz through the relay
        assert (await fc.gather_speech("/bye", "bye")).verbs == [Say(text="hook 3")]
        close = await fc.expect_close(1000)
        assert close.reason == "handler finished"
        await eventually(lambda: sid not in a.server.calls, 5)
        await eventually(lambda: b.cluster.statistics().relays_holding == 0, 5)
        assert a.cluster.statistics().relays_serving == 0
        assert a.cluster.statistics().relay_faults == b.cluster.statistics().relay_faults == 0


async def test_relays_and_commands_survive_member_clocks_seconds_apart(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """FM-46 across hosts whose clocks disagree: the owner's clock 30 s ahead of the
    holder's (the relay's budget is 2 s, a command's ``reply_timeout`` 10 s). The owner judged
    a request stale by comparing the sender's deadline, in the sender's clock, with its own:
    it dropped every relay (the call started on the holder) and every command (the sender
    timed out). Their age is now measured on Redis' clock. Members in one process share one
    clock: here, a relay and a command on that path; the skew itself is played by the
    multi-process relay tests, whose owner process runs 30 s ahead
    (tests/cluster/test_relay_processes.py)."""
    a, b = await two_members(nursery, redis_url, ns)
    target = Switch(a.server.connect_memory)
    with trio.fail_after(20):
        async with open_fake_call(target, auto_reconnect=False) as fc:
            call = await relayed_through_b(fc, target, a, b)
            assert b.server.calls.get(call.call_sid or "") is None
            assert a.cluster.statistics().relays_serving == 1
            with trio.fail_after(5):  # (well inside reply_timeout: not a timeout and a retry)
                await b.cluster.call(call.call_sid or "").redirect([Say(text="across the skew")])
            assert (await fc.expect_command(RedirectCommand)).verbs == (Say(text="across the skew"),)


async def test_an_inbox_entry_is_judged_stale_by_its_age_on_redis_clock(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """A request whose sender gave up (older than the budget it came with) is still dropped,
    its age measured from its stream id, on Redis' clock (against the member's monotonic
    clock through the offset each beat measures), never on the member's wall clock."""
    a, _b = await two_members(nursery, redis_url, ns)
    now_ms = int((await a.cluster._client.time()).timestamp() * 1000)  # Redis' clock
    assert not a.cluster._stale(f"{now_ms}-0", 2000)
    assert not a.cluster._stale(f"{now_ms - 1000}-3", 2000)
    assert a.cluster._stale(f"{now_ms - 3000}-0", 2000)
    assert a.cluster._stale(f"{now_ms - 66_000}-0", 65_000)


def _queued(call: Call, count: int) -> bool:
    return call.statistics().commands_queued == count


async def relayed_through_b(fc: FakeCall, target: Switch, a: Member, b: Member) -> Call:
    """Start the call on A, drop its socket and reconnect through B: A's call, relayed."""
    await fc.start()
    call = a.server.calls[fc.call.call_sid]
    await fc.drop(reconnect=False)
    target.to = b.server.connect_memory
    await fc.reconnect()
    assert call.reconnect_count == 1 and b.cluster.statistics().relays_holding == 1
    return call


@asynccontextmanager
async def relayed_call(
    nursery: trio.Nursery, url: str, ns: str
) -> AsyncIterator[tuple[Member, Member, Switch, FakeCall, Call]]:
    """Two members; a call started on A and relayed through B (bounded: 20 s)."""
    a, b = await two_members(nursery, url, ns)
    target = Switch(a.server.connect_memory)
    with trio.fail_after(20):
        async with open_fake_call(target, auto_reconnect=False) as fc:
            yield a, b, target, fc, await relayed_through_b(fc, target, a, b)


async def _counted(control: Cluster, sid: str, member: str, count: int) -> bool:
    calls = [c for c in await control.list_calls() if c.call_sid == sid]
    return len(calls) == 1 and calls[0].member == member and calls[0].reconnect_count == count


async def test_the_owner_counts_each_relayed_reconnect_it_accepts_in_its_metrics(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    a, b = await two_members(nursery, redis_url, ns, server_config=ServerConfig(metrics=True))
    relayed, reconnects = "jambonz_trio_calls_relayed_total", "jambonz_trio_reconnects_total"
    target = Switch(a.server.connect_memory)
    with trio.fail_after(20):
        async with open_fake_call(target, auto_reconnect=False) as fc:
            call = await relayed_through_b(fc, target, a, b)
            owner, holder = await scrape_memory(a.server), await scrape_memory(b.server)
            assert value(owner, relayed) == 1 and value(owner, reconnects) == 1
            assert value(holder, relayed) == 0 and value(holder, reconnects) == 0
            await fc.drop(reconnect=False)  # a local reconnect is not a relayed one
            await eventually(lambda: call.state is ConnState.DISCONNECTED, 5)
            target.to = a.server.connect_memory
            await fc.reconnect()
            assert value(await scrape_memory(a.server), relayed) == 1
            await fc.drop(reconnect=False)  # relayed again: counted again
            await eventually(lambda: call.state is ConnState.DISCONNECTED, 5)
            target.to = b.server.connect_memory
            await fc.reconnect()
            owner = await scrape_memory(a.server)
            assert value(owner, relayed) == 2 and value(owner, reconnects) == 3
            assert value(await scrape_memory(b.server), relayed) == 0


async def test_the_relay_s_log_lines_carry_the_call_s_fields_on_both_members(
    nursery: trio.Nursery, redis_url: str, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/operations.md: every record the library logs on behalf of a call carries its
    ``call_sid``, ``account_sid`` and ``path``. The relay's lines - the holder's "reconnect
    relayed to member ..." and the owner's "its reconnect reached member ..." - are the ones an
    operator looks for when a reconnect went astray; they used to carry ``None`` in all three."""
    caplog.set_level(logging.INFO, logger="jambonz_trio")
    a, b = await two_members(nursery, redis_url, ns)
    target = Switch(a.server.connect_memory)
    with trio.fail_after(20):
        async with open_fake_call(target, auto_reconnect=False, path="/ivr?token=t") as fc:
            await relayed_through_b(fc, target, a, b)
            expected = {"call_sid": fc.call.call_sid, "account_sid": fc.call.account_sid, "path": "/ivr"}
            lines = [r for r in caplog.records if "relayed" in r.getMessage()]
            assert {r.getMessage().split(":")[1].split(" member")[0] for r in lines} == {
                " reconnect relayed to",
                " its reconnect reached",
            }
            for record in lines:
                assert {f: getattr(record, f) for f in expected} == expected, record.getMessage()


async def test_entries_sent_back_to_back_arrive_in_order_without_waiting_for_answers(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """The writer issues each XADD at once on its connection (a burst is not written one
    round trip at a time) and Redis keeps their order: the other side gets every entry, in
    order, numbered without a gap."""
    a, b = await two_members(nursery, redis_url, ns)
    holder = b.cluster._relay.open("burst", a.cluster.member, "holder", "sid-burst")
    owner = a.cluster._relay.open("burst", b.cluster.member, "owner", "sid-burst")
    with trio.fail_after(20):
        await b.cluster._relay.send(holder, "text", "frame 0")
        await b.cluster._relay.flush(holder)  # the writer's connection is up
        for i in range(1, 300):
            b.cluster._relay.post(holder, "text", f"frame {i}")
        # all issued on the writer's connection already, none answered yet (no checkpoint)
        assert holder.unwritten == len(b.cluster._relay._in_flight) == 299
        got = [await owner.receive_channel.receive() for _ in range(300)]
        assert got == [("text", f"frame {i}") for i in range(300)]
        await b.cluster._relay.flush(holder)
        assert holder.unwritten == 0 and owner.received == 300
        assert holder.fault is None and owner.fault is None


async def test_an_entry_posted_as_the_writers_connection_closes_goes_out_on_the_next(
    nursery: trio.Nursery, redis_url: str, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """coredis' connection can be closing while it still says it is usable: queueing a request
    on it then raises anyio's ``ClosedResourceError`` from its write buffer. ``post`` (sync, and
    called from a relay's teardown to tell the other side ``abort``) let it out: the task that
    posted failed (seen at teardown in a test, about one run in six under load). The entry now
    waits for the writer's next connection, as after a connection error."""
    a, b = await two_members(nursery, redis_url, ns)
    hub = b.cluster._relay
    holder = hub.open("closing", a.cluster.member, "holder", "sid-closing")
    owner = a.cluster._relay.open("closing", b.cluster.member, "owner", "sid-closing")
    with trio.fail_after(20):
        await hub.send(holder, "text", "frame 0")
        await hub.flush(holder)  # the writer's connection is up
        conn = hub._conn
        assert conn is not None

        def closing(*args: Any, **kwargs: Any) -> Any:
            raise anyio.ClosedResourceError

        monkeypatch.setattr(conn, "create_request", closing)
        hub.post(holder, "abort")  # before: raised ClosedResourceError
        await hub.flush(holder)
        got = [await owner.receive_channel.receive() for _ in range(2)]
        assert got == [("text", "frame 0"), ("abort", None)]
        assert holder.fault is None and holder.write_error is None


async def test_a_write_to_a_swept_member_ends_the_relay(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """An entry for a member whose inbox is gone (swept) is not written (``NOMKSTREAM``): the
    relay ends (its reader sees the end), and the next send raises ``OwnerGone``."""
    a, _b = await two_members(nursery, redis_url, ns)
    hub = a.cluster._relay
    endpoint = hub.open("lost", "member-swept-long-ago", "holder", "sid-lost")
    with trio.fail_after(20):
        await hub.send(endpoint, "text", "hello?")
        with pytest.raises(OwnerGone):
            await hub.flush(endpoint)
        assert endpoint.fault is not None and "gone" in endpoint.fault
        with pytest.raises(trio.EndOfChannel):
            await endpoint.receive_channel.receive()
        with pytest.raises(OwnerGone):
            await hub.send(endpoint, "text", "anyone?")
        assert endpoint.sent == 1  # nothing more was numbered: the relay is over


async def test_a_holder_missing_from_two_liveness_checks_ends_the_relay_on_both_sides(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """One check without the holder (a member re-registering after a Redis restart) ends
    nothing; a second one ends the relay: the owner's call waits for a reconnect, and the
    holder is told to drop the socket (it would otherwise carry jambonz's requests into a
    relay that is over), so that jambonz reconnects."""
    async with relayed_call(nursery, redis_url, ns) as (a, b, _target, fc, call):
        a.cluster._relay.fail_peers(set())
        assert (await fc.gather_speech("/gather", "one miss")).verbs == [Say(text="hook 1")]
        a.cluster._relay.fail_peers({b.cluster.member})  # back: the count starts again
        a.cluster._relay.fail_peers(set())
        assert (await fc.gather_speech("/gather", "one miss")).verbs == [Say(text="hook 2")]
        a.cluster._relay.fail_peers(set())  # twice in a row
        await eventually(lambda: call.state is ConnState.DISCONNECTED, 5)
        assert not call.closed
        close = await fc.expect_close()
        assert close.code in (None, 1006, 1011)
        await eventually(lambda: b.cluster.statistics().relays_holding == 0, 5)
        assert a.cluster.statistics().relay_faults == 1
        await fc.reconnect()  # through B again: relayed to the same call
        assert call.reconnect_count == 2
        assert (await fc.gather_speech("/gather", "back")).verbs == [Say(text="hook 3")]


async def test_a_member_that_only_holds_relays_watches_their_owners_liveness(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """The holder's own liveness watch (not a test calling fail_peers) ends the relay when the
    owner stops beating, though jambonz sends nothing meanwhile: the socket is closed so that
    jambonz reconnects (fresh-eyes review: the watch only woke for relays opened on the owner's
    side, so a holder-only member kept the socket of a dead owner open)."""
    async with relayed_call(nursery, redis_url, ns) as (a, b, _target, fc, _call):
        owner = a.cluster.member

        async def without_the_owner(keys: list[str]) -> list[str]:
            found: list[str] = await live_members(keys=keys)
            return [m for m in found if m != owner]

        live_members = b.cluster._live_members
        b.cluster._live_members = without_the_owner  # type: ignore[assignment]  # A "stopped beating"
        close = await fc.expect_close()  # two checks, member_ttl / 2 apart: about 1 s
        assert close.code in (None, 1006, 1011)
        assert b.cluster.statistics().relays_holding == 0


async def test_a_relayed_answer_and_its_receipt_ping_travel_as_one_entry(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """The engine's one-write receipt works across the relay: an answer written while no
    receipt Ping waits for its Pong goes down with its own receipt Ping in one entry (written
    on the socket in one write), and its Pong proves it read."""
    async with relayed_call(nursery, redis_url, ns) as (a, _b, _target, fc, call):
        (owner,) = a.cluster._relay.endpoints.values()
        protocol = call._engine.protocol

        def settled() -> bool:  # every answer covered by a Ping whose Pong came back
            return not protocol.wants_receipt and protocol._receipt_ping <= protocol._last_pong

        for n in (1, 2, 3):
            await eventually(settled, 5)
            sent = owner.sent
            assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text=f"hook {n}")]
            await eventually(settled, 5)
            assert owner.sent - sent == 1  # the answer and its Ping: one entry
        unconfirmed = call.statistics().acks_unconfirmed  # (the set-up's drop counted its own)
        await fc.drop(reconnect=False)
        await eventually(lambda: call.state is ConnState.DISCONNECTED, 5)
        assert call.statistics().acks_unconfirmed == unconfirmed  # all three proven read


async def test_an_entry_kind_the_holder_does_not_know_ends_the_relay_with_1011(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """An owner on a newer release may send an entry this holder does not know (an answer
    with its receipt Ping as one entry was new once): the holder ends the relay (1011: jambonz
    reconnects) instead of dropping the frame silently, which would lose it and its receipt."""
    async with relayed_call(nursery, redis_url, ns) as (_a, b, _target, fc, call):
        link = call._engine.link
        assert link is not None and isinstance(link.conn, RelayedConnection)
        await link.conn._send("from-a-newer-release", "hello")
        close = await fc.expect_close()
        assert close.code == 1011
        await eventually(lambda: b.cluster.statistics().relays_holding == 0, 5)
        assert b.cluster.statistics().relay_faults == 1
        await fc.reconnect()  # through B again: relayed to the same call
        assert (await fc.gather_speech("/gather", "back")).verbs[0] == Say(text="hook 1")


async def test_jambonz_hanging_up_a_relayed_call_ends_it_on_its_owner(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    async with relayed_call(nursery, redis_url, ns) as (_a, b, _target, fc, call):
        await fc.hangup()  # call:status completed, then jambonz closes with 1000
        with trio.fail_after(5):
            await call.wait_closed()
        assert call.close_info is not None and call.close_info.by == "jambonz"
        await eventually(lambda: b.cluster.statistics().relays_holding == 0, 5)


async def test_a_drop_of_the_relayed_socket_parks_the_call_and_a_reconnect_anywhere_takes_it(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    async with relayed_call(nursery, redis_url, ns) as (a, b, target, fc, call):
        await fc.drop(reconnect=False)  # the socket B holds dies: the owner hears of it
        await eventually(lambda: call.state is ConnState.DISCONNECTED, 5)
        await eventually(lambda: b.cluster.statistics().relays_holding == 0, 5)
        target.to = a.server.connect_memory  # back on the owner itself: a local reconnect
        await fc.reconnect()
        assert call.reconnect_count == 2 and call.state is ConnState.CONNECTED
        assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text="hook 1")]
        target.to = b.server.connect_memory  # and relayed again
        await fc.drop(reconnect=False)
        await fc.reconnect()
        assert call.reconnect_count == 3
        assert (await fc.gather_speech("/gather", "y")).verbs == [Say(text="hook 2")]


async def test_another_account_cannot_take_a_call_through_another_member(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    a, b = await two_members(nursery, redis_url, ns)
    with trio.fail_after(20):
        async with open_fake_call(a.server.connect_memory, auto_reconnect=False) as fc:
            await fc.start()
            sid = fc.call.call_sid
            call = a.server.calls[sid]
            await fc.drop(reconnect=False)
            await eventually(lambda: call.state is ConnState.DISCONNECTED, 5)
            data = {**fc.call.to_session_new_data(), "account_sid": "someone-else"}
            async with open_ws(await b.server.connect_memory()) as ws:
                await ws.send_message(msg("session:reconnect", "r1", data, call_sid=sid))
                ack = await recv(ws)  # answered by a call of its own on B (isolated)
                assert ack["type"] == "ack" and ack["msgid"] == "r1"
                assert ack["data"] == [{"verb": "say", "text": "hello 0"}]
                isolated = b.server.calls.all_calls()
                assert len(isolated) == 1 and isolated[0].isolated and sid not in b.server.calls
            # the owner's call was never touched
            assert a.server.calls[sid] is call and call.reconnect_count == 0
            assert call.state is ConnState.DISCONNECTED
            assert a.cluster.statistics().relays_total == 0
            await fc.reconnect()  # jambonz's own reconnect, through B, still takes it
            assert call.reconnect_count == 1


async def test_a_dead_owner_s_call_starts_where_its_reconnect_lands_with_its_user_data(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    b_cluster, b = await nursery.start(partial(run_member, redis_url, ns, FAST, handler=counting))
    with trio.fail_after(30):
        async with trio.open_nursery() as doomed:
            _a_cluster, a = await doomed.start(partial(run_member, redis_url, ns, FAST, handler=counting))
            async with open_fake_call(a.connect_memory, auto_reconnect=False) as fc:
                await fc.start()
                sid = fc.call.call_sid
                for n in (1, 2):
                    assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text=f"hook {n}")]
                await eventually(lambda: stored_hooks(b_cluster, sid, 2), 5)
                data = fc.call
                doomed.cancel_scope.cancel()  # the owner goes (its handle leaves the cluster)
        async with open_fake_call(b.connect_memory, auto_reconnect=False, call=data) as fc2:
            ack = await fc2.start("session:reconnect")
            assert ack.raw["data"] == [{"verb": "say", "text": "hello 2"}]  # its user_data came back
            call = b.calls[sid]
            assert call.restored and call.user_data == {"hooks": 2}
            assert (await fc2.gather_speech("/gather", "x")).verbs == [Say(text="hook 3")]


async def test_only_a_drain_hands_a_calls_user_data_over(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """A call the app closes with 1012 itself is not handed over: its stored user_data goes
    with its directory entry (it was kept, with no orphan mark to sweep it, because the close
    code looked like a drain's). A call closed by the drain keeps it for its reconnect."""
    cluster, server = await nursery.start(partial(run_member, redis_url, ns, FAST, handler=counting))
    with trio.fail_after(30):
        async with _after_one_hook(server) as (fc, sid):
            await eventually(lambda: stored_hooks(cluster, sid, 1), 5)
            await server.calls[sid].aclose(1012, "the app moves it")
            await fc.expect_close()
        await eventually(lambda: _gone(cluster, sid), 5)

        async with _after_one_hook(server) as (fc, drained), trio.open_nursery() as draining:
            await eventually(lambda: stored_hooks(cluster, drained, 1), 5)
            draining.start_soon(partial(server.drain, grace=0))
            await fc.expect_close()
        await eventually(lambda: listed_nowhere(cluster, drained), 5)
        assert await stored_hooks(cluster, drained, 1)  # kept for the member its reconnect reaches


async def test_a_drain_stores_the_user_data_of_the_calls_it_hands_over(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    """ClusterConfig.keep_user_data: written when it changed "and at a drain". The drain
    stores each call's user_data as it hands the call over, with an orphan mark that keeps it
    ``orphan_keep`` (then a sweep removes it), whatever the last beat stored."""
    config = attrs.evolve(FAST, member_ttl=30.0)  # no beat (no store) during the test
    cluster, server = await nursery.start(partial(run_member, redis_url, ns, config, handler=counting))
    with trio.fail_after(20):
        await cluster.wait_registered()
        async with _after_one_hook(server) as (fc, sid), trio.open_nursery() as draining:
            draining.start_soon(partial(server.drain, grace=0))
            await fc.expect_close()
        assert await stored_hooks(cluster, sid, 1)
        assert await cluster._client.zscore(cluster._keys.orphans, sid) is not None


@pytest.mark.parametrize("keep", [True, False], ids=["user-data-kept", "no-user-data"])
async def test_a_drained_call_whose_answer_jambonz_read_is_not_closed_again_where_it_lands(
    nursery: trio.Nursery, redis_url: str, ns: str, keep: bool
) -> None:
    """A rolling deploy: member A drains, and its calls' reconnects land on B, which sees each
    of them first through ``session:reconnect``. A quiet call whose ``session:new`` answer A
    proved read (its receipt Pong) is served on B as it is: jambonz forgot that
    ``session:new`` (FS v0.9.8 ``lib/utils/ws-requestor.js:537-538``), so its reconnect is an
    ordinary one and nothing is held. A's hand-over stores the fact, with or without
    ``keep_user_data``. A call whose answer A never saw read (no Pong) may be held by jambonz
    (a re-keyed ``session:new``): B still closes it once (1012) ``rekey_quiet`` after its
    answer's receipt. (B closed both: every quiet call of a drain reconnected twice.)"""
    config = attrs.evolve(FAST, keep_user_data=keep)
    calls = ServerConfig(call=CallConfig(rekey_quiet=0.3))
    member = partial(run_member, redis_url, ns, config, handler=counting, server_config=calls)
    a_cluster, a = await nursery.start(member)
    b_cluster, b = await nursery.start(member)
    with trio.fail_after(30):
        for cluster in (a_cluster, b_cluster):
            await cluster.wait_registered()
        async with raw_client(a) as read, raw_client(a, auto_pong=False) as unread:
            assert (await new_call(read, "sid-read") or {}).get("msgid") == "m1"
            await unread.send(
                "session:new", "m1", {**SESSION_DATA, "call_sid": "sid-unread"}, call_sid="sid-unread"
            )
            assert (await unread.receive() or {}).get("msgid") == "m1"  # its receipt Ping: no Pong
            await eventually(lambda: engine_of(a.calls["sid-read"]).protocol.session_confirmed, 5)
            assert not engine_of(a.calls["sid-unread"]).protocol.session_confirmed
            async with trio.open_nursery() as draining:
                draining.start_soon(partial(a.drain, grace=0))
                for client in (read, unread):
                    assert await client.receive() is None and client.close_code == 1012
        async with raw_client(b) as read, raw_client(b) as unread:
            assert (await reconnect(read, "sid-read") or {}).get("msgid") == "r1"
            await read.answer_receipt()
            call = b.calls["sid-read"]
            assert call.restored and not engine_of(call).protocol.rekey_suspected
            assert (await reconnect(unread, "sid-unread") or {}).get("msgid") == "r1"
            await unread.answer_receipt()
            assert await unread.receive() is None and unread.close_code == 1012  # the release
            # the first call, quiet since before the second, is not closed
            assert call.state is ConnState.CONNECTED and read.close_code is None
            # B took the record over: the fact in Redis is B's own statement, or none yet
            record = await eventually_record(b_cluster, "sid-read", b_cluster.member)
            assert record.get("confirmed") is (True if keep else None)


async def eventually_record(cluster: Cluster, sid: str, member: str) -> dict[str, Any]:
    """The call's stored record once it names ``member``: taken over (UPSERT), and with
    user_data kept, stored by ``member`` itself (with ``confirmed``)."""
    found: dict[str, Any] = {}

    async def named() -> bool:
        text = await cluster._client.hget(cluster._keys.userdata, sid)
        found.clear()
        found.update(json.loads(text) if text else {})
        keep = cluster.config.keep_user_data
        return found.get("member") == member and (not keep or found.get("confirmed") is True)

    await eventually(named, 5)
    return found


@pytest.mark.parametrize("how", ["write-failed", "reply-lost", "re-registration-failed"])
async def test_a_drained_call_keeps_its_user_data_when_its_removal_is_written_twice(
    nursery: trio.Nursery, redis_url: str, ns: str, how: str
) -> None:
    """A call handed over keeps its stored user_data when its directory entry is removed. A
    removal that failed (Redis error), or whose reply was lost after the script ran, is
    written again, and still keeps it; so does a full re-registration that failed."""
    cluster, server = await nursery.start(partial(run_member, redis_url, ns, FAST, handler=counting))
    upsert = cluster._upsert
    lost = [TimeoutError("no reply to this write")]

    async def failing_once(**kwargs: Any) -> Any:
        if lost and how != "reply-lost":
            raise lost.pop()
        changed = await upsert(**kwargs)
        if lost:
            raise lost.pop()
        return changed

    with trio.fail_after(30):
        async with _after_one_hook(server) as (fc, sid):
            await eventually(lambda: stored_hooks(cluster, sid, 1), 5)
            # what a drain does to each call it closes (the member lives on meanwhile)
            call = server.calls[sid]
            await cluster.hand_over([call])
            cluster._upsert = failing_once
            if how == "re-registration-failed":
                cluster._resync = True  # (as after an overflow of the update queue)
            await call.aclose(1012, "server restarting")
            await fc.expect_close()
        # the member queues the removal once the call's task is over (after the close
        # handshake); a beat may run the re-registration that fails before that
        await eventually(lambda: not lost and cluster.statistics().calls == 0, 5)
        await cluster.wait_registered()  # (the removal written again)
        assert await listed_nowhere(cluster, sid)
        assert await stored_hooks(cluster, sid, 1)  # kept for the member its reconnect reaches


@asynccontextmanager
async def _after_one_hook(server: JambonzServer) -> AsyncIterator[tuple[FakeCall, str]]:
    """A call of :func:`counting` that answered one hook (its user_data ``{"hooks": 1}``)."""
    async with open_fake_call(server.connect_memory, auto_reconnect=False) as fc:
        await fc.start()
        assert (await fc.gather_speech("/gather", "x")).verbs == [Say(text="hook 1")]
        yield fc, fc.call.call_sid


async def _gone(cluster: Cluster, sid: str) -> bool:
    return await cluster._client.hget(cluster._keys.userdata, sid) is None


async def test_an_owner_that_does_not_answer_in_time_leaves_the_call_to_start_here(
    nursery: trio.Nursery, redis_url: str, ns: str
) -> None:
    config = attrs.evolve(FAST, relay_timeout=0.3)
    cluster, server = await nursery.start(partial(run_member, redis_url, ns, config, handler=counting))
    with trio.fail_after(10):
        await cluster.wait_registered()
        # a member that beats but never reads its inbox (hung), listed as the call's owner
        k = cluster._keys
        ghost = "ghost-member"
        entry = ClusterCall(call_sid="sid-ghost", member=ghost, route="/")
        await cluster._client.zadd(k.members, {ghost: 2**52})
        await cluster._client.hset(k.calls, {"sid-ghost": entry.dumps()})
        await cluster._client.xadd(k.inbox(ghost), {"m": '{"k":"hello"}'})
        try:
            async with open_fake_call(
                server.connect_memory, auto_reconnect=False, call=CallData(call_sid="sid-ghost")
            ) as fc:
                # bounded: the fake fails the reconnect unless acked within jambonz's 5 s
                ack = await fc.start("session:reconnect")
                assert ack.raw["data"] == [{"verb": "say", "text": "hello 0"}]
                assert server.calls["sid-ghost"].restored
        finally:
            await cluster._client.zrem(k.members, [ghost])


async def test_redis_lost_mid_relay_closes_the_socket_and_parks_the_call(
    nursery: trio.Nursery, own_redis: PrivateRedis, ns: str
) -> None:
    a, b = await two_members(nursery, own_redis.url, ns)
    target = Switch(a.server.connect_memory)
    with trio.fail_after(40):
        async with (
            open_fake_call(target, auto_reconnect=False) as fc,
            open_fake_call(a.server.connect_memory, auto_reconnect=False) as local,
        ):
            await local.start()
            call = await relayed_through_b(fc, target, a, b)
            own_redis.kill()
            # the holder closes the socket with a reason, so that jambonz reconnects again
            close = await fc.expect_close(1011, within=10)
            assert close.reason == "cluster relay failed"
            # the owner's call waits for that reconnect, as after any drop
            await eventually(lambda: call.state is ConnState.DISCONNECTED, 10)
            assert not call.closed
            # a local call never noticed
            assert (await local.gather_speech("/gather", "still")).verbs == [Say(text="hook 1")]
            own_redis.start()
            # (until the owner has registered its calls again, a reconnect elsewhere would
            # find no owner and start the call there)
            await eventually(lambda: owned_by(b.cluster, call.call_sid, a.cluster.member), 10)
            await fc.reconnect()  # lands on B again: relayed to the same call
            assert call.reconnect_count == 2 and call.state is ConnState.CONNECTED
            assert (await fc.gather_speech("/gather", "back")).verbs == [Say(text="hook 1")]
            assert b.cluster.statistics().relay_faults >= 1
