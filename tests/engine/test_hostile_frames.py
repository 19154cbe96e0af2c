"""Issue 19 items 4-7: the inbound limit bounds memory, not just characters.

4. empty continuation frames must not grow the reassembly without limit;
5. one-character fragments must cost about a byte each, and fragments per message are capped;
6. JSON that parses into far more memory than its size (``[{},{},...]``) is refused;
7. the first message of a socket is held to the byte limit like every later one.
"""

from __future__ import annotations

import json
import tracemalloc

import pytest
import trio
import trio.testing
from wsproto.events import CloseConnection, TextMessage

from jambonz_trio import Call, CallConfig, ServerConfig, serve_jambonz
from jambonz_trio._websocket import MAX_FRAGMENTS
from jambonz_trio.verbs import Say
from tests.helpers import Serve

from .helpers import SESSION_DATA, new_call, raw_client
from .test_websocket import next_read_fails, pair


async def test_endless_empty_continuation_frames_are_cut(autojump_clock: trio.testing.MockClock) -> None:
    """Item 4: before, every empty frame added an entry to the reassembly list, forever."""
    ws, peer = pair(max_message_size=1000)
    await peer.send(TextMessage(data="{", message_finished=False))
    with trio.fail_after(60):
        for _ in range(MAX_FRAGMENTS + 1):
            await peer.send(TextMessage(data="", message_finished=False))
        reason = await next_read_fails(ws)
    assert reason.code == 1009 and reason.reason == f"message in over {MAX_FRAGMENTS} frames"
    event = await peer.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1009


async def test_one_character_fragments_cost_a_byte_each(autojump_clock: trio.testing.MockClock) -> None:
    """Item 5: before, each one-character fragment kept a ``str`` (~50 bytes) plus a list slot."""
    ws, peer = pair(max_message_size=1_000_000)
    n = MAX_FRAGMENTS - 10
    frames = [peer.proto.send(TextMessage(data="☎", message_finished=False)) for _ in range(n)]
    blob = b"".join(frames)
    tracemalloc.start()
    try:
        await peer.stream.send_all(blob)
        with trio.move_on_after(1):
            await ws.receive()  # reads everything there is; the message is not finished
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del blob, frames
    assert held < 16 * n, held  # 3 bytes of UTF-8 each, plus the stream's buffers; before: ~84
    await peer.send(TextMessage(data="!", message_finished=True))
    assert await ws.receive() == "☎" * n + "!"


async def test_fragments_are_counted_in_utf8_bytes() -> None:
    ws, peer = pair(max_message_size=1000)
    await peer.send(TextMessage(data="😀" * 200, message_finished=False))  # 800 bytes
    await peer.send(TextMessage(data="😀" * 60, message_finished=True))  # 1,040 bytes in all
    assert (await next_read_fails(ws)).code == 1009


async def test_a_whole_text_message_is_measured_in_bytes() -> None:
    """Item 7, on the websocket: 300 emoji are 300 characters but 1,200 bytes."""
    ws, peer = pair(max_message_size=1000)
    await peer.send(TextMessage(data="😀" * 250))  # exactly 1,000 bytes
    assert await ws.receive() == "😀" * 250
    await peer.send(TextMessage(data="😀" * 251))
    assert (await next_read_fails(ws)).code == 1009


async def _first_message_refused(nursery: trio.Nursery, text: str) -> None:
    """``text`` as a socket's first message closes it with 1009 and starts no call."""
    started: list[Call] = []

    async def app(call: Call) -> None:
        started.append(call)
        await call.ack(call.session, [Say(text="hi")])

    server = await nursery.start(serve_jambonz, app)
    async with raw_client(server) as client:
        await client.send_text(text)
        assert await client.receive() is None
        assert client.close_code == 1009
    assert started == []


async def test_first_message_over_the_byte_limit_is_refused(nursery: trio.Nursery) -> None:
    """Item 7: a 4 MiB UTF-8 ``session:new`` within 1 MiB *characters* was acked before."""
    data = {**SESSION_DATA, "x": "😀" * (1024 * 1024 - 1000)}
    text = json.dumps(
        {"type": "session:new", "msgid": "m1", "call_sid": "sid-1", "data": data}, ensure_ascii=False
    )
    assert len(text) < 1024 * 1024 < len(text.encode())
    await _first_message_refused(nursery, text)


# -- item 6: JSON amplification ------------------------------------------------------------


def _empty_objects(n: int) -> str:
    data = {**SESSION_DATA, "x": [{}] * n}
    return json.dumps(
        {"type": "session:new", "msgid": "m1", "call_sid": "sid-1", "data": data}, separators=(",", ":")
    )


async def test_json_amplification_in_session_new_is_refused(nursery: trio.Nursery) -> None:
    """A 1 MiB ``[{},{},...]`` parsed into ~24 MiB and was kept for the whole call."""
    text = _empty_objects(340_000)
    assert len(text) < 1024 * 1024
    await _first_message_refused(nursery, text)


async def test_json_amplification_later_in_the_call_is_refused(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[object] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi")])
        async for event in call:
            seen.append(event)

    config = ServerConfig(call=CallConfig())
    server = await nursery.start(
        lambda task_status: serve_jambonz(app, config=config, task_status=task_status)
    )
    async with raw_client(server) as client:
        await client.send("session:new", "m1", SESSION_DATA, call_sid="sid-1")
        assert (await client.receive() or {}).get("type") == "ack"
        hook = json.dumps(
            {
                "type": "verb:hook",
                "msgid": "h1",
                "call_sid": "sid-1",
                "hook": "/x",
                "data": {"x": [[]] * 340_000},
            },
            separators=(",", ":"),
        )
        assert len(hook) < 1024 * 1024
        await client.send_text(hook)
        assert await client.receive() is None
        assert client.close_code == 1009
    assert seen == [] or all(type(e).__name__ != "VerbHook" for e in seen)


@pytest.mark.parametrize("value", ["1e400", "-1e400", "NaN", "Infinity"])
async def test_non_finite_numbers_are_refused_alike(value: str) -> None:
    from jambonz_trio import RemoteProtocolError
    from jambonz_trio._protocol._json import loads_object

    with pytest.raises(RemoteProtocolError):
        loads_object('{"x": ' + value + "}")


def test_punctuation_inside_strings_is_not_counted() -> None:
    """A long transcript full of commas is text, not structure: it parses."""
    from jambonz_trio._protocol._json import MAX_INBOUND_TOKENS, loads_object

    text = "hello, world: [yes] {no}, " * (MAX_INBOUND_TOKENS // 2)
    assert loads_object('{"t": "' + text + '", "e": "\\"\\\\"}')["t"] == text


def test_token_count_refuses_just_over_the_limit() -> None:
    from jambonz_trio._protocol._json import TooComplex, loads_object

    assert loads_object('{"x": [' + ",".join(["0"] * 100) + "]}", max_tokens=102)
    with pytest.raises(TooComplex):
        loads_object('{"x": [' + ",".join(["0"] * 101) + "]}", max_tokens=102)


def test_counting_tokens_in_an_escape_heavy_string_costs_no_more_than_the_text() -> None:
    """The string-skipping pass must not keep backtracking state per escape: before, a 1 MB
    transcript of ``\\n`` escapes (commas inside, so the second pass runs) took ~63 MB for a
    moment, and ~8x the time, on the one thread every call shares."""
    from jambonz_trio._protocol._json import MAX_INBOUND_TOKENS, loads_object

    body = "," * (MAX_INBOUND_TOKENS + 1) + "\\n" * 480_000
    text = '{"t": "' + body + '"}'
    tracemalloc.start()
    try:
        parsed = loads_object(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert parsed["t"].count("\n") == 480_000
    assert peak < 6 * len(text), peak  # the text's copies (str, parsed value); before: ~60x


def test_a_flood_of_strings_is_refused_before_they_are_skipped() -> None:
    """Valid JSON holds at most one string more than its ``,`` and ``:``. Before, 500,000
    empty strings hiding 40,000 commas from the count were skipped one by one (about ten
    times the cost of parsing a valid 1 MiB message), only for the parse to fail, and the
    peer could send the next one on the same socket: now they are refused unparsed."""
    from jambonz_trio._protocol._json import MAX_INBOUND_TOKENS, TooComplex, loads_object

    with pytest.raises(TooComplex, match="strings"):
        loads_object('{"a": "' + '""' * 500_000 + "," * (MAX_INBOUND_TOKENS + 1) + '"}')
    # as many strings as valid JSON can hold under the limit still parse, and escaped quotes
    # inside a string are not strings
    many = [""] * (MAX_INBOUND_TOKENS - 10)  # with the keys: just under the limit
    commas = "," * (MAX_INBOUND_TOKENS + 1)
    assert loads_object(json.dumps({"a": many, "b": commas}))["a"] == many
    quoted = '\\"' * 100_000
    assert loads_object('{"t": "' + quoted + commas + '"}')["t"] == '"' * 100_000 + commas


async def _events_only(call: Call) -> None:
    await call.ack(call.session, [Say(text="hi")])
    async for _event in call:
        pass


async def test_fm36_a_bad_frame_with_a_huge_msgid_leaves_no_zombie_call(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Review r8: no zombie CONNECTED call on a dead socket."""
    server = await serve(_events_only, reconnect_grace=30)
    with trio.fail_after(120):
        async with raw_client(server) as client:
            await new_call(client)
            # old: _bad_frame's ack was over maxPayload; the connection task died, the call
            # was never told (CONNECTED forever, no keepalive, no reconnect grace)
            await client.send_text('{"type":"verb:hook","msgid":"%s","data":5}' % ("x" * 30000))
            await client.send("verb:hook", "h1", {}, hook="/h", call_sid="sid-1")
            assert await client.receive() == {"type": "ack", "msgid": "h1", "data": []}
            call = server.calls["sid-1"]
        await trio.sleep(1)
        assert call.state.value == "disconnected"
        await trio.sleep(30)
        assert call.close_info is not None and call.close_info.by == "lost"
        assert server.calls.get("sid-1") is None


async def test_fm36_a_failing_connection_task_leaves_the_call_disconnected(
    serve: Serve, autojump_clock: trio.testing.MockClock
) -> None:
    """Review r8: a connection task that dies with an exception (here: the bad frame's ack is over a
    small ``max_outbound_bytes``) must leave the call disconnected, not CONNECTED forever."""
    server = await serve(_events_only, reconnect_grace=30, max_outbound_bytes=200)
    with trio.fail_after(120):
        async with raw_client(server) as client:
            await new_call(client)
            await client.send_text('{"type":"verb:hook","msgid":"%s","data":5}' % ("y" * 250))
            await client.send("verb:hook", "h1", {}, hook="/h", call_sid="sid-1")
            answer = await client.receive()
            call = server.calls["sid-1"]
        if answer is not None:  # the socket survived the bad frame: fine as well
            assert answer == {"type": "ack", "msgid": "h1", "data": []}
            await trio.sleep(1)
        assert call.state.value == "disconnected"  # old: "connected", on a dead socket
        await trio.sleep(31)
        assert call.close_info is not None and call.close_info.by == "lost"
        assert server.calls.get("sid-1") is None
