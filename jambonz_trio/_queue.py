"""The call's event queue: a bounded FIFO from the receive loop (never blocks) to the app.

A trio memory channel would do the job, at about 1.5 KiB per call (two endpoints, a state
object and a deque that costs ~700 bytes even when empty); with one queue per live call and
10,000 calls per process that is 15 MiB for nothing (issue 8's memory figures). This keeps the
part the engine uses: ``put_nowait`` (raises ``trio.WouldBlock`` when full,
``trio.ClosedResourceError`` when closed), ``get`` (a checkpoint; raises ``trio.EndOfChannel``
once closed and drained), ``close``; and ``reserved``, set while one reader (a Conversation)
has the events to itself.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import trio

__all__ = ["EventQueue"]

_T = TypeVar("_T")


class EventQueue(Generic[_T]):
    __slots__ = ("_closed", "_items", "_readers", "capacity", "reserved")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        #: one reader took the events for itself (``Call.reserve_events``)
        self.reserved = False
        self._items: list[_T] = []
        self._closed = False
        self._readers = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: _T) -> None:
        if self._closed:
            raise trio.ClosedResourceError
        # like a memory channel, a reader already waiting takes an item even at capacity 0
        if len(self._items) >= self.capacity + len(self._readers):
            raise trio.WouldBlock
        self._items.append(item)
        self._readers.unpark()

    async def get(self) -> _T:
        """The oldest item; blocks while empty. Always a checkpoint."""
        await trio.lowlevel.checkpoint_if_cancelled()
        items = self._items
        if items:
            item = items.pop(0)  # before yielding: another reader may run meanwhile
            await trio.lowlevel.cancel_shielded_checkpoint()  # not cancellable: never lost
            return item
        while not items:
            if self._closed:
                raise trio.EndOfChannel
            await self._readers.park()
        return items.pop(0)

    def close(self) -> None:
        """No more items; readers get what is queued, then ``trio.EndOfChannel``."""
        self._closed = True
        self._readers.unpark_all()
