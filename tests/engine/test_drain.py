"""Graceful drain for deploys (FM-37)."""

from __future__ import annotations

import trio
import trio.testing

from jambonz_trio import Call, CallConfig, JambonzServer, ServerConfig, serve_jambonz
from jambonz_trio.verbs import Say
from tests.helpers import answer_and_wait

from .helpers import RawClient, inner_enter, new_call, raw_client


async def test_fm37_drain_closes_remaining_calls_with_1012(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ended_normally: list[str] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        if call.call_sid == "short":
            await trio.sleep(5)  # ends within the grace period
            ended_normally.append("short")
            return
        await call.wait_closed()

    returned = trio.Event()
    codes: list[int | None] = []
    async with trio.open_nursery() as nursery:

        async def run_server(task_status: trio.TaskStatus[JambonzServer]) -> None:
            # clients here only read at the end, so keepalive must not cut them first
            config = ServerConfig(call=CallConfig(ping_interval=100))
            await serve_jambonz(app, config=config, task_status=task_status)
            returned.set()

        server: JambonzServer = await nursery.start(run_server)
        clients: list[RawClient] = []
        async with trio.open_nursery() as inner:
            for sid in ["short", *[f"long-{i}" for i in range(50)]]:
                cm = raw_client(server)
                client = await inner_enter(inner, cm)
                await new_call(client, sid=sid)
                clients.append(client)
            assert len(server.calls) == 51
            t0 = trio.current_time()
            nursery.start_soon(server.drain, 30.0)
            await trio.testing.wait_all_tasks_blocked()
            assert server.statistics().connections == 51
            # no new connections are admitted while draining
            late = await server.connect_memory()
            with trio.fail_after(1):
                assert (await late.receive_some(100)).startswith(b"HTTP/1.1 503")
            for client in clients:
                assert await client.receive() is None
                codes.append(client.close_code)
            with trio.fail_after(40):
                await returned.wait()
            assert 30.0 <= trio.current_time() - t0 <= 31.0
            inner.cancel_scope.cancel()
    assert ended_normally == ["short"]
    assert codes == [1000] + [1012] * 50


async def test_fm37_a_cancelled_server_closes_its_calls_with_1012(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Review r2: a cancelled handler closes with 1012 (jambonz reconnects), not 1000."""
    server_scope = trio.CancelScope()

    async def run_server(outer: trio.Nursery, task_status: trio.TaskStatus[JambonzServer]) -> None:
        with server_scope:
            # connections in a nursery that outlives the server's: the handlers are cancelled
            # while their sockets still work, so the close code they choose reaches jambonz
            await serve_jambonz(answer_and_wait, handler_nursery=outer, task_status=task_status)

    with trio.fail_after(30):
        async with trio.open_nursery() as outer:
            server: JambonzServer = await outer.start(run_server, outer)
            client = RawClient(await server.connect_memory())
            await client.handshake("/")
            await new_call(client)
            call = server.calls["sid-1"]
            server_scope.cancel()  # e.g. SIGTERM handled without drain()
            assert await client.receive() is None
            outer.cancel_scope.cancel()
    assert client.close_code == 1012  # old: 1000, "hang up, never reconnect"
    assert call.close_info is not None
    assert (call.close_info.code, call.close_info.by) == (1012, "server")
