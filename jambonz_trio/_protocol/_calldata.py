"""Typed views of the payloads jambonz sends: call info and the stable hook results.

Every view keeps the raw ``data`` dict (``.raw``) and tolerates unknown keys and values of an
unexpected type (the field is then ``None``), because jambonz adds fields between releases and
vendors forward their own payloads. Key spellings are as jambonz sends them (snake_case, except
``customerData``, ``sip``, ``env_vars`` and ``args``, which are never converted -
``docs/protocol.md`` §3.2).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import attrs

from ._envvars import EnvVars

__all__ = [
    "CallInfo",
    "DialResult",
    "GatherResult",
    "LlmResult",
    "SpeechAlternative",
    "SpeechResult",
    "ToolCall",
]

_T = TypeVar("_T")

_Raw = Mapping[str, Any]


def _get(d: _Raw, key: str, tp: type[_T]) -> _T | None:
    v = d.get(key)
    if isinstance(v, tp) and not (isinstance(v, bool) and tp is not bool):
        return v
    return None


def _num(d: _Raw, key: str) -> float | None:
    v = d.get(key)
    if isinstance(v, int | float) and not isinstance(v, bool):
        return v
    return None


def _int(d: _Raw, key: str) -> int | None:
    v = d.get(key)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) < 10:
        return int(v)
    return None


def _dict(d: _Raw, key: str) -> dict[str, Any] | None:
    v = d.get(key)
    return v if isinstance(v, dict) else None


@attrs.frozen(kw_only=True)
class CallInfo:
    """The call data jambonz sends with ``session:new`` and (most) other messages.

    Fields follow ``docs/protocol.md`` §9.1 (``session:new``) and §9.2 (call info). Any field
    may be ``None`` when jambonz did not send it. ``env_vars`` (decrypted application secrets)
    and ``sip`` (the raw INVITE, PII) never appear in ``repr``.

    ``env_vars`` is always a mapping (empty when jambonz sent none). On ``call.info`` it is
    typed against the route's declarations (:class:`~jambonz_trio.EnvVar`, defaults applied);
    elsewhere (``session.call``, hook results) it holds the values as sent.
    """

    call_sid: str | None = None
    direction: str | None = None
    from_: str | None = None
    to: str | None = None
    call_id: str | None = None
    sbc_callid: str | None = None
    sip_status: int | None = None
    sip_reason: str | None = None
    call_status: str | None = None
    caller_id: str | None = None
    caller_name: str | None = None
    account_sid: str | None = None
    application_sid: str | None = None
    service_provider_sid: str | None = None
    parent_call_sid: str | None = None
    trace_id: str | None = None
    originating_sip_ip: str | None = None
    originating_sip_trunk_name: str | None = None
    local_sip_address: str | None = None
    public_ip: str | None = None
    fs_sip_address: str | None = None
    fs_public_ip: str | None = None
    call_termination_by: str | None = None
    duration: float | None = None
    api_base_url: str | None = None
    has_recording: bool | None = None
    customer_data: dict[str, Any] | None = None
    defaults: dict[str, Any] | None = None
    headers: dict[str, Any] | None = None
    env_vars: EnvVars = attrs.field(factory=EnvVars, repr=False)
    sip: dict[str, Any] | None = attrs.field(default=None, repr=False)
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_data(cls, data: _Raw) -> CallInfo:
        """Build from a message's ``data`` dict; never raises on odd values."""
        s = str
        return cls(
            call_sid=_get(data, "call_sid", s),
            direction=_get(data, "direction", s),
            from_=_get(data, "from", s),
            to=_get(data, "to", s),
            call_id=_get(data, "call_id", s),
            sbc_callid=_get(data, "sbc_callid", s),
            sip_status=_int(data, "sip_status"),
            sip_reason=_get(data, "sip_reason", s),
            call_status=_get(data, "call_status", s),
            caller_id=_get(data, "caller_id", s),
            caller_name=_get(data, "caller_name", s),
            account_sid=_get(data, "account_sid", s),
            application_sid=_get(data, "application_sid", s),
            service_provider_sid=_get(data, "service_provider_sid", s),
            parent_call_sid=_get(data, "parent_call_sid", s),
            trace_id=_get(data, "trace_id", s),
            originating_sip_ip=_get(data, "originating_sip_ip", s),
            originating_sip_trunk_name=_get(data, "originating_sip_trunk_name", s),
            local_sip_address=_get(data, "local_sip_address", s),
            public_ip=_get(data, "public_ip", s),
            fs_sip_address=_get(data, "fs_sip_address", s),
            fs_public_ip=_get(data, "fs_public_ip", s),
            call_termination_by=_get(data, "call_termination_by", s),
            duration=_num(data, "duration"),
            api_base_url=_get(data, "api_base_url", s),
            has_recording=_get(data, "has_recording", bool),
            # customerData keeps its camelCase key; "customerdata" is what a raw-object spread
            # produces on calls moved between feature servers (protocol.md §9.1).
            customer_data=_dict(data, "customerData") or _dict(data, "customerdata"),
            defaults=_dict(data, "defaults"),
            headers=_dict(data, "headers"),
            env_vars=EnvVars(_dict(data, "env_vars")),
            sip=_dict(data, "sip"),
            raw=data,
        )


@attrs.frozen(kw_only=True)
class SpeechAlternative:
    """One recognition hypothesis."""

    transcript: str
    confidence: float | None = None


@attrs.frozen(kw_only=True)
class SpeechResult:
    """A speech recognition result (``speech`` in gather / transcribe hooks)."""

    is_final: bool | None
    alternatives: tuple[SpeechAlternative, ...]
    language_code: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def transcript(self) -> str | None:
        """The best transcript, or ``None`` if there was no alternative."""
        return self.alternatives[0].transcript if self.alternatives else None

    @property
    def confidence(self) -> float | None:
        """The best alternative's confidence, when the vendor gave one."""
        return self.alternatives[0].confidence if self.alternatives else None

    @classmethod
    def from_data(cls, speech: _Raw) -> SpeechResult:
        alts = []
        raw_alts = speech.get("alternatives")
        if isinstance(raw_alts, list):
            for a in raw_alts:
                if isinstance(a, dict) and isinstance(a.get("transcript"), str):
                    alts.append(
                        SpeechAlternative(transcript=a["transcript"], confidence=_num(a, "confidence"))
                    )
        return cls(
            is_final=_get(speech, "is_final", bool),
            alternatives=tuple(alts),
            language_code=_get(speech, "language_code", str),
            raw=speech,
        )


class _CallFromRaw:
    """``call``: the typed call info of a hook result, built on first access (most apps never
    read it, and building it is a quarter of the library's cost of a hook)."""

    raw: Mapping[str, Any]

    @functools.cached_property
    def call(self) -> CallInfo:
        """Typed call info from the hook's data."""
        return CallInfo.from_data(self.raw)


GatherReason = Literal["speechDetected", "dtmfDetected", "timeout", "error", "stt-low-confidence"]


@attrs.frozen(kw_only=True)
class GatherResult(_CallFromRaw):
    """The result of a ``gather`` actionHook (protocol.md §9.3).

    ``reason`` is one of ``speechDetected``, ``dtmfDetected``, ``timeout``, ``error``,
    ``stt-low-confidence`` - or whatever a newer jambonz sends (kept as a string).
    """

    reason: str | None
    speech: SpeechResult | None = None
    digits: str | None = None
    details: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def transcript(self) -> str | None:
        """The best speech transcript, if speech was detected."""
        return self.speech.transcript if self.speech else None

    @property
    def timed_out(self) -> bool:
        """Whether the gather ended without input."""
        return self.reason == "timeout"

    @classmethod
    def from_data(cls, data: _Raw) -> GatherResult:
        speech = _dict(data, "speech")
        return cls(
            reason=_get(data, "reason", str),
            speech=SpeechResult.from_data(speech) if speech is not None else None,
            digits=_get(data, "digits", str),
            details=_get(data, "details", str),
            raw=data,
        )


@attrs.frozen(kw_only=True)
class DialResult(_CallFromRaw):
    """The result of a ``dial`` actionHook: ``dial_call_status`` etc. (protocol.md §9.3)."""

    dial_call_status: str | None
    dial_sip_status: int | None = None
    dial_call_sid: str | None = None
    dial_sbc_callid: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_data(cls, data: _Raw) -> DialResult:
        return cls(
            dial_call_status=_get(data, "dial_call_status", str),
            dial_sip_status=_int(data, "dial_sip_status"),
            dial_call_sid=_get(data, "dial_call_sid", str),
            dial_sbc_callid=_get(data, "dial_sbc_callid", str),
            raw=data,
        )


@attrs.frozen(kw_only=True)
class LlmResult(_CallFromRaw):
    """The result of an ``llm`` actionHook: why the conversation ended."""

    completion_reason: str | None
    error: Any = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_data(cls, data: _Raw) -> LlmResult:
        return cls(
            completion_reason=_get(data, "completion_reason", str),
            error=data.get("error"),
            raw=data,
        )


@attrs.frozen(kw_only=True)
class ToolCall:
    """An ``llm:tool-call`` payload: ``tool_call_id``, function ``name`` and verbatim ``args``.

    Google's s2s sends one message with ``tool_call_id == "function_call_id"`` and a
    ``function_calls`` list instead (protocol.md §4.10); ``raw`` keeps it.
    """

    tool_call_id: str | None
    name: str | None
    args: Any = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_data(cls, data: _Raw) -> ToolCall:
        return cls(
            tool_call_id=_get(data, "tool_call_id", str),
            name=_get(data, "name", str),
            args=data.get("args"),
            raw=data,
        )
