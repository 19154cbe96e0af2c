"""What the application sends: ``ack`` and ``command`` messages, and a typed model per command.

Only two top-level types exist (``shared/protocol.md`` §5). The command envelope is
camelCase where the feature server reads camelCase (``queueCommand``, ``callSid``) and snake
where it reads snake (``tool_call_id``); ``call_sid`` (snake) would be silently ignored.

Each command class below produces exactly the ``data`` shape the 0.9.8 handler reads
(§5.3): wrapped ``{"sip_request": {...}}`` and ``{"dtmf": {...}}``, object forms for the
``*:status`` commands, and so on. :class:`RawCommand` sends anything a newer server accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import attrs

from ._verbs import Config, Dub, Play, Say
from ._verbs_base import Hook, Verb, structure_verbs, unstructure_verbs
from ._wire import converter

__all__ = [
    "COMMAND_TYPES",
    "Ack",
    "BoostAudio",
    "CallStatusCommand",
    "Command",
    "ConfHoldStatus",
    "ConfMuteStatus",
    "ConfParticipantAction",
    "ConfigCommand",
    "DialCommand",
    "DtmfCommand",
    "DubCommand",
    "ListenStatus",
    "LlmToolOutput",
    "LlmUpdate",
    "MediaPath",
    "MuteStatus",
    "RawCommand",
    "RecordCommand",
    "Redirect",
    "RedirectLegs",
    "RedirectToHook",
    "SipRequestCommand",
    "StreamStatus",
    "TranscribeStatus",
    "TtsClear",
    "TtsFlush",
    "TtsTokens",
    "Whisper",
    "parse_command",
]


def _verbs(value: Sequence[Verb]) -> tuple[Verb, ...]:
    return tuple(value)


def _hook_to_wire(h: Hook) -> Any:
    return converter.unstructure(h)


def _hook_from_wire(v: Any) -> Hook:
    try:
        return converter.structure(v, Hook)  # type: ignore[arg-type]
    except Exception as exc:  # cattrs raises TypeError or ClassValidationError (a group)
        raise ValueError(f"invalid hook {v!r}") from exc


@attrs.frozen(kw_only=True)
class Ack:
    """An ``ack``: the answer to one request, carrying the verbs that become the call's program.

    ``data`` is always sent as a list (``[]`` when there are no verbs): some hooks (conference
    ``waitHook``, dial ``onHoldHook``) fail on a missing array (protocol.md §3.3).
    """

    msgid: str
    verbs: tuple[Verb, ...] = attrs.field(default=(), converter=_verbs)

    def to_wire(self) -> dict[str, Any]:
        return {"type": "ack", "msgid": self.msgid, "data": unstructure_verbs(self.verbs)}

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Ack:
        """Parse an ack strictly (used by the fake jambonz). Raises ``ValueError``."""
        msgid = obj.get("msgid")
        if obj.get("type") != "ack" or not isinstance(msgid, str):
            raise ValueError("not an ack with a msgid")
        data = obj.get("data")
        return cls(msgid=msgid, verbs=() if data is None else structure_verbs(data))


@attrs.frozen(kw_only=True)
class Command:
    """Base of every command model.

    Attributes:
        call_sid: target leg (sent as ``callSid``) for leg-aware commands; ``None`` means the
            call that owns the socket.
    """

    COMMAND: ClassVar[str]
    HAS_DATA: ClassVar[bool] = True
    call_sid: str | None = None

    def data_to_wire(self) -> Any:
        raise NotImplementedError

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "command", "command": self.COMMAND}
        if self.call_sid is not None:
            out["callSid"] = self.call_sid
        self._envelope_extras(out)
        if self.HAS_DATA:
            out["data"] = self.data_to_wire()
        return out

    def _envelope_extras(self, out: dict[str, Any]) -> None:
        pass

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        raise NotImplementedError


@attrs.frozen(kw_only=True)
class Redirect(Command):
    """Replace the call's remaining program (``queue=False``, kills the current verb) or append
    to it (``queue=True``). Wakes an idle session."""

    COMMAND: ClassVar[str] = "redirect"
    verbs: tuple[Verb, ...] = attrs.field(converter=_verbs)
    queue: bool = False

    def data_to_wire(self) -> Any:
        return unstructure_verbs(self.verbs)

    def _envelope_extras(self, out: dict[str, Any]) -> None:
        out["queueCommand"] = self.queue

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        q = envelope.get("queueCommand", False)
        if not isinstance(q, bool):
            raise ValueError("queueCommand must be a boolean")
        return cls(verbs=structure_verbs(data), queue=q, call_sid=envelope.get("callSid"))


@attrs.frozen(kw_only=True)
class RedirectToHook(Command):
    """Fetch a new program from a hook: jambonz sends ``session:redirect`` for the parent
    (``call_hook``) and/or the dialled child leg (``child_call_hook``)."""

    COMMAND: ClassVar[str] = "redirect"
    call_hook: Hook | None = None
    child_call_hook: Hook | None = None

    def __attrs_post_init__(self) -> None:
        if self.call_hook is None and self.child_call_hook is None:
            raise ValueError("give call_hook, child_call_hook or both")

    def data_to_wire(self) -> Any:
        out: dict[str, Any] = {}
        if self.call_hook is not None:
            out["call_hook"] = _hook_to_wire(self.call_hook)
        if self.child_call_hook is not None:
            out["child_call_hook"] = _hook_to_wire(self.child_call_hook)
        return out


@attrs.frozen(kw_only=True)
class RedirectLegs(Command):
    """Give new programs to the parent and/or the dialled child leg without a hook round-trip.

    With only ``child_call`` the parent's current verb is killed (protocol.md §5.3).
    """

    COMMAND: ClassVar[str] = "redirect"
    parent_call: tuple[Verb, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_verbs)
    )
    child_call: tuple[Verb, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_verbs)
    )

    def __attrs_post_init__(self) -> None:
        if self.parent_call is None and self.child_call is None:
            raise ValueError("give parent_call, child_call or both")

    def data_to_wire(self) -> Any:
        out: dict[str, Any] = {}
        if self.parent_call is not None:
            out["parent_call"] = unstructure_verbs(self.parent_call)
        if self.child_call is not None:
            out["child_call"] = unstructure_verbs(self.child_call)
        return out


def _parse_redirect(data: Any, envelope: Mapping[str, Any]) -> Command:
    if isinstance(data, list):
        return Redirect.from_data(data, envelope)
    if not isinstance(data, dict) or not data:
        raise ValueError("redirect data must be a verb array or an object")
    keys = set(data)
    if keys <= {"call_hook", "child_call_hook"}:
        return RedirectToHook(
            call_hook=_hook_from_wire(data["call_hook"]) if "call_hook" in data else None,
            child_call_hook=(_hook_from_wire(data["child_call_hook"]) if "child_call_hook" in data else None),
            call_sid=envelope.get("callSid"),
        )
    if keys <= {"parent_call", "child_call"}:
        return RedirectLegs(
            parent_call=structure_verbs(data["parent_call"]) if "parent_call" in data else None,
            child_call=structure_verbs(data["child_call"]) if "child_call" in data else None,
            call_sid=envelope.get("callSid"),
        )
    raise ValueError(f"redirect object has unexpected keys {sorted(keys)}")


def _keyed(name: str, key: str, values: tuple[str, ...], data: Any) -> str:
    """Read the one-key object form ``{key: value}`` that 0.9.8's handlers read."""
    if not isinstance(data, dict) or set(data) != {key} or data[key] not in values:
        raise ValueError(f"{name} data must be {{{key!r}: one of {values}}}")
    value: str = data[key]
    return value


@attrs.frozen(kw_only=True)
class CallStatusCommand(Command):
    """``call:status``: ``completed`` hangs up an answered call; ``no-answer`` rejects an
    unanswered inbound call (SIP 503) or cancels an unanswered outbound one."""

    COMMAND: ClassVar[str] = "call:status"
    call_status: Literal["completed", "no-answer"] = "completed"

    def data_to_wire(self) -> Any:
        return {"call_status": self.call_status}

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        if not isinstance(data, dict) or data.get("call_status") not in ("completed", "no-answer"):
            raise ValueError('call:status data must be {"call_status": "completed"|"no-answer"}')
        return cls(call_status=data["call_status"], call_sid=envelope.get("callSid"))


@attrs.frozen(kw_only=True)
class MuteStatus(Command):
    """``mute:status``: mute or unmute a leg during ``dial`` / ``conference``."""

    COMMAND: ClassVar[str] = "mute:status"
    mute_status: Literal["mute", "unmute"]

    def data_to_wire(self) -> Any:
        return {"mute_status": self.mute_status}

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        value = data.get("mute_status") if isinstance(data, dict) else data
        if value != "mute" and value != "unmute":
            raise ValueError('mute:status data must be "mute"/"unmute" or {"mute_status": ...}')
        return cls(mute_status=value, call_sid=envelope.get("callSid"))


@attrs.frozen(kw_only=True)
class ConfMuteStatus(Command):
    """``conf:mute-status``: mute or unmute every non-moderator of the conference."""

    COMMAND: ClassVar[str] = "conf:mute-status"
    conf_mute_status: Literal["mute", "unmute"]

    def data_to_wire(self) -> Any:
        return {"conf_mute_status": self.conf_mute_status}

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        value = _keyed(cls.COMMAND, "conf_mute_status", ("mute", "unmute"), data)
        return cls(conf_mute_status=value)  # type: ignore[arg-type]


@attrs.frozen(kw_only=True)
class ListenStatus(Command):
    """``listen:status``: pause or resume the running ``listen`` (or a dial's nested listen)."""

    COMMAND: ClassVar[str] = "listen:status"
    listen_status: Literal["pause", "resume"]

    def data_to_wire(self) -> Any:
        return {"listen_status": self.listen_status}

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        value = _keyed(cls.COMMAND, "listen_status", ("pause", "resume"), data)
        return cls(listen_status=value)  # type: ignore[arg-type]


@attrs.frozen(kw_only=True)
class StreamStatus(Command):
    """``stream:status``: the same as ``listen:status`` under the ``stream`` name."""

    COMMAND: ClassVar[str] = "stream:status"
    stream_status: Literal["pause", "resume"]

    def data_to_wire(self) -> Any:
        return {"stream_status": self.stream_status}

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        value = _keyed(cls.COMMAND, "stream_status", ("pause", "resume"), data)
        return cls(stream_status=value)  # type: ignore[arg-type]


@attrs.frozen(kw_only=True)
class TranscribeStatus(Command):
    """``transcribe:status``: pause or resume background and current transcription."""

    COMMAND: ClassVar[str] = "transcribe:status"
    transcribe_status: Literal["pause", "resume"]

    def data_to_wire(self) -> Any:
        return {"transcribe_status": self.transcribe_status}

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        value = _keyed(cls.COMMAND, "transcribe_status", ("pause", "resume"), data)
        return cls(transcribe_status=value)  # type: ignore[arg-type]


@attrs.frozen(kw_only=True)
class ConfHoldStatus(Command):
    """``conf:hold-status``: hold (mute and deafen) or unhold this conference member.

    ``wait_hook`` (sent as a string URL; 0.9.8 wraps it itself) loops play/say/pause while held.
    """

    COMMAND: ClassVar[str] = "conf:hold-status"
    conf_hold_status: Literal["hold", "unhold"]
    wait_hook: str | None = None

    def data_to_wire(self) -> Any:
        out: dict[str, Any] = {"conf_hold_status": self.conf_hold_status}
        if self.wait_hook is not None:
            out["wait_hook"] = self.wait_hook
        return out

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        if not isinstance(data, dict) or data.get("conf_hold_status") not in ("hold", "unhold"):
            raise ValueError('conf:hold-status data needs "conf_hold_status": "hold"|"unhold"')
        wh = data.get("wait_hook")
        if wh is not None and not isinstance(wh, str):
            raise ValueError("wait_hook must be a string")
        return cls(conf_hold_status=data["conf_hold_status"], wait_hook=wh)


ParticipantAction = Literal["tag", "untag", "coach", "uncoach", "hold", "unhold", "mute", "unmute", "kick"]


@attrs.frozen(kw_only=True)
class ConfParticipantAction(Command):
    """``conf:participant-action``: per-member conference control (tag, coach, hold, kick...)."""

    COMMAND: ClassVar[str] = "conf:participant-action"
    action: ParticipantAction
    tag: str | None = None
    wait_hook: str | None = None

    def data_to_wire(self) -> Any:
        out: dict[str, Any] = {"action": self.action}
        if self.tag is not None:
            out["tag"] = self.tag
        if self.wait_hook is not None:
            out["wait_hook"] = self.wait_hook
        return out

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        allowed = ParticipantAction.__args__  # type: ignore[attr-defined]
        if not isinstance(data, dict) or data.get("action") not in allowed:
            raise ValueError(f"conf:participant-action data needs an action in {allowed}")
        extra = set(data) - {"action", "tag", "wait_hook"}
        if extra:
            raise ValueError(f"conf:participant-action: unexpected keys {sorted(extra)}")
        return cls(action=data["action"], tag=data.get("tag"), wait_hook=data.get("wait_hook"))


WhisperVerb = Say | Play


def _whisper_verbs(value: Sequence[WhisperVerb]) -> tuple[WhisperVerb, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Whisper(Command):
    """``whisper``: play ``say``/``play`` verbs to one leg during ``dial`` or ``listen``."""

    COMMAND: ClassVar[str] = "whisper"
    verbs: tuple[WhisperVerb, ...] = attrs.field(converter=_whisper_verbs)

    def __attrs_post_init__(self) -> None:
        if not self.verbs or not all(isinstance(v, Say | Play) for v in self.verbs):
            raise ValueError("whisper takes one or more Say / Play verbs")

    def data_to_wire(self) -> Any:
        return {"whisper": unstructure_verbs(self.verbs)}

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        if not isinstance(data, dict) or set(data) != {"whisper"}:
            raise ValueError('whisper data must be {"whisper": verb | [verbs]}')
        w = data["whisper"]
        verbs = structure_verbs(w if isinstance(w, list) else [w])
        return cls(verbs=verbs, call_sid=envelope.get("callSid"))  # type: ignore[arg-type]


@attrs.frozen(kw_only=True)
class SipRequestCommand(Command):
    """``sip:request``: send an in-dialog SIP request (INFO, MESSAGE, NOTIFY...).

    Sent wrapped as ``{"sip_request": {...}}``, the shape 0.9.8 reads (the docs' flat form
    throws in the feature server). ``content`` is never shown in ``repr``.
    """

    COMMAND: ClassVar[str] = "sip:request"
    method: str
    content_type: str | None = None
    content: str | None = attrs.field(default=None, repr=False)
    headers: Mapping[str, str] | None = None

    def data_to_wire(self) -> Any:
        req: dict[str, Any] = {"method": self.method}
        if self.content_type is not None:
            req["content_type"] = self.content_type
        if self.content is not None:
            req["content"] = self.content
        if self.headers is not None:
            req["headers"] = dict(self.headers)
        return {"sip_request": req}

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        req = data.get("sip_request") if isinstance(data, dict) else None
        if not isinstance(req, dict) or not isinstance(req.get("method"), str):
            raise ValueError('sip:request data must be {"sip_request": {"method": ...}}')
        extra = set(req) - {"method", "content_type", "content", "headers"}
        if extra:
            raise ValueError(f"sip:request: unexpected keys {sorted(extra)}")
        return cls(
            method=req["method"],
            content_type=req.get("content_type"),
            content=req.get("content"),
            headers=req.get("headers"),
            call_sid=envelope.get("callSid"),
        )


@attrs.frozen(kw_only=True)
class DtmfCommand(Command):
    """``dtmf``: send a DTMF digit as SIP INFO, wrapped as ``{"dtmf": {...}}`` (0.9.8 shape)."""

    COMMAND: ClassVar[str] = "dtmf"
    digit: str
    duration: int | None = None

    def data_to_wire(self) -> Any:
        d: dict[str, Any] = {"digit": self.digit}
        if self.duration is not None:
            d["duration"] = self.duration
        return {"dtmf": d}

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        d = data.get("dtmf") if isinstance(data, dict) else None
        if not isinstance(d, dict) or not isinstance(d.get("digit"), str):
            raise ValueError('dtmf data must be {"dtmf": {"digit": ...}}')
        dur = d.get("duration")
        if dur is not None and (not isinstance(dur, int) or isinstance(dur, bool)):
            raise ValueError("dtmf duration must be an integer (ms)")
        return cls(digit=d["digit"], duration=dur, call_sid=envelope.get("callSid"))


RecordAction = Literal["startCallRecording", "stopCallRecording", "pauseCallRecording", "resumeCallRecording"]


@attrs.frozen(kw_only=True)
class RecordCommand(Command):
    """``record``: start / stop / pause / resume SIPREC (default) or ``cloud`` recording."""

    COMMAND: ClassVar[str] = "record"
    action: RecordAction
    type: Literal["siprec", "cloud"] | None = None
    recording_id: str | None = None
    siprec_server_url: str | None = None
    headers: Mapping[str, str] | None = None
    silence: bool | None = None

    _WIRE: ClassVar[dict[str, str]] = {
        "action": "action",
        "type": "type",
        "recording_id": "recordingID",
        "siprec_server_url": "siprecServerURL",
        "headers": "headers",
        "silence": "silence",
    }

    def data_to_wire(self) -> Any:
        out: dict[str, Any] = {}
        for py, wire in self._WIRE.items():
            v = getattr(self, py)
            if v is not None:
                out[wire] = dict(v) if py == "headers" else v
        return out

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        if not isinstance(data, dict):
            raise ValueError("record data must be an object")
        back = {w: p for p, w in cls._WIRE.items()}
        extra = set(data) - set(back)
        if extra:
            raise ValueError(f"record: unexpected keys {sorted(extra)}")
        if data.get("action") not in RecordAction.__args__:  # type: ignore[attr-defined]
            raise ValueError("record: invalid action")
        return cls(**{back[k]: v for k, v in data.items()})


def _verb_body(v: Verb) -> dict[str, Any]:
    body = converter.unstructure(v)
    body.pop("verb", None)
    return body  # type: ignore[no-any-return]


@attrs.frozen(kw_only=True)
class ConfigCommand(Command):
    """``config``: run a ``config`` verb out of band, right now."""

    COMMAND: ClassVar[str] = "config"
    config: Config

    def data_to_wire(self) -> Any:
        return _verb_body(self.config)

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        if not isinstance(data, dict):
            raise ValueError("config data must be an object")
        (cfg,) = structure_verbs([{"verb": "config", **data}])
        return cls(config=cfg)  # type: ignore[arg-type]


@attrs.frozen(kw_only=True)
class DubCommand(Command):
    """``dub``: run a ``dub`` verb now, on this leg or (with ``call_sid``) the dialled one."""

    COMMAND: ClassVar[str] = "dub"
    dub: Dub

    def data_to_wire(self) -> Any:
        return _verb_body(self.dub)

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        if not isinstance(data, dict):
            raise ValueError("dub data must be an object")
        (dub,) = structure_verbs([{"verb": "dub", **data}])
        return cls(dub=dub, call_sid=envelope.get("callSid"))  # type: ignore[arg-type]


@attrs.frozen(kw_only=True)
class DialCommand(Command):
    """``dial``: launch a separate outbound call (a REST ``createCall`` body).

    ``body`` is passed through: ``from``, ``to`` (a target object), ``call_hook``,
    ``call_status_hook``, ``application_sid``, ``tag``, ``timeout``, ... Relative hooks resolve
    against this socket's URL. Failure comes back as a ``jambonz:error``.
    """

    COMMAND: ClassVar[str] = "dial"
    body: Mapping[str, Any]

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.body.get("to"), dict):
            raise ValueError('dial body needs a "to" target object')

    def data_to_wire(self) -> Any:
        return dict(self.body)

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        if not isinstance(data, dict):
            raise ValueError("dial data must be an object")
        return cls(body=data)


@attrs.frozen(kw_only=True)
class BoostAudio(Command):
    """``boostAudioSignal``: set the gain in dB (a number, or a string such as ``"+6 dB"``).

    ``0`` cannot be sent (jambonz treats a falsy ``data`` as missing): use ``"0 dB"``.
    """

    COMMAND: ClassVar[str] = "boostAudioSignal"
    gain: int | float | str

    def __attrs_post_init__(self) -> None:
        if isinstance(self.gain, bool) or not self.gain:
            raise ValueError('boostAudioSignal gain 0 is read as missing data; send "0 dB"')

    def data_to_wire(self) -> Any:
        return self.gain

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        if not isinstance(data, int | float | str) or isinstance(data, bool):
            raise ValueError("boostAudioSignal data must be a number or a string")
        return cls(gain=data, call_sid=envelope.get("callSid"))


@attrs.frozen(kw_only=True)
class MediaPath(Command):
    """``media:path``: during ``dial``, release media or re-anchor it."""

    COMMAND: ClassVar[str] = "media:path"
    path: Literal["no-media", "partial-media", "full-media"]

    def data_to_wire(self) -> Any:
        return self.path

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        if data not in ("no-media", "partial-media", "full-media"):
            raise ValueError("media:path data must be no-media, partial-media or full-media")
        return cls(path=data)


@attrs.frozen(kw_only=True)
class LlmToolOutput(Command):
    """``llm:tool-output``: the result of an ``llm:tool-call``; ``tool_call_id`` is top-level.

    ``data`` is vendor-specific in 0.9.8 (protocol.md §9.5) and passed through as given.
    """

    COMMAND: ClassVar[str] = "llm:tool-output"
    tool_call_id: str
    data: Mapping[str, Any]

    def data_to_wire(self) -> Any:
        return dict(self.data)

    def _envelope_extras(self, out: dict[str, Any]) -> None:
        out["tool_call_id"] = self.tool_call_id

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        tcid = envelope.get("tool_call_id")
        if not isinstance(tcid, str) or not isinstance(data, dict):
            raise ValueError("llm:tool-output needs a top-level tool_call_id and object data")
        return cls(tool_call_id=tcid, data=data, call_sid=envelope.get("callSid"))


@attrs.frozen(kw_only=True)
class LlmUpdate(Command):
    """``llm:update``: a vendor-specific update to the running ``llm`` verb."""

    COMMAND: ClassVar[str] = "llm:update"
    data: Mapping[str, Any]

    def data_to_wire(self) -> Any:
        return dict(self.data)

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        if not isinstance(data, dict) or not data:
            raise ValueError("llm:update data must be a non-empty object")
        return cls(data=data, call_sid=envelope.get("callSid"))


@attrs.frozen(kw_only=True)
class TtsTokens(Command):
    """``tts:tokens``: text for streaming TTS; jambonz answers with ``tts:tokens-result``."""

    COMMAND: ClassVar[str] = "tts:tokens"
    id: int | str
    tokens: str

    def data_to_wire(self) -> Any:
        return {"id": self.id, "tokens": self.tokens}

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("id"), int | str)
            or isinstance(data.get("id"), bool)
            or not isinstance(data.get("tokens"), str)
        ):
            raise ValueError('tts:tokens data must be {"id": number|string, "tokens": string}')
        return cls(id=data["id"], tokens=data["tokens"])


@attrs.frozen(kw_only=True)
class TtsFlush(Command):
    """``tts:flush``: synthesise the buffered text now (end of an LLM turn)."""

    COMMAND: ClassVar[str] = "tts:flush"
    HAS_DATA: ClassVar[bool] = False

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        return cls()


@attrs.frozen(kw_only=True)
class TtsClear(Command):
    """``tts:clear``: drop buffered text and queued audio (barge-in)."""

    COMMAND: ClassVar[str] = "tts:clear"
    HAS_DATA: ClassVar[bool] = False

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> Command:
        return cls()


@attrs.frozen(kw_only=True)
class RawCommand(Command):
    """Escape hatch for commands of newer servers: sent exactly as given.

    ``data=None`` omits the ``data`` key (jambonz requires truthy data for most commands).
    """

    COMMAND: ClassVar[str] = "<raw>"
    command: str
    data: Any = None
    queue_command: bool | None = None
    tool_call_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "command", "command": self.command}
        if self.queue_command is not None:
            out["queueCommand"] = self.queue_command
        if self.call_sid is not None:
            out["callSid"] = self.call_sid
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.data is not None:
            out["data"] = self.data
        return out


#: command name -> parser of ``(data, envelope)``; commands 0.9.8 handles (protocol.md §5.3).
COMMAND_TYPES: dict[str, Any] = {
    "redirect": _parse_redirect,
    **{
        cls.COMMAND: cls.from_data
        for cls in (
            CallStatusCommand,
            MuteStatus,
            ConfMuteStatus,
            ConfHoldStatus,
            ConfParticipantAction,
            ListenStatus,
            StreamStatus,
            TranscribeStatus,
            Whisper,
            SipRequestCommand,
            DtmfCommand,
            RecordCommand,
            ConfigCommand,
            DialCommand,
            DubCommand,
            BoostAudio,
            MediaPath,
            LlmToolOutput,
            LlmUpdate,
            TtsTokens,
            TtsFlush,
            TtsClear,
        )
    },
}

#: Commands whose ``data`` may be absent (``MTYPE_NO_DATA`` in the feature server).
NO_DATA_COMMANDS = frozenset({"tts:flush", "tts:clear", "llm:tool-output"})


def parse_command(obj: Mapping[str, Any]) -> Command:
    """Parse a command envelope strictly, checking the data shape 0.9.8's handler reads.

    Used by the fake jambonz to hold applications to the real server's contract.

    Raises:
        ValueError: not a command, an unknown command name, snake ``call_sid`` instead of
            ``callSid``, missing/falsy ``data``, or a data shape the handler would reject.
    """
    if obj.get("type") != "command":
        raise ValueError("not a command")
    name = obj.get("command")
    if not isinstance(name, str):
        raise ValueError("command property not supplied")
    if "call_sid" in obj:
        raise ValueError("call_sid (snake) is ignored by jambonz; use callSid")
    cs = obj.get("callSid")
    if cs is not None and not isinstance(cs, str):
        raise ValueError("callSid must be a string")
    data = obj.get("data")
    if _js_falsy(data) and name not in NO_DATA_COMMANDS:
        raise ValueError("data property not supplied")
    parser = COMMAND_TYPES.get(name)
    if parser is None:
        raise ValueError(f"invalid command {name!r} (not handled by feature-server 0.9.8)")
    cmd: Command = parser(data, obj)
    if cs is not None and cmd.call_sid != cs:
        cmd = attrs.evolve(cmd, call_sid=cs)  # 0.9.8 ignores it for some commands; keep it
    return cmd


def _js_falsy(value: Any) -> bool:
    """JavaScript truthiness, which the feature server applies to ``data`` (``[]``, ``{}``
    count as supplied; ``0``, ``""``, ``false``, ``null`` do not)."""
    if value is None or value is False or value == "":
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and (value == 0 or value != value)
