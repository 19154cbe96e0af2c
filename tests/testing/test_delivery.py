"""The fake's end of a connection reads the app's frames the way jambonz's client (Node ``ws``)
does: in order, one message at a time, so that its Pongs prove what it read; and it can be cut
at an exact byte (issue 12; docs/reconnects.md, "When is an answer delivered?")."""

from __future__ import annotations

import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import Event, Ping, TextMessage

from jambonz_trio.testing._transport import _SniffingStream

HEAD = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"


def server_frames(*events: Event) -> bytes:
    """Frames as the app (a websocket server: unmasked) writes them."""
    conn = Connection(ConnectionType.SERVER)
    return b"".join(conn.send(e) for e in events)


async def pair() -> tuple[trio.abc.Stream, _SniffingStream]:
    app_end, fake_end = trio.testing.memory_stream_pair()
    stream = _SniffingStream(fake_end, trio.Event())
    await app_end.send_all(HEAD)
    assert await stream.receive_some() == HEAD
    return app_end, stream


async def test_one_message_at_a_time_and_a_ping_only_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, stream = await pair()
    first, second = TextMessage(data="first"), TextMessage(data="second")
    await app.send_all(server_frames(first, Ping(payload=b"jt1"), second))
    got = await stream.receive_some()
    assert got == server_frames(first)  # the first message alone
    with trio.move_on_after(1) as cancelled:
        await stream.receive_some()  # the Ping waits until the message was read
    assert cancelled.cancelled_caught
    stream.message_read()
    assert await stream.receive_some() == server_frames(Ping(payload=b"jt1"))
    assert await stream.receive_some() == server_frames(second)
    assert stream.unread
    stream.message_read()
    assert stream.drained


async def test_a_ping_after_our_close_is_ignored() -> None:
    app, stream = await pair()
    stream.closing()
    await app.send_all(server_frames(Ping(payload=b"jt9"), TextMessage(data="late")))
    assert await stream.receive_some() == server_frames(TextMessage(data="late"))


async def test_cut_after_received_bytes() -> None:
    app, stream = await pair()
    cuts: list[int] = []
    ack = server_frames(TextMessage(data='{"type":"ack"}'))
    stream.cut_after(sent=None, received=len(ack) + 1, on_cut=lambda: cuts.append(1))
    await app.send_all(ack + server_frames(Ping(payload=b"jt1")))
    assert await stream.receive_some() == ack  # within the cut: read
    assert cuts == [1]  # the cut was reached with the Ping's first byte
    stream.message_read()
    assert stream.drained  # the rest of the Ping never arrives
    await stream.aclose()


async def test_cut_after_sent_bytes() -> None:
    app, stream = await pair()
    cuts: list[int] = []
    stream.cut_after(sent=3, received=None, on_cut=lambda: cuts.append(1))
    try:
        await stream.send_all(b"abcdef")
    except trio.BrokenResourceError:
        pass
    else:
        raise AssertionError("the write past the cut must fail")
    assert cuts == [1]
    assert await app.receive_some() == b"abc"  # only the bytes before the cut left
