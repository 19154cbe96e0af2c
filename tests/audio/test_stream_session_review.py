"""rev-session: failing test for the mark count moved before the write (main since 025b526)."""

from __future__ import annotations

import json

import trio
import trio.testing

from jambonz_trio import AudioRoute, AudioStream, LocalProtocolError

from .helpers import Spy, spied_client, start_server


async def test_a_mark_sent_while_clear_marks_is_writing_stays_counted(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """``clear_marks`` is writing ``clearMarks`` (a slow socket) when another task sends
    ``mark("x")``: its frame goes out after ``clearMarks``, so jambonz holds ``x``. The mark is
    now counted before its write and ``clear_marks`` zeroes the count after its own write
    returns, which is after ``x`` was counted: ``x`` is forgotten, and 30 more marks are
    accepted while jambonz keeps 30 (it drops the last one silently). Counted after the write,
    as before, the count was 1 and the 30th more was refused."""
    spies: list[Spy] = []
    accepted: list[str] = []
    refused: list[Exception] = []

    async def app(stream: AudioStream) -> None:
        spy = spies[0]
        async with trio.open_nursery() as inner:
            inner.start_soon(stream.clear_marks)
            await trio.testing.wait_all_tasks_blocked()  # clearMarks is being written
            inner.start_soon(stream.mark, "x")
            await trio.testing.wait_all_tasks_blocked()  # the mark waits behind it
            spy.slow.set()
        try:
            for i in range(1, 31):
                await stream.mark(f"m{i}")
                accepted.append(f"m{i}")
        except LocalProtocolError as exc:
            refused.append(exc)
        await stream.wait_closed()

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with spied_client(server) as (ws, spy):
        spies.append(spy)
        spy.slow_send = lambda data: b"clearMarks" in data
        await ws.send_message(json.dumps({"callSid": "cs-1", "sampleRate": 8000}))
        sent = [json.loads(await ws.get_message()) for _ in range(2)]
        assert [m["type"] for m in sent] == ["clearMarks", "mark"]  # x follows the clear: kept
        with trio.move_on_after(5):
            while True:
                await ws.get_message()
    assert len(accepted) == 29 and refused, (
        f"{len(accepted)} more marks accepted with x pending: jambonz keeps 30, so the last was dropped"
    )
