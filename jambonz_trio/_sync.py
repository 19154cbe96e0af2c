"""Small trio helpers used in several places: do something unless an event comes first; the
exceptions inside an exception group."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

__all__ = ["leaves", "unless"]


async def unless(event: trio.Event, work: Callable[[], Awaitable[object]]) -> bool:
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
