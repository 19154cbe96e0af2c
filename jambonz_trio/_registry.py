"""The server's live calls: look up by call_sid, iterate, wait for new ones, bind reconnects."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Hashable, Iterator, Mapping

import trio

from ._call import Call
from ._log import get_logger

__all__ = ["CallRegistry", "NewCalls"]

log = get_logger("jambonz_trio.server")


class NewCalls:
    """A subscription to the calls that start from its creation on (see
    :meth:`CallRegistry.new_calls`).

    Every call that starts while the subscription exists is buffered (unbounded, so a slow
    consumer never delays a call) until read: ``async for call in subscription`` or ``await
    subscription.receive()``. No call is missed while the reader is busy with the previous one.
    """

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Call](float("inf"))

    def _push(self, call: Call) -> None:
        self._send.send_nowait(call)

    async def receive(self) -> Call:
        """The next call that started (buffered ones first). Blocks until there is one; a
        checkpoint."""
        return await self._receive.receive()

    def __aiter__(self) -> NewCalls:
        return self

    async def __anext__(self) -> Call:
        return await self._receive.receive()


class CallRegistry(Mapping[str, Call]):
    """The server's live calls by sid: a read-only ``Mapping[str, Call]``, usable from any task.

    A call is listed from its first message until it ends (including while it is disconnected
    and waiting for jambonz to reconnect), under :attr:`Call.call_sid`. Keys, ``in``,
    ``calls[sid]``, :meth:`get`, iteration and ``len()`` all agree: ``sid in calls`` is true
    exactly when ``calls[sid]`` returns a call and ``calls.get(sid)`` is not ``None``; a call
    that ended is gone from all of them at once (``calls[sid]`` raises ``KeyError``).
    ``calls.values()`` yields the calls, ``calls.items()`` ``(sid, call)`` pairs.

    A call is never replaced by another with the same sid: the newcomer is served as an
    *isolated* call, which is not reachable by sid and so not in the mapping; neither is a call
    whose first message named no sid. :meth:`all_calls` lists every live call, isolated ones
    included. The registry only tracks calls; it never keeps one alive.
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

    # -- the mapping -----------------------------------------------------------------------

    def __getitem__(self, call_sid: str) -> Call:
        """The live call with this sid (``calls.get(sid)`` returns ``None`` instead of raising).

        Child legs created by ``dial`` share the parent's socket: reach them through the
        parent's call and the ``call_sid=`` argument of leg-aware commands.

        Raises:
            KeyError: no live call has this sid (unknown, ended, or only an isolated call has
                it).
        """
        call = self._calls.get(call_sid)
        if call is None or call.closed:
            raise KeyError(call_sid)
        return call

    def __contains__(self, call_sid: object) -> bool:
        call = self._calls.get(call_sid) if isinstance(call_sid, str) else None
        return call is not None and not call.closed

    def __iter__(self) -> Iterator[str]:
        """The sids of the live calls (a snapshot: safe while calls start and end)."""
        return iter([sid for sid, call in self._calls.items() if not call.closed])

    def __len__(self) -> int:
        """How many live calls are reachable by sid (see :meth:`all_calls` for every call)."""
        return sum(not call.closed for call in self._calls.values())

    def all_calls(self) -> list[Call]:
        """Every live call: those reachable by sid, then the isolated ones (a snapshot)."""
        calls = [*self._calls.values(), *self._anonymous]
        return [c for c in calls if not c.closed]

    # -- new calls ---------------------------------------------------------------------------

    def new_calls(self) -> NewCalls:
        """Subscribe to the calls that start from now on; the way to watch for new calls.

        ``async for call in server.calls.new_calls(): ...`` sees every call, including those
        that start while the loop body runs (they are buffered). For one call at a time, keep
        the subscription and ``await sub.receive()``. Subscribe *before* the calls you want to
        see can start. Drop the subscription to unsubscribe (nothing to close).
        """
        subscription = NewCalls()
        self._subscribers.add(subscription)
        return subscription

    async def wait_new_call(self) -> Call:
        """Deprecated: use :meth:`new_calls`.

        Waits for the next call to start. Each call subscribes anew, so in a loop it misses
        every call that starts while the loop body runs (issue 18: two calls started, a
        watcher saw one). Emits ``DeprecationWarning``.
        """
        warnings.warn(
            "CallRegistry.wait_new_call() misses calls that start between two waits; "
            "subscribe once with server.calls.new_calls() and read it (async for, or "
            "await subscription.receive())",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self.new_calls().receive()

    # -- server side -----------------------------------------------------------------------

    def _count(self) -> int:
        """Server side: calls not removed yet, isolated and just-ended ones included."""
        return len(self._calls) + len(self._anonymous)

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
