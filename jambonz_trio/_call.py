"""``Call``: the trio object an application talks to, one per jambonz call.

A ``Call`` lives as long as the call, across socket drops: jambonz reconnects with
``session:reconnect`` and the same ``Call`` (and the handler running on it) carries on. What
runs the call - its connections, receive loop, watchdog, writes and close handshake - is its
engine (:mod:`._engine`); ``Call`` is the facade: the call's data, its events, answers,
commands and closing.
"""

from __future__ import annotations

import contextlib
import enum
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from ._audio_listen import call_sender, listen_verb, open_listen
from ._command_api import CommandMethods
from ._config import CallConfig
from ._errors import CallClosed, CommandQueueFull, LocalProtocolError, NotDelivered
from ._events import Event
from ._log import safe
from ._protocol._calldata import CallInfo
from ._protocol._messages import JambonzMessage, SessionReconnect, TtsTokensResult
from ._protocol._outbound import Command
from ._protocol._state import ConnState
from ._protocol._verbs import Listen
from ._protocol._verbs_base import Verb
from ._public import Forwarded, NoPublicConstructor
from ._sync import ReceiveUntilEnd, unless

if TYPE_CHECKING:
    from ._admission import Identity
    from ._audio import AudioStream
    from ._engine import CallEngine

__all__ = ["AckOutcome", "Call", "CallStatistics", "CloseBy", "CloseInfo", "engine_of"]

_VALID_CLOSE_CODES = frozenset({1000, 1001, 1008, 1011, 1012})


class AckOutcome(enum.Enum):
    """What :meth:`Call.ack` did with an answer."""

    ACKED = "acked"  #: sent as the ack jambonz was waiting for
    REDIRECTED = "redirected"  #: too late for an ack: sent as a ``redirect`` command
    DEFERRED = "deferred"  #: socket down: sent as the ack once jambonz reconnects
    #: too late, and empty (or a late ``dial:confirm`` / ``session:adulting`` answer, which
    #: a ``redirect`` would misapply: dropped and logged): nothing was sent
    DROPPED = "dropped"


#: Who ended a call (:attr:`CloseInfo.by`).
CloseBy = Literal["jambonz", "app", "lost", "error", "server"]


@attrs.frozen(kw_only=True)
class CloseInfo:
    """How a call ended: ``by`` is ``jambonz``, ``app`` (the handler returned, or
    :meth:`Call.aclose` with 1000), ``lost`` (no reconnect within the grace period), ``error``
    (the handler raised, or the library failed: the fallback verbs were sent) or ``server``
    (drain, shutdown, or :meth:`Call.aclose` with a code that makes jambonz reconnect)."""

    code: int | None
    reason: str
    by: CloseBy


@attrs.frozen(kw_only=True)
class CallStatistics:
    """A snapshot of a call's internals (cheap; for metrics and tests)."""

    state: str
    events_queued: int
    events_capacity: int
    events_dropped: int
    acks_owed: int
    #: requests the watchdog answered (at the deadline, or at once past the owed bound)
    auto_acked: int
    commands_queued: int
    reconnects: int
    frames_received: int
    frames_sent: int
    #: answers written on a socket that dropped before jambonz was seen to read them
    acks_unconfirmed: int = 0
    #: commands written on a socket that dropped before jambonz was seen to read them
    commands_unconfirmed: int = 0

    @property
    def auto_answered(self) -> int:
        """Deprecated: :attr:`auto_acked`."""
        _deprecated("CallStatistics.auto_answered", "auto_acked")
        return self.auto_acked

    @property
    def answers_unconfirmed(self) -> int:
        """Deprecated: :attr:`acks_unconfirmed`."""
        _deprecated("CallStatistics.answers_unconfirmed", "acks_unconfirmed")
        return self.acks_unconfirmed


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)


class Call(CommandMethods, ReceiveUntilEnd[Event], trio.abc.AsyncResource, metaclass=NoPublicConstructor):
    """One jambonz call, as seen by the application.

    Created by the server for every new call and handed to the app's handler. It stays the
    same object when jambonz reconnects after a socket drop.

    Requests (``session:new``, ``verb:hook``, ...) must be answered with :meth:`ack` exactly
    once, from any task, in any order. If the app has not answered when ``ack_deadline`` comes
    (4 s of jambonz's 5 s), the watchdog answers for it (empty, or the holding verbs for
    ``session:new``) and logs a warning; a later answer is sent as a ``redirect`` command
    (``late_ack``'s default), or dropped where a ``redirect`` would misapply it (see
    :meth:`ack`).

    The command methods (:meth:`redirect`, :meth:`hangup`, :meth:`mute`, :meth:`whisper`...)
    each build one command and send it with :meth:`send_command`: they block, raise and leave
    the timeout to the caller as it does.

    Attributes:
        session: the first message of the call (normally :class:`SessionNew`; it may be a
            ``session:reconnect`` when the app restarted, or ``session:redirect`` /
            ``session:adulting``).
        info: typed call data of ``session``.
        restored: ``True`` if the call existed before this process saw it: its first message
            was a ``session:reconnect`` (an app restart, or a call moved from another instance).
        path: the request target jambonz connected to (path and query), e.g.
            ``/agent/sales?x=1``.
        config: the call's settings.
        identity: the route and Basic-auth user the socket was admitted with.
        user_data: a dict for the app's own per-call data.
    """

    _FACTORY = "the server (your handler's argument, or server.calls)"

    __slots__ = (
        "__weakref__",
        "_engine",
        "config",
        "identity",
        "info",
        "path",
        "restored",
        "session",
        "user_data",
    )

    def __init__(
        self,
        engine: CallEngine,
        session: JambonzMessage,
        *,
        config: CallConfig,
        identity: Identity,
        path: str = "/",
    ) -> None:
        self._engine = engine
        self.session = session
        self.path = path
        self.config = config
        self.identity = identity
        info = getattr(session, "call", None)
        self.info: CallInfo = info if isinstance(info, CallInfo) else CallInfo.from_data(session.data)
        self.restored = isinstance(session, SessionReconnect)
        self.user_data: dict[str, Any] = {}

    # -- the call's data -----------------------------------------------------------------------

    call_sid = Forwarded[str | None](
        "_engine.call_sid",
        """The call's sid: the envelope ``call_sid`` of its first message (``data.call_sid`` on
        sockets whose envelope names none), the key of ``server.calls``. ``None`` only on
        sockets that never named one: jambonz 0.9.8 opens one such, the reconnect of a socket a
        ``redirect`` verb opened to an absolute ws URL (its ``session:reconnect`` has ``data``
        ``{}`` and no envelope sid, docs/protocol.md §4.2); served, not refused, as refusing
        it makes jambonz hang up.""",
    )
    from_ = Forwarded[str | None]("info.from_", "The calling number / user (``from`` on the wire).")
    to = Forwarded[str | None]("info.to", "The called number / user.")
    direction = Forwarded[str | None]("info.direction", "``inbound`` or ``outbound``.")
    account_sid = Forwarded[str | None]("info.account_sid", "The jambonz account the call belongs to.")
    state = Forwarded[ConnState](
        "_engine.protocol.state", "``connected``, ``disconnected`` (waiting for a reconnect) or ``closed``."
    )
    closed = Forwarded[bool]("_engine.closed", "Whether the call is over (nothing more can be sent).")
    close_info = Forwarded[CloseInfo | None](
        "_engine.close_info", "How the call ended (``None`` while live)."
    )
    reconnect_count = Forwarded[int](
        "_engine.reconnect_count", "How many times jambonz reconnected this call here."
    )
    isolated = Forwarded[bool](
        "_engine.isolated",
        """Whether the call is served *isolated*: its first message named the sid of a live or
        parked call it may not take over (it failed the owner check, docs/security.md), or a
        sid another live call already has. It carries that sid (:attr:`call_sid`) but is not
        reachable by it (not in ``server.calls``); its log lines say ``(isolated)``. Treat its
        data as the peer's claim, not as the other call's.""",
    )

    @property
    def reconnected(self) -> bool:
        """Deprecated: :attr:`restored` (it never meant "reconnected since": see
        :attr:`reconnect_count`)."""
        _deprecated("Call.reconnected", "Call.restored")
        return self.restored

    tts_interruptions = Forwarded[int](
        "_engine.tts.interruptions",
        "How many times the caller barged in on streamed TTS (``user_interruption``).",
    )

    def __repr__(self) -> str:
        return f"<Call {self.call_sid} {self.state.value}>"

    def statistics(self) -> CallStatistics:
        """A snapshot of queue fill levels and counters (not a checkpoint)."""
        engine = self._engine
        return CallStatistics(
            state=self.state.value,
            events_queued=len(engine.events),
            events_capacity=engine.events.capacity,
            events_dropped=engine.events_dropped,
            acks_owed=engine.protocol.owed_count,
            auto_acked=engine.protocol.auto_answered,
            commands_queued=engine.commands_queued,
            reconnects=engine.reconnect_count,
            frames_received=engine.frames_in,
            frames_sent=engine.frames_out,
            acks_unconfirmed=engine.protocol.unconfirmed,
            commands_unconfirmed=engine.protocol.commands_unconfirmed,
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
        if self._engine.events.reserved:
            raise LocalProtocolError(
                "this call's events are consumed by another reader (a Conversation?); "
                "read them from it instead"
            )
        return await self._engine.receive_event()

    _receive = next_event  # ``async for event in call``
    _END = CallClosed

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
        events = self._engine.events
        if events.reserved:
            raise LocalProtocolError("this call's events are already reserved")
        events.reserved = True
        try:
            yield self._engine.receive_event
        finally:
            events.reserved = False

    async def wait_session_acked(self) -> None:
        """Block until ``session:new`` has been acked (commands are allowed from then on).

        Raises:
            CallClosed: the call ended first.
        """
        engine = self._engine
        if engine.protocol.session_answered:
            await trio.lowlevel.checkpoint()
            return
        await unless(engine.closed_event, engine.session_acked.wait)
        if not engine.session_acked.is_set():
            raise engine.closed_error()

    async def wait_answered(self) -> None:
        """Deprecated: :meth:`wait_session_acked`."""
        _deprecated("Call.wait_answered()", "Call.wait_session_acked()")
        await self.wait_session_acked()

    async def wait_closed(self) -> CloseInfo:
        """Block until the call is over; returns how it ended."""
        await self._engine.closed_event.wait()
        info = self._engine.close_info
        assert info is not None
        return info

    # -- answering -----------------------------------------------------------------------------

    def awaiting_ack(self, request: JambonzMessage | str) -> bool:
        """Whether jambonz still waits for the app's answer to ``request`` (not a checkpoint).

        ``False`` once it was acked (by the app or the watchdog), abandoned with a dropped
        socket, or if it never needed one.
        """
        msgid = request.msgid if isinstance(request, JambonzMessage) else request
        owed = self._engine.protocol.get_owed(msgid)
        return owed is not None and owed.held is None

    def awaiting_answer(self, request: JambonzMessage | str) -> bool:
        """Deprecated: :meth:`awaiting_ack`."""
        _deprecated("Call.awaiting_answer()", "Call.awaiting_ack()")
        return self.awaiting_ack(request)

    async def ack(self, request: JambonzMessage | str, verbs: Sequence[Verb] = ()) -> AckOutcome:
        """Answer a request (by message or msgid) with ``verbs`` (may be empty).

        A checkpoint; the write is shielded from the caller's cancellation and bounded by
        ``send_timeout``, so when this returns the frame is on the wire (or queued, see below).

        Returns:
            :class:`AckOutcome`: ``ACKED``; ``REDIRECTED`` when the watchdog (or a socket
            drop) already ended the request and ``verbs`` went out as a ``redirect``;
            ``DROPPED`` when that happened and ``verbs`` was empty, or the request was a
            ``dial:confirm``, a ``session:adulting``, a wait hook or another hook whose
            answer jambonz does not run as the call's next program (a conference
            ``statusHook``, a ``partialResultHook``...: whatever ``late_ack`` says, as a
            ``redirect`` its verbs would replace the wrong program or kill the verb that
            runs on; the list is in docs/replying.md);
            ``DEFERRED`` for a
            ``session:new`` answer that waits for jambonz to reconnect (given while the socket
            is down, or the socket died under its write): it goes out as the ack of the
            ``session:reconnect``.

            ``ACKED`` means written to the socket, not read by jambonz: should the socket drop
            before jambonz is seen to read it (docs/reconnects.md), a ``session:new`` answer is
            sent again on the reconnect, and any other answer is reported with an
            :class:`AckUnconfirmed` event.

        Raises:
            AlreadyAcked: the app answered this request before (or ``late_ack`` is
                ``RAISE``).
            LocalProtocolError: not a request, an unknown msgid, an empty ``session:new``
                answer, or the frame would be too large.
            NotDelivered: the socket died during the write (never for ``session:new``, whose
                answer then waits for the reconnect: ``DEFERRED``).
            CallClosed: the call is over (a handler may let it end the handler quietly).
        """
        engine = self._engine
        if engine.closed:
            raise engine.closed_error()
        if isinstance(request, JambonzMessage):
            msgid = request.msgid
            if not request.NEEDS_ACK and not engine.protocol.is_owed(msgid):
                # the type is the peer's (an unknown one, verbatim): made safe, since an app
                # that lets this escape gets it logged in its traceback
                raise LocalProtocolError(f"{safe(request.type, 64)} messages are not acked")
        else:
            msgid = request
        outcome = await engine.answer(msgid, verbs)
        if engine.observer is not None:
            engine.observer.acked(engine, outcome.value)
        return outcome

    # -- commands ------------------------------------------------------------------------------

    async def send_command(self, command: Command) -> None:
        """Send a command (any task, any time after the ``session:new`` ack).

        While the socket is down the command waits, FIFO, for jambonz to reconnect (bounded
        by ``max_queued_commands`` / ``max_queued_bytes``), or fails at once with
        ``disconnected_commands=FAIL``. Cancelling the caller while it waits removes the
        command (it is never sent) unless the reconnect flush had already taken it. The caller
        owns any timeout (``trio.fail_after``).

        Returning means written to the socket, not read by jambonz: should the socket drop
        before jambonz is seen to read it (docs/reconnects.md), a hang-up (``call:status``
        ``completed`` / ``no-answer``, or a ``redirect`` to a lone ``hangup``) is sent again
        once jambonz reconnects, and any other command is reported with a
        :class:`CommandUnconfirmed` event.

        Raises:
            CallClosed: the call is over.
            LocalProtocolError: before the ``session:new`` ack (jambonz would drop it), or the
                frame is too large / unserialisable.
            CommandQueueFull: the disconnected queue is full.
            NotDelivered: the socket died during the write, or the call ended while the
                command waited.
        """
        engine = self._engine
        observer = engine.observer
        if observer is None:
            await engine.send_command(command)
            return
        outcome = "sent"
        try:
            await engine.send_command(command)
        except CommandQueueFull:
            outcome = "queue_full"
            raise
        except NotDelivered:
            outcome = "not_delivered"
            raise
        except CallClosed:
            outcome = "closed"
            raise
        except LocalProtocolError:
            outcome = "refused"
            raise
        except BaseException:
            outcome = "cancelled"  # (or failed in a way the signature does not name)
            raise
        finally:
            observer.command(engine, command, outcome)

    async def send_tts_tokens(self, tokens: str) -> TtsTokensResult:
        """Send ``tts:tokens`` and wait for jambonz's ``tts:tokens-result``.

        Back-pressure: while jambonz reported its buffer full this waits for
        ``stream_resumed``; a ``full`` answer is retried after it (and after a barge-in,
        ``user_interruption``, which releases it too: this call knows no turns; a
        :class:`~jambonz_trio.TokenStream` drops its turn's text instead). Sequential use
        keeps order. The caller owns the timeout.

        Raises:
            CallClosed: the call ended first.
            NotDelivered: the socket dropped before jambonz was seen to read the tokens
                (``maybe_sent``; they are also reported as :class:`CommandUnconfirmed`), or
                as for :meth:`send_command`.
            CommandQueueFull, LocalProtocolError: as for :meth:`send_command`.
        """
        result = await self._engine.tts.send(tokens, self.send_command)
        if result is None:
            raise self._engine.closed_error()
        assert result is not False  # (only for a sender with a turn)
        return result

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
        answer: JambonzMessage | None = None,
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
                caller's bound; a wrong URL or credentials look like this: jambonz then
                ends the verb at once and calls its ``action_hook``, but that goes to this
                handler, blocked here, so only the timeout ends the wait;
                :meth:`Conversation.listen <jambonz_trio.Conversation.listen>` raises
                :class:`~jambonz_trio.audio.ListenConnectFailed` at the hook instead).
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
        await self._engine.tts.wait_interruption(seen)

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
        await self._engine.close(code, reason, by="app" if code == 1000 else "server")


def engine_of(call: Call) -> CallEngine:
    """The engine running ``call`` (library use: the server and a Conversation)."""
    return call._engine
