"""The server's live calls: :class:`CallTable` (the server's book of call engines: listing,
isolation, parking) and :class:`CallRegistry`, the app's read-only view of it (look up by sid,
iterate, wait for new calls)."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Hashable, Iterator, Mapping

import trio

from ._call import Call
from ._engine import CallEngine
from ._log import get_logger
from ._public import NoPublicConstructor, create

__all__ = ["CallRegistry", "CallTable", "NewCalls"]

log = get_logger("jambonz_trio.server")


class NewCalls(metaclass=NoPublicConstructor):
    """A subscription to the calls that start from its creation on (see
    :meth:`CallRegistry.new_calls`).

    Every call that starts while the subscription exists is buffered (unbounded, so a slow
    consumer never delays a call) until read: ``async for call in subscription`` or ``await
    subscription.receive()``. No call is missed while the reader is busy with the previous one.
    """

    _FACTORY = "server.calls.new_calls()"

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Call](float("inf"))

    def _push(self, call: Call) -> None:
        self._send.send_nowait(call)

    def _end(self) -> None:
        self._send.close()

    async def receive(self) -> Call:
        """The next call that started (buffered ones first). Blocks until there is one; a
        checkpoint.

        Raises:
            trio.EndOfChannel: the server stopped (:func:`serve_jambonz` returned, or was
                cancelled) and every call buffered before was returned. ``async for`` ends
                there.
        """
        return await self._receive.receive()

    def __aiter__(self) -> NewCalls:
        return self

    async def __anext__(self) -> Call:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class CallTable:
    """The server's live call engines: reachable by sid, isolated, and parked (disconnected,
    waiting for a reconnect). Only the server changes it; :class:`CallRegistry` reads it."""

    def __init__(self, max_parked: int, max_parked_per_account: int | None = None) -> None:
        self.by_sid: dict[str, CallEngine] = {}
        self.anonymous: set[CallEngine] = set()
        # disconnected calls, oldest first: all of them, and by tenant (dicts keep order)
        self.parked: dict[CallEngine, None] = {}
        self._parked_by_tenant: dict[Hashable, dict[CallEngine, None]] = {}
        self._max_parked = max_parked
        self._max_parked_per_account = max_parked_per_account
        self.subscribers: weakref.WeakSet[NewCalls] = weakref.WeakSet()
        #: the server stopped: subscriptions are over (see :meth:`stop`)
        self.stopped = False

    def stop(self) -> None:
        """The server stopped serving: no call starts any more, so every subscription ends
        (after the calls it buffered)."""
        self.stopped = True
        for subscription in list(self.subscribers):
            subscription._end()
        self.subscribers.clear()  # (a call listed later, by a task outliving the server, tells none)

    def count(self) -> int:
        """Calls not removed yet, isolated and just-ended ones included."""
        return len(self.by_sid) + len(self.anonymous)

    def live(self, sid: str | None) -> CallEngine | None:
        """The live call reachable by ``sid``, or ``None``."""
        engine = self.by_sid.get(sid) if sid is not None else None
        return engine if engine is not None and not engine.closed else None

    def all_engines(self) -> list[CallEngine]:
        """Every live call: those reachable by sid, then the isolated ones (a snapshot)."""
        return [e for e in (*self.by_sid.values(), *self.anonymous) if not e.closed]

    def add(self, engine: CallEngine) -> None:
        """List a new call (and tell subscribers). A live call already listed under the same
        sid keeps it: the newcomer is isolated (never evicts)."""
        sid = engine.routing_sid
        if sid is None or engine.isolated:
            self.anonymous.add(engine)
        else:
            old = self.by_sid.get(sid)
            if old is not None and old is not engine and not old.closed:
                log.warning("call %s: a live call already has this sid; the new one is isolated", sid)
                engine.isolate()
                self.anonymous.add(engine)
            else:
                self.by_sid[sid] = engine
        for subscription in list(self.subscribers):
            subscription._push(engine.call)

    def remove(self, engine: CallEngine) -> None:
        """The call ended."""
        sid = engine.routing_sid
        self.anonymous.discard(engine)
        if sid is not None and self.by_sid.get(sid) is engine:
            del self.by_sid[sid]
        self.unpark(engine)

    def park(self, engine: CallEngine) -> list[CallEngine]:
        """Note that the call is disconnected and waits for a reconnect. Returns the calls to
        give up: at ``max_parked_per_account`` the oldest waiting call of the same tenant
        (route, Basic user, ``account_sid``); at ``max_parked`` the newcomer itself. A call of
        one tenant never pushes out another tenant's (issue 19: 10,100 parked calls pushed a
        victim's out before)."""
        if engine in self.parked:
            return []
        give_up: list[CallEngine] = []
        tenant = _tenant(engine)
        mine = self._parked_by_tenant.get(tenant)
        cap = self._max_parked_per_account
        if cap is not None and mine is not None and len(mine) >= cap:
            oldest = next(iter(mine))
            self.unpark(oldest)
            give_up.append(oldest)
        if len(self.parked) >= self._max_parked:
            give_up.append(engine)  # refused: the calls already waiting keep their place
            return give_up
        self.parked[engine] = None
        self._parked_by_tenant.setdefault(tenant, {})[engine] = None
        return give_up

    def has_room(self, engine: CallEngine) -> bool:
        """Whether :meth:`park` would keep ``engine`` parked without giving up any call (its own
        tenant's oldest included)."""
        if engine in self.parked:
            return True
        cap = self._max_parked_per_account
        mine = self._parked_by_tenant.get(_tenant(engine))
        if cap is not None and mine is not None and len(mine) >= cap:
            return False
        return len(self.parked) < self._max_parked

    def unpark(self, engine: CallEngine) -> None:
        """The call has a connection again (or ended)."""
        if engine in self.parked:
            del self.parked[engine]
            tenant = _tenant(engine)
            mine = self._parked_by_tenant[tenant]
            del mine[engine]
            if not mine:
                del self._parked_by_tenant[tenant]


def _tenant(engine: CallEngine) -> Hashable:
    call = engine.call
    return (call.identity, call.account_sid)


class CallRegistry(Mapping[str, Call], metaclass=NoPublicConstructor):
    """The server's live calls by sid: a read-only ``Mapping[str, Call]``, usable from any task.

    A call is listed from its first message until it ends (including while it is disconnected
    and waiting for jambonz to reconnect), under :attr:`Call.call_sid`. Keys, ``in``,
    ``calls[sid]``, :meth:`get`, iteration and ``len()`` all agree: ``sid in calls`` is true
    exactly when ``calls[sid]`` returns a call and ``calls.get(sid)`` is not ``None``; a call
    that ended is gone from all of them at once (``calls[sid]`` raises ``KeyError``).
    ``calls.values()`` yields the calls, ``calls.items()`` ``(sid, call)`` pairs. Like every
    ``Mapping`` it compares by content and is not hashable.

    A call is never replaced by another with the same sid: the newcomer is served as an
    *isolated* call (:attr:`Call.isolated`), which is not reachable by sid and so not in the
    mapping; neither is a call whose first message named no sid. :meth:`all_calls` lists every
    live call, isolated ones included. The registry only tracks calls; it never keeps one alive.
    """

    _FACTORY = "the server (server.calls)"

    def __init__(self, table: CallTable) -> None:
        self._table = table

    def __getitem__(self, call_sid: str) -> Call:
        """The live call with this sid (``calls.get(sid)`` returns ``None`` instead of raising).

        Child legs created by ``dial`` share the parent's socket: reach them through the
        parent's call and the ``call_sid=`` argument of leg-aware commands.

        Raises:
            KeyError: no live call has this sid (unknown, ended, or only an isolated call has
                it).
        """
        engine = self._table.live(call_sid)
        if engine is None:
            raise KeyError(call_sid)
        return engine.call

    def __contains__(self, call_sid: object) -> bool:
        return isinstance(call_sid, str) and self._table.live(call_sid) is not None

    def __iter__(self) -> Iterator[str]:
        """The sids of the live calls (a snapshot: safe while calls start and end)."""
        return iter([sid for sid, engine in self._table.by_sid.items() if not engine.closed])

    def __len__(self) -> int:
        """How many live calls are reachable by sid (see :meth:`all_calls` for every call)."""
        return sum(not engine.closed for engine in self._table.by_sid.values())

    def all_calls(self) -> list[Call]:
        """Every live call: those reachable by sid, then the isolated ones (a snapshot)."""
        return [engine.call for engine in self._table.all_engines()]

    @property
    def parked_count(self) -> int:
        """How many disconnected calls wait for a reconnect."""
        return len(self._table.parked)

    def new_calls(self) -> NewCalls:
        """Subscribe to the calls that start from now on; the way to watch for new calls.

        ``async for call in server.calls.new_calls(): ...`` sees every call, including those
        that start while the loop body runs (they are buffered). For one call at a time, keep
        the subscription and ``await sub.receive()``. Subscribe *before* the calls you want to
        see can start. Drop the subscription to unsubscribe (nothing to close). The loop ends
        when the server stops (:func:`serve_jambonz` returns), so a watcher serving next to it
        returns too.
        """
        subscription = create(NewCalls)
        if self._table.stopped:
            subscription._end()
        else:
            self._table.subscribers.add(subscription)
        return subscription

    async def wait_new_call(self) -> Call:
        """Deprecated: use :meth:`new_calls`.

        Waits for the next call to start. Each call subscribes anew, so in a loop it misses
        every call that starts while the loop body runs (issue 18: two calls started, a
        watcher saw one). Emits ``DeprecationWarning``.

        Raises:
            trio.EndOfChannel: the server stopped (see :meth:`NewCalls.receive`).
        """
        warnings.warn(
            "CallRegistry.wait_new_call() misses calls that start between two waits; "
            "subscribe once with server.calls.new_calls() and read it (async for, or "
            "await subscription.receive())",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self.new_calls().receive()
