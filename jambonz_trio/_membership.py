"""The small interface between a server and a cluster member (``serve_jambonz(cluster=...)``).

The server tells the member, synchronously, when a call reachable by its sid starts, rebinds
(jambonz reconnected) and ends. These calls must never block, never await and never raise: the
member queues what it needs and does its I/O in its own tasks, so nothing on a call's ack path
ever waits for the cluster. Without a cluster the server holds ``None`` and calls nothing.

:class:`jambonz_trio.cluster.Cluster` implements :class:`ServerMember`; the Redis client lives
there (importing this module imports no Redis code).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from ._admission import Identity
    from ._call import Call
    from ._config import CallConfig
    from ._protocol._messages import SessionReconnect
    from ._server import JambonzServer
    from ._websocket import ServerWebSocket

__all__ = [
    "OWNER_FIELDS",
    "CallRouter",
    "CallWatcher",
    "ListenRouter",
    "Reconnect",
    "Relayed",
    "ServeHere",
    "ServerMember",
]

#: ``session:new`` payload fields a reconnect must repeat exactly to take a call over (with
#: its route and Basic user): the server's rebind rule, and the cluster's for a call's stored
#: user_data
OWNER_FIELDS = ("account_sid", "application_sid")


@attrs.frozen
class Relayed:
    """The reconnect's socket was carried to the member that holds the call, and is done."""


@attrs.frozen
class ServeHere:
    """Serve the reconnect here, as a call first seen through a reconnect.

    ``isolate``: the call's owner refused the takeover (identity mismatch): serve it as an
    isolated call, as a local mismatch is. ``user_data``: the call's last stored
    ``user_data``, to restore (``None``: none stored, or the app did not opt in).
    ``session_confirmed``: the member that served the call saw jambonz read an answer of it
    (:attr:`jambonz_trio.lowlevel.CallProtocol.session_confirmed`): this reconnect cannot
    carry a re-keyed ``session:new``, and the call is not closed once to release one.
    """

    isolate: bool = False
    user_data: dict[str, Any] | None = None
    session_confirmed: bool = False


@attrs.frozen(eq=False)
class Reconnect:
    """A ``session:reconnect`` that came to a server which does not hold the call it names.

    ``frame``: the message as received (what a relay forwards), parsed as ``first``;
    ``identity``: what its socket ``ws`` was admitted with; ``config``: the server's call
    settings.
    """

    frame: str
    first: SessionReconnect
    identity: Identity
    ws: ServerWebSocket
    config: CallConfig


class CallWatcher(Protocol):
    """What a server reports about its calls. Every method is synchronous and must not raise."""

    def call_started(self, call: Call) -> None:
        """A new call is listed under its sid (isolated calls are never reported)."""

    def call_rebound(self, call: Call) -> None:
        """A reconnect took over the call (its ``reconnect_count`` may have changed)."""

    def call_ended(self, call: Call) -> None:
        """A call is over. Reported for every call that ends, also those ``call_started``
        never reported (isolated calls): ignore those."""


class ServerMember(Protocol):
    """A cluster member a server joins for its lifetime."""

    def attach_server(self, server: JambonzServer) -> CallWatcher:
        """Called by ``serve_jambonz`` once listening: from now on the member may deliver
        commands to the server's calls (``server.calls``). Must not block.

        Raises:
            RuntimeError: the member already serves another server.
        """
        ...

    def detach_server(self, server: JambonzServer) -> None:
        """Called when ``serve_jambonz`` returns (after a drain, or cancelled)."""


@runtime_checkable
class CallRouter(Protocol):
    """A member that can route a reconnect to the process holding the call, and take the
    calls of a draining server over. Unlike :class:`CallWatcher`'s, these methods await (the
    cluster's I/O), each bounded by the member; they concern only the socket or the drain at
    hand, never another call's ack path."""

    async def route_reconnect(self, reconnect: Reconnect) -> Relayed | ServeHere:
        """A ``session:reconnect`` names a call this server does not hold. Either relay the
        socket to the call's owner for the rest of its life (return :class:`Relayed` once it
        is over) or say how to serve it here. Never raises for the cluster's faults (then:
        :class:`ServeHere`)."""
        ...

    async def hand_over(self, calls: list[Call]) -> None:
        """The server drains: ``calls`` are about to be closed so that jambonz reconnects
        elsewhere. Store what another member needs to carry them on (bounded; best effort)."""
        ...


class ListenRouter(Protocol):
    """A member that knows which process started a ``listen`` (audio is never relayed: a
    listen's socket that reaches another worker cannot be served there). Registered for the
    process while the member serves a server (see :mod:`jambonz_trio._audio`)."""

    def listen_started(self, call: Call, token: str, fail: Callable[[str], None], within: float) -> None:
        """``call`` waits ``within`` seconds for the audio socket of the listen ``token``
        names. If it is a call of this member's server, note in the cluster that the token is
        this member's, and call ``fail(member)`` if another member reports that the socket
        reached it. Synchronous; never blocks nor raises (the member does its I/O itself)."""

    def listen_ended(self, token: str) -> None:
        """The listen ``token`` names got its socket, or gave up."""

    async def route_listen(self, token: str) -> str | None:
        """An audio socket names the listen ``token``, started by no call of this process: the
        member that started it, told that the socket came here (``None``: unknown, or this
        member). Bounded by the member; never raises."""
