"""The audio socket of the ``listen`` / ``stream`` verbs, sans-io (``docs/protocol.md`` §13).

jambonz's media server (FreeSWITCH's ``mod_audio_fork``) opens a second websocket to the app
for a ``listen`` verb: one JSON text frame of metadata first, then the caller's audio as binary
L16 frames; the app may answer with binary audio (streaming mode) or JSON messages
(``playAudio``, ``killAudio``, ``disconnect``, ``mark``, ``clearMarks``), and jambonz sends
``playDone``, ``mark`` and DTMF events. This module parses and renders those messages, decides
what a listen URL resolves to, and holds the drop-oldest buffer of inbound audio. It never
imports trio, does no I/O and reads no clock.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections import deque
from collections.abc import Mapping
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from .._errors import LocalProtocolError, RemoteProtocolError
from ._calldata import CallInfo
from ._json import _check_tokens, _decoder, dumps_checked

#: the public names (``jambonz_trio.audio`` exports them); the rest is the library's
__all__ = [
    "AUDIO_SUBPROTOCOL",
    "AUDIO_SUBPROTOCOLS",
    "DOCUMENTED_AUDIO_SUBPROTOCOL",
    "KNOWN_METADATA_KEYS",
    "MAX_MARKS",
    "MAX_METADATA_BYTES",
    "PLAY_AUDIO_SAMPLE_RATES",
    "AudioEvent",
    "AudioMetadata",
    "Dtmf",
    "MarkEvent",
    "PlayDone",
    "UnknownAudioMessage",
    "parse_audio_event",
    "parse_metadata",
    "render_clear_marks",
    "render_disconnect",
    "render_kill_audio",
    "render_mark",
    "render_play_audio",
]

#: The subprotocol ``mod_audio_fork`` offers unless ``MOD_AUDIO_FORK_SUBPROTOCOL_NAME`` names
#: another (§13.2).
AUDIO_SUBPROTOCOL: Final = "audio.drachtio.org"
#: The name jambonz's documentation gives (§13.2): accepted too, by default.
DOCUMENTED_AUDIO_SUBPROTOCOL: Final = "audio.jambonz.org"
#: What an audio route accepts by default.
AUDIO_SUBPROTOCOLS: Final = (AUDIO_SUBPROTOCOL, DOCUMENTED_AUDIO_SUBPROTOCOL)
#: The module copies at most this many bytes of metadata into the first frame (§13.3).
MAX_METADATA_BYTES: Final = 8192
#: ``playAudio`` raw sample rates the module maps to a file type; anything else plays as 16 kHz.
PLAY_AUDIO_SAMPLE_RATES: Final = frozenset({8000, 16000, 24000, 32000, 48000, 64000})
#: Marks the module keeps (pending + in use); more are discarded (§13.5).
MAX_MARKS: Final = 30
#: The query parameter :func:`add_listen_token` puts in a listen URL.
LISTEN_TOKEN_PARAM: Final = "jt_listen"

MixType = Literal["mono", "stereo", "mixed"]
_MIX_TYPES = frozenset({"mono", "stereo", "mixed"})
_DEFAULT_SAMPLE_RATE = 8000  # FS lib/tasks/listen.js:46
_INTEGER = re.compile(r"-?[0-9]{1,11}")


# -- the metadata frame ---------------------------------------------------------------------


def _int(value: Any) -> int | None:
    """An integer from a JSON number or a decimal string (FreeSWITCH hands strings on)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and len(value) < 32:
        try:
            number = float(value)
        except ValueError:
            return None
        return number if number == number and abs(number) != float("inf") else None
    return None


#: Top-level keys of the metadata frame that come from jambonz itself: ``sampleRate`` and
#: ``mixType`` (FS lib/tasks/listen.js:168-171) and the call info (FS
#: lib/session/call-info.js:135-171). Everything else came from the verb's ``metadata``.
KNOWN_METADATA_KEYS: Final = frozenset(
    {
        "sampleRate",
        "mixType",
        "callSid",
        "direction",
        "from",
        "to",
        "callId",
        "sbcCallid",
        "sipStatus",
        "sipReason",
        "callStatus",
        "callerId",
        "accountSid",
        "traceId",
        "applicationSid",
        "fsSipAddress",
        "parentCallSid",
        "originatingSipIp",
        "originatingSipTrunkName",
        "callTerminationBy",
        "duration",
        "customerData",
        "headers",
        "apiBaseUrl",
        "fsPublicIp",
    }
)


#: The call-info keys of the metadata frame (camelCase, as ``CallInfo.toJSON()`` writes them)
#: and their snake_case names in :class:`CallInfo` (the names jambonz's call messages use).
_CALL_KEYS: Final = {
    key: re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), key)
    for key in KNOWN_METADATA_KEYS - {"sampleRate", "mixType"}
}
_CALL_KEYS["customerData"] = "customerData"  # CallInfo reads it under its camelCase name


@attrs.frozen(kw_only=True)
class AudioMetadata:
    """The first frame of an audio socket: audio format, call info and the verb's metadata.

    jambonz merges ``{sampleRate, mixType}``, the call info and the ``listen`` verb's
    ``metadata`` into one flat object, later keys winning (§13.3): a verb's metadata key can
    overwrite any of the others.

    Attributes:
        sample_rate: Hz of the audio jambonz sends (8000 when absent or unreadable, jambonz's
            default; a numeric string is accepted).
        mix_type: ``mono``, ``stereo`` (two interleaved channels: left the caller, right what
            is played to the caller) or ``mixed``; ``mono`` when absent or unknown.
        call: the call info (``call_sid``, ``from_``, ``to``, ``direction``, ``account_sid``,
            ``customer_data``...); a field is ``None`` when absent or of the wrong type.
        custom: the keys jambonz does not set itself, i.e. the verb's ``metadata``.
        raw: the whole object as parsed.
        complete: ``False`` when the frame was not valid JSON (e.g. cut at 8192 bytes by the
            module): the fields are then those of the complete key/value pairs at its start.
        problems: what was tolerated (a rate given as a string, an unknown mix type, a cut
            frame), for logging.
    """

    sample_rate: int = _DEFAULT_SAMPLE_RATE
    mix_type: str = "mono"
    call: CallInfo = attrs.field(factory=CallInfo)
    custom: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    complete: bool = True
    problems: tuple[str, ...] = ()

    @property
    def call_sid(self) -> str | None:
        """The call's sid (``callSid``), if the frame carried one."""
        return self.call.call_sid

    @property
    def channels(self) -> int:
        """2 for ``stereo`` (interleaved L,R), else 1."""
        return 2 if self.mix_type == "stereo" else 1

    @property
    def bytes_per_second(self) -> int:
        """L16 bytes per second of the audio jambonz sends."""
        return self.sample_rate * 2 * self.channels

    @classmethod
    def from_object(cls, raw: Mapping[str, Any], *, complete: bool = True) -> AudioMetadata:
        """The typed view of a parsed metadata object (never raises)."""
        problems: list[str] = [] if complete else ["metadata frame is not valid JSON (cut at 8192 bytes?)"]
        rate = _int(raw.get("sampleRate"))
        if rate is None or not 0 < rate <= 384_000:
            if "sampleRate" in raw:
                problems.append(f"unreadable sampleRate {raw.get('sampleRate')!r}; assuming 8000")
            rate = _DEFAULT_SAMPLE_RATE
        elif not isinstance(raw.get("sampleRate"), int):
            problems.append(f"sampleRate sent as {type(raw.get('sampleRate')).__name__}")
        mix = raw.get("mixType")
        if not (isinstance(mix, str) and mix in _MIX_TYPES):
            if "mixType" in raw:
                problems.append(f"unknown mixType {mix!r}; assuming mono")
            mix = "mono"
        call = CallInfo.from_data({_CALL_KEYS[k]: v for k, v in raw.items() if k in _CALL_KEYS})
        return cls(
            sample_rate=rate,
            mix_type=mix,
            call=attrs.evolve(call, raw=dict(raw)),
            custom={k: v for k, v in raw.items() if k not in KNOWN_METADATA_KEYS},
            raw=dict(raw),
            complete=complete,
            problems=tuple(problems),
        )


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in " \t\n\r":
        i += 1
    return i


def _object_prefix(text: str) -> tuple[dict[str, Any], bool]:
    """The complete top-level key/value pairs at the start of a JSON object text, and whether
    the whole text was one valid object. Never raises."""
    out: dict[str, Any] = {}
    try:
        i = _skip_ws(text, 0)
        if text[i : i + 1] != "{":
            return out, False
        i = _skip_ws(text, i + 1)
        if text[i : i + 1] == "}":
            return out, _skip_ws(text, i + 1) == len(text)
        while True:
            key, i = _decoder.raw_decode(text, i)
            if not isinstance(key, str):
                return out, False
            i = _skip_ws(text, i)
            if text[i : i + 1] != ":":
                return out, False
            value, i = _decoder.raw_decode(text, _skip_ws(text, i + 1))
            i = _skip_ws(text, i)
            sep = text[i : i + 1]
            if sep not in ("}", ","):
                return out, False  # the value may be cut short (a number): not kept
            out[key] = value
            if sep == "}":
                return out, _skip_ws(text, i + 1) == len(text)
            i = _skip_ws(text, i + 1)
    except (ValueError, RecursionError, IndexError):
        return out, False


def parse_metadata(frame: str | bytes) -> AudioMetadata:
    """The metadata of an audio socket's first frame, tolerating what jambonz may send.

    A frame that is not valid JSON (the module cuts metadata at 8192 bytes; FreeSWITCH's
    argument parsing can mangle quotes) yields the complete key/value pairs at its start with
    ``complete=False``, so the call sid and audio format survive a cut. Never raises.
    """
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes | bytearray) else frame
    try:
        _check_tokens(text, MAX_METADATA_BYTES)  # (a value takes a byte at least: any frame the module sends)
    except RemoteProtocolError:
        return AudioMetadata.from_object({}, complete=False)
    obj, complete = _object_prefix(text)
    return AudioMetadata.from_object(obj, complete=complete)


# -- events from jambonz --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Dtmf:
    """A DTMF key the caller pressed (sent when the verb has ``passDtmf``).

    Attributes:
        digit: the key (``0``-``9``, ``*``, ``#``, ``A``-``D``).
        duration: its length in RTP timestamp units (samples at 8 kHz), when readable.
    """

    digit: str
    duration: int | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def duration_ms(self) -> float | None:
        """``duration`` in milliseconds, computed as jambonz does (``duration / 8000 * 1000``)."""
        return None if self.duration is None else self.duration / 8


@attrs.frozen(kw_only=True)
class PlayDone:
    """A ``playAudio`` clip finished playing (non-streaming mode).

    Attributes:
        id: the ``id`` the ``playAudio`` carried (``None`` if it had none).
        playback_seconds / playback_milliseconds: how long it played.
        last_offset_pos: FreeSWITCH's ``playback_last_offset_pos`` (samples).
    """

    id: str | None = None
    playback_seconds: float | None = None
    playback_milliseconds: int | None = None
    last_offset_pos: int | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class MarkEvent:
    """A mark the app sent was reached in the streamed playout (``playout``), or dropped by a
    ``killAudio`` (``cleared``). ``clearMarks`` sends no events."""

    name: str
    event: str
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class UnknownAudioMessage:
    """A JSON object jambonz sent that is none of the above (kept as it came)."""

    raw: Mapping[str, Any]


#: What :func:`parse_audio_event` returns.
AudioEvent = Dtmf | PlayDone | MarkEvent | UnknownAudioMessage


def parse_audio_event(text: str) -> AudioEvent:
    """Parse a text frame jambonz sent after the metadata.

    Tolerant as the wire needs: DTMF comes as ``{"event": "dtmf", ...}`` without ``type``,
    numbers come as strings, ``playDone`` may have no ``data`` (as documented).

    Raises:
        RemoteProtocolError: not a JSON object.
    """
    try:
        _check_tokens(text, 4096)
        obj = _decoder.decode(text)
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"invalid JSON on the audio socket: {str(exc)[:120]}") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"audio socket message is a JSON {type(obj).__name__}, not an object")
    kind = obj.get("type")
    data = obj.get("data")
    fields: Mapping[str, Any] = data if isinstance(data, dict) else {}
    if obj.get("event") == "dtmf" or kind == "dtmf":
        digit = obj.get("dtmf")
        if isinstance(digit, int | str) and not isinstance(digit, bool) and str(digit):
            return Dtmf(digit=str(digit), duration=_int(obj.get("duration")), raw=obj)
    elif kind == "playDone":
        ident = fields.get("id")
        return PlayDone(
            id=str(ident) if isinstance(ident, str | int) and not isinstance(ident, bool) else None,
            playback_seconds=_float(fields.get("playbackSeconds")),
            playback_milliseconds=_int(fields.get("playbackMilliseconds")),
            last_offset_pos=_int(fields.get("playbackLastOffsetPos")),
            raw=obj,
        )
    elif kind == "mark":
        name, event = fields.get("name"), fields.get("event")
        if isinstance(name, str) and isinstance(event, str):
            return MarkEvent(name=name, event=event, raw=obj)
    return UnknownAudioMessage(raw=obj)


# -- messages to jambonz --------------------------------------------------------------------


def render_play_audio(
    audio: bytes,
    *,
    content_type: Literal["raw", "wav", "wave"] = "raw",
    sample_rate: int | None = None,
    id: str | None = None,
    queue_play: bool | None = None,
) -> str:
    """A ``playAudio`` message: ``audio`` base64-encoded, with the fields the module reads.

    ``raw`` audio is mono L16 (little-endian) at ``sample_rate``, which must be one of
    :data:`PLAY_AUDIO_SAMPLE_RATES` (the module plays anything else as 16 kHz); ``wav`` audio
    carries its own format.

    Raises:
        LocalProtocolError: an unsupported sample rate or content type, odd-length raw audio,
            ``wav`` content without a RIFF/WAVE header, or an ``id`` jambonz cannot hand
            back (see :func:`check_play_id`).
    """
    data: dict[str, Any] = {"audioContentType": content_type}
    if content_type == "raw":
        if sample_rate not in PLAY_AUDIO_SAMPLE_RATES:
            raise LocalProtocolError(
                f"playAudio raw sampleRate must be one of {sorted(PLAY_AUDIO_SAMPLE_RATES)}, "
                f"not {sample_rate!r} (the module would play it as 16000)"
            )
        check_pcm(audio)
        data["sampleRate"] = sample_rate
    elif content_type in ("wav", "wave"):
        if audio[:4] != b"RIFF" or audio[8:12] != b"WAVE":
            raise LocalProtocolError("playAudio wav content must be a RIFF/WAVE file")
        if sample_rate is not None:
            data["sampleRate"] = sample_rate
    else:
        raise LocalProtocolError(f"playAudio content type must be raw, wav or wave, not {content_type!r}")
    data["audioContent"] = base64.b64encode(audio).decode("ascii")
    if id is not None:
        check_play_id(id)
        data["id"] = id
    if queue_play is not None:
        data["queuePlay"] = queue_play
    return dumps_checked({"type": "playAudio", "data": data}, None)


def render_kill_audio() -> str:
    """``killAudio``: stop the current ``playAudio`` clip and drop streamed audio not played yet."""
    return '{"type":"killAudio"}'


def render_disconnect() -> str:
    """``disconnect``: ask jambonz to end the ``listen`` verb (it then closes the socket)."""
    return '{"type":"disconnect"}'


def render_clear_marks() -> str:
    """``clearMarks``: forget every pending mark (no events are sent for them)."""
    return '{"type":"clearMarks"}'


def check_play_id(clip_id: str) -> None:
    """Refuse a ``playAudio`` id jambonz cannot hand back in the clip's ``playDone``: FS sends
    that event through a FreeSWITCH command, the JSON in single quotes (drachtio-fsmrf's
    ``forkAudioSendText``), and FreeSWITCH's argument parsing drops single quotes and
    unescapes backslashes (``switch_separate_string``), so the event arrives cut or as invalid
    JSON and is lost (§13.5).

    Raises:
        LocalProtocolError: the id holds ``'``, ``"``, ``\\`` or a control character.
    """
    if any(ch in "'\"\\" or ord(ch) < 0x20 for ch in clip_id):
        raise LocalProtocolError(
            f"playAudio id {clip_id!r} holds a quote, backslash or control character: jambonz "
            "hands it back through FreeSWITCH's argument parsing, which would mangle its "
            "playDone event (lost)"
        )


def check_mark_name(name: str) -> None:
    """Refuse a mark name the module would echo back as invalid JSON: it builds the ``mark``
    event by string concatenation, without escaping (§13.5).

    Raises:
        LocalProtocolError: empty, or holding ``"``, ``\\`` or a control character.
    """
    if not isinstance(name, str) or not name:
        raise LocalProtocolError("a mark name must be a non-empty string")
    if any(ch in '"\\' or ord(ch) < 0x20 for ch in name):
        raise LocalProtocolError(
            f"mark name {name!r} holds a quote, backslash or control character: jambonz echoes "
            "it unescaped, so its mark event would not be valid JSON"
        )


def render_mark(name: str) -> str:
    """``mark``: a named point in the streamed playout; jambonz reports it when reached.

    Raises:
        LocalProtocolError: see :func:`check_mark_name`.
    """
    check_mark_name(name)
    return dumps_checked({"type": "mark", "data": {"name": name}}, None)


#: The sample mod_audio_fork puts in its playout buffer where a ``mark`` stands (0xFFFF: -1 as
#: L16), and takes for one while marks are pending, whatever sent it (MAF
#: ``lws_glue.cpp:30``, ``:98-101``, ``:990-1016``): a real -1 sample is dropped and fires the
#: next mark early. Streamed audio carries -2 instead (one step, inaudible).
_MARKER_SAMPLE = b"\xff\xff"


def without_marker_samples(pcm: bytes) -> bytes:
    """``pcm`` (L16, little-endian, whole samples) with every -1 sample sent as -2, so that
    the module never takes audio for a ``mark`` (see :data:`_MARKER_SAMPLE`). The same object
    when there is none (the common case: one scan in C); otherwise done in C-level steps too
    (a quiet noise floor holds many -1 samples)."""
    if pcm.find(_MARKER_SAMPLE) == -1:
        return pcm
    low, high = pcm[0::2], pcm[1::2]  # each sample's low byte, high byte
    # a 1 in each byte where both are 0xff (a -1 sample), 0 elsewhere
    both = int.from_bytes(low.translate(_ONES), "big") & int.from_bytes(high.translate(_ONES), "big")
    if not both:
        return pcm  # the 0xff pairs all straddle two samples
    out = bytearray(pcm)
    # 0xff - 1 = 0xfe in exactly those bytes: no borrow crosses a byte
    out[0::2] = (int.from_bytes(low, "big") - both).to_bytes(len(low), "big")
    return bytes(out)


#: ``bytes.translate`` table: 0xff -> 1, every other byte -> 0.
_ONES = bytes(256 - 1) + b"\x01"


def check_pcm(audio: bytes | bytearray | memoryview, channels: int = 1) -> None:
    """Refuse L16 audio that is not made of whole sample frames.

    The length is measured in bytes: a ``memoryview`` of 16-bit samples (``array('h')``, a
    numpy ``int16`` buffer) has ``len()`` in samples, so its ``nbytes`` is used.

    Raises:
        LocalProtocolError: the length is not a multiple of ``2 * channels``.
    """
    size = audio.nbytes if isinstance(audio, memoryview) else len(audio)
    if size % (2 * channels):
        raise LocalProtocolError(
            f"{size} bytes is not a whole number of 16-bit {channels}-channel sample frames"
        )


# -- listen URLs ----------------------------------------------------------------------------


def new_listen_token() -> str:
    """A fresh, unguessable token (128 random bits) naming one listen."""
    return secrets.token_urlsafe(16)


def add_listen_token(url: str, token: str) -> str:
    """``url`` with ``jt_listen=<token>`` added to its query (any fragment kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != LISTEN_TOKEN_PARAM]
    query.append((LISTEN_TOKEN_PARAM, token))
    return urlunsplit(parts._replace(query=urlencode(query)))


def listen_token(target: str) -> str | None:
    """The listen token of a request target (``/path?…&jt_listen=…``), if it has exactly one."""
    query = target.partition("?")[2].partition("#")[0]
    if LISTEN_TOKEN_PARAM not in query:
        return None
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == LISTEN_TOKEN_PARAM]
    return values[0] if len(values) == 1 and values[0] else None


@attrs.frozen
class ResolvedListen:
    """Where jambonz's media server connects for a ``listen`` verb, and with which credentials."""

    url: str
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)


def resolve_listen_url(
    url: str,
    *,
    call_url: str,
    call_username: str | None = None,
    call_password: str | None = None,
    ws_username: str | None = None,
    ws_password: str | None = None,
) -> ResolvedListen:
    """What FS 0.9.8 makes of a listen verb's ``url`` (§13.1): a URL starting with ``/`` is
    appended to ``scheme://host[:port]`` of the call hook (its path, query, fragment and
    user-info dropped), and the call hook's credentials, if it has both, replace ``wsAuth``;
    any other URL is used as it is, with ``wsAuth`` (only when both fields are non-empty)."""
    username, password = (ws_username, ws_password) if ws_username and ws_password else (None, None)
    if not url.startswith("/"):
        return ResolvedListen(url, username, password)
    parts = urlsplit(call_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    base = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port is not None else "")
    if call_username and call_password:
        username, password = call_username, call_password
    return ResolvedListen(base + url, username, password)


# -- the inbound audio buffer ---------------------------------------------------------------

#: What one buffered chunk costs beyond its payload, rounded up. On 64-bit CPython a ``bytes``
#: object has 33 bytes of its own (``sys.getsizeof(b"")``: reference count, type, length,
#: cached hash, the trailing NUL) and its deque slot is an 8-byte pointer (in blocks of 64):
#: 41 bytes more than the payload, which the allocator rounds up to a multiple of 16 (so up to
#: 56). A 2-byte frame costs about 25 times its payload; a frame of this size or more costs
#: at most twice its payload. (``tests/protocol/test_audio.py`` checks the measure.)
CHUNK_OVERHEAD: Final = 64


class ChunkBuffer:
    """Audio chunks waiting for a consumer, bounded in bytes; the oldest go first when full.

    Each chunk is charged ``max(len(chunk), min_charge)`` against ``max_bytes``. With
    ``min_charge=CHUNK_OVERHEAD`` (what an audio stream uses) the bound holds in real memory
    within a factor of two, whatever the frame sizes (a chunk costs at most twice its charge),
    while frames of :data:`CHUNK_OVERHEAD` bytes or more, such as every frame jambonz sends
    (20 ms: 320 bytes and up), are charged their payload exactly; with ``min_charge=0`` the
    bound counts payload bytes only. The newest chunk is always kept, even if it alone is over
    ``max_bytes`` (the websocket's frame limit bounds it), so memory stays under that bound
    plus one frame.

    ``nbytes`` is the payload buffered (at most ``max_bytes`` plus that newest frame).
    """

    __slots__ = (
        "_charged",
        "_chunks",
        "dropped_bytes",
        "dropped_chunks",
        "max_bytes",
        "min_charge",
        "nbytes",
    )

    def __init__(self, max_bytes: int, *, min_charge: int = 0) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if min_charge < 0:
            raise ValueError("min_charge must not be negative")
        self.max_bytes = max_bytes
        self.min_charge = min_charge
        self._chunks: deque[bytes] = deque()
        self.nbytes = 0
        self._charged = 0
        self.dropped_chunks = 0
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return len(self._chunks)

    def push(self, chunk: bytes) -> int:
        """Append ``chunk``; drop the oldest chunks while over the bound. Returns how many were
        dropped (counted in ``dropped_chunks`` / ``dropped_bytes`` too)."""
        chunks = self._chunks
        floor = self.min_charge
        chunks.append(chunk)
        size = len(chunk)
        self.nbytes += size
        self._charged += max(size, floor)
        dropped = 0
        while self._charged > self.max_bytes and len(chunks) > 1:
            old = len(chunks.popleft())
            self.nbytes -= old
            self._charged -= max(old, floor)
            self.dropped_bytes += old
            dropped += 1
        self.dropped_chunks += dropped
        return dropped

    def pop(self) -> bytes | None:
        """The oldest chunk, or ``None`` when empty."""
        if not self._chunks:
            return None
        chunk = self._chunks.popleft()
        self.nbytes -= len(chunk)
        self._charged -= max(len(chunk), self.min_charge)
        return chunk

    def clear(self) -> None:
        """Forget every chunk (not counted as dropped)."""
        self._chunks.clear()
        self.nbytes = self._charged = 0
