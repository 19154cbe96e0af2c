"""Inbound messages: parsing, typed views, round trips, hostile input, secrets, no trio.

Payload shapes follow docs/protocol.md §3-§4 and §9 (jambonz feature-server 0.9.8).
"""

from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jambonz_trio._errors import LocalProtocolError, RemoteProtocolError
from jambonz_trio._protocol import _verbs as v
from jambonz_trio._protocol._calldata import (
    CallInfo,
    DialResult,
    GatherResult,
    LlmResult,
    SpeechResult,
    ToolCall,
)
from jambonz_trio._protocol._json import TooComplex
from jambonz_trio._protocol._messages import (
    MESSAGE_TYPES,
    CallStatus,
    DialConfirm,
    JambonzErrorReport,
    JambonzMessage,
    LlmEvent,
    LlmToolCall,
    QueueStatus,
    SessionAdulting,
    SessionNew,
    SessionReconnect,
    SessionRedirect,
    TtsStreamingEvent,
    TtsTokensResult,
    UnknownMessage,
    VerbHook,
    VerbStatus,
    parse_message,
)
from jambonz_trio._protocol._outbound import Ack, RedirectCommand, RedirectToHookCommand, SipRequestCommand
from jambonz_trio._protocol._state import CallProtocol
from jambonz_trio._protocol._verbs_base import HookSpec
from tests.protocol_strategies import (
    ACK_TYPES,
    NO_ACK_TYPES,
    inbound_texts,
    json_values,
    message_strategy,
    messages,
    near_valid_inbound,
)

# -- fixtures: one realistic payload per message type ------------------------------------------

CALL_SID = "9fb35c28-3a5e-4f4f-9d6b-0a5c1b6f0d11"
ACCOUNT_SID = "bb845d4b-83a9-4cde-a6e9-50f3743bab3f"
APP_SID = "0dddaabf-0a30-43e3-84e8-426873b1a78b"
SECRET_ENV_VALUE = "sk-live-Zr8qV3xT1s2-very-secret"
SECRET_DB_PASSWORD = "pg-pa55w0rd-never-log-me"
RAW_INVITE = (
    "INVITE sip:+15083728299@10.0.13.72:5070 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.13.54:5060;branch=z9hG4bK-raw-invite-marker\r\n"
    "From: <sip:+15083084809@54.172.60.3>;tag=8h3Fj2\r\n"
    "To: <sip:+15083728299@10.0.13.72>\r\n"
    "Call-ID: d8907723-0b2a-123b-9c4e-0242ac110003\r\n"
    "X-Account-Sid: bb845d4b-83a9-4cde-a6e9-50f3743bab3f\r\n"
    "Content-Type: application/sdp\r\n\r\n"
)
SDP_BODY = "v=0\r\no=- 1690000000 1690000001 IN IP4 54.172.60.3\r\ns=sdp-body-marker\r\n"

#: The docs' inbound session:new example (protocol.md §4.1, §9.1), filled in.
SESSION_NEW_DATA: dict[str, Any] = {
    "sip": {
        "headers": {
            "via": "SIP/2.0/UDP 10.0.13.54:5060;branch=z9hG4bK-raw-invite-marker",
            "max-forwards": "70",
            "from": "<sip:+15083084809@54.172.60.3>;tag=8h3Fj2",
            "to": "<sip:+15083728299@10.0.13.72>",
            "call-id": "d8907723-0b2a-123b-9c4e-0242ac110003",
            "X-Account-Sid": ACCOUNT_SID,
            "X-Forwarded-For": "54.172.60.3",
            "X-Originating-Carrier": "Twilio",
        },
        "raw": RAW_INVITE + SDP_BODY,
        "body": SDP_BODY,
        "method": "INVITE",
        "version": "2.0",
        "uri": "sip:+15083728299@10.0.13.72:5070",
        "payload": [{"type": "application/sdp", "content": SDP_BODY}],
    },
    "direction": "inbound",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "has_recording": False,
    "caller_name": "",
    "call_sid": CALL_SID,
    "account_sid": ACCOUNT_SID,
    "application_sid": APP_SID,
    "from": "+15083084809",
    "to": "+15083728299",
    "call_id": "d8907723-0b2a-123b-9c4e-0242ac110003",
    "sip_status": 100,
    "sip_reason": "Trying",
    "call_status": "trying",
    "sbc_callid": "6d1f9a1e-2c7e-4a6f-8b6a-63c0c1f4b7d2",
    "originating_sip_ip": "54.172.60.3",
    "originating_sip_trunk_name": "Twilio",
    "local_sip_address": "10.0.13.72:5070",
    "public_ip": "3.91.20.7",
    "service_provider_sid": "2708b1b3-2736-40ea-b502-c53d8396247f",
    "defaults": {
        "synthesizer": {"vendor": "microsoft", "language": "en-US", "voice": "en-US-JennyNeural"},
        "recognizer": {"vendor": "microsoft", "language": "en-US"},
    },
    "env_vars": {"OPENAI_API_KEY": SECRET_ENV_VALUE, "DB_PASSWORD": SECRET_DB_PASSWORD},
}


def _call_info(**extra: Any) -> dict[str, Any]:
    """CallInfo.toJSON() fields (protocol.md §9.2), snake_cased."""
    base: dict[str, Any] = {
        "call_sid": CALL_SID,
        "direction": "inbound",
        "from": "+15083084809",
        "to": "+15083728299",
        "call_id": "d8907723-0b2a-123b-9c4e-0242ac110003",
        "sbc_callid": "6d1f9a1e-2c7e-4a6f-8b6a-63c0c1f4b7d2",
        "sip_status": 200,
        "sip_reason": "OK",
        "call_status": "in-progress",
        "caller_id": "+15083084809",
        "account_sid": ACCOUNT_SID,
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "application_sid": APP_SID,
        "fs_sip_address": "10.0.13.72:5070",
        "originating_sip_ip": "54.172.60.3",
        "originating_sip_trunk_name": "Twilio",
    }
    base.update(extra)
    return base


CHILD_SID = "1e0c7a52-8f64-4d6b-b0a2-47f1c2d9e3aa"
B3 = "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1"

GATHER_SPEECH = _call_info(
    reason="speechDetected",
    speech={
        "language_code": "en-US",
        "channel_tag": 1,
        "is_final": True,
        "alternatives": [
            {"confidence": 0.91, "transcript": "sales please"},
            {"confidence": 0.4, "transcript": "sails please"},
        ],
        "vendor": {"name": "microsoft", "evt": {"Id": "abc", "RecognitionStatus": "Success"}},
    },
    verb_id="menu-gather",
    stt_latency_ms=412,
)
GATHER_DIGITS = _call_info(reason="dtmfDetected", digits="1234#")
GATHER_TIMEOUT = _call_info(reason="timeout")

#: type -> (envelope fields, data); every one of the 14 types of §4 plus an unknown one.
FIXTURES: dict[str, dict[str, Any]] = {
    "session:new": {"msgid": "auuHioXGktYh2ZFYxf3hAA", "call_sid": CALL_SID, "b3": B3},
    "session:reconnect": {"msgid": "7rTqJw4Yp9vH1cXnB2dLmE", "call_sid": CALL_SID},
    "session:redirect": {
        "msgid": "Zk3P8mQa1R5tW7yB9cD2fG",
        "call_sid": CALL_SID,
        "hook": "/redirected",
        "data": _call_info(verb_id="redir-1"),
    },
    "session:adulting": {
        "msgid": "Ha8Jk2Lm4Np6Qr8St1Uv3W",
        "data": _call_info(
            call_sid=CHILD_SID,
            direction="outbound",
            parent_call_sid=CALL_SID,
            parent_call_info=_call_info(),
        ),
    },
    "verb:hook": {
        "msgid": "kX8m2Pq4Rs6Tu8Vw1Xy3Za",
        "call_sid": CALL_SID,
        "hook": "/gather-result",
        "b3": B3,
        "data": GATHER_SPEECH,
    },
    "dial:confirm": {
        "msgid": "Dc5Fg7Hj9Kl2Mn4Pq6Rs8T",
        "call_sid": CALL_SID,
        "hook": "/screen",
        "data": _call_info(
            call_sid=CHILD_SID,
            direction="outbound",
            parent_call_sid=CALL_SID,
            call_status="in-progress",
        ),
    },
    "queue:status": {
        "msgid": "Qs1Tu3Vw5Xy7Za9Bc2De4F",
        "call_sid": CALL_SID,
        "data": {"event": "join", "queue_sid": "q-1", "queue_size": 3, "call_sid": CALL_SID},
    },
    "call:status": {
        "msgid": "Cs2Dt4Eu6Fv8Gw1Hx3Iy5J",
        "call_sid": CALL_SID,
        "data": _call_info(call_status="completed", duration=37, call_termination_by="caller"),
    },
    "verb:status": {
        "msgid": "Vs3Wt5Xu7Yv9Zw2Ax4By6C",
        "call_sid": CALL_SID,
        "data": {"event": "starting", "id": "greeting", "name": "say"},
    },
    "llm:event": {
        "msgid": "Le4Mf6Ng8Oh1Pi3Qj5Rk7S",
        "call_sid": CALL_SID,
        "hook": "/llm-event",
        "data": {
            "type": "response.audio_transcript.done",
            "event_id": "event_123",
            "response_id": "resp_1",
            "transcript": "Hello, how can I help?",
        },
    },
    "llm:tool-call": {
        "msgid": "Lt5Mu7Nv9Ow2Px4Qy6Rz8S",
        "call_sid": CALL_SID,
        "hook": "/tool-call",
        "data": {
            "tool_call_id": "call_AbC123",
            "name": "get_weather",
            "args": {"locationName": "Boston, MA", "unit": "F"},
        },
    },
    "tts:streaming-event": {
        "msgid": "Ts6Uv8Wx1Yz3Ab5Cd7Ef9G",
        "call_sid": CALL_SID,
        "data": {"event_type": "stream_paused"},
    },
    "tts:tokens-result": {
        "msgid": "Tr7Us9Vt2Wu4Xv6Yw8Zx1A",
        "call_sid": CALL_SID,
        "data": {"id": 17, "status": "failed", "reason": "full"},
    },
    "jambonz:error": {
        "msgid": "Je8Kf1Lg3Mh5Ni7Oj9Pk2Q",
        "call_sid": CALL_SID,
        "data": {
            "msg": "InvalidMessage",
            "details": "Unexpected token 'o', \"not json\" is not valid JSON",
            "content": "not json",
        },
    },
    "agent:event": {  # v10 only: unknown to 0.9.8
        "msgid": "Ag9Bh2Ci4Dj6Ek8Fl1Gm3H",
        "call_sid": CALL_SID,
        "hook": "/agent",
        "data": {"type": "turn_end", "transcript": "bye"},
    },
}
FIXTURES["session:new"]["data"] = SESSION_NEW_DATA
FIXTURES["session:reconnect"]["data"] = SESSION_NEW_DATA

EXPECTED_CLASS: dict[str, type[JambonzMessage]] = {
    "session:new": SessionNew,
    "session:reconnect": SessionReconnect,
    "session:redirect": SessionRedirect,
    "session:adulting": SessionAdulting,
    "verb:hook": VerbHook,
    "dial:confirm": DialConfirm,
    "queue:status": QueueStatus,
    "call:status": CallStatus,
    "verb:status": VerbStatus,
    "llm:event": LlmEvent,
    "llm:tool-call": LlmToolCall,
    "tts:streaming-event": TtsStreamingEvent,
    "tts:tokens-result": TtsTokensResult,
    "jambonz:error": JambonzErrorReport,
    "agent:event": UnknownMessage,
}


def wire(mtype: str, **overrides: Any) -> dict[str, Any]:
    """A deep copy of the fixture for ``mtype`` as the JSON object jambonz sends."""
    fx = copy.deepcopy(FIXTURES[mtype])
    fx.update(overrides)
    return {"type": mtype, **fx}


def receive(obj: Mapping[str, Any], protocol: CallProtocol | None = None) -> JambonzMessage:
    p = protocol or CallProtocol()
    return p.receive_text(json.dumps(obj), 0.0)


# -- message types and the ack table ----------------------------------------------------------


def test_the_fourteen_types_are_exactly_hookmsgtypes() -> None:
    assert len(MESSAGE_TYPES) == 14
    assert set(MESSAGE_TYPES) == ACK_TYPES | NO_ACK_TYPES
    assert set(FIXTURES) == set(MESSAGE_TYPES) | {"agent:event"}


@pytest.mark.parametrize("mtype", sorted(MESSAGE_TYPES))
def test_needs_ack_follows_protocol_table(mtype: str) -> None:
    cls = MESSAGE_TYPES[mtype]
    assert mtype == cls.TYPE
    assert cls.NEEDS_ACK is (mtype in ACK_TYPES)


@pytest.mark.parametrize("mtype", sorted(FIXTURES))
def test_fixture_parses_to_its_class(mtype: str) -> None:
    obj = wire(mtype)
    msg = parse_message(obj)
    assert type(msg) is EXPECTED_CLASS[mtype]
    assert msg.type == mtype
    assert msg.NEEDS_ACK is (mtype in ACK_TYPES)
    assert msg.msgid == obj["msgid"]
    assert msg.call_sid == obj.get("call_sid")
    assert msg.hook == obj.get("hook")
    assert msg.b3 == obj.get("b3")
    assert msg.data == obj["data"]
    # the same through the state machine, from JSON text
    assert receive(obj) == msg
    # and back to the wire
    assert msg.to_wire() == obj


@pytest.mark.parametrize("mtype", sorted(FIXTURES))
def test_booking_follows_needs_ack(mtype: str) -> None:
    p = CallProtocol()
    p.connection_made()
    msg = receive(wire(mtype), p)
    owes = mtype in ACK_TYPES or isinstance(msg, UnknownMessage)
    assert p.is_owed(msg.msgid) is owes
    owed = p.get_owed(msg.msgid)
    if owed is not None:
        assert owed.optional is isinstance(msg, UnknownMessage)
        assert owed.message == msg


def test_unknown_type_booking_options() -> None:
    obj = wire("agent:event")
    p = CallProtocol(ack_unknown_types=False)
    p.connection_made()
    assert isinstance(receive(obj, p), UnknownMessage)
    assert not p.is_owed(obj["msgid"])
    with pytest.raises(LocalProtocolError):
        p.ack(obj["msgid"])
    # without a msgid it is delivered but never owed
    p = CallProtocol()
    p.connection_made()
    bare = {"type": "agent:event", "data": {}}
    msg = receive(bare, p)
    assert isinstance(msg, UnknownMessage)
    assert msg.msgid == ""
    assert p.owed() == []


def test_envelope_call_sid_may_be_absent() -> None:
    # REST call:status "trying" before session:new; adulting sockets (protocol.md §3.1)
    for mtype in ("call:status", "session:adulting"):
        obj = wire(mtype)
        obj.pop("call_sid", None)
        msg = receive(obj)
        assert msg.call_sid is None
        assert "call_sid" not in msg.to_wire()


def test_null_data_reads_as_empty() -> None:
    msg = parse_message({"type": "verb:hook", "msgid": "m1", "data": None})
    assert msg.data == {}
    msg = parse_message({"type": "call:status", "msgid": "m2"})
    assert msg.data == {}


def test_child_leg_event_subject_is_in_data() -> None:
    obj = wire("call:status")
    obj["data"] = _call_info(call_sid=CHILD_SID, direction="outbound", parent_call_sid=CALL_SID)
    msg = parse_message(obj)
    assert isinstance(msg, CallStatus)
    assert msg.call_sid == CALL_SID
    assert msg.call.call_sid == CHILD_SID
    assert msg.call.parent_call_sid == CALL_SID


# -- typed views ---------------------------------------------------------------------------------


def test_session_new_call_view() -> None:
    msg = parse_message(wire("session:new"))
    assert isinstance(msg, SessionNew)
    call = msg.call
    assert call.call_sid == CALL_SID
    assert call.direction == "inbound"
    assert call.from_ == "+15083084809"
    assert call.to == "+15083728299"
    assert call.sip_status == 100
    assert call.sip_reason == "Trying"
    assert call.call_status == "trying"
    assert call.caller_name == ""
    assert call.account_sid == ACCOUNT_SID
    assert call.application_sid == APP_SID
    assert call.service_provider_sid == "2708b1b3-2736-40ea-b502-c53d8396247f"
    assert call.originating_sip_ip == "54.172.60.3"
    assert call.originating_sip_trunk_name == "Twilio"
    assert call.local_sip_address == "10.0.13.72:5070"
    assert call.public_ip == "3.91.20.7"
    assert call.has_recording is False
    assert call.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert call.env_vars == {"OPENAI_API_KEY": SECRET_ENV_VALUE, "DB_PASSWORD": SECRET_DB_PASSWORD}
    assert call.defaults is not None
    assert call.defaults["synthesizer"]["voice"] == "en-US-JennyNeural"
    assert call.sip is not None
    assert call.sip["headers"]["X-Account-Sid"] == ACCOUNT_SID  # not snake_cased (§3.2)
    assert call.sip["raw"].startswith("INVITE ")
    assert call.customer_data is None
    assert call.parent_call_sid is None
    assert call.raw is msg.data
    # the reconnect carries the same payload (§4.2)
    reconnect = parse_message(wire("session:reconnect"))
    assert isinstance(reconnect, SessionReconnect)
    assert reconnect.call == call


def test_rest_outbound_session_new_customer_data() -> None:
    data = _call_info(direction="outbound", call_status="in-progress")
    data["customerData"] = {"orderId": "A-17", "nested": {"keepCase": True}}
    data["env_vars"] = {"X": "y"}
    msg = parse_message({"type": "session:new", "msgid": "m", "data": data})
    assert isinstance(msg, SessionNew)
    call = msg.call
    assert call.customer_data == {"orderId": "A-17", "nested": {"keepCase": True}}
    assert call.direction == "outbound"
    assert call.sip is None
    # the snake-spread variant of a call moved between feature servers (§9.1)
    data2 = _call_info(customerdata={"k": 1})
    assert CallInfo.from_data(data2).customer_data == {"k": 1}


def test_verb_hook_gather_speech() -> None:
    msg = parse_message(wire("verb:hook"))
    assert isinstance(msg, VerbHook)
    g = msg.gather
    assert isinstance(g, GatherResult)
    assert g.reason == "speechDetected"
    assert g.speech is not None
    assert g.speech.is_final is True
    assert g.speech.language_code == "en-US"
    assert [a.transcript for a in g.speech.alternatives] == ["sales please", "sails please"]
    assert g.transcript == "sales please"
    assert g.speech.confidence == 0.91
    assert g.digits is None
    assert g.timed_out is False
    assert g.call.call_sid == CALL_SID
    assert g.call is g.call  # built once, on first access
    assert msg.verb_id == "menu-gather"
    assert msg.hook == "/gather-result"


def test_verb_hook_gather_digits_and_timeout() -> None:
    digits = parse_message(wire("verb:hook", data=GATHER_DIGITS))
    assert isinstance(digits, VerbHook)
    assert digits.gather.reason == "dtmfDetected"
    assert digits.gather.digits == "1234#"
    assert digits.gather.speech is None
    assert digits.gather.transcript is None
    timeout = parse_message(wire("verb:hook", data=GATHER_TIMEOUT))
    assert isinstance(timeout, VerbHook)
    assert timeout.gather.timed_out
    assert timeout.gather.reason == "timeout"
    err = parse_message(wire("verb:hook", data=_call_info(reason="error", details="ASR failed")))
    assert isinstance(err, VerbHook)
    assert err.gather.details == "ASR failed"
    low = _call_info(reason="stt-low-confidence", speech={"is_final": True, "alternatives": []})
    low_msg = parse_message(wire("verb:hook", data=low))
    assert isinstance(low_msg, VerbHook)
    assert low_msg.gather.reason == "stt-low-confidence"
    assert low_msg.gather.speech is not None
    assert low_msg.gather.transcript is None
    assert low_msg.gather.speech.confidence is None


def test_verb_hook_dial_and_llm_results() -> None:
    data = _call_info(
        dial_call_status="completed",
        dial_sip_status=200,
        dial_call_sid=CHILD_SID,
        dial_sbc_callid="sbc-child-1",
    )
    msg = parse_message(wire("verb:hook", hook="/dial-result", data=data))
    assert isinstance(msg, VerbHook)
    d = msg.dial
    assert isinstance(d, DialResult)
    assert d.dial_call_status == "completed"
    assert d.dial_sip_status == 200
    assert d.dial_call_sid == CHILD_SID
    assert d.dial_sbc_callid == "sbc-child-1"
    assert d.call.call_sid == CALL_SID
    llm = parse_message(wire("verb:hook", data=_call_info(completion_reason="normal conversation end")))
    assert isinstance(llm, VerbHook)
    assert isinstance(llm.llm, LlmResult)
    assert llm.llm.completion_reason == "normal conversation end"


def test_llm_tool_call_view() -> None:
    msg = parse_message(wire("llm:tool-call"))
    assert isinstance(msg, LlmToolCall)
    tc = msg.tool_call
    assert isinstance(tc, ToolCall)
    assert tc.tool_call_id == "call_AbC123"
    assert tc.name == "get_weather"
    assert tc.args == {"locationName": "Boston, MA", "unit": "F"}  # verbatim (§3.2)
    # Google's single message form (§4.10)
    google = {
        "tool_call_id": "function_call_id",
        "type": "toolCall",
        "function_calls": [{"name": "f", "args": {"a": 1}, "id": "fc-1"}],
    }
    g = parse_message(wire("llm:tool-call", data=google))
    assert isinstance(g, LlmToolCall)
    assert g.tool_call.tool_call_id == "function_call_id"
    assert g.tool_call.name is None
    assert g.tool_call.raw["function_calls"][0]["id"] == "fc-1"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"id": 17, "status": "ok"}, (17, "ok", None)),
        ({"id": "t-1", "status": "failed", "reason": "full"}, ("t-1", "failed", "full")),
        (
            {"id": 3, "status": "failed", "reason": "missing tokens"},
            (3, "failed", "missing tokens"),
        ),
        (
            {"id": 4, "status": "failed", "reason": "connection to deepgram failed"},
            (4, "failed", "connection to deepgram failed"),
        ),
        ({"id": 5}, (5, None, None)),  # no streaming buffer
        ({"id": True, "status": 1, "reason": ["x"]}, (None, None, None)),  # wrong types
    ],
)
def test_tts_tokens_result_view(data: dict[str, Any], expected: tuple[Any, ...]) -> None:
    msg = parse_message(wire("tts:tokens-result", data=data))
    assert isinstance(msg, TtsTokensResult)
    assert (msg.id, msg.status, msg.reason) == expected


def test_jambonz_error_views() -> None:
    msg = parse_message(wire("jambonz:error"))
    assert isinstance(msg, JambonzErrorReport)
    assert msg.msg == "InvalidMessage"
    assert msg.details is not None
    assert msg.details.startswith("Unexpected token")
    assert msg.content == "not json"
    verb_level = {
        "msg": "TTS error",
        "details": "synthesis failed",
        "failover": "not available",
        "verb": "say",
        "id": "greet",
    }
    vl = parse_message(wire("jambonz:error", data=verb_level))
    assert isinstance(vl, JambonzErrorReport)
    assert (vl.msg, vl.details, vl.content) == ("TTS error", "synthesis failed", None)
    bad = parse_message(wire("jambonz:error", data={"msg": 1, "details": None, "content": {}}))
    assert isinstance(bad, JambonzErrorReport)
    assert (bad.msg, bad.details, bad.content) == (None, None, None)


@pytest.mark.parametrize(
    ("data", "event", "name", "verb_id"),
    [
        ({"event": "starting", "id": "greeting", "name": "say"}, "starting", "say", "greeting"),
        ({"event": "finished", "name": "Llm_OpenAI_s2s"}, "finished", "Llm_OpenAI_s2s", None),
        ({"event": "start-playback", "verb": "play", "id": "p1"}, "start-playback", "play", "p1"),
        (
            {
                "event": "synthesized-audio",
                "verb": "say",
                "vendor": "microsoft",
                "served_from_cache": True,
                "characters": 12,
                "elapsed_time": 230,
            },
            "synthesized-audio",
            "say",
            None,
        ),
        ({"event": 5, "verb": ["x"], "id": 3}, None, None, None),
    ],
)
def test_verb_status_both_shapes(
    data: dict[str, Any], event: str | None, name: str | None, verb_id: str | None
) -> None:
    msg = parse_message(wire("verb:status", data=data))
    assert isinstance(msg, VerbStatus)
    assert msg.event == event
    assert msg.verb_name == name
    assert msg.verb_id == verb_id


def test_call_status_and_streaming_and_adulting_views() -> None:
    cs = parse_message(wire("call:status"))
    assert isinstance(cs, CallStatus)
    assert cs.call_status == "completed"
    assert cs.is_final
    assert cs.call.duration == 37
    assert cs.call.call_termination_by == "caller"
    ringing = parse_message(wire("call:status", data=_call_info(call_status="ringing")))
    assert isinstance(ringing, CallStatus)
    assert not ringing.is_final
    ts = parse_message(wire("tts:streaming-event"))
    assert isinstance(ts, TtsStreamingEvent)
    assert ts.event_type == "stream_paused"
    ad = parse_message(wire("session:adulting"))
    assert isinstance(ad, SessionAdulting)
    assert ad.call.call_sid == CHILD_SID
    assert ad.parent_call is not None
    assert ad.parent_call.call_sid == CALL_SID
    odd = parse_message(wire("session:adulting", data={"parent_call_info": "x"}))
    assert isinstance(odd, SessionAdulting)
    assert odd.parent_call is None


def test_unknown_keys_are_tolerated() -> None:
    data = {**GATHER_DIGITS, "brand_new_field": {"x": [1, 2]}, "another": None}
    msg = parse_message(wire("verb:hook", data=data, brand_new_envelope_key=1))
    assert isinstance(msg, VerbHook)
    assert msg.gather.digits == "1234#"
    assert msg.call.call_sid == CALL_SID
    assert msg.data["brand_new_field"] == {"x": [1, 2]}


WRONG_TYPED: list[Any] = [None, True, False, 1.5, -3, [], ["x"], {}, {"a": 1}, "", "text"]


@pytest.mark.parametrize("bad", WRONG_TYPED, ids=repr)
def test_wrong_typed_values_give_none(bad: Any) -> None:
    keys = [
        "call_sid", "direction", "from", "to", "sip_status", "call_status", "duration",
        "has_recording", "customerData", "defaults", "headers", "env_vars", "sip",
        "reason", "speech", "digits", "details", "dial_call_status", "dial_sip_status",
        "completion_reason", "tool_call_id", "name", "verb_id", "parent_call_info",
    ]  # fmt: skip
    data = dict.fromkeys(keys, bad)
    msg = parse_message(wire("verb:hook", data=data))
    assert isinstance(msg, VerbHook)
    _assert_typed(msg.call)
    _assert_typed(msg.gather)
    _assert_typed(msg.dial)
    _assert_typed(msg.llm)
    tc = parse_message(wire("llm:tool-call", data=data))
    assert isinstance(tc, LlmToolCall)
    _assert_typed(tc.tool_call)
    # the field that matches the bad value's type may keep it; every other one is None
    call = msg.call
    if not isinstance(bad, str):
        assert call.call_sid is None
        assert call.from_ is None
    if not isinstance(bad, dict):
        assert call.env_vars == {}  # always a mapping: empty when not an object
        assert call.sip is None
        assert msg.gather.speech is None
    if not (isinstance(bad, int) and not isinstance(bad, bool)):
        assert call.sip_status is None
        assert msg.dial.dial_sip_status is None


def _type_ok(tp: Any, value: Any) -> bool:
    """Whether ``value`` fits the resolved annotation ``tp`` (JSON-ish subset)."""
    if tp is Any:
        return True
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_type_ok(m, value) for m in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if origin is tuple:
        return isinstance(value, tuple)
    if origin is Mapping or tp is Mapping:
        return isinstance(value, Mapping)
    if isinstance(tp, type):
        return isinstance(value, tp)
    raise AssertionError(f"unhandled annotation {tp!r}")


def _assert_typed(obj: Any) -> None:
    """Every field of the view ``obj`` (recursively) has its declared type."""
    hints = get_type_hints(type(obj))
    for f in attrs.fields(type(obj)):
        value = getattr(obj, f.name)
        assert _type_ok(hints[f.name], value), (type(obj).__name__, f.name, value)
        if attrs.has(type(value)):
            _assert_typed(value)
        if isinstance(value, tuple):
            for item in value:
                _assert_typed(item)


_VIEW_KEYS = [
    "call_sid", "direction", "from", "to", "call_id", "sbc_callid", "sip_status", "sip_reason",
    "call_status", "caller_id", "caller_name", "account_sid", "application_sid",
    "service_provider_sid", "parent_call_sid", "trace_id", "originating_sip_ip",
    "originating_sip_trunk_name", "local_sip_address", "public_ip", "fs_sip_address",
    "fs_public_ip", "call_termination_by", "duration", "api_base_url", "has_recording",
    "customerData", "customerdata", "defaults", "headers", "env_vars", "sip", "reason", "digits",
    "details", "dial_call_status", "dial_sip_status", "dial_call_sid", "dial_sbc_callid",
    "completion_reason", "error", "tool_call_id", "name", "args", "id", "status", "event",
    "verb", "event_type", "msg", "content", "verb_id",
]  # fmt: skip

_speech_values = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "is_final": json_values,
            "language_code": json_values,
            "alternatives": json_values
            | st.lists(
                st.fixed_dictionaries({}, optional={"transcript": json_values, "confidence": json_values})
                | json_values,
                max_size=3,
            ),
        },
    ),
)

_view_data = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(_VIEW_KEYS, json_values | st.text(max_size=12)),
        "speech": _speech_values,
        "parent_call_info": json_values | st.dictionaries(st.sampled_from(_VIEW_KEYS), json_values),
    },
)


def _has_unreadable_digit_string(value: Any) -> bool:
    """The known `_int` crash (see test_digit_like_string_does_not_crash_views)."""
    if isinstance(value, str):
        return value.isdigit() and not value.isdecimal()
    if isinstance(value, dict):
        return any(_has_unreadable_digit_string(x) for x in value.values())
    if isinstance(value, list):
        return any(_has_unreadable_digit_string(x) for x in value)
    return False


@settings(max_examples=100)
@given(data=_view_data, extra=st.dictionaries(st.text(max_size=6), json_values, max_size=3))
def test_typed_views_never_raise_and_are_well_typed(data: dict[str, Any], extra: dict[str, Any]) -> None:
    full = {**extra, **data}
    assume(not _has_unreadable_digit_string(full))
    for mtype in sorted(MESSAGE_TYPES):
        msg = parse_message({"type": mtype, "msgid": "m", "data": full})
        for attr in (
            "call", "gather", "dial", "llm", "tool_call", "parent_call", "call_status",
            "is_final", "event", "verb_id", "verb_name", "event_type", "id", "status",
            "reason", "msg", "details", "content",
        ):  # fmt: skip
            if not hasattr(type(msg), attr):
                continue
            value = getattr(msg, attr)
            if attrs.has(type(value)):
                _assert_typed(value)
            else:
                assert value is None or isinstance(value, str | int | bool), (attr, value)


@pytest.mark.parametrize("value", ["²", "①", "１²"])
def test_digit_like_string_does_not_crash_views(value: str) -> None:
    msg = parse_message(wire("verb:hook", data={"sip_status": value, "dial_sip_status": value}))
    assert isinstance(msg, VerbHook)
    assert msg.call.sip_status is None
    assert msg.dial.dial_sip_status is None


def test_receive_text_survives_digit_like_sip_status() -> None:
    # session:new without an envelope call_sid makes CallProtocol read msg.call.call_sid,
    # which builds the whole CallInfo (FM-18: nothing but RemoteProtocolError may escape)
    p = CallProtocol()
    p.connection_made()
    text = json.dumps({"type": "session:new", "msgid": "m", "data": {"sip_status": "²"}})
    try:
        p.receive_text(text, 0.0)
    except RemoteProtocolError:
        pass


def test_numeric_strings_are_read_as_ints() -> None:
    # documented leniency of the views: "200" reads as 200 (older servers sent strings)
    call = CallInfo.from_data({"sip_status": "200"})
    assert call.sip_status == 200
    assert CallInfo.from_data({"sip_status": "2000000000000"}).sip_status is None


def test_speech_result_skips_malformed_alternatives() -> None:
    s = SpeechResult.from_data(
        {
            "is_final": "yes",
            "alternatives": [
                {"transcript": 5},
                "junk",
                {"transcript": "ok", "confidence": "high"},
                {"transcript": "two", "confidence": True},
            ],
        }
    )
    assert s.is_final is None
    assert [a.transcript for a in s.alternatives] == ["ok", "two"]
    assert s.confidence is None
    assert s.alternatives[1].confidence is None


# -- round trips ----------------------------------------------------------------------------------


ALL_MESSAGE_CLASSES: list[type[JambonzMessage]] = [*MESSAGE_TYPES.values(), UnknownMessage]


@pytest.mark.parametrize("cls", ALL_MESSAGE_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=40)
@given(data=st.data())
def test_round_trip_every_message_class(cls: type[JambonzMessage], data: st.DataObject) -> None:
    msg = data.draw(message_strategy(cls))
    assert type(msg) is cls
    assert parse_message(msg.to_wire()) == msg
    # through JSON text, and through the state machine
    text = json.dumps(msg.to_wire())
    assert parse_message(json.loads(text)) == msg
    assert CallProtocol().receive_text(text, 0.0) == msg


@given(messages())
def test_round_trip_any_message_compact_json(msg: JambonzMessage) -> None:
    # the compact, non-ASCII form jambonz's JSON.stringify produces
    text = json.dumps(msg.to_wire(), ensure_ascii=False, separators=(",", ":"))
    assert CallProtocol().receive_text(text, 0.0) == msg


# -- hostile input --------------------------------------------------------------------------------


def _feed(p: CallProtocol, text: str) -> JambonzMessage | RemoteProtocolError:
    try:
        msg = p.receive_text(text, 0.0)
    except RemoteProtocolError as exc:
        return exc
    assert isinstance(msg, JambonzMessage)
    return msg


@settings(max_examples=300)
@given(st.lists(inbound_texts(), min_size=1, max_size=6))
def test_any_text_gives_a_message_or_remote_protocol_error(texts: list[str]) -> None:
    p = CallProtocol()
    p.connection_made()
    for text in texts:
        _feed(p, text)  # anything else escaping fails the test
    # the ack book only ever holds requests that came in
    for owed in p.owed():
        assert owed.message.NEEDS_ACK or isinstance(owed.message, UnknownMessage)


@settings(max_examples=300)
@given(near_valid_inbound())
def test_near_valid_objects(obj: dict[str, Any]) -> None:
    try:
        msg = parse_message(obj)
    except RemoteProtocolError as exc:
        mtype, msgid = obj.get("type"), obj.get("msgid")
        if isinstance(mtype, str) and isinstance(msgid, str) and msgid:
            assert exc.msgid == msgid  # a request can still be answered
        else:
            assert exc.msgid is None or exc.msgid == msgid
        return
    assert msg.type == obj["type"]
    assert isinstance(obj["type"], str)
    if not isinstance(msg, UnknownMessage):
        assert msg.msgid == obj["msgid"]
        assert type(msg) is MESSAGE_TYPES[obj["type"]]
    assert msg.data == (obj.get("data") or {})


def _valid_hook_text(msgid: str) -> str:
    return json.dumps({"type": "verb:hook", "msgid": msgid, "hook": "/h", "data": {}})


_DEEP = 100_000
TRAPS: list[tuple[str, str]] = [
    ("deep-array", "[" * _DEEP + "]" * _DEEP),
    ("deep-array-unclosed", "[" * _DEEP),
    ("deep-object", '{"a":' * _DEEP + "1" + "}" * _DEEP),
    ("deep-in-data", '{"type":"verb:hook","msgid":"m","data":{"x":' + "[" * _DEEP + "]" * _DEEP),
    ("int-5000-digits-top", "7" * 5000),
    ("int-5000-digits-in-data", '{"type":"call:status","msgid":"m","data":{"n":' + "9" * 5000 + "}}"),
    ("nan", "NaN"),
    ("nan-in-data", '{"type":"verb:hook","msgid":"m","data":{"x":NaN}}'),
    ("infinity", '{"type":"verb:hook","msgid":"m","data":{"x":Infinity}}'),
    ("-infinity", '{"type":"verb:hook","msgid":"m","data":{"x":-Infinity}}'),
    ("lone-surrogate-top", '"\\ud800"'),
    ("top-array", '[{"type":"verb:hook","msgid":"m","data":{}}]'),
    ("top-null", "null"),
    ("top-number", "42"),
    ("top-string", '"verb:hook"'),
    ("top-true", "true"),
    ("empty", ""),
    ("type-null", '{"type": null}'),
    ("type-number", '{"type": 5, "msgid": "m"}'),
    ("no-type", '{"msgid": "m", "data": {}}'),
    ("known-type-no-msgid", '{"type":"verb:hook"}'),
    ("known-type-empty-msgid", '{"type":"verb:hook","msgid":""}'),
    ("known-type-int-msgid", '{"type":"verb:hook","msgid":7,"data":{}}'),
    ("trailing-garbage", '{"type":"verb:hook","msgid":"m","data":{}} x'),
    ("binary-ish", "\x00\x01\x02"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text"), TRAPS, ids=[n for n, _ in TRAPS])
def test_json_traps_raise_remote_protocol_error(name: str, text: str) -> None:
    p = CallProtocol()
    p.connection_made()
    with pytest.raises(RemoteProtocolError) as info:
        p.receive_text(text, 0.0)
    assert type(info.value) in (RemoteProtocolError, TooComplex)  # deep nesting: TooComplex
    assert info.value.msgid is None
    assert p.owed() == []
    # the protocol is still usable afterwards
    msg = p.receive_text(_valid_hook_text("good-1"), 1.0)
    assert isinstance(msg, VerbHook)
    assert json.loads(p.ack("good-1"))["msgid"] == "good-1"


DATA_NOT_OBJECT: list[tuple[str, Any]] = [
    ("verb:hook", [1, 2]),
    ("verb:hook", "text"),
    ("session:new", 5),
    ("call:status", True),
    ("dial:confirm", []),
    ("agent:event", ["x"]),  # unknown types too
]


@pytest.mark.parametrize(("mtype", "data"), DATA_NOT_OBJECT)
def test_data_not_an_object_carries_msgid(mtype: str, data: Any) -> None:
    p = CallProtocol()
    p.connection_made()
    text = json.dumps({"type": mtype, "msgid": "req-9", "data": data})
    with pytest.raises(RemoteProtocolError) as info:
        p.receive_text(text, 0.0)
    assert info.value.msgid == "req-9"
    assert not p.is_owed("req-9")


@pytest.mark.parametrize("field", ["call_sid", "hook", "b3"])
@pytest.mark.parametrize("bad", [5, [], {}, True])
def test_envelope_field_of_wrong_type(field: str, bad: Any) -> None:
    obj = {"type": "verb:hook", "msgid": "req-3", "data": {}, field: bad}
    with pytest.raises(RemoteProtocolError) as info:
        receive(obj)
    assert info.value.msgid == "req-3"


def test_duplicate_keys_last_wins_like_javascript() -> None:
    # JSON.parse in jambonz keeps the last value too, so both sides agree on the message
    text = '{"type":"call:status","msgid":"a","type":"verb:hook","msgid":"b","data":{}}'
    msg = CallProtocol().receive_text(text, 0.0)
    assert isinstance(msg, VerbHook)
    assert msg.msgid == "b"


def test_lone_surrogate_inside_data_is_accepted() -> None:
    # valid JSON (escaped), and JavaScript strings may hold lone surrogates
    text = '{"type":"call:status","msgid":"m","data":{"sip_reason":"\\ud800"}}'
    msg = CallProtocol().receive_text(text, 0.0)
    assert isinstance(msg, CallStatus)
    assert msg.call.sip_reason == "\ud800"


@pytest.mark.parametrize("mtype", ["verb:hook", "agent:event"])
def test_owed_msgid_is_always_answerable(mtype: str) -> None:
    p = CallProtocol()
    p.connection_made()
    text = json.dumps({"type": mtype, "msgid": "\ud800", "data": {}})
    try:
        p.receive_text(text, 0.0)
    except RemoteProtocolError:
        return  # refusing it at receipt is fine
    for owed in p.overdue(10.0):
        out = json.loads(p.ack(owed.msgid))
        assert out["msgid"] == owed.wire_msgid


def test_duplicate_owed_msgid_is_a_remote_error() -> None:
    p = CallProtocol()
    p.connection_made()
    p.receive_text(_valid_hook_text("dup"), 0.0)
    with pytest.raises(RemoteProtocolError):
        p.receive_text(_valid_hook_text("dup"), 1.0)
    owed = p.get_owed("dup")
    assert owed is not None
    assert owed.received_at == 0.0  # the first booking is untouched


def test_remote_errors_do_not_echo_secrets() -> None:
    good = json.dumps(wire("session:new"), separators=(",", ":"))
    assert '"sip_status":100' in good
    for text in (
        good + " trailing",
        good[:-1],
        good.replace('"sip_status":100', '"sip_status":NaN'),
    ):
        with pytest.raises(RemoteProtocolError) as info:
            CallProtocol().receive_text(text, 0.0)
        shown = str(info.value) + repr(info.value)
        assert SECRET_ENV_VALUE not in shown
        assert "raw-invite-marker" not in shown


# -- S-11: secrets never in repr -------------------------------------------------------------------

SIP_CONTENT = "Signal=5\r\nDuration=160\r\nsecret-sip-content-marker"


def _no_secret(text: str) -> None:
    for needle in (
        SECRET_ENV_VALUE,
        SECRET_DB_PASSWORD,
        "raw-invite-marker",
        "sdp-body-marker",
        "INVITE sip:",
        "hook-password-marker",
        "auth-password-marker",
        "secret-sip-content-marker",
    ):
        assert needle not in text, needle


def test_repr_of_session_new_hides_env_vars_and_sip() -> None:
    msg = parse_message(wire("session:new"))
    assert isinstance(msg, SessionNew)
    _no_secret(repr(msg))
    _no_secret(str(msg))
    _no_secret(repr(msg.call))
    reconnect = parse_message(wire("session:reconnect"))
    assert isinstance(reconnect, SessionReconnect)
    _no_secret(repr(reconnect))
    _no_secret(repr(reconnect.call))
    p = CallProtocol()
    p.connection_made()
    receive(wire("session:new"), p)
    _no_secret(repr(p.owed()))
    # but the values are still reachable for the app
    assert msg.call.env_vars is not None
    assert msg.call.env_vars["OPENAI_API_KEY"] == SECRET_ENV_VALUE
    assert "gather" not in repr(msg)  # data is not shown at all


def test_repr_of_hooks_and_auth_hides_passwords() -> None:
    hook = HookSpec(url="https://app.example.com/h", username="u", password="hook-password-marker")
    auth = v.Auth(username="ws-user", password="auth-password-marker")
    objects: list[Any] = [
        hook,
        auth,
        v.Listen(url="wss://audio.example.com", ws_auth=auth, action_hook=hook),
        v.Target(type="sip", sip_uri="sip:x@example.com", auth=auth, confirm_hook=hook),
        v.Dial(target=[v.Target(type="user", name="bob", auth=auth)], action_hook=hook),
        v.Redirect(action_hook=hook),
        Ack(msgid="m", verbs=[v.Redirect(action_hook=hook)]),
        RedirectCommand(verbs=[v.Listen(url="wss://a", auth=auth)]),
        RedirectToHookCommand(call_hook=hook, child_call_hook=hook),
    ]
    for obj in objects:
        _no_secret(repr(obj))
    assert "ws-user" in repr(auth)  # only the password is hidden


def test_repr_of_sip_request_command_hides_content() -> None:
    cmd = SipRequestCommand(method="INFO", content_type="application/dtmf-relay", content=SIP_CONTENT)
    _no_secret(repr(cmd))
    assert "INFO" in repr(cmd)


# -- the sans-io core imports no trio --------------------------------------------------------------

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "jambonz_trio"
PROTOCOL_DIR = PACKAGE_ROOT / "_protocol"
FORBIDDEN = frozenset({"trio", "trio_websocket", "wsproto"})


def _module_file(dotted: str) -> Path | None:
    """The source file of the ``jambonz_trio`` module ``dotted``, if there is one."""
    parts = dotted.split(".")
    if parts[0] != "jambonz_trio":
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names), at any nesting level."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: str) -> set[str]:
    """Every module ``source`` imports, relative ones resolved against ``package``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(base_parts)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # `from pkg import submodule`
                if alias.name != "*":
                    found.add(f"{target}.{alias.name}")
        elif isinstance(node, ast.Call):  # importlib.import_module("x") / __import__("x")
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if (
                called in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
    return found


def _closure(start: list[Path]) -> dict[Path, set[str]]:
    seen: dict[Path, set[str]] = {}
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen[path] = _imports_of(path)
        for name in seen[path]:
            target = _module_file(name)
            if target is not None and target not in seen:
                todo.append(target)
    return seen


def test_import_scanner_sees_every_kind_of_import() -> None:
    src = (
        "import os, trio\n"
        "from .._errors import X\n"
        "from . import _json\n"
        "from ..sub.mod import y\n"
        "def f():\n"
        "    import wsproto.events\n"
        "    importlib.import_module('trio_websocket')\n"
        "if TYPE_CHECKING:\n"
        "    from trio import Nursery\n"
    )
    found = _imports_in(src, "jambonz_trio._protocol")
    assert {"os", "trio", "wsproto.events", "trio_websocket"} <= found
    assert "jambonz_trio._errors" in found
    assert "jambonz_trio._protocol._json" in found
    assert "jambonz_trio.sub.mod" in found
    assert _module_file("jambonz_trio._errors") == PACKAGE_ROOT / "_errors.py"
    assert _module_file("jambonz_trio._protocol") == PROTOCOL_DIR / "__init__.py"
    assert _module_file("trio") is None
    assert "jambonz_trio._errors" in _imports_of(PROTOCOL_DIR / "_state.py")


def test_protocol_core_imports_no_trio() -> None:
    start = sorted(PROTOCOL_DIR.glob("*.py"))
    assert PROTOCOL_DIR / "_state.py" in start
    closure = _closure(start)
    # intra-package imports were followed out of _protocol/
    assert PACKAGE_ROOT / "_errors.py" in closure
    assert PACKAGE_ROOT / "__init__.py" not in closure  # nothing in the core imports it
    offenders = {
        str(path.relative_to(PACKAGE_ROOT.parent)): sorted(
            name for name in names if name.split(".")[0] in FORBIDDEN
        )
        for path, names in closure.items()
    }
    offenders = {k: names for k, names in offenders.items() if names}
    assert offenders == {}


_RUNTIME_CHECK = """
import importlib.abc, sys, types
FORBIDDEN = {"trio", "trio_websocket", "wsproto"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError("blocked import of " + name)
        return None
sys.meta_path.insert(0, Block())
# a stand-in for the top-level package, so its __init__ (which imports trio) does not run
pkg = types.ModuleType("jambonz_trio")
pkg.__path__ = [sys.argv[1]]
sys.modules["jambonz_trio"] = pkg
import jambonz_trio._protocol
from jambonz_trio._protocol import CallProtocol, parse_command
p = CallProtocol()
p.connection_made()
p.receive_text('{"type":"verb:hook","msgid":"m","data":{}}', 0.0)
print(p.ack("m"))
print(sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN))
"""


def test_protocol_core_runs_with_trio_blocked() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _RUNTIME_CHECK, str(PACKAGE_ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert json.loads(lines[0]) == {"type": "ack", "msgid": "m", "data": []}
    assert lines[1] == "[]"
