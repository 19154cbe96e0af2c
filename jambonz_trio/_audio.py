"""``AudioStream``: one audio socket of a ``listen`` / ``stream`` verb, served beside the calls.

jambonz's media server opens the socket (subprotocol ``audio.drachtio.org``), sends one JSON
frame of metadata, then the caller's audio as binary L16 frames, and JSON events (``playDone``,
``mark``, DTMF). The app may send audio back (binary, when the verb streams) and JSON messages
(``playAudio``, ``killAudio``, ``disconnect``, ``mark``, ``clearMarks``). Wire facts:
``docs/protocol.md`` §13; the message shapes live in the sans-io :mod:`._protocol._audio`.

Structure: the server's task for the connection is the socket's only reader. It reads without
waiting for the app and puts audio into a bounded buffer (the oldest chunks are dropped when a
consumer falls behind: memory never grows with a slow consumer) and events into a bounded
queue. Every write is shielded from the caller's cancellation and bounded by ``send_timeout``,
so a frame either went out whole or the socket is aborted. A keepalive task pings the peer
(``AudioConfig.ping_interval``) and aborts the socket when a Pong is overdue
(``ping_timeout``), as for call sockets: a peer gone without closing never pins a stream.
Who consumes a stream: a call handler that started the listen (:meth:`Call.listen
<jambonz_trio.Call.listen>`, matched by a token in the listen URL), a task waiting on
:meth:`AudioStreams.wait_stream` for the call (a stream is matched by the call sid it names
and the Basic user it was admitted under, the call's), or else the audio route's handler, run
in the stream's own nursery.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Literal

import attrs
import trio

from ._config import AudioConfig
from ._connection import CloseReason, ConnectionClosed
from ._errors import AudioStreamClosed, LocalProtocolError
from ._log import CallLog, get_logger, path_of, safe
from ._protocol._audio import (
    CHUNK_OVERHEAD,
    MAX_MARKS,
    PLAY_AUDIO_SAMPLE_RATES,
    AudioEvent,
    AudioMetadata,
    ChunkBuffer,
    MarkEvent,
    check_pcm,
    listen_token,
    parse_audio_event,
    parse_metadata,
    render_clear_marks,
    render_disconnect,
    render_kill_audio,
    render_mark,
    render_play_audio,
    without_marker_samples,
)
from ._protocol._verbs import BidirectionalAudio
from ._public import Forwarded, NoPublicConstructor, create
from ._sync import ReceiveUntilEnd
from ._websocket import Keepalive, ServerWebSocket

if TYPE_CHECKING:
    from ._admission import Identity
    from ._call import Call
    from ._membership import ListenRouter

__all__ = [
    "AudioCloseInfo",
    "AudioHandler",
    "AudioStream",
    "AudioStreamStatistics",
    "AudioStreams",
]

log = get_logger("jambonz_trio.audio")

#: ``async def handler(stream: AudioStream) -> None``: serves one audio stream (its own task).
AudioHandler = Callable[["AudioStream"], Awaitable[None]]

_VALID_CLOSE_CODES = frozenset({1000, 1001, 1008, 1011})


@attrs.frozen(kw_only=True)
class AudioCloseInfo:
    """How an audio stream ended: ``by`` is ``jambonz`` (it closed the socket: the listen
    ended), ``app`` (:meth:`AudioStream.aclose`, a handler that returned or raised), ``lost``
    (no closing handshake: the connection dropped, a Pong or a write overdue) or ``server``
    (the server closed it: shutdown or :meth:`JambonzServer.drain
    <jambonz_trio.JambonzServer.drain>`, or a limit it enforces, e.g. a frame over its size
    limit (1009), a flood of Pings (1008), a malformed frame). As for calls
    (:class:`~jambonz_trio.CloseInfo`), ``server`` is the library's doing, not the app's."""

    code: int | None
    reason: str
    by: Literal["jambonz", "app", "lost", "server"]


@attrs.frozen(kw_only=True)
class AudioStreamStatistics:
    """Counters of one audio stream (see :meth:`AudioStream.statistics`).

    ``frames_*`` / ``bytes_*`` count binary (audio) frames; ``events_in`` and ``messages_out``
    the JSON messages. ``dropped_*`` counts audio jambonz sent that the app never read because
    it fell more than the buffer behind (``AudioConfig.buffer_seconds``).
    """

    frames_in: int
    bytes_in: int
    frames_out: int
    bytes_out: int
    messages_out: int
    dropped_frames: int
    dropped_bytes: int
    buffered_frames: int
    buffered_bytes: int
    events_in: int
    events_dropped: int


class _Claim:
    """A task waiting for one audio stream (by listen token or by call sid; ``identity``: the
    admission a stream must match, see :meth:`AudioStreams.wait_stream`)."""

    __slots__ = ("arriving", "done", "identity", "listen", "misrouted", "stream")

    def __init__(self, listen: BidirectionalAudio | None = None, identity: Identity | None = None) -> None:
        self.done = trio.Event()
        self.stream: AudioStream | None = None
        self.listen = listen
        self.identity = identity
        self.misrouted: str | None = None  # the member the socket reached instead
        #: a socket naming this listen was admitted (see :func:`listen_socket_admitted`)
        self.arriving = False

    def fail_misrouted(self, member: str) -> None:
        if self.stream is None and not self.done.is_set():
            self.misrouted = member
            self.done.set()

    def deliver(self, stream: AudioStream) -> None:
        self.stream = stream
        self.done.set()


#: Listens started by :func:`._listen.open_listen`, by token: process-wide, so that a stream
#: reaches the call that started it whichever server in the process jambonz connects to. A
#: token is 128 random bits that only the listen verb's URL carries.
_LISTENS: dict[str, _Claim] = {}


def listen_socket_admitted(path: str) -> None:
    """An audio socket was admitted on ``path`` (before its 101 goes out): the listen its
    token names, if one waits here, knows its socket is coming even if jambonz ends the verb
    before the socket is handed over (``open_listen``'s ``verb_ended``)."""
    token = listen_token(path)
    claim = _LISTENS.get(token) if token is not None else None
    if claim is not None:
        claim.arriving = True


#: Cluster members of this process that know which member started a listen (one per server
#: with a cluster): a socket naming a listen no call here started is looked up there.
LISTEN_ROUTERS: list[ListenRouter] = []


class AudioStream(ReceiveUntilEnd[bytes], metaclass=NoPublicConstructor):
    """One audio stream jambonz opened for a ``listen`` (or ``stream``) verb.

    Get one from :meth:`Call.listen <jambonz_trio.Call.listen>`, from
    :meth:`AudioStreams.wait_stream`, or as the argument of an :class:`AudioRoute
    <jambonz_trio.AudioRoute>` handler.

    Receiving: ``async for chunk in stream`` yields the caller's audio (``bytes`` of L16 PCM,
    little-endian, at :attr:`sample_rate`, :attr:`channels` interleaved) until the stream ends.
    The audio is read from the socket whether or not the app reads it; a consumer more than
    ``AudioConfig.buffer_seconds`` behind loses the *oldest* chunks (counted in
    :meth:`statistics`), so memory is bounded and what it reads next is recent. Events
    (:class:`~jambonz_trio.audio.PlayDone`, :class:`~jambonz_trio.audio.MarkEvent`,
    :class:`~jambonz_trio.audio.Dtmf`) come from :meth:`next_event` / :meth:`events`, in a
    bounded queue of their own (oldest dropped first).

    Sending: every method writes one whole frame, shielded from the caller's cancellation and
    bounded by ``AudioConfig.send_timeout`` (the socket is aborted if the peer stops reading).
    Back-pressure: a write blocks while the socket's send buffer is full.

    Attributes:
        metadata: the typed first frame (call info, format, the verb's ``metadata``).
        path: the request target jambonz connected to (path and query).
        identity: the route and Basic user the socket was admitted as.
        bidirectional: the verb's ``bidirectionalAudio`` when the library started the listen
            (then :meth:`send_audio` and :meth:`play` check the mode), else ``None``.
        close_info: how the stream ended (``None`` while open).
    """

    _FACTORY = "Call.listen(), server.audio_streams.wait_stream() or an AudioRoute's handler"

    _ids = itertools.count(1)

    def __init__(
        self,
        ws: ServerWebSocket,
        stream: trio.abc.Stream,
        *,
        metadata: AudioMetadata,
        path: str,
        identity: Identity,
        config: AudioConfig,
    ) -> None:
        self.metadata = metadata
        self.path = path
        self.identity = identity
        self.config = config
        self.bidirectional: BidirectionalAudio | None = None
        self.close_info: AudioCloseInfo | None = None
        self.id = next(self._ids)
        self._ws = ws
        self._stream = stream
        self._audio = ChunkBuffer(config.buffer_bytes(metadata.bytes_per_second), min_charge=CHUNK_OVERHEAD)
        self._audio_waiters = trio.lowlevel.ParkingLot()
        self._events: deque[tuple[int, AudioEvent]] = deque()  # (its frame's length, event)
        self._event_bytes = 0
        self._event_waiters = trio.lowlevel.ParkingLot()
        self._ended = trio.Event()  # no more frames will arrive
        self._close_done: trio.Event | None = None
        self._frames_in = self._bytes_in = 0
        self._frames_out = self._bytes_out = self._messages_out = 0
        self._events_in = self._events_dropped = 0
        # pending marks by name: a report uncounts only a mark of its name, so a stale report
        # (a mark jambonz played out before it read our clearMarks) leaves newer marks counted
        self._marks: Counter[str] = Counter()
        self._marks_pending = 0
        self._play_ids = itertools.count(1)
        self._pinger = Keepalive(b"ja")
        self._keepalive_scope = trio.CancelScope()  # cancelled when the stream ends
        # AudioStreams.serve: starts what a stream nobody takes gets (the route's handler, or
        # a close), for a stream whose waiter was cancelled before it returned it; set from
        # the hand-over (no checkpoint between) until the stream's reading ends
        self._fallback: Callable[[], None] | None = None
        self._log = CallLog(
            log, metadata.call_sid, trio.current_time, account_sid=metadata.call.account_sid, path=path
        )

    # -- typed metadata ------------------------------------------------------------------------

    call_sid = Forwarded[str | None](
        "metadata.call_sid", "The call's sid from the metadata frame (``None`` if it was missing)."
    )
    sample_rate = Forwarded[int]("metadata.sample_rate", "Hz of the audio jambonz sends.")
    mix_type = Forwarded[str]("metadata.mix_type", "``mono``, ``stereo`` or ``mixed``.")
    channels = Forwarded[int](
        "metadata.channels", "Interleaved channels of the audio jambonz sends (2 for ``stereo``)."
    )

    @property
    def closed(self) -> bool:
        """Whether the socket is closed (buffered audio and events may still be read)."""
        return self.close_info is not None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<AudioStream {self.call_sid} {self.sample_rate} Hz {self.mix_type} {state}>"

    def statistics(self) -> AudioStreamStatistics:
        """A snapshot of the counters (not a checkpoint)."""
        return AudioStreamStatistics(
            frames_in=self._frames_in,
            bytes_in=self._bytes_in,
            frames_out=self._frames_out,
            bytes_out=self._bytes_out,
            messages_out=self._messages_out,
            dropped_frames=self._audio.dropped_chunks,
            dropped_bytes=self._audio.dropped_bytes,
            buffered_frames=len(self._audio),
            buffered_bytes=self._audio.nbytes,
            events_in=self._events_in,
            events_dropped=self._events_dropped,
        )

    # -- receiving -----------------------------------------------------------------------------

    async def receive_audio(self) -> bytes:
        """The next chunk of the caller's audio, in arrival order (a checkpoint).

        Blocks until one arrives. Raises :class:`AudioStreamClosed` once the stream is over
        and every buffered chunk was returned. Cancelling it loses nothing.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            chunk = self._audio.pop()
            if chunk is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return chunk
            if self._ended.is_set():
                raise self._closed_error()
            await self._audio_waiters.park()

    _receive = receive_audio  # ``async for chunk in stream``
    _END = AudioStreamClosed

    async def next_event(self) -> AudioEvent:
        """The next event jambonz sent (``PlayDone``, ``MarkEvent``, ``Dtmf``, or an
        ``UnknownAudioMessage``). A checkpoint; blocks until one arrives.

        Raises:
            AudioStreamClosed: the stream is over and every queued event was returned.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._events:
                size, event = self._events.popleft()
                self._event_bytes -= size
                await trio.lowlevel.cancel_shielded_checkpoint()
                return event
            if self._ended.is_set():
                raise self._closed_error()
            await self._event_waiters.park()

    async def events(self) -> AsyncIterator[AudioEvent]:
        """``async for event in stream.events()``: the events until the stream ends."""
        while True:
            try:
                event = await self.next_event()
            except AudioStreamClosed:
                return
            yield event

    async def wait_closed(self) -> AudioCloseInfo:
        """Block until the socket is closed; returns how it ended."""
        await self._ended.wait()
        assert self.close_info is not None
        return self.close_info

    def _closed_error(self) -> AudioStreamClosed:
        info = self.close_info
        if info is None:
            return AudioStreamClosed()
        # the reason may be the peer's close reason: made safe, as an app that lets this escape
        # gets it logged in its traceback
        return AudioStreamClosed(f"audio stream ended ({info.by}: {safe(info.reason, 128)})", code=info.code)

    # -- sending -------------------------------------------------------------------------------

    async def send_audio(self, pcm: bytes | bytearray | memoryview) -> None:
        """Send L16 audio to be played to the caller (one binary frame).

        jambonz plays it only when the listen has ``bidirectionalAudio`` with ``streaming``
        and a ``sampleRate`` (the format to send: mono, little-endian, at that rate); it
        buffers whatever arrives, so sending faster than real time only queues audio there.
        A sample of -1 goes out as -2: the media server takes -1 for a :meth:`mark` in its
        playout buffer while marks are pending, dropping it and firing the mark early (at a
        ``sampleRate`` other than the call's, its resampler blurs marks anyway:
        docs/audio.md). Blocks while the socket's send buffer is full (back-pressure);
        shielded and bounded by ``send_timeout``.

        Raises:
            LocalProtocolError: odd length, or a listen started without streaming.
            AudioStreamClosed: the stream is over (or the write failed).
        """
        self._check_streaming("jambonz would discard the frame")
        check_pcm(pcm)
        if not pcm:
            await trio.lowlevel.checkpoint()
            return  # jambonz ignores empty frames
        await self._send(without_marker_samples(bytes(pcm)))

    def _check_streaming(self, consequence: str) -> None:
        """Refuse what only a streaming listen acts on, when the library knows the verb's mode:
        the module plays binary audio and plays out marks only with ``bidirectionalAudio``
        enabled, streaming and with a ``sampleRate`` (MAF ``mod_audio_fork.c:275-279``,
        ``:48-49``; docs/protocol.md §13.7)."""
        bidi = self.bidirectional
        if bidi is not None and not (bidi.enabled is not False and bidi.streaming and bidi.sample_rate):
            raise LocalProtocolError(
                "this listen does not stream audio back (bidirectionalAudio needs enabled, "
                f"streaming and sampleRate): {consequence}; start it with "
                "call.listen(..., bidirectional=True)"
            )

    async def play(
        self,
        audio: bytes,
        *,
        content_type: Literal["raw", "wav", "wave"] = "raw",
        sample_rate: int | None = None,
        id: str | None = None,
        queue: bool = False,
    ) -> str:
        """Send a whole clip to be played to the caller (``playAudio``, base64).

        For listens without ``streaming``. ``raw`` audio is mono L16 at ``sample_rate``
        (default: the stream's rate); ``wav`` carries its own format. ``queue=True`` plays it
        after the clips already queued (jambonz keeps at most 11), else it replaces the queue.
        jambonz sends a :class:`~jambonz_trio.audio.PlayDone` with the returned id when the
        clip is done. Shielded and bounded like :meth:`send_audio`.

        Returns:
            the clip's id (``id``, or one generated).

        Raises:
            LocalProtocolError: an unsupported rate or format, an ``id`` holding a quote,
                backslash or control character (jambonz would lose its ``PlayDone``), or a
                listen whose ``bidirectionalAudio`` streams (jambonz then refuses
                ``playAudio``) or is off.
            AudioStreamClosed: the stream is over (or the write failed).
        """
        bidi = self.bidirectional
        if bidi is not None and (bidi.enabled is False or bidi.streaming):
            raise LocalProtocolError(
                "playAudio is only acted on when bidirectionalAudio is enabled and not streaming: "
                "start the listen with call.listen(..., bidirectional=True, streaming=False)"
            )
        if content_type == "raw" and sample_rate is None:
            sample_rate = self.sample_rate if self.sample_rate in PLAY_AUDIO_SAMPLE_RATES else None
        clip_id = id if id is not None else f"jt-play-{next(self._play_ids)}"
        text = render_play_audio(
            audio, content_type=content_type, sample_rate=sample_rate, id=clip_id, queue_play=queue
        )
        await self._send(text)
        return clip_id

    async def kill_audio(self) -> None:
        """Stop the clip playing and drop streamed audio not yet played (``killAudio``);
        pending marks come back as ``cleared`` events. Shielded and bounded like
        :meth:`send_audio`.

        Raises:
            AudioStreamClosed: the stream is over.
        """
        await self._send(render_kill_audio())

    async def mark(self, name: str) -> None:
        """Mark the current end of the audio sent so far (``mark``): jambonz sends a
        :class:`~jambonz_trio.audio.MarkEvent` (``playout``) when playout reaches it, or
        ``cleared`` if a ``killAudio`` drops it. Meaningful when streaming audio back. Give
        marks distinct names: a report is matched to a pending mark by its name. Shielded
        and bounded like :meth:`send_audio`.

        Raises:
            LocalProtocolError: a name jambonz would echo as invalid JSON (quotes,
                backslashes, control characters), 30 marks already pending (jambonz would
                drop this one silently), or a listen started without streaming (jambonz
                reports marks only in streamed playout).
            AudioStreamClosed: the stream is over.
        """
        text = render_mark(name)
        self._check_streaming("jambonz would never report the mark")
        if self._marks_pending >= MAX_MARKS:
            raise LocalProtocolError(f"{MAX_MARKS} marks already pending: jambonz would drop this one")
        # Counted before the write: jambonz may report the mark before our write returns (the
        # reader uncounts it then), and a second task must not pass the check meanwhile.
        self._marks[name] += 1
        self._marks_pending += 1
        try:
            await self._send(text)
        except BaseException:
            # _send raises before writing (the stream was over, or cancelled at its checkpoint)
            # or because the write failed, which ends the stream: either way jambonz holds no
            # mark of ours that this count should keep
            self._uncount_mark(name)
            raise

    async def clear_marks(self) -> None:
        """Forget every pending mark (``clearMarks``; jambonz sends no events for them).
        Shielded and bounded like :meth:`send_audio`.

        Raises:
            AudioStreamClosed: the stream is over.
        """
        # Zeroed before the write: the marks counted so far took their place in the write
        # order before this frame (``_send`` reaches the socket's FIFO without a checkpoint
        # on an open stream, as mark() does after counting), so jambonz clears them; a mark
        # sent while this frame is written goes after it and stays pending there. A write
        # that fails ends the stream, and the count with it.
        self._marks.clear()
        self._marks_pending = 0
        await self._send(render_clear_marks())

    async def disconnect(self) -> AudioCloseInfo:
        """Ask jambonz to end the listen (``disconnect``) and wait, up to ``close_timeout``,
        for it to close the socket (then the verb's ``actionHook`` follows on the call); if it
        does not, the app closes it. Returns how the stream ended.

        Raises:
            AudioStreamClosed: the stream was already over.
        """
        await self._send(render_disconnect())
        with trio.move_on_after(self.config.close_timeout):
            return await self.wait_closed()
        await self.aclose(1000, "disconnect not answered")
        return await self.wait_closed()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket from the app's side (jambonz then ends the ``listen`` verb).
        Idempotent; shielded, bounded by ``close_timeout``; buffered audio is dropped.

        Raises:
            ValueError: an invalid close code.
        """
        if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
            raise ValueError(f"invalid close code {code}")
        await self._close(code, reason, by="app")

    async def _close(self, code: int, reason: str, *, by: Literal["app", "server"]) -> None:
        reason = reason.encode("utf-8", "replace")[:123].decode("utf-8", "ignore")
        if self.close_info is not None:
            await trio.lowlevel.checkpoint()
            return
        self._finish(AudioCloseInfo(code=code, reason=reason or "closed by app", by=by))
        self._audio.clear()
        self._close_done = done = trio.Event()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.config.close_timeout):
                try:
                    await self._ws.close(code, reason or None)
                except Exception:  # pragma: no cover - a close racing the peer's
                    log.debug("audio close failed", exc_info=True)
            done.set()
            await trio.aclose_forcefully(self._stream)

    async def _send(self, message: str | bytes) -> None:
        if self.close_info is not None or self._ws.close_reason is not None:
            # The socket may be closed (jambonz's Close was parsed) while the reader still
            # hands out the frames that came before it: the stream's end is known once it
            # has, a few scheduling turns later (no I/O). Raised before that, the error
            # would name no end, and a route's handler that lets it out would count as
            # failed (logged, the stream recorded as closed by the app with 1011).
            with trio.move_on_after(self.config.close_timeout):
                await self._ended.wait()
            raise self._closed_error()
        size = len(message)
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self.config.send_timeout) as scope:
            try:
                await self._ws.send(message)
            except ConnectionClosed:
                raise AudioStreamClosed("the audio socket closed during the write") from None
            if type(message) is bytes:
                self._frames_out += 1
                self._bytes_out += size
            else:
                self._messages_out += 1
            return
        if scope.cancelled_caught:
            await self._abort("audio send timed out after %.1f s", self.config.send_timeout, "send timed out")
        raise AudioStreamClosed("send timed out", code=1006)

    # -- engine ------------------------------------------------------------------------------

    def _finish(self, info: AudioCloseInfo) -> None:
        if self.close_info is None:
            self.close_info = info
        self._ended.set()
        self._keepalive_scope.cancel()
        self._audio_waiters.unpark_all()
        self._event_waiters.unpark_all()

    def _on_audio(self, frame: bytes) -> None:
        self._frames_in += 1
        self._bytes_in += len(frame)
        if not frame:
            return  # the module's "graceful shutdown" marker: nothing to play
        if self._audio.push(frame):
            self._log.throttled(
                "audio dropped",
                logging.WARNING,
                "audio consumer too slow: %d chunks (%d bytes) dropped so far",
                self._audio.dropped_chunks,
                self._audio.dropped_bytes,
            )
        self._audio_waiters.unpark_all()

    def _uncount_mark(self, name: str) -> None:
        # a name with no pending mark (reported after clearMarks, or never ours) counts nothing;
        # two pending marks of one name cannot be told apart: the report takes one of them
        if self._marks[name] > 0:
            self._marks[name] -= 1
            if not self._marks[name]:
                del self._marks[name]
            self._marks_pending -= 1

    def _on_text(self, frame: str) -> None:
        try:
            event = parse_audio_event(frame)
        except Exception as exc:  # RemoteProtocolError; never let a frame end the stream
            self._log.throttled("bad audio event", logging.WARNING, "audio socket: %s (frame %r)", exc, frame)
            return
        self._events_in += 1
        if isinstance(event, MarkEvent):
            self._uncount_mark(event.name)
        events, config = self._events, self.config
        size = len(frame)
        dropped = self._events_dropped
        # bounded in count and in bytes (a peer's big unknown messages): the oldest go first,
        # the newest is always kept (its frame is within max_text_bytes)
        while events and (
            len(events) >= config.event_queue_size or self._event_bytes + size > config.max_event_bytes
        ):
            self._event_bytes -= events.popleft()[0]
            self._events_dropped += 1
        if self._events_dropped != dropped:
            self._log.throttled(
                "events dropped", logging.WARNING, "audio event queue full; %d dropped", self._events_dropped
            )
        events.append((size, event))
        self._event_bytes += size
        self._event_waiters.unpark_all()

    async def _read(self) -> None:
        """The socket's receive loop (run by the server's connection task); returns when the
        socket is closed, after our own closing handshake if we started one."""
        ws = self._ws
        on_audio, on_text = self._on_audio, self._on_text
        while True:
            try:
                frame = await ws.receive()
            except ConnectionClosed as exc:
                self._on_closed(exc.reason)
                break
            if type(frame) is bytes:
                on_audio(frame)
            else:
                assert isinstance(frame, str)
                on_text(frame)
        if self._close_done is not None:
            await self._close_done.wait()

    async def _keepalive(self) -> None:
        """Ping the peer ``ping_interval`` seconds after the last Pong; abort the socket when a
        Pong is more than ``ping_timeout`` late, or a Ping cannot be written within
        ``send_timeout`` (runs beside :meth:`_read` until the end)."""
        config = self.config
        with self._keepalive_scope:
            why = await self._pinger.run(
                self._ws,
                interval=config.ping_interval,
                pong_timeout=config.ping_timeout,
                send_timeout=config.send_timeout,
            )
        if self._ended.is_set() or why == "closed":
            return  # (the reader reports the end)
        if why == "send timed out":
            await self._abort("ping not sent within %.1f s", config.send_timeout, why)
        else:
            await self._abort("no pong within %.1f s", config.ping_timeout, why)

    async def _abort(self, message: str, seconds: float, reason: str) -> None:
        """End the stream as lost (1006, ``reason``) and abort its socket."""
        self._log.warning(message + "; aborting the audio socket", seconds)
        self._finish(AudioCloseInfo(code=1006, reason=reason, by="lost"))
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._stream)

    def _on_closed(self, reason: CloseReason) -> None:
        code = reason.code
        if code == 1009 and self._ws.close_unanswered:
            self._log.warning("closing the audio socket with 1009: %s", reason.reason)
        if code == 1006 or code is None:
            info = AudioCloseInfo(code=1006, reason="connection lost", by="lost")
        elif self._ws.close_unanswered:
            # our websocket closed itself (a frame over its limit, a ping flood, a bad frame):
            # the server's doing, not jambonz's (the peer's Close would have replaced ours)
            info = AudioCloseInfo(code=code, reason=reason.reason or "closed by the server", by="server")
        else:
            info = AudioCloseInfo(code=code, reason=reason.reason or "closed by jambonz", by="jambonz")
        self._finish(info)


class AudioStreams(metaclass=NoPublicConstructor):
    """The live audio streams of a server (``server.audio_streams``).

    A stream is listed from its metadata frame until its socket closes. Streams are found by
    the call sid of their metadata; a call can have more than one (a ``listen`` verb and a
    background listen of ``config``).

    The sid is not proof of whose call it is: the listen verb's ``metadata`` can overwrite
    ``callSid``, and any socket admitted on an audio route may name any sid. So a stream is
    found for a call only if it was admitted under the same Basic user as the call (or both
    without one): :meth:`get` and :meth:`wait_stream` take the :class:`~jambonz_trio.Call`,
    or a sid, which stands for the server's live call with that sid (a sid no live call here
    has matches any stream that names it). A stream started by :meth:`Call.listen
    <jambonz_trio.Call.listen>` is matched by its token instead. See docs/security.md.
    """

    _FACTORY = "the server (server.audio_streams)"

    def __init__(self, calls: Mapping[str, Call] | None = None) -> None:
        self._live: dict[AudioStream, None] = {}
        self._waiters: dict[str, list[_Claim]] = {}
        self._calls = calls  # the server's live calls by sid (server.calls)

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[AudioStream]:
        return iter([s for s in self._live if not s.closed])

    def _bound(self, call: Call | str) -> tuple[str, Identity | None]:
        """The sid to look for and the admission a stream must match (``None``: any)."""
        if isinstance(call, str):
            live = self._calls.get(call) if self._calls is not None else None
            return call, None if live is None else live.identity
        if call.call_sid is None:
            raise ValueError(f"{call!r} has no call sid: no audio stream can name it")
        return call.call_sid, call.identity

    def get(self, call: Call | str) -> AudioStream | None:
        """The newest open stream of this call (a :class:`~jambonz_trio.Call`, or a sid: see
        the class docstring for which streams match), or ``None``."""
        sid, bound = self._bound(call)
        found = [s for s in self._live if s.call_sid == sid and not s.closed and _matches(bound, s)]
        return found[-1] if found else None

    async def wait_stream(self, call: Call | str) -> AudioStream:
        """Wait for the next stream of this call and take it: it is handed here instead of
        to its route's handler (a stream started by :meth:`Call.listen` still goes to that
        call's handler; several tasks waiting for one call take its streams in turn).

        ``call``: the :class:`~jambonz_trio.Call`, or its sid. Only a stream admitted under
        the call's Basic user (or without one, when the call had none) is taken; a sid that
        no live call of this server has takes any stream naming it (see the class docstring).

        The caller owns the timeout. Once this returns, the caller owns the stream (close
        it, or read it until it ends). If it is cancelled before it returns, even after a
        stream was handed to it, it takes nothing: the stream goes on as if this task had
        not waited (to the next task waiting for the call, else to the route's handler, or
        it is closed with 1008 when the route has none)."""
        call_sid, bound = self._bound(call)
        claim = _Claim(identity=bound)
        waiters = self._waiters.setdefault(call_sid, [])
        waiters.append(claim)
        try:
            await claim.done.wait()
        except BaseException:
            # handed a stream in the same scheduling turn as its cancellation (a deadline, a
            # cancelled scope): this task will never return it, so it goes on without us
            if claim.stream is not None:
                self._give_back(claim.stream)
            raise
        finally:
            if claim in waiters:
                waiters.remove(claim)
                if not waiters:
                    self._waiters.pop(call_sid, None)
        if claim.stream is None:  # pragma: no cover - done is set only by deliver
            raise AudioStreamClosed("no stream")
        return claim.stream

    # -- server side ---------------------------------------------------------------------------

    def _hand_over(self, stream: AudioStream) -> bool:
        """Give a new stream to the listen its token names, else to a waiter for its call;
        ``False`` if nobody waits. Synchronous, so a waiter found here is still listed; but
        it may be cancelled in this same scheduling turn and never return the stream: its
        owner then gives the stream back (:meth:`_give_back`), and so no stream is lost."""
        token = listen_token(stream.path)
        if token is not None:
            claim = _LISTENS.pop(token, None)
            if claim is not None:
                stream.bidirectional = claim.listen
                claim.deliver(stream)
                return True
            log.info("audio stream for call %s names a listen nobody waits for", stream.call_sid)
        return self._to_waiter(stream)

    def _to_waiter(self, stream: AudioStream) -> bool:
        """Give ``stream`` to the first task waiting for its call (:meth:`wait_stream`) whose
        call it may be: admitted under the call's Basic user."""
        sid = stream.call_sid
        waiters = self._waiters.get(sid) if sid is not None else None
        if not waiters:
            return False
        claim = next((c for c in waiters if _matches(c.identity, stream)), None)
        if claim is None:
            log.warning(
                "audio stream for call %s on %s came in with %s, the call with %s: not handed "
                "to the task waiting for the call (docs/security.md)",
                sid,
                stream.identity.route,
                _who(stream.identity),
                _who(waiters[0].identity),
            )
            return False
        waiters.remove(claim)
        if not waiters:
            del self._waiters[sid]  # type: ignore[arg-type]
        claim.deliver(stream)
        return True

    def _give_back(self, stream: AudioStream) -> None:
        """A waiter was handed ``stream`` but cancelled before it returned it: the stream goes
        on as if that waiter had not existed (the next waiter, else the route's handler or a
        close, started by :meth:`serve` in the stream's nursery). Synchronous.

        Nothing is done for a stream that is over (serve stopped reading it: its nursery
        may be closed already, and a waiter could only get a dead stream)."""
        start = stream._fallback
        if start is None or self._to_waiter(stream):
            return
        stream._fallback = None
        start()

    async def serve(
        self,
        ws: ServerWebSocket,
        stream: trio.abc.Stream,
        *,
        path: str,
        identity: Identity,
        handler: AudioHandler | None,
        config: AudioConfig,
    ) -> None:
        """Serve one admitted audio socket until it closes (the server's connection task)."""
        where = path_of(path)  # for log lines: the query may carry a token
        first: str | bytes | None = None
        with trio.move_on_after(config.first_message_timeout):
            try:
                first = await ws.receive()
            except ConnectionClosed:
                return
        if first is None:
            log.info("audio socket on %s sent no metadata in time; closing", where)
            with trio.move_on_after(config.close_timeout):
                await ws.close(1008, "expected the metadata frame")
            return
        if isinstance(first, str):
            metadata = parse_metadata(first)
            if metadata.problems:
                log.warning(
                    "audio stream for call %s: metadata: %s", metadata.call_sid, "; ".join(metadata.problems)
                )
        else:
            # only a media server started without metadata sends audio first (jambonz never)
            metadata = AudioMetadata(complete=False, problems=("no metadata frame",))
        audio = create(
            AudioStream, ws, stream, metadata=metadata, path=path, identity=identity, config=config
        )
        if isinstance(first, bytes):
            audio._on_audio(first)
        del first
        self._live[audio] = None
        claimed = self._hand_over(audio)
        if not claimed and handler is None:
            del self._live[audio]
            reason = await _nobody_takes(audio, where)
            with trio.move_on_after(config.close_timeout):
                await ws.close(1008, reason)
            return
        ws.on_pong = audio._pinger.pong
        try:
            async with trio.open_nursery() as nursery:

                def fallback() -> None:  # for a stream whose waiter is cancelled (_give_back)
                    nursery.start_soon(_unclaimed, audio, handler, where)

                if not claimed:
                    assert handler is not None
                    nursery.start_soon(_run_handler, audio, handler)
                else:
                    # (no checkpoint since the hand-over: its waiter cannot have given it back)
                    audio._fallback = fallback
                nursery.start_soon(audio._keepalive)  # ends with the stream
                try:
                    await audio._read()
                except BaseException:
                    # cancelled (server shutdown) or worse: the stream is over for everyone
                    with trio.CancelScope(shield=True):
                        await audio._close(1001, "server shutting down", by="server")
                    raise
                finally:
                    # the stream is over: a stream given back from now on needs nothing (and
                    # the nursery may close before this task resumes: never start a task in it)
                    audio._fallback = None
        finally:
            del self._live[audio]

    async def close_all(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close every open stream (bounded by each stream's ``close_timeout``)."""
        async with trio.open_nursery() as nursery:
            for audio in list(self._live):
                nursery.start_soon(functools.partial(audio._close, code, reason, by="server"))


def _matches(bound: Identity | None, stream: AudioStream) -> bool:
    """Whether ``stream`` may be the stream of a call admitted as ``bound`` (``None``: any
    call): the same Basic user, or neither has one. Routes are not compared: the call's and
    the audio socket's are different routes by design (docs/security.md)."""
    return bound is None or bound.username == stream.identity.username


def _who(identity: Identity | None) -> str:
    if identity is None or identity.username is None:
        return "no Basic user"
    return f"Basic user {identity.username!r}"


async def _run_handler(audio: AudioStream, handler: AudioHandler) -> None:
    """An audio route's handler, contained: returning closes the stream with 1000, raising
    logs and closes with 1011; nothing it raises reaches the server."""
    try:
        await handler(audio)
    except AudioStreamClosed:
        if audio.close_info is None:
            log.exception("audio stream for call %s: handler raised; closing with 1011", audio.call_sid)
        code, reason = 1011, "handler failed"  # (nothing is sent if the stream is over: its own end)
    except Exception:
        log.exception("audio stream for call %s: handler raised; closing with 1011", audio.call_sid)
        code, reason = 1011, "handler failed"
    except BaseException:  # cancelled: the server shuts down
        with trio.CancelScope(shield=True):
            await audio._close(1001, "server shutting down", by="server")
        raise
    else:
        code, reason = 1000, "handler finished"
    with trio.CancelScope(shield=True):
        await audio.aclose(code, reason)


async def _unclaimed(audio: AudioStream, handler: AudioHandler | None, where: str) -> None:
    """What a stream nobody takes gets, for one given back by a cancelled waiter: the route's
    handler, else a 1008 close."""
    if handler is not None:
        await _run_handler(audio, handler)
        return
    reason = await _nobody_takes(audio, where)
    with trio.CancelScope(shield=True):
        await audio._close(1008, reason, by="server")


async def _nobody_takes(audio: AudioStream, where: str) -> str:
    """Log that no handler takes ``audio`` (telling the cluster member that started its
    listen, if another did); returns the close reason."""
    owner = await _route_listen(audio)
    if owner is None:
        log.info("audio stream for call %s on %s: no handler takes it; closing", audio.call_sid, where)
        return "no handler for this audio stream"
    log.warning(
        "audio stream for call %s on %s: its listen was started by cluster member %s, "
        "not this one: audio sockets are not relayed between members, so the listen "
        "fails (ListenMisrouted). With several workers on one address, run an app that "
        'uses listen with one worker per address: see docs/deploying.md, "Audio '
        'sockets and workers"',
        audio.call_sid,
        where,
        owner,
    )
    return "listen started on another cluster member"


async def _route_listen(stream: AudioStream) -> str | None:
    """The cluster member that started the listen ``stream`` names, told that its socket came
    here (``None``: no token, no cluster, or not known there). Bounded by each member."""
    token = listen_token(stream.path)
    if token is None:
        return None
    for router in list(LISTEN_ROUTERS):
        owner = await router.route_listen(token)
        if owner is not None:
            return owner
    return None
