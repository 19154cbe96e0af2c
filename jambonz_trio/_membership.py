"""The small interface between a server and a cluster member (``serve_jambonz(cluster=...)``).

The server tells the member, synchronously, when a call reachable by its sid starts, rebinds
(jambonz reconnected) and ends. These calls must never block, never await and never raise: the
member queues what it needs and does its I/O in its own tasks, so nothing on a call's ack path
ever waits for the cluster. Without a cluster the server holds ``None`` and calls nothing.

:class:`jambonz_trio.cluster.Cluster` implements :class:`ServerMember`; the Redis client lives
there (importing this module imports no Redis code).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._call import Call
    from ._server import JambonzServer

__all__ = ["CallWatcher", "ServerMember"]


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
