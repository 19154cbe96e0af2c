"""FM-04 / S-7: slowloris and handshake exhaustion (total handshake deadline, pending cap,
head-size cap). FM-07: connection cap. Issue 19 items 8-9: first-byte timeout, per-source cap,
the reserve for known sources, header-count cap. Deadlines run on virtual time (memory streams
+ ``autojump_clock``); no real sleeping. Per-source tests use real sockets from several
loopback addresses (127.0.0.2, ...: all of 127/8 is loopback on Linux)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from jambonz_trio import AudioRoute, BasicAuth, Route, ServerConfig, _admission
from jambonz_trio._admission import HandshakeBudget, source_key
from tests.helpers import Serve

from .helpers import (
    basic,
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
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """FM-04: a connection that never sends a byte is closed at handshake_timeout (when that
    comes before first_byte_timeout)."""
    with trio.fail_after(60):
        server = await serve(APP, handshake_timeout=5.0, first_byte_timeout=30.0)
        client = await server.connect_memory()
        assert await _time_to_close(client) == pytest.approx(5.0, abs=0.01)
        await trio.testing.wait_all_tasks_blocked()
        stats = server.statistics()
        assert (stats.connections, stats.pending_handshakes) == (0, 0)


async def test_i19_8_silent_socket_dropped_at_first_byte_timeout(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Issue 19 item 8: a socket silent before its first byte is dropped at
    first_byte_timeout (default 1 s), long before the 5 s handshake deadline, without an
    answer; one that has started its request keeps the whole handshake deadline."""
    with trio.fail_after(60):
        server = await serve(APP, handshake_timeout=5.0)
        silent = await server.connect_memory()
        started = await server.connect_memory()
        await started.send_all(b"G")
        assert await _time_to_close(silent) == pytest.approx(1.0, abs=0.01)
        assert server.statistics().pending_handshakes == 1  # only the one that spoke
        assert server.statistics().refused == 0  # dropped, not answered
        assert await _time_to_close(started) == pytest.approx(4.0, abs=0.01)
        assert server.statistics().pending_handshakes == 0


async def _one_byte(client: trio.abc.Stream) -> None:
    """One byte, then silence."""
    await client.send_all(b"G")


async def _dribble(client: trio.abc.Stream) -> None:
    """Slowloris: a byte of a (long) request every 0.5 s of virtual time, forever."""
    request = build_request() * 10
    try:
        for i in range(len(request)):
            await client.send_all(request[i : i + 1])
            await trio.sleep(0.5)  # virtual time
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


@pytest.mark.parametrize("send", [_one_byte, _dribble], ids=["one-byte-then-nothing", "dribbling-headers"])
async def test_fm04_a_slow_request_is_cut_at_the_total_deadline(
    serve: Serve, autojump_clock: trio.testing.MockClock, send: Callable[[trio.abc.Stream], Awaitable[None]]
) -> None:
    """FM-04: one byte then silence, or (slowloris) a byte every 0.5 s forever: either way the
    socket is closed at handshake_timeout, the *total* deadline, which bytes do not extend."""
    with trio.fail_after(60):
        server = await serve(APP, handshake_timeout=5.0)
        client = await server.connect_memory()
        async with trio.open_nursery() as inner:
            inner.start_soon(send, client)
            assert await _time_to_close(client) == pytest.approx(5.0, abs=0.01)
            inner.cancel_scope.cancel()


async def test_fm04_server_serves_after_timeouts(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """FM-04: after silent sockets time out, a full handshake and session still work."""
    with trio.fail_after(60):
        server = await serve(APP, handshake_timeout=2.0)
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
        server = await start(
            nursery, APP, max_pending_handshakes=2, handshake_timeout=5.0, first_byte_timeout=5.0
        )
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


async def test_s7_pending_handshake_cap_real_sockets(serve: Serve) -> None:
    """FM-04 / S-7 over TCP: two silent sockets hold the two slots; the third gets 503."""
    with trio.fail_after(10):
        server = await serve(APP, max_pending_handshakes=2)
        silent = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(2)]
        assert await settle(lambda: server.statistics().pending_handshakes == 2)
        response = await exchange(server.port, build_request())
        assert response.status == 503
        for stream in silent:
            await stream.aclose()
        assert await settle(lambda: server.statistics().pending_handshakes == 0)
        assert (await exchange(server.port, build_request())).status == 101


async def test_s7_request_head_cap_dribbled(serve: Serve, autojump_clock: trio.testing.MockClock) -> None:
    """S-7: a head growing past max_request_head_bytes without ending gets 431."""
    with trio.fail_after(60):
        server = await serve(APP, max_request_head_bytes=1024)
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


async def test_s7_request_head_cap_real_socket(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """S-7 over TCP: 8 KiB of header lines with no end, cap 1 KiB -> 431."""
    with trio.fail_after(10):
        server = await serve(APP, max_request_head_bytes=1024)
        head = b"GET /app HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 2000 + b"\r\n"
        response = await exchange(server.port, head)
        assert response.status == 431
        assert errors(caplog) == []


async def test_s7_request_head_cap_one_chunk(serve: Serve, autojump_clock: trio.testing.MockClock) -> None:
    """S-7: a complete 3 KiB head arriving at once must not pass a 1 KiB cap."""
    with trio.fail_after(60):
        server = await serve(APP, max_request_head_bytes=1024)
        request = build_request(extra=[(b"X-Pad", b"a" * 3000)])
        response, _ = await exchange_memory(server, request)
        assert response.status == 431


async def test_fm07_connection_cap(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """FM-07: max_connections=2 with two live calls: the third connection gets 503 at once
    (before sending anything); when a call ends, a new one is admitted."""
    with trio.fail_after(10):
        server = await serve(APP, max_connections=2)
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


# -- issue 19 item 8: per-source cap and the reserve for known sources ------------------------

AUTHED = Route(path="/app", handler=make_handler("app"), auth=BasicAuth(username="u", password="p:w"))
CREDENTIALS = (b"Authorization", basic("u", "p:w"))
SIGNED = build_request(extra=[CREDENTIALS])


async def _hold(port: int, source: str, count: int, *, first: bytes = b"") -> list[trio.SocketStream]:
    """``count`` connections from ``source`` that send ``first`` (by default nothing) and then
    wait: each holds a handshake."""
    streams = []
    for _ in range(count):
        stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
        if first:
            await stream.send_all(first)
        streams.append(stream)
    return streams


BURST = 120  # new calls in flight at once from one feature server, all on an idle server


@pytest.mark.parametrize(
    ("route", "request_head"),
    [
        (APP, build_request()),
        (
            AudioRoute(path="/app"),
            build_request(replace=[(b"Sec-WebSocket-Protocol", b"audio.drachtio.org")]),
        ),
    ],
    ids=["calls", "audio"],
)
async def test_i19_8_one_source_burst_on_an_idle_server(
    serve: Serve, route: Route | AudioRoute, request_head: bytes
) -> None:
    """jambonz reaches an app from one feature server (audio: one media server), with no
    credentials on the route and no trusted_sources: 120 handshakes in flight at once from that
    one address, on an otherwise idle server with the default limits, all get their 101. (The
    per-source cap of 32 used to refuse 88 of them with 503.)"""
    split = request_head.index(b"\r\n") + 2  # the request line now (jambonz writes at once), the rest later
    with trio.fail_after(60):
        server = await serve(route, handshake_timeout=60)
        burst = await _hold(server.port, "127.0.0.1", BURST, first=request_head[:split])
        try:
            all_at_once = await settle(lambda: server.statistics().pending_handshakes == BURST)
            for stream in burst:
                with contextlib.suppress(trio.BrokenResourceError):  # (a refused one is closed)
                    await stream.send_all(request_head[split:])
            statuses = [(await read_response(stream, to_eof=False)).status for stream in burst]
        finally:
            for stream in burst:
                await stream.aclose()
        assert statuses.count(101) == BURST, statuses
        assert all_at_once
        assert server.statistics().refused == 0


async def test_i19_8_per_source_cap_under_contention_real_sockets(serve: Serve) -> None:
    """Issue 19 item 8: an unknown address goes past max_pending_per_source only while fewer
    than half of the shared slots are taken; then its next connection gets 503 at once, while
    other addresses are still served up to their own cap. (10 slots, 2 reserved: 8 shared,
    contended from 4 on.)"""
    with trio.fail_after(10):
        server = await serve(
            AUTHED,
            max_pending_handshakes=10,
            reserved_pending_handshakes=2,
            max_pending_per_source=2,
            first_byte_timeout=30,
        )
        hog = await _hold(server.port, "127.0.0.2", 4)  # twice its cap: the pool was idle
        assert await settle(lambda: server.statistics().pending_handshakes == 4)
        assert (await exchange(server.port, SIGNED, source="127.0.0.2")).status == 503
        other = await _hold(server.port, "127.0.0.3", 2)  # its own cap, in the other half
        assert await settle(lambda: server.statistics().pending_handshakes == 6)
        assert (await exchange(server.port, SIGNED, source="127.0.0.3")).status == 503
        assert (await exchange(server.port, SIGNED, source="127.0.0.4")).status == 101
        for stream in hog:
            await stream.aclose()
        assert await settle(lambda: server.statistics().pending_handshakes == 2)
        assert (await exchange(server.port, SIGNED, source="127.0.0.2")).status == 101
        for stream in other:
            await stream.aclose()


async def test_i19_8_reserve_is_for_known_sources_real_sockets(nursery: trio.Nursery) -> None:
    """Issue 19 item 8: with 8 handshake slots, 2 reserved: 127.0.0.1 authenticates once and
    is known; a failed authentication earns nothing. Six unknown sources fill the shared six
    slots; any unknown source then gets 503, while the known one still gets both reserved
    slots and its call through."""
    with trio.fail_after(10):
        server = await start(
            nursery,
            AUTHED,
            max_pending_handshakes=8,
            reserved_pending_handshakes=2,
            max_pending_per_source=None,
            first_byte_timeout=30,
        )
        assert (await exchange(server.port, SIGNED, source="127.0.0.1")).status == 101
        wrong = build_request(extra=[(b"Authorization", basic("u", "guess"))])
        assert (await exchange(server.port, wrong, source="127.0.0.9")).status == 401
        held = [s for i in range(6) for s in await _hold(server.port, f"127.0.0.{2 + i}", 1)]
        assert await settle(lambda: server.statistics().pending_handshakes == 6)
        for source in ("127.0.0.2", "127.0.0.9", "127.0.0.10"):
            assert (await exchange(server.port, SIGNED, source=source)).status == 503
        known = await _hold(server.port, "127.0.0.1", 2)
        assert await settle(lambda: server.statistics().pending_handshakes == 8)
        assert (await exchange(server.port, SIGNED, source="127.0.0.1")).status == 503  # all 8 taken
        await known[0].send_all(SIGNED)
        response = await read_response(known[0], to_eof=False)
        assert response.status == 101
        for stream in held + known:
            await stream.aclose()


async def test_i19_8_known_source_is_not_capped_per_source(serve: Serve) -> None:
    """Issue 19 item 8: jambonz's burst of new calls comes from one address: once that address
    has authenticated, the per-source cap no longer applies to it (only the global cap), even
    when the slots are contended (12 slots, 3 reserved: from 4 in progress on)."""
    with trio.fail_after(10):
        server = await serve(
            AUTHED, max_pending_handshakes=12, max_pending_per_source=2, first_byte_timeout=30
        )
        assert (await exchange(server.port, SIGNED, source="127.0.0.1")).status == 101
        burst = await _hold(server.port, "127.0.0.1", 6)
        other = await _hold(server.port, "127.0.0.2", 2)
        assert await settle(lambda: server.statistics().pending_handshakes == 8)
        assert (await exchange(server.port, SIGNED, source="127.0.0.2")).status == 503
        for stream in burst:
            await stream.send_all(SIGNED)
            assert (await read_response(stream, to_eof=False)).status == 101
        for stream in burst + other:
            await stream.aclose()


async def test_i19_8_no_reserve_when_nobody_can_earn_it(nursery: trio.Nursery) -> None:
    """Without credentials on any route (and no trusted_sources) nobody can become known, so
    the reserve is not held back: unknown sources may use every slot."""
    with trio.fail_after(10):
        server = await start(
            nursery, APP, max_pending_handshakes=4, max_pending_per_source=None, first_byte_timeout=30
        )
        held = [s for i in range(3) for s in await _hold(server.port, f"127.0.0.{2 + i}", 1)]
        assert await settle(lambda: server.statistics().pending_handshakes == 3)
        assert (await exchange(server.port, build_request(), source="127.0.0.6")).status == 101
        for stream in held:
            await stream.aclose()


async def test_i19_8_trusted_sources_and_expiry(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """trusted_sources are known from the start; an authenticated address stays known for
    known_source_ttl (virtual time), then the per-source cap applies to it again (8 slots, 2
    reserved: contended from 3 in progress on)."""
    with trio.fail_after(500):
        server = await start(
            nursery,
            AUTHED,
            max_pending_handshakes=8,
            max_pending_per_source=1,
            known_source_ttl=100.0,
            first_byte_timeout=1000,
            handshake_timeout=1000,
            trusted_sources=["10.1.0.0/16"],
        )
        trusted = [await server.connect_memory(source="10.1.2.3") for _ in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().pending_handshakes == 3
        response, _ = await exchange_memory(server, SIGNED)  # no address: never known
        assert response.status == 101
        client = await server.connect_memory(source="192.0.2.7")
        await client.send_all(SIGNED)
        assert (await read_response(client, to_eof=False)).status == 101  # now known
        held = [await server.connect_memory(source="192.0.2.7") for _ in range(2)]
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().pending_handshakes == 5  # not capped at 1
        await trio.sleep(101)
        late = await server.connect_memory(source="192.0.2.7")
        assert (await read_response(late, to_eof=False)).status == 503  # forgotten: capped again
        for stream in trusted + held:
            await stream.aclose()


def test_i19_8_handshake_budget_bookkeeping() -> None:
    """HandshakeBudget on its own: the global cap, the reserve, the per-source cap (only once
    half of the shared slots are taken), releases, IPv6 sources counted per /64, and the bound
    on remembered sources."""
    budget = HandshakeBudget(limit=4, reserve=1, per_source=2, known_ttl=10.0, trusted=["2001:db8::1"])
    assert budget.acquire("192.0.2.1", 0.0) is None
    assert budget.acquire("192.0.2.1", 0.0) is None
    assert budget.acquire("192.0.2.1", 0.0) == "too many handshakes in progress from one source"
    assert budget.acquire(None, 0.0) is None  # no address: the shared slots only
    assert budget.acquire("192.0.2.2", 0.0) == "handshakes left are reserved for known sources"
    # 2001:db8::1 is trusted, so its whole /64 is known
    assert budget.acquire(source_key("2001:db8::ffff"), 0.0) is None
    assert budget.acquire(source_key("2001:db8::1"), 0.0) == "too many handshakes in progress"
    budget.release("192.0.2.1")
    budget.release(None)
    assert budget.pending == 2
    budget.authenticated("192.0.2.2", 0.0)
    assert budget.is_known("192.0.2.2", 9.9) and not budget.is_known("192.0.2.2", 10.0)
    # the per-source cap only bites once half of the shared slots (8 of 10: 4) are taken
    budget = HandshakeBudget(limit=10, reserve=2, per_source=2, known_ttl=10.0)
    assert [budget.acquire("192.0.2.1", 0.0) for _ in range(5)] == [None] * 4 + [
        "too many handshakes in progress from one source"
    ]
    assert [budget.acquire("192.0.2.2", 0.0) for _ in range(3)] == [None] * 2 + [
        "too many handshakes in progress from one source"
    ]
    budget.release("192.0.2.1")
    budget.release("192.0.2.1")
    budget.release("192.0.2.2")
    assert budget.pending == 3  # 192.0.2.1 holds 2, its cap, but the pool is not contended
    assert budget.acquire("192.0.2.1", 0.0) is None
    assert budget.acquire("192.0.2.1", 0.0) == "too many handshakes in progress from one source"
    for i in range(HandshakeBudget.MAX_KNOWN + 1):
        budget.authenticated(f"10.0.{i // 256}.{i % 256}", 1.0)
    assert not budget.is_known("10.0.0.0", 1.0)  # the least recently refreshed went first
    assert budget.is_known(f"10.0.{HandshakeBudget.MAX_KNOWN // 256}.0", 1.0)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", None),
        (None, None),
    ],
)
def test_i19_8_source_key(address: str | None, key: str | None) -> None:
    assert source_key(address) == key


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"reserved_pending_handshakes": 256}, "reserved_pending_handshakes"),
        ({"max_pending_handshakes": 8, "reserved_pending_handshakes": -1}, "reserved_pending_handshakes"),
        ({"max_pending_per_source": 0}, "max_pending_per_source"),
        ({"max_request_headers": 0}, "max_request_headers"),
        ({"trusted_sources": ["10.0.0.0/33"]}, "10.0.0.0/33"),
    ],
    ids=str,
)
def test_i19_8_admission_settings_validated(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ServerConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="trusted_sources"):
        ServerConfig(trusted_sources="10.0.0.0/8")


# -- issue 19 item 9: header count, on the raw bytes --------------------------------------------


def _padded(headers: int, **kwargs: object) -> bytes:
    """An upgrade head with ``headers`` header lines in all (the base request has 6)."""
    return build_request(extra=[(b"X-Pad-%d" % i, b"1") for i in range(headers - 6)], **kwargs)  # type: ignore[arg-type]


async def test_i19_9_many_headers_refused_before_parsing(
    serve: Serve, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
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
        server = await serve(APP)
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
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Issue 19 item 9: a head that keeps adding header lines is refused (431) as soon as it
    passes the cap, without waiting for its end or the handshake deadline."""
    with trio.fail_after(60):
        server = await serve(APP, max_request_headers=10)
        client = await server.connect_memory()
        await client.send_all(b"GET /app HTTP/1.1\r\n")
        t0 = trio.current_time()
        for i in range(11):
            await client.send_all(b"X-%d: 1\r\n" % i)
            await trio.sleep(0.1)
        response = await read_response(client)
        assert response.status == 431
        assert trio.current_time() - t0 == pytest.approx(1.1, abs=0.01)
