"""Issue 19 item 10: an authenticated message flood must not starve accept() and handshakes.

A call's receive loop handles one message per scheduling turn (fairness), and past its inbound
budget (``CallConfig.inbound_rate`` / ``inbound_burst``) it stops reading for a while, so the
sender meets back-pressure. jambonz's own rates are never paced. All on memory streams and
virtual time: pacing shows up as virtual time passing, and nothing else makes it pass.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from jambonz_trio import Call, CallConfig, JambonzServer, ServerConfig, serve_jambonz
from jambonz_trio._call import engine_of
from jambonz_trio._pacing import TokenBucket, frame_cost
from jambonz_trio.verbs import Say
from tests.reliability.helpers import frame

from .helpers import SESSION_DATA, RawClient

PAUSED = "reading paused"


def _status(i: int, pad: int = 0) -> bytes:
    data = {"call_status": "in-progress", "sip_status": 200, "n": i, "pad": "x" * pad}
    text = json.dumps({"type": "call:status", "msgid": f"s{i}", "call_sid": "sid-1", "data": data})
    return frame(0x1, text.encode())


async def _server(
    nursery: trio.Nursery, call_config: CallConfig, seen: list[tuple[float, Any]]
) -> JambonzServer:
    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            seen.append((trio.current_time(), event))

    config = ServerConfig(call=call_config)
    server: JambonzServer = await nursery.start(partial(serve_jambonz, app, config=config))
    return server


async def _call(server: JambonzServer, *, lockstep: bool = False) -> tuple[RawClient, Call]:
    stream = await server.connect_memory(lockstep=lockstep)
    client = RawClient(stream)
    await client.handshake()
    await client.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
    ack = await client.receive()
    assert ack is not None and ack["type"] == "ack"
    await client.answer_receipt()  # the Pong jambonz's client sends as it reads the ack
    return client, next(iter(server.calls.values()))


async def test_i19_10_one_message_per_scheduling_turn(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """300 messages arriving in one chunk (~20 KB) are handled one per scheduling turn: between
    two turns of another task the call handles at most two (the order inside a trio batch
    varies), where it used to handle a whole 16 KiB read at once."""
    seen: list[tuple[float, Any]] = []
    server = await _server(nursery, CallConfig(ping_interval=1000, event_queue_size=1000), seen)
    client, call = await _call(server)
    await client.stream.send_all(b"".join(_status(i) for i in range(300)))
    steps: list[int] = []
    last = call.statistics().frames_received
    for _ in range(10_000):
        await trio.lowlevel.checkpoint()
        now = call.statistics().frames_received
        steps.append(now - last)
        last = now
        if now >= 300:
            break
    assert last == 300
    assert max(steps) <= 2, max(steps)


async def test_i19_10_a_flooding_call_is_paced_with_back_pressure(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Over its budget (here 100 tokens/s, bursts of 200) a call stops reading: 2,000 messages
    take ~18 s of (virtual) time instead of none, the sender's writes block meanwhile
    (lockstep stream: a write returns only once the server has read it), nothing is lost, and
    the pause is logged once."""
    seen: list[tuple[float, Any]] = []
    config = CallConfig(ping_interval=1000, inbound_rate=100, inbound_burst=200, event_queue_size=4000)
    server = await _server(nursery, config, seen)
    client, call = await _call(server, lockstep=True)
    t0 = trio.current_time()
    sent_at: list[float] = []

    async def flood() -> None:
        await client.stream.send_all(b"".join(_status(i) for i in range(2000)))
        sent_at.append(trio.current_time() - t0)

    nursery.start_soon(flood)
    await trio.sleep(5)
    processed = call.statistics().frames_received
    assert 200 + 100 * 5 - 2 <= processed <= 200 + 100 * 5 + 2, processed
    assert sent_at == []  # still blocked: back-pressure
    await trio.sleep_until(t0 + 17.5)
    assert call.statistics().frames_received < 2000
    await trio.sleep_until(t0 + 18.5)  # (2,000 - 200) / 100 per second = 18 s
    assert call.statistics().frames_received == 2000
    assert sent_at and sent_at[0] > 15
    await trio.testing.wait_all_tasks_blocked()
    assert [e.data["n"] for _, e in seen] == list(range(2000))  # nothing dropped or reordered
    assert caplog.text.count(PAUSED) == 1


async def test_i19_10_jambonz_rates_are_never_paced(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With the defaults, the busiest traffic jambonz sends is delivered at once: a burst of
    1,000 ~600-byte events (a reconnect flushing its queue, an LLM response streaming), then
    200 events/s for 10 s, then one 1 MiB message. No virtual time passes between a message
    and its delivery."""
    seen: list[tuple[float, Any]] = []
    server = await _server(nursery, CallConfig(ping_interval=1000, event_queue_size=2000), seen)
    client, _ = await _call(server)
    sent: list[float] = []
    t0 = trio.current_time()
    await client.stream.send_all(b"".join(_status(i, pad=500) for i in range(1000)))
    sent += [t0] * 1000
    for i in range(1000, 3000):
        await trio.sleep(0.005)
        sent.append(trio.current_time())
        await client.stream.send_all(_status(i, pad=500))
    await trio.sleep(0.005)
    sent.append(trio.current_time())
    await client.stream.send_all(_status(3000, pad=1024 * 1024 - 200))
    await trio.testing.wait_all_tasks_blocked()
    assert len(seen) == 3001
    assert max(at - sent[e.data["n"]] for at, e in seen) == 0.0
    assert PAUSED not in caplog.text


def test_i19_10_token_bucket() -> None:
    """The bucket: bursts up to ``burst``, ``rate`` a second after that, debt for a message
    bigger than what is left, never more than ``burst`` saved up."""
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert [bucket.spend(1, 0.0) for _ in range(20)] == [0.0] * 20
    assert bucket.spend(1, 0.0) == pytest.approx(0.1)
    assert bucket.spend(1, 0.1) == pytest.approx(0.1)  # the debt was waited off; one more
    assert bucket.spend(5, 100.0) == 0.0  # a long idle saves up at most the burst
    assert bucket.spend(30, 100.0) == pytest.approx(1.5)  # 15 left, 30 taken: 1.5 s of debt
    assert frame_cost(0) == 1  # an empty frame costs a token too
    assert frame_cost(1023) == 1
    assert frame_cost(1024) == 2
    assert frame_cost(1024 * 1024) == 1025


@pytest.mark.parametrize(
    "kwargs", [{"inbound_rate": 0}, {"inbound_rate": -1.0}, {"inbound_burst": 0.5}], ids=str
)
def test_i19_10_inbound_budget_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="inbound"):
        CallConfig(**kwargs)  # type: ignore[arg-type]


# -- control frames and fragments cost budget too (review follow-up FU-1) -------------------

PING = frame(0x9, b"p")  # 7 bytes on the wire
PONG = frame(0xA, b"p")


@pytest.mark.parametrize("kind", ["pongs", "fragments", "empty continuation frames"])
async def test_fu1_every_frame_costs_budget(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    """1,000 frames that are not messages, then a message, over a 100 tokens/s budget with
    bursts of 200: a token each, so the message waits ~8 s ((1,000 + 1 - 200) / 100). Before,
    only messages cost: Pongs and fragments were read as fast as they came (delivered at 0 s)."""
    seen: list[tuple[float, Any]] = []
    config = CallConfig(ping_interval=1000, inbound_rate=100, inbound_burst=200)
    server = await _server(nursery, config, seen)
    client, _ = await _call(server)
    text = json.dumps(
        {"type": "call:status", "msgid": "s1", "call_sid": "sid-1", "data": {"n": 1, "pad": "x" * 1000}}
    )
    if kind == "pongs":
        flood = PONG * 1000 + frame(0x1, text.encode())
    elif kind == "fragments":  # one character a frame
        flood = frame(0x1, text[0].encode(), fin=False)
        flood += b"".join(frame(0x0, c.encode(), fin=False) for c in text[1:999])
        flood += frame(0x0, text[999:].encode())
    else:
        flood = frame(0x1, text[0].encode(), fin=False) + frame(0x0, b"", fin=False) * 998
        flood += frame(0x0, text[1:].encode())
    t0 = trio.current_time()
    await client.stream.send_all(flood)
    await trio.sleep(20)
    arrived = next(at for at, e in seen if e.data["n"] == 1) - t0
    assert 7.5 <= arrived <= 8.5, arrived


async def test_fu1_a_ping_flood_is_closed_with_1008(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """jambonz pings at most every 15 s (and only when configured, docs/protocol.md §2.2): a
    peer that sends more than 100 Pings at once (or 10 a second, sustained) is closed with
    1008. Before, each was answered with a Pong, for ever."""
    seen: list[tuple[float, Any]] = []
    server = await _server(nursery, CallConfig(ping_interval=1000), seen)
    client, call = await _call(server)
    await client.stream.send_all(PING * 100)
    await trio.testing.wait_all_tasks_blocked()
    assert call.state.name == "CONNECTED"  # a burst of 100 is tolerated
    await trio.sleep(10)  # the allowance comes back at 10 a second
    for _ in range(300):  # 10 a second, sustained, is tolerated
        await client.stream.send_all(PING)
        await trio.sleep(0.1)
    await trio.testing.wait_all_tasks_blocked()
    assert call.state.name == "CONNECTED"
    await client.stream.send_all(PING * 101)  # the allowance is back to 100: one too many
    with trio.fail_after(60):
        assert await client.receive() is None
    assert client.close_code == 1008 and client.close_reason == "ping flood"
    assert "closing with 1008: ping flood" in caplog.text


async def test_fu1_work_per_read_is_bounded(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A 16 KiB read of 7-byte Pongs is ~2,300 frames (~25 ms of parsing, wsproto spends
    8-12 us a frame): handled at most 32 frames per scheduling turn. Before: all in one turn."""
    seen: list[tuple[float, Any]] = []
    server = await _server(nursery, CallConfig(ping_interval=1000), seen)
    client, call = await _call(server)
    pongs: list[bytes] = []
    link = engine_of(call).link
    assert link is not None
    on_pong = link.conn.on_pong
    assert on_pong is not None

    def count(payload: bytes) -> None:
        pongs.append(payload)
        on_pong(payload)

    link.conn.on_pong = count
    await trio.testing.wait_all_tasks_blocked()  # (the receipt Pong of the ack, read)
    pongs.clear()
    await client.stream.send_all(PONG * 1800)
    steps: list[int] = []
    last = 0
    for _ in range(10_000):
        await trio.lowlevel.checkpoint()
        steps.append(len(pongs) - last)
        last = len(pongs)
        if last >= 1800:
            break
    assert last == 1800
    assert max(steps) <= 2 * 32, max(steps)  # (the order inside a trio batch varies)
