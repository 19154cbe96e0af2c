"""Inbound messages: one frozen class per type jambonz sends, plus ``UnknownMessage``.

The 14 types are feature-server 0.9.8's ``HookMsgTypes`` (``docs/protocol.md`` §4). Each class
knows whether jambonz waits for an ``ack`` (``NEEDS_ACK``, §3.3). Envelope fields are kept as
sent; ``data`` is the raw payload dict (read-only by convention, never in ``repr``), with typed
views on top (``.call``, ``.gather`` ...).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from .._errors import RemoteProtocolError
from .._public import Forwarded
from ._calldata import CallInfo, DialResult, GatherResult, LlmResult, Payload, ToolCall
from ._wire import present

__all__ = [
    "MESSAGE_TYPES",
    "CallStatus",
    "DialConfirm",
    "JambonzErrorReport",
    "LlmEvent",
    "LlmToolCall",
    "JambonzMessage",
    "QueueStatus",
    "SessionAdulting",
    "SessionNew",
    "SessionReconnect",
    "SessionRedirect",
    "TtsStreamingEvent",
    "TtsTokensResult",
    "UnknownMessage",
    "VerbHook",
    "VerbStatus",
    "compact_message",
    "parse_message",
    "routing_sid",
]


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None


class _DataText(Forwarded[str | None]):
    """A read-only attribute of a message: ``data[key]`` when it is a string, else ``None``."""

    def __init__(self, key: str, doc: str) -> None:
        super().__init__("data", doc)
        self.key = key

    def read(self, instance: Any) -> str | None:
        return _str_or_none(self._get(instance).get(self.key))


@attrs.frozen(kw_only=True)
class JambonzMessage:
    """Base class of every inbound message.

    Attributes:
        msgid: jambonz's id for this message (an ack must echo it).
        call_sid: the envelope ``call_sid``: the sid of the call that owns the socket. Absent
            before ``session:new`` and on adulting / redirect-handover sockets. On child-leg
            events it is the *parent's* sid; use ``data["call_sid"]`` for the subject.
        hook: the hook string for hook-bearing types (``verb:hook``, ``dial:confirm``,
            ``session:redirect``, ``llm:event``, ``llm:tool-call``), else ``None``.
        b3: B3 trace propagation string, when jambonz supplied one.
        data: the payload exactly as received.
    """

    TYPE: ClassVar[str] = ""
    NEEDS_ACK: ClassVar[bool] = False

    msgid: str
    call_sid: str | None = None
    hook: str | None = None
    b3: str | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    @property
    def type(self) -> str:
        """The wire ``type``."""
        return self.TYPE

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict jambonz would send for this message (used by the fake)."""
        return {
            "type": self.type,
            "msgid": self.msgid,
            **present(call_sid=self.call_sid, hook=self.hook, b3=self.b3),
            "data": self.data if isinstance(self.data, dict) else dict(self.data),
        }


class _HasCallInfo:
    data: Mapping[str, Any]

    @functools.cached_property
    def call(self) -> CallInfo:
        """Typed call info from ``data``."""
        return CallInfo.from_data(self.data)


@attrs.frozen(kw_only=True)
class SessionNew(_HasCallInfo, JambonzMessage):
    """A new call. Ack within 5 s with a **non-empty** verb list, or jambonz rejects the call."""

    TYPE: ClassVar[str] = "session:new"
    NEEDS_ACK: ClassVar[bool] = True


@attrs.frozen(kw_only=True)
class SessionReconnect(_HasCallInfo, JambonzMessage):
    """jambonz re-opened a dropped socket; ``data`` is the original ``session:new`` payload.

    Must be acked within 5 s or jambonz hangs up; the ack's verbs are ignored (protocol.md §6).
    """

    TYPE: ClassVar[str] = "session:reconnect"
    NEEDS_ACK: ClassVar[bool] = True


@attrs.frozen(kw_only=True)
class SessionRedirect(_HasCallInfo, JambonzMessage):
    """A ``redirect`` verb (or command) handed the call to ``hook``; ack with the new program."""

    TYPE: ClassVar[str] = "session:redirect"
    NEEDS_ACK: ClassVar[bool] = True


@attrs.frozen(kw_only=True)
class SessionAdulting(_HasCallInfo, JambonzMessage):
    """A dialled child leg became its own session (new socket; no envelope ``call_sid``)."""

    TYPE: ClassVar[str] = "session:adulting"
    NEEDS_ACK: ClassVar[bool] = True

    @property
    def parent_call(self) -> CallInfo | None:
        """The parent's call info (``data.parent_call_info``), if sent."""
        parent = self.data.get("parent_call_info")
        return CallInfo.from_data(parent) if isinstance(parent, dict) else None


@attrs.frozen(kw_only=True)
class VerbHook(_HasCallInfo, JambonzMessage):
    """A verb's hook fired (``actionHook`` at the verb's end, or an event-style hook).

    Ack with a non-empty verb list to replace the remaining program, or empty to carry on.
    """

    TYPE: ClassVar[str] = "verb:hook"
    NEEDS_ACK: ClassVar[bool] = True

    @property
    def gather(self) -> GatherResult:
        """``data`` read as a gather result (speech / digits / timeout)."""
        return GatherResult.from_data(self.data)

    @property
    def dial(self) -> DialResult:
        """``data`` read as a dial result (``dial_call_status`` ...)."""
        return DialResult.from_data(self.data)

    @property
    def llm(self) -> LlmResult:
        """``data`` read as an llm actionHook result (``completion_reason``)."""
        return LlmResult.from_data(self.data)

    verb_id = _DataText("verb_id", "The ``id`` of the verb whose hook this is, if it had one.")


@attrs.frozen(kw_only=True)
class DialConfirm(_HasCallInfo, JambonzMessage):
    """A dialled party answered; ack with verbs to run on the *called* party before bridging."""

    TYPE: ClassVar[str] = "dial:confirm"
    NEEDS_ACK: ClassVar[bool] = True


@attrs.frozen(kw_only=True)
class QueueStatus(JambonzMessage):
    """Queue event (listed by jambonz as ack-awaiting; not sent on call sockets in practice)."""

    TYPE: ClassVar[str] = "queue:status"
    NEEDS_ACK: ClassVar[bool] = True


@attrs.frozen(kw_only=True)
class CallStatus(_HasCallInfo, JambonzMessage):
    """A call state change of this call or of a child leg (``data.call_sid`` says which)."""

    TYPE: ClassVar[str] = "call:status"

    call_status = _DataText(
        "call_status", "``trying``, ``ringing``, ``early-media``, ``in-progress``, ``completed``, ..."
    )

    @property
    def is_final(self) -> bool:
        """Whether the status is terminal for the leg it describes."""
        return self.call_status in {"completed", "failed", "busy", "no-answer"}


@attrs.frozen(kw_only=True)
class VerbStatus(JambonzMessage):
    """A verb lifecycle event, sent when a ``config`` verb enabled ``notifyEvents``."""

    TYPE: ClassVar[str] = "verb:status"

    event = _DataText("event", "``starting``, ``finished``, ``start-playback``, ``kill-playback``, ...")
    verb_id = _DataText("id", "The ``id`` of the verb, if it had one.")

    @property
    def verb_name(self) -> str | None:
        """The task name (``name`` for starting/finished, ``verb`` for the others)."""
        return _str_or_none(self.data.get("name")) or _str_or_none(self.data.get("verb"))


@attrs.frozen(kw_only=True)
class LlmEvent(JambonzMessage):
    """A vendor event from an ``llm`` verb's eventHook (payload snake_cased by jambonz)."""

    TYPE: ClassVar[str] = "llm:event"


@attrs.frozen(kw_only=True)
class LlmToolCall(JambonzMessage):
    """The LLM called a tool: answer with an ``llm:tool-output`` command (no ack)."""

    TYPE: ClassVar[str] = "llm:tool-call"

    @property
    def tool_call(self) -> ToolCall:
        """``data`` read as a tool call (``tool_call_id``, ``name``, ``args``)."""
        return ToolCall.from_data(self.data)


@attrs.frozen(kw_only=True)
class TtsStreamingEvent(JambonzMessage):
    """TTS streaming state (``stream_open``, ``stream_paused``, ``user_interruption``...)."""

    TYPE: ClassVar[str] = "tts:streaming-event"

    event_type = _DataText(
        "event_type",
        "``stream_open``, ``stream_paused``, ``stream_resumed``, ``stream_closed`` or"
        " ``user_interruption`` (``None`` if absent).",
    )


@attrs.frozen(kw_only=True)
class TtsTokensResult(JambonzMessage):
    """The answer to one ``tts:tokens`` command, matched by ``id``."""

    TYPE: ClassVar[str] = "tts:tokens-result"

    @property
    def id(self) -> str | int | None:
        """The ``id`` of the ``tts:tokens`` command this answers."""
        v = self.data.get("id")
        return v if isinstance(v, str | int) and not isinstance(v, bool) else None

    status = _DataText("status", "``ok``, ``failed`` or ``None`` (no streaming buffer).")
    reason = _DataText(
        "reason", "For failures: ``full``, ``missing tokens``, ``connection to <vendor> failed``."
    )


@attrs.frozen(kw_only=True)
class JambonzErrorReport(JambonzMessage):
    """jambonz reports an error: an invalid app message, or an ASR/TTS/hook problem."""

    TYPE: ClassVar[str] = "jambonz:error"

    msg = _DataText("msg", "``InvalidMessage``, ``ASR error``, ``TTS error``, ...")
    details = _DataText("details", "What went wrong, in jambonz's words.")
    content = _DataText("content", "For ``InvalidMessage``: the raw text jambonz received from us.")


@attrs.frozen(kw_only=True)
class UnknownMessage(JambonzMessage):
    """A message type this library does not know (a newer jambonz). Safe to ignore.

    If it carries a msgid, the app may ack it; the watchdog acks it empty by default at the
    deadline, which is harmless if jambonz was not waiting (unknown msgids are ignored).
    """

    unknown_type: str
    msgid: str = ""

    @property
    def type(self) -> str:
        """The unknown wire ``type``."""
        return self.unknown_type


MESSAGE_TYPES: dict[str, type[JambonzMessage]] = {
    cls.TYPE: cls
    for cls in (
        SessionNew,
        SessionReconnect,
        SessionRedirect,
        SessionAdulting,
        VerbHook,
        DialConfirm,
        QueueStatus,
        CallStatus,
        VerbStatus,
        LlmEvent,
        LlmToolCall,
        TtsStreamingEvent,
        TtsTokensResult,
        JambonzErrorReport,
    )
}


#: Longest msgid accepted (jambonz's are short-uuids, about 22 characters).
MAX_MSGID_CHARS = 256


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_message(obj: Mapping[str, Any]) -> JambonzMessage:
    """Build the typed message for one decoded JSON object.

    Raises:
        RemoteProtocolError: ``type`` missing or not a string; a known type without a string
            ``msgid``; an envelope field of the wrong type; ``data`` not an object. When the
            msgid could be read it is on the error, so a request can still be answered.
    """
    mtype = obj.get("type")
    if not isinstance(mtype, str):
        raise RemoteProtocolError("message has no string 'type'")
    msgid = obj.get("msgid")
    msgid_s = msgid if isinstance(msgid, str) else None
    if msgid_s is not None and len(msgid_s) > MAX_MSGID_CHARS:
        # jambonz's msgids are ~22 characters; an ack echoing a huge one could not be sent
        raise RemoteProtocolError(f"{mtype}: 'msgid' is over {MAX_MSGID_CHARS} characters")
    if msgid_s is not None and not _encodable(msgid_s):
        # a lone surrogate: it could never be echoed back in an ack
        if mtype in MESSAGE_TYPES:
            raise RemoteProtocolError(f"{mtype}: 'msgid' is not valid text")
        msgid_s = None
    for key in ("call_sid", "hook", "b3"):
        v = obj.get(key)
        if v is not None and not isinstance(v, str):
            raise RemoteProtocolError(f"{mtype}: '{key}' is not a string", msgid=msgid_s)
    data = obj.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise RemoteProtocolError(f"{mtype}: 'data' is not an object", msgid=msgid_s)
    cls = MESSAGE_TYPES.get(mtype)
    if cls is None:
        return UnknownMessage(
            unknown_type=mtype,
            msgid=msgid_s or "",
            call_sid=obj.get("call_sid"),
            hook=obj.get("hook"),
            b3=obj.get("b3"),
            data=data,
        )
    if msgid_s is None or not msgid_s:
        raise RemoteProtocolError(f"{mtype}: missing 'msgid'")
    return cls(
        msgid=msgid_s,
        call_sid=obj.get("call_sid"),
        hook=obj.get("hook"),
        b3=obj.get("b3"),
        data=data,
    )


def routing_sid(msg: JambonzMessage) -> str | None:
    """The sid a socket's first message names its call by: the envelope ``call_sid``, else
    ``data.call_sid`` (sockets opened by ``session:adulting`` or a redirect handover carry no
    envelope sid, nor do their reconnects). The server looks calls up *and* lists them by
    this one value, so a payload cannot list a call under a sid its envelope does not name."""
    if msg.call_sid:
        return msg.call_sid
    sid = msg.data.get("call_sid")
    return sid if isinstance(sid, str) and sid else None


#: Top-level ``data`` keys a compact payload keeps decoded: what the server reads of every
#: call's first message (its sid, the owner check of a reconnect, ``env_vars``).
_EAGER_KEYS = ("call_sid", "account_sid", "application_sid", "env_vars")

#: Deepest nesting a compact payload may hold: its decode runs again on the app's own stack
#: (Python's JSON decoder recurses once per level, against the interpreter's recursion limit),
#: so a payload that nests near that limit, which the server's parse still took, would fail
#: there. jambonz's own payloads nest a few levels; deeper ones are kept as parsed.
_MAX_COMPACT_NESTING = 64


def _nests_within(text: str, data: dict[str, Any], limit: int) -> bool:
    """Whether the JSON ``text`` (parsed ``data``) nests at most ``limit`` levels: counted in C
    on the text first (every level opens with a bracket), walked only if that is over."""
    if text.count("{") + text.count("[") <= limit:
        return True
    level: list[Any] = [data]
    for _ in range(limit):
        level = [
            v for c in level for v in (c.values() if isinstance(c, dict) else c) if isinstance(v, dict | list)
        ]
        if not level:
            return True
    return False


def compact_message(msg: JambonzMessage, text: str) -> JambonzMessage:
    """``msg``, parsed from ``text``, with its ``data`` kept compactly for as long as a call
    holds it (its first message): a :class:`Payload` of the text, the call info typed now
    except its big sub-objects (``sip``, ``headers``, ``defaults``, ``customer_data``), which
    are decoded when first read. jambonz's ``session:new`` of a SIP call is ~3 KB of text and
    ~9.5 KiB parsed. Other messages, and messages nesting deeper than
    :data:`_MAX_COMPACT_NESTING` levels, are returned as they are."""
    data = msg.data
    if not isinstance(msg, _HasCallInfo) or not isinstance(data, dict):
        return msg
    if not _nests_within(text, data, _MAX_COMPACT_NESTING):
        return msg  # its decode could fail on a deeper stack than the server's parse
    payload = Payload(text, {k: data.get(k, Payload.ABSENT) for k in _EAGER_KEYS})
    compact = type(msg)(msgid=msg.msgid, call_sid=msg.call_sid, hook=msg.hook, b3=msg.b3, data=payload)
    compact.__dict__["call"] = CallInfo.compact(data, payload)  # (``call`` is a cached property)
    return compact
