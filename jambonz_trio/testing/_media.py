"""The fake media server: jambonz's side of a ``listen`` verb's audio socket.

jambonz 0.9.8 runs a ``listen`` by asking FreeSWITCH's ``mod_audio_fork`` (1.2.33) to open a
websocket to the app (``docs/protocol.md`` §13). :class:`FakeAudioStream` plays that client:
the handshake (subprotocol ``audio.drachtio.org``, Basic auth, ``Host`` without a port; a 101
that selects no subprotocol is accepted, as the module's websocket library does), the metadata
frame, the caller's audio in binary L16 frames (paced in real time or as fast as possible, on
trio's clock, so virtual time works), DTMF, and the module's reactions to what the app sends:
streamed audio played out in real time with ``mark`` events when playout reaches each mark,
``playAudio`` clips played one after another with ``playDone``, ``killAudio``, ``clearMarks``,
``disconnect``. It records what the app played and reports every message the module or
jambonz would ignore or misread as a violation, like the rest of the fake.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import wave
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio
import trio_websocket

from .._protocol._audio import AUDIO_SUBPROTOCOL, MAX_MARKS, PLAY_AUDIO_SAMPLE_RATES, resolve_listen_url
from .._protocol._verbs import BidirectionalAudio, Listen
from .._public import Forwarded
from ._audio import AudioSource
from ._calldata import CallData
from ._core import _Core
from ._errors import ConnectFailed, FakeJambonzError, ProtocolViolation
from ._jambonz import dumps
from ._records import Violation, ViolationKind
from ._transport import (
    Connector,
    TcpConnector,
    _SniffingStream,
    abort_stream,
    basic_auth_header,
    handshake,
    tcp_connector,
)

if TYPE_CHECKING:
    from ._runner import _Runner

__all__ = ["FakeAudioStream", "PlayAudioRecord", "listen_metadata", "open_fake_audio_stream", "run_listen"]

#: Seconds per audio frame the module sends (one RTP packet).
FRAME_SECONDS = 0.02
#: How long lws waits for the app's Close after the module's (``docs/protocol.md`` §13.7).
CLOSE_TIMEOUT = 5.0
#: playAudio clips FS queues (``queuePlay``): up to ``MAX_PLAY_AUDIO_QUEUE_SIZE`` + 1 entries.
MAX_QUEUED_CLIPS = 11


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def listen_metadata(verb: Listen, call: CallData) -> dict[str, Any]:
    """The metadata frame FS 0.9.8 sends for ``verb`` on ``call``: ``Object.assign({sampleRate,
    mixType}, callInfo, verb.metadata)`` (FS lib/tasks/listen.js:168-171), camelCase call info
    (lib/session/call-info.js:135-171) with the call answered.

    Raises:
        FakeJambonzError: the verb's ``metadata`` is not a mapping.
    """
    info = {
        _camel(k) if k != "customerData" else k: v
        for k, v in call.call_info(call_status="in-progress", sip_status=200, sip_reason="OK").items()
    }
    own = verb.metadata or {}
    if not isinstance(own, Mapping):
        raise FakeJambonzError(
            f"the listen's metadata is a {type(own).__name__}, not an object of keys to add to the "
            "metadata frame"
        )
    return {
        "sampleRate": verb.sample_rate or 8000,
        "mixType": verb.mix_type or "mono",
        **info,
        **own,
    }


def _metadata_frame(metadata: Mapping[str, Any]) -> str:
    """The metadata as the text frame jambonz sends first; a value JSON cannot carry (jambonz's
    metadata always came to it as JSON) is the test's mistake, raised before anything connects.

    Raises:
        FakeJambonzError: a key or value is no JSON (an object, a set, bytes, NaN, a lone
            surrogate ...).
    """
    try:
        text = dumps(dict(metadata), allow_nan=False)
        text.encode("utf-8")  # what the socket will do with it
    except (TypeError, ValueError, RecursionError) as exc:
        raise FakeJambonzError(
            f"the listen's metadata cannot be sent as JSON (the audio socket's first frame): {exc}"
        ) from None
    return text


@attrs.frozen(kw_only=True)
class PlayAudioRecord:
    """A ``playAudio`` clip the app sent (decoded), as the module saw it.

    Attributes:
        audio: the decoded ``audioContent``.
        content_type: ``raw``, ``wav`` or ``wave``.
        sample_rate: the rate it plays at (for raw: the ``sampleRate`` if the module knows it,
            else 16000, as the module does).
        id: the clip's ``id``, if any.
        queue_play: whether it was queued behind the clips before it.
        time: when it arrived (the fake's clock).
    """

    audio: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    content_type: str
    sample_rate: int
    id: str | None
    queue_play: bool
    time: float

    @property
    def seconds(self) -> float:
        """How long the clip plays."""
        if self.content_type == "raw":
            return len(self.audio) / (2 * self.sample_rate)
        try:
            with wave.open(io.BytesIO(self.audio), "rb") as wav:
                return wav.getnframes() / wav.getframerate()
        except (wave.Error, EOFError, ZeroDivisionError):
            return 0.0


class _Reporter:
    """Where a stream's transcript lines and violations go (its call, or its own lists)."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.lines: list[str] = []
        self.changed = trio.Event()

    def now(self) -> float:
        return trio.current_time()

    def log(self, text: str) -> None:
        self.lines.append(text)

    def violate(self, kind: ViolationKind, message: str, frame: str | None) -> None:
        self.violations.append(Violation(kind=kind, message=message, frame=frame, time=self.now()))

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class FakeAudioStream:
    """One audio socket of a ``listen`` verb, as jambonz's media server runs it.

    Get one from :meth:`FakeCall.open_listen <jambonz_trio.testing.FakeCall.open_listen>`
    (the call's verb, its URL resolution and credentials) or :func:`open_fake_audio_stream`.
    The reader records everything the app sends as it arrives; the methods send jambonz's side.
    They never raise for a socket that is closed (they report it, or do nothing), and the
    fake sets no timeout on them but the close handshake's (``close_timeout``): the caller's
    ``trio.fail_after`` bounds a write held by back-pressure, :meth:`feed` and
    :meth:`wait_closed`. Violations (messages the media server would ignore or misread) are
    recorded, not raised here: a call's go to the call (raised at its next call in strict
    mode), a stream of :func:`open_fake_audio_stream` raises them when its block exits.

    Attributes:
        verb: the ``listen`` verb being run.
        url: where the socket was opened (after jambonz's URL resolution).
        metadata: the first frame sent.
    """

    def __init__(
        self,
        *,
        verb: Listen,
        url: str,
        metadata: Mapping[str, Any],
        reporter: _Reporter,
        playout: float | None,
        close_timeout: float,
    ) -> None:
        self.verb = verb
        self.url = url
        self.metadata = dict(metadata)
        self._reporter = reporter
        self._playout = playout
        self._close_timeout = close_timeout
        bidi = verb.bidirectional_audio or BidirectionalAudio()
        #: FS acts on playAudio only if enabled (FS lib/tasks/listen.js:54-57, 208-210)
        self.play_enabled = bidi.enabled is not False and verb.disable_bidirectional_audio is not True
        #: the module refuses playAudio in streaming mode (lws_glue.cpp:212-215)
        self.streaming = bool(bidi.streaming)
        #: streamed audio is played only with a non-zero rate (mod_audio_fork.c:264-279)
        self.playback_rate = int(bidi.sample_rate or 0) if self.streaming else 0
        # the verb's format, whatever its metadata says: FS forks at this.sampleRate and
        # this.mixType (FS v0.9.8 lib/tasks/listen.js:45-46, :180-181), while the verb's metadata
        # may overwrite those keys in the metadata frame (Object.assign, :168-171)
        self.sample_rate = verb.sample_rate or 8000
        self.channels = 2 if verb.mix_type == "stereo" else 1
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._stream: _SniffingStream | None = None
        self._played = bytearray()
        self._frames_from_app = 0
        self._frames_to_app = 0
        self._bytes_to_app = 0
        self._rx_samples = 0  # streamed samples received (at the playback rate)
        self._odd = 0  # a trailing odd byte kept for the next message (lws_glue.cpp:55-70)
        self._played_samples = 0
        self._marks: deque[tuple[int, str]] = deque()  # pending: (position, name)
        self._mark_names: list[str] = []
        self._mark_events: list[tuple[str, str]] = []
        self._clips: list[PlayAudioRecord] = []
        self._clip_queue: deque[PlayAudioRecord] = deque()
        self._clip_scope: trio.CancelScope | None = None
        self._messages: list[dict[str, Any]] = []
        self._kills = 0
        self._clear_marks = 0
        self._dtmf_sent: list[str] = []
        self._outbox: list[str] = []  # text frames the module will write (events)
        self._playout_wake = trio.Event()
        self._clip_wake = trio.Event()
        self.closed = trio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed_by: Literal["jambonz", "app"] | None = None
        #: why the listen ended for jambonz (``disconnect``, ``app-closed``, ``stop``,
        #: ``finish-on-key``, ``error``), ``None`` while it runs
        self.ended: str | None = None
        self.digits: str | None = None

    # -- records -----------------------------------------------------------------------------

    @property
    def played(self) -> bytes:
        """Every byte of streamed audio the app sent (binary frames, concatenated)."""
        return bytes(self._played)

    @property
    def played_seconds(self) -> float:
        """Streamed audio received, in seconds at the playback rate (0 if the rate is unknown)."""
        return len(self._played) / (2 * self.playback_rate) if self.playback_rate else 0.0

    frames_from_app = Forwarded[int]("_frames_from_app", "Binary frames the app sent.")
    frames_sent = Forwarded[int]("_frames_to_app", "Binary audio frames the fake sent to the app.")
    clips = Forwarded[list[PlayAudioRecord]](
        "_clips", "Every ``playAudio`` clip the app sent, decoded.", copy=True
    )
    marks = Forwarded[list[str]]("_mark_names", "The names of the marks the app sent, in order.", copy=True)
    mark_events = Forwarded[list[tuple[str, str]]](
        "_mark_events",
        """``(name, "playout" | "cleared")`` for every mark event sent to the app.""",
        copy=True,
    )
    messages = Forwarded[list[dict[str, Any]]](
        "_messages", "Every JSON message the app sent (parsed), in order.", copy=True
    )
    kill_audio_count = Forwarded[int]("_kills", "How many ``killAudio`` messages arrived.")
    clear_marks_count = Forwarded[int]("_clear_marks", "How many ``clearMarks`` messages arrived.")
    violations = Forwarded[list[Violation]](
        "_reporter.violations",
        "The violations of this stream (those of a call's stream are the call's too).",
        copy=True,
    )

    # -- sending jambonz's side ---------------------------------------------------------------

    async def send_audio(self, pcm: bytes) -> bool:
        """Send one binary frame of caller audio; ``False`` if the socket is closed.

        Blocks while the socket does not take the frame (the caller's timeout). When the
        socket is already closed it returns at once, without a checkpoint.
        """
        if self._ws is None or self.closed.is_set():
            return False
        try:
            await self._ws.send_message(pcm)
        except trio_websocket.ConnectionClosed:
            return False
        self._frames_to_app += 1
        self._bytes_to_app += len(pcm)
        return True

    async def feed(
        self, source: AudioSource, *, pace: float | None = 1.0, frame_seconds: float = FRAME_SECONDS
    ) -> int:
        """Send ``source`` (converted to the stream's rate and channels) in frames of
        ``frame_seconds``: at ``pace`` times real time on trio's clock (``None``: as fast as
        the socket takes it). Stops early if the socket closes. Returns the frames sent.

        Blocks for the source's duration divided by ``pace`` (with ``None``, while the socket
        takes the frames); the caller owns any timeout.

        Raises:
            ValueError: ``source`` has more than two channels.
        """
        pcm = source.converted(self.sample_rate, self.channels)
        size = max(2 * self.channels, round(self.sample_rate * frame_seconds) * 2 * self.channels)
        start = trio.current_time()
        sent = 0
        for offset in range(0, len(pcm), size):
            if not await self.send_audio(pcm[offset : offset + size]):
                break
            sent += 1
            if pace is not None:
                await trio.sleep_until(start + sent * frame_seconds / pace)
        return sent

    async def send_dtmf(self, digit: str, *, duration: int = 1600) -> bool:
        """The caller presses ``digit``: sent as ``{"event":"dtmf","dtmf":...,"duration":"..."}``
        when the verb has ``passDtmf`` (FS lib/tasks/listen.js:223-231); a ``finishOnKey``
        match ends the listen (and closes the socket). Returns whether a frame was sent.

        Blocks while the frame is written and, on a ``finishOnKey`` match, like :meth:`stop`.
        """
        sent = False
        if self.verb.pass_dtmf:
            sent = await self._send_text(dumps({"event": "dtmf", "dtmf": digit, "duration": str(duration)}))
            if sent:
                self._dtmf_sent.append(digit)
        if self.verb.finish_on_key is not None and digit == self.verb.finish_on_key:
            self.digits = digit
            await self.stop("finish-on-key")
        return sent

    async def stop(self, why: str = "stop") -> None:
        """jambonz ends the listen (``maxLength``, hangup, a redirect...): the module sends the
        text frames it has queued, then closes with 1000 and no reason, and waits for the
        app's Close (``docs/protocol.md`` §13.7).

        Blocks until the app's Close, at most ``close_timeout`` seconds (the module's 5 s by
        default); does nothing once the socket is closed. Raises nothing of its own.
        """
        if self.ended is None:
            self.ended = why
        ws = self._ws
        if ws is None or self.closed.is_set():
            return
        self._reporter.log(f"jambonz ends the listen ({why}): close 1000")
        self.closed_by = self.closed_by or "jambonz"
        if self._stream is not None:
            self._stream.closing()
        with trio.move_on_after(self._close_timeout):
            await ws.aclose(1000)
        self._mark_closed(1000, None)

    async def wait_closed(self) -> None:
        """Block until the socket is closed (by either side). No timeout of its own: the
        caller's (``trio.fail_after``)."""
        await self.closed.wait()

    # -- the module ------------------------------------------------------------------------

    def _poke(self) -> None:
        self._playout_wake.set()
        self._clip_wake.set()

    def _violate(self, kind: ViolationKind, message: str, frame: str | None = None) -> None:
        self._reporter.violate(kind, message, frame)

    def _bad_message(self, why: str, text: str) -> None:
        """The app's JSON message ``text`` is one the media server would not act on: ``why``."""
        self._violate("audio-message", why, text)

    def _mark_closed(self, code: int | None, reason: str | None) -> None:
        if self.closed.is_set():
            return
        self.close_code, self.close_reason = code, reason
        if self.closed_by is None:
            self.closed_by = "app"
            if self.ended is None:
                # the module fires disconnect on a far-end close and FS kills the task
                self.ended = "app-closed"
            self._reporter.log(f"the app closed the audio socket: {code} {reason or ''}".rstrip())
        self.closed.set()
        self._poke()
        if self._clip_scope is not None:
            self._clip_scope.cancel()
        self._reporter.notify()

    async def _send_text(self, text: str) -> bool:
        ws = self._ws
        if ws is None or self.closed.is_set():
            return False
        try:
            await ws.send_message(text)
        except trio_websocket.ConnectionClosed:
            return False
        self._reporter.log(f"jambonz->app  {text}")
        return True

    async def _read_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        while True:
            try:
                frame = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                reason = exc.reason
                self._mark_closed(
                    reason.code if reason is not None else 1006, reason.reason if reason else None
                )
                return
            try:
                if isinstance(frame, bytes):
                    self._on_binary(frame)
                else:
                    await self._on_text(frame)
            finally:
                if self._stream is not None:
                    self._stream.message_read()  # the app's next frame may come (in order, as lws)
            self._reporter.notify()

    def _on_binary(self, frame: bytes) -> None:
        self._frames_from_app += 1
        if not frame:
            return  # ignored by the module (audio_pipe.cpp:159-161)
        if not self.playback_rate:
            if self._frames_from_app == 1 or self._frames_from_app % 500 == 0:
                self._violate(
                    "audio-frame",
                    "binary audio from the app, but this listen does not stream audio back "
                    "(bidirectionalAudio needs streaming and a sampleRate): jambonz discards it",
                )
            return
        self._played += frame
        total = self._odd + len(frame)
        self._rx_samples += total // 2
        self._odd = total % 2
        if self._playout is None:
            self._advance_playout(instant=True)
        self._poke()

    async def _on_text(self, text: str) -> None:
        self._reporter.log(f"app->jambonz  {text}")
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):  # (nested too deep: cJSON gives up too)
            self._bad_message("not JSON: jambonz's media server logs and ignores it", text)
            return
        if not isinstance(obj, dict):
            self._bad_message("not a JSON object: the media server ignores it", text)
            return
        self._messages.append(obj)
        kind = obj.get("type")
        data = obj.get("data")
        if not isinstance(kind, str):
            self._bad_message("no 'type': the media server reports it as 'json', which jambonz ignores", text)
        elif kind == "playAudio":
            self._on_play_audio(data, text)
        elif kind == "killAudio":
            self._kills += 1
            self._kill()
        elif kind == "mark":
            name = data.get("name") if isinstance(data, dict) else None
            if not isinstance(name, str):
                self._bad_message("mark without data.name (a string): the media server ignores it", text)
            elif any(ch in '"\\' or ord(ch) < 0x20 for ch in name):
                self._bad_message(
                    f"mark name {name!r}: echoed unescaped by the media server, its mark event is not JSON",
                    text,
                )
            elif len(self._marks) >= MAX_MARKS:
                self._bad_message(f"over {MAX_MARKS} marks pending: the media server drops this one", text)
            else:
                self._mark_names.append(name)
                self._marks.append((self._rx_samples, name))
                if self._playout is None:
                    self._advance_playout(instant=True)
                self._poke()  # else it fires on a playout tick, as the module's do
        elif kind == "clearMarks":
            self._clear_marks += 1
            self._marks.clear()  # moved to the cleared list, no events (lws_glue.cpp:321-332)
        elif kind == "disconnect":
            # FS kills the verb: MAF writes its queued text, then closes (listen.js:313-317)
            await self._flush()
            await self.stop("disconnect")
            return
        elif kind == "error":
            self.ended = self.ended or "error"  # FS ends the verb, the socket stays open
            self._bad_message("'error': jambonz ends the listen but leaves the audio socket open", text)
        else:
            self._bad_message(f"type {kind!r}: jambonz 0.9.8 does nothing with it", text)
        await self._flush()

    def _on_play_audio(self, data: Any, text: str) -> None:
        if self.streaming:
            self._bad_message(
                "playAudio while the listen streams audio back: the media server refuses it", text
            )
            return
        if not isinstance(data, dict):
            self._bad_message("playAudio without data: the media server ignores it", text)
            return
        content_type = data.get("audioContentType")
        if not isinstance(content_type, str):
            self._bad_message(
                "playAudio without audioContentType: undefined behaviour in the media server", text
            )
            return
        if content_type not in ("raw", "wav", "wave"):
            self._bad_message(f"playAudio audioContentType {content_type!r}: nothing is played", text)
            return
        rate = 16000
        if content_type == "raw":
            given = data.get("sampleRate")
            if isinstance(given, int) and not isinstance(given, bool) and given in PLAY_AUDIO_SAMPLE_RATES:
                rate = given
            else:
                self._bad_message(
                    f"playAudio sampleRate {given!r} is not a number the media server knows: played as 16000",
                    text,
                )
        content = data.get("audioContent")
        try:
            audio = base64.b64decode(content, validate=True) if isinstance(content, str) else None
        except (binascii.Error, ValueError):
            audio = None
        if audio is None:
            self._bad_message("playAudio audioContent is not base64: nothing is played", text)
            return
        ident = data.get("id")
        record = PlayAudioRecord(
            audio=audio,
            content_type=content_type,
            sample_rate=rate,
            id=str(ident) if ident is not None else None,
            queue_play=bool(data.get("queuePlay")),
            time=self._reporter.now(),
        )
        self._clips.append(record)
        if not self.play_enabled:
            self._bad_message("playAudio on a listen without bidirectional audio: jambonz ignores it", text)
            return
        if record.queue_play:
            if len(self._clip_queue) <= MAX_QUEUED_CLIPS - 1:
                self._clip_queue.append(record)
        else:
            # FS empties its queue and plays this one (FS lib/tasks/listen.js:287-292); the fake
            # lets it interrupt the clip playing
            self._clip_queue.clear()
            self._clip_queue.append(record)
            if self._clip_scope is not None:
                self._clip_scope.cancel()
        self._poke()

    def _kill(self) -> None:
        # stop the current clip (uuid_break; FS's queue is kept), drop streamed audio not yet
        # played, clear pending marks (lws_glue.cpp:291-300, 936-963)
        if self._clip_scope is not None:
            self._clip_scope.cancel()
        self._played_samples = self._rx_samples
        while self._marks:
            _, name = self._marks.popleft()
            self._queue_mark_event(name, "cleared")
        self._poke()

    def _queue_mark_event(self, name: str, event: str) -> None:
        self._mark_events.append((name, event))
        # the module's own spelling, spaces included (lws_glue.cpp:573-575)
        self._outbox.append('{"type": "mark", "data": {"name":"' + name + '", "event": "' + event + '"}}')

    def _advance_playout(self, *, instant: bool, samples: int = 0) -> None:
        if instant:
            self._played_samples = self._rx_samples
        else:
            self._played_samples = min(self._rx_samples, self._played_samples + samples)
        while self._marks and self._marks[0][0] <= self._played_samples:
            _, name = self._marks.popleft()
            self._queue_mark_event(name, "playout")

    async def _flush(self) -> None:
        while self._outbox:
            text = self._outbox.pop(0)
            if not await self._send_text(text):
                self._outbox.clear()

    def _playout_idle(self) -> bool:
        return self._played_samples >= self._rx_samples and not self._marks

    async def _run_playout(self) -> None:
        """Streamed playout at ``playout`` x real time: every 20 ms a frame's worth of the
        received audio plays and the marks it passes fire."""
        speed = self._playout
        while not self.closed.is_set():
            if speed is None or self._playout_idle():
                wake = self._playout_wake = trio.Event()
                await self._flush()
                if speed is None or self._playout_idle():
                    await wake.wait()
                continue
            await trio.sleep(FRAME_SECONDS / speed)
            self._advance_playout(instant=False, samples=max(1, round(self.playback_rate * FRAME_SECONDS)))
            await self._flush()

    async def _run_clips(self) -> None:
        """playAudio clips, one after another; ``playDone`` after each (FS listen.js:266-282)."""
        speed = self._playout
        while not self.closed.is_set():
            if not self._clip_queue:
                self._clip_wake = trio.Event()
                await self._clip_wake.wait()
                continue
            clip = self._clip_queue.popleft()
            started = trio.current_time()
            with trio.CancelScope() as scope:
                self._clip_scope = scope
                if speed is not None:
                    await trio.sleep(clip.seconds / speed)
            self._clip_scope = None
            elapsed = (
                clip.seconds if speed is None else min(clip.seconds, (trio.current_time() - started) * speed)
            )
            if self.closed.is_set():
                return
            done: dict[str, Any] = {} if clip.id is None else {"id": clip.id}
            done.update(
                playbackSeconds=str(math.floor(elapsed)),
                playbackMilliseconds=str(round(elapsed * 1000)),
                playbackLastOffsetPos=str(round(elapsed * clip.sample_rate)),
            )
            await self._send_text(dumps({"type": "playDone", "data": done}))
            self._reporter.notify()


@asynccontextmanager
async def _open(
    connector: Connector,
    *,
    verb: Listen,
    url: str,
    resource: str,
    host: str,
    metadata: Mapping[str, Any],
    username: str | None,
    password: str | None,
    reporter: _Reporter,
    playout: float | None,
    handshake_timeout: float,
    close_timeout: float,
    subprotocol: str,
) -> AsyncIterator[FakeAudioStream]:
    first_frame = _metadata_frame(metadata)
    stream = FakeAudioStream(
        verb=verb, url=url, metadata=metadata, reporter=reporter, playout=playout, close_timeout=close_timeout
    )
    headers: list[tuple[bytes, bytes]] = [(b"origin", f"http://{host}".encode("ascii", "replace"))]
    if username and password:
        headers.append(basic_auth_header(username, password))
    reporter.log(f"media server connects to {url}")
    try:
        raw = await connector()
    except Exception as exc:
        raise ConnectFailed(f"the audio connector failed: {type(exc).__name__}: {exc}") from exc
    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            ws, sniff = await handshake(
                nursery,
                raw,
                host=host,
                resource=resource,
                extra_headers=headers,
                within=handshake_timeout,
                max_message_size=16 * 1024 * 1024,
                subprotocol=subprotocol,
                require_subprotocol=False,
            )
        except ConnectFailed as exc:
            reporter.log(f"audio handshake failed: {exc.message}")
            failure = exc
            nursery.cancel_scope.cancel()
        else:
            stream._ws, stream._stream = ws, sniff
            reporter.log(f"audio socket open (subprotocol {ws.subprotocol}); metadata sent")
            await ws.send_message(first_frame)
            nursery.start_soon(stream._read_loop)
            nursery.start_soon(stream._run_playout)
            nursery.start_soon(stream._run_clips)
            try:
                yield stream
            except BaseException as exc:
                failure = exc  # raised below, outside the nursery (not as an ExceptionGroup)
            finally:
                with trio.CancelScope(shield=True):
                    if not stream.closed.is_set():
                        await stream.stop(stream.ended or "stop")
                    await abort_stream(sniff)
                nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


@asynccontextmanager
async def open_fake_audio_stream(
    connector: Connector,
    listen: Listen,
    *,
    path: str | None = None,
    host: str = "localhost",
    call: CallData | None = None,
    username: str | None = None,
    password: str | None = None,
    playout: float | None = 1.0,
    strict: bool = True,
    handshake_timeout: float = 10.0,
    close_timeout: float = CLOSE_TIMEOUT,
    subprotocol: str = AUDIO_SUBPROTOCOL,
) -> AsyncIterator[FakeAudioStream]:
    """Open an audio socket to the app as jambonz's media server would for ``listen``, on its
    own (without a fake call): ``path`` (default: the path and query of ``listen.url``), Basic
    auth when both ``username`` and ``password`` are given, the metadata of ``call`` (default: a
    fresh :class:`CallData`). On exit the socket is closed (1000) if still open.

    ``playout`` is the speed of the emulated playout of streamed audio and clips (1.0: real
    time on trio's clock; ``None``: instant).

    Entry blocks while ``connector`` connects (no timeout of the fake's: the caller's) and for
    the handshake (at most ``handshake_timeout`` seconds) and the metadata frame. Exit blocks
    until the app answers the close, at most ``close_timeout`` seconds, shielded from
    cancellation.

    Raises:
        ConnectFailed: (and subclasses) on entry: the connector failed (its exception is the
            ``__cause__``) or the handshake did.
        ProtocolViolation: on exit, in strict mode, for messages the media server would
            ignore (not when the block raised: its exception propagates).
        FakeJambonzError: on entry, before connecting: the verb's ``metadata`` is not a
            mapping, or holds a value JSON cannot carry (an object, a set, bytes, NaN ...).
    """
    reporter = _Reporter()
    if path is None:
        parts = urlsplit(listen.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    metadata = listen_metadata(listen, call or CallData())
    async with _open(
        connector,
        verb=listen,
        url=listen.url,
        resource=path,
        host=host,
        metadata=metadata,
        username=username,
        password=password,
        reporter=reporter,
        playout=playout,
        handshake_timeout=handshake_timeout,
        close_timeout=close_timeout,
        subprotocol=subprotocol,
    ) as stream:
        yield stream
    if strict and reporter.violations:
        raise ProtocolViolation(reporter.violations)


# -- the media server of a fake call -----------------------------------------------------------


class _Elsewhere(ConnectFailed):
    """A listen URL the fake cannot reach from a test connected in memory: the audio goes to a
    server outside the test (a recorder, a transcriber)."""


class _CallReporter(_Reporter):
    """Transcript lines and violations of a call's audio socket go to the call."""

    def __init__(self, core: _Core, index: int) -> None:
        super().__init__()
        self._core = core
        self._index = index

    def now(self) -> float:
        return self._core._now()

    def log(self, text: str) -> None:
        super().log(text)
        self._core._log(None, "event", f"[audio {self._index}] {text}")

    def violate(self, kind: ViolationKind, message: str, frame: str | None) -> None:
        super().violate(kind, message, frame)
        self._core._violate(kind, f"audio socket {self._index}: {message}", frame=frame)

    def notify(self) -> None:
        super().notify()
        self._core._notify()


class _MediaServer(_Core):
    """jambonz's media server for a :class:`FakeCall`: the audio sockets of its listens."""

    #: The call hook's Basic credentials (set by ``open_fake_call``): a relative listen URL
    #: uses them (FS lib/session/call-session.js:1449-1454).
    _call_auth: tuple[str, str] | None = None
    #: ``url -> connector`` for audio sockets, when the call's own connector cannot reach a
    #: listen URL (an absolute URL in a test that connects in memory).
    audio_connector: Callable[[str], Connector] | None = None
    _audio_list: list[FakeAudioStream] | None = None

    @property
    def audio_streams(self) -> list[FakeAudioStream]:
        """Every audio socket the fake opened for this call, in order."""
        return list(self._audio_list or [])

    def _call_url(self) -> str:
        c = self._connector
        if isinstance(c, TcpConnector):
            return f"{'wss' if c.ssl_context is not None else 'ws'}://{c.host}:{c.port}{self._path}"
        return f"ws://{self._host}{self._path}"

    def _audio_target(self, url: str) -> tuple[Connector, str, str]:
        """(connector, request target, host) for an audio socket to ``url``."""
        parts = urlsplit(url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
        if scheme not in ("ws", "wss") or not parts.hostname:
            raise ConnectFailed(
                f"the media server cannot connect to {url!r} (ws, wss, http or https URLs only)"
            )
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname
        if self.audio_connector is not None:
            return self.audio_connector(url), resource, host
        c = self._connector
        port = parts.port or (443 if scheme == "wss" else 80)
        if isinstance(c, TcpConnector):
            if (host, port) == (c.host, c.port):
                return TcpConnector(c.host, c.port, resource, c.ssl_context), resource, host
            return (
                tcp_connector(urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))),
                resource,
                host,
            )
        if host == urlsplit(self._call_url()).hostname:
            return c, resource, host
        raise _Elsewhere(
            f"listen URL {url!r} is not on the app the fake connects to in memory; "
            "set FakeCall.audio_connector to reach it"
        )

    @asynccontextmanager
    async def open_listen(
        self,
        verb: Listen,
        *,
        playout: float | None = 1.0,
        subprotocol: str = AUDIO_SUBPROTOCOL,
    ) -> AsyncIterator[FakeAudioStream]:
        """Open the audio socket of ``verb`` as jambonz 0.9.8's media server would: the URL
        resolved like call-session.js (a relative URL against the call hook, with the call
        hook's credentials, else the verb's ``wsAuth``), the call's metadata, then the
        :class:`FakeAudioStream` for the test to drive. On exit the socket is closed (1000,
        as when jambonz ends the verb) if it is still open. Violations go to the call.

        ``playout``: speed of the emulated playout (1.0: real time on trio's clock; ``None``:
        instant).

        Entry blocks while the socket connects (no timeout of the fake's: the caller's) and
        for the handshake (at most 10 s, the module's). Exit blocks until the app answers the
        close, at most 5 s, shielded from cancellation. The violations of the socket are
        the call's: raised at its next call in strict mode, not here.

        Raises:
            ConnectFailed: (and subclasses) on entry: the app refused the socket or could not
                be reached, or its URL is not ``ws``, ``wss``, ``http`` or ``https`` (or, in a
                test connected in memory, not on the app: see :attr:`audio_connector`);
                jambonz would end the verb (and send its ``actionHook``).
            FakeJambonzError: on entry, before connecting: the verb's ``metadata`` is not a
                mapping, or holds a value JSON cannot carry.
        """
        user, password = self._call_auth or (None, None)
        ws_auth = verb.ws_auth
        resolved = resolve_listen_url(
            verb.url,
            call_url=self._call_url(),
            call_username=user,
            call_password=password,
            ws_username=ws_auth.username if ws_auth is not None else None,
            ws_password=ws_auth.password if ws_auth is not None else None,
        )
        try:
            metadata = listen_metadata(verb, self._call)
            _metadata_frame(metadata)  # the test's mistake, told before anything connects
        except FakeJambonzError as exc:
            raise self._fail(exc) from None
        connector, resource, host = self._audio_target(resolved.url)
        if self._audio_list is None:
            self._audio_list = []
        reporter = _CallReporter(self, len(self._audio_list) + 1)
        async with _open(
            connector,
            verb=verb,
            url=resolved.url,
            resource=resource,
            host=host,
            metadata=metadata,
            username=resolved.username,
            password=resolved.password,
            reporter=reporter,
            playout=playout,
            handshake_timeout=10.0,
            close_timeout=CLOSE_TIMEOUT,
            subprotocol=subprotocol,
        ) as stream:
            self._audio_list.append(stream)
            yield stream


# -- run_call's listen -------------------------------------------------------------------------


async def run_listen(runner: _Runner, verb: Listen) -> bool | None:
    """Run a ``listen`` verb for :func:`run_call`: open its audio socket, feed the caller's
    audio (``Caller(audio=...)``), and end the verb the way jambonz would: the app closes the
    socket or sends ``disconnect``, ``maxLength`` passes, a DTMF ``finishOnKey``, a redirect
    replaces the program, or the caller hangs up ``idle`` seconds after their audio ran out.
    Then its ``actionHook`` (if any) is sent, like FS's ``performAction``, a killed verb's too
    (the answer is the new program). Returns ``None``
    if the call ended, ``False`` if a redirect killed the verb, else ``True``."""
    fc, caller = runner.fc, runner.caller
    bidi = verb.bidirectional_audio
    mode = ""
    if bidi is not None and bidi.enabled is not False:
        mode = ", streams audio back" if bidi.streaming else ", plays clips back"
    runner.step(
        "jambonz", f"listen {verb.url} ({verb.sample_rate or 8000} Hz {verb.mix_type or 'mono'}{mode})"
    )
    started = trio.current_time()
    digits: str | None = None
    ended: str | None = None
    hung_up = False
    connected = True
    try:
        async with fc.open_listen(verb, playout=caller.audio_pace) as audio:
            runner.step("jambonz", f"audio socket open: {audio.url}")
            failure: FakeJambonzError | None = None
            async with trio.open_nursery() as nursery:
                fed = trio.Event()

                async def feed() -> None:
                    if caller.audio is not None:
                        await audio.feed(caller.audio, pace=caller.audio_pace)
                    fed.set()

                nursery.start_soon(feed)
                max_end = started + verb.max_length if verb.max_length else math.inf
                quiet_since: float | None = None
                try:
                    while True:
                        if audio.ended is not None or audio.closed.is_set():
                            break
                        if await runner._follow_commands() or runner.ended:
                            audio.ended = "redirect" if not runner.ended else "hangup"
                            break
                        now = trio.current_time()
                        if now >= max_end:
                            audio.ended = "max-length"
                            break
                        if fed.is_set():
                            quiet_since = now if quiet_since is None else quiet_since
                            if now - quiet_since >= runner.idle:
                                audio.ended, hung_up = "hangup", True
                                break
                        await fc.wait_idle(0.05)
                except FakeJambonzError as exc:
                    failure = exc  # raised below, outside the nursery
                nursery.cancel_scope.cancel()
            if failure is not None:
                raise failure
            await audio.stop(audio.ended or "stop")
            digits, ended = audio.digits, audio.ended
            _narrate_audio(runner, audio)
    except _Elsewhere:
        # the audio goes to a server outside this test: the verb runs until something ends it
        runner.step("jambonz", f"the audio goes to {verb.url}, outside this test (FakeCall.audio_connector)")
        ended = None if await runner._play(verb) else "redirect"
    except ConnectFailed as exc:
        # the module reports connect_failed; FS ends the verb (FS lib/tasks/listen.js:260-264)
        runner.step("jambonz", f"the audio socket failed: {exc.message}")
        connected = False
    if hung_up:
        runner.step("caller", "(hangs up)")
        runner.ended = True
        await fc.hangup()
        return None
    if runner.ended or fc.is_over:
        return None
    killed = ended == "redirect"
    if verb.action_hook is not None:
        # a killed listen reports too (FS v0.9.8 lib/tasks/listen.js:93-94: kill() ends the
        # wait, :102-126), and its answer is the new program (expectResponse for a top-level one)
        hook = str(getattr(verb.action_hook, "url", verb.action_hook))
        # after a connect failure the hook has only the call's info: FS sets dialCallDuration
        # in kill() (lib/tasks/listen.js:117-120), which a failed connect never calls
        data: dict[str, Any] = {}
        if connected:
            data["dial_call_duration"] = round(trio.current_time() - started)
        if digits is not None:
            data["digits"] = digits
        runner.step("jambonz", f"listen ends{' (killed)' if killed else ''}; verb:hook {hook}")
        await runner._after_hook(await runner._hook(verb, data))
    return not killed


def _narrate_audio(runner: _Runner, audio: FakeAudioStream) -> None:
    parts = [f"{audio.frames_sent} frames of caller audio sent"]
    if audio.played:
        parts.append(f"the app streamed {audio.played_seconds:.2f} s back")
    if audio.clips:
        parts.append(f"{len(audio.clips)} playAudio clip(s)")
    if audio.mark_events:
        parts.append("marks " + ", ".join(f"{n} ({e})" for n, e in audio.mark_events))
    runner.step("app", "; ".join(parts))
    runner.step("jambonz", f"the listen ended ({audio.ended}); audio socket closed by {audio.closed_by}")
