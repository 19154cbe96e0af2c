"""FM-02 (reliability.md F8): plain HTTP on the websocket port gets a fast answer (health,
OPTIONS, 426/400) and its resources are freed at once, not at the handshake deadline."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from jambonz_trio import Route
from tests.helpers import Serve

from .helpers import (
    UPGRADE,
    build_request,
    errors,
    exchange,
    exchange_memory,
    make_handler,
    read_to_eof,
    settle,
)

APP = Route(path="/app", handler=make_handler("app"))


async def test_fm02_health_get(serve: Serve) -> None:
    """FM-02: GET /healthz -> 200 "ok"."""
    with trio.fail_after(10):
        server = await serve(APP)
        response = await exchange(server.port, build_request(b"/healthz", headers=UPGRADE[:1]))
        assert response.status == 200
        assert response.body.strip() == b"ok"
        assert response.get("Content-Length") == [str(len(response.body))]
        assert response.get("Connection") == ["close"]


async def test_fm02_health_head(serve: Serve) -> None:
    """FM-02: HEAD /healthz -> 200 with no body."""
    with trio.fail_after(10):
        server = await serve(APP)
        request = build_request(b"/healthz", method=b"HEAD", headers=UPGRADE[:1])
        response = await exchange(server.port, request)
        assert response.status == 200
        assert response.body == b""


async def test_fm02_health_path_is_configurable(serve: Serve) -> None:
    """FM-02: ServerConfig.health_path moves the check; None turns it off (-> 426)."""
    with trio.fail_after(10):
        moved = await serve(APP, health_path="/lb")
        assert (await exchange(moved.port, build_request(b"/lb", headers=UPGRADE[:1]))).status == 200
        off = await serve(APP, health_path=None)
        response = await exchange(off.port, build_request(b"/healthz", headers=UPGRADE[:1]))
        assert response.status == 426


async def test_fm02_options(serve: Serve) -> None:
    """FM-02: OPTIONS /app (the jambonz portal's discovery) -> 204 with Allow."""
    with trio.fail_after(10):
        server = await serve(APP)
        response = await exchange(server.port, build_request(b"/app", method=b"OPTIONS", headers=UPGRADE[:1]))
        assert response.status == 204
        assert "GET" in response.get("Allow")[0]
        assert response.body == b""


async def test_fm02_options_204_has_no_content_length(serve: Serve) -> None:
    """FM-02: a 204 must not carry Content-Length."""
    with trio.fail_after(10):
        server = await serve(APP)
        response = await exchange(server.port, build_request(b"/app", method=b"OPTIONS", headers=UPGRADE[:1]))
        assert response.status == 204
        assert response.get("Content-Length") == []


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (build_request(b"/", headers=UPGRADE[:1]), 426),
        (build_request(b"/app", headers=UPGRADE[:1]), 426),
        (build_request(b"/app", method=b"POST", headers=UPGRADE[:1]), 426),
        (b"GET /app HTTP/1.0\r\n\r\n", 426),
        (build_request(b"/app", version=b"HTTP/1.0", drop=[b"Host"]), 400),
        (build_request(b"/app", drop=[b"Host"]), 400),  # HTTP/1.1 requires Host
        (build_request(b"/app", method=b"POST"), 405),
        (build_request(b"/app", drop=[b"Sec-WebSocket-Version"]), 426),
        (build_request(b"/app", replace=[(b"Sec-WebSocket-Version", b"8")]), 426),
        (build_request(b"/app", drop=[b"Sec-WebSocket-Key"]), 426),
        (build_request(b"/app", replace=[(b"Sec-WebSocket-Key", b"short")]), 400),
        (build_request(b"/app", replace=[(b"Sec-WebSocket-Key", b"AAAAAAAAAAAAAAAAAAAAAAAAAAAA")]), 400),
        (b"\r\n\r\n", 400),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
    ],
    ids=[
        "get-root",
        "get-app",
        "post-app",
        "http10-no-host",
        "http10-upgrade-no-host",
        "http11-upgrade-no-host",
        "upgrade-with-post",
        "no-ws-version",
        "ws-version-8",
        "no-ws-key",
        "ws-key-not-base64-of-16",
        "ws-key-21-bytes",
        "empty-head",
        "garbage",
    ],
)
async def test_fm02_non_upgrade_answers(
    serve: Serve, caplog: pytest.LogCaptureFixture, request_bytes: bytes, status: int
) -> None:
    """FM-02: non-upgrade or incomplete-upgrade requests get a 4xx and the socket closes."""
    with trio.fail_after(10):
        server = await serve(APP)
        response = await exchange(server.port, request_bytes)
        assert response.status == status
        if status == 426:
            assert response.get("Upgrade") == ["websocket"] or response.get("Sec-WebSocket-Version") == ["13"]
        assert response.get("Connection") == ["close"]
        assert errors(caplog) == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        build_request(b"/healthz", headers=UPGRADE[:1]),
        build_request(b"/healthz", method=b"HEAD", headers=UPGRADE[:1]),
        build_request(b"/app", method=b"OPTIONS", headers=UPGRADE[:1]),
        build_request(b"/", headers=UPGRADE[:1]),
        b"GET / HTTP/1.0\r\n\r\n",
        build_request(b"/nowhere"),
        build_request(b"/app", drop=[b"Sec-WebSocket-Protocol"]),
    ],
    ids=["health", "head", "options", "get", "http10", "404", "no-subprotocol"],
)
async def test_fm02_answered_and_freed_without_time_passing(
    serve: Serve, autojump_clock: trio.testing.MockClock, request_bytes: bytes
) -> None:
    """FM-02 (F8): the answer and the close come at virtual time 0, not at the deadline."""
    with trio.fail_after(30):
        server = await serve(APP)
        t0 = trio.current_time()
        response, client = await exchange_memory(server, request_bytes)
        assert response.status is not None
        assert response.status != 101
        await read_to_eof(client)
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == t0
        stats = server.statistics()
        assert (stats.connections, stats.pending_handshakes) == (0, 0)


async def test_fm02_200_health_checks_leave_nothing_behind(serve: Serve) -> None:
    """FM-02: 200 health GETs in a row; afterwards no connection and no extra task is left."""
    with trio.fail_after(15):
        server = await serve(APP)
        await trio.testing.wait_all_tasks_blocked()
        baseline = trio.lowlevel.current_statistics().tasks_living
        request = build_request(b"/healthz", headers=UPGRADE[:1])
        for _ in range(200):
            response = await exchange(server.port, request)
            assert response.status == 200

        def clean() -> bool:
            return (
                server.statistics().connections == 0
                and trio.lowlevel.current_statistics().tasks_living == baseline
            )

        assert await settle(clean, rounds=50), (
            server.statistics(),
            trio.lowlevel.current_statistics().tasks_living,
            baseline,
        )
        assert server.statistics().refused == 0  # 200s are answers, not refusals
