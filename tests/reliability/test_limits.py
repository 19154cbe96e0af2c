"""Memory and size limits on real sockets: FM-14 (oversize inbound, counted in bytes, memory
bounded even for a frame that announces 1 GiB), S-5 (message size limits and the event queue)
and S-8 (per-connection memory bound under an adversarial authenticated call).

RSS is measured on a server in a subprocess (``/proc/PID/status``: VmRSS / VmHWM), so the test's
own clients do not blur it.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
import trio

from jambonz_trio import BasicAuth, JambonzServer, Route, ServerConfig, serve_jambonz

from .helpers import PASSWORD, USER, Client, Latencies, connect_call, frame, hook_loop
from .procs import ServerProcess, server_process
from .test_chaos import app

KIB = 1024
MIB = 1024 * 1024


async def _start(nursery: trio.Nursery, **config: Any) -> JambonzServer:
    route = Route(path="/app", handler=app, auth=BasicAuth(username=USER, password=PASSWORD))
    server: JambonzServer = await nursery.start(
        partial(serve_jambonz, route, host="127.0.0.1", port=0, config=ServerConfig(**config))
    )
    return server


def _hook_text(sid: str, msgid: str, filler: str, size: int) -> str:
    """A ``verb:hook`` whose UTF-8 encoding is exactly ``size`` bytes: as many ``filler``
    characters as fit, padded with ASCII."""
    base = json.dumps({"type": "verb:hook", "msgid": msgid, "hook": "/g", "call_sid": sid, "data": {"t": ""}})
    room = size - len(base.encode())
    unit = len(filler.encode())
    body = filler * (room // unit) + "a" * (room % unit)
    text = base.replace('"t": ""', '"t": "' + body + '"', 1)
    assert len(text.encode()) == size
    return text


async def _close_code(client: Client) -> int | None:
    """The close code the server sent; 1006 if the connection was reset before our kernel
    delivered the Close frame (the server aborts after the Close, possibly with our unread
    bytes still in its buffer)."""
    with trio.fail_after(5):
        try:
            while await client.receive() is not None:
                pass
        except trio.BrokenResourceError:
            return 1006
    return client.close_code


async def _send_big(client: Client, text: str) -> None:
    try:
        await client.send_text(text)
    except trio.BrokenResourceError:
        pass  # cut off while sending


def _closed_1009(code: int | None, caplog: pytest.LogCaptureFixture) -> bool:
    """1009 seen by the client, or a reset after the server logged its 1009 close."""
    logged = any("closing with 1009" in r.getMessage() for r in caplog.records)
    return code == 1009 or (code == 1006 and logged)


# -- FM-14 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filler", "size", "closed"),
    [
        ("a", 24 * KIB, False),  # exactly the limit: accepted
        ("a", 24 * KIB + 1, True),  # one byte over
        ("\U0001f600", 24 * KIB, False),  # 4-byte characters up to the limit
        ("\U0001f600", 24 * KIB + 1, True),  # ~6,100 characters, 24 KiB + 1 bytes (F7)
    ],
    ids=["ascii-at-limit", "ascii-limit+1", "emoji-at-limit", "emoji-limit+1"],
)
async def test_fm14_limit_counts_bytes_real_sockets(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, filler: str, size: int, closed: bool
) -> None:
    """FM-14 / F7 over TCP with a 24 KiB limit: the limit is in UTF-8 bytes, not characters."""
    server = await _start(nursery, max_inbound_bytes=24 * KIB)
    client = await connect_call(server.port, "sid-1")
    try:
        await _send_big(client, _hook_text("sid-1", "big", filler, size))
        if closed:
            assert _closed_1009(await _close_code(client), caplog)
        else:
            with trio.fail_after(5):
                reply = await client.receive()
            assert reply is not None and reply["msgid"] == "big"
    finally:
        await client.drop()


async def test_fm14_fifteen_thousand_emoji_real_sockets(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """FM-14 / F7: 15,000 x U+1F600 = 60,000 bytes but 15,000 characters: 1009 at 24 KiB."""
    server = await _start(nursery, max_inbound_bytes=24 * KIB)
    client = await connect_call(server.port, "sid-1")
    try:
        text = json.dumps(
            {
                "type": "verb:hook",
                "msgid": "e",
                "hook": "/g",
                "call_sid": "sid-1",
                "data": {"t": "\U0001f600" * 15_000},
            },
            ensure_ascii=False,
        )
        await _send_big(client, text)
        assert _closed_1009(await _close_code(client), caplog)
    finally:
        await client.drop()


async def _baseline(server: ServerProcess) -> dict[str, Any]:
    warm = await connect_call(server.port, "warm-up")
    await warm.send("verb:hook", "w", {}, hook="/w", call_sid="warm-up")
    await warm.receive()
    await warm.drop()
    await trio.sleep(0.2)
    return await server.stats()


@pytest.mark.parametrize("opcode", [0x1, 0x2], ids=["text", "binary"])
async def test_fm14_one_gib_length_header_memory_bounded(opcode: int) -> None:
    """FM-14: a frame header announcing 1 GiB, then a stream of payload: the server closes
    with 1009 after about the limit (1 MiB) and its peak RSS grows by less than 2 x limit."""
    limit = MIB
    async with server_process({"server": {"max_inbound_bytes": limit}}) as server:
        before = await _baseline(server)
        client = await connect_call(server.port, "giant")
        sent = 0
        try:
            await client.stream.send_all(frame(opcode, b"", declared=1 << 30))
            chunk = b"a" * (64 * KIB)
            with trio.move_on_after(10):
                while sent < 64 * MIB:  # bounded: far past the limit, far below 1 GiB
                    await client.stream.send_all(chunk)
                    sent += len(chunk)
        except trio.BrokenResourceError:
            pass
        code = await _close_code(client)
        await client.drop()
        after = await server.stats()
    growth = (after["hwm_kb"] - before["hwm_kb"]) * KIB
    print(f"FM-14: sent {sent / MIB:.2f} MiB of a 1 GiB frame; peak RSS +{growth / MIB:.2f} MiB")
    assert code == 1009
    assert sent < 8 * MIB  # cut off early, not after reading a large part of the frame
    assert growth < 2 * limit


# -- S-5 -------------------------------------------------------------------------------------


async def _flood(port: int, sid: str, count: int, size: int) -> tuple[Client, int]:
    """An authenticated call that sends ``count`` ``call:status`` frames of ``size`` bytes as
    fast as it can and never reads."""
    client = await connect_call(port, sid)
    body: dict[str, Any] = {
        "type": "call:status",
        "msgid": "x",
        "call_sid": sid,
        "data": {"call_status": "in-progress"},
    }
    filler = size - len(json.dumps({**body, "data": {**body["data"], "blob": ""}}).encode())
    payload = json.dumps({**body, "data": {**body["data"], "blob": "a" * filler}}).encode()
    assert len(payload) == size
    sent = 0
    try:
        for _ in range(count):
            await client.stream.send_all(frame(0x1, payload))
            sent += 1
    except trio.BrokenResourceError:
        pass
    return client, sent


async def test_s5_default_size_limits(nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    """S-5: defaults are 1 MiB inbound (bytes) and 24,576 bytes outbound (jambonz's
    maxPayload); a 1 MiB frame is accepted and 1 MiB + 1 closes with 1009 (over TCP)."""
    config = ServerConfig()
    assert config.max_inbound_bytes == MIB
    assert config.call.max_outbound_bytes == 24_576
    server = await _start(nursery)
    client = await connect_call(server.port, "sid-ok")
    try:
        await client.send_text(_hook_text("sid-ok", "at-limit", "a", MIB))
        with trio.fail_after(10):
            reply = await client.receive()
        assert reply is not None and reply["msgid"] == "at-limit"
    finally:
        await client.drop()
    client = await connect_call(server.port, "sid-over")
    try:
        await _send_big(client, _hook_text("sid-over", "over", "a", MIB + 1))
        assert _closed_1009(await _close_code(client), caplog)
    finally:
        await client.drop()


async def test_s5_event_queue_bounded_in_bytes() -> None:
    """S-5: the event queue must be bounded in bytes as well as in count. With the defaults a
    slow app and a peer sending 40 x 1 MiB events must not cost the server ~40 MiB."""
    async with server_process({"app": "mixed"}) as server:
        before = await _baseline(server)
        client, sent = await _flood(server.port, "deaf-1", 40, MIB)
        await trio.sleep(0.5)
        after = await server.stats()
        await client.drop()
    growth = (after["rss_kb"] - before["rss_kb"]) * KIB
    print(f"S-5: {sent} x 1 MiB queued for a deaf app: RSS +{growth / MIB:.1f} MiB")
    assert growth < 16 * MIB


# -- S-8 -------------------------------------------------------------------------------------

#: trio-websocket's own queue in front of ours (``_server.py``: message_queue_size=4).
WS_QUEUE = 4


def s8_bound(event_queue_size: int, max_inbound: int) -> int:
    """The documented per-connection inbound bound: every queued event and every message
    buffered below it at its maximum size, plus the one being read; x2 for the parsed copy."""
    return (event_queue_size + WS_QUEUE + 1) * max_inbound * 2


async def test_s8_adversarial_call_memory_and_neighbours() -> None:
    """S-8: one authenticated peer sends max-size frames as fast as it can and never reads,
    to an app that never drains its events. The server's peak RSS stays under the documented
    bound, and a neighbouring call keeps getting its acks promptly."""
    max_inbound, queue = 256 * KIB, 16
    config = {
        "app": "mixed",
        "server": {"max_inbound_bytes": max_inbound},
        "call": {"event_queue_size": queue, "ping_interval": 30},
    }
    lat = Latencies()
    lost: list[str] = []
    async with server_process(config) as server:
        before = await _baseline(server)
        neighbour = await connect_call(server.port, "ok-1")
        stop = trio.Event()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(hook_loop, neighbour, "ok-1", stop, lat, lost, pause=0.02))
            with trio.fail_after(60):
                attacker, sent = await _flood(server.port, "deaf-attacker", 150, max_inbound)
            await trio.sleep(0.5)
            stop.set()
        after = await server.stats()
        await attacker.drop()
        await neighbour.drop()
    growth = (after["hwm_kb"] - before["hwm_kb"]) * KIB
    bound = s8_bound(queue, max_inbound)
    print(
        f"S-8: {sent} x {max_inbound // KIB} KiB from one peer; peak RSS +{growth / MIB:.1f} MiB "
        f"(bound {bound / MIB:.1f} MiB); neighbour acks {lat.summary()}"
    )
    assert sent == 150
    assert growth < bound
    assert lost == []
    assert lat.pct(99) < 1.0
