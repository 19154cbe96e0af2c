"""rev-session: failing tests for the conversation fixes on main since 025b526."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from jambonz_trio import Call, open_conversation
from jambonz_trio.commands import RedirectCommand
from jambonz_trio.messages import Disconnected
from jambonz_trio.testing import AckAbandoned, open_fake_call
from tests.helpers import start


async def test_an_operation_cancelled_on_the_disconnect_before_its_ack_unconfirmed_is_routed_is_not_replayed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The gather goes out as the ack of the play's hook and dies in flight. The app cancels the
    gather as soon as it sees ``Disconnected`` (a task reading ``convo.next_event()``), i.e.
    before the pump routes the ``AckUnconfirmed`` queued behind it (behind the
    ``HookAbandoned`` of the hooks the app owed at the drop, here five foreign ones): ``_finish`` has then
    forgotten the gather's program, ``_program_op`` returns ``None`` and ``None`` means
    "replay". After the reconnect the cancelled gather is sent again (replacing the program)."""
    scopes: list[trio.CancelScope] = []
    moved_on, said = trio.Event(), trio.Event()

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo, trio.open_nursery() as inner:

            async def watch() -> None:
                while True:
                    event = await convo.next_event()
                    if isinstance(event, Disconnected) and scopes:
                        scopes[0].cancel()  # the caller's line is flaky: give up on the question

            inner.start_soon(watch)
            await convo.play("https://example.com/hello.wav")
            with trio.CancelScope() as scope:
                scopes.append(scope)
                await convo.gather("Say something")
            moved_on.set()
            await convo.say("Moving on")
            said.set()
            await call.wait_closed()
            inner.cancel_scope.cancel()

    server = await start(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.wait_idle(0.5)
        async with trio.open_nursery() as hooks:

            async def foreign(n: int) -> None:
                with pytest.raises(AckAbandoned):  # owed when the socket drops
                    await fc.hook(f"/elsewhere/{n}", {})

            for n in range(5):  # abandoned at the drop: routed before the AckUnconfirmed
                hooks.start_soon(foreign, n)
            await fc.wait_idle(0.1)
            fc.cut(after_received=1, reconnect=False)  # the ack carrying the gather dies in flight
            with pytest.raises(AckAbandoned):
                await fc.hook("/jt/play/1", {"reason": "playCompleted"})
        with trio.fail_after(5):
            await moved_on.wait()
        await fc.wait_idle(1)
        await fc.reconnect()
        await fc.wait_idle(5)
        after = [c.command for c in fc.commands if c.connection == 2]
        redirects = [[v.VERB for v in c.verbs] for c in after if isinstance(c, RedirectCommand)]
        assert redirects == [["say"]], f"after the reconnect: {redirects}"
        await fc.hangup()


async def test_a_kill_lost_in_a_drop_is_still_owed_after_the_reconnect(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The gather is running (jambonz read its redirect) when the app cancels it, the socket
    still up: ``_kill_current`` writes the killing ``redirect([])``, but the socket dies with
    it in flight (``CommandUnconfirmed``, which the conversation ignores: it is no operation's
    program). The kill is lost and, unlike a cancel while the socket is down, no kill is owed:
    after the reconnect the next operation's ``say`` goes out as an appending redirect
    (``queue=True``), behind the gather jambonz still runs, so it waits for the gather's
    timeout. Either the kill or a replacing ``say`` must go out."""
    scopes: list[trio.CancelScope] = []
    moved_on = trio.Event()

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            await convo.say("Hello")
            with trio.CancelScope() as scope:
                scopes.append(scope)
                await convo.gather("Say something")
            moved_on.set()
            await trio.sleep(0.5)  # the app does something else first (looks up a record...)
            await convo.say("Moving on")
            await call.wait_closed()

    server = await start(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.wait_idle(0.5)
        await fc.verb_status("starting", id="jt-1", name="say")
        await fc.verb_status("finished", id="jt-1", name="say")
        await fc.wait_idle(0.5)
        gathers = [c.command for c in fc.commands if isinstance(c.command, RedirectCommand)]
        assert [[v.VERB for v in c.verbs] for c in gathers] == [["gather"]]  # jambonz runs it
        fc.cut(after_received=1, reconnect=False)  # the kill's redirect dies in flight
        scopes[0].cancel()
        with trio.fail_after(5):
            await moved_on.wait()
        await fc.wait_idle(1)
        await fc.reconnect()
        await fc.wait_idle(5)
        after = [c.command for c in fc.commands if c.connection == 2]
        redirects = [(c.queue, [v.VERB for v in c.verbs]) for c in after if isinstance(c, RedirectCommand)]
        assert redirects and (redirects[0] == (False, ["say"]) or redirects[0][1] == []), (
            f"after the reconnect: {redirects} (queue, verbs): the say is queued behind the cancelled gather"
        )
        await fc.hangup()
