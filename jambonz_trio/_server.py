"""``serve_jambonz`` / ``JambonzServer``: listeners, admission, routing, the call registry, drain.

Each TCP connection runs in its own task, wrapped so that nothing it raises can reach the
listeners or other calls (FM-36 in docs/reliability.md). Admission (:mod:`._admission`) judges
the request inside one deadline covering head, auth and the 101 reply, once
:class:`._admission.HandshakeBudget` gave it a slot (global cap, per-source cap, a reserve for
sources that authenticated); then the connection's task reads the websocket itself
(:mod:`._websocket`: no reader task per connection) and hands it to the call's engine
(:mod:`._engine`), through the engine's small interface: ``attach``, ``serve``, ``detach``,
``run``, ``give_up``, ``isolate``.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import attrs
import trio
import trio.testing
import wsproto.utilities

from ._admission import (
    Admitted,
    AudioRoute,
    BasicAuth,
    HandshakeBudget,
    Identity,
    MetricsPage,
    Refusal,
    Route,
    Silent,
    http_response,
    judge,
    read_head,
    source_key,
)
from ._audio import AudioStreams, listen_socket_admitted
from ._call import Call
from ._config import ServerConfig
from ._connection import Connection, ConnectionClosed
from ._engine import CallEngine, Handler, Link
from ._errors import RemoteProtocolError
from ._listen import open_listeners
from ._log import CallLog, current_call, get_logger, path_of
from ._membership import OWNER_FIELDS, CallRouter, CallWatcher, Reconnect, Relayed, ServeHere, ServerMember
from ._observe import Observer, Observers
from ._pacing import TokenBucket
from ._protocol._envvars import apply_env
from ._protocol._json import TooComplex, loads_object
from ._protocol._messages import (
    JambonzMessage,
    SessionAdulting,
    SessionNew,
    SessionReconnect,
    SessionRedirect,
    compact_message,
    parse_message,
    routing_sid,
)
from ._public import NoPublicConstructor, create
from ._registry import CallRegistry, CallTable
from ._sync import leaves
from ._websocket import ReassemblyBudget, ServerWebSocket, accept_response

__all__ = ["Handler", "JambonzServer", "ServerStatistics", "serve_jambonz"]

log = get_logger("jambonz_trio.server")

#: First messages that start a session: they never take over a call listed under their sid.
_NEW_SESSIONS = (SessionNew, SessionAdulting, SessionRedirect)


@attrs.frozen(kw_only=True)
class ServerStatistics:
    """Counters of a :class:`JambonzServer` (see :meth:`JambonzServer.statistics`)."""

    connections: int
    pending_handshakes: int
    calls: int
    refused: int
    audio_streams: int = 0
    #: bytes of unfinished inbound messages all sockets hold beyond their first 64 KiB each
    partial_message_bytes: int = 0
    #: ``ServerConfig.max_partial_message_bytes``: the budget of those bytes
    partial_message_limit: int = 0
    #: sockets closed with 1009 because their next piece did not fit in that budget
    partial_message_refusals: int = 0


class JambonzServer(metaclass=NoPublicConstructor):
    """A running jambonz application server. Get one from :func:`serve_jambonz`.

    Attributes:
        calls: the :class:`CallRegistry` of live calls (look up, iterate, wait for new ones).
        audio_streams: the live audio streams (``listen`` sockets, :class:`~jambonz_trio.AudioStream`), by
            call sid.
        routes: the applications served.
        config: the server's limits and per-call settings.
        listeners: the sockets it accepts on.
        drained: set once :meth:`drain` has finished.
    """

    _FACTORY = "serve_jambonz() (server = await nursery.start(serve_jambonz, ...))"

    def __init__(
        self,
        routes: Sequence[Route | AudioRoute],
        config: ServerConfig,
        *,
        listeners: Sequence[trio.SocketListener | trio.SSLListener[trio.SocketStream]],
        calls_nursery: trio.Nursery,
        connections_nursery: trio.Nursery,
        accept_scope: trio.CancelScope,
        cluster: ServerMember | None = None,
    ) -> None:
        self.routes = tuple(routes)
        self.config = config
        self.listeners = list(listeners)
        self._table = CallTable(config.max_parked_calls, config.max_parked_calls_per_account)
        self.calls = create(CallRegistry, self._table)
        self.audio_streams = create(AudioStreams, self.calls)
        self._calls_nursery = calls_nursery
        self._connections_nursery = connections_nursery
        self._connections = 0
        # the reserve is for sources that authenticated (or are trusted): useless if none can
        earnable = config.trusted_sources or any(r.auth is not None for r in self.routes)
        reserve = config.reserved_pending_handshakes
        if reserve is None:
            reserve = config.max_pending_handshakes // 4
        self._handshakes = HandshakeBudget(
            limit=config.max_pending_handshakes,
            reserve=reserve if earnable else 0,
            per_source=config.max_pending_per_source,
            known_ttl=config.known_source_ttl,
            trusted=config.trusted_sources,
        )
        self._refused = 0
        #: bytes of unfinished inbound messages, shared by every socket (beyond each one's first 64 KiB)
        self._reassembly = ReassemblyBudget(config.max_partial_message_bytes)
        self._draining = False
        self._accept_scope = accept_scope
        self._calls_changed = trio.Event()
        self.drained = trio.Event()
        #: The cluster member told about calls (``serve_jambonz(cluster=...)``); ``None``: none.
        #: It joins once the server listens, which it does by now.
        self._watcher: CallWatcher | None = None if cluster is None else cluster.attach_server(self)
        #: The member, if it can relay a reconnect to the process holding its call.
        self._router = self._watcher if isinstance(self._watcher, CallRouter) else None
        self._metrics: Any = None
        #: told of calls, answers, refusals... (metrics, traces); ``None``: both off, nothing runs
        self.observer: Observer | None = self._observers()
        #: what admission answers a plain GET of the metrics path with (made once, not per handshake)
        self._metrics_page = (
            None if self._metrics is None else MetricsPage(self.config.metrics_path, self._metrics.render)
        )

    def _observers(self) -> Observer | None:
        """The metrics and tracing observers the config asks for (their imports happen here)."""
        config = self.config
        observers: list[Observer] = []
        if config.metrics:
            try:
                from ._metrics import Metrics
            except ImportError as exc:
                raise RuntimeError(
                    "ServerConfig(metrics=True) needs prometheus-client: pip install 'jambonz-trio[metrics]'"
                ) from exc
            self._metrics = Metrics(self.statistics)
            observers.append(self._metrics)
        if config.tracing:
            try:
                from ._tracing import Tracing
            except ImportError:
                log.warning("ServerConfig(tracing=True) but opentelemetry-api is not installed: no traces")
            else:
                observers.append(Tracing(config.tracer_provider))
        # even one goes through Observers: a hook that raises (a tracer provider's span
        # processor can) is contained there, never in a call or the server
        return Observers(observers) if observers else None

    @property
    def metrics_registry(self) -> Any:
        """The ``prometheus_client.CollectorRegistry`` of this server's metrics (served on
        ``ServerConfig.metrics_path``), or ``None`` when metrics are off. Register your own
        metrics in it to serve them on the same path, or register it in prometheus-client's
        global registry to export the server's metrics there too (docs/operations.md)."""
        return None if self._metrics is None else self._metrics.registry

    @property
    def port(self) -> int:
        """The port of the first listener (``port=0`` picks a free one)."""
        listener = self.listeners[0]
        if isinstance(listener, trio.SSLListener):
            listener = listener.transport_listener  # type: ignore[assignment]
        assert isinstance(listener, trio.SocketListener)
        port: int = listener.socket.getsockname()[1]
        return port

    def statistics(self) -> ServerStatistics:
        """Open connections, handshakes in progress, live calls, refusals so far, and the
        partial-message budget's use and refusals."""
        return ServerStatistics(
            connections=self._connections,
            pending_handshakes=self._handshakes.pending,
            calls=self._table.count(),
            refused=self._refused,
            audio_streams=len(self.audio_streams),
            partial_message_bytes=self._reassembly.held,
            partial_message_limit=self._reassembly.limit,
            partial_message_refusals=self._reassembly.refused,
        )

    async def connect_memory(self, *, lockstep: bool = False, source: str | None = None) -> trio.abc.Stream:
        """Open an in-memory connection to this server (no sockets): returns the client end.

        Used by :mod:`jambonz_trio.testing` and tests. ``lockstep=True`` gives a stream with no
        buffering (a writer blocks until the reader reads), to test back-pressure. ``source``:
        the IP address the connection counts as coming from (per-source limits; default none).
        """
        pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        client, server_side = pair()
        self._connections_nursery.start_soon(partial(self.handle_stream, server_side, source=source))
        await trio.lowlevel.checkpoint()
        return client

    # -- per connection --------------------------------------------------------------------

    async def handle_stream(self, stream: trio.abc.Stream, *, source: str | None = None) -> None:
        """Serve one connection, and close it. Never raises anything but ``Cancelled``.

        ``source``: the peer's IP address, for the per-source handshake limits; by default it
        is read from the socket (in-memory streams have none).
        """
        try:
            await self._handle(stream, source)
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle(self, stream: trio.abc.Stream, source: str | None = None) -> None:
        """:meth:`handle_stream` without the close: ``trio.serve_listeners`` runs it and closes
        the stream itself right after (one forced close per connection, not two)."""
        if self._draining or self._connections >= self.config.max_connections:
            await self._refuse(stream, Refusal(503, "server busy or draining"))
            return
        self._connections += 1
        try:
            await self._serve_connection(stream, source_key(source or _peer_address(stream)))
        except* Exception as group:
            if all(_is_close_race(e) for e in leaves(group)):
                # e.g. a ping arriving while we close (F2): contained, and not our fault
                log.info("connection ended in a close race: %r", group.exceptions[0])
            else:
                log.error("connection failed: %r", group.exceptions[0], exc_info=group)
        finally:
            self._connections -= 1

    async def _refuse(self, stream: trio.abc.Stream, refusal: Refusal) -> None:
        if refusal.status >= 400:
            self._refused += 1
            log.info("refused connection: %d %s", refusal.status, refusal.why)
            if self.observer is not None:
                self.observer.refused(refusal.status, refusal.reason)
        with trio.move_on_after(1.0):
            try:
                await stream.send_all(http_response(refusal.status, refusal.headers, refusal.body))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await trio.aclose_forcefully(stream)

    async def _serve_connection(self, stream: trio.abc.Stream, source: str | None) -> None:
        config = self.config
        now = trio.current_time()
        budget = self._handshakes
        why = budget.acquire(source, now)
        if why is not None:
            await self._refuse(stream, Refusal(503, why))
            return
        deadline = now + config.handshake_timeout
        first_byte = min(deadline, now + config.first_byte_timeout)
        pending = True
        try:
            admitted: Admitted | None = None
            refusal: Refusal | None = None
            head: bytes | None = None
            # one deadline for the TLS handshake, the request head, admission and the 101
            with trio.move_on_at(deadline) as scope:
                try:
                    request_by: float | None = first_byte
                    if isinstance(stream, trio.SSLStream):
                        await _wait_first_byte(stream, first_byte)
                        await stream.do_handshake()
                        request_by = None  # the hello was the first byte; the request follows
                    head = await read_head(
                        stream,
                        config.max_request_head_bytes,
                        max_headers=config.max_request_headers,
                        first_byte_deadline=request_by,
                    )
                    admitted = await judge(
                        head,
                        self.routes,
                        max_head_bytes=config.max_request_head_bytes,
                        health_path=config.health_path,
                        max_headers=config.max_request_headers,
                        metrics=self._metrics_page,
                    )
                    if admitted.route.auth is not None:
                        budget.authenticated(source, trio.current_time())
                    if isinstance(admitted.route, AudioRoute):
                        listen_socket_admitted(admitted.path)  # before the media server sees it
                    await stream.send_all(accept_response(admitted.key, admitted.subprotocol))
                except Refusal as exc:
                    refusal = exc
                except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the peer went away, or never said a word (Silent)
            if scope.cancelled_caught:
                log.info("handshake not completed within %.1f s", config.handshake_timeout)
                if head is not None and admitted is None:  # admission (an authenticator) was slow
                    await self._refuse(stream, Refusal(503, "admission timed out"))
                return  # (a 101 cut half-way leaves the stream unusable)
            if refusal is not None:
                await self._refuse(stream, refusal)
                return
            assert admitted is not None
            head = None  # this task lives as long as the call: do not keep the request alive
            budget.release(source)
            pending = False
            route = admitted.route
            if isinstance(route, AudioRoute):
                await self._serve_audio(stream, admitted, route)
                return
            ws = ServerWebSocket(
                stream,
                trailing=admitted.trailing,
                max_message_size=config.max_inbound_bytes,
                control_timeout=config.call.send_timeout,
                pacing=TokenBucket(config.call.inbound_rate, config.call.inbound_burst, trio.current_time()),
                partial_budget=self._reassembly,
            )
            try:
                # (here, not in a function of its own: this task lives as long as the call, and
                # each frame of its stack is held that long too: issue 16)
                call = await self._first_message(ws, admitted)
                if call is not None:  # (the first message's frame is gone by now)
                    await self._serve_link(call[0], Link(ws), call[1], call[2])
                if ws.close_unanswered:
                    # the websocket closed itself (a message too big, a bad frame): let the
                    # peer's Close come before the stream goes, or it may see a reset instead
                    # of our code
                    with trio.move_on_after(config.call.close_timeout):
                        await ws.finish_close()
            finally:
                ws.release_partial()  # however the socket ended
        finally:
            if pending:
                budget.release(source)

    async def _serve_audio(self, stream: trio.abc.Stream, admitted: Admitted, route: AudioRoute) -> None:
        audio = self.config.audio
        ws = ServerWebSocket(
            stream,
            trailing=admitted.trailing,
            max_message_size=audio.max_frame_bytes,
            max_text_size=audio.max_text_bytes,
            control_timeout=audio.send_timeout,
            partial_budget=self._reassembly,  # (a buffered burst of audio can be 1.28 MB)
        )
        try:
            await self.audio_streams.serve(
                ws,
                stream,
                path=admitted.path,
                identity=admitted.identity,
                handler=route.handler,
                config=audio,
            )
            if ws.close_unanswered:
                with trio.move_on_after(audio.close_timeout):
                    await ws.finish_close()
        finally:
            ws.release_partial()

    async def _first_message(
        self, ws: ServerWebSocket, admitted: Admitted
    ) -> tuple[CallEngine, JambonzMessage, Handler | None] | None:
        """Read the socket's first message and find the call it carries: ``(engine, first,
        handler)`` to serve (``handler`` for a new call), or ``None`` when the socket is done
        (refused, relayed to another member)."""
        first: JambonzMessage | None = None
        first_text: str | None = None  # a reconnect's frame, kept for a relay to its call's owner
        refusal = (1008, "expected a jambonz session message")
        with trio.move_on_after(self.config.first_message_timeout):
            try:
                frame = await ws.receive()
            except ConnectionClosed as exc:
                if exc.reason.code in (1008, 1009) and ws.close_unanswered:
                    log.warning("first message on %s refused: %s", path_of(admitted.path), exc.reason.reason)
                return None
            try:
                if not isinstance(frame, str):
                    raise RemoteProtocolError("first frame is binary")
                # kept compactly (the frame's text): the call holds its first message as long as it lives
                first = compact_message(parse_message(loads_object(frame)), frame)
                if self._router is not None and isinstance(first, SessionReconnect):
                    first_text = frame
                del frame  # this task lives as long as the call: no reference of its own
            except TooComplex as exc:
                log.warning("first message on %s refused: %s", path_of(admitted.path), exc)
                refusal = (1009, "message too big")
            except RemoteProtocolError as exc:
                log.warning("first message on %s is invalid (%s); closing", path_of(admitted.path), exc)
        if first is None:
            with trio.move_on_after(self.config.call.close_timeout):
                await ws.close(*refusal)
            return None
        here: ServeHere | None = None
        if first_text is not None and self._router is not None:
            assert isinstance(first, SessionReconnect)
            sid = routing_sid(first)
            if sid and self._table.live(sid) is None:
                # a call this process does not hold: perhaps another member of the cluster does
                # (what is logged meanwhile, a relay this task then holds included, is the call's)
                account_sid = first.data.get("account_sid")
                current_call.set(
                    CallLog(log, sid, trio.current_time, account_sid=account_sid, path=admitted.path)
                )
                routed = await self._router.route_reconnect(
                    Reconnect(first_text, first, admitted.identity, ws, self.config.call)
                )
                if isinstance(routed, Relayed):
                    return None
                here = routed
            first_text = None
        # the member that served the call saw jambonz read an answer: no re-key to suspect
        confirmed = here is not None and here.session_confirmed and not here.isolate
        engine, is_new = self._resolve(first, admitted, session_confirmed=confirmed)
        if is_new and here is not None and not engine.isolated:
            if here.isolate:
                log.warning(
                    "call %s: session:reconnect through %s does not match the call's owner on "
                    "another member; served as an isolated call",
                    engine.routing_sid,
                    admitted.identity.route,
                )
                engine.isolate()
            elif here.user_data is not None:
                engine.call.user_data.update(here.user_data)
        ws.on_paused = engine.inbound_paused  # over the call's inbound budget: logged per call
        assert isinstance(admitted.route, Route)
        return engine, first, admitted.route.handler if is_new else None

    async def _serve_link(
        self, engine: CallEngine, link: Link, first: JambonzMessage, handler: Handler | None
    ) -> None:
        """Attach ``link`` to ``engine`` (a new call when ``handler`` is given: registered and
        started) and run its receive loop."""
        current_call.set(engine.log)  # this task's log records are the call's (and its handler's)
        now = trio.current_time()
        try:
            if handler is not None:
                await engine.attach(link, first, now)
                self._register(engine)  # synchronously, so the registry never misses a live call
                self._calls_nursery.start_soon(self._run_call, engine, handler)
            else:
                self._table.unpark(engine)
                await engine.attach(link, first, now)
                if self.observer is not None:
                    self.observer.call_reconnected(engine)
                if self._watcher is not None:
                    self._watcher.call_rebound(engine.call)
            await engine.serve(link)
        finally:
            # however this task ends, the call must know its socket is gone (no-op if it does)
            engine.detach(link)

    # -- calls relayed from another member -------------------------------------------------------

    def relay_verdict(
        self, first: JambonzMessage, same_identity: Callable[[Identity], bool]
    ) -> CallEngine | Literal["none", "refused"]:
        """Whether a reconnect that another member received may take over a call of this
        server: the live or parked call (then :meth:`serve_relayed` it), ``"none"`` (no such
        live call here) or ``"refused"`` (the identity rules of a local reconnect fail;
        ``same_identity`` compares the other member's admission with the call's). Sync."""
        sid = routing_sid(first)
        engine = self._table.live(sid) if sid else None
        if engine is None:
            return "none"
        if not self._may_rebind(engine, first, same_identity(engine.call.identity)):
            log.warning(
                "call %s: a %s relayed from another member does not match the call's owner "
                "(route, credentials, account, application); refused",
                sid,
                first.type,
            )
            return "refused"
        return engine

    async def serve_relayed(self, engine: CallEngine, conn: Connection, first: JambonzMessage) -> None:
        """Carry ``engine`` on ``conn``, a connection whose socket another member holds (see
        :meth:`relay_verdict`), until it is done. A call that ended meanwhile gets the
        connection aborted (jambonz reconnects, and finds no call here)."""
        if engine.closed:
            await conn.abort()
            return
        await self._serve_link(engine, Link(conn), first, None)

    def _resolve(
        self, first: JambonzMessage, admitted: Admitted, *, session_confirmed: bool = False
    ) -> tuple[CallEngine, bool]:
        """The call a new socket carries: a live or parked call it may rebind to, else a new
        call (isolated, i.e. not reachable by sid, when it names a call it may not take).
        ``session_confirmed``: the cluster says the member that served the call saw jambonz
        read an answer of it (given to a new call only: :class:`ServeHere`)."""
        sid = routing_sid(first)  # the registry's key too: lookups and listing agree
        existing = self._table.live(sid) if sid else None
        if existing is None:
            return self._new_call(first, admitted, session_confirmed=session_confirmed), True
        if self._may_rebind(existing, first, existing.call.identity == admitted.identity):
            return existing, False
        # Isolated rather than refused: it may be a real call (jambonz has no other way in),
        # and serving it gives the peer nothing it could not get with a fresh sid.
        log.warning(
            "call %s: %s through %s does not match the call's owner (route, credentials, "
            "account, application) or starts a new session; served as an isolated call",
            sid,
            first.type,
            admitted.identity.route,
        )
        engine = self._new_call(first, admitted)
        engine.isolate()
        return engine, True

    @staticmethod
    def _may_rebind(existing: CallEngine, first: JambonzMessage, same_identity: bool) -> bool:
        """S-9: only a reconnect may take over a live or parked call, and only with every
        identity field the call had: the same route and credentials, the same ``account_sid``
        and ``application_sid`` (a reconnect carries the original ``session:new`` payload, so
        a field present on one side only is a mismatch; one the call never had, e.g. the
        ``application_sid`` of a REST call created with a ``call_hook``, is absent from both
        and not required). A message that starts a session
        (``session:new``, ``session:adulting``, ``session:redirect``) never does."""
        call = existing.call
        if isinstance(first, _NEW_SESSIONS) or not same_identity:
            return False
        original = call.session.data
        return all(first.data.get(key) == original.get(key) for key in OWNER_FIELDS)

    def _new_call(
        self, first: JambonzMessage, admitted: Admitted, *, session_confirmed: bool = False
    ) -> CallEngine:
        engine = CallEngine(
            first,
            config=self.config.call,
            identity=admitted.identity,
            path=admitted.path,
            on_disconnect=self._on_call_disconnect,
            may_park=self._table.has_room,
            observer=self.observer,
            session_confirmed=session_confirmed,
        )
        current_call.set(engine.log)
        route = admitted.route
        assert isinstance(route, Route)  # audio sockets never become calls
        if route.env:
            _type_env_vars(engine.call, first, route)
        return engine

    def _on_call_disconnect(self, engine: CallEngine) -> None:
        for given_up in self._table.park(engine):
            given_up.give_up("too many disconnected calls")

    def _register(self, engine: CallEngine) -> None:
        self._table.add(engine)  # lists an isolated call (or a newcomer whose sid is taken) by object only
        if self.observer is not None:
            self.observer.call_started(engine)
        if self._watcher is not None and self._table.live(engine.routing_sid) is engine:
            self._watcher.call_started(engine.call)  # reachable by sid: not isolated

    async def _run_call(self, engine: CallEngine, handler: Handler) -> None:
        """The call's task (registered already): its nursery (handler, ack tracker), contained."""
        try:
            await engine.run(handler)
        except* Exception as group:
            if engine.config.strict:
                raise
            # nothing one call does may take the server down (FM-36)
            log.error("call %s: its task failed: %r", engine.call_sid, group.exceptions[0], exc_info=group)
        finally:
            self._table.remove(engine)
            self._calls_changed.set()
            if self.observer is not None:
                self.observer.call_ended(engine)
            if self._watcher is not None:
                self._watcher.call_ended(engine.call)

    # -- drain -----------------------------------------------------------------------------

    async def drain(self, grace: float = 30.0, *, code: int = 1012) -> None:
        """Stop accepting, give live calls ``grace`` seconds to end, then close the rest with
        ``code`` (1001 or 1012: jambonz reconnects, to another instance behind a load balancer).

        Blocks until done: ``grace`` at most, then the remaining calls' closing handshakes
        (together, each bounded by its ``close_timeout``; in a cluster after their hand-over,
        which waits for the member's queued directory writes of those calls, then writes:
        bounded by the cluster's ``op_timeout``, about ``3 * op_timeout + 0.5`` s at worst)
        and the audio streams'. Afterwards :func:`serve_jambonz`
        returns. Calls that end within the grace period end normally.

        Raises:
            ValueError: ``code`` is not 1001 or 1012 (nothing is stopped).
        """
        if code not in (1001, 1012):
            raise ValueError("drain closes with 1001 or 1012 so that jambonz reconnects")
        self._draining = True
        self._accept_scope.cancel()
        with trio.move_on_after(grace):
            while self._table.count():
                self._calls_changed = trio.Event()
                await self._calls_changed.wait()
        remaining = self._table.all_engines()
        if remaining and self._router is not None:
            # what another member needs to carry them on (their user_data), before they close
            await self._router.hand_over([engine.call for engine in remaining])
        if remaining:
            log.info("drain: closing %d calls with %d", len(remaining), code)
            async with trio.open_nursery() as nursery:
                for engine in remaining:
                    nursery.start_soon(partial(engine.close, code, "server restarting", by="server"))
        if len(self.audio_streams):
            # jambonz ends each listen verb (its media server never reconnects an audio socket)
            await self.audio_streams.close_all(1001, "server restarting")
        self.drained.set()


def _type_env_vars(call: Call, first: JambonzMessage, route: Route) -> None:
    """``call.info.env_vars`` typed against the route's declarations, defaults applied; what
    jambonz sent wrong is logged by variable name, never with its value. Works whatever the
    first message: a ``session:reconnect`` carries the ``session:new`` payload again."""
    env_vars, problems = apply_env(first.data.get("env_vars"), route.env)
    call.info = call.info._evolve(env_vars=env_vars)  # (its big sub-objects stay unread)
    for problem in problems:
        log.warning("call %s on %s: %s", call.call_sid, route.path, problem)


def _peer_address(stream: trio.abc.Stream) -> str | None:
    """The peer's IP address of a TCP (or TLS over TCP) stream; ``None`` otherwise."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return None
    try:
        peer = stream.socket.getpeername()
    except OSError:  # already reset
        return None
    return peer[0] if isinstance(peer, tuple) and isinstance(peer[0], str) else None


async def _wait_first_byte(stream: trio.SSLStream[Any], deadline: float) -> None:
    """Wait (without consuming it) for the first byte of a TLS connection, the client hello;
    raises :class:`Silent` at ``deadline``."""
    transport = stream.transport_stream
    if not isinstance(transport, trio.SocketStream):
        return
    with trio.move_on_at(deadline) as idle:
        await transport.socket.recv(1, socket.MSG_PEEK)
    if idle.cancelled_caught:
        raise Silent


def _is_close_race(exc: BaseException) -> bool:
    """wsproto refusing to answer a frame because the connection is already closing."""
    return isinstance(exc, wsproto.utilities.LocalProtocolError) and "CLOSING" in str(exc)


def _warn_cleartext_auth(host: str | None, routes: Sequence[Route | AudioRoute], tls: bool) -> None:
    if tls or not any(r.auth is not None for r in routes):
        return
    try:
        loopback = host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning("Basic auth over plain ws:// on %s: credentials travel in clear text", host)


def _routes(
    app: Handler | Route | AudioRoute | Sequence[Route | AudioRoute],
) -> tuple[Route | AudioRoute, ...]:
    if isinstance(app, Route | AudioRoute):
        return (app,)
    if isinstance(app, Sequence):
        routes = tuple(app)
        if not routes or not all(isinstance(r, Route | AudioRoute) for r in routes):
            raise TypeError("give a handler, a Route or a non-empty sequence of Routes and AudioRoutes")
        _refuse_shadowed(routes)
        return routes
    return (Route(path="/", handler=app, prefix=True),)


def _refuse_shadowed(routes: Sequence[Route | AudioRoute]) -> None:
    """A route that an earlier route serves in full is never reached (the first route on a
    path that takes a subprotocol the socket offers serves it): a configuration error. An
    earlier route serves a later one in full when it takes every subprotocol the later one
    takes, on all its paths: a call route and an audio route may share a path, and so may
    audio routes taking other subprotocols (``MOD_AUDIO_FORK_SUBPROTOCOL_NAME``).

    Raises:
        ValueError: naming both routes.
    """
    for i, later in enumerate(routes):
        for earlier in routes[:i]:
            if not set(later.subprotocols) <= set(earlier.subprotocols):
                continue  # a socket offering one of the others reaches the later route
            # every path the later one serves: its own, and (a prefix route) those below it
            if earlier.matches(later.path) and (earlier.prefix or not later.prefix):
                kind = type(later).__name__
                raise ValueError(
                    f"{kind}(path={later.path!r}) is never reached: {kind}(path={earlier.path!r}"
                    f"{', prefix=True' if earlier.prefix else ''}) before it serves all its paths"
                )


async def serve_jambonz(
    app: Handler | Route | AudioRoute | Sequence[Route | AudioRoute],
    *,
    host: str | None = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    config: ServerConfig | None = None,
    handler_nursery: trio.Nursery | None = None,
    reuse_port: bool = False,
    cluster: ServerMember | None = None,
    task_status: trio.TaskStatus[JambonzServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve jambonz applications until cancelled or drained.

    Start it with ``server = await nursery.start(serve_jambonz, app, ...)``: it reports the
    running :class:`JambonzServer` once listening (``port=0`` picks a free port:
    ``server.port``).

    Args:
        app: one handler (served on every path), one :class:`Route`, or several routes (exact
            or prefix paths, each with its own auth and Origin policy); an :class:`AudioRoute`
            serves the audio sockets of ``listen`` verbs beside the calls.
        host: interface to bind (``None``: all).
        ssl_context: serve ``wss://``.
        config: limits and per-call settings; see :class:`ServerConfig`.
        handler_nursery: where connection tasks run (default: a nursery of the server's own).
        reuse_port: listen with ``SO_REUSEPORT``, so that several processes serve one port
            (the kernel spreads connections over them); see :mod:`jambonz_trio.workers`.
        cluster: a :class:`jambonz_trio.cluster.Cluster` to join: the server's calls are listed
            in the cluster's directory and commands sent from other processes reach them.
            ``None`` (the default): no cluster code runs or is imported.

    Returns after :meth:`JambonzServer.drain` has finished. Cancellation closes every socket
    at once (jambonz sees a drop and reconnects); prefer ``drain`` for deploys.

    Raises:
        OSError: the address cannot be bound (e.g. the port is in use), before
            ``task_status.started``.
        TypeError: ``app`` is neither a handler, a route nor a non-empty sequence of routes.
        ValueError: a route is never reached: an earlier route taking all its subprotocols
            serves all its paths (the same path, or a prefix route above it).
    """
    config = config or ServerConfig()
    routes = _routes(app)
    listeners = await open_listeners(port, host=host, ssl_context=ssl_context, reuse_port=reuse_port)
    _warn_cleartext_auth(host, routes, ssl_context is not None)
    accept_scope = trio.CancelScope()
    async with trio.open_nursery() as calls_nursery, trio.open_nursery() as conns:
        # a cluster member joins here, once listening; it leaves when the server stops
        # accepting (calls that end later are still reported to it)
        try:
            server = create(
                JambonzServer,
                routes,
                config,
                listeners=listeners,
                calls_nursery=calls_nursery,
                connections_nursery=handler_nursery or conns,
                accept_scope=accept_scope,
                cluster=cluster,
            )
        except BaseException:  # e.g. the cluster handle serves another server already
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            raise

        async def accept() -> None:
            with accept_scope:
                await trio.serve_listeners(
                    server._handle, listeners, handler_nursery=handler_nursery or conns
                )

        try:
            conns.start_soon(accept)
            task_status.started(server)
            await server.drained.wait()
            conns.cancel_scope.cancel()
        finally:
            server._table.stop()  # watchers of new calls end
            if cluster is not None:
                cluster.detach_server(server)
        calls_nursery.cancel_scope.cancel()


__all__ += ["AudioRoute", "BasicAuth", "Route"]
