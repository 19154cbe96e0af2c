"""``Call``: the trio object an application talks to, one per jambonz call.

A ``Call`` lives as long as the call, across socket drops: jambonz reconnects with
``session:reconnect`` and the same ``Call`` (and the handler running on it) carries on. Each
socket is a ``_Connection`` read by one receive loop (the socket's only reader). The call's own
nursery (started by the server) runs the handler and the watchdog, the call's one timer task:
ack deadlines, the live socket's keepalive and the reconnect grace period.

All protocol decisions are made by the sans-io :class:`~jambonz_trio._protocol.CallProtocol`,
synchronously, before a frame is written; every write is shielded from the caller's
cancellation and bounded by ``send_timeout``, so a frame either went out whole or the call knows
it did not (and the socket is aborted).
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from ._audio_listen import call_sender, listen_verb, open_listen
from ._command_api import CommandMethods
from ._config import CallConfig, DisconnectedCommands, LateAnswer, Overflow
from ._errors import (
    CallClosed,
    CommandQueueFull,
    JambonzTrioError,
    LocalProtocolError,
    NotDelivered,
    RemoteProtocolError,
)
from ._events import AnswerUnconfirmed, Disconnected, Event, HookAbandoned, Reconnected
from ._log import CallLog, get_logger, safe
from ._protocol import _outbound as cmds
from ._protocol._calldata import CallInfo
from ._protocol._json import TooComplex, encoded_size
from ._protocol._messages import (
    Message,
    SessionReconnect,
    TtsStreamingEvent,
    TtsTokensResult,
    routing_sid,
)
from ._protocol._outbound import Ack, Command
from ._protocol._state import (
    AckResult,
    AnswerPlan,
    CallProtocol,
    ConnState,
    Delivery,
    OwedAck,
    PlanKind,
)
from ._protocol._verbs import Listen
from ._protocol._verbs_base import Verb
from ._queue import EventQueue
from ._websocket import ServerWebSocket, WebSocketClosed

if TYPE_CHECKING:
    from ._admission import Identity
    from ._audio import AudioStream

__all__ = ["AnswerOutcome", "Call", "CallStatistics", "CloseInfo"]

log = get_logger("jambonz_trio.call")

_VALID_CLOSE_CODES = frozenset({1000, 1001, 1008, 1011, 1012})

#: Who sends the commands of the current task (a :class:`Conversation` marks its own), so a
#: program watcher can tell its own replacing redirects from another task's.
command_origin: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "jambonz_trio_command_origin", default=None
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
    if isinstance(command, cmds.Redirect):
        return not command.queue
    if isinstance(command, cmds.RedirectToHook):
        return command.call_hook is not None
    if isinstance(command, cmds.RedirectLegs):
        return command.parent_call is not None
    return False


class AnswerOutcome(enum.Enum):
    """What :meth:`Call.ack` did with an answer."""

    ACKED = "acked"  #: sent as the ack jambonz was waiting for
    REDIRECTED = "redirected"  #: too late for an ack: sent as a ``redirect`` command
    DEFERRED = "deferred"  #: socket down: sent as the ack once jambonz reconnects
    DROPPED = "dropped"  #: too late, and empty: nothing needed sending


@attrs.frozen(kw_only=True)
class CloseInfo:
    """How a call ended: ``by`` is ``jambonz``, ``app``, ``lost`` (no reconnect within the
    grace period), ``error`` (handler crashed) or ``server`` (drain / shutdown)."""

    code: int | None
    reason: str
    by: Literal["jambonz", "app", "lost", "error", "server"]


@attrs.frozen(kw_only=True)
class CallStatistics:
    """A snapshot of a call's internals (cheap; for metrics and tests)."""

    state: str
    events_queued: int
    events_capacity: int
    events_dropped: int
    acks_owed: int
    auto_answered: int
    commands_queued: int
    reconnects: int
    frames_received: int
    frames_sent: int
    #: answers written on a socket that dropped before jambonz was seen to read them
    answers_unconfirmed: int = 0


class _Pending:
    """A command waiting for a reconnect."""

    __slots__ = ("command", "done", "error", "origin", "sent", "size", "text")

    def __init__(self, text: str, size: int, command: Command | None, origin: object | None) -> None:
        # ``command`` is None once the program watcher was told of it (when queued, or by a
        # direct write that found the socket gone); else it is told at the flush
        self.text = text
        self.size = size
        self.command = command
        self.origin = origin
        self.done = trio.Event()
        self.sent = False
        self.error: JambonzTrioError | None = None


class _Connection:
    """One websocket carrying the call."""

    _ids = itertools.count(1)

    def __init__(self, ws: ServerWebSocket, stream: trio.abc.Stream, identity: Identity) -> None:
        self.ws = ws
        self.stream = stream
        self.identity = identity
        self.id = next(self._ids)
        self.generation = 0
        self.closed = trio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.cancel_scope = trio.CancelScope()
        #: Set once a close *we* started has finished (the peer's Close came, or timed out).
        self.close_done: trio.Event | None = None
        #: Set by the server when the connection's task is gone (for any reason).
        self.torn_down = trio.Event()
        #: Keepalive (run by the call's watchdog): when to send the next ping or, while one is
        #: in flight, by when its pong must come.
        self.keepalive_at = math.inf
        self.ping_in_flight = False
        #: When to write a Ping whose Pong will prove jambonz read the answers written so far.
        self.receipt_at = math.inf

    async def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake."""
        await trio.aclose_forcefully(self.stream)


class Call(CommandMethods, trio.abc.AsyncResource):
    """One jambonz call, as seen by the application.

    Created by the server for every new call and handed to the app's handler. It stays the
    same object when jambonz reconnects after a socket drop.

    Requests (``session:new``, ``verb:hook``, ...) must be answered with :meth:`ack` exactly
    once, from any task, in any order. If the app has not answered when ``ack_deadline`` comes
    (4 s of jambonz's 5 s), the watchdog answers for it (empty, or the holding verbs for
    ``session:new``) and logs a warning; a later answer is sent as a ``redirect`` command.

    Attributes:
        session: the first message of the call (normally :class:`SessionNew`; it may be a
            ``session:reconnect`` when the app restarted, or ``session:redirect`` /
            ``session:adulting``).
        info: typed call data of ``session``.
        reconnected: ``True`` if the call was first seen through a reconnect (app restart).
        reconnect_count: how many times jambonz reconnected this call here.
        close_info: how the call ended (``None`` while live).
    """

    def __init__(
        self,
        session: Message,
        *,
        config: CallConfig,
        identity: Identity,
        path: str = "/",
    ) -> None:
        self.session = session
        #: The sid the server lists the call under (see :attr:`call_sid`); fixed at creation.
        self._routing_sid = routing_sid(session)
        #: the request target jambonz connected to (path and query), e.g. ``/agent/sales?x=1``
        self.path = path
        self.config = config
        self.identity = identity
        info = getattr(session, "call", None)
        self.info: CallInfo = info if isinstance(info, CallInfo) else CallInfo.from_data(session.data)
        self.reconnected = isinstance(session, SessionReconnect)
        self.reconnect_count = 0
        self.close_info: CloseInfo | None = None
        self.user_data: dict[str, Any] = {}
        self._protocol = CallProtocol(
            ack_deadline=config.ack_deadline,
            max_outbound_bytes=config.max_outbound_bytes,
            ack_unknown_types=config.ack_unknown_types,
            holding_verbs=config.holding_verbs,
            max_owed=config.max_owed_acks,
        )
        self._conn: _Connection | None = None
        self._events: EventQueue[tuple[Event, int]] = EventQueue(config.event_queue_size)
        self._events_bytes = 0
        self._events_dropped = 0
        # a list, not a deque: a deque costs ~700 bytes even empty, on every live call
        self._outbox: list[_Pending] = []  # FIFO, at most max_queued_commands
        self._outbox_bytes = 0
        self._disconnected_at: float | None = None
        self._watchdog_scope: trio.CancelScope | None = None
        self._session_acked = trio.Event()
        self._closed = trio.Event()
        self._frames_in = 0
        self._frames_out = 0
        self._tts_waiters: dict[str | int, tuple[trio.Event, list[TtsTokensResult]]] = {}
        self._tts_resumed = trio.Event()
        self._tts_resumed.set()
        self._tts_ids = itertools.count(1)
        self._ending = False
        self._isolated = False
        self._events_reserved = False
        self._crashed = False
        #: Bumped on every ``user_interruption`` (barge-in) of a TTS stream.
        self.tts_interruptions = 0
        self._tts_interrupted = trio.Event()
        #: Set by the server: told when the call loses its socket (parking bookkeeping).
        self.on_disconnect: Callable[[Call], None] | None = None
        #: Set by a Conversation: told of every program-replacing command as it goes out.
        self._program_watcher: ProgramWatcher | None = None
        self._log = CallLog(log, self.call_sid, trio.current_time)

    # -- typed call data ---------------------------------------------------------------------

    @property
    def call_sid(self) -> str | None:
        """The call's sid: the envelope ``call_sid`` of its first message (``data.call_sid`` on
        sockets whose envelope names none), the key of ``server.calls``. ``None`` only on
        sockets that never named one."""
        return self._routing_sid or self._protocol.call_sid

    @property
    def from_(self) -> str | None:
        """The calling number / user (``from`` on the wire)."""
        return self.info.from_

    @property
    def to(self) -> str | None:
        """The called number / user."""
        return self.info.to

    @property
    def direction(self) -> str | None:
        """``inbound`` or ``outbound``."""
        return self.info.direction

    @property
    def account_sid(self) -> str | None:
        """The jambonz account the call belongs to."""
        return self.info.account_sid

    @property
    def state(self) -> ConnState:
        """``connected``, ``disconnected`` (waiting for a reconnect) or ``closed``."""
        return self._protocol.state

    @property
    def closed(self) -> bool:
        """Whether the call is over (nothing more can be sent)."""
        return self._protocol.state is ConnState.CLOSED

    def __repr__(self) -> str:
        return f"<Call {self.call_sid} {self.state.value}>"

    def statistics(self) -> CallStatistics:
        """A snapshot of queue fill levels and counters (not a checkpoint)."""
        return CallStatistics(
            state=self.state.value,
            events_queued=len(self._events),
            events_capacity=self._events.capacity,
            events_dropped=self._events_dropped,
            acks_owed=self._protocol.owed_count,
            auto_answered=self._protocol.auto_answered,
            commands_queued=len(self._outbox),
            reconnects=self.reconnect_count,
            frames_received=self._frames_in,
            frames_sent=self._frames_out,
            answers_unconfirmed=self._protocol.unconfirmed,
        )

    # -- events --------------------------------------------------------------------------------

    async def next_event(self) -> Event:
        """Wait for the next message or library event of this call.

        A checkpoint. Returns jambonz messages (``VerbHook``, ``CallStatus``, ...) and library
        events (:class:`Reconnected`, :class:`Disconnected`, :class:`HookAbandoned`).

        Raises:
            CallClosed: the call is over and every queued event was returned.
            LocalProtocolError: another consumer (e.g. a :class:`Conversation`) reserved the
                events with :meth:`reserve_events`.
        """
        if self._events_reserved:
            raise LocalProtocolError(
                "this call's events are consumed by another reader (a Conversation?); "
                "read them from it instead"
            )
        return await self._receive_event()

    async def _receive_event(self) -> Event:
        try:
            event, size = await self._events.get()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed_error() from None
        self._events_bytes -= size
        return event

    @contextlib.contextmanager
    def reserve_events(self) -> Iterator[Callable[[], Awaitable[Event]]]:
        """Become the only reader of this call's events, for the ``with`` block.

        Yields the function to read them with (same contract as :meth:`next_event`); inside
        the block :meth:`next_event` raises :class:`LocalProtocolError` for everyone else. Used
        by layers such as :class:`~jambonz_trio.Conversation` so that two readers can never
        split a call's events between them.

        Raises:
            LocalProtocolError: the events are already reserved.
        """
        if self._events_reserved:
            raise LocalProtocolError("this call's events are already reserved")
        self._events_reserved = True
        try:
            yield self._receive_event
        finally:
            self._events_reserved = False

    def __aiter__(self) -> Call:
        """``async for event in call``: the events until the call ends (then the loop ends)."""
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.next_event()
        except CallClosed:
            raise StopAsyncIteration from None

    def _closed_error(self) -> CallClosed:
        ci = self.close_info
        if ci is None:
            return CallClosed("call closed")
        return CallClosed(f"call ended ({ci.by}: {safe(ci.reason, 128)})", code=ci.code)  # the peer's reason

    async def wait_answered(self) -> None:
        """Block until ``session:new`` has been acked (commands are allowed from then on).

        Raises:
            CallClosed: the call ended first.
        """
        if self._protocol.session_answered:
            await trio.lowlevel.checkpoint()
            return
        async with trio.open_nursery() as n:

            async def closed() -> None:
                await self._closed.wait()
                n.cancel_scope.cancel()

            n.start_soon(closed)
            await self._session_acked.wait()
            n.cancel_scope.cancel()
        if not self._session_acked.is_set():
            raise self._closed_error()

    async def wait_closed(self) -> CloseInfo:
        """Block until the call is over; returns how it ended."""
        await self._closed.wait()
        assert self.close_info is not None
        return self.close_info

    # -- answering -----------------------------------------------------------------------------

    def awaiting_answer(self, request: Message | str) -> bool:
        """Whether jambonz still waits for the app's answer to ``request`` (not a checkpoint).

        ``False`` once it was acked (by the app or the watchdog), abandoned with a dropped
        socket, or if it never needed one.
        """
        msgid = request.msgid if isinstance(request, Message) else request
        owed = self._protocol.get_owed(msgid)
        return owed is not None and owed.held is None

    async def ack(self, request: Message | str, verbs: Sequence[Verb] = ()) -> AnswerOutcome:
        """Answer a request (by message or msgid) with ``verbs`` (may be empty).

        A checkpoint; the write is shielded from the caller's cancellation and bounded by
        ``send_timeout``, so when this returns the frame is on the wire (or queued, see below).

        Returns:
            :class:`AnswerOutcome`: ``ACKED``; ``REDIRECTED`` when the watchdog (or a socket
            drop) already ended the request and ``verbs`` went out as a ``redirect``;
            ``DROPPED`` when that happened and ``verbs`` was empty; ``DEFERRED`` for a
            ``session:new`` answer that waits for jambonz to reconnect (given while the socket
            is down, or the socket died under its write): it goes out as the ack of the
            ``session:reconnect``.

            ``ACKED`` means written to the socket, not read by jambonz: should the socket drop
            before jambonz is seen to read it (docs/reconnects.md), a ``session:new`` answer is
            sent again on the reconnect, and any other answer is reported with an
            :class:`AnswerUnconfirmed` event.

        Raises:
            AlreadyAnswered: the app answered this request before (or ``late_answer`` is
                ``RAISE``).
            LocalProtocolError: not a request, an unknown msgid, an empty ``session:new``
                answer, or the frame would be too large.
            NotDelivered: the socket died during the write (never for ``session:new``, whose
                answer then waits for the reconnect: ``DEFERRED``).
            CallClosed: the call is over (a handler may let it end the handler quietly).
        """
        if self.closed:
            raise self._closed_error()
        if isinstance(request, Message):
            msgid = request.msgid
            if not request.NEEDS_ACK and not self._protocol.is_owed(msgid):
                # the type is the peer's (an unknown one, verbatim): made safe, since an app
                # that lets this escape gets it logged in its traceback
                raise LocalProtocolError(f"{safe(request.type, 64)} messages are not acked")
        else:
            msgid = request
        plan = self._protocol.plan_answer(
            msgid, verbs, raise_late=self.config.late_answer is LateAnswer.RAISE
        )
        if plan.kind is PlanKind.SEND:
            conn = self._conn
            assert conn is not None
            result, written = await self._write_answer(conn, plan)
            if result is AckResult.SENT:
                return AnswerOutcome.ACKED
            if result is AckResult.DEFERRED:
                return AnswerOutcome.DEFERRED
            raise NotDelivered(
                "the socket dropped before the ack was sent", maybe_sent=written is not Delivery.NOT_WRITTEN
            )
        if plan.kind is PlanKind.REDIRECT:
            log.info("call %s: late answer to %s sent as a redirect", self.call_sid, msgid)
            await self.send_command(cmds.Redirect(verbs=plan.verbs))
            return AnswerOutcome.REDIRECTED
        await trio.lowlevel.checkpoint()
        return AnswerOutcome.DEFERRED if plan.kind is PlanKind.HOLD else AnswerOutcome.DROPPED

    async def _write_answer(self, conn: _Connection, plan: AnswerPlan) -> tuple[AckResult, Delivery]:
        """Write a ``SEND`` plan's ack on ``conn`` and tell the core how it went."""
        assert plan.text is not None
        written = await self._write_frame(conn, plan.text)
        protocol = self._protocol
        result = protocol.answer_written(plan.msgid, conn.generation, written)
        if protocol.session_answered:
            self._session_acked.set()
        if result is AckResult.SENT:
            self._want_receipt(conn)
            if self._outbox and protocol.commands_flow:
                await self._flush_outbox(conn)  # they waited for this socket's reconnect answer
        return result, written

    # -- commands ------------------------------------------------------------------------------

    async def send_command(self, command: Command) -> None:
        """Send a command (any task, any time after the ``session:new`` ack).

        While the socket is down the command waits, FIFO, for jambonz to reconnect (bounded
        by ``max_queued_commands`` / ``max_queued_bytes``), or fails at once with
        ``disconnected_commands=FAIL``. Cancelling the caller while it waits removes the
        command (it is never sent) unless the reconnect flush had already taken it. The caller
        owns any timeout (``trio.fail_after``).

        Raises:
            CallClosed: the call is over.
            LocalProtocolError: before the ``session:new`` ack (jambonz would drop it), or the
                frame is too large / unserialisable.
            CommandQueueFull: the disconnected queue is full.
            NotDelivered: the socket died during the write, or the call ended while the
                command waited.
        """
        if self.closed:
            raise self._closed_error()
        text = self._protocol.command(command)
        origin = command_origin.get()
        told = False
        conn = self._conn
        if conn is not None and self._protocol.commands_flow and not self._outbox:
            if conn.ws.closed is None and not conn.closed.is_set():  # else: NO, not written
                # told before the write, not after: a conversation answering a hook meanwhile
                # must see the replacement coming, or its ack's verbs would replace it in turn
                told = self._program_sent(command, origin)
            written = await self._write_frame(conn, text)
            if written is Delivery.WRITTEN:
                return
            if written is Delivery.MAYBE:
                raise NotDelivered(f"socket dropped while sending {command.COMMAND}", maybe_sent=True)
            # NO: the socket was already gone; nothing left, so wait for the reconnect.
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
        item = _Pending(text, size, None if told else command, origin)
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
        watcher = self._program_watcher
        if watcher is not None and replaces_program(command):
            watcher(command, origin)
            return True
        return False

    def listen(
        self,
        url: str | Listen,
        *,
        bidirectional: bool = False,
        streaming: bool = True,
        sample_rate: int = 8000,
        playback_sample_rate: int | None = None,
        mix_type: Literal["mono", "stereo", "mixed"] = "mono",
        metadata: dict[str, Any] | None = None,
        pass_dtmf: bool | None = None,
        answer: Message | None = None,
        queue: bool = False,
        before: Sequence[Verb] = (),
        after: Sequence[Verb] = (),
        connect_timeout: float = 10.0,
        **options: Any,
    ) -> AbstractAsyncContextManager[AudioStream]:
        """Start a ``listen`` verb and get its audio stream: ``async with call.listen("/audio",
        bidirectional=True) as stream:`` (see :mod:`jambonz_trio._audio_listen` for the rules).

        ``url`` is usually relative (jambonz resolves it against the call hook, with the call
        hook's credentials), served by an :class:`~jambonz_trio.AudioRoute` of this process.
        The verbs ``[*before, listen, *after]`` go out as the answer to ``answer``, else to
        the unanswered ``session:new``, else as a ``redirect`` (``queue=True``: appended).
        ``bidirectional`` turns on audio back: ``streaming`` (``stream.send_audio``, at
        ``playback_sample_rate``, default ``sample_rate``) or clips (``stream.play``). Other
        keyword options go to :class:`~jambonz_trio.verbs.Listen`.

        Blocks (on entry) until jambonz connects; leaving the block closes the stream, which
        ends the verb (jambonz then runs ``after``, or the ``actionHook``).

        Raises:
            ListenTimeout: jambonz did not connect within ``connect_timeout`` seconds (the
                caller's bound; a wrong URL or credentials look like this).
            CallClosed: the call ended first.
            LocalProtocolError, NotDelivered: as for :meth:`ack` / :meth:`send_command`.
        """
        verb = listen_verb(
            url,
            bidirectional=bidirectional,
            streaming=streaming,
            sample_rate=sample_rate,
            playback_sample_rate=playback_sample_rate,
            mix_type=mix_type,
            metadata=metadata,
            pass_dtmf=pass_dtmf,
            **options,
        )
        send = call_sender(self, answer=answer, queue=queue)
        return open_listen(self, verb, send=send, before=before, after=after, connect_timeout=connect_timeout)

    async def wait_tts_interruption(self, seen: int) -> None:
        """Block until :attr:`tts_interruptions` is past ``seen`` (a barge-in happened), or
        the call ends."""
        while self.tts_interruptions == seen and not self.closed:
            event = self._tts_interrupted
            async with trio.open_nursery() as nursery:

                async def closed() -> None:
                    await self._closed.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(closed)
                await event.wait()
                nursery.cancel_scope.cancel()

    async def send_tts_tokens(self, tokens: str) -> TtsTokensResult:
        """Send ``tts:tokens`` and wait for jambonz's ``tts:tokens-result``.

        Back-pressure: while jambonz reported its buffer full this waits for
        ``stream_resumed``; a ``full`` answer is retried after it. Sequential use keeps order.
        The caller owns the timeout.

        Raises:
            CallClosed: the call ended first.
        """
        while True:
            await self._tts_resumed.wait()
            tid = next(self._tts_ids)
            done = trio.Event()
            slot: list[TtsTokensResult] = []
            self._tts_waiters[tid] = (done, slot)
            try:
                await self.send_command(cmds.TtsTokens(id=tid, tokens=tokens))
                async with trio.open_nursery() as n:

                    async def closed() -> None:
                        await self._closed.wait()
                        n.cancel_scope.cancel()

                    n.start_soon(closed)
                    await done.wait()
                    n.cancel_scope.cancel()
            finally:
                self._tts_waiters.pop(tid, None)
            if not slot:
                raise self._closed_error()
            result = slot[0]
            if result.status == "failed" and result.reason == "full":
                continue  # the receive loop paused the stream; resend after stream_resumed
            return result

    # -- closing -------------------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """End the call from the app's side. Idempotent; bounded by ``close_timeout``.

        Code 1000 tells jambonz "finish the current program, then hang up" (it never
        reconnects). 1001/1012 make jambonz reconnect (to another instance behind a load
        balancer). Other codes: 1008, 1011, 3000-4999.

        Raises:
            ValueError: an invalid close code.
        """
        if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
            raise ValueError(f"invalid close code {code}")
        reason = reason.encode("utf-8", "replace")[:123].decode("utf-8", "ignore")
        if self.closed:
            await trio.lowlevel.checkpoint()
            return
        by: Literal["app", "server"] = "app" if code == 1000 else "server"
        conn = self._conn
        self._finish(CloseInfo(code=code, reason=reason or "closed by app", by=by))
        if conn is not None:
            await self._close_connection(conn, code, reason)

    async def _close_connection(self, conn: _Connection, code: int, reason: str) -> None:
        conn.close_done = done = trio.Event()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.config.close_timeout):
                async with trio.open_nursery() as nursery:

                    async def torn_down() -> None:
                        await conn.torn_down.wait()  # its reader died: no reply will come
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(torn_down)
                    try:
                        await conn.ws.aclose(code, reason or None)
                    except Exception:  # pragma: no cover - a close racing the peer's
                        log.debug("close of %s failed", self.call_sid, exc_info=True)
                    nursery.cancel_scope.cancel()
            done.set()
            await conn.abort()
            conn.cancel_scope.cancel()

    def _finish(self, info: CloseInfo) -> None:
        """Mark the call over and release everyone waiting on it (sync)."""
        if self.close_info is None:
            self.close_info = info
        self._protocol.close()
        self._events.close()
        for item in self._outbox:
            item.error = NotDelivered(f"call ended before {item.text[:40]!r} could be sent")
            item.done.set()
        self._outbox.clear()
        self._outbox_bytes = 0
        for done, _slot in self._tts_waiters.values():
            done.set()
        self._tts_resumed.set()
        self._closed.set()
        self._log.summary()
        if self._watchdog_scope is not None:
            self._watchdog_scope.cancel()

    # -- engine: handler & watchdog --------------------------------------------------------------

    async def _run(self, handler: Any) -> None:
        """Run the handler and the watchdog in the call's nursery (started by the server)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._guarded_watchdog, nursery.cancel_scope)
            ended = False  # the handler returned or raised (not cancelled)
            try:
                await handler(self)
                ended = True
            except Exception as exc:
                ended = True
                if not (isinstance(exc, CallClosed) and self.closed):  # not this call's own end
                    await self._handler_failed(exc)
                    if self.config.strict:
                        raise
            finally:
                with trio.CancelScope(shield=True):
                    if self._crashed:
                        await self._send_fallback()  # an internal failure: end the call cleanly
                        await self.aclose(1000, "internal error")
                    elif ended:
                        await self.aclose(1000, "handler finished")
                    else:
                        # cancelled (server shutdown): 1012 so that jambonz reconnects, to this
                        # server's successor; 1000 would make it hang up
                        await self.aclose(1012, "server shutting down")
                nursery.cancel_scope.cancel()

    async def _handler_failed(self, exc: Exception) -> None:
        log.error(
            "call %s: handler raised %s; sending fallback verbs and closing with 1000",
            self.call_sid,
            type(exc).__name__,
            exc_info=exc,
        )
        await self._send_fallback()

    async def _send_fallback(self) -> None:
        """Send the fallback verbs if the socket is up: as the ``session:new`` answer if that
        is still owed, else as a ``redirect``. Never waits for a reconnect (this runs while the
        call is being torn down); the write itself is shielded and bounded."""
        protocol = self._protocol
        conn = self._conn
        if conn is None or protocol.state is not ConnState.CONNECTED:
            log.warning("call %s: socket down; fallback verbs not sent", self.call_sid)
            return
        try:
            pending = protocol.session_request
            if pending is not None:
                if pending.held is None and protocol.can_answer_now(pending.msgid):
                    plan = protocol.plan_answer(pending.msgid, self.config.fallback_verbs)
                    await self._write_answer(conn, plan)
            elif protocol.session_answered:
                text = protocol.command(cmds.Redirect(verbs=self.config.fallback_verbs))
                await self._write(conn, text)
        except JambonzTrioError:
            log.warning("call %s: could not send fallback verbs", self.call_sid)

    async def _guarded_watchdog(self, call_scope: trio.CancelScope) -> None:
        """The watchdog, contained: should it ever fail, the call ends cleanly (fallback verbs,
        close 1000) instead of the failure spreading or the call running without deadlines."""
        try:
            await self._watchdog()
        except Exception:
            log.exception("call %s: the ack watchdog failed; ending the call", self.call_sid)
            self._crashed = True
            call_scope.cancel()

    async def _watchdog(self) -> None:
        """The call's one deadline task: overdue acks, the keepalive of the live socket and the
        reconnect grace period."""
        while not self.closed:
            with trio.CancelScope() as scope:
                self._watchdog_scope = scope
                scope.deadline = self._next_deadline()
                await trio.sleep_forever()
            self._watchdog_scope = None
            if self.closed:
                return
            now = trio.current_time()
            grace_end = (
                None if self._disconnected_at is None else self._disconnected_at + self.config.reconnect_grace
            )
            if grace_end is not None and now >= grace_end:
                self._lost(f"no reconnect within {self.config.reconnect_grace:.0f} s")
                return
            for owed in self._protocol.overdue(now):
                await self._auto_answer(owed)
            conn = self._conn
            now = trio.current_time()  # the auto-answers above may have taken a while
            if conn is not None and self._protocol.state is ConnState.CONNECTED:
                if now >= conn.receipt_at:
                    await self._receipt_ping(conn)
                if now >= conn.keepalive_at:
                    await self._keepalive(conn, now)

    def _next_deadline(self) -> float:
        d = self._protocol.next_deadline()
        best = math.inf if d is None else d
        if self._disconnected_at is not None:
            best = min(best, self._disconnected_at + self.config.reconnect_grace)
        conn = self._conn
        if conn is not None and self._protocol.state is ConnState.CONNECTED:
            best = min(best, conn.keepalive_at, conn.receipt_at)
        return best

    def _reschedule(self) -> None:
        """A deadline may have moved earlier: update the watchdog without waking it."""
        scope = self._watchdog_scope
        if scope is not None:
            scope.deadline = min(scope.deadline, self._next_deadline())

    async def _auto_answer(self, owed: OwedAck) -> None:
        """The watchdog answers for the app (at the deadline, or at once past the owed bound)."""
        conn = self._conn
        protocol = self._protocol
        if conn is None or not protocol.can_answer_now(owed.msgid):
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
        await self._write_answer(conn, plan)

    def _want_receipt(self, conn: _Connection) -> None:
        """An answer went out on ``conn``: have the watchdog write a Ping after it, unless one
        written for an earlier answer still waits for its Pong (one receipt Ping at a time)."""
        if conn is self._conn and self._protocol.receipt_due and conn.receipt_at == math.inf:
            conn.receipt_at = trio.current_time()
            self._reschedule()

    async def _receipt_ping(self, conn: _Connection) -> None:
        """Write a Ping whose Pong proves jambonz read the answers written before it."""
        conn.receipt_at = math.inf
        if conn.closed.is_set() or conn.ws.closed is not None or not self._protocol.receipt_due:
            return  # (a socket being closed: its loss is reported by the close)
        await self._write_frame(conn, self._protocol.ping_payload(receipt=True))

    # -- engine: connections -------------------------------------------------------------------

    async def _write(self, conn: _Connection, text: str) -> bool:
        """Write one frame: shielded, bounded by ``send_timeout``. ``False`` if it failed (the
        connection is then aborted and reported lost)."""
        return await self._write_frame(conn, text) is Delivery.WRITTEN

    async def _write_frame(self, conn: _Connection, text: str | bytes) -> Delivery:
        """Like :meth:`_write`, telling apart "certainly not written" (the socket was already
        closed: nothing left this process) from "maybe" (it failed mid-write). ``bytes`` is
        the payload of a Ping (the keepalive's writes are bounded the same way)."""
        closed = conn.ws.closed
        if closed is not None and closed.code == 1000 and conn.close_done is None:
            # jambonz ended the call (a 1000 we did not send); the receive loop has not seen it yet
            self._connection_closed(conn, 1000, closed.reason)
            return Delivery.NOT_WRITTEN
        if conn.closed.is_set() or closed is not None:
            # (a close under way, e.g. our 1009, is reported with its own code)
            code, reason = (closed.code, closed.reason) if closed is not None else (None, None)
            self._connection_lost(conn, code, reason or "socket closed")
            return Delivery.NOT_WRITTEN
        # One scope, shielded from the caller and bounded by its own deadline (the same as a
        # move_on_after inside a shield, one cancel scope cheaper on every write).
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self.config.send_timeout) as scope:
            try:
                if isinstance(text, str):
                    await conn.ws.send_message(text)
                    self._frames_out += 1
                else:
                    await conn.ws.send_ping(text)
                return Delivery.WRITTEN
            except WebSocketClosed:
                pass
        if scope.cancelled_caught:
            log.warning(
                "call %s: send timed out after %.1f s; aborting the socket",
                self.call_sid,
                self.config.send_timeout,
            )
            with trio.CancelScope(shield=True):
                await conn.abort()
        self._connection_lost(conn, None, "send failed")
        return Delivery.MAYBE

    def _deliver(self, event: Event, size: int = 0) -> None:
        """Queue an event for the app (never blocks). ``size``: its frame's length, counted
        against ``max_queued_event_bytes``."""
        try:
            if self._events_bytes + size > self.config.max_queued_event_bytes:
                raise trio.WouldBlock
            self._events.put_nowait((event, size))
            self._events_bytes += size
        except trio.WouldBlock:
            self._events_dropped += 1
            if self.config.overflow is Overflow.END_CALL:
                log.error("call %s: event queue full; ending the call", self.call_sid)
                self._ending = True
            else:
                self._log.throttled(
                    "queue full",
                    logging.WARNING,
                    "event queue full (%d events / %d bytes); dropped %d events so far",
                    self.config.event_queue_size,
                    self.config.max_queued_event_bytes,
                    self._events_dropped,
                )
        except trio.ClosedResourceError:
            pass

    async def _attach(self, conn: _Connection, first: Message, now: float) -> None:
        """Make ``conn`` the call's live socket and process its first message."""
        # Everything up to the first await is synchronous, so two sockets attaching at once
        # cannot both become the live one.
        old = self._conn
        if old is not None and old is not conn and not old.closed.is_set():
            log.info("call %s: a newer socket replaces socket %d", self.call_sid, old.id)
            self._connection_lost(old, None, "replaced by a newer socket")  # abandons its requests
        seen_before = self._protocol.generation > 0
        self._conn = conn
        self._protocol.connection_made()
        conn.generation = self._protocol.generation
        conn.keepalive_at = now + self.config.ping_interval
        conn.ws.on_pong = partial(self._pong, conn)
        self._disconnected_at = None
        implicit = seen_before and not isinstance(first, SessionReconnect)
        if implicit:
            # An older feature server reconnects without session:reconnect
            # (jambonz-feature-server#103): the first message names a known call_sid.
            self.reconnect_count += 1
            log.info("call %s: implicit reconnect (%s first)", self.call_sid, first.type)
            self._deliver(Reconnected(count=self.reconnect_count, message=first))
        self._protocol.receive_message(first, now)
        if old is not None and old is not conn:
            old.cancel_scope.cancel()  # its receive loop must not read on (or book) anything
            await old.abort()
        if conn is not self._conn:
            return  # an even newer socket took over meanwhile
        if implicit:
            await self._flush_outbox(conn)
        await self._on_message(conn, first, now)

    async def _run_connection(self, conn: _Connection) -> None:
        """The receive loop of one socket (its keepalive runs in the watchdog); returns when
        the socket is done."""
        with conn.cancel_scope:
            await self._receive_loop(conn)
            if conn.close_done is not None:
                # We are closing: keep the socket open until our close handshake is over (the
                # peer's Close came, or close_timeout in _close_connection passed).
                await conn.close_done.wait()

    async def _receive_loop(self, conn: _Connection) -> None:
        # Fairness and the inbound budget (issue 19 item 10) live in the websocket: it hands
        # out one message per scheduling turn and, over the budget, stops reading.
        conn.ws.on_paused = partial(
            self._log.warning,
            "inbound frames over %g tokens/s; reading paused (TCP back-pressure)",
            self.config.inbound_rate,
        )
        while True:
            try:
                frame = await conn.ws.get_message()
            except WebSocketClosed as exc:
                reason = exc.reason
                code = reason.code if reason is not None else None
                if code in (1008, 1009) and conn.ws.close_unanswered:
                    # the websocket refused a message (bytes or frames over the limit, the
                    # server's budget of unfinished messages) or a flood of Pings
                    self._log.warning("closing with %d: %s", code, reason.reason)
                self._connection_closed(conn, code, reason.reason if reason is not None else None)
                return
            self._frames_in += 1
            if isinstance(frame, bytes):
                self._log.throttled("binary", logging.INFO, "ignoring a binary frame (%d bytes)", len(frame))
                continue
            if conn is not self._conn or conn.generation != self._protocol.generation:
                return  # a newer socket carries the call now
            now = trio.current_time()
            if self._protocol.state is not ConnState.CONNECTED:
                self._drain_lost_frame(frame, now)  # the socket is already considered lost
                continue
            try:
                msg = self._protocol.receive_text(frame, now)
            except TooComplex as exc:  # parsing it would take many times its size in memory
                self._log.warning("closing with 1009: %s", exc)
                await self._abort_with(conn, 1009, "message too big")
                return
            except RemoteProtocolError as exc:
                await self._bad_frame(conn, exc, frame)
                continue
            await self._on_message(conn, msg, now, len(frame))
            if self._ending:
                await self._end_after_overflow()
                return

    def _drain_lost_frame(self, frame: str, now: float) -> None:
        """A frame still read from a socket already declared lost: jambonz fails its requests
        at the drop, so they are reported as abandoned; notifications are delivered."""
        try:
            msg = self._protocol.receive_text(frame, now)  # books nothing while disconnected
        except RemoteProtocolError:
            return
        self._deliver(HookAbandoned(message=msg) if msg.NEEDS_ACK else msg, len(frame))

    async def _bad_frame(self, conn: _Connection, exc: RemoteProtocolError, frame: str) -> None:
        self._log.throttled(
            "bad frame", logging.WARNING, "protocol error from jambonz: %s (frame %r)", exc, frame
        )
        if exc.msgid:
            # We cannot tell what it was; an ack jambonz is not waiting for is ignored, and a
            # request it is waiting for gets answered instead of timing out.
            try:
                text = self._protocol.render(Ack(msgid=exc.msgid).to_wire())
            except JambonzTrioError:
                return
            await self._write(conn, text)

    async def _on_message(self, conn: _Connection, msg: Message, now: float, size: int = 0) -> None:
        protocol = self._protocol
        if isinstance(msg, SessionReconnect) and conn.generation == protocol.generation:
            await self._on_reconnect(conn, msg, now)
            return
        if isinstance(msg, TtsTokensResult):
            if self._on_tts_result(msg):
                return  # consumed by send_tts_tokens: it would only fill the event queue
        elif isinstance(msg, TtsStreamingEvent):
            if msg.event_type == "stream_paused":
                self._pause_tts()
            elif msg.event_type in ("stream_resumed", "user_interruption", "stream_closed"):
                self._tts_resumed.set()
                if msg.event_type == "user_interruption":
                    self.tts_interruptions += 1
                    self._tts_interrupted.set()
                    self._tts_interrupted = trio.Event()
        owed = protocol.get_owed(msg.msgid) if msg.msgid else None
        if owed is not None and owed.overflow and owed.message is msg:
            await self._auto_answer(owed)  # past the owed bound: answered at once, empty
        self._reschedule()
        if msg is not self.session:
            self._deliver(msg, size)

    async def _on_reconnect(self, conn: _Connection, msg: SessionReconnect, now: float) -> None:
        protocol = self._protocol
        if msg is self.session:
            # First socket of a call we learn about through a reconnect (app restart): the
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
        plan = protocol.reconnect_answer(msg.msgid)
        if plan is None or plan.msgid != msg.msgid:
            # jambonz may have re-keyed its session:new to this msgid (docs/reconnects.md)
            self._log.warning(
                "socket dropped before jambonz was seen to read the session:new answer%s; "
                "feature-server <= 0.9.8 may leave later traffic of this call queued (protocol.md §6.2)",
                "" if plan is None else " (sent again on the reconnect)",
            )
        if plan is not None:
            result, _written = await self._write_answer(conn, plan)
            if result is not AckResult.SENT:
                return  # the new socket died at once; the call waits for the next one
            await self._flush_outbox(conn)
        self._reschedule()
        self._deliver(Reconnected(count=self.reconnect_count, message=msg))

    async def _flush_outbox(self, conn: _Connection) -> None:
        while self._outbox and conn is self._conn and self._protocol.state is ConnState.CONNECTED:
            item = self._outbox.pop(0)
            self._outbox_bytes -= item.size
            item.sent = True
            if item.command is not None:
                self._program_sent(item.command, item.origin)  # before the write, see send_command
            if not await self._write(conn, item.text):
                item.error = NotDelivered("the socket dropped again while flushing", maybe_sent=True)
            item.done.set()

    def _pause_tts(self) -> None:
        if self._tts_resumed.is_set() and not self.closed:
            self._tts_resumed = trio.Event()

    def _on_tts_result(self, msg: TtsTokensResult) -> bool:
        """Hand a ``tts:tokens-result`` to its sender; ``True`` if one was waiting for it."""
        if msg.status == "failed" and msg.reason == "full":
            self._pause_tts()  # synchronously, so the sender cannot miss the resume
        tid = msg.id
        if tid is None:
            return False
        waiter = self._tts_waiters.get(tid)
        if waiter is None and isinstance(tid, str) and tid.isdigit():
            waiter = self._tts_waiters.get(int(tid))
        if waiter is not None:
            waiter[1].append(msg)
            waiter[0].set()
            return True
        return False

    def _pong(self, conn: _Connection, payload: bytes) -> None:
        """A Pong arrived on ``conn`` (called by its reader): schedule the next ping, and take
        it as the receipt of the answers written before its Ping."""
        if conn.ping_in_flight:
            conn.ping_in_flight = False
            conn.keepalive_at = trio.current_time() + self.config.ping_interval
            self._reschedule()
        if conn is self._conn and conn.generation == self._protocol.generation:
            self._protocol.pong_received(payload)
            self._want_receipt(conn)  # answers written since that Ping need one of their own

    async def _keepalive(self, conn: _Connection, now: float) -> None:
        """Ping ``conn``, or abort it if the pong of the last ping is overdue (the watchdog
        calls this at ``conn.keepalive_at``)."""
        if conn.closed.is_set():
            conn.keepalive_at = math.inf
            return
        if conn.ping_in_flight:
            conn.keepalive_at = math.inf
            log.warning(
                "call %s: no pong within %.1f s; aborting the socket", self.call_sid, self.config.ping_timeout
            )
            await conn.abort()
            self._connection_lost(conn, 1006, "ping timeout")
            conn.cancel_scope.cancel()
            return
        conn.ping_in_flight = True
        if await self._write_frame(conn, self._protocol.ping_payload()) is not Delivery.WRITTEN:
            conn.keepalive_at = math.inf  # the socket is reported lost (and aborted if cut)
            return
        # the pong is due ping_timeout after the ping left, however long the write took
        conn.keepalive_at = trio.current_time() + self.config.ping_timeout

    async def _abort_with(self, conn: _Connection, code: int, reason: str) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(self.config.close_timeout):
            try:
                await conn.ws.aclose(code, reason)
            except Exception:  # pragma: no cover
                pass
        await conn.abort()
        self._connection_lost(conn, code, reason)

    async def _end_after_overflow(self) -> None:
        await self._send_fallback()
        await self.aclose(1000, "event queue overflow")

    def _connection_closed(self, conn: _Connection, code: int | None, reason: str | None) -> None:
        conn.close_code, conn.close_reason = code, reason
        conn.closed.set()
        if conn is not self._conn or self.closed:
            return
        if code == 1000:
            self._finish(CloseInfo(code=1000, reason=reason or "call ended", by="jambonz"))
        else:
            self._connection_lost(conn, code, reason)

    def _connection_lost(self, conn: _Connection, code: int | None, reason: str | None) -> None:
        """The socket is gone without a normal end: wait for jambonz to reconnect."""
        conn.closed.set()
        if conn is not self._conn or self.closed or self._protocol.state is not ConnState.CONNECTED:
            return
        abandoned = self._protocol.connection_lost()
        unconfirmed = self._protocol.take_unconfirmed()
        self._disconnected_at = trio.current_time()
        log.info("call %s: socket lost (%s %s); waiting for a reconnect", self.call_sid, code, reason)
        if unconfirmed:
            self._log.warning(
                "%d answer(s) written just before the drop were not seen read by jambonz "
                "(it failed those requests at the drop if it had not read them): %s",
                len(unconfirmed),
                ", ".join(f"{s.message.type} {s.owed.msgid}" for s in unconfirmed[:5]),
            )
        self._deliver(Disconnected(code=code, reason=reason))
        for owed in abandoned:
            self._deliver(HookAbandoned(message=owed.message))
        for sent in unconfirmed:
            self._deliver(AnswerUnconfirmed(message=sent.message, verbs=sent.verbs))
        self._reschedule()
        if self.on_disconnect is not None:
            self.on_disconnect(self)

    def _lost(self, reason: str) -> None:
        """Give up on a disconnected call (grace expired, or evicted)."""
        log.warning("call %s: %s; giving up", self.call_sid, reason)
        self._finish(CloseInfo(code=None, reason=reason, by="lost"))
