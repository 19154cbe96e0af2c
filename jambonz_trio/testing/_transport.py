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
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"expected a ws:// or wss://host[:port]/path URL, got {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if parts.scheme == "wss":
        context = ssl_context or ssl.create_default_context()
        return TcpConnector(parts.hostname, parts.port or 443, path, context)
    return TcpConnector(parts.hostname, parts.port or 80, path)


def basic_auth_header(username: str, password: str) -> tuple[bytes, bytes]:
    """The ``Authorization: Basic ...`` header jambonz sends when the hook has credentials."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return (b"authorization", f"Basic {token}".encode("ascii"))


class _SniffingStream(trio.abc.Stream):
    """Passes bytes through, keeping a copy of the first bytes received (the HTTP answer).

    trio-websocket does not report a 101 with a wrong subprotocol cleanly (wsproto rejects it
    and the reader task crashes with an h11 error), so the fake reads the answer itself.
    """

    def __init__(self, inner: trio.abc.Stream, on_eof: trio.Event) -> None:
        self.inner = inner
        self.head = b""
        self.eof = False
        self._on_eof = on_eof
        self._sniffing = True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.inner.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if self._sniffing:
                self.eof = True  # the app hung up before the upgrade went out
                self._on_eof.set()
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if self._sniffing:
            self.head += bytes(data)
            if not data:
                self.eof = True  # the app hung up before answering the upgrade
                self._on_eof.set()
            if b"\r\n\r\n" in self.head or len(self.head) > 16384 or not data:
                self._sniffing = False
        return data

    async def aclose(self) -> None:
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


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


async def handshake(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    *,
    host: str,
    resource: str,
    extra_headers: list[tuple[bytes, bytes]],
    within: float,
    max_message_size: int,
) -> tuple[trio_websocket.WebSocketConnection, _SniffingStream]:
    """Run the client handshake on ``stream``; trio-websocket's reader runs in ``nursery``.

    Must be called inside a nursery dedicated to this connection: on failure that nursery is
    cancelled by the caller.

    Raises:
        HandshakeRejected: non-101 answer.
        SubprotocolMissing: the 101 did not select ``ws.jambonz.org``.
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
                    subprotocols=[SUBPROTOCOL],
                    extra_headers=extra_headers,
                    max_message_size=max_message_size,
                )
                result.append(ws)
                handshake_done.set()
                await trio.sleep_forever()
        except BaseExceptionGroup as group:
            failure.extend(leaf for leaf in _leaves(group) if not isinstance(leaf, trio.Cancelled))
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
        if ws.subprotocol != SUBPROTOCOL:
            await sniff.aclose()
            raise SubprotocolMissing(ws.subprotocol)
        return ws, sniff
    await abort_stream(sniff)
    for exc in failure:
        if isinstance(exc, trio_websocket.ConnectionRejected):
            raise HandshakeRejected(exc.status_code, body=exc.body)
    if status == 101 and proto != SUBPROTOCOL:
        raise SubprotocolMissing(proto)
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
