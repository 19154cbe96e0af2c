"""The server's side of ``serve_jambonz(cluster=...)`` (no Redis): what a member is told, and
that without one the server runs nothing for it."""

from __future__ import annotations

from functools import partial

import attrs
import trio
import trio.testing

from jambonz_trio import Call, JambonzServer, serve_jambonz
from jambonz_trio.testing import CallData, open_fake_call
from tests.helpers import answering as answer


@attrs.define
class Recorder:
    """A :class:`jambonz_trio._membership.ServerMember` that writes down what it is told."""

    events: list[tuple[str, str | None, int]] = attrs.field(factory=list)
    attached: list[JambonzServer] = attrs.field(factory=list)
    changed: trio.Event = attrs.field(factory=trio.Event)

    def _note(self, what: str, call: Call) -> None:
        self.events.append((what, call.call_sid, call.reconnect_count))
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        while len(self.events) < count:
            await self.changed.wait()

    def attach_server(self, server: JambonzServer) -> Recorder:
        self.attached.append(server)
        return self

    def detach_server(self, server: JambonzServer) -> None:
        self.attached.remove(server)
        self.changed.set()

    def call_started(self, call: Call) -> None:
        self._note("started", call)

    def call_rebound(self, call: Call) -> None:
        self._note("rebound", call)

    def call_ended(self, call: Call) -> None:
        self._note("ended", call)


async def tasks_during_a_call(server: JambonzServer) -> int:
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        tasks = trio.lowlevel.current_statistics().tasks_living
        await fc.hangup()
    return tasks


async def test_a_member_hears_of_calls_reachable_by_sid_only(nursery: trio.Nursery) -> None:
    member = Recorder()
    server = await nursery.start(partial(serve_jambonz, answer, cluster=member))
    assert member.attached == [server]
    data = CallData()
    async with open_fake_call(server.connect_memory, call=data) as fc:
        await fc.start()
        await fc.drop()
        await fc.reconnect()
        # a session:new naming the live call's sid is served isolated: not reported
        async with open_fake_call(server.connect_memory, call=CallData(call_sid=data.call_sid)) as intruder:
            await intruder.start()
            await intruder.hangup()
        await fc.hangup()
    with trio.fail_after(5):
        await member.wait_for(4)
    assert member.events == [
        ("started", data.call_sid, 0),
        ("rebound", data.call_sid, 1),
        ("ended", data.call_sid, 0),  # the isolated call: never started for the member
        ("ended", data.call_sid, 1),
    ]
    await server.drain(grace=0)
    with trio.fail_after(5):
        await trio.testing.wait_all_tasks_blocked()
    assert member.attached == []


async def test_without_a_member_no_task_is_added(nursery: trio.Nursery) -> None:
    """A member costs one task per server (none per call); without one, none at all."""
    plain = await nursery.start(partial(serve_jambonz, answer))
    member = Recorder()
    joined = await nursery.start(partial(serve_jambonz, answer, cluster=member))
    with trio.fail_after(10):
        before = trio.lowlevel.current_statistics().tasks_living
        during_plain = await tasks_during_a_call(plain) - before
        during_joined = await tasks_during_a_call(joined) - before
    assert during_joined == during_plain  # the same tasks per call
    assert plain._watcher is None and joined._watcher is member
