"""How the fake jambonz reaches the app: connectors and the WebSocket opening handshake.

jambonz is the WebSocket *client*: it dials the app's URL offering exactly one subprotocol,
``ws.jambonz.org``, with an optional ``Authorization: Basic`` header, ``User-Agent: jambonz``
and a 1.5 s handshake timeout, and aborts if the 101 answer does not echo the subprotocol
(protocol.md §2.2).
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlsplit

import attrs
import trio
import trio_websocket

from .._sync import leaves
from ._errors import ConnectFailed, HandshakeRejected, HandshakeTimeout, SubprotocolMissing

__all__ = [
    "SUBPROTOCOL",
    "Connector",
    "TcpConnector",
    "abort_stream",
    "basic_auth_header",
    "handshake",
    "tcp_connector",
]

#: The websocket subprotocol jambonz asks for (and the fake sends).
SUBPROTOCOL = "ws.jambonz.org"

#: Opens a fresh byte stream to the app. Called once per connection attempt (the first
#: socket and every reconnect). Any ``trio.abc.Stream`` works, e.g. one half of
#: ``trio.testing.memory_stream_pair()`` whose other half is served by the app.
Connector = Callable[[], Awaitable[trio.abc.Stream]]


@attrs.frozen
class TcpConnector:
    """Connects over TCP (TLS for ``wss://``) to the app (see :func:`tcp_connector`).

    Attributes:
        host: host name or address.
        port: TCP port.
        path: request target (path and query) sent in the upgrade request.
        ssl_context: TLS settings for ``wss://``; ``None`` for plain ``ws://``.
    """

    host: str
    port: int
    path: str
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, eq=False)

    @property
    def host_header(self) -> str:
        """The ``Host`` header value."""
        return f"{self.host}:{self.port}"

    async def __call__(self) -> trio.abc.Stream:
        """Open the connection (a checkpoint). Raises ``OSError`` on failure (TLS errors
        surface on the first read or write)."""
        if self.ssl_context is not None:
            return await trio.open_ssl_over_tcp_stream(self.host, self.port, ssl_context=self.ssl_context)
        return await trio.open_tcp_stream(self.host, self.port)


def tcp_connector(url: str, *, ssl_context: ssl.SSLContext | None = None) -> TcpConnector:
    """A connector for a ``ws://`` or ``wss://host[:port][/path][?query]`` URL.

    Like jambonz, a ``#fragment`` (jambonz's ``#rc=..&rp=..`` retry settings) is stripped.
    The path and query become the request target unless ``open_fake_call(path=...)`` says
    otherwise. For ``wss://``, ``ssl_context`` defaults to the system's default verification.

    Raises:
        ValueError: not a ``ws://`` / ``wss://`` URL.
    """
    expected = f"expected a ws:// or wss://host[:port]/path URL, got {url!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number, a bad [IPv6] host
        raise ValueError(f"{expected} ({exc})") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(expected)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if parts.scheme == "wss":
        context = ssl_context or ssl.create_default_context()
        return TcpConnector(parts.hostname, port or 443, path, context)
    return TcpConnector(parts.hostname, port or 80, path)


def basic_auth_header(username: str, password: str) -> tuple[bytes, bytes]:
    """The ``Authorization: Basic ...`` header jambonz sends when the hook has credentials."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return (b"authorization", f"Basic {token}".encode("ascii"))


class _SniffingStream(trio.abc.Stream):
    """The fake's end of one connection: it reads the handshake answer itself, then hands the
    app's frames to trio-websocket the way jambonz's client (Node ``ws``) reads them.

    trio-websocket does not report a 101 with a wrong subprotocol cleanly (wsproto rejects it
    and the reader task crashes with an h11 error), so the fake reads the answer itself.

    Delivery, as in jambonz: Node ``ws`` handles a connection's frames strictly in order, each
    message going to ws-requestor's handler before the next frame is even parsed, and answers
    a Ping from that same loop. So after the handshake this stream releases the app's frames
    one at a time, and a frame only once every message released before it has been *read*
    (:meth:`message_read`: the fake processed it, like ``_onMessage`` returning). A Pong from
    the fake therefore proves, as one from jambonz does, that every message before the Ping was
    read. Bytes the app wrote that were not released when the connection dies are lost, like
    the unread bytes of a TCP connection that dies (:meth:`cut_after`).
    """

    def __init__(self, inner: trio.abc.Stream, on_eof: trio.Event) -> None:
        self.inner = inner
        self.head = b""
        self.eof = False
        self._on_eof = on_eof
        self._sniffing = True
        self._buf = bytearray()  # the app's bytes after the head, not released yet
        self._out = bytearray()  # released, not yet handed to trio-websocket
        self._released = 0  # complete messages released
        self._read = 0  # ... and read by the fake
        self._changed = trio.Event()
        self._passthrough = False  # something that is not a frame stream: no gating
        self._stopped = False  # the connection is dying: nothing more is read from it
        self._closed = False
        self._reader_gone = False
        self._closing = False  # the fake sent its Close: Pings are not answered any more
        self._sent = 0
        self._received = 0
        self._send_limit: int | None = None
        self._receive_limit: int | None = None
        self._on_cut: Callable[[], None] | None = None

    # -- delivery control (used by the fake) ---------------------------------------------

    def message_read(self) -> None:
        """The fake has processed the message trio-websocket handed it last."""
        self._read += 1
        self._wake()

    @property
    def unread(self) -> bool:
        """A message was released to trio-websocket and not processed yet."""
        return self._read < self._released

    def stop(self) -> None:
        """The connection is dying: read nothing more from it (bytes the app wrote that did
        not reach the fake are lost; messages that did are still read, in order)."""
        self._stopped = True
        self._wake()

    def closing(self) -> None:
        """The fake sent its Close: RFC 6455 lets it ignore Pings from then on (and
        trio-websocket would fail answering one, python-trio/trio-websocket#184)."""
        self._closing = True

    def cut_after(self, *, sent: int | None, received: int | None, on_cut: Callable[[], None]) -> None:
        """Kill the connection once ``sent`` more bytes were written to the app or ``received``
        more bytes read from it (``on_cut`` is called then, once); bytes past the cut never
        arrive."""
        self._send_limit = None if sent is None else self._sent + sent
        self._receive_limit = None if received is None else self._received + received
        self._on_cut = on_cut
        if self._receive_limit is not None and self._received >= self._receive_limit:
            self._cut()

    def _cut(self) -> None:
        callback, self._on_cut = self._on_cut, None
        self._send_limit = self._receive_limit = None
        self._stopped = True
        self._wake()
        if callback is not None:
            callback()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- the stream ------------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        limit = self._send_limit
        if limit is not None and self._sent + len(data) >= limit:
            part = bytes(data)[: limit - self._sent]
            if part:
                await self._send(part)
            self._cut()
            raise trio.BrokenResourceError("the connection was cut")
        await self._send(data)

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.inner.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if self._sniffing:
                self.eof = True  # the app hung up before the upgrade went out
                self._on_eof.set()
            raise
        self._sent += len(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._sniffing:
            data = await self.inner.receive_some(max_bytes)
            self.head += bytes(data)
            if not data:
                self.eof = True  # the app hung up before answering the upgrade
                self._on_eof.set()
            end = self.head.find(b"\r\n\r\n")
            if end >= 0 or len(self.head) > 16384 or not data:
                self._sniffing = False
                if end >= 0:
                    rest = len(self.head) - (end + 4)
                    if rest:
                        self._buf += data[len(data) - rest :]
                        data = data[: len(data) - rest]
                        self._received += rest
                else:
                    self._passthrough = True
            return data
        while True:
            if self._out:
                n = len(self._out) if max_bytes is None else min(max_bytes, len(self._out))
                chunk = bytes(self._out[:n])
                del self._out[:n]
                return chunk
            if self._passthrough:
                if self._buf:
                    chunk, self._buf = bytes(self._buf), bytearray()
                    return chunk
                return await self.inner.receive_some(max_bytes)
            size = _frame_size(self._buf)
            if size is not None and size < 0:
                self._passthrough = True  # not a frame stream the fake can follow
                continue
            if size is not None:
                if self._read < self._released:
                    changed = self._changed
                    await changed.wait()  # jambonz reads one message at a time
                    continue
                self._release(size)
                continue
            if self._stopped:
                if self._closed:
                    raise trio.ClosedResourceError("the connection was cut")
                changed = self._changed
                await changed.wait()  # dying: what was not read yet never arrives
                continue
            if self.eof:
                return b""
            data = await self.inner.receive_some(65536)
            if not data:
                self.eof = True
                continue
            limit = self._receive_limit
            if limit is not None and self._received + len(data) >= limit:
                data = data[: limit - self._received]
                self._buf += data
                self._received += len(data)
                self._cut()
                continue
            self._buf += data
            self._received += len(data)

    @property
    def drained(self) -> bool:
        """Every message that had reached the fake was read (what is left is incomplete), or
        the fake stopped reading."""
        if self._reader_gone:
            return True
        size = _frame_size(self._buf)
        return self._read >= self._released and (size is None or size < 0 or self._passthrough)

    async def wait_drained(self) -> None:
        """Block until :attr:`drained` (after :meth:`stop`)."""
        while not self.drained:
            changed = self._changed
            await changed.wait()

    def reader_gone(self) -> None:
        """The fake's reader of this connection ended: nothing more will be read."""
        self._reader_gone = True
        self._wake()

    def _release(self, size: int) -> None:
        frame = self._buf[:size]
        del self._buf[:size]
        opcode = frame[0] & 0x0F
        if opcode == 0x9 and self._closing:
            self._wake()
            return  # a Ping after our Close: ignored
        if frame[0] & 0x80 and opcode in (0x0, 0x1, 0x2):
            self._released += 1  # this frame completes a message
        self._out += frame
        self._wake()

    async def aclose(self) -> None:
        self._stopped = self._closed = True
        self._wake()
        await self.inner.aclose()

    def answer(self) -> tuple[int | None, str | None]:
        """(status, selected subprotocol) parsed from the sniffed HTTP answer, if any."""
        head = self.head.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        status: int | None = None
        parts = lines[0].split(" ", 2) if lines else []
        if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
            status = int(parts[1])
        proto: str | None = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-protocol":
                proto = value.strip()
        return status, proto


_MAX_FRAME = 64 * 1024 * 1024  # past this a length is not something the fake follows


def _frame_size(buf: bytearray) -> int | None:
    """The size of the complete WebSocket frame at the start of ``buf``; ``None`` if more
    bytes are needed; ``-1`` if it is not a frame the fake can follow."""
    if len(buf) < 2:
        return None
    if buf[0] & 0x70 or (buf[0] & 0x0F) not in (0x0, 0x1, 0x2, 0x8, 0x9, 0xA):
        return -1  # reserved bits or opcode: let trio-websocket fail it
    length = buf[1] & 0x7F
    pos = 2
    if length == 126:
        if len(buf) < 4:
            return None
        length, pos = int.from_bytes(buf[2:4], "big"), 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length, pos = int.from_bytes(buf[2:10], "big"), 10
        if length > _MAX_FRAME:
            return -1
    if buf[1] & 0x80:
        pos += 4  # masked (a server must not, but the fake does not judge that here)
    size = pos + length
    return size if len(buf) >= size else None


async def handshake(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    *,
    host: str,
    resource: str,
    extra_headers: list[tuple[bytes, bytes]],
    within: float,
    max_message_size: int,
    subprotocol: str = SUBPROTOCOL,
    require_subprotocol: bool = True,
) -> tuple[trio_websocket.WebSocketConnection, _SniffingStream]:
    """Run the client handshake on ``stream``; trio-websocket's reader runs in ``nursery``.

    Must be called inside a nursery dedicated to this connection: on failure that nursery is
    cancelled by the caller. ``subprotocol`` is the one name offered; with
    ``require_subprotocol=False`` a 101 that selects none is accepted (as the media server's
    websocket library does), one that selects another name never is.

    Raises:
        HandshakeRejected: non-101 answer.
        SubprotocolMissing: the 101 did not select ``subprotocol``.
        HandshakeTimeout: no complete answer within ``within`` seconds.
        ConnectFailed: the stream broke during the handshake.
    """
    handshake_done = trio.Event()
    sniff = _SniffingStream(stream, handshake_done)
    result: list[trio_websocket.WebSocketConnection] = []
    failure: list[BaseException] = []

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            async with trio.open_nursery() as inner:
                ws = await trio_websocket.wrap_client_stream(
                    inner,
                    cast(Any, sniff),  # typed for SocketStream/SSLStream; any Stream works
                    host,
                    resource,
                    subprotocols=[subprotocol],
                    extra_headers=extra_headers,
                    max_message_size=max_message_size,
                )
                result.append(ws)
                handshake_done.set()
                await trio.sleep_forever()
        except BaseExceptionGroup as group:
            failure.extend(leaf for leaf in leaves(group) if not isinstance(leaf, trio.Cancelled))
            handshake_done.set()
            if not failure:
                raise

    # The websocket's reader lives in ``inner``, which stays open until ``nursery`` closes.
    await nursery.start(run)
    with trio.move_on_after(within):
        await handshake_done.wait()
    status, proto = sniff.answer()
    if result:
        ws = result[0]
        if ws.subprotocol != subprotocol and (require_subprotocol or ws.subprotocol is not None):
            await sniff.aclose()
            raise SubprotocolMissing(ws.subprotocol, expected=subprotocol)
        return ws, sniff
    await abort_stream(sniff)
    for exc in failure:
        if isinstance(exc, trio_websocket.ConnectionRejected):
            raise HandshakeRejected(exc.status_code, body=exc.body)
    if status == 101 and proto != subprotocol:
        raise SubprotocolMissing(proto, expected=subprotocol)
    if status is not None and status != 101:
        raise HandshakeRejected(status)
    if failure:
        exc = failure[0]
        raise ConnectFailed(f"WebSocket handshake failed: {type(exc).__name__}: {exc}") from exc
    if sniff.eof:
        raise ConnectFailed("the app closed the connection during the opening handshake")
    if sniff.head == b"" and not handshake_done.is_set():
        raise HandshakeTimeout(f"the app sent no handshake answer within {within:g} s")
    raise HandshakeTimeout(f"the WebSocket handshake did not complete within {within:g} s")


async def abort_stream(stream: trio.abc.Stream) -> None:
    """Close ``stream`` at once, without a WebSocket close frame (shielded, never raises)."""
    with trio.CancelScope(shield=True):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
