"""The errors of cluster operations (all :class:`~jambonz_trio.JambonzTrioError`)."""

from __future__ import annotations

from .._errors import CallClosed, JambonzTrioError, NotDelivered

__all__ = ["CallNotFound", "ClusterError", "ClusterUnavailable", "OwnerGone"]


class ClusterError(JambonzTrioError):
    """Base class of the errors raised by cluster operations."""


class ClusterUnavailable(ClusterError, NotDelivered):
    """Redis cannot be reached (refused, timed out, lost mid-way, authentication failed).

    Raised at once (bounded by ``ClusterConfig.op_timeout``), never retried behind the caller's
    back. Also a :class:`~jambonz_trio.NotDelivered`: for a command, ``maybe_sent`` is ``False``
    only when no connection to Redis could be made, so the command certainly did not leave this
    process. The cluster's own tasks recover by themselves once Redis is back.

    One of the cluster's Lua scripts failing in a Redis that answers (a bug, never an outage)
    raises a subclass of it too, logged at ERROR with the script's name.
    """


class CallNotFound(ClusterError, CallClosed):
    """No live call has this sid in the cluster: unknown, or it ended (also a
    :class:`~jambonz_trio.CallClosed`, what a local ``Call`` raises once it ended)."""


class OwnerGone(ClusterError, NotDelivered):
    """The member holding the call stopped beating (it died, or lost Redis for longer than
    ``member_ttl``). ``maybe_sent`` is ``True`` when the command reached its inbox before the
    member was found dead (it may have been delivered to the call)."""
