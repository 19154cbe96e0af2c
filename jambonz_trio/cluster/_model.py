"""What the cluster stores and reports: call summaries, events, settings, command encoding."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

import attrs

from .._protocol._outbound import Command, RawCommand, parse_command

#: the public names (``jambonz_trio.cluster`` exports them); the codec helpers are internal
__all__ = [
    "CallEnded",
    "CallStarted",
    "CallUpdated",
    "CallsSnapshot",
    "ClusterCall",
    "ClusterConfig",
    "ClusterEvent",
    "ClusterStatistics",
    "JsonUserData",
    "UserDataCodec",
]


def user_hash(username: str | None) -> str | None:
    """The Basic username as the directory keeps it (SHA-256, hex): enough to compare two
    connections' credentials across members, without storing the name."""
    if username is None:
        return None
    return hashlib.sha256(b"jambonz-trio:user:" + username.encode("utf-8", "surrogatepass")).hexdigest()


#: The fields of :class:`ClusterCall` copied from the call's data (its ``CallInfo``).
CALL_INFO_FIELDS = ("from_", "to", "direction", "account_sid", "application_sid")


@attrs.frozen(kw_only=True)
class ClusterCall:
    """A live call as the cluster directory lists it.

    Attributes:
        call_sid, from_, to, direction, account_sid, application_sid: from the call's first
            message (``application_sid`` and ``account_sid`` are what a reconnect must repeat
            to take the call over).
        member: the member (process) holding the call.
        route: the path of the :class:`~jambonz_trio.Route` that admitted it (never the query
            string, which may carry a token).
        user_hash: SHA-256 of the Basic username it authenticated with (``None``: none).
        reconnect_count: jambonz's reconnects of this call so far.
        started: when the member registered it (seconds since the epoch, the member's clock).
    """

    call_sid: str
    member: str
    from_: str | None = None
    to: str | None = None
    direction: str | None = None
    account_sid: str | None = None
    application_sid: str | None = None
    route: str = "/"
    user_hash: str | None = None
    reconnect_count: int = 0
    started: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in Redis and printed by ``python -m jambonz_trio calls``."""
        return {
            "call_sid": self.call_sid,
            "member": self.member,
            "from": self.from_,
            "to": self.to,
            "direction": self.direction,
            "account_sid": self.account_sid,
            "application_sid": self.application_sid,
            "route": self.route,
            "user_hash": self.user_hash,
            "reconnect_count": self.reconnect_count,
            "started": self.started,
        }

    def dumps(self) -> str:
        """Canonical JSON (an unchanged call re-registered is an unchanged entry: no event)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> ClusterCall:
        """Parse a directory entry.

        Raises:
            ValueError: not an entry this library wrote.
        """
        obj = json.loads(text)
        if not isinstance(obj, dict) or not isinstance(obj.get("call_sid"), str):
            raise ValueError("not a call entry")

        def text_or_none(key: str) -> str | None:
            value = obj.get(key)
            return value if isinstance(value, str) else None

        count = obj.get("reconnect_count")
        started = obj.get("started")
        return cls(
            call_sid=obj["call_sid"],
            member=str(obj.get("member", "")),
            from_=text_or_none("from"),
            to=text_or_none("to"),
            direction=text_or_none("direction"),
            account_sid=text_or_none("account_sid"),
            application_sid=text_or_none("application_sid"),
            route=text_or_none("route") or "/",
            user_hash=text_or_none("user_hash"),
            reconnect_count=count if isinstance(count, int) else 0,
            started=float(started) if isinstance(started, int | float) else 0.0,
        )


def ranked_doc(call: ClusterCall, *, bound_ms: int, connected: bool) -> str:
    """The directory entry a full re-registration writes: the summary (:meth:`ClusterCall.dumps`)
    and ``"copy": {"bound": ms, "connected": bool}``, which says which of the copies two members
    may hold of one call this one is: when its socket was bound on this member (start,
    reconnect, relayed reconnect), in ms on Redis' clock, and whether it is connected now.
    Readers of entries ignore the key; the ``UPSERT`` script ranks re-registrations by it."""
    entry = call.to_json()
    entry["copy"] = {"bound": bound_ms, "connected": connected}
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))


@attrs.frozen
class CallsSnapshot:
    """Every live call of the cluster: the first event of a watch, and again after every gap
    (Redis unreachable for a while, or restarted) - replace your view with it."""

    calls: tuple[ClusterCall, ...]


@attrs.frozen
class CallStarted:
    """A call was registered."""

    call: ClusterCall


@attrs.frozen
class CallUpdated:
    """A listed call changed (``reconnect_count``, or the member holding it)."""

    call: ClusterCall


@attrs.frozen
class CallEnded:
    """A call left the directory: ``why`` is ``"ended"`` or ``"owner gone"`` (its member
    stopped beating and was swept)."""

    call_sid: str
    member: str
    why: str


class UserDataCodec(Protocol):
    """How a call's ``user_data`` is stored in Redis (see ``ClusterConfig.keep_user_data``).

    ``encode`` runs in the member's directory task, every ``member_ttl / 3`` for every live
    call (the text is compared with the last one stored; only changes are written), so keep it
    cheap. Either may raise ``Exception``: the call's data is then not stored (or not
    restored), logged, and the call goes on.
    """

    def encode(self, data: dict[str, Any]) -> str:
        """The text stored for ``data``."""
        ...

    def decode(self, text: str) -> dict[str, Any]:
        """``data`` again, on the member where the call carries on."""
        ...


class JsonUserData:
    """The default :class:`UserDataCodec`: JSON (keys sorted, so an unchanged dict is an
    unchanged text); values JSON cannot carry make the encoding fail."""

    def encode(self, data: dict[str, Any]) -> str:
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def decode(self, text: str) -> dict[str, Any]:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("stored user_data is not a JSON object")
        return value


#: What :meth:`Cluster.watch_calls` yields.
ClusterEvent = CallsSnapshot | CallStarted | CallUpdated | CallEnded


@attrs.frozen(kw_only=True)
class ClusterConfig:
    """Settings of :func:`~jambonz_trio.cluster.open_cluster`. Durations are seconds.

    Attributes:
        member_ttl: a member that has not beaten for this long is dead: the views stop listing
            its calls and commands to them raise :class:`OwnerGone` at once; the next sweep
            (every member sweeps every ``member_ttl / 3``) removes its entries. So a dead
            member's entries are gone within ``member_ttl * 4/3 + op_timeout``.
        op_timeout: bound on one Redis operation (connect, or one reply); past it the
            operation raises :class:`ClusterUnavailable`. Must be below ``member_ttl / 3``
            (as the defaults are; ``ValueError`` otherwise: lower it with a short
            ``member_ttl``): a member beats between the writes of a long directory write,
            and is never swept mid-write only while one write plus a heartbeat take less
            than about ``member_ttl * 2/3``; a larger ``op_timeout`` would let a Redis that
            answers, but that slowly, get a live member swept.
        reply_timeout: longest wait for the owner's answer to a command (the command may wait
            there for jambonz to reconnect, up to the call's ``reconnect_grace``, 60 s by
            default). Callers bound it further with ``trio.fail_after``.
        max_pending_updates: directory updates waiting for Redis (one per call, coalesced).
            On overflow the queue is dropped and the member re-registers all its live calls
            once Redis answers (counted in :meth:`Cluster.statistics`).
        max_queued_commands: commands waiting, per call, on the owner; more are refused with
            :class:`~jambonz_trio.CommandQueueFull`.
        inbox_maxlen / events_maxlen: caps of the inbox and event streams (approximate).
        orphan_keep: how long a swept call is still answered :class:`OwnerGone` rather than
            :class:`CallNotFound`; also how long the stored ``user_data`` of a call whose
            member died (or drained) waits for the call's reconnect.
        relay_timeout: longest wait, on the member a ``session:reconnect`` lands on, for the
            call's owner to take the relay (normally a few milliseconds); past it the call
            starts there (first seen through a reconnect), and the owner's copy waits out its
            reconnect grace. The lookup before it is bounded by ``op_timeout``; the two must
            stay inside jambonz's 5 s deadline for the reconnect's ack.
        keep_user_data: store every live call's ``call.user_data`` in Redis (checked every
            ``member_ttl / 3``, written when it changed, and at a drain), so that a call whose
            owner died or drained starts on the member its reconnect reaches with its
            ``user_data`` restored. Off by default: the data may be personal. (With it or
            not, a drain's hand-over stores whether jambonz read an answer of each call, so
            that the member restoring it does not close it once to release a re-keyed
            ``session:new``: docs/reconnects.md.)
        user_data_codec: how ``user_data`` is stored (default :class:`JsonUserData`).
    """

    member_ttl: float = 5.0
    op_timeout: float = 1.0
    reply_timeout: float = 65.0
    max_pending_updates: int = 10_000
    max_queued_commands: int = 64
    inbox_maxlen: int = 10_000
    events_maxlen: int = 10_000
    orphan_keep: float = 60.0
    relay_timeout: float = 2.0
    keep_user_data: bool = False
    user_data_codec: UserDataCodec = attrs.field(factory=JsonUserData, eq=False)

    def __attrs_post_init__(self) -> None:
        if min(self.member_ttl, self.op_timeout, self.reply_timeout, self.relay_timeout) <= 0:
            raise ValueError("member_ttl, op_timeout, reply_timeout and relay_timeout must be positive")
        if self.max_pending_updates < 1 or self.max_queued_commands < 1:
            raise ValueError("max_pending_updates and max_queued_commands must be at least 1")
        if self.op_timeout * 3 >= self.member_ttl:
            raise ValueError(
                f"op_timeout ({self.op_timeout} s) must be below member_ttl / 3 (member_ttl "
                f"({self.member_ttl} s) / 3 = {self.member_ttl / 3:.3g} s): a member beats every "
                "member_ttl / 3, and one slow reply plus a beat must fit in member_ttl * 2/3; "
                "lower op_timeout or raise member_ttl"
            )

    @property
    def expiry_bound(self) -> float:
        """The documented bound: a dead member's entries are gone within this many seconds."""
        return self.member_ttl * 4 / 3 + self.op_timeout


@attrs.frozen(kw_only=True)
class ClusterStatistics:
    """Counters of a :class:`Cluster` (see :meth:`Cluster.statistics`).

    Attributes:
        redis_up: the last Redis operation of the background tasks succeeded.
        calls: calls of this member's server it keeps registered.
        pending_updates: directory updates waiting to be written (coalesced per call).
        overflows: times the update queue overflowed (each followed by a full re-registration).
        resyncs: full re-registrations so far (first registration, after a Redis restart or an
            expiry, after an overflow).
        commands_handled: commands sent through the cluster (by any member, this one
            included) executed on this member's calls.
        duplicates_dropped: commands whose request id was seen already (not executed again).
        relays_holding: sockets this member holds for calls another member runs (relayed
            reconnects).
        relays_serving: calls of this member carried over a socket another member holds.
        relays_total: reconnects relayed so far, either way.
        relay_faults: relays ended by a fault (Redis, or the other member gone).
    """

    redis_up: bool
    calls: int
    pending_updates: int
    overflows: int
    resyncs: int
    commands_handled: int
    duplicates_dropped: int
    relays_holding: int = 0
    relays_serving: int = 0
    relays_total: int = 0
    relay_faults: int = 0


def encode_command(command: Command) -> str:
    """A command as it travels to the owner: its wire frame, and whether it is raw."""
    return json.dumps({"raw": isinstance(command, RawCommand), "frame": command.to_wire()})


def decode_command(text: str) -> Command:
    """The command again: the typed model when the frame parses as one, else a
    :class:`RawCommand` that renders the same frame.

    Raises:
        ValueError: not an encoded command.
    """
    obj = json.loads(text)
    frame = obj.get("frame") if isinstance(obj, dict) else None
    if not isinstance(frame, dict) or not isinstance(frame.get("command"), str):
        raise ValueError("not an encoded command")
    if not obj.get("raw"):
        try:
            return parse_command(frame)
        except (ValueError, TypeError):
            pass
    return RawCommand(
        command=frame["command"],
        data=frame.get("data"),
        call_sid=frame.get("callSid"),
        queue_command=frame.get("queueCommand"),
        tool_call_id=frame.get("tool_call_id"),
    )
