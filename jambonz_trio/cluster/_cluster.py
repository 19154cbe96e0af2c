"""``open_cluster`` / ``Cluster``: a member's directory, its inbox, commands and views.

Tasks of one cluster handle (all in the handle's nursery, none per call):

* the **directory task**: heartbeat and sweep every ``member_ttl / 3``, and the writes of the
  bounded, coalesced update queue the server's synchronous hooks fill (nothing on a call's
  path ever awaits Redis); after a Redis restart, an expiry or an overflow it re-registers the
  member's live calls (never taking one that another member registered since), beating between
  its writes when a beat falls due;
* the **inbox task**: one blocking ``XREAD`` loop on the member's inbox stream (a fresh client
  per session), dispatching commands to per-call lanes and replies to waiting requesters;
* one **lane** task per call that has commands waiting (FIFO per call), while it has some;
* the **relay watch**: while relays run (:mod:`._relay`), every ``member_ttl / 2`` it ends
  those whose other member is missing from two checks in a row (stopped beating); and per
  relayed socket, the tasks of :class:`._relay.RelayHub` (on the member holding the socket)
  or the call's receive loop (on the member running the call).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import coredis
import trio

from .._audio import LISTEN_ROUTERS
from .._call import engine_of
from .._command_api import CommandMethods
from .._engine import command_started
from .._errors import (
    CallClosed,
    CommandQueueFull,
    JambonzTrioError,
    LocalProtocolError,
    NotDelivered,
)
from .._log import current_call, get_logger
from .._membership import OWNER_FIELDS, Reconnect, Relayed, ServeHere
from .._protocol._json import loads_object
from .._protocol._messages import SessionReconnect, parse_message, routing_sid
from .._protocol._outbound import Command
from .._protocol._state import ConnState
from .._sync import leaves
from ._errors import CallNotFound, ClusterUnavailable, OwnerGone
from ._model import (
    CALL_INFO_FIELDS,
    CallEnded,
    CallsSnapshot,
    CallStarted,
    CallUpdated,
    ClusterCall,
    ClusterConfig,
    ClusterEvent,
    ClusterStatistics,
    decode_command,
    encode_command,
    ranked_doc,
    user_hash,
)
from ._redis import (
    REDIS_ERRORS,
    LuaScript,
    check_url,
    guard,
    make_client,
    redact,
    tls_context,
    xadd_to_inbox,
)
from ._relay import RelayedConnection, RelayHub
from ._scripts import (
    HAND_OVER,
    HEARTBEAT,
    LIVE_MEMBERS,
    LOOKUP,
    MEMBER_ALIVE,
    REPLY,
    ROUTE_LOOKUP,
    STORE_USER_DATA,
    SWEEP,
    UPSERT,
    Keys,
)

if TYPE_CHECKING:
    from .._admission import Identity
    from .._call import Call
    from .._server import JambonzServer

__all__ = ["Cluster", "RemoteCall", "open_cluster"]

log = get_logger("jambonz_trio.cluster")

#: Longest server-side block of a reader's XREAD (ms); readers loop, never cancel it.
_BLOCK_MS = 1000
#: Directory writes per Lua call.
_CHUNK = 200
#: Request ids remembered for de-duplication.
_SEEN = 4096
#: Replies sent by helper tasks at once (refusals outside a lane); more are dropped.
_MAX_REPLY_TASKS = 64


def _stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def default_member_id() -> str:
    """``host-pid-random``: unique per process, readable in the views."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class _Backoff:
    """0.1 s doubling to 2 s; reset after a success."""

    def __init__(self) -> None:
        self.delay = 0.1

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, 2.0)
        return delay

    def reset(self) -> None:
        self.delay = 0.1


@attrs.define
class _Request:
    id: str
    reply_to: str
    call_sid: str
    command: str


@attrs.define(eq=False)
class _Waiter:
    done: trio.Event = attrs.field(factory=trio.Event)
    reply: dict[str, Any] | None = None


@attrs.define(eq=False)
class _Job:
    """A request id the owner runs: queued in its call's lane, or running. Every attempt with
    that id gets its one outcome."""

    request: _Request
    #: the attempts waiting for the outcome: attempt token -> the member to answer
    attempts: dict[str, str]
    scope: trio.CancelScope | None = None
    #: the command started out to jambonz (:data:`command_started`): it may have been sent
    started: bool = False

    def note_started(self) -> None:
        self.started = True


class Cluster:
    """A handle on the cluster: the directory of live calls, commands to any call, views.

    Get one from :func:`open_cluster`. A handle is a *member*: it beats in the directory
    (``member``) and has an inbox for the replies to its commands; given to
    ``serve_jambonz(cluster=...)`` it also lists that server's calls and executes the commands
    other members send them. A control process that serves no calls uses it the same way.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        member: str,
        config: ClusterConfig,
        client: coredis.Redis[str],
        ssl_context: ssl.SSLContext | None,
        nursery: trio.Nursery,
    ) -> None:
        self.namespace = namespace
        self.member = member
        self.config = config
        self._url = url
        self._where = redact(url)
        self._keys = Keys(namespace)
        self._client = client
        self._ssl_context = ssl_context
        self._nursery = nursery
        self._heartbeat = LuaScript(client, "HEARTBEAT", HEARTBEAT, where=self._where)
        self._upsert = LuaScript(client, "UPSERT", UPSERT, where=self._where)
        self._sweep = LuaScript(client, "SWEEP", SWEEP, where=self._where)
        self._lookup = LuaScript(client, "LOOKUP", LOOKUP, where=self._where)
        self._alive = LuaScript(client, "MEMBER_ALIVE", MEMBER_ALIVE, where=self._where)
        self._live_members = LuaScript(client, "LIVE_MEMBERS", LIVE_MEMBERS, where=self._where)
        self._reply_script = LuaScript(client, "REPLY", REPLY, where=self._where)
        self._route_lookup = LuaScript(client, "ROUTE_LOOKUP", ROUTE_LOOKUP, where=self._where)
        self._store_ud = LuaScript(client, "STORE_USER_DATA", STORE_USER_DATA, where=self._where)
        self._hand_over = LuaScript(client, "HAND_OVER", HAND_OVER, where=self._where)
        self._server: JambonzServer | None = None
        # directory
        self._live: dict[str, tuple[Call, ClusterCall]] = {}
        # the entry last written for each call: what the directory saw of its socket (_full_resync)
        self._written: dict[str, str] = {}
        # when each call's socket was last bound here (time.monotonic(), s): ranks this
        # member's copy against another member's at re-registration (ranked_doc)
        self._bind_times: dict[str, float] = {}
        # the ``bound`` (ms) of the entry a re-registration wrote for each call's copy as it is
        # now (forgotten when the copy is bound again): which copy a ``moved`` notice is about
        self._ranked: dict[str, int] = {}
        self._pending: dict[str, ClusterCall | None] = {}
        self._resync = True  # the first registration is a full one
        self._flushing = False  # a batch taken from _pending, or a re-registration, is being written
        self._beat_now = False
        self._next_beat = 0.0  # (trio clock) when the directory task beats next
        # a beat was made since the last sweep and user_data store (_upkeep): they are owed,
        # whichever beat it was (the directory task's own, or one made inside a long write)
        self._upkeep_owed = False
        self._wake = trio.Event()
        self._redis_up = False
        self._up_changed = trio.Event()
        self._overflows = 0
        self._resyncs = 0
        # commands
        self._waiters: dict[str, list[_Waiter]] = {}  # by request id (attempts in flight)
        self._lanes: dict[str, list[_Job]] = {}
        self._queued = 0
        self._jobs: dict[str, _Job] = {}  # by request id: queued or running here
        self._seen: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()  # outcomes
        self._reply_tasks = 0
        self._handled = 0
        self._duplicates = 0
        self._warned: dict[str, float] = {}
        # relays, and the user_data last stored per call (opt-in)
        self._relay = RelayHub(
            member=member,
            keys=self._keys,
            client=client,
            connect=self._writer,
            where=self._where,
            bound=self._bound,
            inbox_maxlen=config.inbox_maxlen,
            idle_ms=self._idle_ms,
            nursery=nursery,
        )
        self._inbox_ready = trio.Event()  # set while the inbox task has a reading session
        # per call: the user_data text last stored, and whether its record said jambonz read
        # an answer of the call (session_confirmed: it changes once, from False to True)
        self._ud_stored: dict[str, tuple[str, bool]] = {}
        self._listens: dict[str, Callable[[str], None]] = {}  # listens of our calls, by token
        self._handed_over: set[str] = set()
        #: Redis' clock (ms) minus this member's monotonic clock (ms), measured by each beat:
        #: how old an inbox entry is (its stream id is Redis' clock), whatever the hosts'
        #: clocks say (``None``: no beat answered yet)
        self._redis_offset: float | None = None
        #: the last entry of the inbox at this handle's first beat: the commands and relay
        #: requests up to it were sent to an earlier process with this member id (``None``:
        #: no beat answered yet, so none can be for this one)
        self._born: tuple[int, int] | None = None
        #: the calls an earlier process with this member id left were swept (before the
        #: first beat: see _directory_loop)
        self._earlier_swept = False
        self._ignored_before = 0

    def __repr__(self) -> str:
        return f"<Cluster {self.namespace!r} member {self.member!r} at {self._where}>"

    # -- public: state ---------------------------------------------------------------------

    def statistics(self) -> ClusterStatistics:
        """Counters (not a checkpoint)."""
        holding, serving = self._relay.counts()
        return ClusterStatistics(
            relays_holding=holding,
            relays_serving=serving,
            relays_total=self._relay.total,
            relay_faults=self._relay.faults,
            redis_up=self._redis_up,
            calls=len(self._live),
            pending_updates=len(self._pending),
            overflows=self._overflows,
            resyncs=self._resyncs,
            commands_handled=self._handled,
            duplicates_dropped=self._duplicates,
        )

    async def wait_registered(self) -> None:
        """Block until the directory holds this member and every call it reported (nothing
        pending). The caller owns the timeout (Redis may be down for long)."""
        while not (self._redis_up and not self._pending and not self._resync and not self._flushing):
            await self._up_changed.wait()

    # -- public: views -----------------------------------------------------------------------

    async def list_calls(self) -> list[ClusterCall]:
        """Every live call of the cluster (calls of members that stopped beating are left out).

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        return await self._list_calls(self._client)

    async def _list_calls(self, client: coredis.Redis[str]) -> list[ClusterCall]:
        with guard("listing calls", self._where), trio.fail_after(self._bound):
            members: list[str] = await self._live_members(keys=[self._keys.members], client=client)
            live = set(members)
            calls: list[ClusterCall] = []
            cursor = 0
            while True:
                cursor, entries = await client.hscan(self._keys.calls, cursor, count=500)
                for value in entries.values():
                    try:
                        call = ClusterCall.loads(value)
                    except ValueError:
                        continue
                    if call.member in live:
                        calls.append(call)
                if cursor == 0:
                    break
        calls.sort(key=lambda c: (c.started, c.call_sid))
        return calls

    async def get_call(self, call_sid: str) -> ClusterCall | None:
        """The live call with this sid, or ``None`` (unknown, ended, or its member is dead).

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        state, call = await self._find(call_sid)
        return call if state == "live" else None

    async def list_members(self) -> list[str]:
        """The ids of the members that beat (servers and control processes).

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        with guard("listing members", self._where), trio.fail_after(self._bound):
            members: list[str] = await self._live_members(keys=[self._keys.members])
        return sorted(str(m) for m in members)

    @contextlib.asynccontextmanager
    async def watch_calls(
        self, *, buffer: int = 256
    ) -> AsyncIterator[trio.MemoryReceiveChannel[ClusterEvent]]:
        """Watch the cluster's calls: ``async with cluster.watch_calls() as events: async for
        event in events``. The first event is a :class:`CallsSnapshot` of every live call,
        then :class:`CallStarted`, :class:`CallUpdated` and :class:`CallEnded` as they happen;
        after every gap (Redis unreachable, or restarted) another :class:`CallsSnapshot`
        replaces the view. While Redis is down nothing comes; the watch never raises for it.
        A consumer more than ``events_maxlen`` events behind may miss changes.
        """
        send, receive = trio.open_memory_channel[ClusterEvent](buffer)
        async with _unwrapped(), trio.open_nursery() as nursery:
            nursery.start_soon(self._watch, send)
            try:
                async with receive:
                    yield receive
            finally:
                nursery.cancel_scope.cancel()

    # -- public: commands --------------------------------------------------------------------

    def call(self, call_sid: str) -> RemoteCall:
        """A proxy with the command API of :class:`~jambonz_trio.Call` (``redirect``,
        ``hangup``, ``mute``, ... and ``send_command``) for the call ``call_sid``, wherever
        it lives. Creating it does no I/O."""
        return RemoteCall(self, call_sid)

    async def send_command(self, call_sid: str, command: Command, *, request_id: str | None = None) -> None:
        """Send ``command`` to the call ``call_sid`` through the member that holds it.

        The owner runs it through the call's own :meth:`Call.send_command`, with every local
        rule (queued while the call is disconnected, refused before the ``session:new`` ack,
        ...). Blocks until the owner answers: normally a Redis round trip or two (well under a
        millisecond on a LAN), longer while the call waits for jambonz to reconnect; at most
        ``reply_timeout``. The caller owns any shorter timeout (``trio.fail_after``);
        cancelling asks the owner to drop the command if it has not gone out yet. When this
        handle is the call's owner the command takes the same path (its queue, its
        de-duplication, ``reply_timeout``) without a write to Redis.

        ``request_id``: give the same id to retry a command after ``NotDelivered(maybe_sent=
        True)``: the owner executes one id at most once, whichever member sends it (it
        remembers the outcomes of the last 4,096 ids). A retry gets the outcome of an attempt
        that went out to jambonz (or is going out, or may have: ``maybe_sent``); an attempt
        refused or dropped before it went out (the call's queue full, a protocol rule such as
        "answer session:new first", its sender gave up, e.g. after ``reply_timeout`` while the
        call waited for a reconnect) leaves no trace, so the retry runs the command. Attempts
        with one id in flight at once (from this handle or others) share one execution and its
        outcome.

        Raises:
            CallNotFound: no live call has this sid (unknown, or ended).
            OwnerGone: the member holding the call is dead (``maybe_sent`` as documented).
            ClusterUnavailable: Redis cannot be reached.
            NotDelivered: as locally (the socket died during the write, the call ended while
                the command waited), or no answer within ``reply_timeout`` (``maybe_sent``).
            CommandQueueFull: the call's queue of commands waiting for a reconnect is full.
            LocalProtocolError: as locally (before the ``session:new`` ack, frame too large).
        """
        try:
            text = encode_command(command)
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"cannot serialise {command!r}: {exc}") from exc
        state, entry = await self._find(call_sid)
        if state == "none":
            raise CallNotFound(f"no live call {call_sid} in the cluster")
        if state in ("dead", "gone") or entry is None:
            raise OwnerGone(f"the member holding call {call_sid} is gone", maybe_sent=False)
        owner = entry.member
        here = owner == self.member  # (the owner's own sends take the same path, without Redis)
        rid = request_id or uuid.uuid4().hex
        attempt = uuid.uuid4().hex[:12]
        waiter = _Waiter()
        self._waiters.setdefault(rid, []).append(waiter)
        sent = False
        try:
            if here:
                self._accept(_Request(id=rid, reply_to=self.member, call_sid=call_sid, command=text), attempt)
            else:
                message = {
                    "k": "cmd",
                    "id": rid,
                    "a": attempt,
                    "to": self.member,
                    "sid": call_sid,
                    "cmd": text,
                    "ttl": int(self.config.reply_timeout * 1000),  # (see _stale)
                }
                added = await self._xadd(self._keys.inbox(owner), message, what="sending a command")
                if added is None:  # NOMKSTREAM: the owner's inbox is gone with it
                    raise OwnerGone(f"member {owner} (holding call {call_sid}) is gone", maybe_sent=False)
            sent = True
            with trio.move_on_after(self.config.reply_timeout):
                if here:
                    await waiter.done.wait()
                else:
                    await self._wait_reply(waiter, owner, call_sid)
            if waiter.reply is None:
                raise NotDelivered(
                    f"no answer from member {owner} within {self.config.reply_timeout:.0f} s", maybe_sent=True
                )
            _raise_for(waiter.reply, call_sid)
        finally:
            waiters = self._waiters[rid]
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[rid]
            if sent and waiter.reply is None:
                if here:
                    self._on_cancel(rid, attempt)
                else:
                    with contextlib.suppress(RuntimeError):  # the handle is closing
                        self._nursery.start_soon(self._send_cancel, owner, rid, attempt)

    # -- server membership (CallWatcher / ServerMember) ------------------------------------------

    def attach_server(self, server: JambonzServer) -> Cluster:
        """Called by ``serve_jambonz(cluster=...)``: list the server's calls from now on and
        execute commands for them. One server per handle.

        Raises:
            RuntimeError: the handle already serves a server.
        """
        if self._server is not None:
            raise RuntimeError("this cluster handle already serves a server; open one per server")
        self._server = server
        LISTEN_ROUTERS.append(self)
        return self

    def detach_server(self, server: JambonzServer) -> None:
        """Called when ``serve_jambonz`` returns: no more commands for its calls."""
        if self._server is server:
            self._server = None
            if self in LISTEN_ROUTERS:
                LISTEN_ROUTERS.remove(self)

    def call_started(self, call: Call) -> None:
        sid = call.call_sid
        if sid is None:
            return
        summary = ClusterCall(
            call_sid=sid,
            member=self.member,
            route=call.identity.route,
            user_hash=user_hash(call.identity.username),
            reconnect_count=call.reconnect_count,
            started=time.time(),  # (display only: no deadline shared with other members)
            **{name: getattr(call.info, name) for name in CALL_INFO_FIELDS},
        )
        self._live[sid] = (call, summary)
        self._bind_times[sid] = time.monotonic()
        self._ranked.pop(sid, None)
        self._queue(sid, summary)

    def _entry(self, call: Call) -> tuple[str, ClusterCall] | None:
        """The sid and directory entry of a call this member listed, or ``None``."""
        sid = call.call_sid
        entry = self._live.get(sid) if sid is not None else None
        if sid is None or entry is None or entry[0] is not call:
            return None
        return sid, entry[1]

    def call_rebound(self, call: Call) -> None:
        found = self._entry(call)
        if found is None:
            return
        sid, listed = found
        self._bind_times[sid] = time.monotonic()
        self._ranked.pop(sid, None)  # (a moved notice about the copy as it was is stale)
        if listed.reconnect_count != call.reconnect_count:
            summary = attrs.evolve(listed, reconnect_count=call.reconnect_count)
            self._live[sid] = (call, summary)
            self._queue(sid, summary)

    def call_ended(self, call: Call) -> None:
        found = self._entry(call)
        if found is None:
            return
        sid = found[0]
        del self._live[sid]
        self._ud_stored.pop(sid, None)
        self._written.pop(sid, None)
        self._bind_times.pop(sid, None)
        self._ranked.pop(sid, None)
        self._queue(sid, None)  # (removed with its user_data, unless handed over: _removal)

    def _queue(self, sid: str, update: ClusterCall | None) -> None:
        """Queue a directory write (never blocks). Coalesced per call; at the bound the queue
        is dropped and a full re-registration replaces it."""
        if sid not in self._pending and len(self._pending) >= self.config.max_pending_updates:
            self._pending.clear()
            if not self._resync:
                self._overflows += 1
                self._warn(
                    "overflow",
                    "%d directory updates wait for Redis; dropped them, the member's calls will be "
                    "re-registered when Redis answers",
                    self.config.max_pending_updates,
                )
            self._resync = True
        elif not self._resync:
            self._pending[sid] = update
        self._wake.set()

    # -- listens: which member started one (ListenRouter) ---------------------------------------

    def listen_started(self, call: Call, token: str, fail: Callable[[str], None], within: float) -> None:
        """A call of this member's server waits for the socket of the listen ``token`` names:
        note that it is this member's (for ``within`` seconds and a margin), so that a member
        the socket reaches instead can say so (:meth:`route_listen`). Never blocks."""
        server = self._server
        if server is None or call.call_sid is None or server.calls.get(call.call_sid) is not call:
            return
        self._listens[token] = fail
        ttl_ms = int((within + self.config.op_timeout + 5.0) * 1000)

        async def store() -> None:
            try:
                with guard("noting a listen", self._where), trio.fail_after(self._bound):
                    await self._client.set(self._keys.listen(token), self.member, px=ttl_ms)
            except ClusterUnavailable as exc:
                self._warn("listen", "cluster: a listen was not noted (%s)", exc)

        try:
            self._nursery.start_soon(store)
        except RuntimeError:  # the handle is closing
            pass

    def listen_ended(self, token: str) -> None:
        """The listen got its socket or gave up (its key expires by itself)."""
        self._listens.pop(token, None)

    async def route_listen(self, token: str) -> str | None:
        """An audio socket here names the listen ``token``, started by no call of this process:
        the member that started it (``None``: unknown, or gone from the cluster), which is told
        so that its ``listen`` fails at once. Bounded by ``op_timeout``; never raises."""
        try:
            with guard("looking a listen up", self._where), trio.fail_after(self._bound):
                owner = await self._client.get(self._keys.listen(token))
                if owner is None or owner == self.member:
                    return None
                notice = {"k": "listen-miss", "token": token, "at": self.member}
                await self._xadd(self._keys.inbox(str(owner)), notice, what="telling a listen's member")
        except ClusterUnavailable as exc:
            self._warn("listen", "cluster: could not look a listen up (%s)", exc)
            return None
        except Exception as exc:  # a handle closing under us: the socket is closed as before
            log.info("cluster: could not look a listen up (%s)", exc)
            return None
        return str(owner)

    def _on_listen_miss(self, message: dict[str, Any]) -> None:
        fail = self._listens.pop(str(message.get("token")), None)
        if fail is not None:
            fail(str(message.get("at")))

    # -- reconnects relayed to the call's owner (CallRouter) -----------------------------------

    async def route_reconnect(self, reconnect: Reconnect) -> Relayed | ServeHere:
        """Called by the server for a ``session:reconnect`` naming a call it does not hold
        (see :class:`jambonz_trio._membership.CallRouter`): relay the socket to the member
        holding the call, or say how to serve it here. Bounded: the lookup by ``op_timeout``,
        the owner's answer by ``relay_timeout``; never raises for Redis or the owner."""
        frame, first, identity = reconnect.frame, reconnect.first, reconnect.identity
        sid = routing_sid(first) or ""
        try:
            with guard("routing a reconnect", self._where), trio.fail_after(self._bound):
                k = self._keys
                found: list[str] = await self._route_lookup(
                    keys=[k.members, k.calls, k.orphans, k.userdata], args=[sid]
                )
        except ClusterUnavailable as exc:
            self._warn("route", "call %s: reconnect served here, the directory is unreachable: %s", sid, exc)
            return ServeHere()
        state, doc, record = (str(x) for x in found)
        owner = None
        if state == "live" and doc:
            try:
                owner = ClusterCall.loads(doc).member
            except ValueError:
                owner = None
        if owner is not None and owner != self.member:
            deadline = trio.current_time() + self.config.relay_timeout
            with trio.move_on_at(deadline):
                await self._inbox_ready.wait()  # the owner's answers come to the inbox
            try:
                answer, endpoint = await self._relay.request(
                    owner, sid, frame, identity, user_hash(identity.username), deadline - trio.current_time()
                )
            except (ClusterUnavailable, OwnerGone) as exc:
                answer = f"failed ({exc})"
            if answer == "accept":
                log.info("call %s: reconnect relayed to member %s, which holds the call", sid, owner)
                return await self._relay.hold(endpoint, reconnect.ws, reconnect.config)
            if answer == "refuse":
                return ServeHere(isolate=True)
            if answer != "none":
                log.warning(
                    "call %s: member %s, which holds the call, did not take its reconnect (%s); "
                    "the call starts here",
                    sid,
                    owner,
                    f"no answer within {self.config.relay_timeout:.1f} s" if answer == "timeout" else answer,
                )
        return self._restore(sid, record, first, identity)

    def _restore(self, sid: str, record: str, first: SessionReconnect, identity: Identity) -> ServeHere:
        """How to serve here a call whose owner is gone: if the reconnect passes the takeover
        rules against the stored record's identity, its stored user_data restored (if the app
        opted in) and whether jambonz read an answer of the call there (``confirmed``: no
        re-key to suspect, :class:`ServeHere`); a mismatch isolates the call when the app
        opted in (without, the record only carries that fact: it is ignored)."""
        keep = self.config.keep_user_data
        if not record:
            return ServeHere()
        try:
            stored = json.loads(record)
            if not isinstance(stored, dict):
                raise TypeError("not an object")
        except (ValueError, TypeError):
            if keep:
                log.warning("call %s: unreadable stored user_data; not restored", sid)
            return ServeHere()
        data = first.data
        same = (
            stored.get("route") == identity.route
            and stored.get("user") == user_hash(identity.username)
            and all(stored.get(key) == data.get(key) for key in OWNER_FIELDS)
        )
        if not same:
            # (the server logs it, as for a refused relay)
            return ServeHere(isolate=True) if keep else ServeHere()
        confirmed = stored.get("confirmed") is True
        text = stored.get("v") if keep else None
        if text is None:
            return ServeHere(session_confirmed=confirmed)
        try:
            restored = self.config.user_data_codec.decode(str(text))
        except Exception:
            log.warning("call %s: stored user_data could not be decoded; not restored", sid, exc_info=True)
            return ServeHere(session_confirmed=confirmed)
        log.info("call %s: its owner is gone; the call starts here with its user_data restored", sid)
        return ServeHere(user_data=restored, session_confirmed=confirmed)

    def _record(self, call: Call, text: str | None, confirmed: bool) -> str:
        """A stored record: the user_data text (``None``: the app did not opt in), whether
        jambonz read an answer of the call (``confirmed``), and what a reconnect must match to
        get them back."""
        data = call.session.data
        record: dict[str, Any] = {
            "member": self.member,
            "route": call.identity.route,
            "user": user_hash(call.identity.username),
            **{key: data.get(key) for key in OWNER_FIELDS},
        }
        if text is not None:
            record["v"] = text
        if confirmed:
            record["confirmed"] = True
        return json.dumps(record)

    def _changed_user_data(
        self, calls: list[tuple[str, Call]], *, all_of_them: bool = False
    ) -> list[tuple[str, tuple[str, bool], str]]:
        """``(sid, (text, confirmed), record)`` of the calls whose user_data, or whether
        jambonz read an answer of them (:attr:`CallProtocol.session_confirmed`: at most once
        per call, and usually before its first store), changed since last stored."""
        codec = self.config.user_data_codec
        changed = []
        for sid, call in calls:
            try:
                text = codec.encode(call.user_data)
            except Exception as exc:
                self._warn(
                    "user_data", "call %s: user_data not stored (%s: %s)", sid, type(exc).__name__, exc
                )
                continue
            stored = (text, engine_of(call).protocol.session_confirmed)
            if all_of_them or self._ud_stored.get(sid) != stored:
                changed.append((sid, stored, self._record(call, *stored)))
        return changed

    async def _store_user_data(self) -> None:
        """Store the user_data of the calls whose data changed (the directory task, each beat)."""
        changed = self._changed_user_data([(sid, call) for sid, (call, _s) in self._live.items()])
        for start in range(0, len(changed), _CHUNK):
            if not await self._beat_if_due():
                return
            chunk = changed[start : start + _CHUNK]
            args: list[str] = [self.member]
            for sid, _text, record in chunk:
                args += [sid, record]
            k = self._keys
            with guard("storing user_data", self._where), trio.fail_after(self._bound):
                found: list[str] | int = await self._store_ud(
                    keys=[k.members, k.userdata, k.calls], args=args
                )
            if not isinstance(found, list):
                return  # -1, not registered: the full re-registration comes first
            refused = {str(sid) for sid in found}  # (not mine, or not yet: tried again next beat)
            for sid, stored, _record in chunk:
                if sid in self._live and sid not in refused:
                    self._ud_stored[sid] = stored
            await trio.lowlevel.checkpoint()

    async def hand_over(self, calls: list[Call]) -> None:
        """Called by a draining server before it closes ``calls`` (with 1001 or 1012: jambonz
        reconnects, to another member): their user_data is stored now (when the app opted
        in), and kept ``orphan_keep`` for the member the reconnect reaches; so is, app opted
        in or not, that jambonz read an answer of a call (the member restoring it then does
        not suspect a re-keyed ``session:new``, docs/reconnects.md). This member's queued
        directory writes of ``calls`` come first (waited for, not made here: a call bound here
        since its last write takes its entry over then). A call whose directory entry then
        names another member, alive or not yet swept, is left alone (nothing written: this
        copy is stale, the call moved there; a dead member's sweep keeps its record), and so
        is, under no entry, a record another member kept (a dead holder's, kept by its sweep:
        the orphan mark alone; ``HAND_OVER``).
        Bounded: the wait by ``op_timeout``, the write by ``op_timeout`` too (coredis'
        timeout); a Redis fault is logged (the last stored user_data stays)."""
        mine = [(c.call_sid, c) for c in calls if c.call_sid is not None and self._entry(c) is not None]
        if not mine:
            return
        await self._until_written(mine)  # the entries say which member holds each call
        mine = [(sid, c) for sid, c in mine if self._entry(c) is not None]  # (some refused)
        if not mine:
            return
        # when they end, their directory entries are removed keeping the stored user_data
        # (_removal) for the member their reconnect reaches (after a Redis fault here: the
        # last one stored)
        self._handed_over.update(sid for sid, _c in mine)
        if self.config.keep_user_data:
            ops = [(sid, record) for sid, _t, record in self._changed_user_data(mine, all_of_them=True)]
        else:  # (a record only for the fact; "": the orphan mark alone)
            ops = [
                (sid, self._record(c, None, True) if engine_of(c).protocol.session_confirmed else "")
                for sid, c in mine
            ]
        args: list[str | int] = [self.member, int(self.config.orphan_keep * 1000)]
        for sid, record in ops:
            args += [sid, record]
        k = self._keys
        try:
            with guard("handing calls over", self._where), trio.fail_after(self._bound):
                found: list[str] = await self._hand_over(
                    keys=[k.members, k.userdata, k.orphans, k.calls], args=args
                )
        except ClusterUnavailable as exc:
            log.warning("cluster: could not hand %d calls over: %s", len(ops), exc)
            return
        held = {str(sid) for sid in found}
        # (their removal must not count as a hand-over's either: nothing was kept for them)
        self._handed_over.difference_update(held)
        log.info("cluster: handed %d calls over for their reconnects", len(ops) - len(held))
        if held:
            log.info(
                "cluster: %d calls this member drains are held by other members (they moved); left to them",
                len(held),
            )

    def _unwritten(self, sid: str, summary: ClusterCall) -> bool:
        """Whether the call's entry as it is now is not known written: its socket was bound
        again since (a write queued or under way), or a re-registration is due."""
        return self._written.get(sid) != summary.dumps() or sid in self._pending or self._resync

    async def _until_written(self, calls: list[tuple[str, Call]]) -> None:
        """Wait (at most ``op_timeout``: the directory task writes, this only waits) until the
        entries of those of ``calls`` this member still lists are written: a call whose
        socket was bound here since its last write (jambonz moved it here, from a member
        that died, say) is this member's once its queued write lands (a put takes the entry
        over), but its entry still names the member it came from until then."""

        def waiting() -> bool:
            return any(
                found is not None and self._unwritten(*found)
                for found in (self._entry(call) for _sid, call in calls)
            )

        with trio.move_on_after(self.config.op_timeout):
            while waiting():
                await self._up_changed.wait()

    def _on_relay(self, message: dict[str, Any], frame: str | None, ident: str) -> None:
        """A member asks this one to take a reconnect it received (sync, the inbox task)."""
        try:
            rid, holder, sid = str(message["r"]), str(message["from"]), str(message["sid"])
            route, user = str(message["route"]), message.get("user")
            ttl = int(message["ttl"])
        except (KeyError, TypeError, ValueError):
            log.warning("cluster: ignoring a malformed relay request")
            return
        if self._stale(ident, ttl) or frame is None or self._for_an_earlier_process(ident, "relay request"):
            return  # the holder gave up on it already, or it was not for this process
        endpoint = self._relay.open(rid, holder, "owner", sid)
        try:
            self._nursery.start_soon(self._serve_relay, endpoint, frame, route, user)
        except RuntimeError:  # the handle is closing
            self._relay.close(endpoint)

    async def _serve_relay(self, endpoint: Any, frame: str, route: str, user: object) -> None:
        relay = self._relay
        server = self._server
        try:
            try:
                first = parse_message(loads_object(frame))
            except Exception:
                first = None
            if server is None or not isinstance(first, SessionReconnect):
                await relay.send(endpoint, "none")
                await relay.flush(endpoint)
                return

            def same_identity(identity: Identity) -> bool:
                return identity.route == route and user_hash(identity.username) == user

            verdict = server.relay_verdict(first, same_identity)
            if isinstance(verdict, str):
                await relay.send(endpoint, "refuse" if verdict == "refused" else "none")
                await relay.flush(endpoint)
                return
            current_call.set(verdict.log)  # this task serves the call: its lines are the call's
            conn = RelayedConnection(relay, endpoint)
            await relay.send(endpoint, "accept")
            await relay.flush(endpoint)  # the call moves to the relay once the holder can know
            relay.total += 1
            if server.observer is not None:
                server.observer.call_relayed()  # one per relayed reconnect this member accepts
            log.info(
                "call %s: its reconnect reached member %s; relayed here", endpoint.call_sid, endpoint.peer
            )
            try:
                await server.serve_relayed(verdict, conn, first)
            finally:
                with trio.CancelScope(shield=True):
                    await conn.abort()
        except (ClusterUnavailable, OwnerGone) as exc:
            self._warn("relay", "cluster: relay from member %s failed: %s", endpoint.peer, exc)
        finally:
            relay.close(endpoint)

    async def _relay_watch(self) -> None:
        """End the relays whose other member stopped beating (checked every ``member_ttl / 2``;
        missing from two checks in a row, see :meth:`RelayHub.fail_peers`)."""
        while True:
            if not self._relay.endpoints:
                await self._relay.opened.wait()  # (a relay held for another member counts too)
                self._relay.opened = trio.Event()
            await trio.sleep(self.config.member_ttl / 2)
            if not self._relay.endpoints:
                continue
            try:
                with guard("checking relay peers", self._where), trio.fail_after(self._bound):
                    members: list[str] = await self._live_members(keys=[self._keys.members])
            except ClusterUnavailable:
                continue  # the inbox task ends every relay when Redis is gone
            self._relay.fail_peers({str(m) for m in members})

    # -- the directory task ----------------------------------------------------------------------

    @property
    def _idle_ms(self) -> int:
        """Expiry of the shared keys, re-armed by every heartbeat (so they outlive the last
        member by this much)."""
        return int(max(60.0, 3 * self.config.member_ttl, self.config.orphan_keep) * 1000)

    @property
    def _bound(self) -> float:
        """Backstop on one operation of ours (coredis' own timeouts normally fire first)."""
        return 2 * self.config.op_timeout + 0.5

    async def _directory_loop(self) -> None:
        self._next_beat = trio.current_time()
        backoff = _Backoff()
        while True:
            if not self._pending and not self._resync and not self._upkeep_owed:
                with trio.move_on_at(self._next_beat):
                    await self._wake.wait()
            self._wake = trio.Event()
            try:
                if not self._earlier_swept:
                    await self._sweep_earlier()
                if self._beat_now or trio.current_time() >= self._next_beat:
                    self._beat_now = False
                    if not await self._scheduled_beat():
                        self._resync = True
                if self._upkeep_owed:
                    await self._upkeep()
                if self._resync:
                    await self._full_resync()
                elif self._pending:
                    await self._flush()
            except ClusterUnavailable as exc:
                self._set_up(False)
                self._warn("directory", "cluster directory: %s; retrying", exc)
                self._next_beat = trio.current_time()  # beat first when it answers: was it restarted?
                await trio.sleep(backoff.next())
                continue
            backoff.reset()
            self._set_up(True)

    async def _sweep_earlier(self) -> None:
        """Before this handle's first beat: sweep what an earlier process with this member id
        left (one that crashed and was restarted with the same id, before its expiry): its
        calls end as a dead member's do (orphan marks: commands raise ``OwnerGone``, their
        stored user_data waits ``orphan_keep`` for their reconnects), not as calls that ended
        (which the first re-registration made of them). Nothing for a new id. The inbox stays
        (answers to this handle's first commands may be in it: what was sent to the earlier
        process is ignored, see :meth:`_for_an_earlier_process`)."""
        removed = await self._sweep_dead(self.member, keep_inbox=True)
        self._earlier_swept = True
        if removed:
            log.info(
                "cluster: member %s swept %d calls an earlier process with its id left", self.member, removed
            )

    async def _scheduled_beat(self) -> bool:
        """Beat, and schedule the next beat ``member_ttl / 3`` from now: ``False`` when Redis
        did not know this member (restarted, or swept it): it must re-register its calls. The
        sweep and the user_data store that go with each beat are then owed (:meth:`_upkeep`)."""
        present = await self._beat()
        self._next_beat = trio.current_time() + self.config.member_ttl / 3
        self._upkeep_owed = True
        return present

    async def _upkeep(self) -> None:
        """What each beat owes, done at the directory task's next turn: sweep the dead
        members, and (``keep_user_data``) store the user_data that changed, unless a
        re-registration is due (it comes first; the next beat stores). A beat made inside a
        long write (:meth:`_beat_if_due`) owes them too: a member whose every write spans a
        beat (steady churn, a slow Redis) still sweeps and stores between two writes.
        The beats made inside the store itself owe nothing more (a store longer than a beat
        would start over for ever); a store stopped because such a beat found the member
        swept leaves the re-registration to come. Owed still if a Redis fault interrupts it
        (the task beats first when Redis answers)."""
        await self._sweep_dead()
        if self.config.keep_user_data and not self._resync:
            await self._store_user_data()
        self._upkeep_owed = False

    async def _beat_if_due(self) -> bool:
        """Between two chunks of a long directory write (a full re-registration, a large
        queue, user_data): beat if a beat is due. Each chunk is bounded (``op_timeout``) but a
        write of many is not, and a member that stops beating while it writes is swept by the
        others mid-write. ``False``: Redis no longer knew this member (its entries are gone):
        the write stops, and a full re-registration is due."""
        if trio.current_time() < self._next_beat:
            return True
        if await self._scheduled_beat():
            return True
        self._pending.clear()
        self._resync = True
        self._wake.set()
        return False

    async def _beat(self) -> bool:
        k = self._keys
        ttl_ms = int(self.config.member_ttl * 1000)
        idle_ms = self._idle_ms
        with guard("heartbeat", self._where), trio.fail_after(self._bound):
            found: list[Any] = await self._heartbeat(
                keys=[
                    k.members,
                    k.calls,
                    k.events,
                    k.orphans,
                    k.userdata,
                    k.inbox(self.member),
                    k.member_calls(self.member),
                ],
                args=[self.member, ttl_ms, idle_ms, self.config.inbox_maxlen],
            )
        present, redis_ms, top = found
        last = _stream_id(str(top))
        if self._born is None:
            self._born = last
        elif last < self._born:
            self._born = (0, 0)  # the inbox was created anew (Redis restarted): nothing is older
        # Redis read its clock between the call and now: taken as now, the estimate errs
        # (by at most the round trip) towards entries younger than they are, never older
        self._redis_offset = int(redis_ms) - time.monotonic() * 1000
        return bool(present)

    def _for_an_earlier_process(self, ident: str, what: str) -> bool:
        """A command or relay request that reached this member's inbox before its first beat:
        sent to an earlier process with this member id (one that crashed, say, leaving its
        inbox behind), about calls that died with it. It is ignored: answered, it would reach
        senders that gave up or may retry, and, had the call reconnected here meanwhile, run
        on it. No request can be for this handle before its first beat: its calls are
        registered after it."""
        try:
            before = self._born is None or _stream_id(ident) <= self._born
        except ValueError:
            before = False
        if before:
            self._ignored_before += 1
            if self._ignored_before == 1:
                log.info("cluster: member %s ignores what was sent to an earlier process with its id "
                         "(a %s, and any more)", self.member, what)  # fmt: skip
        return before

    def _stale(self, ident: str, ttl_ms: int) -> bool:
        """An inbox entry whose sender gave up on it: older than the ``ttl_ms`` it came with.
        Its age is measured on Redis' clock, which dates it (its stream id, given by ``XADD
        *``) and which each beat relates to this member's monotonic clock: members whose
        hosts' clocks disagree agree on it (an entry is never judged by comparing two hosts'
        clocks). Before the first beat nothing is stale (a sender's later cancel still drops a
        command; the holder of a relay undoes a late accept)."""
        if self._redis_offset is None:
            return False
        try:
            sent_ms = _stream_id(ident)[0]
        except ValueError:
            return False
        return time.monotonic() * 1000 + self._redis_offset > sent_ms + ttl_ms

    async def _sweep_dead(
        self, member: str = "", *, client: coredis.Redis[str] | None = None, keep_inbox: bool = False
    ) -> int:
        """Sweep the members past their expiry (``member``: that one, expired or not), on
        ``client`` (default: the handle's); ``keep_inbox``: not the member's inbox."""
        k = self._keys
        with guard("sweep", self._where), trio.fail_after(self._bound):
            removed: int = await self._sweep(
                keys=[k.members, k.calls, k.events, k.orphans, k.userdata],
                args=[
                    k.member_prefix,
                    self.config.events_maxlen,
                    int(self.config.orphan_keep * 1000),
                    member,
                    "1" if keep_inbox else "0",
                ],
                client=client,
            )
        if removed and not member:
            log.info("cluster: removed %d calls of members that stopped beating", removed)
        return int(removed)

    async def _apply(
        self, ops: list[tuple[str, str]], plain: Mapping[str, str] | None = None
    ) -> list[str] | None:
        """Write directory updates: the sids of the re-registrations refused (another member
        holds the call, see ``UPSERT``); ``None`` (and nothing more written) when Redis does
        not know this member: then a heartbeat and a full re-registration must come first.
        ``plain``: the summaries (:meth:`ClusterCall.dumps`) of re-registered calls, whose
        entries carry more (``ranked_doc``)."""
        k = self._keys
        refused: list[str] = []
        for start in range(0, len(ops), _CHUNK):
            if not await self._beat_if_due():
                return None
            chunk = ops[start : start + _CHUNK]
            args: list[str | int] = [
                self.member,
                k.member_prefix,
                self.config.events_maxlen,
                self.config.inbox_maxlen,
            ]
            for sid, doc in chunk:
                args += [sid, doc]
            with guard("directory update", self._where), trio.fail_after(self._bound):
                found: list[Any] | int = await self._upsert(
                    keys=[k.members, k.calls, k.events, k.orphans, k.member_calls(self.member), k.userdata],
                    args=args,
                )
            if not isinstance(found, list):  # -1: not registered
                self._pending.clear()
                self._resync = True
                self._beat_now = True
                self._wake.set()
                return None
            chunk_refused = {str(sid) for sid in found[1:]}
            refused += chunk_refused
            for sid, doc in chunk:
                if doc not in ("", "~") and sid in self._live and sid not in chunk_refused:
                    self._written[sid] = (plain or {}).get(sid) or doc.removeprefix("?")
        return refused

    def _removal(self, sid: str) -> str:
        """The directory op removing a call: ``~`` keeps its stored user_data (handed over).
        The hand-over is forgotten only once a removal is known written (a failed write is
        queued again, and must keep it)."""
        return "~" if sid in self._handed_over else ""

    async def _flush(self) -> None:
        batch, self._pending = self._pending, {}
        self._flushing = True
        try:
            written = await self._apply(
                [(sid, self._removal(sid) if s is None else s.dumps()) for sid, s in batch.items()]
            )
            if written is not None:
                self._handed_over.difference_update(sid for sid, s in batch.items() if s is None)
        except BaseException:
            # put back what may not have been written; newer updates of the same call win
            for sid, update in batch.items():
                if sid not in self._pending:
                    self._queue(sid, update)
            raise
        finally:
            self._flushing = False

    async def _full_resync(self) -> None:
        """Register this member's live calls again (after a Redis restart, an expiry, an
        overflow). A call whose entry the directory has seen already (written since its socket
        was bound here) is only re-registered: it must not take the call from a member that
        registered it since, which jambonz reconnected it to (while this member was swept, say);
        such a copy ends here (:meth:`_disown`). A call whose socket was bound here since its
        last write takes the entry over, as its write would have.

        Each entry says which copy of the call it lists (``ranked_doc``: when its socket was
        bound, on Redis' clock, and whether it is connected): when two members re-register one
        call (Redis restarted empty: nothing else is left to tell their copies apart) the copy
        bound last keeps the entry, whichever member writes first (``UPSERT``); the other
        member's copy ends (refused here, or told: :meth:`_on_moved`)."""
        self._pending.clear()
        self._resync = False
        self._ud_stored.clear()  # Redis may have lost them (restarted): store them all again
        snapshot = dict(self._live)
        self._flushing = True  # (wait_registered: not registered until this is written)
        try:
            with guard("re-registering calls", self._where), trio.fail_after(self._bound):
                known = await self._client.smembers(self._keys.member_calls(self.member))
            ops = [(sid, self._removal(sid)) for sid in known if sid not in snapshot]
            plain: dict[str, str] = {}
            for sid, (call, summary) in snapshot.items():
                doc = plain[sid] = summary.dumps()
                bound = self._ranked[sid] = int(
                    self._bind_times.get(sid, 0.0) * 1000 + (self._redis_offset or 0.0)
                )
                entry = ranked_doc(summary, bound_ms=bound, connected=call.state is ConnState.CONNECTED)
                ops.append((sid, "?" + entry if self._written.get(sid) == doc else entry))
            refused = await self._apply(ops, plain)
            if refused is None:
                return
            # written: forget the hand-overs of calls gone (the rest were never registered:
            # nothing to remove); a live call's, or one whose removal is queued, still counts
            self._handed_over.intersection_update(self._live.keys() | self._pending.keys())
        except BaseException:
            self._resync = True
            raise
        finally:
            self._flushing = False
        for sid in refused:
            self._disown(sid, *snapshot[sid])
        self._resyncs += 1
        if snapshot:
            log.info("cluster: registered member %s with its %d live calls", self.member, len(snapshot))

    def _disown(
        self,
        sid: str,
        call: Call,
        summary: ClusterCall,
        reason: str = "another member took the call over while this one was away from Redis",
    ) -> None:
        """Another member registered the call since this member wrote its entry: jambonz
        reconnected it there, and this copy's socket is one jambonz gave up (or, parked, its
        reconnect will not come here). Stop listing it and end it: parked, as its reconnect
        grace would; connected, closed with 1012 (jambonz reconnects, if it still uses that
        socket, and the reconnect is routed to the member holding the call). Nothing if the
        socket was bound again meanwhile (its write takes the entry over)."""
        entry = self._live.get(sid)
        if entry is None or entry[0] is not call or entry[1] is not summary:
            return
        del self._live[sid]
        self._ud_stored.pop(sid, None)
        self._written.pop(sid, None)
        self._bind_times.pop(sid, None)
        self._ranked.pop(sid, None)
        if call.state is ConnState.DISCONNECTED:
            engine_of(call).give_up(reason)
        elif call.state is ConnState.CONNECTED:
            log.warning("call %s: %s; closing its socket here (1012)", sid, reason)
            with contextlib.suppress(RuntimeError):  # the handle is closing
                self._nursery.start_soon(call.aclose, 1012, "moved to another member")

    def _set_up(self, up: bool) -> None:
        if up and not self._redis_up:
            log.info("cluster: Redis at %s answers", self._where)
        self._redis_up = up
        self._up_changed.set()
        self._up_changed = trio.Event()

    async def _leave(self) -> None:
        """Remove this member and its entries (on close; bounded, best effort). Runs on a
        client of its own, shielded: the handle's client may already be torn down by the
        cancellation that closes the handle."""
        if self._resyncs == 0:
            return  # never registered
        with trio.CancelScope(shield=True), trio.move_on_after(self._bound):
            try:
                async with self._reader() as client:
                    await self._sweep_dead(self.member, client=client)
            except BaseException as exc:
                _reraise_unless_redis_failure(exc)
                log.info("cluster: could not deregister member %s (Redis unavailable)", self.member)

    # -- the inbox task ------------------------------------------------------------------------

    def _writer(self) -> coredis.Redis[str]:
        """The relay's writer's own client (:class:`._relay.RelayHub`)."""
        return make_client(self._url, op_timeout=self.config.op_timeout, ssl_context=self._ssl_context)

    def _reader(self) -> coredis.Redis[str]:
        return make_client(
            self._url,
            op_timeout=self.config.op_timeout,
            blocking=_BLOCK_MS / 1000,
            ssl_context=self._ssl_context,
        )

    async def _inbox_loop(self) -> None:
        inbox = self._keys.inbox(self.member)
        last = "0-0"
        backoff = _Backoff()
        while True:
            try:
                async with self._reader() as reader:
                    with guard("reading the inbox", self._where):
                        top = await reader.xrevrange(inbox, count=1)
                    if top and _stream_id(str(top[0].identifier)) < _stream_id(last):
                        last = "0-0"  # the stream was created anew (Redis restarted)
                    # the XREADs go straight to a connection of the reader's own: the relay's
                    # frames come this way, and coredis' command layer costs more CPU than
                    # the read itself (bench/README.md, the relay)
                    with guard("reading the inbox", self._where):
                        conn = await reader.connection_pool.get_connection()
                    self._inbox_ready.set()
                    while True:
                        with guard("reading the inbox", self._where):
                            found = await conn.create_request(
                                b"XREAD", b"COUNT", 100, b"BLOCK", _BLOCK_MS, b"STREAMS", inbox, last
                            )
                        backoff.reset()
                        for ident, fields in _stream_entries(found, inbox):
                            last = ident
                            data = fields.get("d")
                            self._dispatch(fields.get("m"), data, ident)
            except BaseException as exc:
                _reraise_unless_redis_failure(exc)
                # frames may have been lost: every relay ends (its socket closed, its call
                # disconnected), and jambonz reconnects
                self._relay.fail_all("Redis unavailable")
                if self._inbox_ready.is_set():
                    self._inbox_ready = trio.Event()
                self._warn("inbox", "cluster inbox of %s: Redis unavailable; retrying", self.member)
            await trio.sleep(backoff.next())

    def _dispatch(self, raw: object, data: str | None, ident: str) -> None:
        """One inbox entry (sync): ``raw`` its message, ``data`` its frame, ``ident`` its
        stream id."""
        try:
            message = json.loads(str(raw))
            kind = message["k"]
        except (ValueError, TypeError, KeyError):
            log.warning("cluster: ignoring an unreadable inbox entry")
            return
        if kind == "reply":
            self._on_reply(message)
        elif kind == "cmd":
            self._on_command(message, ident)
        elif kind in ("up", "down"):
            self._relay.dispatch(message, data)
        elif kind == "relay":
            self._on_relay(message, data, ident)
        elif kind == "listen-miss":
            self._on_listen_miss(message)
        elif kind == "moved":
            if not self._for_an_earlier_process(ident, "notice"):
                self._on_moved(message)
        elif kind == "cancel":
            attempt = message.get("a")
            self._on_cancel(str(message.get("id")), None if attempt is None else str(attempt))

    def _on_moved(self, message: dict[str, Any]) -> None:
        """Another member's re-registration took a call's entry over from this member's (its
        copy was bound later, see ``UPSERT``): jambonz talks, or will reconnect, to that copy,
        and this one is stale. It ends (:meth:`_disown`), unless its socket was bound again
        since its entry was written (the write that queued takes the entry back). The notice
        names the copy taken over (``bound``, as its entry said): read late, after the copy was
        bound again (and its write took the entry back), it ends nothing.

        Whether the member that took the entry over still beats is not asked (no Redis round
        trip): the notice is written by that member's own write, and its copy is the one
        jambonz talks to. Should it die right after, its call's reconnect starts the call where
        it lands, from the stored record (the holder's, :meth:`_restore`); this stale copy,
        kept, would serve only a reconnect landing on this member, with older state, and one
        kept for a member merely late to beat would split the call (a reconnect here is served
        here, never relayed)."""
        sid = str(message.get("sid"))
        entry = self._live.get(sid)
        if entry is None:
            return
        call, summary = entry
        bound = message.get("bound")
        if not isinstance(bound, int | float) or self._ranked.get(sid) != int(bound):
            return  # about a copy bound before this one (or another copy of the call)
        if self._unwritten(sid, summary):
            return  # bound again since its entry was written (or not known written)
        by = str(message.get("to"))
        self._disown(sid, call, summary, f"member {by} re-registered a copy of the call bound since this one")

    def _on_reply(self, message: dict[str, Any]) -> None:
        """The outcome of a request id: every attempt of this handle waiting for it has it."""
        for waiter in self._waiters.get(str(message.get("id")), ()):
            if waiter.reply is None:
                waiter.reply = message
                waiter.done.set()

    def _on_command(self, message: dict[str, Any], ident: str) -> None:
        try:
            request = _Request(
                id=str(message["id"]),
                reply_to=str(message["to"]),
                call_sid=str(message["sid"]),
                command=str(message["cmd"]),
            )
            ttl = int(message["ttl"])
            attempt = str(message.get("a", ""))  # ('': a sender that names none)
        except (KeyError, TypeError, ValueError):
            log.warning("cluster: ignoring a malformed command request")
            return
        if self._for_an_earlier_process(ident, "command"):
            return
        self._accept(request, attempt, stale=lambda: self._stale(ident, ttl))

    def _accept(self, request: _Request, attempt: str, *, stale: Callable[[], bool] = lambda: False) -> None:
        """A command for one of this member's calls, from another member's inbox entry or from
        this handle's own :meth:`send_command` (one path: one request id runs at most once,
        whoever sends it, in the call's one FIFO lane). ``stale``: its sender gave up on it."""
        earlier = self._seen.get(request.id)
        if earlier is not None:  # done: answer again (the first answer may have been lost)
            self._duplicates += 1
            self._spawn_reply(request, earlier)
            return
        job = self._jobs.get(request.id)
        if job is not None:  # queued or running: this attempt gets its outcome too
            self._duplicates += 1
            job.attempts[attempt] = request.reply_to
            return
        if stale():
            return  # the sender gave up on it already
        lane = self._lanes.get(request.call_sid)
        if lane is None:
            lane = self._lanes[request.call_sid] = []
            self._nursery.start_soon(self._run_lane, request.call_sid, lane)
        if len(lane) >= self.config.max_queued_commands:
            refusal = _error("queue_full", f"{len(lane)} commands already wait for call {request.call_sid}")
            self._spawn_reply(request, refusal)  # (not remembered: it never went out)
            return
        job = self._jobs[request.id] = _Job(request, {attempt: request.reply_to})
        lane.append(job)

    def _on_cancel(self, rid: str, attempt: str | None) -> None:
        """The sender of one attempt (``None``: of every one) gave up on it. With no attempt
        left waiting, the command is dropped unless it started out; dropped, it leaves no
        trace (a retry with its id runs it)."""
        job = self._jobs.get(rid)
        if job is None:
            return  # done (its outcome stays, for a retry), or unknown
        if attempt is None:
            job.attempts.clear()
        else:
            job.attempts.pop(attempt, None)
        if job.attempts:
            return  # another attempt still waits for it
        if job.scope is not None:
            if not job.started:  # (once out, its outcome is what a retry gets)
                job.scope.cancel()  # _execute tells whether it started out meanwhile
        else:
            del self._jobs[rid]  # still queued in its lane, which skips it

    def _remember(self, rid: str, outcome: dict[str, Any]) -> None:
        self._seen[rid] = outcome
        if len(self._seen) > _SEEN:
            self._seen.popitem(last=False)

    async def _run_lane(self, call_sid: str, lane: list[_Job]) -> None:
        try:
            while lane:
                job = lane.pop(0)
                rid = job.request.id
                if self._jobs.get(rid) is not job:
                    continue  # dropped by its senders before it ran
                outcome = await self._execute(job)
                while outcome is None and job.attempts:  # an attempt came after the drop
                    outcome = await self._execute(job)
                del self._jobs[rid]
                if outcome is None:
                    continue  # dropped before it went out: no trace, nobody to answer
                if _went_out(outcome):
                    self._remember(rid, outcome)  # a retry gets it; any other leaves no trace
                for member in sorted(set(job.attempts.values())):
                    await self._reply(attrs.evolve(job.request, reply_to=member), outcome)
        finally:
            del self._lanes[call_sid]

    async def _execute(self, job: _Job) -> dict[str, Any] | None:
        """Run ``job``'s command on its call: the outcome, or ``None`` when every attempt gave
        up on it before it started out."""
        request = job.request
        server = self._server
        call = server.calls.get(request.call_sid) if server is not None else None
        if call is None:
            return _error("not_found", f"call {request.call_sid} has ended")
        try:
            command = decode_command(request.command)
        except ValueError as exc:
            return _error("protocol", f"unreadable command: {exc}")
        self._handled += 1
        scope = job.scope = trio.CancelScope()
        token = command_started.set(job.note_started)
        try:
            with scope:
                await call.send_command(command)
                return {"ok": True}
            if job.started:  # cancelled as it was being written: it may have gone out
                return _error("not_delivered", "its sender gave up as it was being sent", maybe_sent=True)
            return None  # cancelled before it went out
        except CallClosed as exc:
            return _error("not_found", str(exc))
        except CommandQueueFull as exc:
            return _error("queue_full", str(exc))
        except NotDelivered as exc:
            return _error("not_delivered", str(exc), maybe_sent=exc.maybe_sent)
        except JambonzTrioError as exc:
            return _error("protocol", str(exc))
        finally:
            command_started.reset(token)
            job.scope = None

    def _spawn_reply(self, request: _Request, outcome: dict[str, Any]) -> None:
        if request.reply_to == self.member:
            self._on_reply(_reply_message(request, outcome))  # (sync: nothing to write)
            return
        if self._reply_tasks >= _MAX_REPLY_TASKS:
            self._warn("replies", "cluster: too many answers in flight; dropping one")
            return
        self._reply_tasks += 1

        async def reply() -> None:
            try:
                await self._reply(request, outcome)
            finally:
                self._reply_tasks -= 1

        self._nursery.start_soon(reply)

    async def _reply(self, request: _Request, outcome: dict[str, Any]) -> None:
        if request.reply_to == self.member:  # an attempt of this handle's own
            self._on_reply(_reply_message(request, outcome))
            await trio.lowlevel.checkpoint()
            return
        message = json.dumps(_reply_message(request, outcome))
        try:
            with guard("answering", self._where), trio.fail_after(self._bound):
                await self._reply_script(
                    keys=[self._keys.inbox(request.reply_to)],
                    args=[message, self.config.inbox_maxlen, self._idle_ms],
                )
        except ClusterUnavailable as exc:
            self._warn("reply", "cluster: could not answer a command from %s: %s", request.reply_to, exc)

    async def _send_cancel(self, owner: str, rid: str, attempt: str) -> None:
        with contextlib.suppress(ClusterUnavailable):
            message = {"k": "cancel", "id": rid, "a": attempt}
            await self._xadd(self._keys.inbox(owner), message, what="cancelling")

    async def _xadd(self, stream: str, message: dict[str, Any], *, what: str) -> str | None:
        """XADD to an existing inbox (``None``: it does not exist)."""
        with guard(what, self._where):
            return await xadd_to_inbox(
                self._client,
                stream,
                {"m": json.dumps(message)},
                maxlen=self.config.inbox_maxlen,
                bound=self._bound,
            )

    async def _find(self, call_sid: str) -> tuple[str, ClusterCall | None]:
        k = self._keys
        with guard("looking up a call", self._where), trio.fail_after(self._bound):
            found: list[str] = await self._lookup(keys=[k.members, k.calls, k.orphans], args=[call_sid])
        state, doc = found
        try:
            return str(state), ClusterCall.loads(str(doc)) if doc else None
        except ValueError:
            return "none", None

    async def _wait_reply(self, waiter: _Waiter, owner: str, call_sid: str) -> None:
        """Until the answer comes; checks every ``member_ttl / 2`` that the owner still beats."""
        while True:
            with trio.move_on_after(self.config.member_ttl / 2):
                await waiter.done.wait()
                return
            try:
                with guard("checking the owner", self._where), trio.fail_after(self._bound):
                    alive: int = await self._alive(keys=[self._keys.members], args=[owner])
            except ClusterUnavailable as exc:
                raise ClusterUnavailable(str(exc), maybe_sent=True) from exc
            if not alive and waiter.reply is None:
                raise OwnerGone(
                    f"member {owner} (holding call {call_sid}) died before answering", maybe_sent=True
                )

    # -- watching ------------------------------------------------------------------------------

    async def _watch(self, send: trio.MemorySendChannel[ClusterEvent]) -> None:
        backoff = _Backoff()
        async with send:
            while True:
                try:
                    async with self._reader() as reader:
                        with guard("watching calls", self._where):
                            top = await reader.xrevrange(self._keys.events, count=1)
                        last = str(top[0].identifier) if top else "0-0"
                        view = {c.call_sid: c for c in await self._list_calls(reader)}
                        await send.send(CallsSnapshot(tuple(view.values())))
                        backoff.reset()
                        while True:
                            with guard("watching calls", self._where):
                                found = await reader.xread(
                                    {self._keys.events: last}, block=_BLOCK_MS, count=100
                                )
                            for entry in (found or {}).get(self._keys.events, ()):
                                last = str(entry.identifier)
                                event = _event(entry.field_values, view)
                                if event is not None:
                                    await send.send(event)
                except BaseException as exc:
                    _reraise_unless_redis_failure(exc)
                await trio.sleep(backoff.next())

    # -- logging -------------------------------------------------------------------------------

    def _warn(self, key: str, fmt: str, *args: object) -> None:
        """A warning at most every 10 s per kind (an outage must not flood the logs)."""
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) >= 10.0:
            self._warned[key] = now
            log.warning(fmt, *args)
        else:
            log.debug(fmt, *args)


class RemoteCall(CommandMethods):
    """A call of the cluster, by sid: the command API of :class:`~jambonz_trio.Call`
    (``redirect``, ``hangup``, ``mute``, ``whisper``, ...), each sent with
    :meth:`Cluster.send_command` (same blocking, errors and timeouts)."""

    def __init__(self, cluster: Cluster, call_sid: str) -> None:
        self.cluster = cluster
        self.call_sid = call_sid

    def __repr__(self) -> str:
        return f"<RemoteCall {self.call_sid}>"

    async def send_command(self, command: Command) -> None:
        """See :meth:`Cluster.send_command`."""
        await self.cluster.send_command(self.call_sid, command)

    async def info(self) -> ClusterCall | None:
        """The call's directory entry (``None``: not live). See :meth:`Cluster.get_call`."""
        return await self.cluster.get_call(self.call_sid)


def _reply_message(request: _Request, outcome: dict[str, Any]) -> dict[str, Any]:
    return {"k": "reply", "id": request.id, **outcome}


def _went_out(outcome: dict[str, Any]) -> bool:
    """Whether a command's outcome says it went out to jambonz, or may have: the outcomes a
    retry with its request id gets again. A refusal (the call's queue full, a rule of the
    protocol, the socket certainly not written, the call gone) leaves no trace."""
    return bool(outcome.get("ok") or outcome.get("maybe_sent"))


def _error(code: str, message: str, *, maybe_sent: bool = False) -> dict[str, Any]:
    return {"error": code, "message": message, "maybe_sent": maybe_sent}


def _raise_for(reply: dict[str, Any], call_sid: str) -> None:
    """Raise what the owner's ``send_command`` raised, as the same type (see send_command)."""
    if reply.get("ok"):
        return
    code = reply.get("error")
    message = str(reply.get("message") or code)
    if code == "not_found":
        raise CallNotFound(f"call {call_sid}: {message}")
    if code == "queue_full":
        raise CommandQueueFull(message)
    if code == "not_delivered":
        raise NotDelivered(message, maybe_sent=bool(reply.get("maybe_sent")))
    raise LocalProtocolError(message)


def _event(raw: Mapping[Any, Any], view: dict[str, ClusterCall]) -> ClusterEvent | None:
    """A watch event from an events-stream entry, applied to ``view``; ``None`` if it changes
    nothing there (replayed around a snapshot)."""
    fields = {str(k): str(v) for k, v in raw.items()}
    kind, sid = fields.get("e"), fields.get("sid", "")
    if kind == "end":
        if view.pop(sid, None) is None:
            return None
        return CallEnded(sid, fields.get("member", ""), fields.get("why", "ended"))
    try:
        call = ClusterCall.loads(fields.get("call", ""))
    except ValueError:
        return None
    before = view.get(sid)
    if before == call:
        return None
    view[sid] = call
    return CallStarted(call) if before is None else CallUpdated(call)


def _stream_entries(found: object, stream: str) -> list[tuple[str, dict[str, str]]]:
    """The entries of ``stream`` in a raw ``XREAD`` answer (RESP3: ``{stream: [[id, [field,
    value, ...]], ...]}``, or nothing when the block timed out)."""
    if not isinstance(found, dict):
        return []
    out: list[tuple[str, dict[str, str]]] = []
    for entry in found.get(stream) or ():
        ident, flat = entry
        values = [str(x) for x in flat or ()]
        out.append((str(ident), dict(zip(values[::2], values[1::2], strict=False))))
    return out


def _reraise_unless_redis_failure(exc: BaseException) -> None:
    """Swallow a failure of the link to Redis (a reader then starts a new session); re-raise
    anything else. ``Cancelled`` next to such failures (coredis' teardown can add a
    ``ClosedResourceError``) is re-raised alone."""
    found = leaves(exc)
    cancelled = [e for e in found if isinstance(e, trio.Cancelled)]
    rest = [e for e in found if not isinstance(e, trio.Cancelled)]
    if not all(isinstance(e, (ClusterUnavailable, *REDIS_ERRORS)) for e in rest):
        raise exc
    if cancelled:
        raise cancelled[0] from None


@contextlib.asynccontextmanager
async def _unwrapped() -> AsyncIterator[None]:
    """Re-raise the one exception a nursery wrapped in a group (the body's own error, or
    ``Cancelled``), so that users see what their code raised."""
    try:
        yield
    except BaseExceptionGroup as group:
        found = leaves(group)
        if len(found) == 1:
            raise found[0] from None
        raise


@contextlib.asynccontextmanager
async def open_cluster(
    url: str,
    *,
    namespace: str = "default",
    member: str | None = None,
    config: ClusterConfig | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Cluster]:
    """Join the cluster at ``url`` (``redis://[user:password@]host:port/db``, ``rediss://``
    for TLS, ``unix://``): ``async with open_cluster(url) as cluster``.

    Entering does no network I/O and never fails for Redis being down: the member registers
    as soon as Redis answers and operations raise :class:`ClusterUnavailable` meanwhile (see
    :meth:`Cluster.wait_registered`). Leaving removes the member and its entries (bounded by
    ``op_timeout``).

    Args:
        namespace: clusters sharing one Redis keep apart by namespace.
        member: this member's id (default ``host-pid-random``); unique in the namespace.
        config: see :class:`ClusterConfig`.
        ssl_context: for ``rediss://`` (default: verify the certificate and the host name).

    The password in ``url`` is never logged nor shown in a ``repr`` or an error.

    Raises:
        ValueError: not a Redis URL, or an invalid namespace.
    """
    check_url(url)
    config = config or ClusterConfig()
    Keys(namespace)  # validates
    context = tls_context(url, ssl_context)
    client = make_client(url, op_timeout=config.op_timeout, ssl_context=context)
    async with _unwrapped(), client, trio.open_nursery() as nursery:
        cluster = Cluster(
            url,
            namespace=namespace,
            member=member or default_member_id(),
            config=config,
            client=client,
            ssl_context=context,
            nursery=nursery,
        )
        nursery.start_soon(cluster._directory_loop)
        nursery.start_soon(cluster._inbox_loop)
        nursery.start_soon(cluster._relay_watch)
        try:
            yield cluster
        finally:
            nursery.cancel_scope.cancel()  # no directory write may follow the leave
            await cluster._leave()
