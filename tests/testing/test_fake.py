"""The fake jambonz: the happy path, the handshake, session:new rules, transcripts, TCP."""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from jambonz_trio._protocol import HookSpec, LlmToolOutputCommand, RedirectCommand, RedirectToHookCommand
from jambonz_trio._protocol._verbs import Gather, Hangup, Say
from jambonz_trio.testing import (
    AckTimeout,
    CallData,
    CallOver,
    CallRejected,
    ConnectFailed,
    ExpectationFailed,
    FakeJambonzError,
    HandshakeRejected,
    HandshakeTimeout,
    InvalidInitialVerbs,
    InvalidVerbs,
    ProtocolViolation,
    SubprotocolMissing,
    open_fake_call,
    tcp_connector,
)

from ._apps import GATHER, HANGUP, SAY, AppSocket, TinyApp, app_running, raw_101, started_call, tiny_app

_MSGID = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{20,23}$")


async def test_happy_path(autojump_clock: trio.abc.Clock) -> None:
    seen: dict[str, Any] = {}

    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        new = await s.recv_type("session:new")
        seen["new"] = new
        await s.ack(new, [SAY, GATHER])
        seen["trying"] = await s.recv_type("call:status")
        seen["answered"] = await s.recv_type("call:status")
        hook = await s.recv_type("verb:hook")
        seen["hook"] = hook
        await s.ack(hook, [{"verb": "say", "text": "Goodbye"}, HANGUP])
        seen["completed"] = await s.recv_type("call:status")
        seen["close"] = await s.closed_code()

    async with app_running(app_side) as app:
        async with open_fake_call(app.connector) as fc:
            ack = await fc.start()
            assert ack.verb_names == ["say", "gather"]
            assert ack.first(Gather).action_hook == "/gather"
            assert ack.request_type == "session:new"
            await fc.status("in-progress")
            await trio.sleep(12)
            ack = await fc.gather_speech("/gather", "sales please", confidence=0.87)
            assert isinstance(ack.verbs[0], Say)
            assert isinstance(ack.verbs[1], Hangup)
            await fc.hangup()
            assert fc.is_over
            assert [a.request_type for a in fc.acks] == ["session:new", "verb:hook"]
        await trio.sleep(1)

    new = seen["new"]
    assert _MSGID.match(new["msgid"])
    assert new["call_sid"] == fc.call.call_sid == new["data"]["call_sid"]
    assert "hook" not in new
    assert seen["trying"]["data"]["call_status"] == "trying"
    assert seen["answered"]["data"]["call_status"] == "in-progress"
    assert seen["answered"]["data"]["sip_status"] == 200
    hook = seen["hook"]
    assert hook["hook"] == "/gather"
    assert hook["call_sid"] == fc.call.call_sid
    assert hook["data"]["reason"] == "speechDetected"
    assert hook["data"]["speech"]["alternatives"] == [{"confidence": 0.87, "transcript": "sales please"}]
    assert hook["data"]["speech"]["is_final"] is True
    assert hook["data"]["call_status"] == "in-progress"
    done = seen["completed"]["data"]
    assert done["call_status"] == "completed"
    assert done["duration"] == 12
    assert done["call_termination_by"] == "caller"
    assert seen["close"] == 1000


async def test_session_new_payload(autojump_clock: trio.abc.Clock) -> None:
    got: list[dict[str, Any]] = []
    call = CallData(
        from_="+15551234567",
        customer_data={"someKey": {"nestedCamel": 1}},
        env_vars={"API_KEY": "x", "camelVar": "y"},
    )

    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        new = await s.recv_type("session:new")
        got.append(new)
        await s.ack(new, [SAY])

    async with app_running(app_side) as app, open_fake_call(app.connector, call=call) as fc:
        await fc.start()
    data = got[0]["data"]
    assert data["from"] == "+15551234567"
    assert data["to"] == "+15083728299"
    assert data["direction"] == "inbound"
    assert (data["sip_status"], data["sip_reason"], data["call_status"]) == (
        100,
        "Trying",
        "trying",
    )
    for key in ("account_sid", "application_sid", "service_provider_sid", "call_id"):
        assert re.match(r"^[0-9a-f-]{36}$", data[key]), key
    assert data["local_sip_address"] == "10.0.13.72:5070"
    assert data["defaults"]["synthesizer"]["vendor"] == "microsoft"
    # keys of customerData, env_vars and sip are never snake_cased
    assert data["customerData"] == {"someKey": {"nestedCamel": 1}}
    assert data["env_vars"] == {"API_KEY": "x", "camelVar": "y"}
    sip = data["sip"]
    assert sip["method"] == "INVITE"
    assert sip["headers"]["X-Account-Sid"] == data["account_sid"]
    assert "+15551234567" in sip["headers"]["from"]
    assert "From: <sip:+15551234567@" in sip["raw"]
    assert sip["payload"][0]["type"] == "application/sdp"
    assert fc.sent[0].type == "session:new"


async def test_handshake_like_jambonz(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        await s.ack(await s.recv(), [SAY])

    async with (
        app_running(app_side) as app,
        open_fake_call(app.connector, path="/voice?x=1", username="u", password="p") as fc,
    ):
        await fc.start()
    req = app.requests[0]
    assert req.path == "/voice?x=1"
    assert req.subprotocols == ("ws.jambonz.org",)
    assert req.headers[b"user-agent"] == b"jambonz"
    assert req.headers[b"authorization"] == b"Basic " + base64.b64encode(b"u:p")


async def test_no_auth_header_without_password(autojump_clock: trio.abc.Clock) -> None:
    async with tiny_app() as app, open_fake_call(app.connector, username="u"):
        pass
    assert b"authorization" not in app.requests[0].headers


async def test_handshake_rejected(autojump_clock: trio.abc.Clock) -> None:
    async with tiny_app(reject=401) as app:
        with pytest.raises(HandshakeRejected) as info:
            async with open_fake_call(app.connector):
                pytest.fail("must not get here")  # pragma: no cover
    assert info.value.status == 401
    assert "HTTP 401" in str(info.value)


async def test_subprotocol_not_selected(autojump_clock: trio.abc.Clock) -> None:
    async with tiny_app(subprotocol=None) as app:
        with pytest.raises(SubprotocolMissing) as info:
            async with open_fake_call(app.connector):
                pytest.fail("must not get here")  # pragma: no cover
    assert info.value.got is None


@pytest.mark.parametrize("proto", [b"other.proto", b"ws.jambonz.org, x"])
async def test_subprotocol_wrong(autojump_clock: trio.abc.Clock, proto: bytes) -> None:
    async with trio.open_nursery() as nursery:

        async def connector() -> trio.abc.Stream:
            client, server = trio.testing.memory_stream_pair()
            nursery.start_soon(raw_101, server, proto)
            return client

        with pytest.raises(SubprotocolMissing) as info:
            async with open_fake_call(connector):
                pytest.fail("must not get here")  # pragma: no cover
        nursery.cancel_scope.cancel()
    assert info.value.got == proto.decode()


async def test_handshake_timeout(autojump_clock: trio.abc.Clock) -> None:
    streams: list[trio.abc.Stream] = []

    async def silent() -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        streams.append(server)
        return client

    start = trio.current_time()
    with pytest.raises(HandshakeTimeout):
        async with open_fake_call(silent):
            pytest.fail("must not get here")  # pragma: no cover
    assert trio.current_time() - start == pytest.approx(1.5)


async def test_app_hangs_up_during_handshake(autojump_clock: trio.abc.Clock) -> None:
    async def hang_up() -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        await server.aclose()
        return client

    start = trio.current_time()
    with pytest.raises(ConnectFailed, match="closed the connection during the opening handshake"):
        async with open_fake_call(hang_up):
            pytest.fail("must not get here")  # pragma: no cover
    assert trio.current_time() == start  # no need to wait for the handshake timeout


async def test_connector_failure() -> None:
    async def refused() -> trio.abc.Stream:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(ConnectFailed, match="nobody home"):
        async with open_fake_call(refused):
            pytest.fail("must not get here")  # pragma: no cover


async def test_session_new_ack_timeout(autojump_clock: trio.abc.Clock) -> None:
    codes: list[int] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        await s.recv_type("session:new")
        codes.append(await s.closed_code())

    async with app_running(app_side) as app, open_fake_call(app.connector) as fc:
        start = trio.current_time()
        with pytest.raises(CallRejected) as info:
            await fc.start()
        assert trio.current_time() - start == pytest.approx(5.0)
        assert info.value.reason.startswith("480")
        assert "timeout" in str(info.value) or "no ack" in str(info.value)
        assert fc.is_over
        with pytest.raises(CallOver):
            await fc.status("in-progress")
        await trio.sleep(1)
    assert codes == [1001]


@pytest.mark.parametrize(
    ("ack_data", "reason"),
    [
        (None, "non-empty verb array"),
        ([], "non-empty verb array"),
        ({"verb": "say"}, "non-empty verb array"),
        ([{"verb": "say", "txt": "typo"}], "invalid verbs"),
        ([{"verb": "nosuchverb"}], "invalid verbs"),
    ],
)
async def test_session_new_bad_verbs_reject_the_call(
    autojump_clock: trio.abc.Clock, ack_data: Any, reason: str
) -> None:
    codes: list[int] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        new = await s.recv_type("session:new")
        await s.ack(new, ack_data)
        codes.append(await s.closed_code())

    async with app_running(app_side) as app, open_fake_call(app.connector) as fc:
        with pytest.raises(InvalidInitialVerbs) as info:
            await fc.start()
        assert isinstance(info.value, CallRejected)
        assert isinstance(info.value, InvalidVerbs)
        assert reason in str(info.value)
        assert "480" in str(info.value)
        await trio.sleep(1)
    assert codes == [1001]


async def test_hook_ack_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.recv_type("verb:hook")  # never acked

    async with started_call(app_side) as fc:
        start = trio.current_time()
        with pytest.raises(AckTimeout) as info:
            await fc.gather_timeout("/gather")
        assert trio.current_time() - start == pytest.approx(5.0)
        assert info.value.msg_type == "verb:hook"
        assert not fc.is_over  # jambonz carries on (verb-specific)
        await fc.status("in-progress")  # the reported violation is not raised again


async def test_hook_ack_invalid_verbs(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        hook = await s.recv_type("verb:hook")
        await s.ack(hook, [{"verb": "say", "text": 42}])

    async with started_call(app_side) as fc:
        with pytest.raises(InvalidVerbs, match="invalid verbs in the ack to verb:hook"):
            await fc.gather_digits("/gather", "123")


async def test_empty_hook_ack_means_carry_on(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        hook = await s.recv_type("verb:hook")
        assert hook["data"] == {**hook["data"], "reason": "dtmfDetected", "digits": "42"}
        await s.ack(hook)
        hook = await s.recv_type("verb:hook")
        await s.ack(hook, [])

    async with started_call(app_side) as fc:
        assert (await fc.gather_digits("/gather", "42")).verbs == []
        assert (await fc.hook("/status", {"event": "x"})).verbs == []


async def test_hook_helpers_take_the_verb_or_any_hook_type(autojump_clock: trio.abc.Clock) -> None:
    """Issue 18 item 11: ``gather.action_hook`` is ``str | HookSpec | None``; before, the
    helpers took only ``str``, so a test needed an ``assert`` (and a ``HookSpec`` went out as
    garbage). The verb itself can be passed: its ``id`` becomes the ``verb_id``."""
    seen: list[dict[str, Any]] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        gather = {**GATHER, "id": "g1", "actionHook": {"url": "/gather", "method": "POST"}}
        await s.ack(await s.recv_type("session:new"), [gather])
        await s.recv_type("call:status")
        for _ in range(3):
            hook = await s.recv_type("verb:hook")
            seen.append(hook)
            await s.ack(hook)

    async with app_running(app_side) as app, open_fake_call(app.connector) as fc:
        gather = (await fc.start()).first(Gather)
        assert isinstance(gather.action_hook, HookSpec)
        await fc.gather_speech(gather, "yes")  # the verb: hook and verb_id from it
        await fc.gather_digits(gather.action_hook, "42")  # str | HookSpec | None, no assert
        await fc.gather_timeout(gather.action_hook, verb_id="other")
        with pytest.raises(ExpectationFailed, match="no actionHook"):
            await fc.hook(Say(text="hi"))
        with pytest.raises(ExpectationFailed, match="no hook given"):
            await fc.gather_timeout(Say(text="hi").id)  # None
    assert [h["hook"] for h in seen] == ["/gather"] * 3
    assert [h["data"].get("verb_id") for h in seen] == ["g1", None, "other"]
    assert seen[0]["data"]["speech"]["alternatives"][0]["transcript"] == "yes"


async def test_concurrent_hooks_acked_out_of_order(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        first = await s.recv_type("verb:hook")
        second = await s.recv_type("verb:hook")
        await s.ack(second, [HANGUP])
        await trio.sleep(1)
        await s.ack(first)

    async with started_call(app_side) as fc:
        results: dict[str, list[str]] = {}

        async def send(hook: str) -> None:
            results[hook] = (await fc.hook(hook, {"speech": {"is_final": False}})).verb_names

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, "/partial")
            await trio.lowlevel.checkpoint()
            nursery.start_soon(send, "/gather")
    assert results == {"/partial": [], "/gather": ["hangup"]}


async def test_expect_command_typed(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        await s.ack(await s.recv_type("session:new"), [SAY])
        await s.recv_type("call:status")
        await s.command("redirect", [{"verb": "say", "text": "Interrupt!"}], queueCommand=True)
        call = await s.recv_type("llm:tool-call")
        assert call["hook"] == "/tools"
        assert call["data"] == {"tool_call_id": "t1", "name": "lookup", "args": {"zipCode": "1"}}
        await s.command(
            "llm:tool-output",
            {"type": "conversation.item.create"},
            tool_call_id=call["data"]["tool_call_id"],
        )

    async with started_call(app_side) as fc:
        redirect = await fc.expect_command(RedirectCommand)
        assert redirect.queue is True
        assert redirect.verbs == (Say(text="Interrupt!"),)
        await fc.llm_tool_call("/tools", "t1", "lookup", {"zipCode": "1"})
        out = await fc.expect_command("llm:tool-output")
        assert isinstance(out, LlmToolOutputCommand)
        assert out.tool_call_id == "t1"
        assert [c.name for c in fc.commands] == ["redirect", "llm:tool-output"]


async def test_expect_command_failures(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        await s.ack(await s.recv_type("session:new"), [SAY])
        await trio.sleep(10)
        await s.command("call:status", {"call_status": "completed"})

    async with started_call(app_side) as fc:
        start = trio.current_time()
        with pytest.raises(ExpectationFailed, match="within 2 s"):
            await fc.expect_command(within=2)
        assert trio.current_time() - start == pytest.approx(2)
        with pytest.raises(ExpectationFailed, match="expected a 'redirect' command, got"):
            await fc.expect_command("redirect")
        await fc.expect_no_command(within=3)


async def test_expect_no_command_fails(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        await s.ack(await s.recv_type("session:new"), [SAY])
        await s.command("redirect", [HANGUP])

    async with started_call(app_side) as fc:
        with pytest.raises(ExpectationFailed, match="expected no command"):
            await fc.expect_no_command(within=1)


async def test_expect_close_code(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        await s.ack(await s.recv_type("session:new"), [SAY])
        await s.close(1000)

    async with started_call(app_side) as fc:
        with pytest.raises(ExpectationFailed, match="expected the app to close with 4000"):
            await fc.expect_close(4000)
        with pytest.raises(ExpectationFailed, match="within 1 s"):
            await fc.expect_close(within=1)


async def test_session_adulting_first(autojump_clock: trio.abc.Clock) -> None:
    got: list[dict[str, Any]] = []
    parent = CallData()
    child = CallData(direction="outbound", parent_call_sid=parent.call_sid)

    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        msg = await s.recv_type("session:adulting")
        got.append(msg)
        await s.ack(msg)
        await s.command("redirect", [HANGUP])  # commands are fine: the session exists

    async with app_running(app_side) as app, open_fake_call(app.connector, call=child) as fc:
        ack = await fc.start("session:adulting", parent=parent)
        assert ack.verbs == []
        await fc.expect_command("redirect")
    msg = got[0]
    assert "call_sid" not in msg
    assert msg["data"]["parent_call_info"]["call_sid"] == parent.call_sid
    assert msg["data"]["parent_call_sid"] == parent.call_sid
    assert "sip" not in msg["data"]


async def test_session_redirect_first_needs_hook(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        msg = await s.recv_type("session:redirect")
        assert msg["hook"] == "/moved"
        await s.ack(msg, [SAY])

    async with app_running(app_side) as app, open_fake_call(app.connector) as fc:
        with pytest.raises(ValueError, match="needs a hook"):
            await fc.start("session:redirect")
        assert (await fc.start("session:redirect", hook="/moved")).verb_names == ["say"]
        with pytest.raises(FakeJambonzError, match="already called"):
            await fc.start()


async def test_transcript_in_failure_message(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.recv_type("verb:hook")

    async with started_call(app_side) as fc:
        with pytest.raises(AckTimeout) as info:
            await fc.gather_speech("/gather", "hello")
    text = str(info.value)
    assert "call transcript (jambonz <-> app)" in text
    lines = text.split("call transcript (jambonz <-> app):\n", 1)[1].splitlines()
    assert any("jambonz->app" in ln and '"type":"session:new"' in ln for ln in lines)
    assert any("app->jambonz" in ln and '"type": "ack"' in ln for ln in lines)
    assert any('"type":"verb:hook"' in ln for ln in lines)
    assert all(len(ln) < 220 for ln in lines)  # one line per frame, truncated
    assert any("(3" in ln and "chars)" in ln for ln in lines)  # the long session:new


async def test_exit_closes_with_1000(autojump_clock: trio.abc.Clock) -> None:
    codes: list[int] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        await s.ack(await s.recv_type("session:new"), [SAY])
        codes.append(await s.closed_code())

    async with app_running(app_side) as app:
        async with open_fake_call(app.connector) as fc:
            await fc.start()
        await trio.sleep(1)
    assert codes == [1000]


async def test_body_exception_is_not_wrapped(autojump_clock: trio.abc.Clock) -> None:
    async with tiny_app() as app:
        with pytest.raises(KeyError):
            async with open_fake_call(app.connector):
                raise KeyError("mine")


async def test_real_tcp_connector() -> None:
    with trio.fail_after(10):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        paths: list[str] = []

        async def serve(nursery: trio.Nursery) -> None:
            stream = await listeners[0].accept()
            request = await trio_websocket.wrap_server_stream(nursery, stream)
            paths.append(request.path)
            ws = await request.accept(subprotocol="ws.jambonz.org")
            s = AppSocket(ws, None)  # type: ignore[arg-type]
            new = await s.recv_type("session:new")
            await s.ack(new, [SAY, GATHER])
            await s.recv_type("call:status")
            hook = await s.recv_type("verb:hook")
            await s.ack(hook, [HANGUP])
            await s.closed_code()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, nursery)
            connector = tcp_connector(f"ws://127.0.0.1:{port}/app?a=b#rc=3&rp=ct")
            async with open_fake_call(connector) as fc:
                await fc.start()
                assert (await fc.gather_digits("/gather", "1")).verb_names == ["hangup"]
                await fc.hangup()
        await listeners[0].aclose()
    assert paths == ["/app?a=b"]


def test_tcp_connector_urls() -> None:
    c = tcp_connector("ws://example.com/voice?x=1#rc=2")
    assert (c.host, c.port, c.path, c.host_header) == (
        "example.com",
        80,
        "/voice?x=1",
        "example.com:80",
    )
    assert tcp_connector("ws://10.0.0.1:3000").path == "/"
    secure = tcp_connector("wss://example.com/voice")
    assert (secure.port, secure.path, secure.ssl_context is not None) == (443, "/voice", True)
    with pytest.raises(ValueError, match="ws://"):
        tcp_connector("http://example.com/")


async def test_notifications_and_other_requests(autojump_clock: trio.abc.Clock) -> None:
    got: list[dict[str, Any]] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        await s.ack(await s.recv_type("session:new"), [SAY])
        await s.recv_type("call:status")
        for _ in range(4):
            got.append(await s.recv())
        confirm = await s.recv_type("dial:confirm")
        got.append(confirm)
        await s.ack(confirm, [{"verb": "say", "text": "Press 1 to accept"}])
        redirect = await s.recv_type("session:redirect")
        got.append(redirect)
        await s.ack(redirect, [HANGUP])

    async with started_call(app_side) as fc:
        await fc.verb_status("starting", id="g1", name="gather")
        await fc.llm_event("/events", {"type": "response.done", "responseId": "r1"})
        await fc.jambonz_error("TTS error", "vendor down", verb="say", failover="not available")
        await fc.status("ringing", headers={"X-My-Header": "v"})
        ack = await fc.dial_confirm("/confirm")
        assert ack.verb_names == ["say"]
        ack = await fc.session_redirect("/next")
        assert ack.verb_names == ["hangup"]
    status, llm, err, ringing, confirm, redirect = got
    assert status["type"] == "verb:status"
    assert status["data"] == {"event": "starting", "id": "g1", "name": "gather"}
    assert "hook" not in status
    assert llm["hook"] == "/events"
    assert llm["data"] == {"type": "response.done", "response_id": "r1"}  # snake_cased
    assert err["data"] == {
        "msg": "TTS error",
        "details": "vendor down",
        "verb": "say",
        "failover": "not available",
    }
    assert ringing["data"]["call_status"] == "ringing"
    assert ringing["data"]["sip_status"] == 180
    assert ringing["data"]["headers"] == {"x_my_header": "v"}  # mangled like jambonz
    assert confirm["hook"] == "/confirm"
    assert confirm["data"]["parent_call_sid"] == fc.call.call_sid
    assert confirm["data"]["direction"] == "outbound"
    assert redirect["hook"] == "/next"
    assert redirect["data"]["call_sid"] == fc.call.call_sid


async def test_send_raw_unknown_type(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        await s.ack(await s.recv_type("session:new"), [SAY])
        await s.recv_type("call:status")
        first = await s.recv_type("foo:bar")
        await s.ack(first, [])
        second = await s.recv_type("foo:bar")
        await s.ack(second)

    async with started_call(app_side) as fc:
        frame = {"type": "foo:bar", "msgid": "m1", "data": {"x": 1}}
        ack = await fc.send_raw(frame, await_ack=True)
        assert ack.request_type == "foo:bar"
        assert ack.msgid == "m1"
        await fc.send_raw('{"type":"foo:bar","msgid":"m2"}')
        with pytest.raises(ProtocolViolation, match="never sent that msgid"):
            await fc.wait_idle(1)
        with pytest.raises(ValueError, match="string msgid"):
            await fc.send_raw("[1]", await_ack=True)


async def test_send_raw_on_a_socket_closed_under_it_raises_the_fakes_error(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket closed under ``send_raw`` (the app's close read by trio-websocket, not yet
    booked by the fake's reader; stood in for by a write that raises): ``send_raw`` let
    trio-websocket's ``ConnectionClosed`` out, where its docstring promises
    ``FakeJambonzError`` (as with no open socket)."""

    async def app_side(app: TinyApp) -> None:
        s = await app.accept()
        await s.ack(await s.recv_type("session:new"), [SAY])
        await s.recv_type("call:status")
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await s.recv()

    async with started_call(app_side, strict=False) as fc:
        link = fc._link
        assert link is not None and link.ws is not None

        async def closed(message: str | bytes) -> None:
            raise trio_websocket.ConnectionClosed(None)

        monkeypatch.setattr(link.ws, "send_message", closed)
        for await_ack in (False, True):
            with pytest.raises(FakeJambonzError, match="closed"):
                await fc.send_raw({"type": "foo:bar", "msgid": f"m-{await_ack}"}, await_ack=await_ack)
        monkeypatch.undo()


@pytest.mark.parametrize("data", [{}, False, 0, "", {"verb": "say", "text": "not in a list"}])
async def test_a_hook_ack_whose_data_is_not_an_array_means_carry_on(
    autojump_clock: trio.abc.Clock, data: Any
) -> None:
    """jambonz uses a hook ack's ``data`` only when it is a (non-empty) array:
    ``if (expectResponse && json && Array.isArray(json))`` (FS v0.9.8 ``lib/tasks/task.js:254``;
    ``performHook`` ``:281``); anything else is "carry on", with no error and no
    ``jambonz:error``. The fake fails the hook with ``InvalidVerbs`` ("malformed jambonz
    payload: must be array") even in non-strict mode: it refuses what jambonz accepts."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        hook = await s.recv_type("verb:hook")
        await s.send({"type": "ack", "msgid": hook["msgid"], "data": data})

    async with started_call(app_side, strict=False) as fc:
        ack = await fc.gather_digits("/gather", "42")
        assert ack.verbs == []
        await fc.status("in-progress")  # the call carries on
        # recorded (raised in strict mode: the app meant something jambonz ignores)
        (violation,) = fc.violations
        assert violation.kind == "ignored-ack-data" and "task.js:254" in violation.message


async def test_a_hook_ack_whose_data_is_not_an_array_is_a_violation_in_strict_mode(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Strict mode reports the ignored data as a ``ProtocolViolation``, not ``InvalidVerbs``:
    jambonz does not reject it; ``null`` data counts as absent (jambonz reads it as falsy)."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        datas: list[dict[str, Any] | None] = [None, {}]
        for data in datas:
            hook = await s.recv_type("verb:hook")
            await s.send({"type": "ack", "msgid": hook["msgid"], "data": data})

    async with started_call(app_side) as fc:
        assert (await fc.hook("/null")).verbs == []
        with pytest.raises(ProtocolViolation, match="ignored-ack-data") as info:
            await fc.hook("/object")
        assert not isinstance(info.value, InvalidVerbs)
        assert [v.kind for v in fc.violations] == ["ignored-ack-data"]


CONFERENCE: dict[str, Any] = {"verb": "conference", "name": "room", "waitHook": "/conf-wait"}
ENQUEUE: dict[str, Any] = {"verb": "enqueue", "name": "support", "waitHook": "/queue-wait"}
DIAL: dict[str, Any] = {
    "verb": "dial",
    "target": [{"type": "phone", "number": "+15551230000"}],
    "onHoldHook": "/held",
}
PLAY: dict[str, Any] = {"verb": "play", "url": "https://example.com/hold.mp3"}


async def _ack_raw(s: AppSocket, msg: dict[str, Any], data: Any) -> None:
    """Ack ``msg`` with ``data`` as it is, JSON ``null`` included (``"missing"``: no key)."""
    out: dict[str, Any] = {"type": "ack", "msgid": msg["msgid"]}
    if data != "missing":
        out["data"] = data
    await s.send(out)


@pytest.mark.parametrize("data", ["missing", None, {}, False, PLAY, "[]"])
async def test_a_wait_hook_ack_that_is_not_an_array_stops_the_wait(
    autojump_clock: trio.abc.Clock, data: Any
) -> None:
    """A wait hook's answer goes to ``normalizeJambones`` whatever it is (FS v0.9.8
    ``lib/tasks/conference.js:650-655``, ``lib/tasks/enqueue.js:340-342``,
    ``lib/tasks/dial.js:1100-1108``): anything but an array, a missing ``data`` included,
    throws ("must be array") and the wait loop stops (``conference.js:246-251``,
    ``enqueue.js:166-171``, ``dial.js:1131-1134``): the caller waits in silence. Unlike an
    actionHook's, where the same ack means "carry on" (``ignored-ack-data``), this is a
    ``refused-ack-data`` violation."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered([SAY, CONFERENCE])
        await _ack_raw(s, await s.recv_type("verb:hook"), data)

    async with started_call(app_side) as fc:
        with pytest.raises(ProtocolViolation, match="refused-ack-data") as info:
            await fc.wait_hook("/conf-wait", kind="conference")
        assert not isinstance(info.value, InvalidVerbs)
        (violation,) = fc.violations
        assert "must be array" in violation.message and "conference.js" in violation.message


@pytest.mark.parametrize(
    ("program", "verbs", "refused"),
    [
        (CONFERENCE, [SAY, PLAY, {"verb": "pause", "length": 2}], False),
        (CONFERENCE, [SAY, GATHER], True),  # only play, say, pause (conference.js:650-660)
        (CONFERENCE, [{"verb": "leave"}], True),
        (ENQUEUE, [SAY, {"verb": "leave"}], False),  # enqueue also leave, tag (enqueue.js:314-347)
        (ENQUEUE, [HANGUP], True),
        (DIAL, [PLAY], False),
        (DIAL, [{"verb": "leave"}], True),  # dial.js:1091-1113
    ],
)
async def test_a_wait_hook_answer_may_only_play_say_or_pause(
    autojump_clock: trio.abc.Clock, program: dict[str, Any], verbs: list[dict[str, Any]], refused: bool
) -> None:
    async def app_side(app: TinyApp) -> None:
        s = await app.answered([program])
        await s.ack(await s.recv_type("verb:hook"), verbs)

    async with started_call(app_side, strict=False) as fc:
        # the verb names its kind; its hook is the wait hook (onHoldHook for a dial)
        (verb,) = fc.acks[0].verbs
        ack = await fc.wait_hook(verb)
        assert ack.verb_names == [v["verb"] for v in verbs]
        assert [v.kind for v in fc.violations] == (["refused-ack-data"] if refused else [])


async def test_wait_hook_payloads_follow_0_9_8_and_its_verbs_leave_the_program_alone(
    autojump_clock: trio.abc.Clock,
) -> None:
    """What each wait hook sends (FS v0.9.8 ``lib/tasks/conference.js:654``: the raw call
    info, ``cs.callInfo``, without the ``sip``, ``defaults`` ... that ``session:new`` adds; ``lib/tasks/enqueue.js:323-340``: the queue's numbers only; ``lib/tasks/dial.js:1101-1107``:
    the call info plus ``hold_detail``); ``[]`` is a fine answer (jambonz stops asking), and the
    played verbs do not replace the program: ``mute:status`` during the conference stays
    valid."""
    got: list[dict[str, Any]] = []

    async def app_side(app: TinyApp) -> None:
        s = await app.answered([CONFERENCE, ENQUEUE, DIAL])
        for verbs in ([SAY], [], [PLAY]):
            hook = await s.recv_type("verb:hook")
            got.append(hook)
            await s.ack(hook, verbs)
        await s.command("mute:status", "mute")

    async with started_call(app_side) as fc:
        conference, _, dial = fc.acks[0].verbs
        assert (await fc.wait_hook(conference)).verb_names == ["say"]
        assert (await fc.wait_hook("/queue-wait")).verbs == []  # kind: from the program
        assert (await fc.wait_hook(dial)).verb_names == ["play"]
        await fc.expect_command("mute:status")  # the conference is still the program
        assert fc.violations == []
    conf, queue, held = got
    # the raw call info: session:new's data without what lib/middleware.js:447-451 adds
    # around it (the INVITE, the service provider, the defaults, the env vars)
    added = {"sip", "service_provider_sid", "defaults", "env_vars"}
    assert conf["hook"] == "/conf-wait"
    assert conf["data"] == {k: v for k, v in fc.call.to_session_new_data().items() if k not in added}
    assert not added & set(conf["data"])
    assert queue["hook"] == "/queue-wait"
    assert set(queue["data"]) == {
        "queue_sid",
        "queue_time",
        "queue_size",
        "queue_position",
        "call_sid",
        "call_id",
    }
    assert queue["data"]["queue_sid"] == "support"
    assert held["hook"] == "/held" and set(held["data"]["hold_detail"]) == {"from", "to"}
    assert held["data"]["call_sid"] == fc.call.call_sid


async def test_a_wait_hook_needs_a_kind_the_fake_can_tell(autojump_clock: trio.abc.Clock) -> None:
    async def app_side(app: TinyApp) -> None:
        await app.answered()

    async with started_call(app_side) as fc:
        with pytest.raises(ExpectationFailed, match="kind"):
            await fc.wait_hook("/nowhere")
        with pytest.raises(ExpectationFailed, match="no waitHook"):
            await fc.wait_hook(Gather(input=["digits"]))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("missing", "kills the running verb"),
        (False, "kills the running verb"),
        ({}, "throws"),
        (SAY, "throws"),
    ],
)
async def test_a_session_redirect_after_a_call_hook_command_needs_an_array(
    autojump_clock: trio.abc.Clock, data: Any, match: str
) -> None:
    """After a ``redirect`` command with ``call_hook`` jambonz takes the ``session:redirect``
    answer as the parent's program (FS v0.9.8 ``lib/session/call-session.js:1595-1613``,
    ``:1639-1642``); a falsy one kills the parent's running verb (``:1649-1652``), a truthy
    non-array makes ``normalizeJambones`` throw in a handler nobody awaits (``:2305``): the
    command is lost. Neither carries on, unlike the same answer to the ``redirect`` verb's
    ``session:redirect`` (``lib/tasks/task.js:254``)."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.command("redirect", {"call_hook": "/next"})
        await _ack_raw(s, await s.recv_type("session:redirect"), data)

    async with started_call(app_side) as fc:
        await fc.expect_command(RedirectToHookCommand)
        with pytest.raises(ProtocolViolation, match=match) as info:
            await fc.session_redirect("/next")
        assert [v.kind for v in info.value.violations] == ["refused-ack-data"]


async def test_an_empty_session_redirect_answer_after_a_call_hook_command_clears_the_program(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``[]`` is an array: ``replaceApplication([])`` kills the running verb and leaves no
    program (FS v0.9.8 ``lib/session/call-session.js:1639-1642``, ``:2082-2125``), so a
    ``mute:status`` meant for the conference that ran is ignored (``:1719-1727``). The same
    ``[]`` to the ``redirect`` verb's ``session:redirect`` carries on with the program."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered([CONFERENCE])
        redirect = await s.recv_type("session:redirect")  # from the redirect verb
        await s.ack(redirect, [])
        await s.command("mute:status", "mute")
        await s.command("redirect", {"call_hook": "/next"})
        redirect = await s.recv_type("session:redirect")
        await s.ack(redirect, [])
        await s.command("mute:status", "mute")

    async with started_call(app_side) as fc:
        assert (await fc.session_redirect("/verb")).verbs == []
        await fc.expect_command("mute:status")
        await fc.expect_command(RedirectToHookCommand)
        assert (await fc.session_redirect("/next")).verbs == []
        with pytest.raises(ProtocolViolation, match="ignored-command"):
            await fc.expect_command("mute:status")


async def test_a_falsy_call_hook_answer_drops_the_killed_verb_from_the_program(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A falsy answer kills the parent's running verb (FS v0.9.8
    ``lib/session/call-session.js:1649-1652``). Driven by hand the fake cannot tell which verb
    runs, except when the program is one verb: that one is over now, so a ``mute:status`` for
    the conference that was killed is ignored by jambonz (``:1719-1727``). Before, the fake
    kept the killed conference in its record and let the ``mute:status`` pass."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered([CONFERENCE])
        await s.command("redirect", {"call_hook": "/next"})
        redirect = await s.recv_type("session:redirect")
        await s.send({"type": "ack", "msgid": redirect["msgid"]})
        await s.command("mute:status", "mute")

    async with started_call(app_side, strict=False) as fc:
        await fc.expect_command(RedirectToHookCommand)
        assert (await fc.session_redirect("/next")).verbs == []
        await fc.expect_command("mute:status")
        assert [v.kind for v in fc.violations] == ["refused-ack-data", "ignored-command"]


async def test_a_child_call_hook_session_redirect_carries_the_child_leg(
    autojump_clock: trio.abc.Clock,
) -> None:
    """For ``child_call_hook`` jambonz sends ``session:redirect`` on the parent's socket with
    the *child's* call info (FS v0.9.8 ``lib/session/call-session.js:1600-1606``: ``sd.callInfo``);
    the answer is the child's program (``:1623-1638``, adulting), not the parent's; and with
    no ``call_hook`` the parent's running verb, the dial, is killed (``:1649-1652``): a later
    ``mute:status`` is ignored. Before, the fake sent the parent's call info, took the child's
    verbs for the parent's program and let the ``mute:status`` pass."""
    parent = CallData()

    async def app_side(app: TinyApp) -> None:
        s = await app.answered([DIAL])
        await s.command("redirect", {"child_call_hook": "/child"})
        redirect = await s.recv_type("session:redirect")
        assert redirect["hook"] == "/child"
        data = redirect["data"]
        assert data["direction"] == "outbound" and data["parent_call_sid"] == parent.call_sid
        assert data["call_sid"] != parent.call_sid
        await s.ack(redirect, [SAY])
        await s.command("mute:status", "mute")

    async with started_call(app_side, call=parent) as fc:
        await fc.expect_command(RedirectToHookCommand)
        assert (await fc.session_redirect("/child")).verb_names == ["say"]
        with pytest.raises(ProtocolViolation, match="ignored-command"):
            await fc.expect_command("mute:status")


@pytest.mark.parametrize(("data", "refused"), [("missing", False), (False, False), ({}, True), (SAY, True)])
async def test_a_child_call_hook_answer_that_is_not_an_array(
    autojump_clock: trio.abc.Clock, data: Any, refused: bool
) -> None:
    """A falsy answer for the child leaves it bridged (FS v0.9.8
    ``lib/session/call-session.js:1623``); a truthy non-array makes ``normalizeJambones`` throw
    (``:1626``) in a handler nobody awaits (``:2305``): the whole redirect is lost."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered([DIAL])
        await s.command("redirect", {"child_call_hook": "/child"})
        redirect = await s.recv_type("session:redirect")
        out: dict[str, Any] = {"type": "ack", "msgid": redirect["msgid"]}
        if data != "missing":
            out["data"] = data
        await s.send(out)

    async with started_call(app_side, strict=False) as fc:
        await fc.expect_command(RedirectToHookCommand)
        assert (await fc.session_redirect("/child")).verbs == []
        kinds = [v.kind for v in fc.violations]
        assert kinds == (["refused-ack-data"] if refused else [])
        if refused:
            assert "lost" in fc.violations[0].message


@pytest.mark.parametrize(("data", "accepted"), [(False, True), ("", True), ({}, False), (SAY, False)])
async def test_a_dial_confirm_ack_that_is_not_an_array(
    autojump_clock: trio.abc.Clock, data: Any, accepted: bool
) -> None:
    """``dial:confirm``: a falsy answer accepts the callee, like none (FS v0.9.8
    ``lib/utils/place-outdial.js:393-396``); a truthy non-array makes ``normalizeJambones``
    throw and the callee is declined (``:398``, ``:429-435``): still ``InvalidVerbs``."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        confirm = await s.recv_type("dial:confirm")
        await s.send({"type": "ack", "msgid": confirm["msgid"], "data": data})

    async with started_call(app_side, strict=False) as fc:
        if accepted:
            assert (await fc.dial_confirm("/confirm")).verbs == []
            assert [v.kind for v in fc.violations] == ["ignored-ack-data"]
        else:
            with pytest.raises(InvalidVerbs, match="must be array"):
                await fc.dial_confirm("/confirm")


async def _is_checkpoint(operation: Callable[[], Awaitable[object]]) -> bool:
    """Whether ``operation`` raises ``Cancelled`` in a cancelled scope (a cancel point) and
    lets another task run (a schedule point)."""
    ran = False

    async def other() -> None:
        nonlocal ran
        ran = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        with trio.CancelScope() as scope:
            scope.cancel()
            await operation()
    return scope.cancelled_caught and ran


async def test_every_call_into_the_fake_is_a_checkpoint(autojump_clock: trio.abc.Clock) -> None:
    """FakeCall promises that every (async) method is a checkpoint: also when nothing has to
    be waited for (a command or close already there, a send dropped after a 1000 close, an
    empty TTS buffer, a message queued while the socket is down)."""

    async def app_side(app: TinyApp) -> None:
        s = await app.answered()
        await s.command("redirect", [SAY])
        await s.close(1000)

    async with app_running(app_side) as app, open_fake_call(app.connector) as fc:
        await fc.start()
        await fc.wait_idle(1)
        assert fc.closed_gracefully
        assert await _is_checkpoint(fc.expect_command)
        assert await _is_checkpoint(fc.expect_close)
        assert await _is_checkpoint(lambda: fc.status("in-progress"))
        assert await _is_checkpoint(lambda: fc.gather_timeout("/gather"))
        assert await _is_checkpoint(fc.drain_tts)
        assert await _is_checkpoint(fc.hangup)
        assert fc.sent[-1].type == "call:status"  # the hangup above was cancelled before it ran
        await fc.hangup()

    async def app_side2(app: TinyApp) -> None:
        await app.answered()
        await trio.sleep_forever()

    async with app_running(app_side2) as app, open_fake_call(app.connector) as fc:
        await fc.start()
        assert await _is_checkpoint(fc.drop)
        assert fc.connected  # the cancelled drop did nothing
        await fc.drop(reconnect=False)
        assert await _is_checkpoint(lambda: fc.status("in-progress"))
        await fc.wait_idle(1)
        assert fc.connection_count == 1  # the cancelled send did not reconnect either
