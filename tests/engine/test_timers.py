"""The shared deadline task (jambonz_trio/_timers.py) and the ack tracker it starts (issue 16).

One task per trio run watches every call's deadlines; a call spends a task on them only while
one is due. These tests hold the timer's contract (earlier replaces later, cancel forgets the
call, a failing callback spares the others, a late-added earlier deadline wakes the task on
time) and the engine's use of it (no task per held call, deadlines met at their exact time).
"""

from __future__ import annotations

import gc
import logging
import weakref
from collections import Counter
from contextlib import AsyncExitStack

import pytest
import trio
import trio.testing
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from jambonz_trio import Call, CallConfig, Route
from jambonz_trio._protocol._messages import parse_message
from jambonz_trio._timers import Timer, _scheduler
from jambonz_trio._websocket import ServerWebSocket
from jambonz_trio.commands import RedirectCommand
from jambonz_trio.lowlevel import Identity
from jambonz_trio.testing import open_fake_call
from jambonz_trio.verbs import Say
from tests.helpers import Serve, answer_and_wait
from tests.reliability.helpers import SHARED_TASKS, all_tasks, task_names

from .helpers import RawClient, new_call, raw_client


async def test_a_timer_fires_at_its_time(autojump_clock: trio.testing.MockClock) -> None:
    fired: list[float] = []
    timer = Timer(lambda: fired.append(trio.current_time()))
    t0 = trio.current_time()
    timer.at(t0 + 3)
    await trio.sleep(10)
    assert fired == [pytest.approx(t0 + 3)]
    assert timer.when == float("inf")  # not scheduled any more


async def test_an_earlier_time_replaces_a_later_one_and_a_later_one_is_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[float] = []
    timer = Timer(lambda: fired.append(trio.current_time()))
    t0 = trio.current_time()
    timer.at(t0 + 5)
    timer.at(t0 + 2)  # earlier: replaces
    timer.at(t0 + 8)  # later: ignored (the callback finds the next time itself)
    await trio.sleep(20)
    assert fired == [pytest.approx(t0 + 2)]


async def test_a_deadline_added_while_the_task_sleeps_wakes_it_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[tuple[str, float]] = []
    t0 = trio.current_time()
    late = Timer(lambda: fired.append(("late", trio.current_time())))
    late.at(t0 + 100)
    await trio.sleep(1)  # the shared task now sleeps until t0 + 100
    soon = Timer(lambda: fired.append(("soon", trio.current_time())))
    soon.at(t0 + 4)
    await trio.sleep(200)
    assert [name for name, _ in fired] == ["soon", "late"]
    assert [at - t0 for _, at in fired] == pytest.approx([4, 100])


async def test_a_cancelled_timer_never_fires_and_keeps_no_reference_to_its_owner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Owner:
        def __init__(self) -> None:
            self.fired = 0
            self.timer = Timer(self.wake)

        def wake(self) -> None:
            self.fired += 1

    owner = Owner()
    timer = owner.timer
    timer.at(trio.current_time() + 30)
    timer.cancel()
    ref = weakref.ref(owner)
    del owner
    gc.collect()
    assert ref() is None  # the heap's entry holds the timer, not the call
    timer.at(trio.current_time() + 1)  # a cancelled timer cannot be set again
    await trio.sleep(60)
    assert timer.when == float("inf")


async def test_a_failing_callback_is_logged_and_the_others_still_fire(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("a bug")

    t0 = trio.current_time()
    bad = Timer(boom)
    good = Timer(lambda: fired.append("good"))
    bad.at(t0 + 1)
    good.at(t0 + 1)
    after = Timer(lambda: fired.append("after"))
    after.at(t0 + 2)
    with caplog.at_level(logging.ERROR, logger="jambonz_trio.call"):
        await trio.sleep(5)
    assert fired == ["good", "after"]
    assert any("deadline callback failed" in r.getMessage() for r in caplog.records)


def _shared_tasks() -> int:
    return sum(1 for task in all_tasks() if task.name in SHARED_TASKS)


async def test_held_calls_spend_no_task_on_their_deadlines(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Answered calls held: each costs its connection's task and its handler's, and one task
    watches the deadlines of all of them (it was a watchdog task per call)."""
    server = await serve(answer_and_wait)

    async def hold(stack: AsyncExitStack, n: int, prefix: str) -> int:
        for i in range(n):
            client = await stack.enter_async_context(raw_client(server))
            assert await new_call(client, f"{prefix}-{i}", "m1") is not None
        await trio.testing.wait_all_tasks_blocked()
        return trio.lowlevel.current_statistics().tasks_living

    async with AsyncExitStack() as stack:
        first = await hold(stack, 5, "a")  # the server's and the shared task are up by now
        names = Counter(task_names())
        after = await hold(stack, 20, "b")
        # per call: its handler and its connection's task (the test clients are sans-io over
        # memory streams: no task); the deadlines of all 25 calls: one task
        assert (after - first) / 20 == 2, Counter(task_names()) - names
        assert _shared_tasks() == 1


async def test_keepalive_and_ack_deadlines_of_many_calls_are_met_on_time(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Ten calls whose handlers never answer a hook: the ack tracker of each answers it at
    exactly ``ack_deadline`` after receipt, although one shared task watches them all and
    their deadlines differ."""
    answered: dict[str, float] = {}

    server = await serve(answer_and_wait, ack_deadline=4.0)
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        for i in range(10):
            client = await stack.enter_async_context(raw_client(server))
            assert await new_call(client, f"c-{i}", "m1") is not None

            async def hook(client: RawClient = client, i: int = i) -> None:
                await trio.sleep(i * 0.7)  # receipts spread over 7 s
                sent = trio.current_time()
                await client.send("verb:hook", f"h{i}", {}, hook="/h", call_sid=f"c-{i}")
                ack = await client.receive()
                assert ack == {"type": "ack", "msgid": f"h{i}", "data": []}
                answered[f"c-{i}"] = trio.current_time() - sent

            nursery.start_soon(hook)
    assert answered == {f"c-{i}": pytest.approx(4.0, abs=0.01) for i in range(10)}


async def test_a_chatty_call_leaves_few_entries_in_the_shared_heap(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """A command every 50 ms for 15 s: each command's receipt Ping sets the call's timer to
    "now", then back to its keepalive; the heap keeps one entry at that time, not one per
    command (fresh-eyes review of issue 16: 300 entries before the fix)."""
    sent = 0

    async def app(call: Call) -> None:
        nonlocal sent
        await call.ack(call.session, [Say(text="hi")])
        for _ in range(300):  # 15 s: less than ping_interval (20 s)
            await call.send_command(RedirectCommand(verbs=(Say(text="x"),), queue=True))
            sent += 1
            await trio.sleep(0.05)
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as client:
        assert await new_call(client, "chatty", "m1") is not None
        with trio.move_on_after(15.5):
            while await client.receive() is not None:
                pass  # (reading answers the receipt Pings)
        assert sent == 300
        assert len(_scheduler()._heap) < 5


async def test_the_ack_trackers_records_carry_the_calls_trace_context(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """The ack tracker's task is started by the shared task, but in the call's context, as
    the old watchdog (a child of the call's task) was: the watchdog's log records carry the
    call's OpenTelemetry span (and an app's contextvars)."""
    seen: dict[str, int] = {}

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "the watchdog answered" in record.getMessage():
                seen["watchdog"] = trace.get_current_span().get_span_context().trace_id

    async def app(call: Call) -> None:
        seen["handler"] = trace.get_current_span().get_span_context().trace_id
        await call.ack(call.session, [Say(text="hi")])
        await call.wait_closed()  # never answers a hook

    grab = Grab(logging.WARNING)
    logger = logging.getLogger("jambonz_trio.call")
    logger.addHandler(grab)
    try:
        server = await serve(Route(path="/", handler=app), tracing=True, tracer_provider=TracerProvider())
        with trio.fail_after(60):
            async with open_fake_call(server.connect_memory, strict=False) as fc:
                await fc.start()
                await fc.hook("/slow")  # answered by the watchdog at 4 s
                await fc.hangup()
    finally:
        logger.removeHandler(grab)
    assert seen["handler"] != 0
    assert seen.get("watchdog") == seen["handler"]


async def test_a_call_whose_handler_never_started_is_not_kept_alive_by_its_deadlines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An engine attached but never run (the server's attach failed before it started the
    call's task): its deadlines are not watched, so nothing in the shared heap holds it."""
    from jambonz_trio._engine import CallEngine, Link

    config = CallConfig()
    first = parse_message({"type": "session:new", "msgid": "m1", "call_sid": "lost", "data": {}})
    engine = CallEngine(first, config=config, identity=Identity(route="/"))
    server_end, _client_end = trio.testing.memory_stream_pair()
    link = Link(ServerWebSocket(server_end, max_message_size=1 << 16, control_timeout=1.0))
    await engine.attach(link, first, trio.current_time())  # owes the session:new ack: a deadline
    engine.detach(link)  # starts the reconnect grace period: another
    ref = weakref.ref(engine.call)  # (the call and its engine hold each other)
    del engine, link
    gc.collect()
    assert ref() is None


async def test_a_failure_to_start_the_ack_tracker_ends_the_call(
    serve: Serve, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the tracker's task fail to start (it cannot today), the call ends cleanly
    instead of running on without deadlines."""
    from jambonz_trio._engine import CallEngine

    def broken(self: CallEngine, call_scope: trio.CancelScope) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(CallEngine, "_track_deadlines", broken)
    server = await serve(answer_and_wait, ack_deadline=4.0)
    async with raw_client(server) as client:
        assert await new_call(client, "doomed", "m1") is not None
        await client.send("verb:hook", "h1", {}, hook="/h", call_sid="doomed")  # due at 4 s
        with trio.fail_after(30):
            frames = []
            while (frame := await client.receive()) is not None:
                frames.append(frame)
    assert frames[-1]["command"] == "redirect" and frames[-1]["data"] == [{"verb": "hangup"}]  # fallback
    assert client.close_code == 1000


async def test_a_commands_receipt_ping_goes_out_in_its_own_write(
    serve: Serve, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for answers, a command's receipt Ping follows its frame in the same write when no
    other receipt Ping waits for its Pong: no ack tracker task, no second write."""
    from jambonz_trio._engine import CallEngine

    started = 0
    track = CallEngine._track_deadlines

    async def counting(self: CallEngine, call_scope: trio.CancelScope) -> None:
        nonlocal started
        started += 1
        await track(self, call_scope)

    monkeypatch.setattr(CallEngine, "_track_deadlines", counting)
    done = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        for _ in range(5):
            await trio.sleep(1)  # the Pong of the previous receipt Ping comes meanwhile
            await call.send_command(RedirectCommand(verbs=(Say(text="x"),), queue=True))
        done.set()
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as client:
        assert await new_call(client, "talker", "m1") is not None
        pings = client.pings
        for _ in range(5):
            frame = await client.receive()
            assert frame is not None and frame["command"] == "redirect"
            await client.answer_receipt()  # the Ping right behind it
        assert client.pings - pings == 5
        await done.wait()
        assert server.calls["talker"].statistics().commands_unconfirmed == 0
    assert started == 0  # (the keepalive's first Ping is 20 s away)
