"""FM-05 / FM-06: async authenticators. A peer that leaves during auth, an authenticator that
is slow (bounded by the handshake deadline) or raises (500): the server stays up."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from jambonz_trio import AdmissionRequest, Route
from jambonz_trio.lowlevel import Authenticator
from tests.helpers import Serve

from .helpers import (
    basic,
    build_request,
    errors,
    exchange,
    exchange_memory,
    make_handler,
    new_session,
    read_to_eof,
    say,
    settle,
    start,
    ws_client,
)


def guarded(authenticate: Authenticator) -> Route:
    """The ``/app`` route, admitted by ``authenticate``."""
    return Route(path="/app", handler=make_handler("app"), auth=authenticate)


@pytest.mark.parametrize("verdict", [True, False], ids=["then-admits", "then-refuses"])
async def test_fm05_peer_leaves_during_slow_authenticator(
    serve: Serve, caplog: pytest.LogCaptureFixture, verdict: bool
) -> None:
    """FM-05: the peer disconnects while the authenticator is still deciding: no exception
    escapes, nothing is logged at ERROR, the connection is freed and the server serves on."""
    entered = trio.Event()
    release = trio.Event()

    async def authenticate(request: AdmissionRequest) -> bool:
        if request.username == "slow":
            entered.set()
            await release.wait()
            return verdict
        return True

    with trio.fail_after(10):
        server = await serve(guarded(authenticate))
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(build_request(extra=[(b"Authorization", basic("slow", "x"))]))
        await entered.wait()
        await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        release.set()
        assert await settle(lambda: server.statistics().connections == 0)
        assert server.statistics().calls == 0
        async with ws_client(server.port, headers=[(b"Authorization", basic("u", "p"))]) as ws:
            assert await new_session(ws, "sid-1") == say("app")
        assert errors(caplog) == []


@pytest.mark.parametrize("verdict", [True, False], ids=["then-admits", "then-refuses"])
async def test_fm05_peer_leaves_during_authenticator_memory(
    serve: Serve,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    verdict: bool,
) -> None:
    """FM-05 over memory streams: the server's write then fails with BrokenResourceError."""

    async def authenticate(request: AdmissionRequest) -> bool:
        await trio.sleep(1.0)  # virtual
        return verdict

    with trio.fail_after(60):
        server = await serve(guarded(authenticate))
        client = await server.connect_memory()
        await client.send_all(build_request())
        await trio.testing.wait_all_tasks_blocked()
        await client.aclose()
        await trio.sleep(2.0)  # virtual: past the authenticator
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().connections == 0
        assert errors(caplog) == []


async def test_fm06_slow_authenticator_cut_at_deadline(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """FM-06: an authenticator that takes 10 s is cut at handshake_timeout (2 s) and the
    connection closed; no call starts and the slot is freed."""
    cancelled: list[bool] = []

    async def authenticate(request: AdmissionRequest) -> bool:
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            cancelled.append(True)
            raise
        return True

    with trio.fail_after(60):
        server = await serve(guarded(authenticate), handshake_timeout=2.0)
        client = await server.connect_memory()
        t0 = trio.current_time()
        await client.send_all(build_request())
        answer = await read_to_eof(client)
        assert trio.current_time() - t0 == pytest.approx(2.0, abs=0.01)
        assert not answer.startswith(b"HTTP/1.1 101")
        assert cancelled == [True]
        await trio.testing.wait_all_tasks_blocked()
        stats = server.statistics()
        assert (stats.connections, stats.pending_handshakes, stats.calls) == (0, 0, 0)


async def test_fm06_slow_authenticator_gets_503(serve: Serve, autojump_clock: trio.testing.MockClock) -> None:
    """FM-06: the peer is told why (503) when the authenticator overruns the deadline."""

    async def authenticate(request: AdmissionRequest) -> bool:
        await trio.sleep(10)
        return True

    with trio.fail_after(60):
        server = await serve(guarded(authenticate), handshake_timeout=2.0)
        response, _ = await exchange_memory(server, build_request())
        assert response.status == 503


async def test_fm06_authenticator_raising_gets_500(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """FM-06: an authenticator that raises -> 500; the error is logged (without the
    credentials), and the server keeps serving."""

    async def authenticate(request: AdmissionRequest) -> bool:
        if request.username == "boom":
            raise RuntimeError("database down")
        return True

    with trio.fail_after(10):
        server = await serve(guarded(authenticate))
        async with ws_client(server.port, headers=[(b"Authorization", basic("u", "p"))]) as live:
            assert await new_session(live, "sid-live") == say("app")
            secret = basic("boom", "hunter2")
            response = await exchange(server.port, build_request(extra=[(b"Authorization", secret)]))
            assert response.status == 500
            assert server.statistics().refused == 1
            async with ws_client(server.port, headers=[(b"Authorization", basic("u", "p"))]) as ws:
                assert await new_session(ws, "sid-2") == say("app")
        assert any("authenticator raised" in m for m in errors(caplog))
        assert "hunter2" not in caplog.text
        assert secret.decode() not in caplog.text
        record = next(r for r in caplog.records if r.levelno >= logging.ERROR)
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)


async def test_fm06_authenticator_cancelled_by_server_shutdown(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """FM-06: cancelling the server while an authenticator is running is clean (Cancelled is
    not turned into a 500 / an ERROR log)."""
    entered = trio.Event()

    async def authenticate(request: AdmissionRequest) -> bool:
        entered.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start(nursery, guarded(authenticate))
            client = await server.connect_memory()
            await client.send_all(build_request())
            await entered.wait()
            nursery.cancel_scope.cancel()
        assert errors(caplog) == []
