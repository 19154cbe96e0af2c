"""tts:tokens are answered like jambonz: tts:tokens-result, the full/paused/resumed cycle."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from jambonz_trio._protocol import TtsClearCommand, TtsTokensCommand
from jambonz_trio.testing import ProtocolViolation, TtsModel

from ._apps import SAY, AppSocket, TinyApp, started_call


async def _tokens(s: AppSocket, tid: Any, text: str) -> dict[str, Any]:
    await s.command("tts:tokens", {"id": tid, "tokens": text})
    return (await s.recv_type("tts:tokens-result"))["data"]  # type: ignore[no-any-return]


async def test_tokens_full_paused_resumed(autojump_clock: trio.abc.Clock) -> None:
    seen: list[Any] = []
    drained = trio.Event()

    async def app_side(app: TinyApp) -> None:
        s = await app.answered([{**SAY, "stream": True}])
        seen.append((await s.recv_type("tts:streaming-event"))["data"])
        seen.append(await _tokens(s, 1, "Hello there. " * 60))  # 780 chars
        await s.command("tts:tokens", {"id": 2, "tokens": "x" * 300})  # 1080 > 1000
        seen.append((await s.recv_type("tts:streaming-event"))["data"])
        seen.append((await s.recv_type("tts:tokens-result"))["data"])
        seen.append(await _tokens(s, 3, "y" * 300))  # still full: no second paused event
        await drained.wait()
        seen.append((await s.recv_type("tts:streaming-event"))["data"])
        seen.append(await _tokens(s, "4", "x" * 300))
        await s.command("tts:flush")
        await s.command("tts:clear")

    async with started_call(app_side) as fc:
        await fc.tts_streaming_event("stream_open")
        await fc.wait_idle(1)
        assert fc.tts_paused
        assert fc.tts_buffered == 780
        await fc.drain_tts(500)  # 280 left: above the low-water mark, still paused
        assert fc.tts_paused
        await fc.drain_tts(80)  # 200: resume
        assert not fc.tts_paused
        drained.set()
        await fc.wait_idle(1)
        assert fc.tts_buffered == 0  # cleared
        assert fc.tts_flushes == 1
        assert fc.tts_text == "Hello there. " * 60 + "x" * 300
        names = [c.name for c in fc.commands]
        assert names == ["tts:tokens"] * 4 + ["tts:flush", "tts:clear"]
        assert isinstance(fc.commands[0].command, TtsTokensCommand)
        assert isinstance(fc.commands[-1].command, TtsClearCommand)
        await fc.expect_no_command(within=0.1)  # tts:* stay out of the inbox
    assert seen == [
        {"event_type": "stream_open"},
        {"id": 1, "status": "ok"},
        {"event_type": "stream_paused"},
        {"id": 2, "status": "failed", "reason": "full"},
        {"id": 3, "status": "failed", "reason": "full"},
        {"event_type": "stream_resumed"},
        {"id": "4", "status": "ok"},
    ]


async def test_automatic_drain(autojump_clock: trio.abc.Clock) -> None:
    times: list[float] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered([{**SAY, "stream": True}])
        assert (await _tokens(s, 1, "a" * 900))["status"] == "ok"
        await s.command("tts:tokens", {"id": 2, "tokens": "b" * 200})
        t0 = trio.current_time()
        assert (await s.recv_type("tts:streaming-event"))["data"]["event_type"] == "stream_paused"
        assert (await s.recv_type("tts:tokens-result"))["data"]["reason"] == "full"
        assert (await s.recv_type("tts:streaming-event"))["data"]["event_type"] == "stream_resumed"
        times.append(trio.current_time() - t0)

    model = TtsModel(drain_per_second=100)
    async with started_call(app_side, tts=model) as fc:
        await fc.wait_idle(20)
        assert fc.tts_buffered == 0
    # 900 chars must drain to 200 at 100 chars/s
    assert times[0] == pytest.approx(7.0, abs=0.2)


async def test_token_edge_cases(autojump_clock: trio.abc.Clock) -> None:
    seen: list[Any] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered([{**SAY, "stream": True}])
        seen.append(await _tokens(s, 1, "   "))  # whitespace into an empty buffer
        seen.append(await _tokens(s, 2, ""))
        await s.command("tts:tokens", {"tokens": "no id"})  # nothing comes back
        await s.command("tts:tokens", {"id": 3, "tokens": "😀" * 501})  # 1002 UTF-16 units
        seen.append((await s.recv())["data"])
        seen.append((await s.recv())["data"])

    async with started_call(app_side) as fc:
        with pytest.raises(ProtocolViolation, match="tts:tokens data must be"):
            await fc.wait_idle(1)
        await fc.wait_idle(1)
    assert seen == [
        {"id": 1, "status": "ok"},
        {"id": 2, "status": "failed", "reason": "missing tokens"},
        {"event_type": "stream_paused"},
        {"id": 3, "status": "failed", "reason": "full"},
    ]


async def test_no_streaming_buffer(autojump_clock: trio.abc.Clock) -> None:
    seen: list[Any] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered([{**SAY, "stream": True}])
        seen.append(await _tokens(s, 7, "Hello."))

    async with started_call(app_side, tts=None) as fc:
        await fc.wait_idle(1)
    assert seen == [{"id": 7}]
