"""Close races and close hygiene: FM-09 (ping during the server's close: no ERROR log), FM-31
(two reconnects racing for one call), S-12 (close codes and reasons: validated, truncated, no
exception text). Memory streams and virtual time: deterministic."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from wsproto.events import AcceptConnection, CloseConnection

from jambonz_trio import Call, JambonzServer
from jambonz_trio.verbs import Say
from tests.helpers import Serve, answering

from .helpers import Client, frame, session_data

Handler = Callable[[Call], Awaitable[None]]


async def memory_client(server: JambonzServer) -> Client:
    client = Client(await server.connect_memory())
    event = await client.handshake()
    assert isinstance(event, AcceptConnection), event
    return client


async def still_open(client: Client, seconds: float = 1.0) -> tuple[bool, list[str]]:
    """Read for ``seconds`` (virtual): ``(True, msgids)`` if the socket is still open then."""
    got: list[str] = []
    with trio.move_on_after(seconds):
        while True:
            reply = await client.receive()
            if reply is None:
                return False, got
            got.append(str(reply.get("msgid")))
    return True, got


# -- FM-31 -----------------------------------------------------------------------------------


async def test_fm31_racing_reconnects_leave_one_live_socket(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """FM-31: two sockets send ``session:reconnect`` for the same call at the same moment.
    Exactly one may stay live (the other is closed), and a hook sent on the live one is acked
    on that same socket."""
    server = await serve(answering, ping_interval=1000)
    first = await memory_client(server)
    await first.send("session:new", "m1", session_data("sid-1"), call_sid="sid-1")
    assert (await first.receive() or {}).get("msgid") == "m1"
    await first.answer_receipt()  # jambonz read the answer (no re-keyed session:new to release)
    a = await memory_client(server)
    b = await memory_client(server)
    await a.send("session:reconnect", "ra", session_data("sid-1"), call_sid="sid-1")
    await b.send("session:reconnect", "rb", session_data("sid-1"), call_sid="sid-1")
    await trio.testing.wait_all_tasks_blocked()
    a_open, a_got = await still_open(a)
    b_open, b_got = await still_open(b)
    assert "ra" in a_got or "rb" in b_got
    assert [a_open, b_open].count(True) == 1, (a_open, a_got, b_open, b_got)
    live = a if a_open else b
    other = b if a_open else a
    await live.send("verb:hook", "h1", {}, hook="/x", call_sid="sid-1")
    reply = await live.receive()
    assert reply == {"type": "ack", "msgid": "h1", "data": [{"verb": "say", "text": "ok /x"}]}
    await other.drop()


# -- FM-09 -----------------------------------------------------------------------------------


async def test_fm09_ping_during_close_is_not_an_error_log(
    serve: Serve, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """FM-09: a peer answering the server's Close with a Ping is a remote race, not a server
    error: contained (tests/engine/test_close_races.py) and not logged at ERROR."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="bye")])  # then return: the server closes

    server = await serve(app, ping_interval=1000)
    client = await memory_client(server)
    await client.send("session:new", "m1", session_data("victim"), call_sid="victim")
    assert (await client.receive() or {}).get("msgid") == "m1"
    if not any(isinstance(e, CloseConnection) for e in client._events):
        data = await client.stream.receive_some(1024)
        assert data[:1] == b"\x88"
    await client.stream.send_all(frame(0x9, b"race"))
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(5)  # past close_timeout: everything about this connection is over
    assert server.statistics().connections == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# -- S-12 ------------------------------------------------------------------------------------


async def _closed_with(server: JambonzServer, sid: str) -> tuple[int | None, str | None]:
    client = await memory_client(server)
    await client.send("session:new", "m1", session_data(sid), call_sid=sid)
    with trio.fail_after(30):
        while await client.receive() is not None:
            pass
    return client.close_code, client.close_reason


async def test_s12_reason_truncated_to_123_bytes_on_a_character_boundary(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """S-12 / FM-25: a long multi-byte reason is cut to at most 123 UTF-8 bytes, never inside
    a character (the peer would fail the close with 1007)."""

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        await call.aclose(4000, "é" * 100)  # 200 bytes

    server = await serve(app, ping_interval=1000)
    code, reason = await _closed_with(server, "sid-1")
    assert code == 4000
    assert reason is not None and reason == "é" * 61  # 122 bytes: the 62nd would be cut
    assert len(reason.encode()) <= 123


async def test_s12_no_exception_text_in_close_reasons(
    serve: Serve, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """S-12: a handler that raises ends its call with 1000 and a fixed reason: neither the
    exception's text nor a traceback goes on the wire (they go to the log only)."""
    secret = "db-password=hunter2 at /srv/app.py:42"

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        raise RuntimeError(secret)

    server = await serve(app, ping_interval=1000)
    code, reason = await _closed_with(server, "sid-1")
    assert code == 1000
    assert reason is not None
    assert "hunter2" not in reason and "Traceback" not in reason and "RuntimeError" not in reason
    assert any("RuntimeError" in r.getMessage() or r.exc_info for r in caplog.records)


async def test_s12_library_close_reasons_are_fixed_strings(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """S-12: the reasons the library itself sends (bad first message, oversize frame) are
    short fixed strings with no echo of the peer's input."""
    server = await serve(answering, ping_interval=1000)
    client = await memory_client(server)
    await client.send_text("SECRET not json")
    with trio.fail_after(30):
        while await client.receive() is not None:
            pass
    assert client.close_code == 1008
    assert client.close_reason is not None and "SECRET" not in client.close_reason
    assert len(client.close_reason.encode()) <= 123


async def test_s12_unencodable_reason_is_sanitised(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """S-12: ``aclose`` with a reason that cannot be encoded still closes with the code asked
    for (the reason is sanitised), and raises nothing but ``ValueError`` for a bad code."""
    raised: list[BaseException] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        try:
            await call.aclose(4001, "bad \udcff reason")
        except Exception as exc:
            raised.append(exc)
            raise

    server = await serve(app, ping_interval=1000)
    code, _reason = await _closed_with(server, "sid-1")
    assert raised == []
    assert code == 4001
