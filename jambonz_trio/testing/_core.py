"""The machinery of the fake jambonz: sockets, the ack book, reconnects, ending the call.

Behaviour follows feature-server 0.9.8's ``ws-requestor.js`` as described in
``docs/protocol.md`` §2-7. ``_inbound.py`` checks and dispatches the app's frames;
:class:`FakeCall` (``_fake.py``) adds the public API on top.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
import trio
import trio_websocket

from .._protocol import MESSAGE_TYPES, Command, HookSpec, JambonzMessage, SessionReconnect, Verb
from .._protocol._verbs import Gather
from ._calldata import CallData
from ._errors import (
    AckAbandoned,
    AckTimeout,
    CallOver,
    CallRejected,
    ConnectFailed,
    FakeJambonzError,
    HandshakeRejected,
    InvalidVerbs,
    NeverSent,
    ProtocolViolation,
)
from ._jambonz import dumps, new_msgid
from ._records import (
    AckRecord,
    CloseRecord,
    CommandRecord,
    Direction,
    TranscriptEntry,
    Violation,
    ViolationKind,
    format_transcript,
)
from ._snake import snake_case_keys
from ._transport import Connector, _SniffingStream, abort_stream, handshake
from ._tts import TtsBuffer

__all__: list[str] = []


class _Pending:
    """One ack-awaiting message jambonz sent (an entry of ``messagesInFlight``)."""

    def __init__(self, message: JambonzMessage) -> None:
        self.message = message
        self.msgid = message.msgid
        self.done = False
        self.record: AckRecord | None = None
        self.error: FakeJambonzError | None = None
        self.violation: int | None = None
        self.watchdog = trio.CancelScope()
        self.rekeyed = False
        self.connection = 0
        #: tasks waiting for the outcome (``_await_ack``, a reconnect cycle): a violation of this
        #: request is theirs to raise only while there is one (see ``_Core._own``)
        self.waiters = 0
        #: a wait hook's kind (``FakeCall.wait_hook``): its answer must be an array of verbs
        #: the waiting verb can play
        self.wait: str | None = None
        #: a ``session:redirect`` for a ``redirect`` command: ``"call_hook"`` (its answer is
        #: the parent's program, never "carry on") or ``"child_call_hook"`` (the child's)
        self.lcc: LccHook | None = None
        #: a ``child_call_hook`` one of a command without ``call_hook``: jambonz kills the
        #: parent's running verb once the child's answer is in (FS v0.9.8
        #: ``lib/session/call-session.js:1649-1652``)
        self.kills_parent = False
        #: whether the ack's verbs are the parent's next program: not for a hook whose answer
        #: jambonz drops (a conference ``statusHook`` event, FS v0.9.8
        #: ``lib/tasks/conference.js:723-741``) or one sent for the callee (a ``dial:confirm``
        #: program's hooks, ``lib/utils/place-outdial.js:413-425``)
        self.program = True

    def succeed(self, record: AckRecord) -> None:
        if not self.done:
            self.done, self.record = True, record

    def fail(self, error: FakeJambonzError, violation: int | None = None) -> None:
        if not self.done:
            self.done, self.error, self.violation = True, error, violation
        self.watchdog.cancel()


class _Cycle:
    """One reconnect: back-off, connect, ``session:reconnect``, its ack, queue flush."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.record: AckRecord | None = None
        self.error: FakeJambonzError | None = None
        self.violation: int | None = None
        self.delay_scope = trio.CancelScope()
        self.waiters = 0

    def finish(
        self,
        record: AckRecord | None = None,
        error: FakeJambonzError | None = None,
        violation: int | None = None,
    ) -> None:
        if not self.done.is_set():
            self.record, self.error, self.violation = record, error, violation
            self.done.set()


LocalClose = Literal["drop", "oversize", "end"]
#: Which hook of a ``redirect`` command a ``session:redirect`` is for.
LccHook = Literal["call_hook", "child_call_hook"]


class _Link:
    """One WebSocket to the app."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.ws: trio_websocket.WebSocketConnection | None = None
        self.stream: _SniffingStream | None = None
        self.local_close: LocalClose | None = None
        self.reconnect_after_drop = True
        self.finished = False
        self.scope = trio.CancelScope()
        #: set while the fake closes this socket; done once the app's Close came (or timed out)
        self.close_done: trio.Event | None = None


@attrs.define(eq=False, kw_only=True, repr=False, slots=False)
class _Core:
    """State and I/O of one fake call. See :class:`FakeCall` for the public API."""

    _nursery: trio.Nursery
    _connector: Connector
    _call: CallData
    _host: str
    _path: str
    _extra_headers: list[tuple[bytes, bytes]]
    _strict: bool
    _ack_timeout: float
    _max_payload: int
    _auto_reconnect: bool
    _max_reconnects: int
    _handshake_timeout: float
    _tts: TtsBuffer = attrs.field(converter=TtsBuffer)
    _send_trying: bool
    _close_timeout: float

    def __attrs_post_init__(self) -> None:
        self._t0 = trio.current_time()
        self._changed = trio.Event()
        self._state: Literal["idle", "active", "ended"] = "idle"
        self._first_kind: str | None = None
        self._link: _Link | None = None
        self._connections = 0
        self._backoff = 0.5
        self._graceful = False
        self._env_call_sid: str | None = None
        self._session_data: dict[str, Any] | None = None
        self._session_acked = False
        self._init_msgid: str | None = None
        self._pending: dict[str, _Pending] = {}
        self._sent_types: dict[str, str] = {}
        self._expired: set[str] = set()
        self._acked: set[str] = set()
        self._abandoned: set[str] = set()
        self._queue: list[tuple[JambonzMessage, _Pending | None]] = []
        self._awaiting_reconnect_ack = False
        # jambonz's "waiting for the reconnect ack" flag left set by a re-keyed session:new
        # (protocol.md §6.2 step 6): every message waits in the queue until an ordinary
        # session:reconnect is acked (see _hold_for_good)
        self._held_for_good = False
        self._flagged: set[str] = set()  # msgids already reported as held for good
        self._reconnect: _Cycle | None = None
        self._last_cycle: _Cycle | None = None
        self._answered_at: float | None = None
        # What jambonz runs, for the commands that need a certain verb (mute, whisper):
        # run_call says which verb runs (_running_known); a test driving the call by hand
        # leaves it unknown, and the latest program the app gave stands in for it.
        self._running: Verb | None = None
        self._running_known = False
        self._program: list[Verb] = []
        # call_hooks of redirect commands whose session:redirect was not sent yet; and their
        # child_call_hooks, each with whether the command had no call_hook (the parent's
        # running verb is then killed, FS v0.9.8 lib/session/call-session.js:1649-1652)
        self._lcc_hooks: list[str] = []
        self._lcc_child_hooks: list[tuple[str, bool]] = []

        self._transcript: list[TranscriptEntry] = []
        self._violations: list[Violation] = []
        self._reported: set[int] = set()
        # Violations whose exception is on its way to a waiter (start(), hook(), reconnect()):
        # _check() leaves them alone so the waiter raises the precise error.
        self._owned: set[int] = set()
        self._acks: list[AckRecord] = []
        self._commands: list[CommandRecord] = []
        self._inbox: deque[Command] = deque()
        self._closes: list[CloseRecord] = []
        self._close_cursor = 0
        self._sent: list[JambonzMessage] = []
        self._errors_sent: list[dict[str, Any]] = []

    # -- bookkeeping -----------------------------------------------------------------------

    def _now(self) -> float:
        return trio.current_time() - self._t0

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _log(self, link: _Link | int | None, direction: Direction, text: str) -> None:
        index = link.index if isinstance(link, _Link) else (link or self._connections)
        self._transcript.append(
            TranscriptEntry(time=self._now(), connection=index, direction=direction, text=text)
        )

    def format_transcript(self, *, max_lines: int = 200, width: int = 160) -> str:
        """The transcript as text, one line per frame or event (what failures print)."""
        return format_transcript(self._transcript, max_lines=max_lines, width=width)

    def _fail(self, exc: FakeJambonzError) -> FakeJambonzError:
        """Attach the current transcript to ``exc`` (call right before raising it)."""
        exc.transcript = self.format_transcript()
        return exc

    def _violate(
        self,
        kind: ViolationKind,
        message: str,
        *,
        frame: str | None = None,
        link: _Link | None = None,
        owned: bool = False,
    ) -> int:
        if owned:
            self._owned.add(len(self._violations))
        self._violations.append(
            Violation(
                kind=kind,
                message=message,
                frame=frame,
                time=self._now(),
                connection=link.index if link is not None else self._connections,
            )
        )
        self._log(link, "event", f"VIOLATION [{kind}] {message}")
        self._notify()
        return len(self._violations) - 1

    def _set_running(self, verb: Verb | None) -> None:
        """``run_call``: ``verb`` runs now (``None``: none)."""
        self._running, self._running_known = verb, True

    def _program_changed(self, verbs: list[Verb], *, append: bool = False) -> None:
        """The app gave jambonz verbs: a new program, or (``append``) more of it."""
        self._program = [*self._program, *verbs] if append else list(verbs)

    def _running_killed(self) -> None:
        """A ``redirect`` command killed the parent's running verb without replacing the program
        (a falsy ``call_hook`` answer, or only a ``child_call_hook``: FS v0.9.8
        ``lib/session/call-session.js:1649-1652``): it leaves the record of the program when the
        fake can tell which verb it was: the running one under ``run_call``; driven by hand,
        only a program of one verb (whether it ran on or had ended, it is over now). Otherwise
        the record stays as it is: flagging a command for a verb that may still run would be a
        false violation."""
        if self._running_known:
            victim = self._running
        elif len(self._program) == 1:
            victim = self._program[0]
        else:
            return
        self._program = [verb for verb in self._program if verb is not victim]

    def _gather_for(self, hook: object) -> Gather | None:
        """The gather a result is for: ``hook`` itself, or the running / latest gather of
        the program with that action hook (``None`` if the fake cannot tell)."""
        if isinstance(hook, Gather):
            return hook
        url = hook.url if isinstance(hook, HookSpec) else hook
        for verb in [self._running, *reversed(self._program)]:
            if isinstance(verb, Gather) and verb.action_hook is not None:
                own = verb.action_hook.url if isinstance(verb.action_hook, HookSpec) else verb.action_hook
                if own == url:
                    return verb
        return None

    def _hears(self, gather: Gather | None, kind: Literal["digits", "speech"]) -> bool:
        """Whether ``gather`` listens for ``kind``; records an ``unheard-input`` violation if
        not (jambonz would never send that result)."""
        inputs = (gather.input or ["digits"]) if gather is not None else [kind]
        if kind in inputs:
            return True
        why = (
            "keys only when input includes 'digits' (FS lib/tasks/gather.js:400-416)"
            if kind == "digits"
            else "speech only when input includes 'speech' (FS lib/tasks/gather.js:96)"
        )
        self._violate(
            "unheard-input",
            f"a {kind} result for a gather whose input is {list(inputs)}: jambonz 0.9.8 listens "
            f"for {why}; the input defaults to ['digits'] (:45-47). It never sends such a result",
        )
        return False

    def _own(self, p: _Pending) -> bool:
        """Whether a violation ``p`` fails with is left to its waiter: only while one waits
        (once the test stopped waiting, e.g. cancelled, the next :meth:`_check` raises it)."""
        return p.waiters > 0

    def _disown(self, violation: int | None, *, reported: bool = False) -> None:
        """A waiter is done with ``violation``: raised as its error (``reported``), or left to
        the next :meth:`_check`."""
        if violation is not None:
            self._owned.discard(violation)
            if reported:
                self._reported.add(violation)

    def _check(self) -> None:
        """Strict mode: raise the violations not reported yet."""
        if not self._strict:
            return
        new = [i for i in range(len(self._violations)) if i not in self._reported and i not in self._owned]
        if not new:
            return
        self._reported.update(new)
        found = [self._violations[i] for i in new]
        cls = InvalidVerbs if any(v.kind == "invalid-verbs" for v in found) else ProtocolViolation
        raise cls(found, transcript=self.format_transcript())

    async def _wait(self, ready: Callable[[], bool], within: float = math.inf) -> bool:
        """Wait until ``ready()``; raise violations as they happen (strict). A checkpoint,
        also when ``ready()`` holds at once."""
        if ready():
            await trio.lowlevel.checkpoint()
            return True
        with trio.move_on_after(within):
            while True:
                if ready():
                    return True
                self._check()
                event = self._changed
                await event.wait()
        return ready()

    async def _await_ack(self, p: _Pending) -> AckRecord:
        """Wait for ``p``'s outcome; raise its error. A wait cut short (cancelled, or another
        violation raised) leaves ``p``'s violation to the next :meth:`_check`, recorded ones
        included: only the error actually raised counts as reported."""
        p.waiters += 1
        try:
            await self._wait(lambda: p.done)
        finally:
            p.waiters -= 1
            if p.waiters == 0:
                self._disown(p.violation)
        if p.error is not None:
            self._disown(p.violation, reported=True)
            raise self._fail(p.error)
        assert p.record is not None
        self._check()
        return p.record

    def _ensure_active(self) -> None:
        if self._state == "ended":
            raise self._fail(CallOver("the call is over; nothing more can be sent on it"))

    def _message(
        self,
        cls: type[JambonzMessage],
        data: Mapping[str, Any],
        *,
        hook: str | None = None,
        call_sid: str | Literal["session"] | None = "session",
    ) -> JambonzMessage:
        sid = self._env_call_sid if call_sid == "session" else call_sid
        return cls(msgid=new_msgid(), call_sid=sid, hook=hook, data=snake_case_keys(dict(data)))

    # -- sending ---------------------------------------------------------------------------

    async def _emit(self, msg: JambonzMessage, pending: _Pending | None = None) -> None:
        """Send like ws-requestor's ``request()``: now, queued until reconnected, or dropped.
        A checkpoint either way (cancelled: nothing is sent, queued nor dropped)."""
        self._ensure_active()
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._graceful:
            self._log(None, "event", f"not sent ({msg.type}): the app closed the socket with 1000")
            if pending is not None:
                pending.succeed(AckRecord(msgid=msg.msgid, request=msg, delivered=False))
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if not self._blocked:
            await self._transmit(msg, pending)
            return
        if self._enqueue(msg, pending):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        self._log(None, "event", f"queued {msg.type} {msg.msgid} until the socket is back")
        if self._link is None:
            # A send with no socket connects at once (FS v0.9.8 lib/utils/ws-requestor.js:123-128),
            # whatever the count: rc caps only the timer-driven reconnects (:455); the new socket
            # gets session:reconnect first (:367) and this message waits for its ack (:184-186).
            if self._reconnect is not None:
                self._reconnect.delay_scope.cancel()
            else:
                self._schedule_reconnect(0.0)
        await trio.lowlevel.cancel_shielded_checkpoint()

    @property
    def _blocked(self) -> bool:
        """jambonz's ``request()`` would queue now: no socket, a reconnect's ack awaited, or
        the queue held for good after a re-keyed ``session:new`` (:meth:`_hold_for_good`)."""
        return self._link is None or self._awaiting_reconnect_ack or self._held_for_good

    def _enqueue(self, msg: JambonzMessage, pending: _Pending | None) -> bool:
        """Queue ``msg``; whether it is held for good on a live socket (then flagged)."""
        self._queue.append((msg, pending))
        if self._link is not None and self._held_for_good:
            self._hold_for_good(msg, pending)
            return True
        return False

    async def _transmit(self, msg: JambonzMessage, pending: _Pending | None) -> None:
        link = self._link
        assert link is not None and link.ws is not None
        text = dumps(msg.to_wire())
        self._sent.append(msg)
        self._sent_types[msg.msgid] = msg.type
        if msg.type == "session:new":
            self._init_msgid = msg.msgid
        if pending is not None:
            pending.connection = link.index
            self._pending[pending.msgid] = pending
            self._start_watchdog(pending, self._ack_timeout)
        self._log(link, "out", text)
        try:
            await link.ws.send_message(text)
        except trio_websocket.ConnectionClosed:
            self._log(link, "event", "send failed: the socket is closed")

    async def _flush_queue(self) -> None:
        """Send what waited for the reconnect as jambonz does: its flush re-sends a queued
        request at once, through ``request()``, and a queued notification on the next
        event-loop turn (``setImmediate``) (FS v0.9.8 ``lib/utils/ws-requestor.js:215-226``):
        every queued request goes out before every queued notification, each kind in the order
        it arose (protocol.md §6.2 step 4)."""
        queue, self._queue = self._queue, []
        queue = [q for q in queue if q[1] is not None] + [q for q in queue if q[1] is None]
        for msg, pending in queue:
            if self._state == "ended":
                break
            if self._blocked:
                self._enqueue(msg, pending)
            else:
                await self._transmit(msg, pending)

    def _hold_for_good(self, msg: JambonzMessage, pending: _Pending | None) -> None:
        """``msg`` (queued) is one jambonz 0.9.8 holds: after a drop before the
        ``session:new`` ack, its ``session:reconnect`` went out as a notification carrying the
        re-keyed ``session:new`` (FS v0.9.8 ``lib/utils/ws-requestor.js:244-261``); its ack
        resolves the reconnect promise (``:282-284``) but only the send callback of an
        ack-awaited send clears it (``:296-311``), so ``request()`` queues every later message
        (``:184-186``), and the flush re-queues what was queued already (``:215-226``). Only an
        ordinary ``session:reconnect``, after another close, flushes the queue. The message
        stays queued (sent if that happens). If it is still held on a live socket
        ``ack_timeout`` seconds later (:meth:`_never_sent_at`), the fake records a
        ``never-sent`` violation, and a request's waiter fails (:class:`NeverSent`) rather
        than wait for ever."""
        if msg.msgid in self._flagged:
            return
        self._flagged.add(msg.msgid)
        self._log(None, "event", f"holding {msg.type} {msg.msgid} (re-keyed session:new)")
        self._nursery.start_soon(self._never_sent_at, msg, pending, trio.current_time() + self._ack_timeout)

    async def _never_sent_at(self, msg: JambonzMessage, pending: _Pending | None, deadline: float) -> None:
        """At ``deadline``: a message still held on a live socket would never be sent (jambonz
        holds it until the app closes the socket, and an app that does so closes it within
        moments; jambonz-trio does, ``CallConfig.rekey_quiet``). One released meanwhile, or
        about to be (a reconnect under way), went out late, like any queued message."""
        await trio.sleep_until(deadline)
        if (
            self._state == "ended"
            or self._link is None
            or not self._held_for_good
            or (pending is not None and pending.done)
            or not any(m is msg for m, _ in self._queue)
        ):
            return
        detail = (
            f"{msg.type} {msg.msgid} would never reach the app: the socket dropped before "
            "session:new was acked, and jambonz 0.9.8 then queues every later message for good "
            "(FS lib/utils/ws-requestor.js:184-186, :244-261, :282-284, :296-311; protocol.md "
            f"§6.2 step 6): held {self._ack_timeout:g} s; the call goes silent until the socket "
            "closes (not with 1000) and jambonz reconnects"
        )
        v = self._violate("never-sent", detail, owned=pending is not None and self._own(pending))
        if pending is not None:
            pending.fail(NeverSent(msg.msgid, msg.type, detail), v)

    def _start_watchdog(self, p: _Pending, timeout: float) -> None:
        p.watchdog = trio.CancelScope()
        self._nursery.start_soon(self._watch, p, p.watchdog, trio.current_time() + timeout)

    async def _watch(self, p: _Pending, scope: trio.CancelScope, deadline: float) -> None:
        with scope:
            await trio.sleep_until(deadline)
            if not p.done and self._pending.get(p.msgid) is p:
                self._ack_timed_out(p)

    def _rejects_call(self, p: _Pending) -> bool:
        return p.message.type == "session:new" and self._call.direction == "inbound"

    def _ack_timed_out(self, p: _Pending) -> None:
        del self._pending[p.msgid]
        self._expired.add(p.msgid)
        mtype = p.message.type
        if p.rekeyed:
            detail = (
                f"the app never acked session:reconnect {p.msgid}, which carries the unacked "
                "session:new (protocol.md §6.2 step 6; jambonz 0.9.8 has no timer on this path "
                f"and the call would hang; the fake gives up after {self._ack_timeout:g} s)"
            )
        else:
            detail = f"no ack for {mtype} {p.msgid} within {self._ack_timeout:g} s"
        # (owned by its waiter, unless it has none left: a request NeverSent failed, released
        # later, or a wait the test cancelled)
        v = self._violate("ack-timeout", detail, owned=not p.done and self._own(p))
        if self._rejects_call(p):
            p.fail(CallRejected("480 Temporarily Unavailable", detail=detail), v)
            self._end_call_soon(1001)
        elif mtype == "session:reconnect":
            p.fail(AckTimeout(p.msgid, mtype, timeout=self._ack_timeout), v)
            self._nursery.start_soon(self._reconnect_timed_out, p)
        else:
            p.fail(AckTimeout(p.msgid, mtype, timeout=self._ack_timeout), v)
        self._notify()

    async def _reconnect_timed_out(self, p: _Pending) -> None:
        """jambonz: fail queued requests, drop queued notifications, hang up the call."""
        self._awaiting_reconnect_ack = False
        for _msg, pending in self._queue:
            if pending is not None:
                pending.fail(AckTimeout(p.msgid, "session:reconnect", timeout=self._ack_timeout))
        self._queue.clear()
        self._log(None, "event", "session:reconnect was not acked: jambonz hangs up the call")
        await self._final_status("jambonz")
        await self._end_call(1000)

    async def _final_status(self, by: str, duration: int | None = None) -> None:
        if self._graceful or self._link is None or self._state == "ended":
            return
        if duration is None:
            duration = 0 if self._answered_at is None else round(self._now() - self._answered_at)
        self._call.call_status, self._call.sip_status, self._call.sip_reason = (
            "completed",
            200,
            "OK",
        )
        data = self._call.call_info(duration=duration, call_termination_by=by)
        await self._emit(self._message(MESSAGE_TYPES["call:status"], data))

    async def _end_call(self, code: int, reason: str | None = None) -> None:
        """The fake (jambonz) ends the session: close with ``code``; nothing more is sent."""
        link = self._mark_ended(code, reason)
        if link is not None:
            await self._close_link(link, code, reason)

    def _mark_ended(self, code: int, reason: str | None = None) -> _Link | None:
        """The synchronous half of :meth:`_end_call`; returns the socket still to close."""
        if self._state == "ended":
            return None
        self._state = "ended"
        if self._reconnect is not None:
            self._reconnect.finish(error=CallOver("the call ended during the reconnect"))
            self._reconnect = None
        for p in list(self._pending.values()):
            p.fail(AckAbandoned(p.msgid, p.message.type, "the call ended"))
        self._abandoned.update(self._pending)
        self._pending.clear()
        for _msg, pending in self._queue:
            if pending is not None:
                pending.fail(AckAbandoned(pending.msgid, pending.message.type, "the call ended"))
        self._queue.clear()
        link = self._link
        self._log(link, "event", f"jambonz ends the session (close {code})")
        if link is not None:
            link.local_close = "end"
            self._link_lost(link, code, reason)
        self._notify()
        return link

    def _end_call_soon(self, code: int) -> None:
        link = self._mark_ended(code)
        if link is not None:
            self._nursery.start_soon(self._close_link, link, code, None)

    async def _close_link(self, link: _Link, code: int, reason: str | None) -> None:
        link.close_done = done = trio.Event()
        if link.stream is not None:
            link.stream.closing()
        if link.ws is not None:
            with trio.move_on_after(self._close_timeout):
                await link.ws.aclose(code, reason)
        done.set()
        if link.stream is not None:
            await abort_stream(link.stream)

    # -- connections -----------------------------------------------------------------------

    async def _open_link(self) -> _Link:
        """Connect and handshake; start the reader. Raises :class:`ConnectFailed`."""
        link = _Link(self._connections + 1)
        self._log(link, "event", f"connecting to {self._path}")
        try:
            stream = await self._connector()
        except Exception as exc:
            self._log(link, "event", f"connect failed: {exc!r}")
            raise ConnectFailed(f"the connector failed: {type(exc).__name__}: {exc}") from exc
        try:
            await self._nursery.start(self._run_link, link, stream)
        except ConnectFailed as exc:
            self._log(link, "event", f"handshake failed: {exc.message}")
            raise
        self._connections += 1
        self._link = link
        self._log(link, "event", "connected (subprotocol ws.jambonz.org)")
        return link

    async def _run_link(
        self,
        link: _Link,
        stream: trio.abc.Stream,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await self._run_link_inner(link, stream, task_status)
        finally:
            if link.stream is not None:  # also when cancelled: never leak the socket
                await abort_stream(link.stream)

    async def _run_link_inner(
        self,
        link: _Link,
        stream: trio.abc.Stream,
        task_status: trio.TaskStatus[None],
    ) -> None:
        failure: ConnectFailed | None = None
        with link.scope:
            async with trio.open_nursery() as ln:
                try:
                    ws, sniff = await handshake(
                        ln,
                        stream,
                        host=self._host,
                        resource=self._path,
                        extra_headers=self._extra_headers,
                        within=self._handshake_timeout,
                        # trio-websocket counts characters; bytes are checked per frame below,
                        # anything bigger than this cannot be within the byte limit.
                        max_message_size=4 * self._max_payload + 4,
                    )
                except ConnectFailed as exc:
                    failure = exc
                    ln.cancel_scope.cancel()
                else:
                    link.ws, link.stream = ws, sniff
                    task_status.started()
                    try:
                        await self._read_loop(link, ws)
                    finally:
                        sniff.reader_gone()
                    if link.close_done is not None:
                        # we are closing: keep trio-websocket's reader alive for the app's Close
                        await link.close_done.wait()
                    ln.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _read_loop(self, link: _Link, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            try:
                frame = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                reason = exc.reason
                code = reason.code if reason is not None else 1006
                text = reason.reason if reason is not None else None
                if (
                    link.local_close is None
                    and code == 1009
                    and (text or "").startswith("Exceeded maximum message size")
                ):
                    self._violate(
                        "oversize-frame",
                        f"a frame over {4 * self._max_payload} characters (limit "
                        f"{self._max_payload} bytes): jambonz closes with 1009 and reconnects",
                        link=link,
                    )
                    link.local_close = "oversize"
                self._link_lost(link, code, text)
                return
            try:
                if (link.local_close is None or link.local_close == "drop") and not link.finished:
                    # (a message that reached jambonz before a drop is read before the drop
                    # is noticed: Node handles a connection's events in order)
                    await self._on_frame(link, frame)
            finally:
                if link.stream is not None:
                    link.stream.message_read()

    def _link_lost(self, link: _Link, code: int, reason: str | None) -> None:
        """The socket is gone (either side closed it, or it died): ws-requestor's ``_onClose``."""
        if link.finished:
            return
        link.finished = True
        if self._link is link:
            self._link = None
        kind = link.local_close
        if kind is None:
            self._closes.append(
                CloseRecord(code=code, reason=reason, connection=link.index, time=self._now())
            )
            self._log(link, "event", f"the app closed the socket: {code} {reason or ''}".rstrip())
        elif kind != "end":
            self._log(link, "event", f"socket lost ({kind}, {code})")
        if self._state == "ended" or kind == "end":
            self._notify()
            return
        if kind is None and code == 1000:
            self._graceful = True
            for p in list(self._pending.values()):
                reason_text = (
                    "the app closed the socket with 1000 before acking (jambonz never "
                    "reconnects after a 1000 close)"
                )
                if self._rejects_call(p):
                    p.fail(CallRejected("480 Temporarily Unavailable", detail=reason_text))
                else:
                    p.fail(AckAbandoned(p.msgid, p.message.type, reason_text))
            self._abandoned.update(self._pending)
            self._pending.clear()
            for msg, pending in self._queue:
                if pending is not None:
                    pending.succeed(AckRecord(msgid=msg.msgid, request=msg, delivered=False))
            self._queue.clear()
            if self._reconnect is not None:
                self._reconnect.finish(error=CallOver("the app closed the socket with 1000"))
                self._reconnect = None
            self._notify()
            return
        # Unexpected close (any other code, 1006, 1009): jambonz's _onSocketClosed.
        if self._connections < self._max_reconnects:
            if self._init_msgid is None:
                for p in list(self._pending.values()):
                    p.fail(AckAbandoned(p.msgid, p.message.type, f"the socket closed ({code})"))
                self._abandoned.update(self._pending)
                self._pending.clear()
            auto = link.reconnect_after_drop if kind == "drop" else self._auto_reconnect
            if auto:
                self._schedule_reconnect(self._next_backoff())
        self._notify()

    async def _drop_link(self, link: _Link, reconnect: bool) -> None:
        """The TCP connection dies (the app sees 1006): what the app wrote that had not reached
        the fake is lost; what had reached it is read first, as jambonz's client would have
        (it reads on arrival, in order), then jambonz's close handling runs."""
        if link.finished:
            return
        link.local_close = "drop"
        link.reconnect_after_drop = reconnect
        stream = link.stream
        if stream is not None:
            stream.stop()
            await stream.wait_drained()
        self._link_lost(link, 1006, "dropped by the test")
        if stream is not None:
            await abort_stream(stream)

    def _cut_soon(self, link: _Link, reconnect: bool) -> None:
        """A cut armed with ``FakeCall.cut`` was reached (called synchronously by the stream)."""
        if link.finished:
            return
        self._log(link, "event", "the connection is cut")
        link.local_close = "drop"  # before the reader notices: it is not the app's close
        link.reconnect_after_drop = reconnect
        self._nursery.start_soon(self._drop_link, link, reconnect)

    def _next_backoff(self) -> float:
        delay = self._backoff
        self._backoff = delay * 2 if delay < 2 else delay + 2
        return delay

    def _schedule_reconnect(self, delay: float) -> _Cycle:
        if self._reconnect is not None:
            return self._reconnect
        cycle = _Cycle()
        self._reconnect = self._last_cycle = cycle
        self._log(None, "event", f"reconnecting in {delay * 1000:.0f} ms")
        self._nursery.start_soon(self._run_cycle, cycle, delay)
        return cycle

    async def _run_cycle(self, cycle: _Cycle, delay: float) -> None:
        with cycle.delay_scope:
            await trio.sleep(delay)
        if self._reconnect is not cycle:
            return
        try:
            await self._open_link()
        except ConnectFailed as exc:
            self._reconnect = None
            cycle.finish(error=exc)
            if self._auto_reconnect and self._state != "ended" and not isinstance(exc, HandshakeRejected):
                self._schedule_reconnect(self._next_backoff())
            self._notify()
            return
        self._reconnect = None
        self._awaiting_reconnect_ack = True
        msg = self._message(SessionReconnect, self._session_data or {})
        init = self._pending.get(self._init_msgid) if self._init_msgid is not None else None
        if init is not None:
            # protocol.md §6.2 step 6: the unacked session:new is re-keyed to this msgid and
            # the session:reconnect itself gets no timer.
            del self._pending[init.msgid]
            init.watchdog.cancel()
            init.msgid, init.rekeyed = msg.msgid, True
            self._pending[msg.msgid] = init
            self._init_msgid = msg.msgid
            self._held_for_good = True  # ws-requestor.js:244-261: never cleared on this path
            await self._transmit(msg, None)
            self._start_watchdog(init, self._ack_timeout)
            p = init
        else:
            p = _Pending(msg)
            await self._transmit(msg, p)
        p.waiters += 1
        try:
            await self._wait_done(p)
        finally:
            p.waiters -= 1
        if p.error is not None:
            cycle.finish(error=p.error, violation=p.violation)
            if cycle.waiters == 0 and p.waiters == 0:
                self._disown(p.violation)  # nobody to tell: report at the next call
        else:
            assert p.record is not None
            self._awaiting_reconnect_ack = False
            if not p.rekeyed:
                self._held_for_good = False  # an ordinary reconnect clears it (:299-311)
            cycle.finish(record=p.record)
            await self._flush_queue()
        self._notify()

    async def _wait_done(self, p: _Pending) -> None:
        while not p.done:
            event = self._changed
            await event.wait()

    # -- inbound (implemented in _inbound.py) ----------------------------------------------

    async def _on_frame(self, link: _Link, frame: str | bytes) -> None:
        raise NotImplementedError
