"""Graceful drain for deploys (FM-37)."""

from __future__ import annotations

import trio
import trio.testing

from jambonz_trio import Call, CallConfig, JambonzServer, ServerConfig, serve_jambonz
from jambonz_trio.verbs import Say

from .helpers import RawClient, raw_client
from .test_call_engine import new_call


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
                client = await _enter(inner, cm)
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


async def _enter(nursery: trio.Nursery, cm: object) -> RawClient:
    from .test_call_engine import inner_enter

    return await inner_enter(nursery, cm)
