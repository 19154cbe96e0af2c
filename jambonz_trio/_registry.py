"""The server's live calls: look up by call_sid, iterate, wait for new ones, bind reconnects."""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Iterator

import trio

from ._call import Call
from ._log import get_logger

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
    and waiting for jambonz to reconnect), under :attr:`Call.call_sid`. A call is never
    replaced by another with the same sid: the newcomer is listed but not reachable by sid.
    The registry only tracks calls; it never keeps one alive.
    """

    def __init__(self, max_parked: int, max_parked_per_account: int | None = None) -> None:
        self._calls: dict[str, Call] = {}
        self._anonymous: set[Call] = set()
        # disconnected calls, oldest first: all of them, and by tenant (dicts keep order)
        self._parked: dict[Call, None] = {}
        self._parked_by_tenant: dict[Hashable, dict[Call, None]] = {}
        self._max_parked = max_parked
        self._max_parked_per_account = max_parked_per_account
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
        """Server side: list a new call (and tell subscribers). A live call already listed
        under the same sid keeps it: the newcomer is listed as isolated (never evicts)."""
        sid = call._routing_sid
        if sid is None or call._isolated:
            self._anonymous.add(call)
        else:
            old = self._calls.get(sid)
            if old is not None and old is not call and not old.closed:
                log.warning("call %s: a live call already has this sid; the new one is isolated", sid)
                call._isolated = True
                self._anonymous.add(call)
            else:
                self._calls[sid] = call
        for subscription in list(self._subscribers):
            subscription._push(call)

    def add_isolated(self, call: Call) -> None:
        """A call that must not be reachable by its sid (a reconnect that failed the owner
        check, S-9): listed, but never returned by :meth:`get`."""
        call._isolated = True
        self.add(call)

    def remove(self, call: Call) -> None:
        """Server side: the call ended."""
        sid = call._routing_sid
        self._anonymous.discard(call)
        if sid is not None and self._calls.get(sid) is call:
            del self._calls[sid]
        self.unparked(call)

    def parked(self, call: Call) -> list[Call]:
        """Note that ``call`` is disconnected and waits for a reconnect. Returns the calls to
        give up: at ``max_parked_per_account`` the oldest waiting call of the same tenant
        (route, Basic user, ``account_sid``); at ``max_parked`` the newcomer itself. A call of
        one tenant never pushes out another tenant's (issue 19: 10,100 parked calls pushed a
        victim's out before)."""
        if call in self._parked:
            return []
        give_up: list[Call] = []
        tenant = (call.identity, call.account_sid)
        mine = self._parked_by_tenant.get(tenant)
        cap = self._max_parked_per_account
        if cap is not None and mine is not None and len(mine) >= cap:
            oldest = next(iter(mine))
            self.unparked(oldest)
            give_up.append(oldest)
        if len(self._parked) >= self._max_parked:
            give_up.append(call)  # refused: the calls already waiting keep their place
            return give_up
        self._parked[call] = None
        self._parked_by_tenant.setdefault(tenant, {})[call] = None
        return give_up

    def unparked(self, call: Call) -> None:
        """Server side: the call has a socket again (or ended)."""
        if call in self._parked:
            del self._parked[call]
            tenant = (call.identity, call.account_sid)
            mine = self._parked_by_tenant[tenant]
            del mine[call]
            if not mine:
                del self._parked_by_tenant[tenant]

    @property
    def parked_count(self) -> int:
        """How many disconnected calls wait for a reconnect."""
        return len(self._parked)
