"""Issue 17 item 3: every library record made on behalf of a call carries ``call_sid``,
``account_sid`` and ``path`` as attributes; peer values stay escaped and capped; secrets
(Basic auth passwords, ``env_vars`` values, tokens in the hook URL's query) are never logged."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager

import pytest
import trio
import trio.testing

from jambonz_trio import BasicAuth, Call, EnvVar, JambonzServer, Route, VerbHook
from jambonz_trio.lowlevel import CallContextFilter
from jambonz_trio.testing import (
    CallData,
    FakeCall,
    HandshakeRejected,
    open_fake_audio_stream,
    open_fake_call,
    tcp_connector,
)
from jambonz_trio.verbs import Say
from tests.admission.helpers import build_request, exchange, settle
from tests.engine.helpers import raw_client
from tests.helpers import SESSION_DATA, Serve, basic_headers

FIELDS = ("call_sid", "account_sid", "path")


def _call_to_ivr(
    server: JambonzServer, call_sid: str, account_sid: str
) -> AbstractAsyncContextManager[FakeCall]:
    """A fake jambonz call to ``/ivr`` whose URL has a query string (left out of ``path``)."""
    return open_fake_call(
        server.connect_memory,
        path="/ivr?tenant=acme",
        call=CallData(call_sid=call_sid, account_sid=account_sid),
    )


def library(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("jambonz_trio")]


async def test_per_call_records_carry_the_calls_fields(
    serve: Serve, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """The engine's own lines (the watchdog's warning), the server's lines made in a call's
    task (its handler failed) and the app's lines through :class:`CallContextFilter` all
    carry the call's fields; a line made for no call carries ``None``."""
    caplog.set_level(logging.INFO)
    app_log = logging.getLogger("test.app.context")
    app_log.addFilter(CallContextFilter())

    async def app(call: Call) -> None:
        app_log.info("handling")
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            if isinstance(event, VerbHook):
                await trio.sleep(5)
                raise RuntimeError("boom")  # after the watchdog answered it

    server = await serve(Route(path="/ivr", handler=app))
    with trio.fail_after(30):
        async with _call_to_ivr(server, "CA-1", "AC-9") as fc:
            await fc.start()
            await fc.hook("/menu")
            await fc.expect_close()
        assert await settle(lambda: server.statistics().calls == 0)
        async with raw_client(server, "/ivr") as client:
            await client.send_text("not json")
            await client.receive()
    handling = next(r for r in caplog.records if r.getMessage() == "handling")
    assert {f: getattr(handling, f) for f in FIELDS} == {
        "call_sid": "CA-1",
        "account_sid": "AC-9",
        "path": "/ivr",
    }
    per_call = [r for r in library(caplog) if "CA-1" in r.getMessage()]
    assert any("handler raised" in r.getMessage() for r in per_call)
    assert len(per_call) >= 2
    for record in per_call:
        assert {f: getattr(record, f) for f in FIELDS} == {
            "call_sid": "CA-1",
            "account_sid": "AC-9",
            "path": "/ivr",  # no query string
        }, record.getMessage()
    invalid = next(r for r in library(caplog) if "is invalid" in r.getMessage())
    assert {f: getattr(invalid, f) for f in FIELDS} == dict.fromkeys(FIELDS)


async def test_peer_values_in_the_fields_are_escaped_and_capped(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """A call sid with a line break and an account sid of 10,000 characters: the fields hold
    them escaped and capped, as the message arguments are (docs/operations.md)."""
    caplog.set_level(logging.INFO)

    async def app(call: Call) -> None:
        raise RuntimeError("boom")

    server = await serve(Route(path="/", handler=app))
    sid = "evil\nINFO forged line"
    with trio.fail_after(10):
        async with raw_client(server) as client:
            await client.send(
                "session:new",
                "m1",
                {**SESSION_DATA, "call_sid": sid, "account_sid": "A" * 10_000},
                call_sid=sid,
            )
            await client.receive()
        assert await settle(lambda: server.statistics().calls == 0)
    record = next(r for r in library(caplog) if "handler raised" in r.getMessage())
    assert record.call_sid == "evil\\nINFO forged line"  # type: ignore[attr-defined]
    assert record.account_sid.startswith("A" * 256) and record.account_sid.endswith("...[9744 more chars]")  # type: ignore[attr-defined]


async def test_s11_secrets_never_logged(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """S-11 extended: Basic auth passwords (right, wrong, on a scrape), ``obscure`` env-var
    values (also when wrongly typed), and a token in the hook URL's query string appear in no
    log line and in no record field, with everything logged at DEBUG."""
    caplog.set_level(logging.DEBUG)
    key = EnvVar("API_KEY", int, description="key", obscure=True, required=True)

    async def app(call: Call) -> None:
        logging.getLogger("jambonz_trio.test").debug("call %r info %r", call, call.info)
        await call.ack(call.session, [Say(text="hi")])
        raise RuntimeError("crash after the ack")

    route = Route(path="/ivr", handler=app, auth=BasicAuth(username="u", password="pw-s3cret"), env=[key])
    with trio.fail_after(20):
        server = await serve(route, metrics=True)
        url = f"ws://127.0.0.1:{server.port}/ivr?token=t0ken-s3cret"
        wrong = build_request(b"/ivr", headers=[(b"Host", b"x"), *basic_headers("u", "bad-s3cret")])
        assert (await exchange(server.port, wrong)).status == 426
        scrape = build_request(b"/metrics", headers=[(b"Host", b"x"), *basic_headers("u", "bad-s3cret")])
        assert (await exchange(server.port, scrape)).status == 401
        data = CallData(call_sid="CA-s", env_vars={"API_KEY": "value-s3cret"})  # a string: wrong type
        async with open_fake_call(tcp_connector(url), username="u", password="pw-s3cret", call=data) as fc:
            await fc.start()
            await fc.expect_close()
        with pytest.raises(HandshakeRejected):
            async with open_fake_call(tcp_connector(url), username="u", password="bad-s3cret"):
                pass
        assert await settle(lambda: server.statistics().calls == 0)
    assert any("API_KEY" in r.getMessage() for r in caplog.records)  # the wrong value, by name
    assert any(getattr(r, "path", None) == "/ivr" for r in caplog.records)
    assert "s3cret" not in caplog.text
    for record in caplog.records:
        assert "s3cret" not in repr(record.__dict__), record.getMessage()


async def test_a_conversations_and_an_audio_streams_own_records_carry_the_calls_fields(
    serve: Serve, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The per-call logs of a Conversation and of an AudioStream carry the same fields as the
    engine's (fresh-eyes review: they had ``call_sid`` only, and their ``None`` account and
    path hid the ones CallContextFilter would have filled in)."""
    from jambonz_trio import AudioRoute, AudioStream, open_conversation
    from tests.audio.helpers import listen, start_server

    seen: dict[str, object] = {}

    async def app(call: Call) -> None:
        async with open_conversation(call) as convo:
            seen["conversation"] = dict(convo._log.fields)
        await call.ack(call.session, [Say(text="hi")])

    server = await serve(Route(path="/ivr", handler=app))
    with trio.fail_after(30):
        async with _call_to_ivr(server, "CA-2", "AC-7") as fc:
            await fc.start()
    assert seen["conversation"] == {"call_sid": "CA-2", "account_sid": "AC-7", "path": "/ivr"}

    async def handler(stream: AudioStream) -> None:
        seen["audio"] = dict(stream._log.fields)

    audio = await start_server(nursery, [AudioRoute(path="/audio", handler=handler)])
    call = CallData(call_sid="CA-3", account_sid="AC-8")
    async with open_fake_audio_stream(audio.connect_memory, listen(), call=call) as fake:
        await fake.wait_closed()
    assert seen["audio"] == {"call_sid": "CA-3", "account_sid": "AC-8", "path": "/audio"}


async def test_first_message_lines_leave_the_query_string_out(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/operations.md: paths are logged without their query string, which may carry a
    token; the server's "first message ... is invalid" line logged the whole request target."""
    caplog.set_level(logging.INFO)

    async def app(call: Call) -> None:
        raise AssertionError("no call from an invalid first message")

    server = await serve(Route(path="/ivr", handler=app))
    with trio.fail_after(10):
        async with raw_client(server, "/ivr?token=t0ken-s3cret") as client:
            await client.send_text("not json")
            await client.receive()
    assert any("first message on /ivr is invalid" in r.getMessage() for r in library(caplog))
    assert "s3cret" not in caplog.text
