"""FM-36 chaos: a real server holds many live calls while every attack of the catalogue is
replayed against it, concurrently and repeatedly.

Healthy calls (jambonz-like wsproto clients over TCP, Basic auth) each do ``session:new`` and
then a ``verb:hook`` round trip every ~0.1 s. Meanwhile the attacker replays, each round all at
once: malformed Host/target bytes, plain HTTP, missing/wrong subprotocols, bad credentials,
Origin, slowloris (silent, dribbling, silent after the 101), 2 MiB and "1 GiB" frames, invalid
JSON / UTF-8 / binary frames, ping floods, the ping-during-close race, a peer that never reads,
abrupt drops (FIN and RST, before and after the ack) and reconnect storms.

Asserted: every healthy hook gets the app's own ack (zero lost), the server never crashes and
logs no ERROR, every attack got the answer it should, and afterwards the server is back to the
healthy calls only: its connection and call counts, the living trio tasks and the open fds all
return to their baselines. Real sockets cannot run on virtual time, so the server uses small
timeouts (0.5 s handshake) and the test waits for cleanup by bounded polling; nothing asserts
wall-clock precision.

The default run is bounded (50 calls, 3 rounds); ``JAMBONZ_TRIO_SLOW=1`` runs 200 calls and
10 rounds.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import struct
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from wsproto.events import AcceptConnection, CloseConnection

from jambonz_trio import (
    BasicAuth,
    Call,
    CallConfig,
    JambonzServer,
    JambonzTrioError,
    Route,
    ServerConfig,
    VerbHook,
    serve_jambonz,
)
from jambonz_trio.verbs import Say
from tests.admission.helpers import UPGRADE, basic, build_request, exchange
from tests.admission.test_hostile_requests import ATTACKS as BAD_REQUESTS

from .helpers import (
    AUTH,
    PASSWORD,
    USER,
    Client,
    ErrorRecorder,
    Latencies,
    connect_call,
    fd_count,
    frame,
    open_raw,
    session_data,
    slow,
    task_names,
    tasks_living,
    wait_until,
)

#: The ping-during-close race (F2) is contained but logged at ERROR: a known bug, see
#: test_fm09_ping_during_close_is_not_an_error_log; every other ERROR fails the chaos test.
F2_SIGNATURE = "cannot be sent in state ConnectionState.LOCAL_CLOSING"

BIG_ACK = "x" * 20_000  # the app answers "/big" hooks with ~20 KB: fills a non-reading peer fast

CHAOS_CONFIG = ServerConfig(
    handshake_timeout=0.5,
    first_message_timeout=0.5,
    max_inbound_bytes=1024 * 1024,
    call=CallConfig(
        send_timeout=1.0,
        ping_interval=1.5,
        ping_timeout=3.0,
        close_timeout=0.5,
        reconnect_grace=1.0,
    ),
)


async def app(call: Call) -> None:
    """A well-behaved app: answers everything, and treats a dead socket as a normal event."""
    try:
        await call.ack(call.session, [Say(text="hello")])
        if (call.call_sid or "").startswith("victim"):
            return  # the server closes at once: the ping-during-close race
        async for event in call:
            if isinstance(event, VerbHook):
                text = BIG_ACK if event.hook == "/big" else f"ok {event.hook}"
                try:
                    await call.ack(event, [Say(text=text)])
                except JambonzTrioError:
                    pass
    except JambonzTrioError:
        return


# -- healthy calls ---------------------------------------------------------------------------


@attrs.define
class Healthy:
    sent: int = 0
    acked: int = 0
    lost: list[str] = attrs.Factory(list)
    latencies: Latencies = attrs.Factory(Latencies)


async def healthy_call(
    port: int,
    sid: str,
    stats: Healthy,
    stop: trio.Event,
    interval: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    rng = random.Random(sid)
    client = await connect_call(port, sid)
    task_status.started()
    try:
        for i in range(100_000):  # bounded; ends when ``stop`` is set
            if stop.is_set():
                break
            msgid = f"{sid}-h{i}"
            hook = f"/h{i}"
            t0 = trio.current_time()
            await client.send("verb:hook", msgid, {"call_sid": sid}, hook=hook, call_sid=sid)
            stats.sent += 1
            reply: dict[str, Any] | None = None
            with trio.move_on_after(4.5):
                reply = await client.receive()
            expected = {"type": "ack", "msgid": msgid, "data": [{"verb": "say", "text": f"ok {hook}"}]}
            if reply == expected:
                stats.acked += 1
                stats.latencies.add(trio.current_time() - t0)
            else:
                stats.lost.append(f"{msgid}: {reply!r}")
                return
            with trio.move_on_after(interval * rng.uniform(0.5, 1.5)):
                await stop.wait()
        # hang up like jambonz: call:status completed, then Close 1000
        await client.send("call:status", f"{sid}-end", {"call_status": "completed"}, call_sid=sid)
        await hang_up(client)
    finally:
        await client.drop()


async def hang_up(client: Client) -> None:
    """Close 1000 and wait (bounded) for the server's answer."""
    await client.close(1000)
    with trio.move_on_after(2):
        while await client.receive() is not None:
            pass


# -- attacks ---------------------------------------------------------------------------------


@attrs.define
class Attacks:
    port: int
    server: JambonzServer
    errors: ErrorRecorder
    replayed: dict[str, int] = attrs.Factory(dict)
    serial: int = 0

    def sid(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial}"


async def expect_status(port: int, request: bytes, status: int) -> None:
    response = await exchange(port, request)
    assert response.status == status, (request[:80], response)


async def attack_bad_requests(a: Attacks) -> None:
    """FM-01: malformed Host / target / header bytes."""
    for request in BAD_REQUESTS.values():
        await expect_status(a.port, request, 400)


async def attack_plain_http(a: Attacks) -> None:
    """FM-02: health checks, OPTIONS, non-upgrade requests, junk."""
    host_only = UPGRADE[:1]
    await expect_status(a.port, build_request(b"/healthz", headers=host_only), 200)
    await expect_status(a.port, build_request(b"/healthz", method=b"HEAD", headers=host_only), 200)
    await expect_status(a.port, build_request(b"/app", method=b"OPTIONS", headers=host_only), 204)
    await expect_status(a.port, build_request(b"/", headers=host_only), 426)
    await expect_status(a.port, b"GET /app HTTP/1.0\r\n\r\n", 426)
    await expect_status(a.port, b"NOT HTTP AT ALL\r\n\r\n", 400)


async def attack_subprotocol(a: Attacks) -> None:
    """FM-03 / S-2: no subprotocol, or only jambonz's audio one."""
    await expect_status(a.port, build_request(drop=[b"Sec-WebSocket-Protocol"], extra=[AUTH]), 400)
    await expect_status(
        a.port, build_request(replace=[(b"Sec-WebSocket-Protocol", b"audio.drachtio.org")], extra=[AUTH]), 400
    )


async def attack_auth(a: Attacks) -> None:
    """S-1: missing, wrong scheme, malformed, wrong password, duplicated credentials."""
    await expect_status(a.port, build_request(), 401)
    await expect_status(a.port, build_request(extra=[(b"Authorization", b"Bearer x")]), 401)
    await expect_status(a.port, build_request(extra=[(b"Authorization", b"Basic !!!")]), 401)
    await expect_status(a.port, build_request(extra=[(b"Authorization", basic(USER, "wrong"))]), 401)
    await expect_status(a.port, build_request(extra=[AUTH, AUTH]), 400)


async def attack_origin(a: Attacks) -> None:
    """S-3: a browser-driven upgrade, even with valid credentials."""
    await expect_status(a.port, build_request(extra=[AUTH, (b"Origin", b"https://evil.example")]), 403)


async def _closed_by_server(stream: trio.abc.Stream, within: float) -> bool:
    """Read (and discard) until EOF/RST; ``True`` if that came within ``within`` s."""
    with trio.move_on_after(within):
        for _ in range(10_000):
            try:
                if not await stream.receive_some(65536):
                    return True
            except trio.BrokenResourceError:
                return True
    return False


async def attack_slowloris(a: Attacks) -> None:
    """FM-04 / S-7: silent socket, dribbled head, silence after the 101."""
    budget = CHAOS_CONFIG.handshake_timeout + 3.0
    silent = await trio.open_tcp_stream("127.0.0.1", a.port)
    dribbler = await trio.open_tcp_stream("127.0.0.1", a.port)
    request = build_request(extra=[AUTH])
    cut: list[bool] = []

    async def dribble(scope: trio.CancelScope) -> None:
        with scope:
            try:
                for byte in request[:-1]:  # never complete
                    await dribbler.send_all(bytes([byte]))
                    await trio.sleep(0.05)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    try:
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()
            nursery.start_soon(dribble, scope)

            async def watch_dribbler() -> None:
                cut.append(await _closed_by_server(dribbler, budget))
                scope.cancel()

            async def watch_silent() -> None:
                cut.append(await _closed_by_server(silent, budget))

            nursery.start_soon(watch_dribbler)
            nursery.start_soon(watch_silent)
        # accepted, then never a first message: closed with 1008 after first_message_timeout
        client, event = await open_raw(a.port)
        assert isinstance(event, AcceptConnection)
        with trio.move_on_after(CHAOS_CONFIG.first_message_timeout + 3.0):
            assert await client.receive() is None
        assert client.close_code == 1008
        await client.drop()
    finally:
        await trio.aclose_forcefully(silent)
        await trio.aclose_forcefully(dribbler)
    assert cut == [True, True], cut


async def attack_big_frames(a: Attacks) -> None:
    """FM-14 / S-5: a 2 MiB text frame, then a frame announcing 1 GiB: 1009, nothing buffered."""
    for declared in (None, 1 << 30):
        sid = a.sid("big")
        client = await connect_call(a.port, sid)
        payload = b"a" * (2 * 1024 * 1024)
        try:
            await client.stream.send_all(frame(0x1, payload, declared=declared))
        except trio.BrokenResourceError:
            pass  # cut off while sending: fine
        with trio.move_on_after(5):
            while await client.receive() is not None:
                pass
        assert client.close_code in (1009, None)  # None: RST arrived before the Close frame
        await client.drop()


async def attack_bad_frames(a: Attacks) -> None:
    """FM-17 / FM-18: invalid JSON and binary frames are ignored (the call goes on); invalid
    UTF-8 in a text frame is a protocol error: closed with 1007, the call parks."""
    sid = a.sid("junk")
    client = await connect_call(a.port, sid)
    try:
        for bad in ("not json", "[" * 3000 + "]" * 3000, '{"n": ' + "9" * 5000 + "}", '{"a": NaN}', "null"):
            await client.send_text(bad)
        await client.send_bytes(b'{"type":"verb:hook","msgid":"bin","data":{}}')
        await client.send("foo:bar", f"{sid}-unknown", {}, call_sid=sid)
        await client.send("verb:hook", f"{sid}-h", {}, hook="/after-junk", call_sid=sid)
        for _ in range(5):
            reply = await client.receive()
            if reply is not None and reply.get("msgid") == f"{sid}-h":
                break
        else:
            raise AssertionError("hook after junk not acked")
        await client.stream.send_all(frame(0x1, b'{"type": "\xff\xfe"}'))
        with trio.move_on_after(3):
            while await client.receive() is not None:
                pass
        # 1007, or 1006 when the server drops TCP without a Close frame (reliability.md F11)
        assert client.close_code in (1006, 1007), client.close_code
    finally:
        await client.drop()


def masked_ping(payload: bytes) -> bytes:
    return frame(0x9, payload)


async def attack_ping_flood(a: Attacks) -> None:
    """A flood of pings: 100 at once are answered, 500 close the socket with 1008 (jambonz
    pings at most every 15 s; review follow-up FU-1); the other calls carry on."""
    sid = a.sid("pings")
    client = await connect_call(a.port, sid)
    try:
        await client.stream.send_all(b"".join(masked_ping(b"%d" % i) for i in range(100)))
        await client.send("verb:hook", f"{sid}-h", {}, hook="/after-pings", call_sid=sid)
        reply = await client.receive()
        assert reply is not None and reply.get("msgid") == f"{sid}-h", reply
        await client.stream.send_all(b"".join(masked_ping(b"%d" % i) for i in range(500)))
        while await client.receive() is not None:
            pass
        assert client.close_code == 1008, client.close_code
    finally:
        await client.drop()


async def attack_ping_during_close(a: Attacks) -> None:
    """FM-09 / F2: the server closes; the peer answers its Close with a Ping."""
    sid = a.sid("victim")
    client = await connect_call(a.port, sid)
    try:
        # the Close may already have been parsed together with the ack
        if not any(isinstance(e, CloseConnection) for e in client._events):
            with trio.fail_after(3):
                data = await client.stream.receive_some(1024)
            assert data[:1] == b"\x88", data[:16]
        await client.stream.send_all(masked_ping(b"race") * 3)
        await _closed_by_server(client.stream, 3)
    finally:
        await client.drop()


async def attack_never_reads(a: Attacks) -> None:
    """FM-10 / W-6: a peer that stops reading while the app answers with 20 KB acks: cut off
    after send_timeout (or the keepalive), never a stuck task."""
    sid = a.sid("deaf")
    client = await connect_call(a.port, sid)
    try:
        with trio.move_on_after(10):
            for i in range(5000):
                await client.send("verb:hook", f"{sid}-{i}", {}, hook="/big", call_sid=sid)
                if i % 50 == 49:
                    await trio.sleep(0.01)
        # never read; the server must have cut us (our sends fail once it aborted)
        raise AssertionError("a non-reading peer was never cut off")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await client.drop()


def _rst(stream: trio.abc.Stream) -> None:
    assert isinstance(stream, trio.SocketStream)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def attack_drops(a: Attacks) -> None:
    """Abrupt drops: mid-handshake, before the session:new ack, with a hook pending, by RST."""
    half = await trio.open_tcp_stream("127.0.0.1", a.port)
    await half.send_all(build_request(extra=[AUTH])[:40])
    await trio.aclose_forcefully(half)

    client, event = await open_raw(a.port)
    assert isinstance(event, AcceptConnection)
    sid = a.sid("drop-early")
    await client.send("session:new", f"{sid}-new", session_data(sid), call_sid=sid)
    await client.drop()  # FM-29: before the ack

    sid = a.sid("drop-hook")
    client = await connect_call(a.port, sid)
    await client.send("verb:hook", f"{sid}-h", {}, hook="/pending", call_sid=sid)
    await client.drop()

    sid = a.sid("drop-rst")
    client = await connect_call(a.port, sid)
    await client.send("verb:hook", f"{sid}-h", {}, hook="/pending", call_sid=sid)
    _rst(client.stream)
    await client.drop()


async def attack_reconnect_storm(a: Attacks) -> None:
    """FM-28 / FM-31 / FM-34: one call reconnected many times in a row (old socket dropped
    before or after the new one opens), then two reconnects racing for the same call."""
    sid = a.sid("storm")
    current = await connect_call(a.port, sid)
    try:
        for i in range(6):
            if i % 2:
                await current.drop()  # a drop, then jambonz reconnects
            new, event = await open_raw(a.port)
            assert isinstance(event, AcceptConnection)
            await new.send("session:reconnect", f"{sid}-rc{i}", session_data(sid), call_sid=sid)
            reply = await new.receive()
            assert reply is not None and reply.get("msgid") == f"{sid}-rc{i}", reply
            # the session:new answer again unless the server already had the Pong proving
            # jambonz read it (docs/reconnects.md); both are right, racing over two sockets
            assert reply in (
                {"type": "ack", "msgid": f"{sid}-rc{i}", "data": []},
                {"type": "ack", "msgid": f"{sid}-rc{i}", "data": [{"verb": "say", "text": "hello"}]},
            ), reply
            await current.drop()  # half-open old socket (FM-31): the new one already won
            current = new
        await current.send("verb:hook", f"{sid}-h", {}, hook="/after-storm", call_sid=sid)
        reply = await current.receive()
        assert reply is not None and reply.get("msgid") == f"{sid}-h", reply
        # Two reconnects racing for the call: robustness only (both answered or cut, nothing
        # leaks). Which one stays live is test_fm31_racing_reconnects_leave_one_live_socket.
        racers: list[Client] = []
        try:
            for _ in range(2):
                racer, event = await open_raw(a.port)
                racers.append(racer)
                assert isinstance(event, AcceptConnection)
            for i, racer in enumerate(racers):
                await racer.send("session:reconnect", f"{sid}-race{i}", session_data(sid), call_sid=sid)
            acked = 0
            for i, racer in enumerate(racers):
                with trio.move_on_after(2):
                    reply = await racer.receive()
                    acked += reply == {"type": "ack", "msgid": f"{sid}-race{i}", "data": []}
            assert acked >= 1
        finally:
            for racer in racers:
                await racer.drop()
    finally:
        await current.drop()


ATTACK_LIST: list[Callable[[Attacks], Awaitable[None]]] = [
    attack_bad_requests,
    attack_plain_http,
    attack_subprotocol,
    attack_auth,
    attack_origin,
    attack_slowloris,
    attack_big_frames,
    attack_bad_frames,
    attack_ping_flood,
    attack_ping_during_close,
    attack_never_reads,
    attack_drops,
    attack_reconnect_storm,
]


async def run_round(a: Attacks) -> None:
    async def one(attack: Callable[[Attacks], Awaitable[None]]) -> None:
        with trio.fail_after(20):
            await attack(a)
        a.replayed[attack.__name__] = a.replayed.get(attack.__name__, 0) + 1

    async with trio.open_nursery() as nursery:
        for attack in ATTACK_LIST:
            nursery.start_soon(one, attack)


# -- the test --------------------------------------------------------------------------------


@attrs.frozen
class Plan:
    calls: int
    rounds: int
    interval: float = 0.1


async def run_chaos(plan: Plan) -> dict[str, Any]:
    errors = ErrorRecorder(logging.ERROR)
    root = logging.getLogger()
    root.addHandler(errors)
    try:
        return await _run_chaos(plan, errors)
    finally:
        root.removeHandler(errors)


async def _run_chaos(plan: Plan, errors: ErrorRecorder) -> dict[str, Any]:
    route = Route(path="/app", handler=app, auth=BasicAuth(username=USER, password=PASSWORD))
    report: dict[str, Any] = {"calls": plan.calls, "rounds": plan.rounds}
    async with trio.open_nursery() as nursery:
        server: JambonzServer = await nursery.start(
            partial(serve_jambonz, route, host="127.0.0.1", port=0, config=CHAOS_CONFIG)
        )
        await trio.testing.wait_all_tasks_blocked(0.01)  # the listeners are up and waiting
        tasks0, fds0, names0 = tasks_living(), fd_count(), task_names()
        healthy = Healthy()
        stop = trio.Event()
        async with trio.open_nursery() as calls:
            with trio.fail_after(30):
                async with trio.open_nursery() as starting:
                    for i in range(plan.calls):
                        starting.start_soon(
                            partial(
                                calls.start,
                                healthy_call,
                                server.port,
                                f"ok-{i}",
                                healthy,
                                stop,
                                plan.interval,
                            )
                        )
            await trio.sleep(0.3)  # every healthy call in its steady loop
            tasks1, fds1 = tasks_living(), fd_count()
            assert server.statistics().calls == plan.calls

            attacks = Attacks(server.port, server, errors)
            t0 = trio.current_time()
            for _ in range(plan.rounds):
                await run_round(attacks)
            report["attack_seconds"] = round(trio.current_time() - t0, 1)
            report["attacks_replayed"] = sum(attacks.replayed.values())
            report["attack_kinds"] = len(attacks.replayed)

            # everything the attacks opened is gone; only the healthy calls are left
            def back_to_healthy() -> bool:
                s = server.statistics()
                return (
                    (s.connections, s.pending_handshakes, s.calls) == (plan.calls, 0, plan.calls)
                    and tasks_living() == tasks1
                    and fd_count() == fds1
                )

            settle = CHAOS_CONFIG.call.reconnect_grace + CHAOS_CONFIG.call.close_timeout + 5
            clean = await wait_until(back_to_healthy, settle)
            s = server.statistics()
            report["after_attacks"] = {
                "connections": s.connections,
                "calls": s.calls,
                "pending": s.pending_handshakes,
                "tasks_delta": tasks_living() - tasks1,
                "fds_delta": fd_count() - fds1,
                "refused": s.refused,
            }
            assert clean, json.dumps(report)
            assert healthy.lost == [], healthy.lost[:5]
            stop.set()

        def all_gone() -> bool:
            s = server.statistics()
            return (s.connections, s.calls) == (0, 0) and tasks_living() == tasks0 and fd_count() == fds0

        gone = await wait_until(all_gone, 5)
        report["after_hangup"] = {
            "connections": server.statistics().connections,
            "calls": server.statistics().calls,
            "tasks_delta": tasks_living() - tasks0,
            "fds_delta": fd_count() - fds0,
        }
        if not gone:
            extra = list(task_names())
            for name in names0:
                if name in extra:
                    extra.remove(name)
            report["after_hangup"]["extra_tasks"] = extra
        assert gone, json.dumps(report)
        nursery.cancel_scope.cancel()
    report["hooks_sent"] = healthy.sent
    report["hooks_acked"] = healthy.acked
    report["acks_lost"] = healthy.sent - healthy.acked
    report["healthy_ack_rtt"] = healthy.latencies.summary()
    known = [m for m in errors.messages() if F2_SIGNATURE in m]
    report["errors_logged_f2_race"] = len(known)
    unexpected = [m for m in errors.messages() if F2_SIGNATURE not in m]
    assert healthy.sent > 0 and healthy.acked == healthy.sent
    assert unexpected == [], unexpected[:5]
    print("chaos report:", json.dumps(report))
    return report


async def test_fm36_chaos_bounded() -> None:
    """FM-36, bounded: 50 live calls, every attack replayed 3 times."""
    report = await run_chaos(Plan(calls=50, rounds=3))
    assert report["acks_lost"] == 0
    assert report["attack_kinds"] == len(ATTACK_LIST)


@slow
@pytest.mark.slow
async def test_fm36_chaos_full() -> None:
    """FM-36, full size (reliability.md FM-36, the chaos section): 200 live calls, every attack replayed 10 times."""
    report = await run_chaos(Plan(calls=200, rounds=10, interval=0.5))
    assert report["acks_lost"] == 0
