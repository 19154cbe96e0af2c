"""Fresh-eyes review of the audio-stream side (rev-audio): each test shows one defect and fails
until it is fixed."""

from __future__ import annotations

import base64
import json
import logging
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import trio_websocket
from wsproto.events import BytesMessage

from jambonz_trio import AudioRoute, AudioStream, BasicAuth, Call, JambonzServer, Route, ServerConfig
from jambonz_trio.audio import AudioConfig
from jambonz_trio.testing import CallData, open_fake_call
from jambonz_trio.verbs import Say

from ..engine.helpers import RawClient
from .helpers import start_server


class _Spy(trio.abc.Stream):
    """The server's end of an in-memory connection, with hooks: ``after_receive(data)`` runs
    (synchronously) when a read returns, ``after_send(data)`` (async) when a write has
    returned from the transport."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.upgraded = False
        self.after_receive: Callable[[bytes], None] | None = None
        self.after_send: Callable[[bytes], trio.lowlevel.Task | None] | None = None
        self.slow_send: Callable[[bytes], bool] | None = None
        self.slow = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)
        if bytes(data).startswith(b"HTTP/1.1 101"):
            self.upgraded = True
        if self.slow_send is not None and self.slow_send(bytes(data)):
            await self.slow.wait()  # the write returns late (a busy loop, a TLS record, ...)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if self.after_receive is not None:
            self.after_receive(bytes(data))
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def spied_client(
    server: JambonzServer, path: str = "/audio", headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[tuple[trio_websocket.WebSocketConnection, _Spy]]:
    client, server_side = trio.testing.memory_stream_pair()
    spy = _Spy(server_side)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, spy)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            client,  # type: ignore[arg-type]
            "localhost",
            path,
            subprotocols=["audio.drachtio.org"],
            extra_headers=headers or [],
        )
        try:
            yield ws, spy
        finally:
            nursery.cancel_scope.cancel()


async def test_wait_stream_cancelled_as_its_stream_arrives_loses_the_stream(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """_hand_over's docstring: "a waiter found here is still waiting (it leaves only at a
    checkpoint, after unlisting itself), so the stream cannot be lost". A waiter whose
    deadline expired (or whose scope was cancelled) in the same scheduling turn is still
    listed but already cancelled: the stream is delivered to it, wait_stream raises
    Cancelled, and the stream belongs to nobody - the route's handler never runs, nobody
    reads or closes it, and the listen goes on until jambonz ends it."""
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
async def test_a_stream_given_back_by_a_cancelled_waiter_goes_to_the_next_one(
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


async def test_a_mark_answered_before_its_write_returns_stays_counted_as_pending(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """AudioStream.mark counts the mark as pending only after ``_send`` returns; the reader
    task uncounts it when jambonz reports it, but only if the count is above zero. A mark whose
    event is read before its own write has returned (the write yields once more after the bytes
    left; with nothing buffered the media server reports a mark within one 20 ms frame) stays
    counted: 30 marks are then refused at the 30th ("30 marks already pending") though jambonz
    holds 29 and takes 30 (MAF lws_glue.cpp:43-50, :306)."""
    errors: list[Exception] = []
    played: list[object] = []
    spies: list[_Spy] = []

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


async def test_a_drain_closes_streams_as_the_server_not_the_app(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """AudioCloseInfo.by is ``server`` for a shutdown (its docstring); a server cancelled
    while a stream is open says so, but ``drain`` closes the streams through
    ``AudioStreams.close_all`` -> ``AudioStream.aclose``, which records ``by="app"``: the
    app is told it closed a stream it never touched."""
    streams: list[AudioStream] = []

    async def app(stream: AudioStream) -> None:
        streams.append(stream)
        async for _ in stream:
            pass

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with spied_client(server) as (ws, _spy):
        await ws.send_message(json.dumps({"callSid": "cs-1", "sampleRate": 8000}))
        await trio.sleep(0.1)
        await server.drain(grace=1, code=1012)
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()
    info = streams[0].close_info
    assert info is not None and info.code == 1001
    assert info.by == "server", f"drain recorded {info}"


async def test_a_stream_the_server_closed_for_a_big_frame_is_not_ended_by_jambonz(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A text frame over ``max_text_bytes``: the server's websocket closes with 1009, and
    ``_on_closed`` records ``AudioCloseInfo(code=1009, by="jambonz")``, i.e. "jambonz closed
    the socket: the listen ended" (AudioCloseInfo's docstring). The server closed it; the app
    cannot tell a limit it hit from jambonz ending the verb."""
    streams: list[AudioStream] = []

    async def app(stream: AudioStream) -> None:
        streams.append(stream)
        async for _ in stream:
            pass

    server = await start_server(nursery, [AudioRoute(path="/audio", handler=app)])
    async with spied_client(server) as (ws, _spy):
        await ws.send_message(json.dumps({"callSid": "cs-1", "sampleRate": 8000}))
        await ws.send_message("x" * 70_000)
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()
        assert ws.closed is not None and ws.closed.code == 1009
    info = streams[0].close_info
    assert info is not None and info.code == 1009
    assert info.by != "jambonz", f"the server's own 1009 recorded as {info}"


async def test_audio_log_lines_leave_the_query_string_out(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/operations.md ("Per-call log context"): the path is logged without its query
    string, "which may carry a token" (docs/security.md suggests a query token checked by an
    authenticator, and the library's own ``jt_listen`` token is one). AudioStreams.serve logs
    the whole request target in its "no metadata in time", "no handler takes it" and
    "listen started on another cluster member" lines."""
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


def _basic(user: str, password: str) -> tuple[bytes, bytes]:
    return (b"Authorization", b"Basic " + base64.b64encode(f"{user}:{password}".encode()))


async def test_wait_stream_takes_a_stream_of_another_route_and_tenant(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """wait_stream matched on the metadata's ``callSid`` alone, whatever the route and
    credentials the socket was admitted with. The sid is not evidence: the verb's
    ``metadata`` overwrites it (docs/protocol.md §13.3, and _audio_listen.py's own reason
    for the token). A socket admitted on tenant B's route, naming one of tenant A's calls,
    was handed to the task waiting for A's call (and get() returned it too) - the call
    socket equivalent (S-9) binds a reconnect to its route and credentials. A's own stream,
    admitted under A's credentials, is still taken (by the call, or by its sid)."""
    taken: list[AudioStream] = []
    b_handled: list[AudioStream] = []

    async def a_app(call: Call) -> None:  # tenant A's app waits for its call's streams
        await call.ack(call.session, [Say(text="hold on")])
        with trio.move_on_after(10):
            taken.append(await server.audio_streams.wait_stream(call.call_sid or ""))  # by sid
            taken.append(await server.audio_streams.wait_stream(call))  # by the call
        await call.wait_closed()

    async def b_handler(stream: AudioStream) -> None:
        b_handled.append(stream)
        await stream.wait_closed()

    routes: list[Route | AudioRoute] = [
        Route(path="/a", handler=a_app, auth=BasicAuth(username="alice", password="pw-a")),
        AudioRoute(path="/a-audio", auth=BasicAuth(username="alice", password="pw-a")),
        AudioRoute(path="/b-audio", handler=b_handler, auth=BasicAuth(username="bob", password="pw-b")),
    ]
    server = await start_server(nursery, routes)
    metadata = json.dumps({"callSid": "cs-of-a", "sampleRate": 8000})
    call = CallData(call_sid="cs-of-a")
    async with open_fake_call(
        server.connect_memory, path="/a", username="alice", password="pw-a", call=call
    ) as fc:
        await fc.start()
        async with spied_client(server, "/b-audio", [_basic("bob", "pw-b")]) as (b_ws, _spy):
            await b_ws.send_message(metadata)  # tenant B's socket names A's call
            await trio.sleep(1)
            assert not taken, f"tenant A's waiter got a stream admitted as {taken[0].identity}"
            shadowing = server.audio_streams.get("cs-of-a")  # the sid of A's live call
            assert shadowing is None, f"get() returned a stream admitted as {shadowing.identity}"
            async with spied_client(server, "/a-audio", [_basic("alice", "pw-a")]) as (a_ws, _spy):
                await a_ws.send_message(metadata)  # A's own streams: taken, as before
                async with spied_client(server, "/a-audio", [_basic("alice", "pw-a")]) as (a2_ws, _spy):
                    await a2_ws.send_message(metadata)
                    await trio.sleep(1)
    assert [s.identity.route for s in b_handled] == ["/b-audio"]
    assert [s.identity.route for s in taken] == ["/a-audio", "/a-audio"]


async def test_tiny_frames_pin_many_times_the_audio_buffer_bound(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The inbound buffer counts payload bytes only (ChunkBuffer: "memory stays under
    max_bytes + one frame"), but keeps one ``bytes`` object per frame (~35 bytes of header)
    and a deque slot each. 2-byte frames (7 bytes on the wire each; audio sockets have no
    inbound pacing) fill a 64 KiB bound with 32,768 objects: over 20 times the bound held by
    one stream whose app does not read (e.g. a bot that only streams audio back). The
    metadata picks the bound's scale: sampleRate 384000 stereo reaches max_buffered_bytes
    (1 MiB: ~22 MB of 2-byte frames)."""
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


async def test_send_audio_measures_a_memoryview_in_bytes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """send_audio takes ``bytes | bytearray | memoryview``, and check_pcm measures
    ``len(audio)``: for a memoryview of 16-bit samples (``array('h')``, a numpy int16 buffer)
    that is the number of *samples*. 161 samples (322 bytes, whole samples) are refused as
    "161 bytes is not a whole number of 16-bit 1-channel sample frames"."""
    from array import array

    errors: list[Exception] = []
    got: list[bytes] = []

    async def app(stream: AudioStream) -> None:
        try:
            await stream.send_audio(memoryview(array("h", [1] * 161)))
        except Exception as exc:
            errors.append(exc)

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
    assert errors == [], errors
    assert got == [array("h", [1] * 161).tobytes()]
