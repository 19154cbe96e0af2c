"""The server websocket (``jambonz_trio._websocket``) on its own: memory streams, a client on
wsproto's frame layer driven by hand, virtual time for every deadline."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

from jambonz_trio._connection import CloseReason, ConnectionClosed
from jambonz_trio._websocket import ServerWebSocket


class Peer:
    """The client end: frames out with :meth:`send`, frames in with :meth:`events`."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.proto = Connection(ConnectionType.CLIENT)
        self.pending: list[Event] = []

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.proto.send(event))

    async def events(self) -> list[Event]:
        """Events not yet taken, else read once (blocking) and return what that produced."""
        if not self.pending:
            data = await self.stream.receive_some(65536)
            self.proto.receive_data(bytes(data) or None)
            self.pending = list(self.proto.events())
        out, self.pending = self.pending, []
        return out

    async def next_event(self) -> Event:
        while not self.pending:
            self.pending = await self.events()
        return self.pending.pop(0)


async def next_read_fails(ws: ServerWebSocket) -> CloseReason:
    """The reason of the ``ConnectionClosed`` the next ``receive`` raises."""
    with pytest.raises(ConnectionClosed) as info:
        await ws.receive()
    return info.value.reason


def pair(*, max_message_size: int = 1000, lockstep: bool = False) -> tuple[ServerWebSocket, Peer]:
    make = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client, server = make()
    ws = ServerWebSocket(server, max_message_size=max_message_size, control_timeout=2.0)
    return ws, Peer(client)


async def test_text_binary_and_fragmented_messages_arrive_whole() -> None:
    ws, peer = pair()
    await peer.send(TextMessage(data="hello"))
    await peer.send(BytesMessage(data=b"\x00\x01"))
    await peer.send(TextMessage(data="frag", message_finished=False))
    await peer.send(TextMessage(data="mented ☎", message_finished=True))
    assert await ws.receive() == "hello"
    assert await ws.receive() == b"\x00\x01"
    assert await ws.receive() == "fragmented ☎"


async def test_send_message_reaches_the_peer() -> None:
    ws, peer = pair()
    await ws.send("out ☎")
    await ws.send(b"raw")
    event = await peer.next_event()
    assert isinstance(event, TextMessage) and event.data == "out ☎"
    event = await peer.next_event()
    assert isinstance(event, BytesMessage) and event.data == b"raw"


async def test_bytes_sent_with_the_request_head_are_read_first() -> None:
    _client, server = trio.testing.memory_stream_pair()
    early = Connection(ConnectionType.CLIENT).send(TextMessage(data="early"))
    ws = ServerWebSocket(server, trailing=early, max_message_size=100, control_timeout=1.0)
    assert await ws.receive() == "early"


async def test_peer_ping_is_answered_by_the_reader() -> None:
    ws, peer = pair()
    await peer.send(Ping(payload=b"p1"))
    await peer.send(TextMessage(data="after"))
    assert await ws.receive() == "after"
    event = await peer.next_event()
    assert event == Pong(payload=b"p1")


async def test_pongs_are_reported_by_the_reader() -> None:
    ws, peer = pair()
    pongs: list[float] = []
    ws.on_pong = lambda payload: pongs.append(trio.current_time())
    await ws.ping(b"k1")
    assert await peer.next_event() == Ping(payload=b"k1")
    await peer.send(Pong(payload=b"k1"))
    await peer.send(Pong(payload=b"unsolicited"))  # RFC 6455 §5.5.3: allowed, a heartbeat
    await peer.send(TextMessage(data="m"))
    assert await ws.receive() == "m"
    assert len(pongs) == 2


async def test_send_ping_on_a_closed_socket_raises() -> None:
    ws, peer = pair()
    await peer.stream.aclose()
    assert (await next_read_fails(ws)) == CloseReason(1006, None)
    with pytest.raises(ConnectionClosed) as info:
        await ws.ping(b"k3")
    assert info.value.reason == CloseReason(1006, None)


async def test_peer_close_is_answered_and_reported() -> None:
    ws, peer = pair()
    await peer.send(TextMessage(data="last words"))
    await peer.send(CloseConnection(code=1000, reason="bye"))
    assert await ws.receive() == "last words"  # delivered before the close
    assert (await next_read_fails(ws)) == CloseReason(1000, "bye")
    assert ws.close_reason == CloseReason(1000, "bye")
    assert await peer.next_event() == CloseConnection(code=1000, reason="bye")
    assert peer.proto.state is ConnectionState.CLOSED
    with pytest.raises(ConnectionClosed):
        await ws.send("too late")


async def test_our_close_waits_for_the_peers_close(autojump_clock: trio.testing.MockClock) -> None:
    ws, peer = pair()
    async with trio.open_nursery() as nursery:
        closed = trio.Event()

        async def closer() -> None:
            await ws.close(1001, "going away")
            closed.set()

        nursery.start_soon(closer)
        assert await peer.next_event() == CloseConnection(code=1001, reason="going away")
        await trio.sleep(3)
        assert not closed.is_set()
        # a frame the peer sent before it saw our Close (its own wsproto no longer would)
        await peer.stream.send_all(Connection(ConnectionType.CLIENT).send(TextMessage(data="late")))
        await peer.send(CloseConnection(code=1001))
        with trio.fail_after(1):
            await closed.wait()
    assert ws.close_reason is not None and ws.close_reason.code == 1001
    await ws.close()  # idempotent
    assert (await next_read_fails(ws)).code == 1001  # "late" is not delivered: we were closing


async def test_our_close_while_another_task_reads() -> None:
    ws, peer = pair()
    outcome: list[CloseReason] = []
    async with trio.open_nursery() as nursery:

        async def receiver() -> None:
            try:
                await ws.receive()
            except ConnectionClosed as exc:
                outcome.append(exc.reason)

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ws.close, 1000, "done")
        assert await peer.next_event() == CloseConnection(code=1000, reason="done")
        await peer.send(CloseConnection(code=1000, reason="done"))
    assert outcome == [CloseReason(1000, "done")]


async def test_tcp_loss_is_1006() -> None:
    ws, peer = pair()
    await peer.stream.aclose()
    assert (await next_read_fails(ws)) == CloseReason(1006, None)


async def test_message_too_big_closes_1009() -> None:
    ws, peer = pair(max_message_size=10)
    await peer.send(TextMessage(data="x" * 11))
    assert (await next_read_fails(ws)).code == 1009
    event = await peer.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1009


async def test_fragments_over_the_limit_are_not_accumulated() -> None:
    ws, peer = pair(max_message_size=10)
    await peer.send(TextMessage(data="x" * 6, message_finished=False))
    await peer.send(TextMessage(data="y" * 6, message_finished=False))
    assert (await next_read_fails(ws)).code == 1009
    assert ws._buf is None and ws._fragments == 0


async def test_protocol_error_from_the_peer_closes_with_its_code() -> None:
    ws, peer = pair()
    await peer.stream.send_all(b"\x81\x05hello")  # an unmasked client frame: RFC 6455 §5.1
    assert (await next_read_fails(ws)).code == 1002
    event = await peer.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1002


async def test_concurrent_senders_are_serialized_in_arrival_order() -> None:
    ws, peer = pair(lockstep=True)  # every write blocks until the peer reads
    with trio.fail_after(5):
        await _send_five(ws, peer)


async def _send_five(ws: ServerWebSocket, peer: Peer) -> None:
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(ws.send, f"m{i}")
            await trio.testing.wait_all_tasks_blocked()
        received: list[str] = []
        while len(received) < 5:
            for event in await peer.events():
                assert isinstance(event, TextMessage)
                received.append(str(event.data))
    assert received == [f"m{i}" for i in range(5)]


async def test_a_cancelled_waiting_sender_does_not_block_the_others() -> None:
    ws, peer = pair(lockstep=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.send, "first")
        await trio.testing.wait_all_tasks_blocked()
        waiting = trio.CancelScope()

        async def cancelled_sender() -> None:
            with waiting:
                await ws.send("cancelled")

        nursery.start_soon(cancelled_sender)
        await trio.testing.wait_all_tasks_blocked()
        waiting.cancel()
        nursery.start_soon(ws.send, "third")
        await trio.testing.wait_all_tasks_blocked()
        received: list[str] = []
        with trio.fail_after(5):
            while len(received) < 2:
                received += [str(e.data) for e in await peer.events() if isinstance(e, TextMessage)]
    assert received == ["first", "third"]


async def test_pong_write_is_bounded_when_the_peer_stops_reading(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ws, peer = pair(lockstep=True)  # the peer never reads: our Pong cannot be written
    outcome: list[CloseReason] = []

    async def read() -> None:
        try:
            await ws.receive()
        except ConnectionClosed as exc:
            outcome.append(exc.reason)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await peer.send(Ping(payload=b"x"))  # lockstep: returns once the server read it
    assert outcome == [CloseReason(1006, None)]
    assert trio.current_time() >= 2.0  # control_timeout


async def test_a_failed_write_does_not_hide_the_peers_close() -> None:
    """Review finding: jambonz's Close was buffered when one of our writes failed; the call
    must still end as jambonz ended it (1000), not as a drop (1006)."""
    ws, peer = pair()
    await peer.send(CloseConnection(code=1000, reason="call ended"))
    await peer.stream.aclose()
    with pytest.raises(ConnectionClosed):
        await ws.send("x")
    assert (await next_read_fails(ws)) == CloseReason(1000, "call ended")


async def test_a_write_cancelled_half_way_loses_the_socket(autojump_clock: trio.testing.MockClock) -> None:
    ws, _peer = pair(lockstep=True)  # the peer does not read: the write blocks
    with trio.move_on_after(1):
        await ws.send("never whole")
    assert ws.close_reason == CloseReason(1006, None)
    with pytest.raises(ConnectionClosed):
        await ws.send("after a partial frame")


async def test_a_writer_queued_behind_a_write_cut_half_way_writes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A write cancelled half-way may leave part of a frame on the wire: nothing may follow it.
    A writer already queued behind it then wrote its frame after the partial one (and returned
    as if written) before the caller aborted the stream; it must fail as the socket is lost."""
    ws, peer = pair(lockstep=True)  # writes block until the peer reads
    outcome: list[object] = []
    first = trio.CancelScope()

    async def first_writer() -> None:
        with first:
            await ws.send("first")

    async def queued_writer() -> None:
        try:
            await ws.send("second")
            outcome.append("written")
        except ConnectionClosed as exc:
            outcome.append(exc.reason)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first_writer)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(queued_writer)
        await trio.testing.wait_all_tasks_blocked()
        first.cancel()  # cut half-way: the queued writer takes its turn
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1):
            await peer.events()  # the peer reads again: a frame written after the cut shows
    assert outcome == [CloseReason(1006, None)]


async def test_finish_close_waits_for_the_peers_close_after_1009() -> None:
    ws, peer = pair(max_message_size=10)
    await peer.send(TextMessage(data="x" * 11))
    assert (await next_read_fails(ws)).code == 1009
    assert ws.close_unanswered
    event = await peer.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1009
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def finish() -> None:
            await ws.finish_close()
            done.set()

        nursery.start_soon(finish)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()  # still reading: the peer's Close has not come
        await peer.send(event.response())
    assert done.is_set() and not ws.close_unanswered
