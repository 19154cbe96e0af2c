"""The server side of one websocket: wsproto's frame layer driven directly on a trio stream.

Why not trio-websocket here (it still serves the client side: the fake jambonz and
``simulate``): issue 8's benchmark measured trio-websocket alone at 1.9x the CPU and 1.5x the
memory per call of the official Node SDK, against 1.2x and 0.7x for the same contract on
wsproto directly. The difference is structure, not code quality: a reader task and a message
channel per connection (two extra task wake-ups per frame, a task and a channel per call), and a
second HTTP parse of a handshake our admission has already judged.

Here the *caller* reads: :meth:`ServerWebSocket.get_message` pulls bytes from the stream
only when the application wants the next message, so there is no task per connection and
no read-ahead buffer (TCP is the back-pressure). Whoever needs bytes while nobody else is
reading (``get_message``, a closing handshake) reads for everyone; the others wait for that
read. Pongs are reported through a callback, so a keepalive needs no reader of its own. Control
frames (pong, the close reply) are written by the reader, shielded and bounded by
``control_timeout``.

Cancellation: a cancelled read loses nothing (trio's ``receive_some`` is atomic); a write
cancelled half-way leaves the stream corrupt, so the engine shields its writes (as it did
with trio-websocket).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import attrs
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

__all__ = ["CloseReason", "ServerWebSocket", "WebSocketClosed", "accept_response"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_RECEIVE_BYTES = 16384
#: Frames one message may be split into. jambonz (Node ``ws``) sends every message as one
#: frame; the cap stops a peer that sends endless (or empty) continuation frames.
MAX_FRAGMENTS = 4096
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


@attrs.frozen
class CloseReason:
    """How a websocket closed: the close code (1006 when the TCP connection was lost without
    a Close frame) and the reason text, if any."""

    code: int | None
    reason: str | None


class WebSocketClosed(Exception):
    """The websocket is closed (or closing): no more messages in or out."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason)
        self.reason = reason


_LOST = CloseReason(1006, None)


class ServerWebSocket:
    """One accepted websocket (after the 101 reply has been written).

    ``closed`` is ``None`` while open, then the :class:`CloseReason` (the peer's when the peer
    closed, ours while our close handshake runs, 1006 when the connection was lost).
    """

    __slots__ = (
        "_buf",
        "_bytes_in",
        "_control_timeout",
        "_fragments",
        "_max_fragments",
        "_max_size",
        "_max_text",
        "_messages",
        "_proto",
        "_pumped",
        "_reading",
        "_send_waiters",
        "_sending",
        "_stream",
        "_unprocessed",
        "closed",
        "on_pong",
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
        self._reading = False
        self._pumped: trio.Event | None = None
        self._sending = False
        self._send_waiters = trio.lowlevel.ParkingLot()
        self.closed: CloseReason | None = None
        #: Called (synchronously, by the reading task) with the payload of every Pong.
        self.on_pong: Callable[[bytes], None] | None = None

    # -- receiving -----------------------------------------------------------------------------

    async def get_message(self) -> str | bytes:
        """The next complete message (text as ``str``, binary as ``bytes``).

        Blocks until one arrives. Messages that arrived before the peer's Close are still
        delivered. Raises :class:`WebSocketClosed` once the socket is closed or closing.
        """
        while True:
            if self._messages:
                return self._messages.pop(0)
            if self.closed is not None:
                raise WebSocketClosed(self.closed)
            await self._read()

    async def _read(self) -> None:
        """Read once from the stream and process what came; if another task is already
        reading, wait for that read instead."""
        if self._reading:
            if self._pumped is None:
                self._pumped = trio.Event()
            await self._pumped.wait()
            return
        self._reading = True
        try:
            proto = self._proto
            if self._unprocessed:
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
        """Turn wsproto's events into messages and state; return control frames to write."""
        proto = self._proto
        out = b""
        for event in proto.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                assert isinstance(event, (TextMessage, BytesMessage))
                if proto.state is not _OPEN or self.closed is not None:
                    continue  # we are closing: late messages are not delivered
                data = event.data
                buf = self._buf
                limit = self._max_text if kind is TextMessage else self._max_size
                if event.message_finished and buf is None:  # the whole message at once
                    if _over(data, limit):
                        out += self._too_big(limit=limit)
                    else:
                        self._messages.append(data if isinstance(data, str) else bytes(data))
                    continue
                chunk = data.encode() if isinstance(data, str) else data
                if buf is None:
                    buf = self._buf = bytearray()
                if event.frame_finished:
                    self._fragments += 1
                if len(buf) + len(chunk) > limit:
                    out += self._too_big(limit=limit)
                elif self._fragments > self._max_fragments:
                    out += self._too_big(f"message in over {self._max_fragments} frames")
                else:
                    buf += chunk
                    if event.message_finished:
                        self._buf, self._fragments = None, 0
                        self._messages.append(buf.decode() if kind is TextMessage else bytes(buf))
            elif kind is Ping:
                assert isinstance(event, Ping)
                if proto.state is _OPEN:
                    out += proto.send(event.response())
            elif kind is Pong:
                assert isinstance(event, Pong)
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
        return out

    def _too_big(self, reason: str | None = None, *, limit: int | None = None) -> bytes:
        self._buf, self._fragments = None, 0
        reason = reason or f"message over {self._max_size if limit is None else limit} bytes"
        self._mark_closed(CloseReason(1009, reason))
        return self._proto.send(CloseConnection(code=1009, reason=reason))

    def _mark_closed(self, reason: CloseReason) -> None:
        if self.closed is None or reason.code != 1006:
            # the peer's Close replaces ours (as trio-websocket does); a lost TCP connection
            # (1006) replaces nothing we already know
            self.closed = reason

    # -- sending -------------------------------------------------------------------------------

    async def send_message(self, message: str | bytes) -> None:
        """Send one message (a text frame for ``str``).

        Blocks until the bytes are handed to the OS; a cancellation half-way through leaves the
        stream unusable (shield the call). Raises :class:`WebSocketClosed` if the socket is
        closed or closing, or the write fails.
        """
        if self.closed is not None or self._proto.state is not _OPEN:
            raise WebSocketClosed(self.closed or _LOST)
        if isinstance(message, str):
            data = self._proto.send(TextMessage(data=message))
        else:
            data = self._proto.send(BytesMessage(data=message))
        await self._send(data)

    async def send_ping(self, payload: bytes) -> None:
        """Send a Ping (blocks like :meth:`send_message`). Its Pong, like any Pong, is reported
        to :attr:`on_pong` by whichever task reads next; the caller owns the timeout.

        Raises :class:`WebSocketClosed` if the socket is closed or closing.
        """
        if self.closed is not None or self._proto.state is not _OPEN:
            raise WebSocketClosed(self.closed or _LOST)
        await self._send(self._proto.send(Ping(payload=payload)))

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Start the closing handshake and wait for the peer's Close; the caller owns the
        timeout (then abort the stream). Does nothing if the socket is already closed or
        closing."""
        if self.closed is not None or self._proto.state is not _OPEN:
            return
        self._mark_closed(CloseReason(code, reason))
        self._messages.clear()
        try:
            await self._send(self._proto.send(CloseConnection(code=code, reason=reason)))
        except WebSocketClosed:
            return
        await self.finish_close()

    @property
    def close_unanswered(self) -> bool:
        """We sent a Close (by :meth:`aclose`, or because of a message too big or a bad frame)
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
            await self._send_waiters.park()
        else:
            self._sending = True
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # Not marked closed: a Close from the peer may still wait to be read, and it is
            # the better account of the end (get_message reports 1006 once the stream ends).
            raise WebSocketClosed(_LOST) from None
        except BaseException:
            # Cancelled half-way (or worse): part of a frame may be on the wire, so nothing
            # may follow it. The socket is lost; the caller aborts the stream.
            self._mark_closed(_LOST)
            raise
        finally:
            if not self._send_waiters.unpark():
                self._sending = False

    async def _send_control(self, data: bytes) -> None:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self._control_timeout) as scope:
            try:
                await self._send(data)
            except WebSocketClosed:
                return
        if scope.cancelled_caught:
            self._mark_closed(_LOST)
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
