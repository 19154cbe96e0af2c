"""Small trio helpers used in several places: a lazily made event, do something unless an
event comes first, ``async for`` over a receive method; the exceptions inside an exception
group."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar, Generic, Protocol, TypeVar

import trio

__all__ = ["Flag", "ReceiveUntilEnd", "Waitable", "leaves", "unless"]

_T = TypeVar("_T")


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


class ReceiveUntilEnd(Generic[_T]):
    """``async for item in obj``: the items of ``obj``'s receive method until it raises ``obj``'s
    end-of-stream error (then the loop ends), as :class:`trio.abc.ReceiveChannel` does with
    :class:`trio.EndOfChannel`. A subclass sets ``_receive`` to its receive method and ``_END``
    to the error; any other exception of the method propagates out of the loop."""

    __slots__ = ()

    _END: ClassVar[type[Exception]]

    async def _receive(self) -> _T:
        raise NotImplementedError

    def __aiter__(self) -> ReceiveUntilEnd[_T]:
        """``async for item in obj``: ``obj``'s items until it ends (then the loop ends)."""
        return self

    async def __anext__(self) -> _T:
        try:
            return await self._receive()
        except self._END:
            raise StopAsyncIteration from None


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
