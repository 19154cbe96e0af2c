"""The server's live calls: look up by call_sid, iterate, wait for new ones, bind reconnects."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterator

import trio

from ._call import Call
from ._log import get_logger
from ._protocol._state import ConnState

__all__ = ["CallRegistry", "NewCalls"]

log = get_logger("jambonz_trio.server")


class NewCalls:
    """An async iterator over calls as they start (see :meth:`CallRegistry.new_calls`)."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Call](float("inf"))

    def _push(self, call: Call) -> None:
        self._send.send_nowait(call)

    def __aiter__(self) -> NewCalls:
        return self

    async def __anext__(self) -> Call:
        return await self._receive.receive()


class CallRegistry:
    """Every live call of a server, usable from any task of the program.

    A call is listed from its first message until it ends (including while it is disconnected
    and waiting for jambonz to reconnect). The registry only tracks calls; it never keeps one
    alive.
    """

    def __init__(self, max_parked: int) -> None:
        self._calls: dict[str, Call] = {}
        self._anonymous: set[Call] = set()
        self._parked: OrderedDict[str, None] = OrderedDict()
        self._max_parked = max_parked
        self._subscribers: weakref.WeakSet[NewCalls] = weakref.WeakSet()

    def __len__(self) -> int:
        return len(self._calls) + len(self._anonymous)

    def __iter__(self) -> Iterator[Call]:
        """The live calls (a call that just ended is skipped even before it is removed)."""
        calls = [*self._calls.values(), *self._anonymous]
        return iter([c for c in calls if not c.closed])

    def __contains__(self, call_sid: object) -> bool:
        return call_sid in self._calls

    def get(self, call_sid: str) -> Call | None:
        """The live call with this sid, or ``None``.

        Child legs created by ``dial`` share the parent's socket: reach them through the
        parent's call and the ``call_sid=`` argument of leg-aware commands.
        """
        call = self._calls.get(call_sid)
        return None if call is None or call.closed else call

    def __getitem__(self, call_sid: str) -> Call:
        return self._calls[call_sid]

    def new_calls(self) -> NewCalls:
        """Calls as they start, from now on: ``async for call in server.calls.new_calls()``.

        Each iterator has its own unbounded queue, so a slow consumer never delays a call.
        Drop the iterator to unsubscribe (nothing to close).
        """
        subscription = NewCalls()
        self._subscribers.add(subscription)
        return subscription

    async def wait_new_call(self) -> Call:
        """Wait for the next call to start and return it. A checkpoint."""
        return await self.new_calls().__anext__()

    # -- server side -----------------------------------------------------------------------

    def add(self, call: Call) -> None:
        """Server side: list a new call (and tell subscribers)."""
        sid = call.call_sid
        if sid is None:
            self._anonymous.add(call)
        else:
            old = self._calls.get(sid)
            if old is not None and old is not call:
                log.warning("call %s: a new call replaces a live one with the same sid", sid)
            self._calls[sid] = call
        for subscription in list(self._subscribers):
            subscription._push(call)

    def add_isolated(self, call: Call) -> None:
        """A call that must not be reachable by its sid (a reconnect that failed the owner
        check, S-9): listed, but never returned by :meth:`get`."""
        self._anonymous.add(call)
        for subscription in list(self._subscribers):
            subscription._push(call)

    def remove(self, call: Call) -> None:
        """Server side: the call ended."""
        sid = call.call_sid
        self._anonymous.discard(call)
        if sid is not None and self._calls.get(sid) is call:
            del self._calls[sid]
            self._parked.pop(sid, None)

    def parked(self, call: Call) -> Call | None:
        """Note that ``call`` is disconnected; returns a call evicted to respect the cap."""
        sid = call.call_sid
        if sid is None:
            return None
        self._parked[sid] = None
        self._parked.move_to_end(sid)
        evicted = None
        while len(self._parked) > self._max_parked:
            old_sid, _ = self._parked.popitem(last=False)
            candidate = self._calls.get(old_sid)
            if candidate is not None and candidate.state is ConnState.DISCONNECTED:
                evicted = candidate
        return evicted

    def unparked(self, call: Call) -> None:
        """Server side: the call has a socket again."""
        if call.call_sid is not None:
            self._parked.pop(call.call_sid, None)
