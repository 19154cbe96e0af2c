"""Issue 17 item 1: Prometheus metrics on the server's own port, scraped over real sockets
(or memory streams, for virtual time) and parsed with prometheus-client's parser after calls
placed through the fake jambonz."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import trio
import trio.testing

from jambonz_trio import AckOutcome, BasicAuth, Call, CommandQueueFull, Route, ServerConfig, VerbHook
from jambonz_trio.commands import RedirectCommand
from jambonz_trio.testing import AckAbandoned, CallData, open_fake_call, tcp_connector
from jambonz_trio.verbs import Say
from tests.admission.helpers import UPGRADE, build_request, exchange, settle
from tests.helpers import Serve, answering, basic_headers

from .helpers import scrape, scrape_memory, scrape_request, value

APP = Route(path="/app", handler=answering)


async def test_scraped_over_tcp_after_real_calls(serve: Serve) -> None:
    """Calls placed over TCP through the fake: started / ended counters, acks by outcome, the
    ack-latency histogram and the live-calls gauge, all parsed from a real scrape."""
    with trio.fail_after(20):
        server = await serve(APP, metrics=True)
        url = f"ws://127.0.0.1:{server.port}/app"
        for n in range(3):
            async with open_fake_call(tcp_connector(url), call=CallData(call_sid=f"tcp-{n}")) as fc:
                await fc.start()
                await fc.hook("/menu")
                live = await scrape(server)
                assert value(live, "jambonz_trio_calls_live") == 1
                await fc.hangup()
        assert await settle(lambda: server.statistics().calls == 0)
        samples = await scrape(server)
    assert value(samples, "jambonz_trio_calls_started_total") == 3
    assert value(samples, "jambonz_trio_calls_ended_total", by="jambonz") == 3
    assert value(samples, "jambonz_trio_calls_ended_total", by="app") == 0
    assert value(samples, "jambonz_trio_calls_live") == 0
    assert value(samples, "jambonz_trio_acks_total", outcome="acked") == 6
    assert value(samples, "jambonz_trio_acks_total", outcome="watchdog") == 0
    assert value(samples, "jambonz_trio_ack_latency_seconds_count", by="app") == 6
    assert value(samples, "jambonz_trio_ack_latency_seconds_bucket", by="app", le="+Inf") == 6
    assert value(samples, "jambonz_trio_ack_latency_seconds_bucket", by="app", le="1.0") == 6
    assert value(samples, "jambonz_trio_reconnects_total") == 0
    assert value(samples, "jambonz_trio_calls_relayed_total") == 0
    assert value(samples, "jambonz_trio_partial_message_limit_bytes") == 64 * 1024 * 1024
    # the scrape itself is a connection of its own, answered and closed
    assert value(samples, "jambonz_trio_connections") == 1


async def test_off_by_default(serve: Serve) -> None:
    """Without ``metrics=True`` there is no /metrics (a plain GET there is not an upgrade)."""
    with trio.fail_after(10):
        server = await serve(APP)
        response = await exchange(server.port, scrape_request())
    assert response.status == 426
    assert server.metrics_registry is None


def test_off_imports_neither_prometheus_nor_opentelemetry() -> None:
    """A server with the default config imports neither prometheus-client nor OpenTelemetry
    (run in a fresh interpreter: this one has both loaded)."""
    code = textwrap.dedent(
        """
        import sys, trio
        from jambonz_trio import serve_jambonz
        from jambonz_trio.testing import open_fake_call
        async def app(call):
            await call.ack(call.session, [])
        async def main():
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve_jambonz, app)
                async with open_fake_call(server.connect_memory, strict=False) as fc:
                    try:
                        await fc.start()
                    except Exception:
                        pass
                nursery.cancel_scope.cancel()
        trio.run(main)
        print(sorted(m for m in sys.modules if m.startswith(("prometheus_client", "opentelemetry"))))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


async def test_scrape_needs_the_routes_credentials(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """With Basic auth on a route, a scrape needs credentials a route accepts (401 and a
    challenge otherwise); HEAD answers without a body; the password is never logged."""
    caplog.set_level(logging.DEBUG)
    routes = [
        Route(path="/a", handler=answering, auth=BasicAuth(username="ua", password="pa-s3cret")),
        Route(path="/b", handler=answering, auth=BasicAuth(username="ub", password="pb-s3cret")),
    ]
    with trio.fail_after(10):
        server = await serve(routes, metrics=True)
        none = await exchange(server.port, scrape_request())
        wrong = await exchange(server.port, scrape_request(auth=("ua", "pb-s3cret")))
        first = await scrape(server, auth=("ua", "pa-s3cret"))
        second = await scrape(server, auth=("ub", "pb-s3cret"))
        head = await exchange(
            server.port,
            build_request(
                b"/metrics", method=b"HEAD", headers=[(b"Host", b"x"), *basic_headers("ub", "pb-s3cret")]
            ),
        )
    for refused in (none, wrong):
        assert refused.status == 401
        assert refused.get("WWW-Authenticate")
        assert b"jambonz_trio" not in refused.body
    assert value(first, "jambonz_trio_calls_started_total") == 0
    assert value(second, "jambonz_trio_refused_total", status="401", reason="bad credentials") == 2
    assert head.status == 200 and head.body == b""
    assert "s3cret" not in caplog.text


async def test_refusals_are_counted_by_fixed_reasons(serve: Serve) -> None:
    """Refused upgrades by status and reason; a reason never carries the peer's text (the
    paths asked for are not in the scrape), so the number of series stays bounded."""
    with trio.fail_after(10):
        server = await serve(APP, metrics=True)
        for n in range(5):
            assert (await exchange(server.port, build_request(f"/evil-{n}".encode()))).status == 404
        assert (await exchange(server.port, build_request(b"/app", headers=UPGRADE[:1]))).status == 426
        bad_proto = build_request(b"/app", replace=[(b"Sec-WebSocket-Protocol", b"evil-proto")])
        assert (await exchange(server.port, bad_proto)).status == 400
        response = await exchange(server.port, scrape_request())
        samples = await scrape(server)
    assert (
        value(samples, "jambonz_trio_refused_total", status="404", reason="no application at this path") == 5
    )
    assert value(samples, "jambonz_trio_refused_total", status="426", reason="not a WebSocket upgrade") == 1
    assert value(samples, "jambonz_trio_refused_total", status="400", reason="subprotocol not offered") == 1
    text = response.body.decode()
    assert "evil" not in text
    assert server.statistics().refused == 7


async def test_watchdog_late_acks_and_commands(serve: Serve, autojump_clock: trio.testing.MockClock) -> None:
    """Acks by outcome (app, watchdog, late redirect, dropped), the watchdog's latency in the
    histogram, and commands by outcome, on virtual time."""
    outcomes: list[AckOutcome] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            if isinstance(event, VerbHook):
                await trio.sleep(4.5)  # past the 4 s ack deadline: the watchdog answered
                outcomes.append(await call.ack(event, [Say(text="late")] if event.hook == "/late" else []))
                await call.send_command(RedirectCommand(verbs=(Say(text="more"),)))

    server = await serve(Route(path="/app", handler=app), metrics=True)
    with trio.fail_after(60):
        async with open_fake_call(server.connect_memory, path="/app") as fc:
            await fc.start()
            ack = await fc.hook("/late")
            assert ack.verbs == []  # the watchdog's empty answer
            await fc.expect_command("redirect")  # the late answer
            await fc.expect_command("redirect")  # the app's own command
            await fc.hook("/empty")
            await fc.expect_command("redirect")
            await fc.hangup()
        assert await settle(lambda: server.statistics().calls == 0)
        samples = await scrape_memory(server)
    assert outcomes == [AckOutcome.REDIRECTED, AckOutcome.DROPPED]
    assert value(samples, "jambonz_trio_acks_total", outcome="acked") == 1
    assert value(samples, "jambonz_trio_acks_total", outcome="watchdog") == 2
    assert value(samples, "jambonz_trio_acks_total", outcome="redirected") == 1
    assert value(samples, "jambonz_trio_acks_total", outcome="dropped") == 1
    assert value(samples, "jambonz_trio_ack_latency_seconds_count", by="watchdog") == 2
    assert value(samples, "jambonz_trio_ack_latency_seconds_bucket", by="watchdog", le="3.0") == 0
    assert value(samples, "jambonz_trio_ack_latency_seconds_bucket", by="watchdog", le="4.5") == 2
    assert value(samples, "jambonz_trio_ack_latency_seconds_sum", by="watchdog") == pytest.approx(8.0)
    # the late answer went out as a redirect too, but it is counted as an ack, not a command
    assert value(samples, "jambonz_trio_commands_total", command="redirect", outcome="sent") == 2


async def test_reconnects_abandoned_requests_overflows_and_full_command_queues(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """A drop with a hook in flight (abandoned), jambonz's reconnect, a command refused by
    the full disconnected queue, and events dropped from a full event queue."""
    results: list[str] = []
    gate = trio.Event()

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        await gate.wait()  # not reading events: the queue (size 2) overflows
        try:
            await call.send_command(RedirectCommand(verbs=(Say(text="x"),)))
        except CommandQueueFull:
            results.append("queue_full")
        await call.wait_closed()

    server = await serve(
        Route(path="/app", handler=app),
        metrics=True,
        event_queue_size=2,
        max_queued_commands=0,
    )
    with trio.fail_after(60):
        async with open_fake_call(server.connect_memory, path="/app", strict=False) as fc:
            await fc.start()
            for _ in range(4):
                await fc.status("in-progress")

            async def pending_hook() -> None:
                with pytest.raises(AckAbandoned):
                    await fc.hook("/pending")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pending_hook)
                await fc.wait_idle(0.1)
                await fc.drop(reconnect=False)
                gate.set()
                await fc.wait_idle(0.5)
                nursery.cancel_scope.cancel()
            await fc.reconnect()
            await fc.hangup()
        assert await settle(lambda: server.statistics().calls == 0)
        samples = await scrape_memory(server)
    assert results == ["queue_full"]
    assert value(samples, "jambonz_trio_reconnects_total") == 1
    assert value(samples, "jambonz_trio_requests_abandoned_total") == 1
    assert value(samples, "jambonz_trio_event_queue_overflows_total") >= 2
    assert value(samples, "jambonz_trio_commands_total", command="redirect", outcome="queue_full") == 1


async def test_partial_message_budget_in_statistics_and_metrics(serve: Serve) -> None:
    """ServerStatistics and the scrape show the server-wide partial-message budget: its
    limit, the bytes held now, and the sockets refused for want of it."""
    from jambonz_trio._websocket import FREE_PARTIAL_BYTES
    from tests.engine.helpers import RawClient

    with trio.fail_after(20):
        server = await serve(APP, metrics=True, max_partial_message_bytes=1000)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        client = RawClient(stream)
        await client.handshake("/app")
        # one frame's header announcing more than the free 64 KiB plus the budget, then part
        # of its payload: the budget is exceeded and the socket is closed with 1009
        size = FREE_PARTIAL_BYTES + 5000
        header = bytes([0x81, 0xFF]) + size.to_bytes(8, "big") + b"\x00\x00\x00\x00"
        await stream.send_all(header + b"a" * (FREE_PARTIAL_BYTES + 2000))
        assert await client.receive() is None
        assert client.close_code == 1009
        await trio.aclose_forcefully(stream)
        stats = server.statistics()
        samples = await scrape(server)
    assert stats.partial_message_limit == 1000
    assert stats.partial_message_refusals == 1
    assert stats.partial_message_bytes == 0  # given back when the socket ended
    assert value(samples, "jambonz_trio_partial_message_refusals_total") == 1
    assert value(samples, "jambonz_trio_partial_message_bytes") == 0
    assert value(samples, "jambonz_trio_partial_message_limit_bytes") == 1000


def test_the_registry_can_be_exported_on_the_global_one() -> None:
    """docs/operations.md: a server's registry registered in prometheus-client's global one
    shows there too (and unregisters cleanly)."""
    from prometheus_client import REGISTRY, generate_latest

    from jambonz_trio._metrics import Metrics
    from jambonz_trio._server import ServerStatistics

    metrics = Metrics(lambda: ServerStatistics(connections=2, pending_handshakes=0, calls=1, refused=0))
    REGISTRY.register(metrics.registry)
    try:
        text = generate_latest(REGISTRY).decode()
    finally:
        REGISTRY.unregister(metrics.registry)
    assert "jambonz_trio_calls_live 1.0" in text
    assert "jambonz_trio_calls_live" not in generate_latest(REGISTRY).decode()


def test_metrics_config_is_checked() -> None:
    with pytest.raises(ValueError, match="metrics_path"):
        ServerConfig(metrics=True, metrics_path="metrics")
    with pytest.raises(ValueError, match="metrics_path"):
        ServerConfig(metrics=True, metrics_path="/healthz")
