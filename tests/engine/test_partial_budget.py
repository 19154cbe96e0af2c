"""FU-2: a server-wide bound on the bytes held in unfinished inbound messages.

Before, every socket could hold ``max_inbound_bytes`` (1 MiB) of a message it never finished,
so ``max_connections`` (10,000) sockets could pin ~10 GiB. Now bytes beyond each socket's
first 64 KiB draw on ``ServerConfig.max_partial_message_bytes``, shared by all sockets: a
socket whose next piece does not fit is closed with 1009, and a message up to 64 KiB never
draws on it. Several sockets over memory streams, one server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from jambonz_trio import Call, JambonzServer, ServerConfig, serve_jambonz
from jambonz_trio._websocket import FREE_PARTIAL_BYTES
from jambonz_trio.verbs import Say
from tests.reliability.helpers import frame

from .helpers import SESSION_DATA, RawClient, raw_client

KIB = 1024
BUDGET = 256 * KIB


async def _server(nursery: trio.Nursery, seen: dict[str, list[Any]]) -> JambonzServer:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            seen.setdefault(call.call_sid or "", []).append(event)

    config = ServerConfig(max_partial_message_bytes=BUDGET)
    server: JambonzServer = await nursery.start(partial(serve_jambonz, app, config=config))
    return server


@asynccontextmanager
async def _calls(server: JambonzServer, *sids: str) -> AsyncIterator[dict[str, RawClient]]:
    async with AsyncExitStack() as stack:
        clients: dict[str, RawClient] = {}
        for sid in sids:
            client = await stack.enter_async_context(raw_client(server))
            await client.send("session:new", f"{sid}-m", SESSION_DATA, call_sid=sid)
            assert (await client.receive() or {}).get("type") == "ack"
            await client.answer_receipt()
            clients[sid] = client
        yield clients


def _status(sid: str, pad: int) -> bytes:
    """A ``call:status`` of about ``pad`` bytes, as UTF-8."""
    data = {"call_status": "ringing", "pad": "x" * pad}
    text = json.dumps({"type": "call:status", "msgid": f"{sid}-s", "call_sid": sid, "data": data})
    return text.encode()


async def _settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


def _held(server: JambonzServer) -> int:
    return server._reassembly.held


async def test_fu2_the_budget_is_shared_and_refuses_the_socket_that_would_exceed_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    seen: dict[str, list[Any]] = {}
    server = await _server(nursery, seen)
    async with _calls(server, "a", "b", "c", "d") as calls:
        big = _status("x", 900 * KIB)
        # a and b: 64 KiB free + 128 KiB from the budget each, and never finish
        for sid in ("a", "b"):
            await calls[sid].stream.send_all(frame(0x1, big[: FREE_PARTIAL_BYTES + 128 * KIB], fin=False))
        await _settle()
        assert _held(server) == BUDGET
        # c: its free 64 KiB pass; one byte more does not fit: closed with 1009
        await calls["c"].stream.send_all(frame(0x1, big[:FREE_PARTIAL_BYTES], fin=False))
        await _settle()
        assert _held(server) == BUDGET
        await calls["c"].stream.send_all(
            frame(0x0, big[FREE_PARTIAL_BYTES : FREE_PARTIAL_BYTES + 1], fin=False)
        )
        assert await calls["c"].receive() is None
        assert calls["c"].close_code == 1009
        assert calls["c"].close_reason == "too many unfinished messages on the server"
        # d: a normal-sized message (60 KiB in 60 fragments) is never refused, budget full or not
        normal = _status("d", 60 * KIB)
        pieces = [normal[i : i + KIB] for i in range(0, len(normal), KIB)]
        blob = frame(0x1, pieces[0], fin=False)
        blob += b"".join(frame(0x0, p, fin=False) for p in pieces[1:-1]) + frame(0x0, pieces[-1])
        await calls["d"].stream.send_all(blob)
        await _settle()
        assert [len(e.data["pad"]) for e in seen["d"]] == [60 * KIB]
        # a finishes its message: what it drew goes back to the budget
        rest = big[FREE_PARTIAL_BYTES + 128 * KIB :]
        await calls["a"].stream.send_all(frame(0x0, rest))
        await _settle()
        assert len(seen["a"]) == 1 and _held(server) == BUDGET - 128 * KIB
        # b drops TCP: its share comes back too
        await calls["b"].drop()
        await _settle()
        assert _held(server) == 0


async def test_fu2_every_way_a_socket_ends_returns_its_share(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The peer's Close, a message over ``max_inbound_bytes``, a frame wsproto refuses, and
    a newer socket taking the call over (the old one's reader is cancelled, never sees an end)
    each give back what their unfinished message drew."""
    seen: dict[str, list[Any]] = {}
    server = await _server(nursery, seen)
    big = _status("x", 2 * 1024 * KIB)
    head = frame(0x1, big[: FREE_PARTIAL_BYTES + 60 * KIB], fin=False)
    sids = ("close", "oversize", "bad", "replaced")
    async with _calls(server, *sids) as calls:
        for client in calls.values():
            await client.stream.send_all(head)
        await _settle()
        assert _held(server) == 4 * 60 * KIB
        await calls["close"].close(4000)
        await calls["oversize"].stream.send_all(frame(0x0, big[len(head) : 1024 * KIB + 1], fin=False))
        await calls["bad"].stream.send_all(b"\x83\x80\x00\x00\x00\x00")  # opcode 3 is reserved
        for sid, code in (("close", 4000), ("oversize", 1009), ("bad", 1002)):
            with trio.fail_after(10):
                while await calls[sid].receive() is not None:
                    pass
            assert calls[sid].close_code == code, (sid, calls[sid].close_code)
        await _settle()
        assert _held(server) == 60 * KIB
        async with raw_client(server) as newer:
            data = {**SESSION_DATA, "call_sid": "replaced"}
            await newer.send("session:reconnect", "r1", data, call_sid="replaced")
            assert (await newer.receive() or {}).get("type") == "ack"
            await _settle()
            assert _held(server) == 0


def test_fu2_default_budget_and_validation() -> None:
    assert ServerConfig().max_partial_message_bytes == 64 * 1024 * KIB
    with pytest.raises(ValueError, match="max_partial_message_bytes"):
        ServerConfig(max_partial_message_bytes=-1)
