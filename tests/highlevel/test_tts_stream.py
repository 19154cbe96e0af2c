"""Streaming TTS: ordered tokens, back-pressure on ``full``, flush at turn end, barge-in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from jambonz_trio import Call, TokenStream, open_tts_stream
from jambonz_trio.commands import TtsFlushCommand, TtsTokensCommand
from jambonz_trio.testing import FakeCall, TtsModel, open_fake_call
from jambonz_trio.verbs import Config, TtsStream
from tests.helpers import msg, open_ws, recv, session_data, start


async def test_back_pressure_then_flush(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    words = [f"word{i:03d} " for i in range(150)]  # 1,200 characters: over the high water mark
    done = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Config(tts_stream=TtsStream(enable=True))])
        async with open_tts_stream(call) as tts:
            for word in words:
                assert await tts.send(word)
        done.set()
        await call.wait_closed()

    server = await start(nursery, app)
    async with open_fake_call(server.connect_memory, tts=TtsModel(high_water=1000, low_water=200)) as fc:
        await fc.start()
        await fc.wait_idle(1)
        assert fc.tts_paused and not done.is_set()  # the app waits for stream_resumed
        await fc.drain_tts()
        with trio.fail_after(5):
            await done.wait()
        await fc.wait_idle(0.1)
        tokens = [c.command for c in fc.commands if isinstance(c.command, TtsTokensCommand)]
        assert isinstance(fc.commands[-1].command, TtsFlushCommand)
        assert fc.tts_flushes == 1
        # order is kept, and the refused batch was sent again after the resume
        sent_once: list[str] = []
        for t in tokens:
            if not sent_once or sent_once[-1] != t.tokens:
                sent_once.append(t.tokens)
        assert sent_once == words


async def test_barge_in_ends_the_turn(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    results: list[bool] = []
    interrupted = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Config(tts_stream=TtsStream(enable=True))])
        async with open_tts_stream(call) as tts:
            results.append(await tts.send("Let me tell you "))
            await interrupted.wait()
            results.append(await tts.send("a long story"))
        await call.wait_closed()

    server = await start(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.wait_idle(0.1)
        await fc.tts_streaming_event("user_interruption")
        await fc.wait_idle(0.1)
        interrupted.set()
        await fc.wait_idle(0.5)
        assert [c.name for c in fc.commands] == ["tts:tokens"]  # nothing more, and no flush
    assert results == [True, False]


async def test_wait_interrupted_wakes_on_barge_in(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    woke = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Config(tts_stream=TtsStream(enable=True))])
        async with open_tts_stream(call) as tts:
            await tts.wait_interrupted()
            assert tts.interrupted
            woke.set()
        await call.wait_closed()

    server = await start(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        await fc.wait_idle(5)
        assert not woke.is_set()
        await fc.tts_streaming_event("user_interruption")
        with trio.fail_after(1):
            await woke.wait()


@asynccontextmanager
async def streaming_turn(call: Call) -> AsyncIterator[tuple[TokenStream, trio.Nursery]]:
    """Answer ``session:new`` with TTS streaming on, then one turn and a nursery beside it
    (for a task that clears or sends while the turn's own ``send`` waits)."""
    await call.ack(call.session, [Config(tts_stream=TtsStream(enable=True))])
    async with open_tts_stream(call) as tts, trio.open_nursery() as inner:
        yield tts, inner


async def _send_until_full(tts: TokenStream, results: list[bool]) -> None:
    """900 characters, then 300 more: over the 1,000 high water mark, the second batch is
    refused ``full`` and waits."""
    results.append(await tts.send("a" * 900))
    results.append(await tts.send("b" * 300))


async def _start_until_full(fc: FakeCall, results: list[bool]) -> None:
    await fc.start()
    await fc.wait_idle(1)
    assert fc.tts_paused and results == [True]


async def _until(fc: FakeCall, done: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while not done():
            await fc.wait_idle(0.1)


async def test_a_send_held_by_back_pressure_is_dropped_by_a_barge_in(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A batch jambonz refused as ``full`` waits for ``stream_resumed``; a barge-in
    (``user_interruption``, which also releases it) ends the turn: the batch belongs to the
    interrupted turn and is not sent again (jambonz cleared its buffer at the barge-in, so it
    would be accepted and spoken after the caller interrupted). ``send`` returns ``False``."""
    results: list[bool] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Config(tts_stream=TtsStream(enable=True))])
        async with open_tts_stream(call) as tts:
            await _send_until_full(tts, results)
        await call.wait_closed()

    server = await start(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await _start_until_full(fc, results)
        await fc.tts_streaming_event("user_interruption")
        await _until(fc, lambda: len(results) == 2)
        tokens = [c.command.tokens for c in fc.commands if isinstance(c.command, TtsTokensCommand)]
        assert tokens == ["a" * 900, "b" * 300]  # the refused batch was not sent again
        assert [c.name for c in fc.commands] == ["tts:tokens", "tts:tokens"]  # and no flush
    assert results == [True, False]


async def test_a_turn_jambonz_refuses_ends_with_its_failure(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """jambonz answers ``tts:tokens`` without a status when the call has no streaming buffer
    (FS v0.9.8 lib/session/call-session.js:1964-1970), and with ``failed`` when the TTS
    vendor's connection failed (lib/utils/tts-streaming-buffer.js:97-100): nothing of the
    text will be spoken. ``send`` returned True and counted the text as sent, so an app
    streamed its whole answer into silence; it now returns False (stop generating), keeps
    jambonz's answer as ``failure`` and sends nothing more in this turn."""
    results: list[bool] = []
    streams: list[object] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Config(tts_stream=TtsStream(enable=True))])
        async with open_tts_stream(call) as tts:
            streams.append(tts)
            results.append(await tts.send("Hello "))
            results.append(await tts.send("there"))
        await call.wait_closed()

    server = await start(nursery, app)
    async with open_fake_call(server.connect_memory, tts=None) as fc:
        await fc.start()
        await fc.wait_idle(0.5)
        assert [c.name for c in fc.commands] == ["tts:tokens"]  # nothing after the refusal
    (tts,) = streams
    assert results == [False, False]
    assert isinstance(tts, TokenStream) and tts.sent_chars == 0
    assert tts.failure is not None and tts.failure.status is None


@pytest.mark.parametrize("by", ["call", "turn"])
async def test_a_clear_releases_a_send_held_by_back_pressure(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, by: str
) -> None:
    """``tts:clear`` empties jambonz's buffer and resets its full flag without a
    ``stream_resumed`` (feature-server v0.9.8 lib/utils/tts-streaming-buffer.js:165-175): a
    sender waiting for that event was held until the call ended. A bare ``Call.tts_clear``
    (``by="call"``: no turn to end) releases it, and its batch, refused before, now fits and
    goes out. ``TokenStream.clear`` (``by="turn"``) is the app deciding to stop the turn: the
    released batch was sent again, so the text the app had just cleared was spoken after all
    (and the block flushed it); the held send now returns False without sending, later sends
    too, and the block does not flush."""
    results: list[bool] = []
    later: list[bool] = []
    paused = trio.Event()

    async def app(call: Call) -> None:
        async with streaming_turn(call) as (tts, inner):

            async def clear_when_paused() -> None:
                await paused.wait()
                await (call.tts_clear() if by == "call" else tts.clear())  # from another task

            inner.start_soon(clear_when_paused)
            await _send_until_full(tts, results)
            if by == "turn":
                later.append(await tts.send("c"))
        await call.wait_closed()

    server = await start(nursery, app)
    async with open_fake_call(server.connect_memory) as fc:
        await _start_until_full(fc, results)
        paused.set()
        await _until(fc, lambda: len(results) == 2 and len(later) == (by == "turn"))
        await fc.wait_idle(0.5)
        sent = [c.name for c in fc.commands]
        if by == "call":
            assert sent == ["tts:tokens", "tts:tokens", "tts:clear", "tts:tokens", "tts:flush"]
            assert fc.tts_text == "a" * 900 + "b" * 300
    if by == "call":
        assert results == [True, True]
    else:
        assert sent == ["tts:tokens", "tts:tokens", "tts:clear"]
        assert results == [True, False] and later == [False]


async def test_a_full_answer_read_after_the_apps_clear_holds_no_send(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """jambonz answers a batch it reads while its buffer is full with ``stream_paused`` and
    ``full`` (feature-server v0.9.8 lib/utils/tts-streaming-buffer.js:110-118), then reads the
    app's ``tts:clear``, which empties the buffer and forgets it was full without a
    ``stream_resumed`` (:165-175). When those answers arrived after the app wrote its clear,
    they paused the stream the clear had already released: the cleared turn's held send never
    returned, and no later turn could send."""
    results: list[bool] = []
    seen_tokens = trio.Event()

    async def app(call: Call) -> None:
        async with streaming_turn(call) as (tts, inner):

            async def held() -> None:
                results.append(await tts.send("b" * 300))

            inner.start_soon(held)
            await seen_tokens.wait()
            await tts.clear()
        async with open_tts_stream(call) as tts:
            results.append(await tts.send("c"))
        await call.wait_closed()

    server = await start(nursery, app)
    with trio.fail_after(5):
        async with open_ws(await server.connect_memory(), "/") as ws:
            await ws.send_message(msg("session:new", "m1", session_data("sid-1"), call_sid="sid-1"))
            assert (await recv(ws))["type"] == "ack"
            tokens = await recv(ws)
            assert tokens["command"] == "tts:tokens"
            seen_tokens.set()
            assert (await recv(ws))["command"] == "tts:clear"  # written before the answers came
            await ws.send_message(
                msg("tts:streaming-event", "m2", {"event_type": "stream_paused"}, call_sid="sid-1")
            )
            full = {"id": tokens["data"]["id"], "status": "failed", "reason": "full"}
            await ws.send_message(msg("tts:tokens-result", "m3", full, call_sid="sid-1"))
            again = await recv(ws)
            assert again["command"] == "tts:tokens" and again["data"]["tokens"] == "c"
            ok = {"id": again["data"]["id"], "status": "ok"}
            await ws.send_message(msg("tts:tokens-result", "m4", ok, call_sid="sid-1"))
            assert (await recv(ws))["command"] == "tts:flush"
    assert results == [False, True]
