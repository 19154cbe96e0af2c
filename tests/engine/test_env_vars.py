"""Issue 17 item 4: ``call.info.env_vars`` through the server - typed against the route's
declarations, defaults applied, wrong values logged by name (never by value) and replaced,
for calls started by ``session:new`` and for calls first seen through ``session:reconnect``."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from jambonz_trio import Call, EnvVar, JambonzServer, Route
from jambonz_trio.testing import CallData, open_fake_call
from jambonz_trio.verbs import Say
from tests.helpers import start

from .helpers import SESSION_DATA, raw_client

GREETING = EnvVar("GREETING", description="What callers hear first", default="Hello")
RETRIES = EnvVar("RETRIES", int, description="Attempts", default=2)
RECORD = EnvVar("RECORD", bool, description="Record calls", default=False)
API_KEY = EnvVar("API_KEY", description="Vendor key", obscure=True, required=True)
ENV = (GREETING, RETRIES, RECORD, API_KEY)
SECRET = "sk-live-never-in-a-log-5521"


async def serve(nursery: trio.Nursery, *env: EnvVar[Any]) -> tuple[JambonzServer, list[Call]]:
    calls: list[Call] = []

    async def app(call: Call) -> None:
        calls.append(call)
        values = call.info.env_vars
        text = f"{values[GREETING]} x{values[RETRIES]}" if env else "plain"
        await call.ack(call.session, [Say(text=text)])
        await call.wait_closed()

    route = Route(path="/", handler=app, prefix=True, env=env)
    server = await start(nursery, route)
    return server, calls


def env_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "env var" in r.getMessage()
    ]


async def test_session_new_values_are_typed_with_defaults(nursery: trio.Nursery) -> None:
    """The values the fake sends in ``session:new`` reach the handler typed; missing ones take
    their defaults; undeclared ones are kept as sent; nothing is logged."""
    server, calls = await serve(nursery, *ENV)
    sent = {"GREETING": "Welcome", "API_KEY": SECRET, "camelCase": {"a": 1}}
    async with open_fake_call(server.connect_memory, call=CallData(env_vars=sent)) as fc:
        ack = await fc.start()
        assert ack.verbs == [Say(text="Welcome x2")]
        (call,) = calls
        assert dict(call.info.env_vars) == {**sent, "RETRIES": 2, "RECORD": False}
        assert call.info.env_vars[RECORD] is False
        assert SECRET not in repr(call.info) and SECRET not in repr(call.info.env_vars)


async def test_wrong_values_are_logged_by_name_and_replaced(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong-typed value (jambonz does not check values saved while the app was unreachable)
    logs one warning per variable naming the call, the route and the variable - never the
    value, obscure or not - and the default is used; the call goes on."""
    caplog.set_level(logging.WARNING)
    server, calls = await serve(nursery, *ENV)
    sent = {"GREETING": "Welcome", "RETRIES": "3", "RECORD": "yes", "API_KEY": 4242}
    data = CallData(call_sid="sid-typed", env_vars=sent)
    async with open_fake_call(server.connect_memory, call=data) as fc:
        ack = await fc.start()
        assert ack.verbs == [Say(text="Welcome x2")]
        assert calls[0].info.env_vars[RECORD] is False
        assert "API_KEY" not in calls[0].info.env_vars
    assert env_warnings(caplog) == [
        "call sid-typed on /: env var RETRIES should be an integer but is a string; using its default",
        "call sid-typed on /: env var RECORD should be a boolean but is a string; using its default",
        "call sid-typed on /: env var API_KEY should be a string but is a number; it has no default",
    ]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "4242" not in logged and "yes" not in logged


async def test_warnings_come_once_per_call_not_per_reconnect(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """A reconnect re-sends the same ``env_vars`` (ws-requestor.js:191-192) to the same call:
    its values, typed once, stay; nothing is logged again."""
    caplog.set_level(logging.WARNING)
    server, calls = await serve(nursery, *ENV)
    data = CallData(env_vars={"RETRIES": 1.5, "API_KEY": SECRET})
    async with open_fake_call(server.connect_memory, call=data) as fc:
        await fc.start()
        info = calls[0].info
        await fc.drop()
        await fc.reconnect()
        assert calls[0].reconnect_count == 1 and calls[0].info is info
    assert len(env_warnings(caplog)) == 1


async def test_call_first_seen_through_session_reconnect_is_typed(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """After an app restart jambonz's first message is ``session:reconnect``, carrying the
    ``session:new`` payload, ``env_vars`` included: the new call's values are typed the same."""
    caplog.set_level(logging.WARNING)
    server, calls = await serve(nursery, *ENV)
    data = {**SESSION_DATA, "call_sid": "restarted", "env_vars": {"RETRIES": 5, "API_KEY": SECRET}}
    async with raw_client(server) as client:
        await client.send("session:reconnect", "r1", data, call_sid="restarted")
        ack = await client.receive()
        assert ack == {"type": "ack", "msgid": "r1", "data": [{"verb": "say", "text": "Hello x5"}]}
    (call,) = calls
    assert call.restored
    assert dict(call.info.env_vars) == {"RETRIES": 5, "API_KEY": SECRET, "GREETING": "Hello", "RECORD": False}
    assert env_warnings(caplog) == []


async def test_route_without_declarations_keeps_values_as_sent(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """No declarations: ``env_vars`` is exactly what jambonz sent, unchecked, nothing logged."""
    caplog.set_level(logging.WARNING)
    server, calls = await serve(nursery)
    sent = {"RETRIES": "3", "API_KEY": SECRET}
    async with open_fake_call(server.connect_memory, call=CallData(env_vars=sent)) as fc:
        assert (await fc.start()).verbs == [Say(text="plain")]
        assert calls[0].info.env_vars == sent
    async with open_fake_call(server.connect_memory, call=CallData(env_vars=None)) as fc:
        await fc.start()
        assert calls[1].info.env_vars == {}
    assert env_warnings(caplog) == []
