"""Typed views of the payloads jambonz sends: call info and the stable hook results.

Every view keeps the raw ``data`` dict (``.raw``) and tolerates unknown keys and values of an
unexpected type (the field is then ``None``), because jambonz adds fields between releases and
vendors forward their own payloads. Key spellings are as jambonz sends them (snake_case, except
``customerData``, ``sip``, ``env_vars`` and ``args``, which are never converted -
``docs/protocol.md`` §3.2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

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

_Raw = Mapping[str, Any]
#: ``(data, key) -> value``: reads one field, ``None`` for a missing or mistyped value
_Reader = Callable[[_Raw, str], Any]
_V = TypeVar("_V", bound="_View")

#: field metadata: the field's own reader (default: by its type; its key is its name, less a
#: trailing ``_``: ``from_`` reads ``from``)
_READ = "jambonz_read"


def _str(d: _Raw, key: str) -> str | None:
    v = d.get(key)
    return v if isinstance(v, str) else None


def _bool(d: _Raw, key: str) -> bool | None:
    v = d.get(key)
    return v if isinstance(v, bool) else None


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


def _any(d: _Raw, key: str) -> Any:
    return d.get(key)


_BY_TYPE: dict[Any, _Reader] = {str: _str, bool: _bool, int: _int, float: _num, dict: _dict}


def _reader_of(tp: Any) -> _Reader:
    """The reader of a field typed ``tp`` (``X | None``: X's; ``Any``: the value as sent)."""
    members = (
        [m for m in get_args(tp) if m is not type(None)] if get_origin(tp) in (Union, UnionType) else [tp]
    )
    if len(members) != 1:
        return _any
    return _BY_TYPE.get(get_origin(members[0]) or members[0], _any)


_PLANS: dict[type, tuple[tuple[str, str, _Reader], ...]] = {}


def _plan(cls: type) -> tuple[tuple[str, str, _Reader], ...]:
    """``(field, key, reader)`` of every field of a view but ``raw``, worked out once."""
    attrs.resolve_types(cls)
    return tuple(
        (f.name, f.name.rstrip("_"), f.metadata.get(_READ) or _reader_of(f.type))
        for f in attrs.fields(cls)
        if f.name != "raw"
    )


class _View:
    """A typed view of a payload: each field is read from the key of its name, by its type;
    ``raw`` keeps the payload."""

    raw: Mapping[str, Any]

    @classmethod
    def from_data(cls: type[_V], data: _Raw) -> _V:
        """Build from a payload dict; never raises on odd values (they read as ``None``)."""
        plan = _PLANS.get(cls)
        if plan is None:
            plan = _PLANS[cls] = _plan(cls)
        build: Any = cls
        view: _V = build(**{name: read(data, key) for name, key, read in plan}, raw=data)
        return view


def _env_vars(d: _Raw, key: str) -> EnvVars:
    return EnvVars(_dict(d, key))


def _customer_data(d: _Raw, key: str) -> dict[str, Any] | None:
    # customerData keeps its camelCase key; "customerdata" is what a raw-object spread produces
    # on calls moved between feature servers (protocol.md §9.1).
    return _dict(d, "customerData") or _dict(d, "customerdata")


@attrs.frozen(kw_only=True)
class CallInfo(_View):
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
    customer_data: dict[str, Any] | None = attrs.field(default=None, metadata={_READ: _customer_data})
    defaults: dict[str, Any] | None = None
    headers: dict[str, Any] | None = None
    env_vars: EnvVars = attrs.field(factory=EnvVars, repr=False, metadata={_READ: _env_vars})
    sip: dict[str, Any] | None = attrs.field(default=None, repr=False)
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class SpeechAlternative:
    """One recognition hypothesis."""

    transcript: str
    confidence: float | None = None


def _alternatives(d: _Raw, key: str) -> tuple[SpeechAlternative, ...]:
    found = d.get(key)
    if not isinstance(found, list):
        return ()
    return tuple(
        SpeechAlternative(transcript=a["transcript"], confidence=_num(a, "confidence"))
        for a in found
        if isinstance(a, dict) and isinstance(a.get("transcript"), str)
    )


@attrs.frozen(kw_only=True)
class SpeechResult(_View):
    """A speech recognition result (``speech`` in gather / transcribe hooks)."""

    is_final: bool | None
    alternatives: tuple[SpeechAlternative, ...] = attrs.field(default=(), metadata={_READ: _alternatives})
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


def _speech(d: _Raw, key: str) -> SpeechResult | None:
    speech = _dict(d, key)
    return SpeechResult.from_data(speech) if speech is not None else None


class _CallFromRaw(_View):
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
    speech: SpeechResult | None = attrs.field(default=None, metadata={_READ: _speech})
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


@attrs.frozen(kw_only=True)
class DialResult(_CallFromRaw):
    """The result of a ``dial`` actionHook: ``dial_call_status`` etc. (protocol.md §9.3)."""

    dial_call_status: str | None
    dial_sip_status: int | None = None
    dial_call_sid: str | None = None
    dial_sbc_callid: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class LlmResult(_CallFromRaw):
    """The result of an ``llm`` actionHook: why the conversation ended."""

    completion_reason: str | None
    error: Any = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class ToolCall(_View):
    """An ``llm:tool-call`` payload: ``tool_call_id``, function ``name`` and verbatim ``args``.

    Google's s2s sends one message with ``tool_call_id == "function_call_id"`` and a
    ``function_calls`` list instead (protocol.md §4.10); ``raw`` keeps it.
    """

    tool_call_id: str | None
    name: str | None
    args: Any = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)
