"""The reconnect relay: a call's socket held by one member, the call run by another.

jambonz reconnects to the same URL with no call id in the handshake, so a ``session:reconnect``
may land on any member (another worker behind ``SO_REUSEPORT``, another instance behind the
load balancer). When the directory says another live member holds the call, the member the
socket reached (the *holder*) relays it to that member (the *owner*):

* the holder sends the reconnect's frame and its admission (route, a hash of the Basic user)
  to the owner's inbox; the owner decides with the rules of a local reconnect
  (:meth:`JambonzServer.relay_verdict`) and answers ``accept``, ``refuse`` (the holder serves
  an isolated call) or ``none`` (no such live call: the holder starts it);
* from then on every frame travels through the members' inbox streams (one ordered stream per
  receiving member: no stream, key or Redis connection per call), numbered per direction: a
  gap (frames trimmed or lost in a Redis restart) ends the relay like a dropped socket;
* a member writes every relay's entries on a Redis connection of its own (not shared with
  the directory's scripts nor with blocking reads): sending an entry issues its ``XADD`` at
  once, behind the ones before it and without waiting for their answers (Redis answers in
  order; coredis sends what is waiting in one write), and the writer task reads the answers.
  So a frame never waits for the round trips of the receipt Pings and Pongs queued before
  it. Sending is like writing to a socket: done once on its way; a failed write ends the
  relay;
* the owner's engine drives a :class:`RelayedConnection` as it drives a websocket: it owns
  every ack deadline, and its receipt Pings travel in order with the frames (the holder writes
  them on the socket and sends their Pongs back), so what proves an answer read locally proves
  it here too (docs/reconnects.md);
* the holder keeps the socket alive (its own Ping every ``ping_interval``) and propagates
  closes both ways: jambonz's Close or a dead socket reaches the owner as a close, the owner's
  close is run on the socket and its outcome sent back, an abort drops the socket;
* a fault - Redis unreachable, a frame missing, the other member no longer beating - ends the
  relay in a known state: the holder closes the socket with 1011 (jambonz reconnects again) and
  the owner's call is disconnected, waiting for that reconnect as after any drop.

Nothing here is on the path of a call that is not relayed.
"""

from __future__ import annotations

import collections
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import coredis
import coredis.exceptions
import trio
from coredis.connection import BaseConnection

from .._connection import CloseReason, ConnectionClosed
from .._log import get_logger
from .._membership import Relayed
from .._websocket import Keepalive
from ._errors import ClusterUnavailable, OwnerGone
from ._redis import LuaScript, guard, xadd_to_inbox
from ._scripts import REPLY, Keys

if TYPE_CHECKING:
    from .._admission import Identity
    from .._config import CallConfig
    from .._websocket import ServerWebSocket

__all__ = ["RelayHub", "RelayedConnection"]

log = get_logger("jambonz_trio.cluster")

#: Entries received per relay and waiting for their reader before the relay is ended as too
#: slow; also the entries a relay may have queued for writing before its sender waits.
_BACKLOG = 1024
#: Payload prefix of the holder's own keepalive Pings (the owner's receipt Pings use another).
_KEEPALIVE = b"jt-relay-keepalive:"
#: Close code the holder uses when the relay fails: jambonz reconnects on anything but 1000.
RELAY_FAILED = 1011

_Item = tuple[str, Any]


class Endpoint:
    """One side of one relay: what arrives from the other member, in order, and the numbering
    of what this side sends."""

    def __init__(self, rid: str, peer: str, role: str, call_sid: str) -> None:
        self.rid = rid
        self.peer = peer
        self.role = role  # "holder" or "owner"
        self.call_sid = call_sid
        self.sent = 0
        self.received = 0
        self.unwritten = 0  # entries queued for the writer, not yet in Redis
        self.write_error: ClusterUnavailable | OwnerGone | None = None
        self.send_channel, self.receive_channel = trio.open_memory_channel[_Item](_BACKLOG)
        self.fault: str | None = None

    def deliver(self, n: int, item: _Item) -> None:
        """An entry from the other member (sync, called by the inbox task)."""
        if self.fault is not None:
            return
        if n != self.received + 1:
            self.fail(f"relay frame {self.received + 1} missing (got {n})")
            return
        self.received = n
        try:
            self.send_channel.send_nowait(item)
        except trio.WouldBlock:
            self.fail(f"more than {_BACKLOG} relayed frames waiting")
        except trio.ClosedResourceError:
            pass

    def fail(self, why: str) -> None:
        """End the relay (sync): the reader gets what arrived before, then the fault."""
        if self.fault is None:
            self.fault = why
            self.send_channel.close()


@attrs.define(eq=False, kw_only=True, repr=False, slots=False)
class RelayHub:
    """The relays of one cluster handle: endpoints by relay id, sending, the peers' liveness."""

    member: str
    _keys: Keys
    _client: coredis.Redis[str]
    _connect: Callable[[], coredis.Redis[str]]
    _where: str
    _bound: float
    _inbox_maxlen: int
    _idle_ms: int
    _nursery: trio.Nursery

    def __attrs_post_init__(self) -> None:
        self._ensure = LuaScript(self._client, "REPLY", REPLY, where=self._where)
        # the writer (see _write_loop): its connection, the requests it has issued (in order),
        # the entries waiting for a connection, and what senders and the writer wait for
        self._conn: BaseConnection | None = None
        self._in_flight: collections.deque[tuple[Endpoint, Awaitable[Any]]] = collections.deque()
        self._pending: collections.deque[tuple[Endpoint, list[str | int]]] = collections.deque()
        self._writer_wanted = trio.Event()
        self._written = trio.Event()
        self._writing = False
        self.endpoints: dict[str, Endpoint] = {}
        self._missing: set[str] = set()  # peers missing from the last liveness check
        self.total = 0
        self.faults = 0
        #: set when a relay opens (either side): the peers' liveness watch has work again
        self.opened = trio.Event()

    def counts(self) -> tuple[int, int]:
        """``(holding, serving)``: live relays by this member's role."""
        holding = sum(1 for e in self.endpoints.values() if e.role == "holder")
        return holding, len(self.endpoints) - holding

    def open(self, rid: str, peer: str, role: str, call_sid: str) -> Endpoint:
        endpoint = Endpoint(rid, peer, role, call_sid)
        self.endpoints[rid] = endpoint
        self.opened.set()
        return endpoint

    def close(self, endpoint: Endpoint) -> None:
        if self.endpoints.get(endpoint.rid) is endpoint:
            del self.endpoints[endpoint.rid]
            if endpoint.fault is not None:
                self.faults += 1  # once per relay, however many times it is closed
        endpoint.send_channel.close()

    def fail_all(self, why: str) -> None:
        for endpoint in list(self.endpoints.values()):
            endpoint.fail(why)

    def fail_peers(self, live: set[str]) -> None:
        """End the relays whose other member is missing from ``live`` in this check and the one
        before: one miss may be a member that has not re-registered yet after a Redis restart
        (its relays carry on), two are a member that stopped beating."""
        missing = {e.peer for e in self.endpoints.values() if e.peer not in live}
        for endpoint in list(self.endpoints.values()):
            if endpoint.peer in missing and endpoint.peer in self._missing:
                endpoint.fail(f"member {endpoint.peer} stopped beating")
        self._missing = missing

    def dispatch(self, message: dict[str, Any], data: str | None) -> None:
        """An ``up`` (to an owner) or ``down`` (to a holder) entry from the inbox (sync)."""
        try:
            rid = str(message["r"])
            n = int(message["n"])
            kind = str(message["t"])
        except (KeyError, TypeError, ValueError):
            log.warning("cluster: ignoring a malformed relay entry")
            return
        endpoint = self.endpoints.get(rid)
        want = "owner" if message["k"] == "up" else "holder"
        if endpoint is None or endpoint.role != want:
            if want == "holder" and kind == "accept":
                # the owner took a relay this member had given up on (too slow): undo it
                peer = str(message.get("from", ""))
                if peer:
                    self._abort_late(rid, peer)
            return
        try:
            item = (kind, _item_value(kind, message, data))
        except ValueError:
            endpoint.fail("unreadable relay entry")
            return
        endpoint.deliver(n, item)

    def _abort_late(self, rid: str, peer: str) -> None:
        self.post(Endpoint(rid, peer, "holder", ""), "abort")

    def post(self, endpoint: Endpoint, kind: str, data: str | None = None, **fields: Any) -> None:
        """Queue one entry for the other side, after this side's earlier ones (sync; never
        waits, whatever the backlog: for the few entries a relay sends besides its frames).
        A failed write ends the relay (:meth:`Endpoint.fail`) and is raised by the next
        :meth:`send` or :meth:`flush`."""
        if endpoint.write_error is not None:
            return  # the relay is over: the other side has (or will have) a gap
        endpoint.sent += 1
        header = json.dumps(
            {"k": "up" if endpoint.role == "holder" else "down", "r": endpoint.rid, "n": endpoint.sent,
             "t": kind, "from": self.member, **fields}
        )  # fmt: skip
        args: list[str | int] = [self._keys.inbox(endpoint.peer), "NOMKSTREAM", "MAXLEN", "~"]
        args += [self._inbox_maxlen, "*", "m", header]
        if data is not None:
            args += ["d", data]
        endpoint.unwritten += 1
        if self._conn is not None and not self._pending:
            try:
                self._issue(endpoint, args)
                return
            except (coredis.exceptions.ConnectionError, anyio.ClosedResourceError, anyio.BrokenResourceError):
                # (a connection closing while it still says it is usable refuses the request
                # from its write buffer, as anyio's stream errors)
                self._conn = None  # the writer's wait notices, and starts a new connection
        self._pending.append((endpoint, args))
        self._wake_writer()

    def _issue(self, endpoint: Endpoint, args: list[str | int]) -> None:
        """Send one ``XADD`` on the writer's connection (sync: coredis' connection queues it for
        its socket, after the ones before; Redis answers in that order)."""
        assert self._conn is not None
        request = self._conn.create_request(b"XADD", *args)
        self._in_flight.append((endpoint, request))
        self._wake_writer()

    def _wake_writer(self) -> None:
        self._writer_wanted.set()
        if not self._writing:
            try:
                self._nursery.start_soon(self._write_loop)
                self._writing = True
            except RuntimeError:  # the handle is closing: nothing is written any more
                self._lose_writes(ClusterUnavailable("the cluster handle is closing"))

    async def send(self, endpoint: Endpoint, kind: str, data: str | None = None, **fields: Any) -> None:
        """Queue one entry for the other side, in order with this side's other entries. Returns
        once it is on its way (written to the writer's connection, not yet answered): no wait
        for the round trips of the entries before it; blocks only while this relay has
        ``_BACKLOG`` entries unanswered (bounded by the writer's timeouts).

        Raises:
            OwnerGone: an earlier write found the other member's inbox gone (it was swept).
            ClusterUnavailable: an earlier write could not reach Redis.
        """
        while endpoint.unwritten >= _BACKLOG and endpoint.write_error is None:
            await self._written.wait()
        if endpoint.write_error is not None:
            raise endpoint.write_error
        self.post(endpoint, kind, data, **fields)
        await trio.lowlevel.checkpoint()

    async def flush(self, endpoint: Endpoint) -> None:
        """Wait until Redis has every entry queued for ``endpoint``.

        Raises:
            OwnerGone, ClusterUnavailable: as :meth:`send`.
        """
        while endpoint.unwritten and endpoint.write_error is None:
            await self._written.wait()
        if endpoint.write_error is not None:
            raise endpoint.write_error

    async def _write_loop(self) -> None:
        """The writer: a connection of its own (a fresh client after a failure) on which
        :meth:`post` issues each ``XADD`` at once; this task reads their answers, in order."""
        while True:
            if not self._pending:
                self._writer_wanted = trio.Event()
                await self._writer_wanted.wait()
                continue
            try:
                with guard("relaying", self._where):
                    async with self._connect() as client:
                        with trio.fail_after(self._bound):
                            self._conn = await client.connection_pool.get_connection()
                        pending, self._pending = self._pending, collections.deque()
                        for endpoint, args in pending:
                            if endpoint.write_error is None:
                                self._issue(endpoint, args)
                        await self._read_answers()
            except ClusterUnavailable as exc:
                # what was in flight may or may not be in Redis: those relays end (jambonz
                # reconnects; the calls wait for it), as do those with entries queued meanwhile
                self._lose_writes(exc)
            finally:
                self._conn = None

    async def _read_answers(self) -> None:
        """The answers to the writer's requests, in order. Returns when the connection broke
        with none in flight (the entries waiting go out on a new one); raises the Redis
        failures that :func:`guard` maps."""
        while True:
            while not self._in_flight:
                if self._conn is None or not self._conn.usable:
                    return
                self._writer_wanted = trio.Event()
                await self._writer_wanted.wait()
            _, last = self._in_flight[-1]
            with trio.fail_after(self._bound):
                await last  # Redis answers in order: every request up to ``last`` is answered
            while True:
                endpoint, request = self._in_flight.popleft()
                endpoint.unwritten -= 1
                try:
                    added = await request  # answered: no wait
                except coredis.exceptions.ResponseError as exc:  # this entry only
                    self._fail_writes([endpoint], ClusterUnavailable(f"relaying: {exc}"))
                else:
                    if added is None:  # NOMKSTREAM: the inbox is gone with its member
                        gone = OwnerGone(f"member {endpoint.peer} is gone", maybe_sent=False)
                        self._fail_writes([endpoint], gone)
                if request is last:
                    break
            self._written.set()
            self._written = trio.Event()

    def _lose_writes(self, error: ClusterUnavailable) -> None:
        lost = [endpoint for endpoint, _ in self._in_flight] + [endpoint for endpoint, _ in self._pending]
        self._in_flight.clear()
        self._pending.clear()
        self._conn = None
        self._fail_writes(lost, error)
        self._written.set()
        self._written = trio.Event()

    def _fail_writes(self, endpoints: list[Endpoint], error: ClusterUnavailable | OwnerGone) -> None:
        """Entries of these relays were not written: each relay ends (its later entries would
        leave a gap), and their senders learn why."""
        for endpoint in endpoints:
            if endpoint.write_error is None:
                endpoint.write_error = error
                endpoint.fail(f"cluster relay lost: {error}")

    async def xadd(self, member: str, entry: dict[str, str], *, what: str) -> None:
        """XADD to ``member``'s existing inbox.

        Raises:
            OwnerGone: the inbox is gone (the member was swept).
            ClusterUnavailable: Redis cannot be reached.
        """
        with guard(what, self._where):
            added = await xadd_to_inbox(
                self._client, self._keys.inbox(member), entry, maxlen=self._inbox_maxlen, bound=self._bound
            )
        if added is None:
            raise OwnerGone(f"member {member} is gone", maybe_sent=False)

    # -- the holder: the socket's side ------------------------------------------------------

    async def request(
        self, owner: str, call_sid: str, frame: str, identity: Identity, user: str | None, within: float
    ) -> tuple[str, Endpoint]:
        """Ask ``owner`` to take the reconnect: its answer (``accept``, ``refuse``, ``none``,
        or ``timeout``) and the endpoint (to :meth:`hold` on ``accept``; closed otherwise).

        Raises:
            OwnerGone, ClusterUnavailable: as :meth:`xadd`.
        """
        rid = uuid.uuid4().hex
        endpoint = self.open(rid, owner, "holder", call_sid)
        answer = "timeout"
        try:
            # the owner answers into this member's inbox: after a Redis restart it may not
            # exist again yet (the heartbeat re-creates it), so create it now if needed
            with guard("relaying a reconnect", self._where), trio.fail_after(self._bound):
                await self._ensure(
                    keys=[self._keys.inbox(self.member)],
                    args=['{"k":"hello"}', self._inbox_maxlen, self._idle_ms],
                )
            # the owner's answer is wanted within ``within`` s of the entry's arrival in Redis
            # (dated by its stream id: Redis' clock, never a member's; see Cluster._stale)
            header = {
                "k": "relay",
                "r": rid,
                "from": self.member,
                "sid": call_sid,
                "route": identity.route,
                "user": user,
                "ttl": int(within * 1000),
            }
            await self.xadd(owner, {"m": json.dumps(header), "d": frame}, what="relaying a reconnect")
            with trio.move_on_after(max(0.0, within)):
                try:
                    answer, _ = await endpoint.receive_channel.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    answer = "timeout"
            return answer, endpoint
        finally:
            if answer != "accept":
                self.close(endpoint)

    async def hold(self, endpoint: Endpoint, ws: ServerWebSocket, config: CallConfig) -> Relayed:
        """Carry the socket for the owner until the relay ends (see the module docstring).
        Never raises for the relay's faults: the socket is then closed with 1011."""
        self.total += 1
        why: str | None = None
        try:
            why = await _Holder(self, endpoint, ws, config).run()
        finally:
            if why is not None and endpoint.fault is None:
                endpoint.fault = why  # (counted as a fault by close)
            self.close(endpoint)
        if why is not None:
            log.warning("call %s: relay to member %s failed (%s); closing the socket with %d",
                        endpoint.call_sid, endpoint.peer, why, RELAY_FAILED)  # fmt: skip
            with trio.CancelScope(shield=True), trio.move_on_after(config.close_timeout):
                await ws.close(RELAY_FAILED, "cluster relay failed")
            await ws.abort()
        return Relayed()


class _Holder:
    """The tasks of one held socket: socket -> owner (its reader queues each frame, and each
    receipt Pong, for the writer in the order they came), owner -> socket, the keepalive."""

    def __init__(self, hub: RelayHub, endpoint: Endpoint, ws: ServerWebSocket, config: CallConfig) -> None:
        self.hub = hub
        self.endpoint = endpoint
        self.ws = ws
        self.config = config
        self.reader = trio.CancelScope()
        self.keepalive = Keepalive(_KEEPALIVE)
        self.fault: str | None = None

    async def run(self) -> str | None:
        """``None`` when the relay ended normally, else why it failed."""
        self.ws.on_pong = self._on_pong
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._read_socket)
            nursery.start_soon(self._read_down)
            nursery.start_soon(self._keepalive)
        return self.fault

    def _done(self, fault: str | None = None) -> None:
        if fault is not None and self.fault is None:
            self.fault = fault
        self.nursery.cancel_scope.cancel()

    def _on_pong(self, payload: bytes) -> None:
        if self.keepalive.owns(payload):
            self.keepalive.pong(payload)
            return
        # a receipt Pong: the owner's proof that jambonz read its answers (called by the
        # socket's reader as it reads the Pong: queued in the order of the socket's frames)
        self.hub.post(self.endpoint, "pong", payload.hex())

    async def _read_socket(self) -> None:
        hub, endpoint = self.hub, self.endpoint
        try:
            with self.reader:
                while True:
                    try:
                        message = await self.ws.receive()
                    except ConnectionClosed as exc:
                        await self._report_close(exc.reason)
                        return
                    if isinstance(message, str):
                        await hub.send(endpoint, "text", message)
                    # binary frames: the engine ignores them on a call's socket; so does the relay
        except (ClusterUnavailable, OwnerGone) as exc:
            self._done(str(exc))

    async def _report_close(self, reason: CloseReason) -> None:
        """The socket closed: tell the owner, and the relay is over once that is written."""
        self.hub.post(self.endpoint, "close", code=reason.code, reason=reason.reason)
        await self.hub.flush(self.endpoint)
        self._done()

    async def _read_down(self) -> None:
        ws, endpoint = self.ws, self.endpoint
        while True:
            try:
                kind, value = await endpoint.receive_channel.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._done(endpoint.fault or "relay ended")
                return
            try:
                if kind == "text":
                    await self._bounded(ws.send(value))
                elif kind == "text+ping":  # an answer and its receipt Ping: one entry, one write
                    text, payload = value
                    await self._bounded(ws.send_then_ping(text, payload))
                elif kind == "ping":
                    await self._bounded(ws.ping(bytes.fromhex(value)))
                elif kind == "close":
                    await self._close(value)
                    return
                elif kind == "abort":
                    await ws.abort()
                    self._done()
                    return
                else:  # e.g. an owner on a newer release: the relay cannot go on faithfully
                    self._done(f"unknown relay entry {kind!r}")
                    return
            except ConnectionClosed:
                pass  # the socket died: its reader reports how, to the owner
            except ValueError:
                self._done("unreadable relay entry")
                return

    async def _bounded(self, write: Any) -> None:
        with trio.move_on_after(self.config.send_timeout) as scope:
            await write
        if scope.cancelled_caught:
            await self.ws.abort()  # a write cut half-way leaves the socket unusable

    async def _close(self, value: CloseReason) -> None:
        """The owner closes: run the closing handshake on the socket, then tell it how it went."""
        self.reader.cancel()  # one reader at a time: the close reads the peer's Close itself
        with trio.move_on_after(self.config.close_timeout):
            await self.ws.close(value.code or 1000, value.reason)
        ending = self.ws.close_reason or CloseReason(1006, "socket lost")
        try:
            await self.hub.send(self.endpoint, "closed", code=ending.code, reason=ending.reason)
        except (ClusterUnavailable, OwnerGone):
            pass  # the owner's close is bounded by its own close_timeout
        await self.ws.abort()
        self._done()

    async def _keepalive(self) -> None:
        """The socket's keepalive, as the engine runs it for a local call."""
        config = self.config
        why = await self.keepalive.run(
            self.ws,
            interval=config.ping_interval,
            pong_timeout=config.ping_timeout,
            send_timeout=config.send_timeout,
        )
        if why == "closed":
            return  # its reader reports the close
        log.warning("call %s: %s; aborting the relayed socket", self.endpoint.call_sid, why)
        await self.ws.abort()
        self.reader.cancel()
        try:
            await self._report_close(CloseReason(1006, why))
        except (ClusterUnavailable, OwnerGone) as exc:
            self._done(str(exc))


def _item_value(kind: str, message: dict[str, Any], data: str | None) -> Any:
    if kind == "text+ping":
        return data or "", bytes.fromhex(str(message.get("p", "")))
    if kind in ("text", "ping", "pong"):
        value = data or ""
        return bytes.fromhex(value) if kind == "pong" else value
    if kind in ("close", "closed"):
        code = message.get("code")
        reason = message.get("reason")
        return CloseReason(
            code if isinstance(code, int) else None, reason if isinstance(reason, str) else None
        )
    return message.get("why")


class RelayedConnection:
    """The owner's :class:`~jambonz_trio._connection.Connection` of a relayed call: frames
    from and to the member holding jambonz's socket.

    No keepalive of its own (:attr:`pings` is ``False``: the holder pings the socket, and
    reports a dead one as a close); receipt Pings travel in order with the frames
    (:attr:`receipts`), an answer's own receipt Ping in the answer's entry
    (:meth:`send_then_ping`)."""

    pings = False
    receipts = True

    def __init__(self, hub: RelayHub, endpoint: Endpoint) -> None:
        self._hub = hub
        self._endpoint = endpoint
        self._close_reason: CloseReason | None = None
        self._closing = False
        self._close_done = trio.Event()
        self.on_pong: Any = None

    @property
    def close_reason(self) -> CloseReason | None:
        return self._close_reason

    @property
    def close_unanswered(self) -> bool:
        return self._closing and not self._close_done.is_set()

    def _lost(self, why: str, *, tell_holder: bool = True) -> CloseReason:
        """The relay failed: the call is disconnected (as when a socket dies), and the holder
        told to drop the socket (best effort: jambonz then reconnects), which would otherwise
        carry jambonz's requests into a relay that is over."""
        if tell_holder and not self._close_done.is_set():
            self._hub.post(self._endpoint, "abort")
        if self._endpoint.fault is None:
            self._endpoint.fault = why
        if self._close_reason is None or self._closing:
            self._close_reason = CloseReason(1006, why)
        self._close_done.set()
        self._hub.close(self._endpoint)
        return self._close_reason

    async def receive(self) -> str | bytes:
        endpoint = self._endpoint
        while True:
            try:
                kind, value = await endpoint.receive_channel.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                if self._close_done.is_set() and self._close_reason is not None:
                    raise ConnectionClosed(self._close_reason) from None
                raise ConnectionClosed(self._lost(endpoint.fault or "relay ended")) from None
            if kind == "text":
                if self._close_reason is None:
                    return str(value)
                continue  # we are closing: late messages are not delivered
            if kind == "pong":
                if self.on_pong is not None:
                    self.on_pong(value)
                continue
            if kind == "abort":  # the holder dropped the socket (it had given up on us)
                raise ConnectionClosed(self._lost("the holder dropped the socket", tell_holder=False))
            if kind in ("close", "closed"):
                # jambonz's Close (or its socket's end), or the outcome of ours
                self._close_reason = value if value.code is not None else CloseReason(1006, value.reason)
                self._close_done.set()
                self._hub.close(endpoint)
                raise ConnectionClosed(self._close_reason)

    async def _send(self, kind: str, data: str | None = None, **fields: Any) -> None:
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        try:
            await self._hub.send(self._endpoint, kind, data, **fields)
        except (ClusterUnavailable, OwnerGone) as exc:
            raise ConnectionClosed(self._lost(f"cluster relay lost: {exc}")) from None

    async def send(self, message: str) -> None:
        await self._send("text", message)

    async def ping(self, payload: bytes) -> None:
        await self._send("ping", payload.hex())

    async def send_then_ping(self, message: str, payload: bytes) -> None:
        """An answer and its receipt Ping in one entry (the engine's one-write receipt): the
        holder writes both in one socket write, the Ping's frame after the answer's."""
        await self._send("text+ping", message, p=payload.hex())

    async def close(self, code: int, reason: str | None) -> None:
        if self._close_reason is not None:
            return
        self._close_reason = CloseReason(code, reason)  # ours, until the holder reports the end
        self._closing = True
        try:
            await self._hub.send(self._endpoint, "close", code=code, reason=reason)
        except (ClusterUnavailable, OwnerGone) as exc:
            self._lost(f"cluster relay lost: {exc}")
            return
        await self._close_done.wait()

    async def abort(self) -> None:
        if not self._close_done.is_set():  # (set once the holder's socket is gone)
            self._hub.post(self._endpoint, "abort")  # the holder drops the socket
            if self._close_reason is None:
                self._close_reason = CloseReason(1006, "aborted")
            self._close_done.set()
            self._hub.close(self._endpoint)
        await trio.lowlevel.checkpoint()
