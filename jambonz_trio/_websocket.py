"""The server side of one websocket: wsproto's frame layer driven directly on a trio stream.

Why not trio-websocket here (it still serves the client side: the fake jambonz and
``simulate``): issue 8's benchmark measured trio-websocket alone at 1.9x the CPU and 1.5x the
memory per call of the official Node SDK, against 1.2x and 0.7x for the same contract on
wsproto directly. The difference is structure, not code quality: a reader task and a message
channel per connection (two extra task wake-ups per frame, a task and a channel per call), and a
second HTTP parse of a handshake our admission has already judged.

Here the *caller* reads: :meth:`ServerWebSocket.receive` pulls bytes from the stream
only when the application wants the next message, so there is no task per connection and
no read-ahead buffer (TCP is the back-pressure). Whoever needs bytes while nobody else is
reading (``receive``, a closing handshake) reads for everyone; the others wait for that
read. Pongs are reported through a callback, so a keepalive needs no reader of its own. Control
frames (pong, the close reply) are written by the reader, shielded and bounded by
``control_timeout``.

Work per scheduling turn is bounded (issue 19 item 10 and its review): a read is handled in
batches that end with a complete message or after :data:`FRAMES_PER_TURN` frames, each batch
in a turn of its own, so a flood on many sockets cannot keep ``accept()`` and handshakes
waiting. With ``pacing`` every frame costs tokens of the socket's inbound budget - a message
or fragment one per started KiB, a control frame one - and while the budget is in debt the
socket is not read (TCP back-pressure slows the sender; nothing is dropped). More than
:data:`PING_BURST` Pings at once, or :data:`PING_RATE` a second sustained, close the socket
with 1008. With ``partial_budget`` the bytes of unfinished messages beyond
:data:`FREE_PARTIAL_BYTES` per socket draw on a budget shared by every socket of the server.

Cancellation: a cancelled read loses nothing (trio's ``receive_some`` is atomic); a write
cancelled half-way leaves the stream corrupt, so the engine shields its writes (as it did
with trio-websocket).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

from ._connection import CloseReason, ConnectionClosed
from ._pacing import TokenBucket, frame_cost

__all__ = ["Keepalive", "ReassemblyBudget", "ServerWebSocket", "accept_response"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_RECEIVE_BYTES = 16384
#: Frames one message may be split into. jambonz (Node ``ws``) sends every message as one
#: frame; the cap stops a peer that sends endless (or empty) continuation frames.
MAX_FRAGMENTS = 4096
#: Frames handled in one scheduling turn (wsproto spends 8-12 us a frame: a 16 KiB read of
#: tiny frames would otherwise be ~25 ms without a turn for anyone else).
FRAMES_PER_TURN = 32
#: Pings a peer may send: bursts of PING_BURST, PING_RATE a second sustained; more close the
#: socket with 1008. jambonz pings at most every 15 s, and only when configured to
#: (docs/protocol.md §2.2): this is 150 times that, sustained.
PING_RATE = 10.0
PING_BURST = 100.0
#: Bytes of an unfinished message a socket may hold without drawing on the server's
#: :class:`ReassemblyBudget`: a normal-sized message is never refused by the budget.
FREE_PARTIAL_BYTES = 64 * 1024
_OPEN = ConnectionState.OPEN
_CLOSED = ConnectionState.CLOSED
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_LOCAL_CLOSING = ConnectionState.LOCAL_CLOSING


def accept_response(key: bytes, subprotocol: str) -> bytes:
    """The ``101 Switching Protocols`` reply to an admitted upgrade with ``Sec-WebSocket-Key``
    ``key`` (RFC 6455 §4.2.2). No extensions: compression is never negotiated (S-10)."""
    accept = base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: "
        + accept
        + b"\r\nSec-WebSocket-Protocol: "
        + subprotocol.encode("ascii")
        + b"\r\n\r\n"
    )


_LOST = CloseReason(1006, None)


class Keepalive:
    """The Ping/Pong keepalive of a socket that a call does not carry (an audio socket, a
    relayed call's socket on the member holding it): :meth:`run` pings ``interval`` seconds
    after the last Pong and returns once the socket fails; the socket's reader hands every
    Pong to :meth:`pong`. (A call's own socket is kept alive by its engine, on its timer.)"""

    __slots__ = ("_pong", "_prefix", "_sent")

    def __init__(self, prefix: bytes) -> None:
        #: the payloads' start (``prefix`` + the Ping's number): tells them from other Pings
        self._prefix = prefix
        self._sent = 0
        self._pong = trio.Event()

    def owns(self, payload: bytes) -> bool:
        """Whether a Pong's ``payload`` answers one of this keepalive's Pings (answered or stale)."""
        return payload.startswith(self._prefix)

    def pong(self, payload: bytes) -> None:
        """A Pong came (sync): the latest Ping is answered if it is the one."""
        if payload == self._prefix + str(self._sent).encode():
            self._pong.set()

    async def run(
        self, ws: ServerWebSocket, *, interval: float, pong_timeout: float, send_timeout: float
    ) -> str:
        """Ping until the socket fails; returns why: ``"closed"`` (a Ping found it closed),
        ``"send timed out"`` (a Ping not written within ``send_timeout``: the socket is then
        unusable) or ``"ping timeout"`` (its Pong more than ``pong_timeout`` late). Never returns
        while the peer answers; cancel it to stop it."""
        while True:
            await trio.sleep(interval)
            self._sent += 1
            self._pong = pong = trio.Event()
            with trio.CancelScope(shield=True, deadline=trio.current_time() + send_timeout) as scope:
                try:
                    await ws.ping(self._prefix + str(self._sent).encode())
                except ConnectionClosed:
                    return "closed"
            if scope.cancelled_caught:
                return "send timed out"
            # the Pong is due ``pong_timeout`` after the Ping left, however long the write took
            with trio.move_on_after(pong_timeout):
                await pong.wait()
            if not pong.is_set():
                return "ping timeout"


class ReassemblyBudget:
    """Bytes of unfinished inbound messages that the sockets of one server hold beyond their
    first :data:`FREE_PARTIAL_BYTES` each (the rest of a fragmented message, or of a frame
    that spans reads). Shared by the sockets of a server; a socket whose next piece does not
    fit is closed with 1009."""

    __slots__ = ("held", "limit", "refused")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        #: sockets closed because the budget was full
        self.refused = 0

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; ``False`` (nothing reserved) if they do not fit."""
        if self.held + n > self.limit:
            self.refused += 1
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        """Return ``n`` bytes reserved with :meth:`take`."""
        self.held -= n


class ServerWebSocket:
    """One accepted websocket (after the 101 reply has been written): a
    :class:`~jambonz_trio._connection.Connection`.

    ``close_reason`` is ``None`` while open, then the :class:`CloseReason` (the peer's when the
    peer closed, ours while our close handshake runs, 1006 when the connection was lost).

    ``pacing``: the socket's inbound budget (every frame spends it; over it, reading stops
    until it is back), ``None`` for none. ``partial_budget``: the server's budget for
    unfinished messages beyond :data:`FREE_PARTIAL_BYTES` (``None``: only
    ``max_message_size`` bounds them). Whoever owns the socket calls :meth:`release_partial`
    when done with it, however it ended.
    """

    #: the engine's keepalive and receipt Pings go through this socket
    pings = True
    receipts = True

    __slots__ = (
        "_buf",
        "_bytes_in",
        "_charged",
        "_control_timeout",
        "_fragments",
        "_frame_size",
        "_max_fragments",
        "_max_size",
        "_max_text",
        "_messages",
        "_pacing",
        "_partial_budget",
        "_pending",
        "_pings",
        "_proto",
        "_pumped",
        "_reading",
        "_resume_at",
        "_send_waiters",
        "_sending",
        "_stream",
        "_torn",
        "_unprocessed",
        "close_reason",
        "on_paused",
        "on_pong",
        "pauses",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        trailing: bytes = b"",
        max_message_size: int,
        control_timeout: float,
        max_fragments: int = MAX_FRAGMENTS,
        max_text_size: int | None = None,
        pacing: TokenBucket | None = None,
        partial_budget: ReassemblyBudget | None = None,
    ) -> None:
        self._stream = stream
        # bytes the client sent right after its request head (not waiting for the 101)
        self._proto = Connection(ConnectionType.SERVER, trailing_data=trailing)
        self._unprocessed = bool(trailing)
        self._max_size = max_message_size  # in bytes (UTF-8 for text)
        # text messages may have a smaller bound of their own (audio sockets: binary audio is
        # big, their JSON messages are small)
        self._max_text = max_message_size if max_text_size is None else min(max_text_size, max_message_size)
        self._max_fragments = max_fragments
        self._control_timeout = control_timeout
        self._messages: list[str | bytes] = []  # usually 0 or 1 (a deque costs ~700 B even empty)
        # a message arriving in pieces (several frames, or one frame over several reads),
        # kept as UTF-8 bytes: one byte per byte, whatever the number or size of the pieces
        self._buf: bytearray | None = None
        self._fragments = 0
        self._bytes_in = 0
        # inbound work: the socket's budget, when reading may resume (0.0: now), wsproto's
        # events of the last read where a batch stopped (frames for the next turn), the size
        # of the frame arriving in pieces, the Ping allowance (made at the first Ping)
        self._pacing = pacing
        self._resume_at = 0.0
        self._pending: Iterator[Event] | None = None
        self._frame_size = 0
        self._pings: TokenBucket | None = None
        #: how many times the inbound budget stopped reading
        self.pauses = 0
        #: Called (synchronously, by the reading task) when the inbound budget first stops
        #: reading this socket.
        self.on_paused: Callable[[], None] | None = None
        # bytes of the unfinished message drawn from the server's budget
        self._partial_budget = partial_budget
        self._charged = 0
        self._reading = False
        self._pumped: trio.Event | None = None
        self._sending = False
        self._torn = False  # a write was cut half-way: nothing more may be written
        self._send_waiters: trio.lowlevel.ParkingLot | None = None  # made when writers queue
        self.close_reason: CloseReason | None = None
        #: Called (synchronously, by the reading task) with the payload of every Pong.
        self.on_pong: Callable[[bytes], None] | None = None

    # -- receiving -----------------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The next complete message (text as ``str``, binary as ``bytes``).

        Blocks until one arrives; hands out one message per scheduling turn. Messages that
        arrived before the peer's Close are still delivered. Raises :class:`ConnectionClosed`
        once the socket is closed or closing.
        """
        if self._messages:
            # parsed with an earlier one: one message per scheduling turn (issue 19 item 10)
            await trio.lowlevel.checkpoint()
        while True:
            if self._messages:
                return self._messages.pop(0)
            if self.close_reason is not None:
                raise ConnectionClosed(self.close_reason)
            await self._read()

    async def _read(self) -> None:
        """Process the next batch of frames: those a batch left, else what one read from the
        stream brings (after waiting off any inbound debt); if another task is already
        reading, wait for that read instead."""
        if self._reading:
            if self._pumped is None:
                self._pumped = trio.Event()
            await self._pumped.wait()
            return
        self._reading = True
        try:
            proto = self._proto
            resume = self._resume_at
            if resume:  # over the inbound budget: neither read nor parse until it is back
                await trio.sleep_until(resume)
                self._resume_at = 0.0
            elif self._pending is not None:
                await trio.lowlevel.checkpoint()  # one batch of frames per scheduling turn
            if self._pending is not None:
                pass  # frames wsproto already holds come before reading more
            elif self._unprocessed:
                self._unprocessed = False  # bytes that came with the request head
            else:
                try:
                    data = await self._stream.receive_some(_RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                self._bytes_in += len(data)
                if proto.state is _CLOSED:
                    if not data:
                        self._mark_closed(_LOST)
                    return  # bytes after the close handshake mean nothing
                proto.receive_data(data or None)  # type: ignore[arg-type] # bytearray works too
            control = self._process()
            if control:
                await self._send_control(control)
        finally:
            self._reading = False
            pumped = self._pumped
            if pumped is not None:
                self._pumped = None
                pumped.set()

    def _process(self) -> bytes:
        """Turn wsproto's events into messages and state, one batch: up to
        :data:`FRAMES_PER_TURN` frames, or fewer if the inbound budget runs out (each frame
        spends its cost as it is parsed); return control frames to write."""
        proto = self._proto
        pacing = self._pacing
        now = trio.current_time() if pacing is not None else 0.0
        out = b""
        frames = 0
        events = self._pending
        if events is None:
            events = proto.events()
        self._pending = None
        for event in events:
            kind = type(event)
            cost = 0  # tokens: a data frame one per started KiB, a control frame one
            if kind is TextMessage or kind is BytesMessage:
                assert isinstance(event, (TextMessage, BytesMessage))
                data = event.data
                if event.frame_finished:
                    cost = frame_cost(self._frame_size + len(data))
                    self._frame_size = 0
                else:
                    self._frame_size += len(data)  # (a frame arriving over several reads)
                if proto.state is not _OPEN or self.close_reason is not None:
                    pass  # we are closing: late messages are not delivered
                elif event.message_finished and self._buf is None:  # the whole message at once
                    limit = self._max_text if kind is TextMessage else self._max_size
                    if _over(data, limit):
                        out += self._too_big(limit=limit)
                    else:
                        self._messages.append(data if isinstance(data, str) else bytes(data))
                else:
                    out += self._reassemble(data, event.frame_finished, event.message_finished, kind)
            elif kind is Ping:
                assert isinstance(event, Ping)
                cost = 1
                if proto.state is _OPEN and self.close_reason is None:
                    if self._ping_allowed(now):
                        out += proto.send(event.response())
                    else:
                        out += self._refuse(1008, "ping flood")
            elif kind is Pong:
                assert isinstance(event, Pong)
                cost = 1
                if self.on_pong is not None:
                    self.on_pong(bytes(event.payload))
            elif kind is CloseConnection:
                assert isinstance(event, CloseConnection)
                if proto.state is _REMOTE_CLOSING:
                    out += proto.send(event.response())  # the peer closed: answer its Close
                elif proto.state is _OPEN:
                    # a frame the peer got wrong (wsproto's ParseFailed): close with its code
                    out += proto.send(CloseConnection(code=event.code, reason=event.reason))
                self._mark_closed(CloseReason(event.code, event.reason or None))
            if cost:
                frames += 1
                if pacing is not None:
                    wait = pacing.spend(cost, now)
                    if wait > 0:  # over the budget: the rest waits until it is back
                        self._resume_at = now + wait
                        self.pauses += 1
                        if self.pauses == 1 and self.on_paused is not None:
                            self.on_paused()
                        self._pending = events
                        break
                if frames >= FRAMES_PER_TURN:
                    self._pending = events
                    break
        return out

    def _reassemble(
        self, data: str | bytes | bytearray, frame_finished: bool, message_finished: bool, kind: type
    ) -> bytes:
        """Add a piece of a message arriving in several frames (or reads), kept as UTF-8
        bytes: one byte per byte, whatever the number or size of the pieces. Past a limit
        the socket is closed with 1009: returns the Close frame to write."""
        chunk = data.encode() if isinstance(data, str) else data
        buf = self._buf
        if buf is None:
            buf = self._buf = bytearray()
        if frame_finished:
            self._fragments += 1
        size = len(buf) + len(chunk)
        limit = self._max_text if kind is TextMessage else self._max_size
        if size > limit:
            return self._too_big(limit=limit)
        if self._fragments > self._max_fragments:
            return self._too_big(f"message in over {self._max_fragments} frames")
        if not self._hold(size):
            return self._too_big("too many unfinished messages on the server")
        buf += chunk
        if message_finished:
            self._messages.append(buf.decode() if kind is TextMessage else bytes(buf))
            self.release_partial()
        return b""

    def _hold(self, size: int) -> bool:
        """Whether the unfinished message may grow to ``size`` bytes: within the socket's
        free bytes, or with room in the server's budget (then drawn from it)."""
        budget = self._partial_budget
        need = size - FREE_PARTIAL_BYTES - self._charged
        if budget is None or need <= 0:
            return True
        if not budget.take(need):
            return False
        self._charged += need
        return True

    def release_partial(self) -> None:
        """Drop the unfinished message, if any, and return what it drew from the server's
        budget (idempotent; done at every close, and by the server when the socket's task
        ends)."""
        self._buf, self._fragments = None, 0
        if self._charged:
            assert self._partial_budget is not None
            self._partial_budget.give(self._charged)
            self._charged = 0

    def _ping_allowed(self, now: float) -> bool:
        pings = self._pings
        if pings is None:
            pings = self._pings = TokenBucket(PING_RATE, PING_BURST, now)
        return pings.spend(1, now) == 0.0

    def _too_big(self, reason: str | None = None, *, limit: int | None = None) -> bytes:
        return self._refuse(
            1009, reason or f"message over {self._max_size if limit is None else limit} bytes"
        )

    def _refuse(self, code: int, reason: str) -> bytes:
        """Close with ``code``: the frame to write."""
        self._mark_closed(CloseReason(code, reason))
        return self._proto.send(CloseConnection(code=code, reason=reason))

    def _mark_closed(self, reason: CloseReason) -> None:
        if self.close_reason is None or reason.code != 1006:
            # the peer's Close replaces ours (as trio-websocket does); a lost TCP connection
            # (1006) replaces nothing we already know
            self.close_reason = reason
        self.release_partial()  # an unfinished message will never be delivered

    # -- sending -------------------------------------------------------------------------------

    async def send(self, message: str | bytes) -> None:
        """Send one message (a text frame for ``str``).

        Blocks until the bytes are handed to the OS; a cancellation half-way through leaves the
        stream unusable (shield the call). Raises :class:`ConnectionClosed` if the socket is
        closed or closing, or the write fails.
        """
        if self.close_reason is not None or self._proto.state is not _OPEN:
            raise ConnectionClosed(self.close_reason or _LOST)
        if isinstance(message, str):
            data = self._proto.send(TextMessage(data=message))
        else:
            data = self._proto.send(BytesMessage(data=message))
        await self._send(data)

    async def send_then_ping(self, message: str, payload: bytes) -> None:
        """Send a text message and a Ping right after it, in one write (blocks and raises like
        :meth:`send`): the Pong, reported like any other, comes after the peer read the
        message."""
        proto = self._proto
        if self.close_reason is not None or proto.state is not _OPEN:
            raise ConnectionClosed(self.close_reason or _LOST)
        await self._send(proto.send(TextMessage(data=message)) + proto.send(Ping(payload=payload)))

    async def ping(self, payload: bytes) -> None:
        """Send a Ping (blocks like :meth:`send`). Its Pong, like any Pong, is reported
        to :attr:`on_pong` by whichever task reads next; the caller owns the timeout.

        Raises :class:`ConnectionClosed` if the socket is closed or closing.
        """
        if self.close_reason is not None or self._proto.state is not _OPEN:
            raise ConnectionClosed(self.close_reason or _LOST)
        await self._send(self._proto.send(Ping(payload=payload)))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Start the closing handshake and wait for the peer's Close; the caller owns the
        timeout (then abort the stream). Does nothing if the socket is already closed or
        closing."""
        if self.close_reason is not None or self._proto.state is not _OPEN:
            return
        self._mark_closed(CloseReason(code, reason))
        self._messages.clear()
        try:
            await self._send(self._proto.send(CloseConnection(code=code, reason=reason)))
        except ConnectionClosed:
            return
        await self.finish_close()

    @property
    def close_unanswered(self) -> bool:
        """We sent a Close (by :meth:`close`, or because of a message too big or a bad frame)
        and the peer's has not arrived yet."""
        return self._proto.state is _LOCAL_CLOSING

    async def finish_close(self) -> None:
        """Read (and drop) until the peer answers our Close, the connection ends, or the peer
        has sent ``max_message_size`` + 64 KiB more (it is not stopping: a flood is cut); the
        caller owns the timeout. A server that closed TCP right after its Close would make the
        peer see a reset (1006) instead of our code when unread bytes remain."""
        budget = self._bytes_in + self._max_size + 65536
        while self._proto.state is _LOCAL_CLOSING and self._bytes_in < budget:
            await self._read()

    async def _send(self, data: bytes) -> None:
        # One writer at a time, first come first served (ownership is handed over on release,
        # so a task arriving later cannot overtake the ones parked).
        if self._sending:
            waiters = self._send_waiters
            if waiters is None:
                waiters = self._send_waiters = trio.lowlevel.ParkingLot()
            await waiters.park()
        else:
            self._sending = True
        try:
            if self._torn:  # a writer that was queued behind a write cut half-way
                raise ConnectionClosed(_LOST)
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # Not marked closed: a Close from the peer may still wait to be read, and it is
            # the better account of the end (receive reports 1006 once the stream ends).
            raise ConnectionClosed(_LOST) from None
        except BaseException:
            # Cancelled half-way (or worse): part of a frame may be on the wire, so nothing
            # may follow it, not even the frames of writers queued behind this one. The
            # socket is lost; the caller aborts the stream.
            self._torn = True
            self._mark_closed(_LOST)
            raise
        finally:
            waiters = self._send_waiters
            if waiters is None or not waiters.unpark():
                self._sending = False

    async def _send_control(self, data: bytes) -> None:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self._control_timeout) as scope:
            try:
                await self._send(data)
            except ConnectionClosed:
                return
        if scope.cancelled_caught:
            self._mark_closed(_LOST)
            await trio.aclose_forcefully(self._stream)

    async def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake."""
        await trio.aclose_forcefully(self._stream)


def _over(data: str | bytes | bytearray, limit: int) -> bool:
    """Whether a message is over ``limit`` bytes (UTF-8 for text: wsproto decoded it, so it
    encodes); text is encoded only when its length alone cannot tell."""
    n = len(data)
    if n > limit:
        return True
    if not isinstance(data, str) or n * 4 <= limit or data.isascii():
        return False
    return len(data.encode()) > limit
