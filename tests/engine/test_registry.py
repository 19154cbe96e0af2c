"""``server.calls``: one mapping model (issue 18 item 7) and a watcher that cannot miss calls
(issue 18 item 3)."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from jambonz_trio import Call, CallRegistry, JambonzServer, serve_jambonz
from jambonz_trio._public import create
from jambonz_trio._registry import CallTable
from jambonz_trio.testing import CallData, open_fake_call
from jambonz_trio.verbs import Say
from tests.helpers import recording

from .helpers import SESSION_DATA, msg, raw_ws


class Lingering:
    """A handler that answers, then outlives its call until :attr:`release` is set."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.running = 0

    async def __call__(self, call: Call) -> None:
        self.running += 1
        try:
            await call.ack(call.session, [Say(text="hi")])
            await call.wait_closed()
            await self.release.wait()
        finally:
            self.running -= 1


async def test_registry_is_a_read_only_mapping_of_live_calls_by_sid(nursery: trio.Nursery) -> None:
    """Before: iteration yielded calls while ``in`` took sids (``list(calls)[0] in calls`` was
    false), there was no keys/values/items, and ``calls[sid]`` returned an ended call for which
    ``.get(sid)`` returned ``None``."""
    app = Lingering()
    server: JambonzServer = await nursery.start(serve_jambonz, app)
    registry = server.calls
    assert isinstance(registry, Mapping)
    with pytest.raises(TypeError):  # a Mapping is unhashable (the CHANGELOG's migration note)
        hash(registry)
    async with (
        open_fake_call(server.connect_memory, call=CallData(call_sid="sid-a")) as a,
        open_fake_call(server.connect_memory, call=CallData(call_sid="sid-b")) as b,
    ):
        await a.start()
        await b.start()
        assert sorted(registry) == ["sid-a", "sid-b"]
        assert all(sid in registry for sid in registry)
        assert sorted(registry.keys()) == ["sid-a", "sid-b"]
        assert {call.call_sid for call in registry.values()} == {"sid-a", "sid-b"}
        assert all(registry[sid] is call for sid, call in registry.items())
        assert len(registry) == 2
        ended = registry["sid-a"]
        await a.hangup()
        await ended.wait_closed()
        assert app.running == 2  # ended, but its handler still runs: not removed yet
        assert "sid-a" not in registry and registry.get("sid-a") is None
        with pytest.raises(KeyError):
            registry["sid-a"]
        assert list(registry) == ["sid-b"] and len(registry) == 1
        assert list(registry.values()) == [registry["sid-b"]]
        await b.hangup()
    app.release.set()


async def test_isolated_calls_are_listed_by_all_calls_only(nursery: trio.Nursery) -> None:
    """A second session naming a live call's sid is served as an isolated call (the takeover
    rules): it is no key of the mapping, and ``all_calls()`` lists it."""
    served: list[Call] = []
    app = recording(served, "hi")

    server: JambonzServer = await nursery.start(serve_jambonz, app)
    async with raw_ws(server) as first, raw_ws(server) as twin:
        await first.send_message(msg("session:new", "m1", SESSION_DATA, call_sid="sid-1"))
        await first.get_message()
        await twin.send_message(msg("session:new", "m2", SESSION_DATA, call_sid="sid-1"))
        await twin.get_message()
        assert len(served) == 2
        assert list(server.calls) == ["sid-1"] and server.calls["sid-1"] is served[0]
        assert set(server.calls.all_calls()) == set(served)
        assert server.statistics().calls == 2


async def test_a_subscription_buffers_calls_that_start_while_the_watcher_is_busy(
    nursery: trio.Nursery,
) -> None:
    """Before: the documented ``await server.calls.wait_new_call()`` in a loop subscribed anew
    for each call and missed the ones that started while the loop body ran (two calls started,
    the watcher saw one); a subscription had no way to read one call at a time."""
    server: JambonzServer = await nursery.start(serve_jambonz, Lingering())
    registry: CallRegistry = server.calls
    subscription = registry.new_calls()  # before the calls can start
    seen: list[str | None] = []
    busy = trio.Event()

    async def watcher() -> None:
        first = await subscription.receive()
        seen.append(first.call_sid)
        await busy.wait()  # the loop body takes a while: the second call starts meanwhile
        second = await subscription.receive()
        seen.append(second.call_sid)

    nursery.start_soon(watcher)
    async with (
        open_fake_call(server.connect_memory, call=CallData(call_sid="sid-1")) as one,
        open_fake_call(server.connect_memory, call=CallData(call_sid="sid-2")) as two,
    ):
        await one.start()
        await two.start()
        await trio.testing.wait_all_tasks_blocked()
        busy.set()
        await trio.testing.wait_all_tasks_blocked()
        assert seen == ["sid-1", "sid-2"]
        await one.hangup()
        await two.hangup()


async def test_a_subscription_ends_when_the_server_stops_after_its_buffered_calls(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: ``async for call in server.calls.new_calls()`` waited for ever once the server
    had stopped, so a task serving next to ``serve_jambonz`` (a supervisor watching new calls,
    as in examples/ivr.py) never returned after a drain, and neither did the function running
    both (a worker's target: the worker stayed up serving nothing). The loop now ends when
    ``serve_jambonz`` returns, after the calls it buffered; a subscription made afterwards
    is over at once."""
    seen: list[str | None] = []
    ended = trio.Event()
    server: JambonzServer | None = None

    async def serve_and_watch(task_status: trio.TaskStatus[JambonzServer]) -> None:
        async with trio.open_nursery() as inner:
            started: JambonzServer = await inner.start(serve_jambonz, Lingering())
            subscription = started.calls.new_calls()
            task_status.started(started)
            async for call in subscription:
                seen.append(call.call_sid)
        ended.set()  # both tasks are over: the function returns

    server = await nursery.start(serve_and_watch)
    async with open_fake_call(server.connect_memory, call=CallData(call_sid="sid-1")) as fc:
        await fc.start()
        await fc.hangup()
    await server.drain(grace=1)
    with trio.fail_after(5):
        await ended.wait()
    assert seen == ["sid-1"]
    with pytest.raises(trio.EndOfChannel):
        await server.calls.new_calls().receive()


def test_a_call_listed_after_the_server_stopped_reaches_no_ended_subscription() -> None:
    """A call listed after ``stop()`` (a connection task in a caller's ``handler_nursery``
    outlives ``serve_jambonz``): the ended subscriptions are not told, and the listing itself
    completes. Before, the closed channel's ``ClosedResourceError`` came out of ``add``,
    after the call was listed by sid but before the server's bookkeeping."""
    table = CallTable(max_parked=10)
    registry = create(CallRegistry, table)
    subscription = registry.new_calls()
    table.stop()
    engine: Any = SimpleNamespace(routing_sid="sid-late", isolated=False, closed=False, call=object())
    table.add(engine)  # before: raised trio.ClosedResourceError
    assert table.live("sid-late") is engine
    assert not table.subscribers
    with pytest.raises(trio.EndOfChannel):
        subscription._receive.receive_nowait()


async def test_wait_new_call_is_deprecated(nursery: trio.Nursery) -> None:
    server: JambonzServer = await nursery.start(serve_jambonz, Lingering())
    got: list[Call] = []

    async def waiter() -> None:
        with pytest.warns(DeprecationWarning, match="new_calls"):
            got.append(await server.calls.wait_new_call())

    nursery.start_soon(waiter)
    await trio.testing.wait_all_tasks_blocked()
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await trio.testing.wait_all_tasks_blocked()
        assert [c.call_sid for c in got] == [fc.call.call_sid]
        await fc.hangup()
