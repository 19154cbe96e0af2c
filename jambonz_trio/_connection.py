"""What carries a call's messages: the :class:`Connection` interface the engine drives.

Today one implementation exists, the server's websocket (:class:`._websocket.ServerWebSocket`:
jambonz's socket, read by the task that accepted it). The interface is also the seam for a
connection whose socket another process holds (a call relayed over Redis: frames arrive from
the relaying member, which keeps the socket and its keepalive; :attr:`Connection.pings` is
then ``False`` and the engine writes no Ping of its own).

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

    #: Whether the engine pings through this connection: the keepalive, and the receipt Pings
    #: whose Pongs prove jambonz read an answer. ``False``: both are delegated to whoever holds
    #: the socket, and answers are never seen read (a ``session:new`` answer is then sent again
    #: on every reconnect, which jambonz ignores when it had read it).
    pings: bool
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
        """Write a Ping (only called when :attr:`pings`); its Pong goes to :attr:`on_pong`.

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
