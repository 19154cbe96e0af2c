"""FM-04 / S-7: slowloris and handshake exhaustion (total handshake deadline, pending cap,
head-size cap). FM-07: connection cap. Deadlines run on virtual time (memory streams +
``autojump_clock``); no real sleeping."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from jambonz_trio import Route, _admission

from .helpers import (
    build_request,
    errors,
    exchange,
    exchange_memory,
    make_handler,
    new_session,
    read_response,
    read_to_eof,
    say,
    settle,
    start,
    ws_client,
)

APP = Route(path="/app", handler=make_handler("app"))


async def _time_to_close(client: trio.abc.Stream) -> float:
    t0 = trio.current_time()
    await read_to_eof(client)  # a late refusal (e.g. 408/503) would be fine too
    return trio.current_time() - t0


async def test_fm04_silent_socket_closed_at_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """FM-04: a connection that never sends a byte is closed at handshake_timeout."""
    with trio.fail_after(60):
        server = await start(nursery, APP, handshake_timeout=5.0)
        client = await server.connect_memory()
        assert await _time_to_close(client) == pytest.approx(5.0, abs=0.01)
        await trio.testing.wait_all_tasks_blocked()
        stats = server.statistics()
        assert (stats.connections, stats.pending_handshakes) == (0, 0)


async def test_fm04_one_byte_then_nothing_closed_at_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """FM-04: one byte, then silence: closed at handshake_timeout."""
    with trio.fail_after(60):
        server = await start(nursery, APP, handshake_timeout=5.0)
        client = await server.connect_memory()
        await client.send_all(b"G")
        assert await _time_to_close(client) == pytest.approx(5.0, abs=0.01)


async def test_fm04_dribbling_headers_do_not_extend_the_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """FM-04 (slowloris): a byte every 0.5 s forever is still cut at the *total* deadline."""
    with trio.fail_after(60):
        server = await start(nursery, APP, handshake_timeout=5.0)
        client = await server.connect_memory()
        request = build_request() * 10

        async def dribble() -> None:
            try:
                for i in range(len(request)):
                    await client.send_all(request[i : i + 1])
                    await trio.sleep(0.5)  # virtual time
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as inner:
            inner.start_soon(dribble)
            assert await _time_to_close(client) == pytest.approx(5.0, abs=0.01)
            inner.cancel_scope.cancel()


async def test_fm04_server_serves_after_timeouts(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """FM-04: after silent sockets time out, a full handshake and session still work."""
    with trio.fail_after(60):
        server = await start(nursery, APP, handshake_timeout=2.0)
        silent = [await server.connect_memory() for _ in range(5)]
        for client in silent:
            await read_to_eof(client)
        stream = await server.connect_memory()
        async with ws_client(0, stream=stream) as ws:
            assert await new_session(ws, "sid-1") == say("app")


async def test_s7_pending_handshake_cap(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """FM-04 / S-7: max_pending_handshakes=2: a third concurrent handshake gets 503 at once;
    once the two time out, handshakes are admitted again."""
    with trio.fail_after(60):
        server = await start(nursery, APP, max_pending_handshakes=2, handshake_timeout=5.0)
        first = await server.connect_memory()
        second = await server.connect_memory()
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().pending_handshakes == 2
        t0 = trio.current_time()
        response, third = await exchange_memory(server, build_request())
        assert response.status == 503
        assert trio.current_time() == t0
        await read_to_eof(third)
        assert server.statistics().refused == 1

        await read_to_eof(first)
        await read_to_eof(second)
        assert trio.current_time() - t0 == pytest.approx(5.0, abs=0.01)
        response, _ = await exchange_memory(server, build_request())
        assert response.status == 101


async def test_s7_pending_handshake_cap_real_sockets(nursery: trio.Nursery) -> None:
    """FM-04 / S-7 over TCP: two silent sockets hold the two slots; the third gets 503."""
    with trio.fail_after(10):
        server = await start(nursery, APP, max_pending_handshakes=2)
        silent = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(2)]
        assert await settle(lambda: server.statistics().pending_handshakes == 2)
        response = await exchange(server.port, build_request())
        assert response.status == 503
        for stream in silent:
            await stream.aclose()
        assert await settle(lambda: server.statistics().pending_handshakes == 0)
        assert (await exchange(server.port, build_request())).status == 101


async def test_s7_request_head_cap_dribbled(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """S-7: a head growing past max_request_head_bytes without ending gets 431."""
    with trio.fail_after(60):
        server = await start(nursery, APP, max_request_head_bytes=1024)
        client = await server.connect_memory()
        await client.send_all(b"GET /app HTTP/1.1\r\nHost: x\r\n")
        response_task: list[int | None] = []

        async def read() -> None:
            response_task.append((await read_response(client)).status)

        async with trio.open_nursery() as inner:
            inner.start_soon(read)
            try:
                for i in range(100):
                    await client.send_all(b"X-Pad-%d: %s\r\n" % (i, b"a" * 50))
                    await trio.testing.wait_all_tasks_blocked()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        assert response_task == [431]


async def test_s7_request_head_cap_real_socket(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """S-7 over TCP: 8 KiB of header lines with no end, cap 1 KiB -> 431."""
    with trio.fail_after(10):
        server = await start(nursery, APP, max_request_head_bytes=1024)
        head = b"GET /app HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 2000 + b"\r\n"
        response = await exchange(server.port, head)
        assert response.status == 431
        assert errors(caplog) == []


async def test_s7_request_head_cap_one_chunk(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """S-7: a complete 3 KiB head arriving at once must not pass a 1 KiB cap."""
    with trio.fail_after(60):
        server = await start(nursery, APP, max_request_head_bytes=1024)
        request = build_request(extra=[(b"X-Pad", b"a" * 3000)])
        response, _ = await exchange_memory(server, request)
        assert response.status == 431


async def test_fm07_connection_cap(nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    """FM-07: max_connections=2 with two live calls: the third connection gets 503 at once
    (before sending anything); when a call ends, a new one is admitted."""
    with trio.fail_after(10):
        server = await start(nursery, APP, max_connections=2)
        async with ws_client(server.port) as a:
            assert await new_session(a, "sid-a") == say("app")
            async with ws_client(server.port) as b:
                assert await new_session(b, "sid-b") == say("app")
                assert server.statistics().connections == 2
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                async with stream:
                    response = await read_response(stream)  # no request sent at all
                assert response.status == 503
                assert server.statistics().refused == 1
            assert await settle(lambda: server.statistics().connections == 1)
            async with ws_client(server.port) as c:
                assert await new_session(c, "sid-c") == say("app")
        assert errors(caplog) == []


# -- issue 19 item 9: header count, on the raw bytes --------------------------------------------


def _padded(headers: int, **kwargs: object) -> bytes:
    """An upgrade head with ``headers`` header lines in all (the base request has 6)."""
    return build_request(extra=[(b"X-Pad-%d" % i, b"1") for i in range(headers - 6)], **kwargs)  # type: ignore[arg-type]


async def test_i19_9_many_headers_refused_before_parsing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19 item 9: a 15 KB head of 3,000 tiny headers gets 431 without ever reaching the
    HTTP parser; max_request_headers (default 100) lines still parse."""
    parsed: list[int] = []
    real_parse = _admission._parse

    def spy(head: bytes, max_bytes: int) -> object:
        parsed.append(len(head))
        return real_parse(head, max_bytes)

    monkeypatch.setattr(_admission, "_parse", spy)
    with trio.fail_after(60):
        server = await start(nursery, APP)
        hostile = build_request()[:-2] + b"X:1\r\n" * 3000 + b"\r\n"
        assert 15_000 < len(hostile) < 16 * 1024
        response, _ = await exchange_memory(server, hostile)
        assert response.status == 431
        assert parsed == []
        response, _ = await exchange_memory(server, _padded(100))
        assert response.status == 101
        assert len(parsed) == 1
        response, _ = await exchange_memory(server, _padded(101))
        assert response.status == 431
        assert len(parsed) == 1


async def test_i19_9_header_lines_counted_as_they_arrive(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Issue 19 item 9: a head that keeps adding header lines is refused (431) as soon as it
    passes the cap, without waiting for its end or the handshake deadline."""
    with trio.fail_after(60):
        server = await start(nursery, APP, max_request_headers=10)
        client = await server.connect_memory()
        await client.send_all(b"GET /app HTTP/1.1\r\n")
        t0 = trio.current_time()
        for i in range(11):
            await client.send_all(b"X-%d: 1\r\n" % i)
            await trio.sleep(0.1)
        response = await read_response(client)
        assert response.status == 431
        assert trio.current_time() - t0 == pytest.approx(1.1, abs=0.01)
