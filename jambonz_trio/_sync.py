"""Small trio helpers used in several places: a lazily made event, do something unless an
event comes first; the exceptions inside an exception group."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

__all__ = ["Flag", "Waitable", "leaves", "unless"]


class Waitable(Protocol):
    """What :func:`unless` waits on: a :class:`trio.Event` or a :class:`Flag`."""

    def is_set(self) -> bool: ...

    async def wait(self) -> None: ...


class Flag:
    """A one-way flag that can be waited for, like :class:`trio.Event`, whose event is made
    only when someone waits before it is set. Most of a call's flags are set (or dropped)
    without a waiter, and a :class:`trio.Event` with its parking lot costs ~280 bytes; a held
    call had five (issue 16)."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: trio.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Set it and wake its waiters (sync, idempotent)."""
        if not self._set:
            self._set = True
            if self._event is not None:
                self._event.set()

    async def wait(self) -> None:
        """Block until it is set (a checkpoint, as :meth:`trio.Event.wait` is, even when set)."""
        if self._set:
            await trio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()


async def unless(event: Waitable, work: Callable[[], Awaitable[object]]) -> bool:
    """Run ``work()`` until it returns, or cancel it as soon as ``event`` is set (typically the
    call closing). Returns whether ``work`` finished. A checkpoint; exceptions of ``work``
    propagate."""
    finished = False
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        await work()
        finished = True
        nursery.cancel_scope.cancel()
    return finished


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, however deeply grouped (``[exc]`` for a plain one)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]
