"""What carries a call's messages: the :class:`Connection` interface the engine drives.

Two implementations exist: the server's websocket (:class:`._websocket.ServerWebSocket`:
jambonz's socket, read by the task that accepted it), and a call relayed over Redis
(:class:`jambonz_trio.cluster._relay.RelayedConnection`): frames arrive from the member that
holds jambonz's socket, which keeps the socket's keepalive (:attr:`Connection.pings` is
``False``: the engine writes no keepalive Ping of its own) and writes the engine's receipt
Pings in order with the frames (:attr:`Connection.receipts` is ``True``), sending their Pongs
back.

The engine owns every deadline and every decision; a connection only moves messages and
reports how it closed. Writes are shielded and bounded by the engine, so an implementation may
block in :meth:`~Connection.send` for as long as its transport needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs

__all__ = ["CloseReason", "Connection", "ConnectionClosed"]


@attrs.frozen
class CloseReason:
    """How a connection closed: the close code (1006 when it was lost without a Close frame)
    and the reason text, if any."""

    code: int | None
    reason: str | None


class ConnectionClosed(Exception):
    """The connection is closed (or closing): no more messages in or out."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason)
        self.reason = reason


class Connection(Protocol):
    """One transport carrying a call (see the module docstring).

    Only one task reads (the engine's receive loop); several may write, one frame at a time,
    first come first served.
    """

    #: Whether the engine runs the keepalive through this connection (a Ping every
    #: ``ping_interval``, the connection aborted when its Pong is late). ``False``: whoever
    #: holds the socket keeps it alive, and reports a dead one as a close.
    pings: bool
    #: Whether the engine writes receipt Pings through this connection (:meth:`ping`, in order
    #: with the frames), whose Pongs (:attr:`on_pong`) prove jambonz read the answers written
    #: before them. ``False``: answers are never seen read (a ``session:new`` answer is then
    #: sent again on every reconnect, which jambonz ignores when it had read it, and every
    #: other answer of a dropped connection is reported ``AckUnconfirmed``).
    receipts: bool
    #: Set by the engine; called synchronously, by the reading task, with every Pong's payload.
    on_pong: Callable[[bytes], None] | None

    @property
    def close_reason(self) -> CloseReason | None:
        """``None`` while open; then how it closed (the peer's Close, ours while our closing
        handshake runs, 1006 when lost)."""
        ...

    @property
    def close_unanswered(self) -> bool:
        """We sent a Close (ours, or a refusal such as 1009) and the peer's has not come yet."""
        ...

    async def receive(self) -> str | bytes:
        """The next message (text as ``str``). Messages that arrived before the peer's Close are
        still returned.

        Raises:
            ConnectionClosed: closed or closing, with how.
        """
        ...

    async def send(self, message: str) -> None:
        """Write one text message. A cancellation half-way leaves the connection unusable (the
        engine shields its writes and aborts on failure).

        Raises:
            ConnectionClosed: closed or closing, or the write failed.
        """
        ...

    async def ping(self, payload: bytes) -> None:
        """Write a Ping (only called when :attr:`pings` or :attr:`receipts`); its Pong goes to
        :attr:`on_pong`.

        Raises:
            ConnectionClosed: closed or closing, or the write failed.
        """
        ...

    async def close(self, code: int, reason: str | None) -> None:
        """Start the closing handshake and wait for the peer's Close; the caller owns the
        timeout (then :meth:`abort`). Does nothing once closed or closing."""
        ...

    async def abort(self) -> None:
        """Drop the connection now, without a closing handshake."""
        ...
