"""Default call data for the fake jambonz: what an inbound call's ``session:new`` carries.

Defaults follow the docs' example (protocol.md §4.1): a Twilio-originated inbound call from
``+15083084809`` to ``+15083728299``, with fresh uuid4 sids for every :class:`CallData` and a raw
SIP INVITE built from the other fields (so overriding ``from_`` also changes the INVITE).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = ["DEFAULT_DEFAULTS", "CallData"]


def _uuid() -> str:
    return str(uuid.uuid4())


def _sbc_callid() -> str:
    return f"{uuid.uuid4().hex}@0.0.0.0"


def _trace_id() -> str:
    return uuid.uuid4().hex


#: The application's default speech settings as jambonz sends them (``defaults``).
DEFAULT_DEFAULTS: Mapping[str, Any] = {
    "synthesizer": {"vendor": "microsoft", "language": "en-US", "voice": "en-US-JennyNeural"},
    "recognizer": {"vendor": "microsoft", "language": "en-US"},
}

_SDP = (
    "v=0\r\no=root 81565042 81565042 IN IP4 10.0.13.72\r\ns=Twilio Media Gateway\r\n"
    "c=IN IP4 10.0.13.72\r\nt=0 0\r\nm=audio 40150 RTP/AVP 0 8 101\r\na=maxptime:20\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\na=sendrecv\r\na=rtcp:40151\r\na=ptime:20\r\n"
)


def _default_sip(cd: CallData) -> dict[str, Any] | None:
    """A raw INVITE in the shape jambonz puts under ``sip`` (keys verbatim), inbound only."""
    if cd.direction != "inbound":
        return None
    host = cd.local_sip_address
    uri = f"sip:{cd.to}@{host}"
    headers: dict[str, str | None] = {
        "via": ("SIP/2.0/UDP 3.212.205.202;rport=5060;branch=z9hG4bK3tv053jp1mcHQ;received=10.0.13.72"),
        "max-forwards": "70",
        "from": f"<sip:{cd.from_}@3.212.205.202:5060>;tag=9mgyBeaUy4H2S",
        "to": f"<sip:{cd.to}@3.212.205.202>",
        "call-id": cd.call_id,
        "cseq": "48063641 INVITE",
        "contact": "<sip:10.0.13.72:5060>",
        "user-agent": "Twilio Gateway",
        "allow": "INVITE, ACK, CANCEL, BYE, REFER, NOTIFY, OPTIONS",
        "content-type": "application/sdp",
        "content-length": str(len(_SDP)),
        "X-Account-Sid": cd.account_sid,
        "X-CID": cd.sbc_callid,
        "X-Application-Sid": cd.application_sid,
        "p-asserted-identity": f"<sip:{cd.from_}@206.147.76.45:5060>",
    }
    headers["X-Forwarded-For"] = cd.originating_sip_ip
    headers["X-Originating-Carrier"] = cd.originating_sip_trunk_name
    wire_names = {
        "call-id": "Call-ID",
        "cseq": "CSeq",
        "p-asserted-identity": "P-Asserted-Identity",
    }
    head = "".join(
        f"{wire_names.get(k, '-'.join(p[:1].upper() + p[1:] for p in k.split('-')))}: {v}\r\n"
        for k, v in headers.items()
        if v is not None
    )
    return {
        "headers": {k: v for k, v in headers.items() if v is not None},
        "raw": f"INVITE {uri} SIP/2.0\r\n{head}\r\n{_SDP}",
        "body": _SDP,
        "method": "INVITE",
        "version": "2.0",
        "uri": uri,
        "payload": [{"type": "application/sdp", "content": _SDP}],
    }


#: The keys of a ``session:new``'s data, in jambonz's order.
_SESSION_NEW_KEYS = (
    "sip",
    "direction",
    "trace_id",
    "has_recording",
    "caller_name",
    "call_sid",
    "account_sid",
    "application_sid",
    "from",
    "to",
    "caller_id",
    "parent_call_sid",
    "call_id",
    "sip_status",
    "sip_reason",
    "call_status",
    "sbc_callid",
    "originating_sip_ip",
    "originating_sip_trunk_name",
    "local_sip_address",
    "public_ip",
    "participants",
    "service_provider_sid",
    "defaults",
    "env_vars",
    "customerData",
)
#: The keys of call info (``call:status``, most hooks), in jambonz's order.
_CALL_INFO_KEYS = (
    "call_sid",
    "direction",
    "from",
    "to",
    "call_id",
    "sbc_callid",
    "sip_status",
    "sip_reason",
    "call_status",
    "caller_id",
    "account_sid",
    "trace_id",
    "application_sid",
    "fs_sip_address",
    "parent_call_sid",
    "originating_sip_ip",
    "originating_sip_trunk_name",
    "duration",
    "call_termination_by",
    "customerData",
    "fs_public_ip",
)
#: The :class:`CallData` attribute of each key not named as its attribute.
_ATTRIBUTES = {
    "from": "from_",
    "customerData": "customer_data",
    "fs_sip_address": "local_sip_address",
    "fs_public_ip": "public_ip",
}


@attrs.define(kw_only=True)
class CallData:
    """Everything jambonz knows about the call, as sent in ``session:new`` (protocol.md §9.1).

    Every field can be overridden (``CallData(from_="+15551234567")``). ``None`` omits the
    field from the payload. Mutable on purpose: the fake updates ``call_status`` /
    ``sip_status`` / ``sip_reason`` as the call progresses.

    ``sip`` defaults to a raw INVITE built from the other fields for inbound calls and to
    ``None`` (no ``sip`` key, like a REST-created call) for outbound ones.
    """

    call_sid: str = attrs.field(factory=_uuid)
    direction: Literal["inbound", "outbound"] = "inbound"
    from_: str = "+15083084809"
    to: str = "+15083728299"
    caller_name: str | None = ""
    caller_id: str | None = None
    account_sid: str = attrs.field(factory=_uuid)
    application_sid: str = attrs.field(factory=_uuid)
    service_provider_sid: str | None = attrs.field(factory=_uuid)
    parent_call_sid: str | None = None
    call_id: str = attrs.field(factory=_uuid)
    sbc_callid: str | None = attrs.field(factory=_sbc_callid)
    sip_status: int = 100
    sip_reason: str = "Trying"
    call_status: str = "trying"
    originating_sip_ip: str | None = "54.172.60.3"
    originating_sip_trunk_name: str | None = "Twilio"
    local_sip_address: str = "10.0.13.72:5070"
    public_ip: str | None = None
    trace_id: str = attrs.field(factory=_trace_id)
    has_recording: bool = False
    defaults: Mapping[str, Any] | None = attrs.field(factory=lambda: dict(DEFAULT_DEFAULTS))
    env_vars: Mapping[str, Any] | None = attrs.field(factory=lambda: {"APP_ENV": "test"})
    customer_data: Mapping[str, Any] | None = None
    participants: list[Any] | None = None
    sip: Mapping[str, Any] | None = attrs.field(default=attrs.Factory(_default_sip, takes_self=True))
    #: Extra keys merged into the ``session:new`` payload (for fields of newer servers).
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    def to_session_new_data(self) -> dict[str, Any]:
        """The ``data`` of ``session:new`` (snake_case; ``sip``/``env_vars`` verbatim)."""
        out = self._payload(_SESSION_NEW_KEYS)
        out.update(self.extra)
        return out

    def call_info(
        self,
        call_status: str | None = None,
        *,
        sip_status: int | None = None,
        sip_reason: str | None = None,
        duration: int | None = None,
        call_termination_by: str | None = None,
    ) -> dict[str, Any]:
        """Call info as in ``call:status`` and most hooks (``CallInfo.toJSON()``, §9.2).

        Args:
            call_status: overrides the current ``call_status`` for this payload only.
            sip_status: overrides the current SIP status.
            sip_reason: overrides the current SIP reason phrase.
            duration: seconds, sent with ``completed``.
            call_termination_by: ``"caller"`` or ``"jambonz"``, on a final status.
        """
        given = {
            "sip_status": self.sip_status if sip_status is None else sip_status,
            "sip_reason": self.sip_reason if sip_reason is None else sip_reason,
            "call_status": self.call_status if call_status is None else call_status,
            "duration": duration,
            "call_termination_by": call_termination_by,
        }
        return self._payload(_CALL_INFO_KEYS, given)

    def _payload(self, keys: tuple[str, ...], given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``keys`` (in that order) with their values: from ``given``, else the attribute of
        that name (see ``_ATTRIBUTES``); ``None`` values left out, mappings copied."""
        out: dict[str, Any] = {}
        for key in keys:
            value = given[key] if given and key in given else getattr(self, _ATTRIBUTES.get(key, key))
            if value is not None:
                out[key] = dict(value) if isinstance(value, Mapping) else value
        return out
