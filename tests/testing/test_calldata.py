"""CallData payloads and jambonz's key casing."""

from __future__ import annotations

import pytest

from jambonz_trio._protocol import CallInfo
from jambonz_trio.testing import CallData, snake_case, snake_case_keys


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # the table of protocol.md §3.2 (observed outputs of npm to-snake-case 1.x)
        ("callSid", "call_sid"),
        ("sbcCallid", "sbc_callid"),
        ("fsSipAddress", "fs_sip_address"),
        ("X-Account-Sid", "x_account_sid"),
        ("p-asserted-identity", "p_asserted_identity"),
        ("HTTP_HEADER", "http_header"),
        ("abc123Def", "abc123_def"),
        ("a.b", "a_b"),
        ("_customerData", "customerdata"),
        ("is_final", "is_final"),
        ("tool_call_id", "tool_call_id"),
    ],
)
def test_snake_case(key: str, expected: str) -> None:
    assert snake_case(key) == expected


def test_snake_case_keys_excludes() -> None:
    data = {
        "callSid": "x",
        "headers": {"X-My-Header": "v"},
        "customerData": {"camelKey": 1},
        "sip": {"X-CID": "c"},
        "env_vars": {"MY_VAR": 1},
        "list": [{"isFinal": True}],
        "nested": {"args": {"keepMe": 1}},
    }
    assert snake_case_keys(data) == {
        "call_sid": "x",
        "headers": {"x_my_header": "v"},
        "customerData": {"camelKey": 1},
        "sip": {"X-CID": "c"},
        "env_vars": {"MY_VAR": 1},
        "list": [{"is_final": True}],
        "nested": {"args": {"keepMe": 1}},
    }


def test_defaults_are_realistic_and_fresh() -> None:
    a, b = CallData(), CallData()
    assert a.call_sid != b.call_sid
    assert a.account_sid != b.account_sid
    data = a.to_session_new_data()
    assert next(iter(data)) == "sip"
    assert data["from"] == "+15083084809"
    assert data["to"] == "+15083728299"
    assert data["caller_name"] == ""
    assert data["has_recording"] is False
    assert data["env_vars"] == {"APP_ENV": "test"}
    assert data["sip"]["headers"]["X-CID"] == a.sbc_callid
    assert data["sip"]["raw"].startswith("INVITE sip:+15083728299@10.0.13.72:5070 SIP/2.0\r\n")
    # the library's own parser reads it back
    info = CallInfo.from_data(data)
    assert info.from_ == "+15083084809"
    assert info.sip_status == 100
    assert info.env_vars == {"APP_ENV": "test"}


def test_overrides_and_omitted_fields() -> None:
    cd = CallData(to="+4930123", originating_sip_trunk_name=None, env_vars=None, sip=None)
    data = cd.to_session_new_data()
    assert data["to"] == "+4930123"
    assert "originating_sip_trunk_name" not in data
    assert "env_vars" not in data
    assert "sip" not in data
    outbound = CallData(direction="outbound")
    assert "sip" not in outbound.to_session_new_data()


def test_call_info_shape() -> None:
    cd = CallData(customer_data={"tagKey": 1})
    info = cd.call_info("completed", sip_status=200, duration=3, call_termination_by="caller")
    assert info["call_status"] == "completed"
    assert info["sip_status"] == 200
    assert info["duration"] == 3
    assert info["fs_sip_address"] == cd.local_sip_address
    assert info["customerData"] == {"tagKey": 1}
    for absent in ("local_sip_address", "defaults", "env_vars", "sip", "caller_name"):
        assert absent not in info
    assert cd.call_status == "trying"  # overrides are per payload
