"""AudioStream: receiving, sending, events, limits, closes and containment (docs/protocol.md §13),
driven by the fake media server (and a raw client where the fake would be too polite)."""

from __future__ import annotations

import json
import logging
import tracemalloc
from array import array

import pytest
import trio
import trio.lowlevel
import trio.testing
import trio_websocket
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection

from jambonz_trio import AudioRoute, AudioStream, JambonzServer, LocalProtocolError, ServerConfig
from jambonz_trio.audio import (
    AudioCloseInfo,
    AudioConfig,
    AudioHandler,
    AudioStreamClosed,
    Dtmf,
    MarkEvent,
    PlayDone,
)
from jambonz_trio.testing import AudioSource, CallData, open_fake_audio_stream

from ..engine.helpers import RawClient
from .helpers import CLIPS, Spy, listen, raw_client, spied_client, start_server

SECOND = AudioSource.tone(seconds=1.0)


async def test_typed_metadata_in_the_handler(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[AudioStream] = []

    async def handler(stream: AudioStream) -> None:
        seen.append(stream)

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=handler)])
    call = CallData(from_="+4930123", customer_data={"tier": "gold"})
    verb = listen(metadata={"agent": "bob", "lang": "de"}, mix_type="stereo")
    async with open_fake_audio_stream(server.connect_memory, verb, call=call) as fake:
        await fake.wait_closed()  # the handler returned: the app closed with 1000
    (stream,) = seen
    meta = stream.metadata
    assert (stream.call_sid, stream.sample_rate, stream.mix_type, stream.channels) == (
        call.call_sid,
        8000,
        "stereo",
        2,
    )
    assert (meta.call.from_, meta.call.direction, meta.call.call_status, meta.call.customer_data) == (
        "+4930123",
        "inbound",
        "in-progress",
        {"tier": "gold"},
    )
    assert meta.custom == {"agent": "bob", "lang": "de"}  # merged at the top level by jambonz
    assert stream.path == "/audio" and stream.identity.route == "/audio"
    assert fake.closed_by == "app" and fake.close_code == 1000


async def test_echo_is_byte_exact_and_counted(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    streams: list[AudioStream] = []

    async def echo(stream: AudioStream) -> None:
        streams.append(stream)
        async for chunk in stream:
            await stream.send_audio(chunk)

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=echo)])
    async with open_fake_audio_stream(server.connect_memory, listen()) as fake:
        frames = await fake.feed(SECOND)
        await trio.sleep(0.5)
        assert fake.played == SECOND.pcm
    stats = streams[0].statistics()
    assert (stats.frames_in, stats.bytes_in) == (frames, len(SECOND.pcm))
    assert (stats.frames_out, stats.bytes_out, stats.messages_out) == (frames, len(SECOND.pcm), 0)
    assert stats.dropped_frames == 0 and stats.buffered_bytes == 0
    assert streams[0].close_info is not None and streams[0].close_info.by == "jambonz"


async def _binary_frames_sent(nursery: trio.Nursery, app: AudioHandler) -> list[bytes]:
    """The binary frames ``app`` sends on an audio socket (a streaming 8 kHz listen's) until it
    closes, read by an independent websocket client (5 s at most)."""
    got: list[bytes] = []
    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with spied_client(server) as (ws, _spy):
        await ws.send_message(json.dumps({"callSid": "cs-1", "sampleRate": 8000}))
        with trio.move_on_after(5):
            while True:
                try:
                    message = await ws.get_message()
                except trio_websocket.ConnectionClosed:
                    break
                if isinstance(message, bytes):
                    got.append(message)
    return got


async def test_send_audio_sends_no_sample_the_media_server_takes_for_a_mark(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A -1 sample in streamed audio is what mod_audio_fork puts in its buffer for a mark
    (tests/protocol/test_audio.py): the app's -1 goes out as -2; the rest is unchanged."""

    async def app(stream: AudioStream) -> None:
        await stream.send_audio(array("h", [0, -1, 5, -1, -1, 7]).tobytes())

    got = await _binary_frames_sent(nursery, app)
    assert got == [array("h", [0, -2, 5, -2, -2, 7]).tobytes()]


async def test_send_audio_measures_a_memoryview_in_bytes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """send_audio takes ``bytes | bytearray | memoryview`` and checks whole sample frames by
    the byte length: for a memoryview of 16-bit samples (``array('h')``, a numpy int16
    buffer) ``len()`` counts samples, and 161 samples (322 bytes) were refused as "161 bytes
    is not a whole number of 16-bit 1-channel sample frames"."""
    errors: list[Exception] = []

    async def app(stream: AudioStream) -> None:
        try:
            await stream.send_audio(memoryview(array("h", [1] * 161)))
        except Exception as exc:
            errors.append(exc)

    got = await _binary_frames_sent(nursery, app)
    assert errors == [], errors
    assert got == [array("h", [1] * 161).tobytes()]


async def test_slow_consumer_drops_the_oldest_and_memory_stays_bounded(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A consumer that falls behind loses the oldest audio, counted; what it then reads is
    the newest; the buffer never holds more than its bound (0.5 s here) plus one frame."""
    ready, done = trio.Event(), trio.Event()
    got: list[bytes] = []
    streams: list[AudioStream] = []

    async def sleepy(stream: AudioStream) -> None:
        streams.append(stream)
        await ready.wait()  # reads nothing while 3 s of audio arrive
        got.extend([chunk async for chunk in stream])
        done.set()

    config = ServerConfig(audio=AudioConfig(buffer_seconds=0.5))
    server = await start_server(nursery, [AudioRoute(path="/audio", handler=sleepy)], config)
    source = AudioSource.tone(seconds=3.0)
    async with open_fake_audio_stream(server.connect_memory, listen()) as fake:
        await fake.feed(source, pace=None)
        await trio.sleep(0.1)
        stats = streams[0].statistics()
        assert stats.buffered_bytes <= 8000 + 320  # 0.5 s at 16,000 bytes/s, plus a frame
        assert stats.dropped_bytes + stats.buffered_bytes == len(source.pcm)
        assert stats.dropped_frames == 150 - 25
        ready.set()
    await done.wait()
    assert b"".join(got) == source.pcm[-8000:]  # the newest half second, in order


async def test_tiny_frames_keep_memory_within_twice_the_audio_buffer_bound(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Each buffered frame costs ~41-56 bytes beyond its payload (a ``bytes`` header and a deque
    slot), so the inbound buffer charges every chunk at least ``CHUNK_OVERHEAD`` (64) bytes.
    2-byte frames (7 bytes on the wire each; audio sockets have no inbound pacing) to an app
    that does not read then hold under twice the bound in memory; counting payload only,
    they held 32,768 objects, over 20 times the bound (1.4 MB for 64 KiB; ~22 MB at
    ``max_buffered_bytes``, which sampleRate 384000 stereo reaches)."""
    streams: list[AudioStream] = []

    async def never_reads(stream: AudioStream) -> None:
        streams.append(stream)
        await stream.wait_closed()

    bound = 64 * 1024
    config = ServerConfig(audio=AudioConfig(max_buffered_bytes=bound))
    server = await start_server(nursery, [AudioRoute(path="/audio", handler=never_reads)], config)
    client = RawClient(await server.connect_memory())
    await client.handshake("/audio", subprotocols=["audio.drachtio.org"])
    await client.send_text(json.dumps({"callSid": "cs-1", "sampleRate": 384000, "mixType": "stereo"}))
    await trio.sleep(0.1)
    frames = b"".join(client.ws.send(BytesMessage(data=b"\x01\x00")) for _ in range(40_000))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(0, len(frames), 65536):
            await client.stream.send_all(frames[i : i + 65536])
        await trio.sleep(1)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del frames
    stats = streams[0].statistics()
    assert stats.buffered_bytes <= bound
    assert held < 2 * bound, (
        f"{held} bytes held for {stats.buffered_bytes} buffered ({stats.buffered_frames} frames)"
    )


async def test_receive_is_cancellation_safe(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    got: list[bytes] = []

    async def picky(stream: AudioStream) -> None:
        for _ in range(50):
            with trio.move_on_after(0.003):  # often cancelled while waiting
                got.append(await stream.receive_audio())
        got.extend([chunk async for chunk in stream])

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=picky)])
    async with open_fake_audio_stream(server.connect_memory, listen()) as fake:
        await fake.feed(SECOND)
    await trio.sleep(1)
    assert b"".join(got) == SECOND.pcm  # nothing lost, nothing reordered


async def test_events_dtmf_play_done_and_marks(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[object] = []
    clip_ids: list[str] = []

    async def app(stream: AudioStream) -> None:
        clip_ids.append(await stream.play(SECOND.pcm, id="hello"))  # non-streaming listen: playAudio
        clip_ids.append(await stream.play(SECOND.pcm, queue=True))
        async for event in stream.events():
            events.append(event)

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with open_fake_audio_stream(server.connect_memory, listen(bidi=CLIPS, pass_dtmf=True)) as fake:
        await fake.send_dtmf("7", duration=800)
        await trio.sleep(3)
        assert [c.id for c in fake.clips] == ["hello", "jt-play-1"]
        assert fake.clips[0].audio == SECOND.pcm and fake.clips[0].sample_rate == 8000
    assert clip_ids == ["hello", "jt-play-1"]
    assert events[0] == Dtmf(digit="7", duration=800)
    assert events[1:] == [
        PlayDone(id="hello", playback_seconds=1.0, playback_milliseconds=1000, last_offset_pos=8000),
        PlayDone(id="jt-play-1", playback_seconds=1.0, playback_milliseconds=1000, last_offset_pos=8000),
    ]


async def test_the_event_queue_is_bounded_in_bytes_too(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Events nobody reads are bounded by ``max_event_bytes`` as well as by count: 20 unknown
    messages of 60,000 characters (each within ``max_text_bytes``) keep only the newest four
    within 256 KiB (the count bound, 256, held all 20: 1.2 MB of text, 16 MiB at worst); the
    others are dropped oldest first and counted."""
    streams: list[AudioStream] = []
    read: list[object] = []
    go = trio.Event()

    async def app(stream: AudioStream) -> None:
        streams.append(stream)
        await go.wait()
        async for event in stream.events():
            read.append(event)

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with raw_client(server, metadata={"callSid": "cs-1", "sampleRate": 8000}) as ws:
        for i in range(20):
            await ws.send_message(json.dumps({"type": "big", "i": i, "pad": "x" * 60_000}))
        await trio.sleep(1)
        stats = streams[0].statistics()
        assert (stats.events_in, stats.events_dropped) == (20, 16)
        go.set()
        await trio.sleep(1)
    assert [event.raw["i"] for event in read] == [16, 17, 18, 19]  # type: ignore[attr-defined]


async def test_marks_play_out_or_are_cleared(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[object] = []

    async def app(stream: AudioStream) -> None:
        await stream.send_audio(SECOND.pcm)
        await stream.mark("after-one-second")
        await stream.send_audio(SECOND.pcm)
        await stream.mark("after-two-seconds")
        events.append(await stream.next_event())  # the first plays out after 1 s
        await stream.kill_audio()  # the second is cleared
        events.append(await stream.next_event())
        await stream.mark("m3")
        await stream.clear_marks()  # no event for m3
        await stream.send_audio(SECOND.pcm)
        await stream.mark("m4")
        events.append(await stream.next_event())

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with open_fake_audio_stream(server.connect_memory, listen()) as fake:
        with trio.fail_after(10):
            await fake.wait_closed()
    assert events == [
        MarkEvent(name="after-one-second", event="playout"),
        MarkEvent(name="after-two-seconds", event="cleared"),
        MarkEvent(name="m4", event="playout"),
    ]
    assert fake.kill_audio_count == 1 and fake.clear_marks_count == 1
    assert fake.violations == []


async def test_mark_limits_are_local_errors(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    errors: list[str] = []

    async def app(stream: AudioStream) -> None:
        for bad in ('say "hi"', "back\\slash", ""):
            with pytest.raises(LocalProtocolError):
                await stream.mark(bad)
        await stream.send_audio(SECOND.pcm * 10)  # nothing plays out for 10 s
        for i in range(30):
            await stream.mark(f"m{i}")
        with pytest.raises(LocalProtocolError, match="30 marks") as info:
            await stream.mark("one too many")
        errors.append(str(info.value))

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with open_fake_audio_stream(server.connect_memory, listen()) as fake:
        await fake.wait_closed()
    assert errors and len(fake.marks) == 30 and fake.violations == []


async def test_a_mark_reported_before_its_write_returns_is_not_left_pending(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A mark counts as pending from before its write: the reader uncounts it when jambonz
    reports it, even if that happens before the write returns (the write yields once more
    after the bytes left; with nothing buffered the media server reports a mark within one
    20 ms frame). Then 30 marks that stay pending are all accepted, as jambonz keeps 30
    (MAF lws_glue.cpp:43-50, :306); counted after the write, the first stayed counted and
    the 30th was refused ("30 marks already pending")."""
    errors: list[Exception] = []
    played: list[object] = []
    spies: list[Spy] = []

    async def app(stream: AudioStream) -> None:
        spy = spies[0]

        async def consume() -> None:
            async for event in stream.events():
                played.append(event)
                spy.slow.set()  # the event was read: let the mark's write return

        async with trio.open_nursery() as inner:
            inner.start_soon(consume)
            await stream.mark("m0")  # played out at once (nothing buffered)
            spy.slow_send = None
            try:
                for i in range(1, 31):  # 30 marks that stay pending: jambonz keeps all 30
                    await stream.mark(f"m{i}")
            except Exception as exc:
                errors.append(exc)
            inner.cancel_scope.cancel()

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with spied_client(server) as (ws, spy):
        spies.append(spy)
        spy.slow_send = lambda data: b'"type":"mark"' in data
        await ws.send_message(json.dumps({"callSid": "cs-1", "sampleRate": 8000}))
        message = json.loads(await ws.get_message())
        assert message == {"type": "mark", "data": {"name": "m0"}}
        await ws.send_message(json.dumps({"type": "mark", "data": {"name": "m0", "event": "playout"}}))
        with trio.move_on_after(10):
            while True:
                try:
                    await ws.get_message()
                except trio_websocket.ConnectionClosed:
                    break  # the handler is done
    assert len(played) == 1
    assert errors == [], f"mark() refused with 29 marks pending at jambonz: {errors}"


async def _marks_accepted(stream: AudioStream, *, first: int) -> int:
    """Send marks ``m<first>``, ``m<first+1>``... until ``mark`` refuses one (31 at most):
    how many it accepted."""
    for n in range(31):
        try:
            await stream.mark(f"m{first + n}")
        except LocalProtocolError:
            return n
    return 31


async def test_a_mark_sent_while_clear_marks_is_writing_stays_counted(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """``clear_marks`` is writing ``clearMarks`` (a slow socket) when another task sends
    ``mark("x")``: its frame goes out after ``clearMarks``, so jambonz keeps ``x``, and the
    count must too: 29 more marks are accepted, the 30th is refused (jambonz would drop it
    silently). ``clear_marks`` zeroing the count after its write returned forgot ``x``."""
    spies: list[Spy] = []
    accepted: list[int] = []

    async def app(stream: AudioStream) -> None:
        spy = spies[0]
        async with trio.open_nursery() as inner:
            inner.start_soon(stream.clear_marks)
            await trio.testing.wait_all_tasks_blocked()  # clearMarks is being written
            inner.start_soon(stream.mark, "x")
            await trio.testing.wait_all_tasks_blocked()  # the mark waits behind it
            spy.slow.set()
        accepted.append(await _marks_accepted(stream, first=1))
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
    assert accepted == [29], f"{accepted} more marks accepted with x pending at jambonz"


async def test_a_stale_mark_report_after_clear_marks_does_not_uncount_a_newer_mark(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """jambonz reported ``old`` (played out) before it read ``clearMarks``; the report arrives
    after ``clear_marks`` and after a newer mark ``m1``. It must not take ``m1`` off the count:
    jambonz holds m1..m30 then, and the 31st mark would be dropped silently (MAF keeps 30,
    lws_glue.cpp:43-50), so ``mark`` must refuse it. Counted as a number, the stale report
    uncounted ``m1`` and the 31st was accepted."""
    accepted: list[int] = []
    stale: list[object] = []

    async def app(stream: AudioStream) -> None:
        await stream.mark("old")
        await stream.clear_marks()
        await stream.mark("m1")
        stale.append(await stream.next_event())
        accepted.append(await _marks_accepted(stream, first=2))
        await stream.wait_closed()

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with spied_client(server) as (ws, _spy):
        await ws.send_message(json.dumps({"callSid": "cs-1", "sampleRate": 8000}))
        sent = [json.loads(await ws.get_message()) for _ in range(3)]
        assert [m["type"] for m in sent] == ["mark", "clearMarks", "mark"]
        await ws.send_message(json.dumps({"type": "mark", "data": {"name": "old", "event": "playout"}}))
        with trio.move_on_after(5):
            while True:
                await ws.get_message()
    assert stale == [MarkEvent(name="old", event="playout")]
    assert accepted == [29], f"{accepted} more marks accepted with m1 pending at jambonz"


async def test_mode_checks_of_a_listen_the_library_started(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """send_audio / play refuse what jambonz would discard, when the verb's mode is known."""
    checked = trio.Event()

    async def app(stream: AudioStream) -> None:
        stream.bidirectional = CLIPS
        with pytest.raises(LocalProtocolError, match=r"streaming.*listen\(\.\.\., bidirectional=True\)"):
            await stream.send_audio(b"\x00\x00")  # the error names the option that fixes it
        with pytest.raises(LocalProtocolError, match=r"stream audio back.*report the mark"):
            await stream.mark("never-played")  # the module reports marks only when streaming
        stream.bidirectional = listen().bidirectional_audio
        with pytest.raises(LocalProtocolError, match=r"playAudio.*bidirectional=True, streaming=False"):
            await stream.play(b"\x00\x00")
        with pytest.raises(LocalProtocolError, match="whole number"):
            await stream.send_audio(b"\x00")
        await stream.send_audio(b"")  # ignored, as jambonz ignores empty frames
        checked.set()

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with open_fake_audio_stream(server.connect_memory, listen()) as fake:
        await fake.wait_closed()  # the handler returned (or failed a check): the stream closed
    assert checked.is_set()
    assert fake.frames_from_app == 0 and fake.marks == []


async def test_jambonz_ending_the_listen_ends_the_stream(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    done = trio.Event()
    infos: list[object] = []

    async def app(stream: AudioStream) -> None:
        async for _chunk in stream:
            pass
        infos.append(stream.close_info)
        with pytest.raises(AudioStreamClosed):
            await stream.send_audio(b"\x00\x00")
        with pytest.raises(AudioStreamClosed):
            await stream.next_event()
        done.set()

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with open_fake_audio_stream(server.connect_memory, listen()) as fake:
        await fake.feed(SECOND, pace=None)
        await fake.stop("max-length")
    await done.wait()
    (info,) = infos
    assert info is not None and (info.code, info.by) == (1000, "jambonz")  # type: ignore[attr-defined]


async def test_disconnect_asks_jambonz_to_end_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    results: list[object] = []

    async def app(stream: AudioStream) -> None:
        results.append(await stream.disconnect())

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with open_fake_audio_stream(server.connect_memory, listen()) as fake:
        await fake.wait_closed()  # jambonz ended the verb and closed the socket
        assert (fake.ended, fake.closed_by) == ("disconnect", "jambonz")
    (info,) = results
    assert info.by == "jambonz" and info.code == 1000  # type: ignore[attr-defined]


async def test_a_failing_handler_is_contained(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(stream: AudioStream) -> None:
        raise RuntimeError("boom")

    async def echo(stream: AudioStream) -> None:
        async for chunk in stream:
            await stream.send_audio(chunk)

    server = await start_server(
        nursery, [AudioRoute(path="/broken", handler=broken), AudioRoute(path="/echo", handler=echo)]
    )
    with caplog.at_level(logging.ERROR, "jambonz_trio.audio"):
        async with open_fake_audio_stream(server.connect_memory, listen("/broken")) as bad:
            await bad.wait_closed()
    assert (bad.closed_by, bad.close_code) == ("app", 1011)
    assert "handler raised" in caplog.text
    async with open_fake_audio_stream(server.connect_memory, listen("/echo")) as good:
        await good.feed(SECOND, pace=None)
        await trio.sleep(0.1)
        assert good.played == SECOND.pcm


async def test_binary_first_frame_means_no_metadata(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[AudioStream] = []
    got: list[bytes] = []

    async def app(stream: AudioStream) -> None:
        seen.append(stream)
        got.append(await stream.receive_audio())

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with raw_client(server, metadata=b"\x01\x00\x02\x00") as ws:
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()
    assert got == [b"\x01\x00\x02\x00"]
    assert not seen[0].metadata.complete and seen[0].call_sid is None and seen[0].sample_rate == 8000


async def test_cut_metadata_still_names_the_call(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[AudioStream] = []

    async def app(stream: AudioStream) -> None:
        seen.append(stream)

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    full = json.dumps({"sampleRate": 16000, "mixType": "mono", "callSid": "cs-1", "blob": "x" * 9000})
    with caplog.at_level(logging.WARNING, "jambonz_trio.audio"):
        async with raw_client(server, metadata=full.encode()[:8192].decode()) as ws:
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
    assert (seen[0].call_sid, seen[0].sample_rate, seen[0].metadata.complete) == ("cs-1", 16000, False)
    assert "cut at 8192 bytes" in caplog.text


async def test_no_metadata_in_time_is_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def never(stream: AudioStream) -> None:
        raise AssertionError("no stream without metadata")

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=never)])
    async with raw_client(server) as ws:
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()
        assert ws.closed is not None and ws.closed.code == 1008
        assert trio.current_time() >= ServerConfig().audio.first_message_timeout


async def test_unclaimed_stream_without_handler_is_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(nursery, [AudioRoute(path="/audio")])
    async with open_fake_audio_stream(server.connect_memory, listen()) as fake:
        await fake.wait_closed()
    assert (fake.closed_by, fake.close_code) == ("app", 1008)


async def test_audio_log_lines_name_the_path_without_its_query_string(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/operations.md ("Per-call log context"): paths are logged without their query
    string, which may carry a token (docs/security.md suggests a query token checked by an
    authenticator, and the library's own ``jt_listen`` token is one). The "no metadata in
    time" and "no handler takes it" lines logged the whole request target."""
    secret = "s3cr3t-query-token"
    server = await start_server(nursery, [AudioRoute(path="/audio")])  # no handler
    with caplog.at_level(logging.INFO, "jambonz_trio"):
        async with spied_client(server, f"/audio?key={secret}") as (ws, _spy):
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()  # no metadata in time: closed 1008
        async with spied_client(server, f"/audio?key={secret}") as (ws, _spy):
            await ws.send_message(json.dumps({"callSid": "cs-1"}))
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()  # no handler: closed 1008
    assert "no handler" in caplog.text and "no metadata" in caplog.text
    assert secret not in caplog.text


@pytest.mark.parametrize(("frame", "limit"), [("x" * 70_000, "text"), (b"\x00" * 3_000_000, "binary")])
async def test_frames_over_their_own_limits_close_with_1009(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, frame: str | bytes, limit: str
) -> None:
    async def app(stream: AudioStream) -> None:
        async for _ in stream:
            pass

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with raw_client(server, metadata={"callSid": "c"}) as ws:
        await ws.send_message(b"\x00" * 1_000_000)  # a big audio frame is fine (MAF's buffer)
        await ws.send_message(frame)
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()
        assert ws.closed is not None and ws.closed.code == 1009


async def _reading_server(nursery: trio.Nursery) -> tuple[JambonzServer, list[AudioStream]]:
    """A server whose ``/audio`` handler reads its stream to the end; the streams it got."""
    streams: list[AudioStream] = []

    async def app(stream: AudioStream) -> None:
        streams.append(stream)
        async for _ in stream:
            pass

    return await start_server(nursery, [AudioRoute(path="/audio", handler=app)]), streams


async def test_a_close_the_server_makes_for_a_frame_over_its_limit_is_by_the_server(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A text frame over ``max_text_bytes``: the server's websocket closes with 1009 and the
    stream records ``by="server"``, not ``jambonz`` ("the listen ended"), so the app can tell
    a limit it hit from jambonz ending the verb."""
    server, streams = await _reading_server(nursery)
    async with spied_client(server) as (ws, _spy):
        await ws.send_message(json.dumps({"callSid": "cs-1", "sampleRate": 8000}))
        await ws.send_message("x" * 70_000)
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()
        assert ws.closed is not None and ws.closed.code == 1009
    info = streams[0].close_info
    assert info is not None and info.code == 1009
    assert info.by != "jambonz", f"the server's own 1009 recorded as {info}"


async def test_a_blocked_write_is_never_cut_by_the_caller(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Back-pressure: send_audio blocks while the peer does not read. Cancelling the sender
    meanwhile does not cut the frame (the write is shielded): once the peer reads again, every
    frame arrives whole and the socket carries on."""
    returned: list[float] = []
    frames = [bytes([i, 0]) * 50_000 for i in range(1, 5)]

    async def app(stream: AudioStream) -> None:
        await stream.send_audio(frames[0])  # read by the client's reader, queued
        await stream.send_audio(frames[1])  # read, then the reader waits for queue space
        with trio.move_on_after(0.5):
            await stream.send_audio(frames[2])  # blocked: nobody reads
        returned.append(trio.current_time())
        await stream.send_audio(frames[3])
        await stream.wait_closed()

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with raw_client(server, metadata={"callSid": "c"}, lockstep=True, queue_size=1) as ws:
        await trio.sleep(3)  # the client reads nothing for 3 s
        got = [await ws.get_message() for _ in frames]
    assert got == frames
    assert returned[0] >= 3  # the write outlived the caller's 0.5 s deadline


async def test_a_peer_that_stops_reading_is_cut_off(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A write blocked for send_timeout aborts the socket: the sender gets AudioStreamClosed
    (after the timeout, not after its own shorter deadline) and the stream is gone."""
    outcome: list[tuple[AudioStreamClosed, float]] = []
    done = trio.Event()

    async def app(stream: AudioStream) -> None:
        await stream.send_audio(b"\x01\x00" * 1000)
        await stream.send_audio(b"\x02\x00" * 1000)
        try:
            with trio.move_on_after(0.5):
                await stream.send_audio(b"\x03\x00" * 200_000)
        except AudioStreamClosed as exc:
            outcome.append((exc, trio.current_time()))
        done.set()

    config = ServerConfig(audio=AudioConfig(send_timeout=2.0))
    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)], config)
    async with raw_client(server, metadata={"callSid": "c"}, lockstep=True, queue_size=1):
        with trio.fail_after(30):
            await done.wait()
        await trio.sleep(1)
        assert len(server.audio_streams) == 0  # aborted, not waiting for this client
    exc, when = outcome[0]
    assert "timed out" in str(exc) and when >= 2.0


async def test_drain_closes_audio_streams(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def app(stream: AudioStream) -> None:
        async for _ in stream:
            pass

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with open_fake_audio_stream(server.connect_memory, listen()) as fake:
        await fake.send_audio(b"\x00\x00")
        await trio.sleep(0.1)
        assert server.statistics().audio_streams == 1
        await server.drain(grace=1)
        await fake.wait_closed()
    assert (fake.closed_by, fake.close_code) == ("app", 1001)
    assert server.statistics().audio_streams == 0


async def test_a_drain_closes_streams_as_the_server_not_the_app(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """``drain`` closes the open streams with ``close_info.by == "server"``, as AudioCloseInfo
    documents for a shutdown (it recorded ``app``: the app was told it closed a stream it
    never touched)."""
    server, streams = await _reading_server(nursery)
    async with spied_client(server) as (ws, _spy):
        await ws.send_message(json.dumps({"callSid": "cs-1", "sampleRate": 8000}))
        await trio.sleep(0.1)
        await server.drain(grace=1, code=1012)
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()
    info = streams[0].close_info
    assert info is not None and info.code == 1001
    assert info.by == "server", f"drain recorded {info}"


async def test_registry_by_call_sid(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """A task waiting for a call's stream takes it instead of the route's handler; live
    streams are listed by call sid."""
    handled: list[str | None] = []

    async def handler(stream: AudioStream) -> None:
        handled.append(stream.call_sid)

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=handler)])
    call = CallData()
    taken: list[AudioStream] = []

    async def waiter() -> None:
        stream = await server.audio_streams.wait_stream(call.call_sid)
        taken.append(stream)
        assert server.audio_streams.get(call.call_sid) is stream
        assert list(server.audio_streams) == [stream]
        async for chunk in stream:
            await stream.send_audio(chunk)

    nursery.start_soon(waiter)
    await trio.sleep(0.1)
    async with open_fake_audio_stream(server.connect_memory, listen(), call=call) as fake:
        await fake.feed(SECOND, pace=None)
        await trio.sleep(0.1)
        assert fake.played == SECOND.pcm
    async with open_fake_audio_stream(server.connect_memory, listen(), call=CallData()) as other:
        await other.wait_closed()
    assert len(taken) == 1 and taken[0].call_sid == call.call_sid
    assert handled == [other.metadata["callSid"]]  # the other call's stream went to the handler
    assert server.audio_streams.get(call.call_sid) is None


async def test_a_stream_handed_to_a_waiter_cancelled_in_the_same_turn_goes_to_the_handler(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A waiter whose deadline expires (or whose scope is cancelled) in the scheduling turn
    its stream is handed to it takes nothing, and the stream goes on as if it had not waited:
    to the route's handler. (Before, wait_stream raised Cancelled with the stream delivered,
    and the stream belonged to nobody: no handler ran, nobody read or closed it.)"""
    handled: list[AudioStream] = []
    taken: list[AudioStream] = []

    async def handler(stream: AudioStream) -> None:
        handled.append(stream)

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=handler)])
    waiter_scope = trio.CancelScope()

    async def waiter() -> None:
        with waiter_scope:  # e.g. a move_on_after whose deadline is now
            taken.append(await server.audio_streams.wait_stream("cs-1"))

    nursery.start_soon(waiter)
    await trio.sleep(0.1)

    async with spied_client(server) as (ws, spy):

        def cancel_the_waiter(data: bytes) -> None:
            if spy.upgraded and data:  # the metadata frame has just been read
                waiter_scope.cancel()

        spy.after_receive = cancel_the_waiter
        await ws.send_message(json.dumps({"callSid": "cs-1", "sampleRate": 8000}))
        await trio.sleep(5)
        still_open = ws.closed is None
    assert waiter_scope.cancelled_caught and not taken
    # either the handler got it, or it was closed: not left open with no owner
    assert handled or not still_open, "the stream was handed to a cancelled waiter and lost"


@pytest.mark.parametrize("second_waiter", [True, False])
async def test_a_stream_given_back_by_a_cancelled_waiter_goes_to_the_next_waiter_or_is_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, second_waiter: bool
) -> None:
    """The first of two waiters is cancelled in the scheduling turn its stream is handed to
    it: the second takes the stream; with no second waiter and no route handler, the stream
    is closed (1008, by the server), never left open with no owner."""
    taken: list[AudioStream] = []
    first_scope = trio.CancelScope()

    async def first() -> None:
        with first_scope:
            taken.append(await server.audio_streams.wait_stream("cs-1"))

    async def second() -> None:
        stream = await server.audio_streams.wait_stream("cs-1")
        taken.append(stream)
        await stream.aclose()

    server = await start_server(nursery, [AudioRoute(path="/audio")])
    nursery.start_soon(first)
    await trio.sleep(0.1)
    if second_waiter:
        nursery.start_soon(second)
        await trio.sleep(0.1)
    async with spied_client(server) as (ws, spy):

        def cancel_the_first(data: bytes) -> None:
            if spy.upgraded and data:
                first_scope.cancel()

        spy.after_receive = cancel_the_first
        await ws.send_message(json.dumps({"callSid": "cs-1", "sampleRate": 8000}))
        with trio.move_on_after(5):
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
        closed = ws.closed
    assert first_scope.cancelled_caught
    assert closed is not None, "the stream was left open with no owner"
    if second_waiter:
        assert len(taken) == 1 and closed.code == 1000  # the second waiter took it and closed it
    else:
        assert taken == [] and closed.code == 1008


async def test_a_handler_ended_by_the_streams_end_is_not_an_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler whose send raises AudioStreamClosed because jambonz went away (the echo bot
    on a hangup) ends quietly; the same exception on an open stream is still a failure."""
    ended = trio.Event()

    async def pusher(stream: AudioStream) -> None:
        try:
            while True:
                await stream.send_audio(b"\x00\x00" * 160)
                await trio.sleep(0.02)
        finally:
            ended.set()

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=pusher)])
    with caplog.at_level(logging.WARNING, "jambonz_trio.audio"):
        async with raw_client(server, metadata={"callSid": "c"}) as ws:
            await ws.get_message()
            await ws.aclose(1000)
        await ended.wait()
        await trio.sleep(0.1)
    assert "handler raised" not in caplog.text


async def test_a_send_while_frames_before_jambonz_close_are_handed_out_sees_jambonz_close(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """jambonz ends the listen with audio frames still unread before its Close (one read holds
    them all: a busy app). While the reader hands those frames out, an echo's send raises the
    stream's real end (jambonz, 1000), the handler ends quietly, and the stream is not
    recorded as closed by the app with 1011."""
    errors: list[AudioStreamClosed] = []
    streams: list[AudioStream] = []

    async def echo(stream: AudioStream) -> None:
        streams.append(stream)
        try:
            async for chunk in stream:
                await stream.send_audio(chunk)
        except AudioStreamClosed as exc:
            errors.append(exc)
            raise

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=echo)])
    client = RawClient(await server.connect_memory())
    await client.handshake("/audio", subprotocols=["audio.drachtio.org"])
    await client.send_text(json.dumps({"callSid": "c", "sampleRate": 8000}))
    await trio.sleep(0.1)
    frames = b"".join(client.ws.send(BytesMessage(data=b"\x01\x00" * 160)) for _ in range(10))
    with caplog.at_level(logging.WARNING, "jambonz_trio.audio"):
        await client.stream.send_all(frames + client.ws.send(CloseConnection(code=1000)))
        await trio.sleep(1)
    (stream,) = streams
    assert stream.close_info == AudioCloseInfo(code=1000, reason="closed by jambonz", by="jambonz")
    (error,) = errors
    assert error.code == 1000 and "jambonz" in str(error)
    assert "handler raised" not in caplog.text


async def test_a_peer_close_reason_is_made_safe_in_the_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The close reason is the peer's: in AudioStreamClosed's text (which an app may let escape
    into a logged traceback) it is escaped and capped."""
    errors: list[str] = []
    done = trio.Event()

    async def app(stream: AudioStream) -> None:
        await stream.wait_closed()
        try:
            await stream.next_event()
        except AudioStreamClosed as exc:
            errors.append(str(exc))
        done.set()

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with raw_client(server, metadata={"callSid": "c"}) as ws:
        await ws.aclose(4000, "line one\nline two" + "x" * 100)
    await done.wait()
    (text,) = errors
    assert "\n" not in text and "line one\\nline two" in text


# -- keepalive: a peer gone without closing ------------------------------------------------------


async def _audio_client(server: JambonzServer, *, auto_pong: bool) -> RawClient:
    client = RawClient(await server.connect_memory(), auto_pong=auto_pong)
    accepted = await client.handshake("/audio", subprotocols=["audio.drachtio.org"])
    assert isinstance(accepted, AcceptConnection)
    await client.send_text(json.dumps({"callSid": "c", "sampleRate": 8000}))
    await client.send_bytes(b"\x01\x00" * 160)
    return client


async def test_a_peer_that_stops_answering_pings_is_cut_off(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The media server's host vanishes (no FIN, nothing more read or answered): the keepalive
    Pings, gets no Pong within ping_timeout, aborts the socket; the handler's ``async for``
    ends and the stream says why (before: the stream lived for ever)."""
    ended: list[tuple[float, int, AudioCloseInfo | None]] = []
    done = trio.Event()

    async def app(stream: AudioStream) -> None:
        chunks = 0
        async for _chunk in stream:
            chunks += 1
        ended.append((trio.current_time(), chunks, stream.close_info))
        done.set()
        with pytest.raises(AudioStreamClosed, match="ping timeout"):
            await stream.next_event()

    config = ServerConfig(audio=AudioConfig(ping_interval=20.0, ping_timeout=10.0))
    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)], config)
    start = trio.current_time()
    client = await _audio_client(server, auto_pong=False)  # never reads again: no Pong
    with trio.fail_after(120):
        await done.wait()
    when, chunks, info = ended[0]
    assert chunks == 1
    assert info == AudioCloseInfo(code=1006, reason="ping timeout", by="lost")
    assert 30.0 <= when - start <= 31.0  # the Ping at 20 s, no Pong by 30 s
    await trio.sleep(1)
    assert len(server.audio_streams) == 0
    assert "no pong within 10.0 s" in caplog.text
    del client


async def test_a_peer_that_answers_pings_keeps_its_stream(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A live peer (its websocket library answers Pings, as the media server's does) is pinged
    every ping_interval and never cut off, even when it sends nothing."""
    config = ServerConfig(audio=AudioConfig(ping_interval=5.0, ping_timeout=2.0))
    got: list[AudioStream] = []

    async def app(stream: AudioStream) -> None:
        got.append(stream)
        await stream.wait_closed()

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)], config)
    client = await _audio_client(server, auto_pong=True)

    async def read() -> None:
        while True:
            await client.answer_receipt()  # reads one frame; answers a Ping

    async with trio.open_nursery() as inner:
        inner.start_soon(read)
        await trio.sleep(100)
        assert client.pings >= 19  # one every 5 s (after each Pong)
        assert len(server.audio_streams) == 1 and got[0].close_info is None
        inner.cancel_scope.cancel()


def test_audio_keepalive_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="ping_interval"):
        AudioConfig(ping_interval=0)
    with pytest.raises(ValueError, match="ping_timeout"):
        AudioConfig(ping_timeout=-1.0)
