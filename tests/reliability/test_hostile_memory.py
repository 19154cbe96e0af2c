"""Issue 19, replayed under load against a server in a subprocess (peak RSS from
``/proc/PID/status``), while healthy calls run hooks beside the attacks:

- item 4: endless empty continuation frames;
- item 5: a message in one-character fragments (3 UTF-8 bytes each);
- item 6: a 1 MiB ``session:new`` of ``[{},{},...]``;
- item 7: a 4 MiB UTF-8 ``session:new`` within 1 Mi characters;
- item 3: a 400,000-character call sid followed by a flood of bad frames (log lines);
- items 1-2: reconnects without ``account_sid`` for every healthy call, and a flood of parked
  calls past ``max_parked_calls`` while one victim call waits for its reconnect.

The bound on peak RSS growth is per concurrent attacking connection: the 1 MiB limit held as
UTF-8 bytes while reassembling, the decoded text, and the parsed message (at most
``MAX_INBOUND_TOKENS`` values): ``5 x max_inbound_bytes`` each, plus 16 MiB for the healthy
calls, the parked calls and allocator slack.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from jambonz_trio._protocol._json import MAX_INBOUND_TOKENS
from jambonz_trio._websocket import MAX_FRAGMENTS

from .helpers import Client, Latencies, connect_call, frame, hook_loop, open_raw, session_data, slow
from .procs import ServerProcess, server_process
from .test_limits import _baseline, _close_code

KIB = 1024
MIB = 1024 * 1024
MAX_INBOUND = MIB
LINE_CAP = 2000


async def _send_all(client: Client, data: bytes) -> None:
    try:
        for i in range(0, len(data), 64 * KIB):
            await client.stream.send_all(data[i : i + 64 * KIB])
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # cut off while sending: the server closed


async def _outcome(client: Client) -> int | None:
    try:
        code = await _close_code(client)
    except trio.TooSlowError:
        code = None  # still open: the attack was not cut
    await client.drop()
    return code


async def attack_empty_continuations(port: int, sid: str) -> int | None:
    client = await connect_call(port, sid)
    await _send_all(client, frame(0x1, b"{", fin=False) + frame(0x0, b"", fin=False) * (4 * MAX_FRAGMENTS))
    return await _outcome(client)


async def attack_tiny_fragments(port: int, sid: str) -> int | None:
    client = await connect_call(port, sid)
    one = frame(0x0, "☎".encode(), fin=False)
    await _send_all(client, frame(0x1, b"{", fin=False) + one * 200_000)
    return await _outcome(client)


async def attack_amplification(port: int, sid: str) -> int | None:
    client, _ = await open_raw(port)
    data = {**session_data(sid), "x": [{}] * 340_000}
    text = json.dumps(
        {"type": "session:new", "msgid": "m", "call_sid": sid, "data": data}, separators=(",", ":")
    )
    assert len(text) < MAX_INBOUND and text.count("{") > MAX_INBOUND_TOKENS
    await _send_all(client, frame(0x1, text.encode()))
    return await _outcome(client)


async def attack_emoji_first_message(port: int, sid: str) -> int | None:
    client, _ = await open_raw(port)
    data = {**session_data(sid), "x": "😀" * (MAX_INBOUND - 1000)}
    text = json.dumps(
        {"type": "session:new", "msgid": "m", "call_sid": sid, "data": data}, ensure_ascii=False
    )
    await _send_all(client, frame(0x1, text.encode()))
    return await _outcome(client)


async def attack_log_flood(port: int, sid: str) -> int | None:
    """A huge sid, then 2,000 eight-byte bad frames; the call stays up (bad frames are
    logged and skipped)."""
    huge = sid + "\n" + "s" * 400_000
    client, _ = await open_raw(port)
    await client.send("session:new", "m", {**session_data(huge)}, call_sid=huge)
    ack = await client.receive()
    assert ack is not None and ack["type"] == "ack"
    await _send_all(client, frame(0x1, b"not json") * 2000)
    await client.send("verb:hook", "h", {}, call_sid=huge, hook="/after-flood")
    reply = await client.receive()
    await client.drop()
    return 0 if reply is not None and reply.get("msgid") == "h" else None


ATTACKS = {
    "empty continuations (4)": attack_empty_continuations,
    "1-char fragments (5)": attack_tiny_fragments,
    "[{},...] session:new (6)": attack_amplification,
    "4 MiB UTF-8 session:new (7)": attack_emoji_first_message,
    "huge sid + bad frames (3)": attack_log_flood,
}
EXPECTED = {
    attack_empty_continuations: 1009,
    attack_tiny_fragments: 1009,
    attack_amplification: 1009,
    attack_emoji_first_message: 1009,
    attack_log_flood: 0,
}


async def _healthy(port: int, sid: str, stop: trio.Event, lat: Latencies, lost: list[str]) -> None:
    client = await connect_call(port, sid)
    await hook_loop(client, sid, stop, lat, lost, pause=0.1)
    await client.close()
    await client.drop()


async def _takeover_attempts(port: int, sids: list[str]) -> list[str]:
    """Reconnect without ``account_sid`` for each healthy call: each is served as an isolated
    call (its own ack), and the healthy call carries on (checked by its hooks)."""
    isolated = []
    for sid in sids:
        client, _ = await open_raw(port)
        data = {k: v for k, v in session_data(sid).items() if k != "account_sid"}
        await client.send("session:reconnect", f"take-{sid}", data, call_sid=sid)
        reply = await client.receive()
        if reply is not None and reply.get("msgid") == f"take-{sid}":
            isolated.append(sid)
        await client.drop()
    return isolated


async def _parking_flood(port: int, count: int) -> bool:
    """A victim call parks first, then ``count`` calls of another account park after it (past
    ``max_parked_calls``); the victim's reconnect must still find its call."""
    victim = await connect_call(port, "victim")
    await victim.drop()
    await trio.sleep(0.2)
    for i in range(count):
        client, _ = await open_raw(port)
        data = {**session_data(f"parked-{i}"), "account_sid": "acct-attacker"}
        await client.send("session:new", "m", data, call_sid=f"parked-{i}")
        await client.receive()
        await client.drop()
    await trio.sleep(0.5)
    client, _ = await open_raw(port)
    await client.send("session:reconnect", "r-victim", session_data("victim"), call_sid="victim")
    reply = await client.receive()
    await client.send("verb:hook", "v-after", {}, hook="/after", call_sid="victim")
    hook = await client.receive()
    await client.drop()
    # served by the *same* call: the app answers "ok /after" on it; a fresh call would first
    # need its own session:new answer (which a reconnect-born call gets as holding verbs)
    return reply is not None and reply.get("type") == "ack" and reply.get("data") == [] and hook is not None


async def _run(copies: int, healthy: int, parked: int) -> dict[str, Any]:
    config = {"app": "answer", "server": {"max_inbound_bytes": MAX_INBOUND, "max_parked_calls": parked}}
    lat = Latencies()
    lost: list[str] = []
    results: dict[str, list[int | None]] = {name: [] for name in ATTACKS}
    async with server_process(config) as server:
        before = await _baseline(server)
        stop = trio.Event()
        sids = [f"ok-{i}" for i in range(healthy)]
        async with trio.open_nursery() as calls:
            for sid in sids:
                calls.start_soon(_healthy, server.port, sid, stop, lat, lost)
            await trio.sleep(0.5)
            with trio.fail_after(120):
                async with trio.open_nursery() as attacks:
                    for name, attack in ATTACKS.items():
                        for i in range(copies):

                            async def one(name: str = name, attack: Any = attack, i: int = i) -> None:
                                results[name].append(await attack(server.port, f"atk-{i}"))

                            attacks.start_soon(one)
                isolated = await _takeover_attempts(server.port, sids)
                victim_kept = await _parking_flood(server.port, parked + 5)
            await trio.sleep(0.5)
            stop.set()
        after = await server.stats()
        stderr = _stderr(server)
        alive = server.alive()
    growth = (after["hwm_kb"] - before["hwm_kb"]) * KIB
    lines = stderr.splitlines()
    return {
        "results": results,
        "growth": growth,
        "bound": 5 * MAX_INBOUND * copies * (len(ATTACKS) - 1) + 16 * MIB,
        "lat": lat,
        "lost": lost,
        "isolated": isolated,
        "victim_kept": victim_kept,
        "alive": alive,
        "longest_line": max(map(len, lines), default=0),
        "bad_frame_lines": sum("protocol error" in line for line in lines),
        "lines": len(lines),
    }


def _stderr(server: ServerProcess) -> str:
    return server.stderr_tail(chars=1 << 30)


def _check(out: dict[str, Any], copies: int, healthy: int) -> None:
    print(
        f"issue 19 replay: {copies} x {len(ATTACKS)} attacks, {healthy} healthy calls; "
        f"peak RSS +{out['growth'] / MIB:.1f} MiB (bound {out['bound'] / MIB:.1f} MiB); "
        f"healthy acks {out['lat'].summary()}; longest log line {out['longest_line']} chars, "
        f"{out['lines']} lines, {out['bad_frame_lines']} bad-frame warnings; results {out['results']}"
    )
    assert out["alive"]
    for name, attack in ATTACKS.items():
        assert out["results"][name] == [EXPECTED[attack]] * copies, name
    assert out["lost"] == [] and out["lat"].pct(99) < 1.0
    assert out["isolated"] == [f"ok-{i}" for i in range(healthy)]
    assert out["victim_kept"]
    assert out["growth"] < out["bound"]
    assert out["longest_line"] < LINE_CAP
    assert out["bad_frame_lines"] <= copies * 10


async def test_issue19_attacks_under_load_bounded() -> None:
    out = await _run(copies=2, healthy=10, parked=20)
    _check(out, copies=2, healthy=10)


@pytest.mark.slow
@slow
async def test_issue19_attacks_under_load_full() -> None:
    out = await _run(copies=10, healthy=50, parked=200)
    _check(out, copies=10, healthy=50)
