"""What the application sends: ``ack`` and ``command`` messages, and a typed model per command.

Only two top-level types exist (``docs/protocol.md`` §5). The command envelope is camelCase where
the feature server reads camelCase (``queueCommand``, ``callSid``) and snake where it reads snake
(``tool_call_id``); ``call_sid`` (snake) would be silently ignored.

Each command class below produces exactly the ``data`` shape the 0.9.8 handler reads (§5.3):
wrapped ``{"sip_request": {...}}`` and ``{"dtmf": {...}}``, object forms for the ``*:status``
commands, and so on. The shapes come from the one converter (:mod:`._wire`): a command's fields
are its ``data`` (snake_case), unless the class names a ``WRAP`` key around them or the one
``DATA`` field that is the whole ``data``; fields marked ``ENVELOPE`` travel beside ``data``.
:class:`RawCommand` sends anything a newer server accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar

import attrs

from .._errors import LocalProtocolError
from ._verbs import Config, Dub, Play, Redirect, Say
from ._verbs_base import Hook, Verb, structure_verbs, unstructure_verbs
from ._wire import (
    ENVELOPE,
    WIRE,
    Model,
    Style,
    converter,
    present,
    structure_strict,
    to_wire_name,
    unstructure_hook,
)

__all__ = [
    "BoostAudioCommand",
    "CallStatusCommand",
    "Command",
    "ConfHoldStatusCommand",
    "ConfMuteStatusCommand",
    "ConfParticipantActionCommand",
    "ConfigCommand",
    "DialCommand",
    "DtmfCommand",
    "DubCommand",
    "ListenStatusCommand",
    "LlmToolOutputCommand",
    "LlmUpdateCommand",
    "MediaPathCommand",
    "MuteStatusCommand",
    "RawCommand",
    "RecordCommand",
    "RedirectCommand",
    "RedirectLegsCommand",
    "RedirectToHookCommand",
    "SipRequestCommand",
    "StreamStatusCommand",
    "TranscribeStatusCommand",
    "TtsClearCommand",
    "TtsFlushCommand",
    "TtsTokensCommand",
    "WhisperCommand",
    "parse_command",
]

_C = TypeVar("_C", bound="Command")


def _verbs(value: Sequence[Verb]) -> tuple[Verb, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Ack:
    """An ``ack``: the answer to one request, carrying the verbs that become the call's program.

    ``data`` is always sent as a list (``[]`` when there are no verbs): some hooks (conference
    ``waitHook``, dial ``onHoldHook``) fail on a missing array (``docs/protocol.md`` §3.3).
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


_ENVELOPES: dict[type[Command], tuple[tuple[str, str], ...]] = {}


def _envelope(cls: type[Command]) -> tuple[tuple[str, str], ...]:
    """``(attribute, envelope key)`` of each field of ``cls`` that travels beside ``data``."""
    found = _ENVELOPES.get(cls)
    if found is None:
        found = tuple((f.name, f.metadata[ENVELOPE]) for f in attrs.fields(cls) if ENVELOPE in f.metadata)
        _ENVELOPES[cls] = found
    return found


@attrs.frozen(kw_only=True, repr=False)
class Command(Model):
    """Base of every command model.

    Attributes:
        call_sid: target leg (sent as ``callSid``) for leg-aware commands; ``None`` means the
            call that owns the socket.
    """

    COMMAND: ClassVar[str]
    STYLE: ClassVar[Style] = "snake"
    #: ``False`` for commands sent without ``data`` (``tts:flush``, ``tts:clear``).
    HAS_DATA: ClassVar[bool] = True
    #: The key ``data`` wraps the fields in (``{"dtmf": {...}}``), if any.
    WRAP: ClassVar[str | None] = None
    #: The one field whose value is the whole ``data`` (a verb list, a number...), if any.
    DATA: ClassVar[str | None] = None

    call_sid: str | None = attrs.field(default=None, metadata={ENVELOPE: "callSid"})

    def data_to_wire(self) -> Any:
        """The ``data`` value of this command."""
        data: Any = converter.unstructure(self)
        if self.DATA is not None:
            data = data[self.DATA]
        return data if self.WRAP is None else {self.WRAP: data}

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "command", "command": self.COMMAND}
        for name, key in _envelope(type(self)):  # (every command: one dict, not three)
            value = getattr(self, name)
            if value is not None:
                out[key] = value
        if self.HAS_DATA:
            out["data"] = self.data_to_wire()
        return out

    @classmethod
    def from_data(cls: type[_C], data: Any, envelope: Mapping[str, Any]) -> _C:
        """Parse a command's ``data`` (and its envelope fields) strictly.

        Raises:
            ValueError: a shape, key, type or value the 0.9.8 handler would not read.
        """
        if cls.WRAP is not None:
            if not isinstance(data, dict) or set(data) != {cls.WRAP}:
                raise ValueError(f"{cls.COMMAND} data must be {{{cls.WRAP!r}: ...}}")
            data = data[cls.WRAP]
        if not cls.HAS_DATA:
            data = {}
        elif cls.DATA is not None:
            data = {cls.DATA: data}
        elif not isinstance(data, dict):
            raise ValueError(f"{cls.COMMAND} data must be an object")
        fields = dict(data)
        for _, key in _envelope(cls):
            if key in fields:
                raise ValueError(f"{cls.COMMAND}: {key!r} belongs in the envelope, not in data")
            if key in envelope:
                fields[key] = envelope[key]
        try:
            return structure_strict(fields, cls)
        except ValueError as exc:
            if cls.DATA is not None:
                raise ValueError(f"{cls.COMMAND} data is not a valid {cls.DATA!r}: {exc}") from None
            keys = ", ".join(
                repr(to_wire_name(f, cls.STYLE)) + ("?" if f.default is not attrs.NOTHING else "")
                for f in attrs.fields(cls)
                if ENVELOPE not in f.metadata
            )
            shape = f"{{{keys}}}" if cls.WRAP is None else f"{{{cls.WRAP!r}: {{{keys}}}}}"
            raise ValueError(f"{cls.COMMAND} data must be {shape}: {exc}") from None


@attrs.frozen(kw_only=True, repr=False)
class RedirectCommand(Command):
    """Replace the call's remaining program (``queue=False``, kills the current verb) or append
    to it (``queue=True``). Wakes an idle session."""

    COMMAND: ClassVar[str] = "redirect"
    DATA: ClassVar[str | None] = "verbs"

    verbs: tuple[Verb, ...] = attrs.field(converter=_verbs)
    queue: bool = attrs.field(default=False, metadata={ENVELOPE: "queueCommand"})


@attrs.frozen(kw_only=True, repr=False)
class RedirectToHookCommand(Command):
    """Fetch a new program from a hook: jambonz sends ``session:redirect`` for the parent
    (``call_hook``) and/or the dialled child leg (``child_call_hook``)."""

    COMMAND: ClassVar[str] = "redirect"

    call_hook: Hook | None = None
    child_call_hook: Hook | None = None

    def __attrs_post_init__(self) -> None:
        if self.call_hook is None and self.child_call_hook is None:
            raise ValueError("give call_hook, child_call_hook or both")


@attrs.frozen(kw_only=True, repr=False)
class RedirectLegsCommand(Command):
    """Give new programs to the parent and/or the dialled child leg without a hook round-trip.

    With only ``child_call`` the parent's current verb is killed (``docs/protocol.md`` §5.3).
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


def _parse_redirect(data: Any, envelope: Mapping[str, Any]) -> Command:
    if isinstance(data, list):
        return RedirectCommand.from_data(data, envelope)
    if not isinstance(data, dict) or not data:
        raise ValueError("redirect data must be a verb array or an object")
    keys = set(data)
    if keys <= {"call_hook", "child_call_hook"}:
        return RedirectToHookCommand.from_data(data, envelope)
    if keys <= {"parent_call", "child_call"}:
        return RedirectLegsCommand.from_data(data, envelope)
    raise ValueError(f"redirect object has unexpected keys {sorted(keys)}")


@attrs.frozen(kw_only=True, repr=False)
class CallStatusCommand(Command):
    """``call:status``: ``completed`` hangs up an answered call; ``no-answer`` rejects an
    unanswered inbound call (SIP 503) or cancels an unanswered outbound one."""

    COMMAND: ClassVar[str] = "call:status"

    call_status: Literal["completed", "no-answer"] = "completed"


@attrs.frozen(kw_only=True, repr=False)
class MuteStatusCommand(Command):
    """``mute:status``: mute or unmute a leg during ``dial`` / ``conference``."""

    COMMAND: ClassVar[str] = "mute:status"

    mute_status: Literal["mute", "unmute"]

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> MuteStatusCommand:
        # the one status command whose 0.9.8 handler also reads a bare string
        return super().from_data({"mute_status": data} if isinstance(data, str) else data, envelope)


@attrs.frozen(kw_only=True, repr=False)
class ConfMuteStatusCommand(Command):
    """``conf:mute-status``: mute or unmute every non-moderator of the conference."""

    COMMAND: ClassVar[str] = "conf:mute-status"

    conf_mute_status: Literal["mute", "unmute"]


@attrs.frozen(kw_only=True, repr=False)
class ListenStatusCommand(Command):
    """``listen:status``: pause or resume the running ``listen`` (or a dial's nested listen)."""

    COMMAND: ClassVar[str] = "listen:status"

    listen_status: Literal["pause", "resume"]


@attrs.frozen(kw_only=True, repr=False)
class StreamStatusCommand(Command):
    """``stream:status``: the same as ``listen:status`` under the ``stream`` name."""

    COMMAND: ClassVar[str] = "stream:status"

    stream_status: Literal["pause", "resume"]


@attrs.frozen(kw_only=True, repr=False)
class TranscribeStatusCommand(Command):
    """``transcribe:status``: pause or resume background and current transcription."""

    COMMAND: ClassVar[str] = "transcribe:status"

    transcribe_status: Literal["pause", "resume"]


@attrs.frozen(kw_only=True, repr=False)
class ConfHoldStatusCommand(Command):
    """``conf:hold-status``: hold (mute and deafen) or unhold this conference member.

    ``wait_hook`` (sent as a string URL; 0.9.8 wraps it itself) loops play/say/pause while held.
    """

    COMMAND: ClassVar[str] = "conf:hold-status"

    conf_hold_status: Literal["hold", "unhold"]
    wait_hook: str | None = None


ParticipantAction = Literal["tag", "untag", "coach", "uncoach", "hold", "unhold", "mute", "unmute", "kick"]


@attrs.frozen(kw_only=True, repr=False)
class ConfParticipantActionCommand(Command):
    """``conf:participant-action``: per-member conference control (tag, coach, hold, kick...)."""

    COMMAND: ClassVar[str] = "conf:participant-action"

    action: ParticipantAction
    tag: str | None = None
    wait_hook: str | None = None


WhisperVerb = Say | Play


def _whisper_verbs(value: Sequence[WhisperVerb]) -> tuple[WhisperVerb, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True, repr=False)
class WhisperCommand(Command):
    """``whisper``: play ``say``/``play`` verbs to one leg during ``dial`` or ``listen``."""

    COMMAND: ClassVar[str] = "whisper"
    WRAP: ClassVar[str | None] = "whisper"
    DATA: ClassVar[str | None] = "verbs"

    verbs: tuple[WhisperVerb, ...] = attrs.field(converter=_whisper_verbs)

    def __attrs_post_init__(self) -> None:
        if not self.verbs or not all(isinstance(v, Say | Play) for v in self.verbs):
            raise ValueError("whisper takes one or more Say / Play verbs")

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> WhisperCommand:
        # 0.9.8 takes one verb or a list of them
        if isinstance(data, dict) and set(data) == {"whisper"} and not isinstance(data["whisper"], list):
            data = {"whisper": [data["whisper"]]}
        return super().from_data(data, envelope)


@attrs.frozen(kw_only=True, repr=False)
class SipRequestCommand(Command):
    """``sip:request``: send an in-dialog SIP request (INFO, MESSAGE, NOTIFY...).

    Sent wrapped as ``{"sip_request": {...}}``, the shape 0.9.8 reads (the docs' flat form
    throws in the feature server). ``content`` is never shown in ``repr``.
    """

    COMMAND: ClassVar[str] = "sip:request"
    WRAP: ClassVar[str | None] = "sip_request"

    method: str
    content_type: str | None = None
    content: str | None = attrs.field(default=None, repr=False)
    headers: Mapping[str, str] | None = None


@attrs.frozen(kw_only=True, repr=False)
class DtmfCommand(Command):
    """``dtmf``: send a DTMF digit as SIP INFO, wrapped as ``{"dtmf": {...}}`` (0.9.8 shape)."""

    COMMAND: ClassVar[str] = "dtmf"
    WRAP: ClassVar[str | None] = "dtmf"

    digit: str
    duration: int | None = None


RecordAction = Literal["startCallRecording", "stopCallRecording", "pauseCallRecording", "resumeCallRecording"]


@attrs.frozen(kw_only=True, repr=False)
class RecordCommand(Command):
    """``record``: start / stop / pause / resume SIPREC (default) or ``cloud`` recording."""

    COMMAND: ClassVar[str] = "record"

    action: RecordAction
    type: Literal["cloud", "siprec"] | None = None
    recording_id: str | None = attrs.field(default=None, metadata={WIRE: "recordingID"})
    siprec_server_url: str | None = attrs.field(default=None, metadata={WIRE: "siprecServerURL"})
    headers: Mapping[str, str] | None = None
    silence: bool | None = None


@attrs.frozen(kw_only=True, repr=False)
class ConfigCommand(Command):
    """``config``: run a ``config`` verb out of band, right now."""

    COMMAND: ClassVar[str] = "config"
    DATA: ClassVar[str | None] = "config"

    config: Config


@attrs.frozen(kw_only=True, repr=False)
class DubCommand(Command):
    """``dub``: run a ``dub`` verb now, on this leg or (with ``call_sid``) the dialled one."""

    COMMAND: ClassVar[str] = "dub"
    DATA: ClassVar[str | None] = "dub"

    dub: Dub


@attrs.frozen(kw_only=True, repr=False)
class DialCommand(Command):
    """``dial``: launch a separate outbound call (a REST ``createCall`` body).

    ``body`` is passed through: ``from``, ``to`` (a target object), ``call_hook``,
    ``call_status_hook``, ``application_sid``, ``tag``, ``timeout``, ... Relative hooks resolve
    against this socket's URL. Failure comes back as a ``jambonz:error``.
    """

    COMMAND: ClassVar[str] = "dial"
    DATA: ClassVar[str | None] = "body"

    body: Mapping[str, Any]

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.body.get("to"), dict):
            raise ValueError('dial body needs a "to" target object')


@attrs.frozen(kw_only=True, repr=False)
class BoostAudioCommand(Command):
    """``boostAudioSignal``: set the gain in dB (a number, or a string such as ``"+6 dB"``).

    ``0`` cannot be sent (jambonz treats a falsy ``data`` as missing): use ``"0 dB"``.
    """

    COMMAND: ClassVar[str] = "boostAudioSignal"
    DATA: ClassVar[str | None] = "gain"

    gain: int | float | str

    def __attrs_post_init__(self) -> None:
        if isinstance(self.gain, bool) or not self.gain:
            raise ValueError('boostAudioSignal gain 0 is read as missing data; send "0 dB"')


@attrs.frozen(kw_only=True, repr=False)
class MediaPathCommand(Command):
    """``media:path``: during ``dial``, release media or re-anchor it."""

    COMMAND: ClassVar[str] = "media:path"
    DATA: ClassVar[str | None] = "path"

    path: Literal["no-media", "partial-media", "full-media"]


@attrs.frozen(kw_only=True, repr=False)
class LlmToolOutputCommand(Command):
    """``llm:tool-output``: the result of an ``llm:tool-call``; ``tool_call_id`` is top-level.

    ``data`` is vendor-specific in 0.9.8 (``docs/protocol.md`` §9.5) and passed through as given.
    """

    COMMAND: ClassVar[str] = "llm:tool-output"
    DATA: ClassVar[str | None] = "data"

    tool_call_id: str = attrs.field(metadata={ENVELOPE: "tool_call_id"})
    data: Mapping[str, Any]


@attrs.frozen(kw_only=True, repr=False)
class LlmUpdateCommand(Command):
    """``llm:update``: a vendor-specific update to the running ``llm`` verb."""

    COMMAND: ClassVar[str] = "llm:update"
    DATA: ClassVar[str | None] = "data"

    data: Mapping[str, Any]

    @classmethod
    def from_data(cls, data: Any, envelope: Mapping[str, Any]) -> LlmUpdateCommand:
        if not data:
            raise ValueError("llm:update data must be a non-empty object")
        return super().from_data(data, envelope)


@attrs.frozen(kw_only=True, repr=False)
class TtsTokensCommand(Command):
    """``tts:tokens``: text for streaming TTS; jambonz answers with ``tts:tokens-result``."""

    COMMAND: ClassVar[str] = "tts:tokens"

    id: int | str
    tokens: str


@attrs.frozen(kw_only=True, repr=False)
class TtsFlushCommand(Command):
    """``tts:flush``: synthesise the buffered text now (end of an LLM turn)."""

    COMMAND: ClassVar[str] = "tts:flush"
    HAS_DATA: ClassVar[bool] = False


@attrs.frozen(kw_only=True, repr=False)
class TtsClearCommand(Command):
    """``tts:clear``: drop buffered text and queued audio (barge-in)."""

    COMMAND: ClassVar[str] = "tts:clear"
    HAS_DATA: ClassVar[bool] = False


@attrs.frozen(kw_only=True, repr=False)
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
        return {
            "type": "command",
            "command": self.command,
            **present(
                queueCommand=self.queue_command,
                callSid=self.call_sid,
                tool_call_id=self.tool_call_id,
                data=self.data,
            ),
        }


#: command name -> parser of ``(data, envelope)``; commands 0.9.8 handles (docs/protocol.md §5.3).
COMMAND_TYPES: dict[str, Any] = {
    "redirect": _parse_redirect,
    **{
        cls.COMMAND: cls.from_data
        for cls in (
            CallStatusCommand,
            MuteStatusCommand,
            ConfMuteStatusCommand,
            ConfHoldStatusCommand,
            ConfParticipantActionCommand,
            ListenStatusCommand,
            StreamStatusCommand,
            TranscribeStatusCommand,
            WhisperCommand,
            SipRequestCommand,
            DtmfCommand,
            RecordCommand,
            ConfigCommand,
            DialCommand,
            DubCommand,
            BoostAudioCommand,
            MediaPathCommand,
            LlmToolOutputCommand,
            LlmUpdateCommand,
            TtsTokensCommand,
            TtsFlushCommand,
            TtsClearCommand,
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
    return cmd


def _js_falsy(value: Any) -> bool:
    """JavaScript truthiness, which the feature server applies to ``data`` (``[]``, ``{}``
    count as supplied; ``0``, ``""``, ``false``, ``null`` do not)."""
    if value is None or value is False or value == "":
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and (value == 0 or value != value)


# -- the redirect verb's hooks ----------------------------------------------------------------

_redirect_body = unstructure_hook(Redirect)


def _unstructure_redirect(verb: Redirect) -> dict[str, Any]:
    """The ``redirect`` verb with its hooks as URL strings: jambonz 0.9.8 tests them with
    ``_isAbsoluteUrl``, which calls ``startsWith`` on a hook object (an operator-precedence
    slip, FS v0.9.8 ``lib/utils/base-requestor.js:68-72``): an ``actionHook`` object fails the
    verb and ends the call (``lib/tasks/redirect.js:20``), a ``statusHook`` object is ignored
    (``:55-58``, the error logged). A :class:`HookSpec` that is only a ``url`` is sent as that
    URL (the same request); one with a method or credentials cannot be honoured.

    An absolute ``statusHook`` (``http(s)://``, ``ws(s)://``) gets a notifier of its own, and
    jambonz closes the one it replaces (``lib/tasks/redirect.js:54-71``), which on a WebSocket
    app is the app's own socket (``lib/middleware.js:331-336``): closed with 1000, never
    reconnected, the verb's ``session:redirect`` lost. Only when the ``actionHook`` hands the
    call to another URL anyway (itself absolute) is that socket's end expected.

    Raises:
        LocalProtocolError: a hook object with more than its ``url``; an absolute
            ``statusHook`` with an ``actionHook`` that stays on this socket.
    """
    out = _redirect_body(verb)
    for key in ("actionHook", "statusHook"):
        hook = out.get(key)
        if isinstance(hook, dict):
            if set(hook) != {"url"}:
                raise LocalProtocolError(
                    f"redirect {key}: jambonz 0.9.8 takes only a URL string here (a hook object "
                    "fails the redirect verb and ends the call); give the URL, without method "
                    "or credentials"
                )
            out[key] = hook["url"]
    status = out.get("statusHook")
    if isinstance(status, str) and absolute_url(status) and not absolute_url(out["actionHook"]):
        raise LocalProtocolError(
            "redirect statusHook: an absolute URL makes jambonz 0.9.8 close this app's websocket "
            "(it closes the call-status sender it replaces, which is the app's socket), and the "
            "redirect's own session:redirect is lost; use a relative path, or hand the call "
            "over with an absolute actionHook"
        )
    return out


def absolute_url(url: str) -> bool:
    """Whether jambonz 0.9.8 takes ``url`` for an absolute one (FS v0.9.8
    ``lib/utils/base-requestor.js:68-72``)."""
    return url.startswith(("https://", "http://", "ws://", "wss://"))


converter.register_unstructure_hook(Redirect, _unstructure_redirect)
