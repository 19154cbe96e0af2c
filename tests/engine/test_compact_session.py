"""A call holds its first message compactly (issue 16): ``data`` as the frame's text plus the
few top-level values the server reads, the call info typed at once except its big
sub-objects (``sip``, ``headers``, ``defaults``, ``customer_data``), which are decoded when
first read. What the app sees is unchanged: ``call.session.data`` equals the payload sent,
``call.info`` equals the info typed from it."""

from __future__ import annotations

import json
import sys
from typing import Any

import attrs
import trio
import trio.testing

from jambonz_trio import Call, EnvVar, Route
from jambonz_trio._protocol._calldata import Payload
from jambonz_trio._protocol._json import loads_object
from jambonz_trio._protocol._messages import SessionNew, compact_message, parse_message
from jambonz_trio.messages import CallInfo
from jambonz_trio.verbs import Say
from tests.helpers import SESSION_DATA, Serve, msg

from .helpers import new_call, raw_client

SIP = {
    "headers": {"via": "SIP/2.0/UDP 10.0.0.1", "X-Account-Sid": "acct-1", "content-length": "120"},
    "raw": "INVITE sip:+15083728299@10.0.13.72:5070 SIP/2.0\r\n...",
    "body": "v=0\r\no=root 1 1 IN IP4 10.0.13.72\r\n",
    "method": "INVITE",
}
DATA: dict[str, Any] = {
    **SESSION_DATA,
    "sip": SIP,
    "defaults": {"synthesizer": {"vendor": "microsoft"}},
    "customerData": {"tier": "gold"},
    "sip_status": 100,
    "has_recording": False,
    "nested": [1, {"big": 12345678901234567890123}],
}


def _compact(data: dict[str, Any] = DATA) -> SessionNew:
    text = msg("session:new", "m1", data, call_sid="sid-1")
    first = compact_message(parse_message(loads_object(text)), text)
    assert isinstance(first, SessionNew)
    return first


def test_compact_payload_reads_as_the_data_sent() -> None:
    first = _compact()
    data = first.data
    assert isinstance(data, Payload)
    # the values the server reads come without decoding anything
    assert (data.get("call_sid"), data["account_sid"], "env_vars" in data) == ("sid-1", "acct-1", True)
    assert data.get("application_sid") is None and "application_sid" not in data
    assert data._tree is None
    # the rest is decoded on first access, exactly
    assert data["sip"] == SIP and data._tree is not None
    assert data == DATA and dict(data) == DATA and len(data) == len(DATA)
    assert list(data) == list(DATA) and data.get("nope", 7) == 7 and "nope" not in data
    assert data["nested"][1]["big"] == 12345678901234567890123  # an exact int, as json gives it
    assert repr(data) == repr(DATA)
    assert json.loads(json.dumps(first.to_wire()))["data"] == DATA


def test_compact_call_info_equals_the_typed_info_and_reads_big_parts_on_access() -> None:
    first = _compact()
    info = first.call
    assert info.from_ == "+15083084809" and info.sip_status == 100 and info.account_sid == "acct-1"
    assert isinstance(first.data, Payload) and first.data._tree is None  # nothing big decoded yet
    assert info == CallInfo.from_data(DATA)  # (reads every field: decodes)
    assert info.sip == SIP and info.customer_data == {"tier": "gold"}
    assert info.defaults == {"synthesizer": {"vendor": "microsoft"}} and info.headers is None
    assert "INVITE" not in repr(info) and "s3cret" not in repr(info)
    assert attrs.evolve(info, to="x").sip == SIP


def test_evolving_the_env_vars_leaves_the_big_parts_unread() -> None:
    first = _compact()
    typed = first.call._evolve(env_vars={"API_KEY": "typed"})
    assert isinstance(first.data, Payload) and first.data._tree is None
    assert typed.env_vars == {"API_KEY": "typed"} and typed.from_ == "+15083084809"
    assert typed.sip == SIP and first.call.sip == SIP


def test_only_payloads_nesting_a_few_levels_are_held_compactly() -> None:
    """Many brackets, shallow: compact; deeply nested: kept as parsed (its decode would run
    again on the app's stack, see the served test below)."""
    wide = _compact({**DATA, "customerData": {"items": [{"n": i} for i in range(200)]}})
    assert isinstance(wide.data, Payload) and wide.call.customer_data == {
        "items": [{"n": i} for i in range(200)]
    }
    deep: Any = {}
    for _ in range(70):
        deep = {"d": deep}
    nested = _compact({**DATA, "customerData": deep})
    assert isinstance(nested.data, dict) and nested.call.customer_data == deep


def test_messages_without_call_info_are_kept_as_parsed() -> None:
    text = msg("tts:tokens-result", "t1", {"id": 1}, call_sid="sid-1")
    parsed = parse_message(loads_object(text))
    assert compact_message(parsed, text) is parsed


async def test_a_live_call_holds_its_session_compactly(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Served calls: the handler's ``call.session.data`` and ``call.info`` read as before,
    with the route's env vars typed, and the payload's big parts stay text until read."""
    seen: dict[str, Any] = {}

    async def app(call: Call) -> None:
        data = call.session.data
        seen["decoded_at_start"] = isinstance(data, Payload) and data._tree is not None
        seen["scalars"] = (call.from_, call.to, call.direction, call.account_sid, call.info.sip_status)
        seen["env"] = dict(call.info.env_vars)
        seen["decoded_after_scalars"] = isinstance(data, Payload) and data._tree is not None
        await call.ack(call.session, [Say(text="hi")])
        seen["sip"] = call.info.sip
        seen["data"] = dict(data)
        await call.wait_closed()

    key = EnvVar("API_KEY", description="Vendor key", obscure=True, required=True)
    retries = EnvVar("RETRIES", int, description="Attempts", default=2)
    server = await serve(Route(path="/", handler=app, env=(key, retries)))
    async with raw_client(server) as client:
        await client.send("session:new", "m1", DATA, call_sid="sid-1")
        assert (await client.receive() or {}).get("msgid") == "m1"
        await client.answer_receipt()
        await trio.testing.wait_all_tasks_blocked()
        await client.close()
    assert seen["decoded_at_start"] is False and seen["decoded_after_scalars"] is False
    assert seen["scalars"] == ("+15083084809", "+15083728299", "inbound", "acct-1", 100)
    assert seen["env"] == {"API_KEY": "s3cret-value", "RETRIES": 2}
    assert seen["sip"] == SIP and seen["data"] == DATA


async def test_a_reconnect_rebinds_by_the_compact_payload_owner_fields(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """The owner check of a reconnect reads ``account_sid``/``application_sid`` of both
    compact payloads without decoding them (a mismatch still isolates the newcomer)."""
    calls: list[Call] = []

    async def app(call: Call) -> None:
        calls.append(call)
        await call.ack(call.session, [Say(text="hi")])
        await call.wait_closed()

    server = await serve(app)
    async with raw_client(server) as first:
        await new_call(first)
        await first.drop()
    async with raw_client(server) as second:
        await second.send("session:reconnect", "r1", {**SESSION_DATA, "sip": SIP}, call_sid="sid-1")
        assert (await second.receive() or {}).get("msgid") == "r1"
        await trio.testing.wait_all_tasks_blocked()
        assert len(calls) == 1 and calls[0].reconnect_count == 1
        data = calls[0].session.data
        assert isinstance(data, Payload) and data._tree is None
    async with raw_client(server) as third:
        await third.send(
            "session:reconnect", "r2", {**SESSION_DATA, "account_sid": "other"}, call_sid="sid-1"
        )
        assert (await third.receive() or {}).get("msgid") == "r2"
        await trio.testing.wait_all_tasks_blocked()
        assert len(calls) == 2 and calls[1].isolated


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _depth(value: Any) -> int:
    """How deep ``value`` nests lists (without recursion)."""
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return depth


async def _deeper(levels: int, read: Any) -> Any:
    """``read()`` from ``levels`` Python frames further down the stack (an app's own code)."""
    if levels == 0:
        return read()
    return await _deeper(levels - 1, read)


async def test_a_session_new_the_server_admitted_reads_whole_from_any_app_stack(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """A ``session:new`` whose ``customerData`` nests as deep as the server's parse takes is
    admitted; the handler then reads ``call.info.customer_data`` and ``call.session.data``
    from its own, deeper stack: they read as sent, no protocol error surfaces in the app (the
    payload's decode must not depend on where the app stands on the stack)."""
    seen: list[Any] = []

    async def app(call: Call) -> None:
        try:
            info, data = await _deeper(60, lambda: (call.info.customer_data, dict(call.session.data)))
            seen.append((_depth(info["deep"]), data["customerData"] is not None))
        except Exception as exc:
            seen.append(exc)
        await call.ack(call.session, [Say(text="hi")])
        await call.wait_closed()

    server = await serve(app)

    async def admitted(depth: int) -> bool:
        sid = f"sid-{depth}"
        data = {**SESSION_DATA, "call_sid": sid, "customerData": {"deep": "DEEP"}}
        text = msg("session:new", "m1", data, call_sid=sid).replace('"DEEP"', _nested(depth))
        seen.clear()
        async with raw_client(server) as client:
            await client.send_text(text)
            await trio.testing.wait_all_tasks_blocked()
        return bool(seen)

    low, high = 1, 8 * sys.getrecursionlimit()  # the deepest nesting the server's parse accepts
    assert await admitted(low)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if await admitted(mid) else (low, mid)
    assert not await admitted(high)
    assert await admitted(low)
    assert seen == [(low, True)]
