"""One deadline task for every call of a trio run, instead of a watchdog task per call.

A call has a few deadlines: its owed acks (answered for the app at ``ack_deadline``), the
keepalive and receipt Pings of its live connection, the reconnect grace period. They rarely
fire: an IVR call is answered long before its first deadline and ends before its first
keepalive. A sleeping task per call to watch them cost every call a task, its coroutine frames
and a cancel scope (bench/README.md, "Issue 16"); here one task per trio run watches all of them.

A call holds a :class:`Timer`. :meth:`Timer.at` asks to be woken at a time; the shared task
keeps a heap of ``(time, n, timer)`` and sleeps until the earliest. Entries are never removed:
an entry whose time is no longer its timer's (moved, or the call ended: :meth:`Timer.cancel`)
is skipped when it comes up, and it holds only the small :class:`Timer`, not the call. A timer
remembers the times of its entries still waiting, so setting it back to one of them adds none
(a call that sends a command every 50 ms sets its timer to "now" for each command's receipt
Ping and back to its keepalive: without that, one entry per command waited for the keepalive).

When a timer's time comes, its callback runs *synchronously* in the shared task: it must not
block or raise (the engine's starts a task in the call's own nursery for the I/O a deadline
needs, so a call whose socket is slow never delays another's deadline). A callback that raises
anyway is logged and the other timers carry on.

The task is a trio system task, started on first use in each run (``trio.lowlevel.RunVar``):
nothing to set up, and it works alike under a server, the fake jambonz and ``autojump_clock``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable

import trio

from ._log import get_logger

__all__ = ["Timer"]

log = get_logger("jambonz_trio.call")


class Timer:
    """A call's wake-up: ``callback()`` runs in the shared task once the time given to
    :meth:`at` has come (unless moved or cancelled meanwhile)."""

    __slots__ = ("callback", "queued", "when")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback: Callable[[], None] | None = callback
        #: when it is due (``inf``: not scheduled)
        self.when = math.inf
        #: the times of its entries still in the shared heap (usually one or two)
        self.queued: tuple[float, ...] = ()

    def at(self, when: float) -> None:
        """Be woken at ``when`` (sync). An earlier time replaces a later one; a later time
        than the one already set is ignored (the callback then finds nothing due yet and
        sets the next time itself)."""
        if when < self.when and self.callback is not None:
            self.when = when
            if when not in self.queued:  # (an entry left by an earlier time comes up then)
                self.queued += (when,)
                _scheduler().add(when, self)

    def cancel(self) -> None:
        """Never wake again; drops the reference to the callback (and so to the call)."""
        self.when = math.inf
        self.callback = None
        self.queued = ()


class _Scheduler:
    __slots__ = ("_count", "_heap", "_scope")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._count = itertools.count()
        self._scope: trio.CancelScope | None = None

    def add(self, when: float, timer: Timer) -> None:
        heapq.heappush(self._heap, (when, next(self._count), timer))
        scope = self._scope
        if scope is not None and when < scope.deadline:
            scope.deadline = when

    async def run(self) -> None:
        heap = self._heap
        while True:
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _fire(*heapq.heappop(heap))  # (a function: no call stays referenced by this frame)


def _fire(when: float, _n: int, timer: Timer) -> None:
    if when in timer.queued:
        timer.queued = tuple(t for t in timer.queued if t != when)
    callback = timer.callback
    if when != timer.when or callback is None:
        return  # moved or cancelled since
    timer.when = math.inf
    try:
        callback()
    except Exception:  # never: a callback must not raise; if one does, the others run on
        log.exception("a deadline callback failed")


_SCHEDULER: trio.lowlevel.RunVar[_Scheduler] = trio.lowlevel.RunVar("jambonz_trio_scheduler")


def _scheduler() -> _Scheduler:
    try:
        return _SCHEDULER.get()
    except LookupError:
        scheduler = _Scheduler()
        _SCHEDULER.set(scheduler)
        trio.lowlevel.spawn_system_task(scheduler.run, name="jambonz_trio deadlines")
        return scheduler
