"""Typed views of the payloads jambonz sends: call info and the stable hook results.

Every view keeps the raw ``data`` dict (``.raw``) and tolerates unknown keys and values of an
unexpected type (the field is then ``None``), because jambonz adds fields between releases and
vendors forward their own payloads. Key spellings are as jambonz sends them (snake_case, except
``customerData``, ``sip``, ``env_vars`` and ``args``, which are never converted -
``docs/protocol.md`` §3.2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import attrs

from ._envvars import EnvVars
from ._json import loads_object

__all__ = [
    "CallInfo",
    "Payload",
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


#: field metadata: the field is read from ``raw`` on first access when the view was built with
#: :meth:`_View.compact` (a big sub-object the app may never read)
_LAZY = "jambonz_lazy"


class _Pending:
    """The value of a lazy field not read yet."""

    def __repr__(self) -> str:
        return "<pending>"


_PENDING: Any = _Pending()


class _LazyField:
    """Wraps the slot of a lazy field: a :data:`_PENDING` value is read from the view's
    ``raw`` (by the field's reader) on first access and stored."""

    __slots__ = ("key", "read", "slot")

    def __init__(self, slot: Any, key: str, read: _Reader) -> None:
        self.slot, self.key, self.read = slot, key, read

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self.slot
        value = self.slot.__get__(obj, owner)
        if value is _PENDING:
            value = self.read(obj.raw, self.key)
            self.slot.__set__(obj, value)
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        self.slot.__set__(obj, value)


#: the lazy fields of each view class (set by :func:`_lazy_fields`)
_LAZY_NAMES: dict[type, frozenset[str]] = {}


def _lazy_fields(cls: type[_V]) -> type[_V]:
    """Class decorator (after ``attrs``): the fields marked :data:`_LAZY` read on access."""
    target: Any = cls
    attrs.resolve_types(target)
    lazy = [f for f in attrs.fields(target) if f.metadata.get(_LAZY)]
    for f in lazy:
        reader = f.metadata.get(_READ) or _reader_of(f.type)
        setattr(cls, f.name, _LazyField(cls.__dict__[f.name], f.name.rstrip("_"), reader))
    _LAZY_NAMES[cls] = frozenset(f.name for f in lazy)
    return cls


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

    @classmethod
    def compact(cls: type[_V], data: _Raw, raw: Mapping[str, Any]) -> _V:
        """Like :meth:`from_data`, keeping ``raw`` (the same payload held compactly, e.g. a
        :class:`Payload`): the lazy fields are read from it on first access, not from
        ``data``, which the caller may then drop."""
        plan = _PLANS.get(cls)
        if plan is None:
            plan = _PLANS[cls] = _plan(cls)
        lazy = _LAZY_NAMES.get(cls, frozenset())
        build: Any = cls
        values = {name: _PENDING if name in lazy else read(data, key) for name, key, read in plan}
        view: _V = build(**values, raw=raw)
        return view

    def _evolve(self: _V, **changes: Any) -> _V:
        """``attrs.evolve`` that leaves lazy fields unread."""
        cls: Any = type(self)
        values = {}
        for f in attrs.fields(cls):
            if f.name in changes:
                values[f.name] = changes[f.name]
            else:
                attr = cls.__dict__.get(f.name)
                slot = attr.slot if isinstance(attr, _LazyField) else None
                values[f.name] = slot.__get__(self, cls) if slot is not None else getattr(self, f.name)
        build: Any = cls
        view: _V = build(**values)
        return view


class Payload(Mapping[str, Any]):
    """A message's ``data`` kept as the JSON text of its frame and a few top-level values:
    the rest is decoded on first access (then kept). Behaves as a read-only mapping equal to
    the decoded ``data`` object. The text was decoded once already (it is valid, and within the
    limits): decoding it again gives the same object."""

    __slots__ = ("_eager", "_text", "_tree")

    #: In ``eager``: the key is not in the payload.
    ABSENT: Any = _Pending()

    def __init__(self, text: str, eager: dict[str, Any]) -> None:
        """``text``: the frame's JSON text (its ``data`` object is the payload); ``eager``:
        top-level keys answered without decoding, each with its value or :attr:`ABSENT`."""
        self._text: str | None = text
        self._eager = eager
        self._tree: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        tree = self._tree
        if tree is None:
            assert self._text is not None
            data = loads_object(self._text).get("data")
            tree = self._tree = data if isinstance(data, dict) else {}
            self._text = None
        return tree

    def __getitem__(self, key: str) -> Any:
        if self._tree is None and key in self._eager:
            value = self._eager[key]
            if value is Payload.ABSENT:
                raise KeyError(key)
            return value
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Payload):
            other = other._data()
        return self._data() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._data())


def _env_vars(d: _Raw, key: str) -> EnvVars:
    return EnvVars(_dict(d, key))


def _customer_data(d: _Raw, key: str) -> dict[str, Any] | None:
    # customerData keeps its camelCase key; "customerdata" is what a raw-object spread produces
    # on calls moved between feature servers (protocol.md §9.1).
    return _dict(d, "customerData") or _dict(d, "customerdata")


@_lazy_fields
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
    customer_data: dict[str, Any] | None = attrs.field(
        default=None, metadata={_READ: _customer_data, _LAZY: True}
    )
    defaults: dict[str, Any] | None = attrs.field(default=None, metadata={_LAZY: True})
    headers: dict[str, Any] | None = attrs.field(default=None, metadata={_LAZY: True})
    env_vars: EnvVars = attrs.field(factory=EnvVars, repr=False, metadata={_READ: _env_vars})
    sip: dict[str, Any] | None = attrs.field(default=None, repr=False, metadata={_LAZY: True})
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
