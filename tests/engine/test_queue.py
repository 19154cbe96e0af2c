"""The call's event queue (``jambonz_trio._queue.EventQueue``): bounded, FIFO, close
semantics of a memory channel, nothing lost to cancellation."""

from __future__ import annotations

from typing import TypeVar

import pytest
import trio
import trio.testing

from jambonz_trio._queue import EventQueue

T = TypeVar("T")


async def test_fifo_and_bound() -> None:
    q: EventQueue[int] = EventQueue(2)
    q.put_nowait(1)
    q.put_nowait(2)
    with pytest.raises(trio.WouldBlock):
        q.put_nowait(3)
    assert len(q) == 2
    assert [await q.get(), await q.get()] == [1, 2]
    assert len(q) == 0


async def _read_one(q: EventQueue[T], got: list[T]) -> None:
    """Wait for the next event of ``q`` and note it in ``got``."""
    got.append(await q.get())


async def test_get_blocks_until_put() -> None:
    q: EventQueue[str] = EventQueue(4)
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_one, q, got)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        q.put_nowait("x")
    assert got == ["x"]


async def test_close_drains_then_ends() -> None:
    q: EventQueue[int] = EventQueue(4)
    q.put_nowait(1)
    q.close()
    with pytest.raises(trio.ClosedResourceError):
        q.put_nowait(2)
    assert await q.get() == 1
    with pytest.raises(trio.EndOfChannel):
        await q.get()


async def test_close_wakes_a_waiting_reader() -> None:
    q: EventQueue[int] = EventQueue(4)
    async with trio.open_nursery() as nursery:
        ended = trio.Event()

        async def reader() -> None:
            with pytest.raises(trio.EndOfChannel):
                await q.get()
            ended.set()

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        q.close()
    assert ended.is_set()


async def test_get_is_a_checkpoint_and_cancellation_loses_nothing() -> None:
    q: EventQueue[int] = EventQueue(4)
    q.put_nowait(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await q.get()  # cancelled before taking anything
    assert scope.cancelled_caught and len(q) == 1
    with trio.testing.assert_checkpoints():
        assert await q.get() == 1


async def test_two_readers_share_items_in_order() -> None:
    q: EventQueue[int] = EventQueue(8)
    got: list[tuple[str, int]] = []
    async with trio.open_nursery() as nursery:
        for name in ("a", "b"):

            async def reader(name: str = name) -> None:
                for _ in range(2):
                    got.append((name, await q.get()))

            nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(4):
            q.put_nowait(i)
    assert sorted(v for _, v in got) == [0, 1, 2, 3]
    assert [v for n, v in got if n == "a"] == sorted(v for n, v in got if n == "a")


async def test_capacity_zero_hands_over_to_a_waiting_reader() -> None:
    q: EventQueue[int] = EventQueue(0)
    with pytest.raises(trio.WouldBlock):
        q.put_nowait(1)  # nobody waits
    got: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_one, q, got)
        await trio.testing.wait_all_tasks_blocked()
        q.put_nowait(2)
    assert got == [2]
