"""Fresh-eyes review: conversation paths that leave the call in a wrong state."""

from __future__ import annotations

import trio
import trio.testing

from jambonz_trio import Call, open_conversation
from jambonz_trio.commands import RedirectCommand
from jambonz_trio.testing import open_fake_call
from tests.helpers import start


async def test_a_cancelled_operation_is_not_replayed_after_the_reconnect(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The gather's redirect dies in flight; the app cancels the gather while the socket is
    down (nothing can be killed then) and moves on to a ``say``. Once jambonz reconnects, the
    cancelled gather must not be sent again: it would replace the ``say`` (a replay is a
    non-queued redirect) and run a gather nobody waits for."""
    scopes: list[trio.CancelScope] = []
    moved_on = trio.Event()

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            await convo.say("Hello")
            with trio.CancelScope() as scope:
                scopes.append(scope)
                await convo.gather("Say something")
            moved_on.set()
            await convo.say("Moving on")
            await call.wait_closed()

    server = await start(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.wait_idle(0.5)
        await fc.verb_status("starting", id="jt-1", name="say")
        fc.cut(after_received=1, reconnect=False)  # the gather's redirect dies in flight
        await fc.verb_status("finished", id="jt-1", name="say")
        await fc.wait_idle(1)
        assert scopes and not fc.connected
        scopes[0].cancel()  # e.g. the app's own deadline for an answer
        with trio.fail_after(5):
            await moved_on.wait()
        await fc.reconnect()
        await fc.wait_idle(5)
        after = [c.command for c in fc.commands if c.connection == 2]
        sent = [[v.VERB for v in c.verbs] for c in after if isinstance(c, RedirectCommand)]
        assert ["say"] in sent, sent
        assert ["gather"] not in sent, f"the cancelled gather was replayed: {sent}"


async def test_leaving_the_block_releases_the_hook_the_next_operation_would_have_answered(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The gather's hook is kept for the next operation's verbs; when the block ends instead,
    nobody else can answer it (the conversation consumed the event): the call sits in silence
    until the 4 s watchdog answers it. Leaving the block should release it at once."""
    left = trio.Event()

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            await convo.gather("Say something")
        left.set()
        await call.wait_closed()

    server = await start(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        t0 = trio.current_time()
        ack = await fc.gather_speech("/jt/gather/1", "yes")
        waited = trio.current_time() - t0
        assert left.is_set()
        assert ack.verbs == []
        assert waited < 1.0, f"the gather's hook was answered only after {waited:.1f} s (the watchdog)"
        await fc.hangup()
