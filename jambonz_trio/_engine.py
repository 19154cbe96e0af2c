"""The engine of one call: its connections, its tasks, its deadlines.

One call = one nursery, :meth:`CallEngine.run`::

    async with trio.open_nursery() as nursery:        # the call's nursery
        await handler(call)                           # the app's handler task
        # then: close the call (the fallback verbs first if the handler crashed)
    # and, while one of the call's deadlines is due, the ack tracker's task in that nursery
    # (_track_deadlines: overdue acks answered for the app - "the watchdog" of the docs and
    # logs -, the keepalive and receipt Pings, the reconnect grace period)

The ack tracker does not sleep in a task of its own per call: the call's deadlines are set on
a :class:`~jambonz_trio._timers.Timer`, which one task shared by every call of the trio run
watches, and the tracker's task is started when one is due (most calls end before any is:
issue 16, bench/README.md).

Then the receive loop, :meth:`CallEngine.serve`: connection -> :class:`CallProtocol` -> the
call's bounded event queue. It runs in the task of the connection it reads (the server's task
that accepted the socket): a call outlives its sockets (jambonz reconnects with a new one, and
the same call and handler carry on), so each socket brings its own loop, and no task is spent
on a socket besides the one that accepted it.

The server drives an engine through a small interface: :meth:`CallEngine.attach` (a socket,
with its first message), :meth:`CallEngine.serve` (its receive loop), :meth:`CallEngine.detach`
(its task ended), :meth:`CallEngine.run` (the call's nursery), :meth:`CallEngine.give_up` and
:meth:`CallEngine.isolate`. A connection is anything that implements
:class:`~jambonz_trio._connection.Connection`.

All protocol decisions are made by the sans-io :class:`~jambonz_trio._protocol.CallProtocol`,
synchronously, before a frame is written; every write is shielded from the caller's
cancellation and bounded by ``send_timeout``, so a frame either went out whole or the call knows
it did not (and the connection is aborted).
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Literal

import attrs
import trio

from ._call import AckOutcome, Call, CloseInfo, engine_of
from ._config import CallConfig, DisconnectedCommands, LateAck, Overflow
from ._connection import Connection, ConnectionClosed
from ._errors import (
    CallClosed,
    CommandQueueFull,
    JambonzTrioError,
    NotDelivered,
    OperationInterrupted,
    RemoteProtocolError,
)
from ._events import AckUnconfirmed, CommandUnconfirmed, Disconnected, Event, HookAbandoned, Reconnected
from ._log import CallLog, get_logger, safe
from ._protocol import _outbound as cmds
from ._protocol._json import TooComplex, encoded_size
from ._protocol._messages import JambonzMessage, SessionReconnect, routing_sid
from ._protocol._outbound import Ack, Command
from ._protocol._state import AckResult, AnswerPlan, CallProtocol, ConnState, Delivery, OwedAck, PlanKind
from ._protocol._verbs_base import Verb
from ._public import create
from ._queue import EventQueue
from ._sync import Flag, leaves, unless
from ._timers import Timer
from ._tts import TtsFlow

if TYPE_CHECKING:
    from ._admission import Identity
    from ._observe import Observer

__all__ = [
    "CallEngine",
    "Fault",
    "Handler",
    "Link",
    "ProgramWatcher",
    "command_origin",
    "command_started",
    "replaces_program",
    "watch_program",
]

log = get_logger("jambonz_trio.call")

#: The close that makes jambonz release a call's traffic it holds after a re-keyed
#: ``session:new`` (:meth:`CallEngine._release_rekeyed`): "service restart", the code whose
#: meaning is "reconnect", and that jambonz reconnects on like any code but 1000 (FS v0.9.8
#: ``lib/utils/ws-requestor.js:421-431``). The call is parked as at a drop, not ended as
#: by a drain's 1012 (``by="server"``): the code is the same, the engine's path is not.
REKEY_CLOSE = (1012, "reconnect to release held messages")

#: ``async def handler(call: Call) -> None``: runs once per call, in the call's own nursery.
Handler = Callable[[Call], Awaitable[None]]

#: Who sends the commands of the current task (a :class:`Conversation` marks its own), so a
#: program watcher can tell its own replacing redirects from another task's.
command_origin: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "jambonz_trio_command_origin", default=None
)

#: Told (once, synchronously) when the current task's command starts out to jambonz: written
#: at once, or taken from the reconnect queue by the flush. A task that may be cancelled in
#: ``send_command`` sets it to learn whether its command may have gone out anyway (the
#: cluster's owner forgets a command its sender gave up on only if it never started out).
command_started: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "jambonz_trio_command_started", default=None
)

#: ``(command, origin)``: told, as its frame starts out, of every command that replaces (or
#: may replace) the call's program. Writes go out in the order they start, so whatever a task
#: sends after being told reaches jambonz after the replacement.
ProgramWatcher = Callable[[Command, object | None], None]


def replaces_program(command: Command) -> bool:
    """Whether jambonz replaces the call's remaining program (killing the running verb) on
    ``command``: a ``redirect`` with verbs and ``queueCommand: false``, or one that gives the
    parent leg a new program (``call_hook``, ``parent_call``) (FS v0.9.8
    ``lib/session/call-session.js:2280-2303``, ``:1589-1657``, ``replaceApplication`` at
    ``:2082-2137``)."""
    if isinstance(command, cmds.RedirectCommand):
        return not command.queue
    if isinstance(command, cmds.RedirectToHookCommand):
        return command.call_hook is not None
    if isinstance(command, cmds.RedirectLegsCommand):
        return command.parent_call is not None
    return False


@contextlib.contextmanager
def watch_program(call: Call, watcher: ProgramWatcher) -> Iterator[None]:
    """Tell ``watcher`` of every program-replacing command of ``call`` for the ``with`` block
    (a :class:`Conversation` does, to notice another task replacing its program)."""
    engine = engine_of(call)
    engine.program_watcher = watcher
    try:
        yield
    finally:
        engine.program_watcher = None


class Fault(enum.Enum):
    """Why the engine itself ends a call."""

    #: the event queue overflowed with ``overflow=END_CALL``: the receive loop ends the call
    OVERFLOW = "event queue overflow"
    #: one of the engine's own tasks failed: the handler is cancelled, the call ends cleanly
    INTERNAL = "internal error"


class Link:
    """One connection carrying the call, with the engine's bookkeeping of it."""

    __slots__ = (
        "cancel_scope",
        "close_code",
        "close_done",
        "close_reason",
        "closed",
        "conn",
        "generation",
        "id",
        "keepalive_at",
        "ping_in_flight",
        "receipt_at",
        "rekey_at",
        "send_then_ping",
        "torn_down",
        "writing",
    )

    _ids = itertools.count(1)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.id = next(self._ids)
        #: the protocol generation it carries (set when attached)
        self.generation = 0
        #: once the engine knows it is gone (closed, lost or replaced)
        self.closed = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        #: around its receive loop: cancelled when the link is dropped
        self.cancel_scope = trio.CancelScope()
        #: set once a close *we* started has finished (the peer's Close came, or timed out)
        self.close_done: trio.Event | None = None
        #: set when the task serving it is gone (for any reason)
        self.torn_down = Flag()
        #: keepalive (run by the ack tracker): when to send the next ping or, while one is in
        #: flight, by when its pong must come
        self.keepalive_at = math.inf
        self.ping_in_flight = False
        #: when to write a Ping whose Pong will prove jambonz read the answers written so far
        self.receipt_at = math.inf
        #: when to close it so that jambonz releases what it holds after a re-keyed
        #: ``session:new``, if it has stayed quiet (:meth:`CallEngine._arm_rekey`)
        self.rekey_at = math.inf
        #: writes under way (a frame being written is not yet known to the core)
        self.writing = 0
        #: ``async (message, ping payload)``: the connection's one-write message + Ping, if it
        #: has one (optional, beside the :class:`Connection` interface; the server's websocket
        #: does): answers then carry their receipt Ping in their own write
        self.send_then_ping: Callable[[str, bytes], Awaitable[None]] | None = getattr(
            conn, "send_then_ping", None
        )

    @property
    def writable(self) -> bool:
        """Neither known gone nor closing (a write would be attempted)."""
        return self.conn.close_reason is None and not self.closed


@attrs.define(eq=False)  # (identity: the outbox removes an item by identity)
class _Pending:
    """A command waiting for a reconnect."""

    text: str
    size: int
    #: the command itself (tracked until jambonz is seen to read it)
    command: Command
    origin: object | None
    #: the program watcher is still to be told of it at the flush (``False`` once told:
    #: when queued, or by a direct write that found the connection gone)
    tell: bool = attrs.field(kw_only=True)
    #: a hang-up the library sends again (no one waits for it): kept until written
    resend: bool = attrs.field(default=False, kw_only=True)
    #: the sender's ``command_started``, told when the flush takes it
    started: Callable[[], None] | None = attrs.field(default=None, kw_only=True)
    done: trio.Event = attrs.field(init=False, factory=trio.Event)
    sent: bool = attrs.field(init=False, default=False)
    error: JambonzTrioError | None = attrs.field(init=False, default=None)


def _replaced_program(exc: BaseException) -> OperationInterrupted | None:
    """The :class:`OperationInterrupted` that ended a handler when all ``exc`` holds (however
    grouped: a nursery in the handler) is interruptions by commands this process sent (a
    program replaced on purpose), else ``None``."""
    found = leaves(exc)
    replaced = [e for e in found if isinstance(e, OperationInterrupted) and e.command is not None]
    return replaced[0] if len(replaced) == len(found) else None


class CallEngine:
    """Runs one call (see the module docstring); :attr:`call` is what the app sees.

    ``on_disconnect``: told (synchronously) when the call loses its connection, for the
    server's parking bookkeeping; ``may_park``: whether it would keep the call parked then (the
    engine closes a socket on its own only if so). ``observer``: told of answers, abandoned requests and
    dropped events (metrics, traces: :mod:`._observe`); ``None``, the default, costs nothing.
    ``session_confirmed``: a call first seen through a ``session:reconnect`` whose previous
    process saw jambonz read an answer of it (a cluster's stored fact; see
    :attr:`CallProtocol.session_confirmed`).
    """

    __slots__ = (
        "_context",
        "_disconnected_at",
        "_events_bytes",
        "_log",
        "_nursery",
        "_outbox",
        "_outbox_bytes",
        "_timer",
        "_tracking",
        "call",
        "close_info",
        "closed_event",
        "config",
        "events",
        "events_dropped",
        "fault",
        "frames_in",
        "frames_out",
        "isolated",
        "link",
        "may_park",
        "observer",
        "on_disconnect",
        "program_watcher",
        "protocol",
        "reconnect_count",
        "routing_sid",
        "session_acked",
        "tts",
    )

    def __init__(
        self,
        session: JambonzMessage,
        *,
        config: CallConfig,
        identity: Identity,
        path: str = "/",
        on_disconnect: Callable[[CallEngine], None] | None = None,
        may_park: Callable[[CallEngine], bool] | None = None,
        observer: Observer | None = None,
        session_confirmed: bool = False,
    ) -> None:
        self.config = config
        #: the sid the server lists the call under: fixed at creation
        self.routing_sid = routing_sid(session)
        self.protocol = CallProtocol(
            ack_deadline=config.ack_deadline,
            max_outbound_bytes=config.max_outbound_bytes,
            ack_unknown_types=config.ack_unknown_types,
            holding_verbs=config.holding_verbs,
            max_owed=config.max_owed_acks,
            session_confirmed=session_confirmed,
        )
        self.link: Link | None = None
        self.events: EventQueue[tuple[Event, int]] = EventQueue(config.event_queue_size)
        self._events_bytes = 0
        self.events_dropped = 0
        # a list, not a deque: a deque costs ~700 bytes even empty, on every live call
        self._outbox: list[_Pending] = []  # FIFO, at most max_queued_commands
        self._outbox_bytes = 0
        self._disconnected_at: float | None = None
        #: the call's deadlines, watched by one task for all calls (:mod:`._timers`)
        self._timer = Timer(self._on_deadline)
        #: the call's nursery while :meth:`run` runs; the ack tracker runs there while due
        self._nursery: trio.Nursery | None = None
        self._tracking = False
        #: the call's task's context while :meth:`run` runs: the ack tracker's tasks start in it
        self._context: contextvars.Context | None = None
        self.session_acked = Flag()
        self.closed_event = Flag()
        self.frames_in = 0
        self.frames_out = 0
        self.tts = TtsFlow(self.closed_event)
        self.fault: Fault | None = None
        self.isolated = False
        self.reconnect_count = 0
        self.close_info: CloseInfo | None = None
        self.on_disconnect = on_disconnect
        self.may_park = may_park
        #: set by a Conversation (:func:`watch_program`)
        self.program_watcher: ProgramWatcher | None = None
        self.observer = observer
        self._log = CallLog(
            log, self.routing_sid, trio.current_time, account_sid=session.data.get("account_sid"), path=path
        )
        self.call = create(Call, self, session, config=config, identity=identity, path=path)

    @property
    def call_sid(self) -> str | None:
        """See :attr:`Call.call_sid`."""
        return self.routing_sid or self.protocol.call_sid

    @property
    def closed(self) -> bool:
        return self.protocol.state is ConnState.CLOSED

    @property
    def log(self) -> CallLog:
        """The call's log (its structured fields are every per-call record's)."""
        return self._log

    @property
    def commands_queued(self) -> int:
        return len(self._outbox)

    def isolate(self) -> None:
        """Mark the call isolated: it failed the owner check (or its sid was taken), so it is
        not reachable by sid though it carries one; its log lines say so."""
        self.isolated = True
        self._log.prefix = "call %s (isolated): "

    def closed_error(self) -> CallClosed:
        ci = self.close_info
        if ci is None:
            return CallClosed("call closed")
        return CallClosed(f"call ended ({ci.by}: {safe(ci.reason, 128)})", code=ci.code)  # the peer's reason

    # -- the call's nursery: handler and ack tracker ----------------------------------------------

    async def run(self, handler: Handler) -> None:
        """Run the handler in the call's nursery (the ack tracker joins it while a deadline is
        due: :meth:`_on_deadline`); close the call when the handler is done. A handler that
        raises gets the fallback verbs sent and the call closed with 1000 (``by="error"``),
        unless it raised :class:`OperationInterrupted` for a program this process replaced
        (closed as a finished handler: the new program runs); a cancelled one (server
        shutdown) closes with 1012 so that jambonz reconnects to this server's successor."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._context = contextvars.copy_context()
            self._timer.at(self._next_deadline())  # (a deadline that came before: now)
            outcome: Literal["cancelled", "finished", "failed"] = "cancelled"
            try:
                await handler(self.call)
                outcome = "finished"
            except Exception as exc:
                outcome = "finished"
                replaced = _replaced_program(exc)
                if replaced is not None:
                    # this process replaced the program on purpose: jambonz has one to run,
                    # which the fallback verbs (as a replacing redirect) would throw away
                    self._log.warning(
                        "handler ended by %s (not caught); the %s program runs, "
                        "closing with 1000 without the fallback verbs",
                        replaced,
                        replaced.command.COMMAND,
                    )
                elif not (self.closed and all(isinstance(e, CallClosed) for e in leaves(exc))):
                    # (not this call's own end, however grouped: a nursery in the handler)
                    outcome = "failed"
                    self._log.error(
                        "handler raised %s; sending fallback verbs and closing with 1000",
                        type(exc).__name__,
                        exc_info=exc,
                    )
                    await self._send_fallback()
                    if self.config.strict:
                        raise
            finally:
                if self.fault is Fault.INTERNAL or not self.closed:  # (else over already: ended by jambonz)
                    with trio.CancelScope(shield=True):
                        await self._close_after_handler(outcome)
                self._nursery = self._context = None  # (closed to new tasks once this body is over)
                nursery.cancel_scope.cancel()

    async def _close_after_handler(self, outcome: Literal["cancelled", "finished", "failed"]) -> None:
        if self.fault is Fault.INTERNAL:
            await self._send_fallback()  # an internal failure: end the call cleanly
            await self.close(1000, Fault.INTERNAL.value, by="error")
        elif outcome == "failed":
            await self.close(1000, "handler failed", by="error")
        elif outcome == "finished":
            await self.close(1000, "handler finished", by="app")
        else:
            # 1000 would make jambonz hang up
            await self.close(1012, "server shutting down", by="server")

    async def _send_fallback(self) -> None:
        """Send the fallback verbs if the connection is up: as the ``session:new`` answer if
        that is still owed, else as a ``redirect``. Never waits for a reconnect (this runs while
        the call is being torn down); the write itself is shielded and bounded."""
        protocol = self.protocol
        link = self.link
        if link is None or protocol.state is not ConnState.CONNECTED:
            self._log.warning("socket down; fallback verbs not sent")
            return
        try:
            pending = protocol.session_request
            if pending is not None:
                if pending.held is None and protocol.can_answer_now(pending.msgid):
                    plan = protocol.plan_answer(pending.msgid, self.config.fallback_verbs)
                    await self._write_answer(link, plan)
            elif protocol.session_answered:
                text = protocol.command(cmds.RedirectCommand(verbs=self.config.fallback_verbs))
                await self._write(link, text)
        except JambonzTrioError:
            self._log.warning("could not send fallback verbs")

    def _on_deadline(self) -> None:
        """The call's timer went off (run synchronously by the shared deadline task,
        :mod:`._timers`): start the ack tracker's task if something is due, else set the timer
        to the next deadline. Deadlines are watched only while :meth:`run` runs (it sets the
        timer when it starts; a call whose :meth:`run` never starts is not kept alive by one)."""
        nursery, context = self._nursery, self._context
        if nursery is None or context is None or self.closed or self._tracking:
            return  # (a running tracker sets the next deadline when it is done)
        try:
            deadline = self._next_deadline()
            if deadline > trio.current_time():
                self._timer.at(deadline)
                return
            # in the call's context (its log fields, an OTel span, the app's contextvars), as a
            # child of the call's task would be, not in the shared task's
            context.run(nursery.start_soon, self._track_deadlines, nursery.cancel_scope)
            self._tracking = True
        except Exception:  # never: but a call must not go on without its deadlines
            self._log.error("the ack tracker could not be started; ending the call", exc_info=True)
            self.fault = Fault.INTERNAL
            nursery.cancel_scope.cancel()

    async def _track_deadlines(self, call_scope: trio.CancelScope) -> None:
        """The ack tracker, a task of the call's nursery while a deadline is due: it runs
        :meth:`_deadlines_due` until nothing is, then sets the timer to the next deadline and
        ends. Contained: should it ever fail, the call ends cleanly (fallback verbs, close
        1000) instead of the failure spreading or the call running without deadlines."""
        try:
            while not self.closed:
                await self._deadlines_due()
                deadline = self._next_deadline()
                if deadline > trio.current_time():
                    break
                await trio.lowlevel.checkpoint()
        except Exception:
            self._log.error("the ack tracker failed; ending the call", exc_info=True)
            self.fault = Fault.INTERNAL
            call_scope.cancel()
            return
        finally:
            self._tracking = False
        self._timer.at(self._next_deadline())

    async def _deadlines_due(self) -> None:
        """What is due now: the reconnect grace period, overdue acks, the live connection's
        receipt Ping and keepalive."""
        now = trio.current_time()
        grace_end = (
            None if self._disconnected_at is None else self._disconnected_at + self.config.reconnect_grace
        )
        if grace_end is not None and now >= grace_end:
            self.give_up(f"no reconnect within {self.config.reconnect_grace:.0f} s")
            return
        for owed in self.protocol.overdue(now):
            await self._auto_answer(owed)
        link = self.link
        now = trio.current_time()  # the auto-answers above may have taken a while
        if link is not None and self.protocol.state is ConnState.CONNECTED:
            if now >= link.rekey_at:
                link.rekey_at = math.inf
                # (a write under way re-arms it once proven: _write_answer, _pong)
                if (
                    not link.writing
                    and self._rekey_release_on()
                    and self.protocol.rekey_bounce(
                        reconnects=self._jambonz_reconnects(), budget=self.config.reconnect_budget
                    )
                ):
                    await self._release_rekeyed(link)
                    return
            if now >= link.receipt_at:
                await self._receipt_ping(link)
            if now >= link.keepalive_at:
                await self._keepalive(link)

    def _next_deadline(self) -> float:
        d = self.protocol.next_deadline()
        best = math.inf if d is None else d
        if self._disconnected_at is not None:
            best = min(best, self._disconnected_at + self.config.reconnect_grace)
        link = self.link
        if link is not None and self.protocol.state is ConnState.CONNECTED:
            best = min(best, link.keepalive_at, link.receipt_at, link.rekey_at)
        return best

    def _reschedule(self) -> None:
        """A deadline may have moved earlier: set the timer (a later one is found when the
        timer goes off). Before :meth:`run` starts, nothing (it sets the timer itself)."""
        if self._nursery is not None:
            self._timer.at(self._next_deadline())

    async def _auto_answer(self, owed: OwedAck) -> None:
        """The watchdog answers for the app (at the deadline, or at once past the owed bound)."""
        link = self.link
        protocol = self.protocol
        if link is None or not protocol.can_answer_now(owed.msgid):
            return
        msg = owed.message
        try:
            plan = protocol.auto_answer(owed)
        except JambonzTrioError:  # e.g. holding verbs too large: never crash the call's tasks
            self._log.error("the watchdog could not answer %s", msg.type, exc_info=True)
            return
        if owed.overflow:
            why = f"{protocol.max_owed} requests already owed: answered at once"
        else:
            why = f"no answer within {self.config.ack_deadline:.1f} s"
        self._log.throttled(
            "watchdog",
            logging.WARNING,
            "%s to %s%s; the watchdog answered %s",
            why,
            msg.type,
            f" (hook {msg.hook})" if msg.hook else "",
            "with the holding verbs" if plan.verbs else "empty",
        )
        await self._write_answer(link, plan)

    # -- keepalive and receipts ---------------------------------------------------------------

    def _pong(self, link: Link, payload: bytes) -> None:
        """A Pong arrived on ``link`` (called by its reader): schedule the next ping, and take
        it as the receipt of the answers written before its Ping."""
        if link.ping_in_flight:
            link.ping_in_flight = False
            link.keepalive_at = trio.current_time() + self.config.ping_interval
            self._reschedule()
        if link is self.link and link.generation == self.protocol.generation:
            self.protocol.pong_received(payload)
            self._want_receipt(link)  # answers written since that Ping need one of their own
            self._arm_rekey(link)

    async def _keepalive(self, link: Link) -> None:
        """Ping ``link``, or abort it if the pong of the last ping is overdue (the ack
        tracker calls this at ``link.keepalive_at``)."""
        if link.closed:
            link.keepalive_at = math.inf
            return
        if link.ping_in_flight:
            link.keepalive_at = math.inf
            self._log.warning("no pong within %.1f s; aborting the socket", self.config.ping_timeout)
            await link.conn.abort()
            self._connection_lost(link, 1006, "ping timeout")
            link.cancel_scope.cancel()
            return
        link.ping_in_flight = True
        if await self._write_frame(link, self.protocol.ping_payload()) is not Delivery.WRITTEN:
            link.keepalive_at = math.inf  # the socket is reported lost (and aborted if cut)
            return
        # the pong is due ping_timeout after the ping left, however long the write took
        link.keepalive_at = trio.current_time() + self.config.ping_timeout

    def _receipt_for(self, link: Link) -> bytes | None:
        """The receipt Ping to write right behind the answer or command about to go out on
        ``link``, in the same write (one write instead of two, and no ack tracker woken for
        it), if the connection can and no other receipt Ping waits for its Pong."""
        if link is self.link and link.writable and link.send_then_ping is not None and link.conn.receipts:
            return self.protocol.receipt_for_write()
        return None

    def _want_receipt(self, link: Link) -> None:
        """An answer went out on ``link``: have the ack tracker write a Ping after it, unless one
        written for an earlier answer still waits for its Pong (one receipt Ping at a time)."""
        if (
            link is self.link
            and link.conn.receipts
            and self.protocol.receipt_due
            and link.receipt_at == math.inf
        ):
            link.receipt_at = trio.current_time()
            self._reschedule()

    async def _receipt_ping(self, link: Link) -> None:
        """Write a Ping whose Pong proves jambonz read the answers written before it."""
        link.receipt_at = math.inf
        if not link.writable or not self.protocol.receipt_due:
            return  # (a connection being closed: its loss is reported by the close)
        await self._write_frame(link, self.protocol.ping_payload(receipt=True))

    # -- a re-keyed session:new: releasing what jambonz holds -------------------------------------

    def _jambonz_reconnects(self) -> int:
        """The reconnects jambonz has made for this call, at least: a call first seen here
        through a ``session:reconnect`` (restored) made one more than counted here (jambonz
        reconnects only from its second connection, FS v0.9.8 ``lib/utils/ws-requestor.js:367``)."""
        return self.reconnect_count + (1 if self.call.restored else 0)

    def _rekey_release_on(self) -> bool:
        """Whether the library closes a socket to release what jambonz holds after a re-keyed
        ``session:new`` (:attr:`CallConfig.rekey_quiet`): jambonz would reconnect, and the
        server would keep the call parked meanwhile (not when its parking is full: the close
        would give the call up)."""
        return (
            bool(self.config.rekey_quiet)
            and CallProtocol.reconnect_allowed(self._jambonz_reconnects(), self.config.reconnect_budget)
            and (self.may_park is None or self.may_park(self))
        )

    @property
    def traffic_held(self) -> bool:
        """jambonz cannot send this call's messages now: the socket is down, or jambonz may
        hold them after a re-keyed ``session:new`` and the library will close the socket to
        release them (:attr:`CallProtocol.rekey_suspected`, :meth:`_arm_rekey`)."""
        protocol = self.protocol
        if protocol.state is ConnState.DISCONNECTED:
            return True
        return protocol.rekey_suspected and self._rekey_release_on()

    def _arm_rekey(self, link: Link) -> None:
        """The ``session:new`` answer on ``link`` may now be proven read after a reconnect that
        found it unproven (:attr:`CallProtocol.rekey_release_ready`): if so, give jambonz
        ``rekey_quiet`` seconds to send something (its queue flows) before the ack tracker
        asks the core whether to close (:meth:`CallProtocol.rekey_bounce`)."""
        quiet = self.config.rekey_quiet
        if (
            quiet
            and link is self.link
            and link.rekey_at == math.inf
            and self.protocol.rekey_release_ready
            and self._rekey_release_on()
        ):
            link.rekey_at = trio.current_time() + quiet
            self._reschedule()

    async def _release_rekeyed(self, link: Link) -> None:
        """Close ``link`` (not with 1000) so that jambonz reconnects: its ordinary
        ``session:reconnect``, acked, releases the traffic feature-server 0.9.8 holds after
        a re-keyed ``session:new`` (docs/reconnects.md). A drop the library caused: the call
        is parked for the reconnect as at any drop (the app sees ``Disconnected`` then
        ``Reconnected``), commands wait in the outbox meanwhile."""
        code, reason = REKEY_CLOSE
        self._log.warning(
            "jambonz 0.9.8 holds this call's traffic after a re-keyed session:new; "
            "reconnecting to release it (closing with %d)",
            code,
        )
        self._connection_lost(link, code, reason)
        await self._close_link(link, code, reason)

    # -- connections: attach, receive loop, detach ----------------------------------------------

    async def attach(self, link: Link, first: JambonzMessage, now: float) -> None:
        """Make ``link`` the call's live connection and process its first message."""
        # Everything up to the first await is synchronous, so two connections attaching at once
        # cannot both become the live one.
        old = self.link
        if old is not None and old is not link and not old.closed:
            self._log.info("a newer socket replaces socket %d", old.id)
            self._connection_lost(old, None, "replaced by a newer socket")  # abandons its requests
        seen_before = self.protocol.generation > 0
        self.link = link
        self.protocol.connection_made()
        link.generation = self.protocol.generation
        if link.conn.pings:
            link.keepalive_at = now + self.config.ping_interval
        link.conn.on_pong = partial(self._pong, link)
        self._disconnected_at = None
        implicit = seen_before and not isinstance(first, SessionReconnect)
        if implicit:
            # An older feature server reconnects without session:reconnect
            # (jambonz-feature-server#103): the first message names a known call_sid.
            self.reconnect_count += 1
            self._log.info("implicit reconnect (%s first)", first.type)
            self._deliver(Reconnected(count=self.reconnect_count, message=first))
        self.protocol.receive_message(first, now)
        if old is not None and old is not link:
            old.cancel_scope.cancel()  # its receive loop must not read on (or book) anything
            await old.conn.abort()
        if link is not self.link:
            return  # an even newer connection took over meanwhile
        if implicit:
            await self._flush_outbox(link)
        await self._on_message(link, first, now)

    async def serve(self, link: Link) -> None:
        """The receive loop of one connection; returns when the connection is done (its
        keepalive runs in the ack tracker; its inbound pacing in the connection, which calls
        :meth:`inbound_paused`). The loop is written here, not in a function of its own: its
        task lives as long as the call, and so does every frame of its stack (issue 16)."""
        conn = link.conn
        with link.cancel_scope:
            while True:
                try:
                    frame = await conn.receive()
                except ConnectionClosed as exc:
                    reason = exc.reason
                    if reason.code in (1008, 1009) and conn.close_unanswered:
                        # the connection refused a message (bytes or frames over the limit, the
                        # server's budget of unfinished messages) or a flood of Pings
                        self._log.warning("closing with %d: %s", reason.code, reason.reason)
                    self._connection_closed(link, reason.code, reason.reason)
                    break
                self.frames_in += 1
                if isinstance(frame, bytes):
                    self._log.throttled(
                        "binary", logging.INFO, "ignoring a binary frame (%d bytes)", len(frame)
                    )
                    continue
                if link is not self.link or link.generation != self.protocol.generation:
                    break  # a newer connection carries the call now
                now = trio.current_time()
                if self.protocol.state is not ConnState.CONNECTED:
                    self._drain_lost_frame(frame, now)  # the connection is already considered lost
                    continue
                try:
                    msg = self.protocol.receive_text(frame, now)
                except TooComplex as exc:  # parsing it would take many times its size in memory
                    self._log.warning("closing with 1009: %s", exc)
                    await self._abort_with(link, 1009, "message too big")
                    break
                except RemoteProtocolError as exc:
                    await self._bad_frame(link, exc, frame)
                    continue
                await self._on_message(link, msg, now, len(frame))
                if self.fault is Fault.OVERFLOW:
                    await self._send_fallback()
                    await self.close(1000, Fault.OVERFLOW.value, by="app")
                    break
            if link.close_done is not None:
                # We are closing: keep the connection open until our close handshake is over
                # (the peer's Close came, or close_timeout in _close_link passed).
                await link.close_done.wait()

    def detach(self, link: Link) -> None:
        """The task serving ``link`` is gone, however it ended: the call must know its
        connection is gone (nothing happens if it knows already)."""
        self._connection_lost(link, 1006, "connection task ended")
        link.torn_down.set()

    def inbound_paused(self) -> None:
        """The connection stopped reading: over the call's inbound budget (its owner paces the
        reads: the server's websocket hands out one message per scheduling turn and, over the
        budget, stops reading; issue 19 item 10). Logged once per connection."""
        self._log.warning(
            "inbound frames over %g tokens/s; reading paused (TCP back-pressure)", self.config.inbound_rate
        )

    def _drain_lost_frame(self, frame: str, now: float) -> None:
        """A frame still read from a connection already declared lost: jambonz fails its
        requests at the drop, so they are reported as abandoned; notifications are delivered
        (the streaming-TTS ones seen by its flow first: a sender waits for them)."""
        try:
            msg = self.protocol.receive_text(frame, now)  # books nothing while disconnected
        except RemoteProtocolError:
            return
        if self.tts.observe(msg):
            return
        self._deliver(HookAbandoned(message=msg) if msg.NEEDS_ACK else msg, len(frame))

    async def _bad_frame(self, link: Link, exc: RemoteProtocolError, frame: str) -> None:
        self._log.throttled(
            "bad frame", logging.WARNING, "protocol error from jambonz: %s (frame %r)", exc, frame
        )
        if exc.msgid:
            # We cannot tell what it was; an ack jambonz is not waiting for is ignored, and a
            # request it is waiting for gets answered instead of timing out.
            try:
                text = self.protocol.render(Ack(msgid=exc.msgid).to_wire())
            except JambonzTrioError:
                return
            await self._write(link, text)

    async def _on_message(self, link: Link, msg: JambonzMessage, now: float, size: int = 0) -> None:
        protocol = self.protocol
        if isinstance(msg, SessionReconnect) and link.generation == protocol.generation:
            await self._on_reconnect(link, msg)
            return
        if self.tts.observe(msg):
            return  # consumed by send_tts_tokens: it would only fill the event queue
        owed = protocol.get_owed(msg.msgid) if msg.msgid else None
        if owed is not None and owed.overflow and owed.message is msg:
            await self._auto_answer(owed)  # past the owed bound: answered at once, empty
        self._reschedule()
        if msg is not self.call.session:
            self._deliver(msg, size)

    async def _on_reconnect(self, link: Link, msg: SessionReconnect) -> None:
        if msg is self.call.session:
            # First connection of a call we learn about through a reconnect (app restart): the
            # app answers it like a session:new (jambonz ignores verbs it no longer needs).
            self._reschedule()
            return
        self.reconnect_count += 1
        if self.reconnect_count >= self.config.reconnect_budget - 1:
            self._log.throttled(
                "reconnects",
                logging.WARNING,
                "reconnect %d; jambonz allows about %d per call (#1098)",
                self.reconnect_count,
                self.config.reconnect_budget,
            )
        plan = self.protocol.reconnect_answer(msg.msgid)
        if self.protocol.rekey_suspected:
            # jambonz may have re-keyed its session:new to this msgid (docs/reconnects.md)
            resent = "" if plan is None else " (sent again on the reconnect)"
            if self._rekey_release_on():
                self._log.info(
                    "socket dropped before jambonz was seen to read the session:new answer%s; "
                    "if jambonz then stays quiet, the socket is closed once to release its queue",
                    resent,
                )
            else:
                self._log.warning(
                    "socket dropped before jambonz was seen to read the session:new answer%s; "
                    "feature-server <= 0.9.8 may leave later traffic of this call queued (protocol.md §6.2)",
                    resent,
                )
        if plan is not None:
            result, _written = await self._write_answer(link, plan)
            if result is not AckResult.SENT:
                return  # the new connection died at once; the call waits for the next one
            await self._flush_outbox(link)
        self._reschedule()
        self._deliver(Reconnected(count=self.reconnect_count, message=msg))

    # -- events for the app --------------------------------------------------------------------

    def _deliver(self, event: Event, size: int = 0) -> None:
        """Queue an event for the app (never blocks). ``size``: its frame's length, counted
        against ``max_queued_event_bytes``."""
        try:
            if self._events_bytes + size > self.config.max_queued_event_bytes:
                raise trio.WouldBlock
            self.events.put_nowait((event, size))
            self._events_bytes += size
        except trio.WouldBlock:
            self.events_dropped += 1
            if self.observer is not None:
                self.observer.events_dropped(self)
            if self.config.overflow is Overflow.END_CALL:
                self._log.error("event queue full; ending the call")
                self.fault = Fault.OVERFLOW
            else:
                self._log.throttled(
                    "queue full",
                    logging.WARNING,
                    "event queue full (%d events / %d bytes); dropped %d events so far",
                    self.config.event_queue_size,
                    self.config.max_queued_event_bytes,
                    self.events_dropped,
                )
        except trio.ClosedResourceError:
            pass

    async def receive_event(self) -> Event:
        """The next event for the app (a checkpoint).

        Raises:
            CallClosed: the call is over and every queued event was returned.
        """
        try:
            event, size = await self.events.get()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self.closed_error() from None
        self._events_bytes -= size
        return event

    # -- answers and commands ------------------------------------------------------------------

    async def answer(self, msgid: str, verbs: Sequence[Verb]) -> AckOutcome:
        """Carry out what :meth:`CallProtocol.plan_answer` decides for the app's answer (see
        :meth:`Call.ack`)."""
        plan = self.protocol.plan_answer(msgid, verbs, raise_late=self.config.late_ack is LateAck.RAISE)
        if plan.kind is PlanKind.SEND:
            link = self.link
            assert link is not None
            result, written = await self._write_answer(link, plan)
            if result is AckResult.SENT:
                return AckOutcome.ACKED
            if result is AckResult.DEFERRED:
                return AckOutcome.DEFERRED
            raise NotDelivered(
                "the socket dropped before the ack was sent", maybe_sent=written is not Delivery.NOT_WRITTEN
            )
        if plan.kind is PlanKind.REDIRECT:
            self._log.info("late answer to %s sent as a redirect", msgid)
            await self.send_command(cmds.RedirectCommand(verbs=plan.verbs))
            return AckOutcome.REDIRECTED
        if plan.kind is PlanKind.DROP and verbs:
            # a late answer jambonz would not have run as the next program (a dial:confirm,
            # session:adulting, wait hook, status / partial result / early turn hook...): a
            # redirect would replace the program and kill the verb that runs on
            # (CallProtocol.plan_answer says why)
            self._log.warning(
                "late answer to %s dropped: jambonz does not run this request's answer as the "
                "call's next program (a dial:confirm, session:adulting, wait hook, or a hook whose "
                "answer it ignores), and as a redirect it would kill the verb that runs on",
                msgid,
            )
        await trio.lowlevel.checkpoint()
        return AckOutcome.DEFERRED if plan.kind is PlanKind.HOLD else AckOutcome.DROPPED

    async def _write_answer(self, link: Link, plan: AnswerPlan) -> tuple[AckResult, Delivery]:
        """Write a ``SEND`` plan's ack on ``link`` and tell the core how it went."""
        assert plan.text is not None
        protocol = self.protocol
        receipt = self._receipt_for(link)
        written = await self._write_frame(link, plan.text, receipt)
        result = protocol.answer_written(plan.msgid, link.generation, written, receipt)
        if protocol.session_answered:
            self.session_acked.set()
        if result is AckResult.SENT:
            self._arm_rekey(link)  # (its Pong may have come during the write)
            if self.observer is not None:
                self.observer.answered(self, plan, trio.current_time())
            if receipt is None:
                self._want_receipt(link)
            if self._outbox and protocol.commands_flow:
                await self._flush_outbox(link)  # they waited for this connection's reconnect answer
        return result, written

    async def send_command(self, command: Command) -> None:
        """See :meth:`Call.send_command`."""
        if self.closed:
            raise self.closed_error()
        text = self.protocol.command(command)
        origin = command_origin.get()
        started = command_started.get()
        told = False
        link = self.link
        if link is not None and self.protocol.commands_flow and not self._outbox:
            if link.writable:  # else: NOT_WRITTEN
                # told before the write, not after: a conversation answering a hook meanwhile
                # must see the replacement coming, or its ack's verbs would replace it in turn
                told = self._program_sent(command, origin)
            written = await self._write_command(link, command, text)
            if started is not None and written is not Delivery.NOT_WRITTEN:
                started()  # (the write is shielded: no cancellation came before this)
            if written is Delivery.WRITTEN:
                if (
                    self._settle_unconfirmed_commands()
                    and self.link is not None
                    and self.protocol.commands_flow
                ):
                    await self._flush_outbox(self.link)  # the socket was replaced meanwhile: resend now
                return
            if written is Delivery.MAYBE:
                raise NotDelivered(f"socket dropped while sending {command.COMMAND}", maybe_sent=True)
            # NOT_WRITTEN: the connection was already gone; nothing left, so wait for the reconnect.
        if self.config.disconnected_commands is DisconnectedCommands.FAIL:
            raise NotDelivered(f"call {safe(self.call_sid, 64)} is disconnected; {command.COMMAND} not sent")
        size = encoded_size(text)
        if (
            len(self._outbox) >= self.config.max_queued_commands
            or self._outbox_bytes + size > self.config.max_queued_bytes
        ):
            raise CommandQueueFull(
                f"{len(self._outbox)} commands ({self._outbox_bytes} bytes) already wait for a reconnect"
            )
        # Its place in the FIFO is fixed now: tell the watcher now (not at the flush), so a
        # conversation answering a hook later knows its answer would follow a replacement.
        told = told or self._program_sent(command, origin)
        item = _Pending(text, size, command, origin, tell=not told, started=started)
        self._outbox.append(item)
        self._outbox_bytes += size
        try:
            await item.done.wait()
        finally:
            if not item.sent and not item.done.is_set():
                self._outbox.remove(item)
                self._outbox_bytes -= size
        if item.error is not None:
            raise item.error

    def _program_sent(self, command: Command, origin: object | None) -> bool:
        """Tell the program watcher, if ``command`` replaces the program, that it starts
        out now (no checkpoint may come between this and the write). Whether it told."""
        watcher = self.program_watcher
        if watcher is not None and replaces_program(command):
            watcher(command, origin)
            return True
        return False

    async def _flush_outbox(self, link: Link) -> None:
        requeued = False
        while self._outbox and link is self.link and self.protocol.state is ConnState.CONNECTED:
            item = self._outbox.pop(0)
            self._outbox_bytes -= item.size
            item.sent = True
            if item.started is not None:
                item.started()
            if item.tell:
                self._program_sent(item.command, item.origin)  # before the write, see send_command
            if await self._write_command(link, item.command, item.text) is not Delivery.WRITTEN:
                if item.resend and not self.closed:
                    # the library's own hang-up: no one to tell; it goes out on the next socket
                    item.sent = False
                    self._outbox.insert(0, item)
                    self._outbox_bytes += item.size
                    requeued = True
                    break
                item.error = NotDelivered("the socket dropped again while flushing", maybe_sent=True)
            item.done.set()
        resend = self._settle_unconfirmed_commands()  # (written on a socket found lost meanwhile)
        newer = self.link
        if (resend or requeued) and newer is not None and newer is not link and self.protocol.commands_flow:
            await self._flush_outbox(newer)  # a newer socket took over during the write

    async def _write_command(self, link: Link, command: Command, text: str) -> Delivery:
        """Write ``command`` (rendered as ``text``) on ``link`` and, once written whole, have it
        proven read by a receipt Ping (docs/reconnects.md): in the same write, or the next one."""
        receipt = self._receipt_for(link)
        written = await self._write_frame(link, text, receipt)
        if written is Delivery.WRITTEN:
            self.protocol.command_written(command, link.generation, receipt)
            if isinstance(command, cmds.TtsClearCommand):
                self.tts.cleared()  # (whoever wrote it: the sender, or the reconnect flush)
            if receipt is None:
                self._want_receipt(link)
            self._arm_rekey(link)
        return written

    def _settle_unconfirmed_commands(self) -> bool:
        """Deal with the commands the core reports unconfirmed (written on a socket that
        dropped before jambonz was seen to read them): hang-ups go first in the outbox (sent
        again once jambonz is back), the others are reported to the app. Whether any was
        queued to be sent again."""
        lost = self.protocol.take_unconfirmed_commands()
        if not lost.resend and not lost.report:
            return False
        self._log.warning(
            "%d command(s) written just before the drop were not seen read by jambonz: %s%s",
            len(lost.resend) + len(lost.report),
            ", ".join(c.COMMAND for c in (*lost.resend, *lost.report)[:5]),
            " (the hang-up is sent again on the reconnect)" if lost.resend else "",
        )
        for command in reversed(lost.resend):
            text = self.protocol.render(command.to_wire())
            size = encoded_size(text)
            # the watcher was told when it first went out: not again
            self._outbox.insert(0, _Pending(text, size, command, None, tell=False, resend=True))
            self._outbox_bytes += size
        for command in lost.report:
            if isinstance(command, cmds.TtsTokensCommand):
                self.tts.lost(command.id)  # its tts:tokens-result may never come
            self._deliver(CommandUnconfirmed(command=command))
        return bool(lost.resend)

    # -- writes ----------------------------------------------------------------------------------

    async def _write(self, link: Link, text: str) -> bool:
        """Write one frame: shielded, bounded by ``send_timeout``. ``False`` if it failed (the
        connection is then aborted and reported lost)."""
        return await self._write_frame(link, text) is Delivery.WRITTEN

    async def _write_frame(self, link: Link, text: str | bytes, receipt: bytes | None = None) -> Delivery:
        """Like :meth:`_write`, telling apart "certainly not written" (the connection was
        already closed: nothing left this process) from "maybe" (it failed mid-write).
        ``bytes`` is the payload of a Ping (the keepalive's writes are bounded the same way).
        ``receipt``: the payload of a Ping written right after ``text``, in the same write
        (only on a connection that can: :attr:`Link.send_then_ping`)."""
        conn = link.conn
        closing = conn.close_reason
        if closing is not None and closing.code == 1000 and link.close_done is None:
            # jambonz ended the call (a 1000 we did not send); the receive loop has not seen it yet
            self._connection_closed(link, 1000, closing.reason)
            return Delivery.NOT_WRITTEN
        if link.closed or closing is not None:
            # (a close under way, e.g. our 1009, is reported with its own code)
            code, reason = (closing.code, closing.reason) if closing is not None else (None, None)
            self._connection_lost(link, code, reason or "socket closed")
            return Delivery.NOT_WRITTEN
        # One scope, shielded from the caller and bounded by its own deadline (the same as a
        # move_on_after inside a shield, one cancel scope cheaper on every write).
        link.writing += 1
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self.config.send_timeout) as scope:
            try:
                if receipt is not None:
                    assert link.send_then_ping is not None and isinstance(text, str)
                    await link.send_then_ping(text, receipt)
                    self.frames_out += 1
                elif isinstance(text, str):
                    await conn.send(text)
                    self.frames_out += 1
                else:
                    await conn.ping(text)
                return Delivery.WRITTEN
            except ConnectionClosed:
                pass
            finally:
                link.writing -= 1
        if scope.cancelled_caught:
            self._log.warning("send timed out after %.1f s; aborting the socket", self.config.send_timeout)
            with trio.CancelScope(shield=True):
                await conn.abort()
        self._connection_lost(link, None, "send failed")
        return Delivery.MAYBE

    # -- closing ---------------------------------------------------------------------------------

    async def close(self, code: int, reason: str, *, by: Literal["app", "server", "error"]) -> None:
        """End the call (idempotent): release everyone waiting on it, then run the closing
        handshake of the live connection (shielded, bounded by ``close_timeout``)."""
        if self.closed:
            await trio.lowlevel.checkpoint()
            return
        link = self.link
        self._finish(CloseInfo(code=code, reason=reason or "closed by app", by=by))
        if link is not None:
            await self._close_link(link, code, reason)

    async def _close_link(self, link: Link, code: int, reason: str) -> None:
        link.close_done = done = trio.Event()

        async def handshake() -> None:
            try:
                await link.conn.close(code, reason or None)
            except Exception:  # pragma: no cover - a close racing the peer's
                log.debug("close of %s failed", self.call_sid, exc_info=True)

        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.config.close_timeout):
                await unless(link.torn_down, handshake)  # its reader died: no reply will come
            done.set()
            await link.conn.abort()
            link.cancel_scope.cancel()

    async def _abort_with(self, link: Link, code: int, reason: str) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(self.config.close_timeout):
            try:
                await link.conn.close(code, reason)
            except Exception:  # pragma: no cover
                pass
        await link.conn.abort()
        self._connection_lost(link, code, reason)

    def _finish(self, info: CloseInfo) -> None:
        """Mark the call over and release everyone waiting on it (sync)."""
        if self.close_info is None:
            self.close_info = info
        self.protocol.close()
        self.events.close()
        for item in self._outbox:
            item.error = NotDelivered(f"call ended before {item.text[:40]!r} could be sent")
            item.done.set()
        self._outbox.clear()
        self._outbox_bytes = 0
        self.tts.close()
        self.closed_event.set()
        self._log.summary()
        self._timer.cancel()

    def _connection_closed(self, link: Link, code: int | None, reason: str | None) -> None:
        link.close_code, link.close_reason = code, reason
        link.closed = True
        if link is not self.link or self.closed:
            return
        if code == 1000:
            self._finish(CloseInfo(code=1000, reason=reason or "call ended", by="jambonz"))
        else:
            self._connection_lost(link, code, reason)

    def _connection_lost(self, link: Link, code: int | None, reason: str | None) -> None:
        """The connection is gone without a normal end: wait for jambonz to reconnect."""
        link.closed = True
        if link is not self.link or self.closed or self.protocol.state is not ConnState.CONNECTED:
            return
        abandoned = self.protocol.connection_lost()
        unconfirmed = self.protocol.take_unconfirmed()
        self._disconnected_at = trio.current_time()
        self._log.info("socket lost (%s %s); waiting for a reconnect", code, reason)
        if unconfirmed:
            self._log.warning(
                "%d answer(s) written just before the drop were not seen read by jambonz "
                "(it failed those requests at the drop if it had not read them): %s",
                len(unconfirmed),
                ", ".join(f"{s.message.type} {s.owed.msgid}" for s in unconfirmed[:5]),
            )
        self._deliver(Disconnected(code=code, reason=reason))
        if abandoned and self.observer is not None:
            self.observer.abandoned(self, abandoned, self._disconnected_at)
        for owed in abandoned:
            self._deliver(HookAbandoned(message=owed.message))
        for sent in unconfirmed:
            self._deliver(AckUnconfirmed(message=sent.message, verbs=sent.verbs))
        self._settle_unconfirmed_commands()
        self._reschedule()
        if self.on_disconnect is not None:
            self.on_disconnect(self)

    def give_up(self, reason: str) -> None:
        """Give up on a disconnected call (grace expired, or evicted by the parking bounds)."""
        self._log.warning("%s; giving up", reason)
        self._finish(CloseInfo(code=None, reason=reason, by="lost"))
