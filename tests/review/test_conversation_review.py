"""Fresh-eyes review: conversation paths that leave the call in a wrong state."""

from __future__ import annotations

import trio
import trio.testing

from jambonz_trio import Call, open_conversation
from jambonz_trio.testing import open_fake_call
from tests.helpers import start


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
