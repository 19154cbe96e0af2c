"""Issue 19 items 1 and 2 (S-9): no account can take over, displace or evict another's call.

Every account behind one jambonz shares its Basic credentials, so the route and user alone do
not tell tenants apart: a rebind must repeat every identity field the call had, a session that
starts never replaces a listed call, and the cap on calls waiting for a reconnect never pushes
out another tenant's call.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from jambonz_trio import BasicAuth, Call, JambonzServer, Route, ServerConfig, VerbHook, serve_jambonz
from jambonz_trio.verbs import Say
from tests.helpers import answer_and_wait, basic_headers, start

from .helpers import SESSION_DATA, RawClient, new_call, reconnect

VICTIM = {**SESSION_DATA, "account_sid": "acct-victim", "application_sid": "app-victim"}


class App:
    """Acks ``session:new`` with ``hello <sid>`` and every hook with ``<hook> for <call id>``."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    async def __call__(self, call: Call) -> None:
        self.calls.append(call)
        await call.ack(call.session, [Say(text=f"hello {call.call_sid}")])
        async for event in call:
            if isinstance(event, VerbHook):
                await call.ack(event, [Say(text=f"{event.hook} for {self.calls.index(call)}")])


async def _start(nursery: trio.Nursery, app: App, **config: Any) -> JambonzServer:
    cfg = ServerConfig(**config)
    server: JambonzServer = await nursery.start(
        lambda task_status: serve_jambonz(app, config=cfg, task_status=task_status)
    )
    return server


async def _open(server: JambonzServer) -> RawClient:
    stream = await server.connect_memory()
    client = RawClient(stream)
    await client.handshake("/")
    return client


async def _new(
    server: JambonzServer, sid: str, data: dict[str, Any], env_sid: str | None = None
) -> RawClient:
    client = await _open(server)
    await client.send("session:new", "m-" + sid, {**data, "call_sid": sid}, call_sid=env_sid or sid)
    reply = await client.receive()
    assert reply is not None and reply["type"] == "ack"
    return client


async def _reconnect(server: JambonzServer, sid: str, data: dict[str, Any], msgid: str = "r1") -> RawClient:
    client = await _open(server)
    await client.send("session:reconnect", msgid, {**data, "call_sid": sid}, call_sid=sid)
    reply = await client.receive()
    assert reply is not None and reply["type"] == "ack" and reply["msgid"] == msgid
    return client


async def _hook(client: RawClient, msgid: str, sid: str) -> str:
    await client.send("verb:hook", msgid, {**VICTIM, "call_sid": sid}, call_sid=sid, hook="/h")
    reply = await client.receive()
    assert reply is not None and reply["msgid"] == msgid
    text: str = reply["data"][0]["text"]
    return text


async def _settle(server: JambonzServer, call: Call, state: str) -> None:
    with trio.fail_after(5):
        while call.state.value != state:
            await trio.testing.wait_all_tasks_blocked()
            await trio.lowlevel.checkpoint()


# -- item 1: takeover ---------------------------------------------------------------------


async def test_reconnect_without_account_cannot_take_over_a_live_call(nursery: trio.Nursery) -> None:
    """Before: accepted as the owner; the victim's socket was dropped, its hook never acked."""
    app = App()
    server = await _start(nursery, app)
    victim = await _new(server, "sid-v", VICTIM)
    call = server.calls["sid-v"]
    no_account = {k: v for k, v in VICTIM.items() if k != "account_sid"}
    attacker = await _reconnect(server, "sid-v", no_account)
    assert server.calls["sid-v"] is call and call.reconnect_count == 0
    assert await _hook(victim, "v1", "sid-v") == "/h for 0"  # the victim's socket still works
    assert await _hook(attacker, "a1", "sid-v") == "/h for 1"  # answered by its own call
    assert len(app.calls) == 2 and app.calls[1] is not call and app.calls[1].restored


async def test_reconnect_without_account_cannot_take_a_parked_call(nursery: trio.Nursery) -> None:
    """Before: it rebound to the parked call, and the victim's handler answered its hooks."""
    app = App()
    server = await _start(nursery, app)
    victim = await _new(server, "sid-v", VICTIM)
    call = server.calls["sid-v"]
    await victim.drop()
    await _settle(server, call, "disconnected")
    for missing in ("account_sid", "application_sid"):
        data = {k: v for k, v in VICTIM.items() if k != missing}
        attacker = await _reconnect(server, "sid-v", data, msgid=f"r-{missing}")
        assert await _hook(attacker, "a1", "sid-v") != "/h for 0"
        assert call.state.value == "disconnected" and call.reconnect_count == 0
        await attacker.drop()
    other_app = {**VICTIM, "application_sid": "app-attacker"}
    attacker = await _reconnect(server, "sid-v", other_app, msgid="r-app")
    assert call.state.value == "disconnected"
    await attacker.drop()
    # the real reconnect still finds the call
    victim = await _reconnect(server, "sid-v", VICTIM, msgid="r-real")
    assert call.state.value == "connected" and call.reconnect_count == 1
    assert await _hook(victim, "v2", "sid-v") == "/h for 0"


async def test_a_field_the_call_never_had_is_not_required_but_may_not_be_added(nursery: trio.Nursery) -> None:
    """A REST call created with a ``call_hook`` and no application has no ``application_sid``
    (FS v0.9.8 ``lib/http-routes/api/create-call.js:314``, ``lib/session/call-info.js``), and
    its reconnect repeats that payload: it must rebind. Absent on both sides is equal;
    present on one side only is a mismatch."""
    app = App()
    server = await _start(nursery, app)
    rest = {k: v for k, v in VICTIM.items() if k != "application_sid"}
    client = await _new(server, "sid-r", rest)
    call = server.calls["sid-r"]
    await client.drop()
    await _settle(server, call, "disconnected")
    added = await _reconnect(server, "sid-r", {**rest, "application_sid": "app-x"}, msgid="r-added")
    assert call.state.value == "disconnected" and call.reconnect_count == 0
    await added.drop()
    await _reconnect(server, "sid-r", rest, msgid="r-same")
    assert call.state.value == "connected" and call.reconnect_count == 1


async def test_session_new_naming_a_live_sid_in_data_does_not_displace_it(nursery: trio.Nursery) -> None:
    """Before: the registry listed calls by ``data.call_sid``, so this replaced the victim,
    whose real reconnect then started a fresh call."""
    app = App()
    server = await _start(nursery, app)
    victim = await _new(server, "sid-v", VICTIM)
    call = server.calls["sid-v"]
    foreign = {**VICTIM, "account_sid": "acct-attacker"}
    attacker = await _new(server, "sid-v", foreign, env_sid="sid-attacker")
    assert server.calls["sid-v"] is call
    assert server.calls["sid-attacker"] is app.calls[1] and app.calls[1].call_sid == "sid-attacker"
    await victim.drop()
    await _settle(server, call, "disconnected")
    victim = await _reconnect(server, "sid-v", VICTIM)
    assert call.reconnect_count == 1 and len(app.calls) == 2
    await attacker.drop()


async def test_session_new_with_a_listed_sid_is_isolated_even_from_the_same_account(
    nursery: trio.Nursery,
) -> None:
    """A new session never evicts a live or parked call, whoever sends it."""
    app = App()
    server = await _start(nursery, app)
    victim = await _new(server, "sid-v", VICTIM)
    call = server.calls["sid-v"]
    twin = await _new(server, "sid-v", VICTIM)  # served, as an isolated call
    assert server.calls["sid-v"] is call and len(app.calls) == 2 and app.calls[1] in server.calls.all_calls()
    await victim.drop()
    await _settle(server, call, "disconnected")
    await twin.send("session:new", "m-again", VICTIM, call_sid="sid-v")  # on its own socket: junk
    intruder = await _new(server, "sid-v", VICTIM)
    assert server.calls["sid-v"] is call and call.state.value == "disconnected"
    await _reconnect(server, "sid-v", VICTIM)
    assert call.reconnect_count == 1
    await intruder.drop()


async def test_an_isolated_call_is_flagged_and_its_log_lines_say_so(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """An isolated call carries the victim's sid (docs/security.md): ``Call.isolated`` tells it
    apart, and its log lines are marked ``(isolated)``, the victim's are not."""
    app = App()
    server = await _start(nursery, app)
    victim = await _new(server, "sid-v", VICTIM)
    call = server.calls["sid-v"]
    attacker = await _reconnect(server, "sid-v", {**VICTIM, "account_sid": "acct-attacker"})
    isolated = app.calls[1]
    assert isolated.call_sid == call.call_sid == "sid-v"
    assert (isolated.isolated, call.isolated) == (True, False)
    assert server.calls["sid-v"] is call and isolated in server.calls.all_calls()
    with caplog.at_level(logging.INFO, logger="jambonz_trio.call"):
        await attacker.drop()
        await _settle(server, isolated, "disconnected")
        await victim.drop()
        await _settle(server, call, "disconnected")
    lost = [r.getMessage() for r in caplog.records if "socket lost" in r.getMessage()]
    assert len(lost) == 2
    assert lost[0].startswith("call sid-v (isolated): socket lost")
    assert lost[1].startswith("call sid-v: socket lost")


# -- item 2: parked-call eviction ---------------------------------------------------------


async def _park(server: JambonzServer, sid: str, data: dict[str, Any]) -> Call:
    client = await _new(server, sid, data)
    call = server.calls[sid]
    await client.drop()
    with trio.fail_after(5):
        while call.state.value == "connected":
            await trio.testing.wait_all_tasks_blocked()
    return call


def _waiting(server: JambonzServer) -> int:
    return sum(c.state.value == "disconnected" for c in server.calls.all_calls())


async def test_parking_cap_refuses_newcomers_instead_of_evicting(nursery: trio.Nursery) -> None:
    """Before: the oldest parked call was dropped, whoever it belonged to."""
    app = App()
    server = await _start(nursery, app, max_parked_calls=3)
    victim = await _park(server, "sid-v", VICTIM)
    attacker = {**VICTIM, "account_sid": "acct-attacker"}
    flood = [await _park(server, f"sid-a{i}", attacker) for i in range(5)]
    assert victim.state.value == "disconnected"
    assert [c.state.value for c in flood] == ["disconnected"] * 2 + ["closed"] * 3
    assert _waiting(server) == 3
    client = await _reconnect(server, "sid-v", VICTIM)
    assert victim.reconnect_count == 1 and _waiting(server) == 2
    assert await _hook(client, "v1", "sid-v") == "/h for 0"


async def test_per_account_cap_gives_up_that_accounts_oldest_call(nursery: trio.Nursery) -> None:
    app = App()
    server = await _start(nursery, app, max_parked_calls=100, max_parked_calls_per_account=2)
    victim = await _park(server, "sid-v", VICTIM)
    attacker = {**VICTIM, "account_sid": "acct-attacker"}
    flood = [await _park(server, f"sid-a{i}", attacker) for i in range(5)]
    await trio.testing.wait_all_tasks_blocked()
    assert victim.state.value == "disconnected"
    assert [c.state.value for c in flood] == ["closed"] * 3 + ["disconnected"] * 2
    assert server.calls.parked_count == _waiting(server) == 3


async def test_an_isolated_call_parks_under_its_own_name(nursery: trio.Nursery) -> None:
    """Before: parking was keyed by sid, so an isolated call with the victim's sid took (and
    on its reconnect or end, released) the victim's parking slot."""
    app = App()
    server = await _start(nursery, app, max_parked_calls=10)
    victim = await _park(server, "sid-v", VICTIM)
    twin = await _new(server, "sid-v", VICTIM)
    isolated = app.calls[1]
    await twin.drop()
    await _settle(server, isolated, "disconnected")
    assert _waiting(server) == 2
    await isolated.aclose()
    assert _waiting(server) == 1 and victim.state.value == "disconnected"
    await _reconnect(server, "sid-v", VICTIM)
    assert victim.reconnect_count == 1


async def test_s9_a_session_new_of_another_tenant_does_not_take_a_live_sid(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Review r10 (S-9): a ``session:new`` cannot take over a live call of another owner."""
    seen: list[Call] = []

    async def app(call: Call) -> None:
        seen.append(call)
        await answer_and_wait(call)

    routes = [
        Route(path="/a", handler=app, auth=BasicAuth(username="a", password="pa")),
        Route(path="/b", handler=app, auth=BasicAuth(username="b", password="pb")),
    ]
    server = await start(nursery, routes)
    with trio.fail_after(30):
        a = RawClient(await server.connect_memory())
        await a.handshake("/a", extra_headers=basic_headers("a", "pa"))
        await new_call(a)
        victim = server.calls["sid-1"]
        b = RawClient(await server.connect_memory())
        await b.handshake("/b", extra_headers=basic_headers("b", "pb"))
        assert await new_call(b, msgid="x1") == {
            "type": "ack",
            "msgid": "x1",
            "data": [{"verb": "say", "text": "hi"}],
        }
        assert server.calls["sid-1"] is victim  # old: tenant B's call replaced it
        assert len(seen) == 2 and seen[1] is not victim and seen[1].isolated
        await a.drop()  # A's socket drops; jambonz reconnects A
        await trio.sleep(0.5)
        a2 = RawClient(await server.connect_memory())
        await a2.handshake("/a", extra_headers=basic_headers("a", "pa"))
        # old: A's reconnect found B's call, failed the owner check and became a third,
        # isolated call (answered by a new handler), orphaning A's own call
        assert await reconnect(a2) == {"type": "ack", "msgid": "r1", "data": []}
        assert victim.reconnect_count == 1 and victim.state.value == "connected"
        assert len(seen) == 2
        await b.drop()
        await a2.drop()
