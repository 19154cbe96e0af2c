"""Write a call as straight-line trio code: ``await convo.say(...)``, ``await convo.gather(...)``.

Built only on the public :class:`~jambonz_trio.Call` API. Each operation sends its verbs the
right way for the moment - as the answer to the request jambonz is waiting on (the
``session:new``, or the hook that ended the previous operation), else as a ``redirect`` command -
and returns when the verb is done: its action hook for verbs that have one (``gather``,
``dial``, ``play``, ``llm``), else the ``verb:status`` ``finished`` event jambonz sends once
``notifyEvents`` is on (the conversation turns it on in its first answer).

Hooks and verb ids are named by the library (``/jt/...``, ``jt-N``); apps never name them.
Events the conversation does not consume (``call:status``, reconnects, other hooks...) are
available from :meth:`Conversation.next_event`; so are, if the gather asks
(``early_turns=True``), the early turn reports of a ``deepgramflux`` gather
(``EagerEndOfTurn`` / ``TurnResumed``: FS v0.9.8 ``lib/tasks/gather.js:1115-1118`` calls the
actionHook for them while the gather runs on), which the conversation answers at once and
never takes for the gather's result.

Cancellation: cancelling an operation (a ``move_on_after`` around a ``gather``) kills the
running verb with a ``redirect`` to an empty program, so the next operation runs at once;
the cancelled operation's late result, if jambonz still sends one, is dropped. While the socket
is down nothing is killed: the cancelled operation is never sent again after the reconnect, and
the next operation's verbs replace the program instead of being appended to it (as they do
after a kill the socket dropped under: it may have died in flight).

Interruption from outside: a command that replaces the call's program, sent by another task
(``call.redirect(verbs)``...) while an operation waits, makes that operation raise
:class:`~jambonz_trio.OperationInterrupted` at once; so does jambonz reporting the operation's
verb ``finished`` without its action hook (it was killed: FS v0.9.8 ``lib/tasks/gather.js:354-365``
resolves a killed gather without calling its actionHook, and the session loop still reports
it ``finished``, ``lib/session/call-session.js:1378-1380``).
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import attrs
import trio

from ._audio import AudioStream
from ._audio_listen import listen_verb, open_listen
from ._call import AckOutcome, Call, engine_of
from ._engine import command_origin, watch_program
from ._errors import (
    CallClosed,
    JambonzTrioError,
    ListenConnectFailed,
    ListenTimeout,
    LocalProtocolError,
    NotDelivered,
    OperationInterrupted,
)
from ._events import AckUnconfirmed, CommandUnconfirmed, Event, HookAbandoned
from ._log import CallLog, get_logger
from ._protocol._calldata import DialResult, GatherResult, LlmResult, ToolCall
from ._protocol._messages import JambonzMessage, LlmEvent, LlmToolCall, SessionReconnect, VerbHook, VerbStatus
from ._protocol._outbound import Command, RedirectCommand
from ._protocol._state import ConnState, early_turn
from ._protocol._verbs import (
    Config,
    Dial,
    Gather,
    Hangup,
    Llm,
    Pause,
    Play,
    Recognizer,
    Say,
    Synthesizer,
    Target,
)
from ._protocol._verbs_base import Verb
from ._public import NoPublicConstructor, create, refuse_own_options

__all__ = ["Conversation", "PlayResult", "ToolHandler", "open_conversation"]

log = get_logger("jambonz_trio.conversation")

_PREFIX = "/jt/"

#: ``async def on_tool(tool_call) -> dict``: returns the vendor-shaped ``llm:tool-output`` data.
ToolHandler = Callable[[ToolCall], Awaitable[dict[str, Any]]]
LlmEventHandler = Callable[[LlmEvent], Awaitable[None]]

_OWN_HOOK = "the conversation sets the verb's action hook itself"
_OWN_ID = "the conversation sets the verb's id itself"
#: Per operation with ``**options``: the verb fields it sets itself, and what to pass instead.
_SET_BY_OPERATION: dict[str, dict[str, str]] = {
    "gather": {
        "timeout": "pass input_timeout= (the gather verb's timeout)",
        "say": "pass the prompt's text as the first argument",
        "action_hook": _OWN_HOOK,
        "id": _OWN_ID,
    },
    "dial": {
        "timeout": "pass ring_timeout= (the dial verb's timeout)",
        "target": "pass the targets as positional arguments",
        "action_hook": _OWN_HOOK,
        "id": _OWN_ID,
    },
    "listen": {"action_hook": _OWN_HOOK, "id": _OWN_ID},
}


#: Tool handlers one conversation runs at once. A realtime model calls a few tools in
#: parallel at most (OpenAI's parallel function calls, Google's ``function_calls`` list).
DEFAULT_MAX_TOOL_CALLS = 8
#: Tool calls waiting for a free handler slot; past it a tool call is dropped (counted).
DEFAULT_MAX_QUEUED_TOOL_CALLS = 32
#: ``llm:event`` messages waiting for the ``on_event`` callback; past it they are dropped.
DEFAULT_MAX_QUEUED_LLM_EVENTS = 256


@attrs.frozen(kw_only=True)
class PlayResult:
    """The result of :meth:`Conversation.play` (``play`` actionHook data)."""

    reason: str | None
    playback_seconds: float | None
    raw: dict[str, Any] = attrs.field(repr=False, eq=False)


class _Op:
    """One operation waiting for its completion signal."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.done = trio.Event()
        self.message: JambonzMessage | None = None
        self.answerable = False
        #: how many foreign program replacements had gone out when the result came
        self.replacements = 0
        self.interrupted = False
        self.interrupted_by: Command | None = None
        #: a gather's early turn reports go to :meth:`Conversation.next_event` (else dropped)
        self.early_turns = False
        #: replays of its program under way (cancelled once the operation is over)
        self.replays: list[trio.CancelScope] = []


class Conversation(metaclass=NoPublicConstructor):
    """Straight-line control of one call. Get one from :func:`open_conversation`.

    Operations run one at a time (a lock enforces it) and each is a checkpoint that blocks until
    its verb is done (:meth:`run` only until its verbs are sent). All raise
    :class:`~jambonz_trio.CallClosed` if the call ends first, and those that wait for their verb
    :class:`~jambonz_trio.OperationInterrupted` when another task replaces the program
    meanwhile; sending raises as :meth:`Call.ack` / :meth:`Call.send_command` do. The caller
    owns every timeout (``trio.fail_after``): cancelling an operation kills its verb.
    Commands (``mute``, ``whisper``...) stay available on :attr:`call`.

    Attributes:
        tool_calls_dropped: ``llm:tool-call`` messages dropped because ``max_tool_calls``
            handlers ran and ``max_queued_tool_calls`` more waited (see :meth:`llm`).
        llm_events_dropped: ``llm:event`` messages dropped because ``max_queued_llm_events``
            waited for the ``on_event`` callback.
    """

    _FACTORY = "open_conversation(call)"

    def __init__(
        self,
        call: Call,
        read_event: Callable[[], Awaitable[Event]],
        *,
        max_tool_calls: int = DEFAULT_MAX_TOOL_CALLS,
        max_queued_tool_calls: int = DEFAULT_MAX_QUEUED_TOOL_CALLS,
        max_queued_llm_events: int = DEFAULT_MAX_QUEUED_LLM_EVENTS,
    ) -> None:
        if max_tool_calls < 1:
            raise ValueError("max_tool_calls must be at least 1")
        if max_queued_tool_calls < 0 or max_queued_llm_events < 0:
            raise ValueError("max_queued_tool_calls and max_queued_llm_events must not be negative")
        self.call = call
        self._read_event = read_event
        self._ids = itertools.count(1)
        self._lock = trio.Lock()
        #: the request jambonz waits on that the next operation may answer
        self._answerable: JambonzMessage | None = call.session if call.awaiting_ack(call.session) else None
        #: program-replacing commands other tasks sent (see :meth:`_program_replaced`)
        self._replacements = 0
        #: ``_replacements`` when :attr:`_answerable` arrived
        self._answerable_at = 0
        #: the operation in progress (operations run one at a time)
        self._current: _Op | None = None
        #: the operations waiting, by their verb's id (``jt-N``): those completed by their
        #: action hook, and (:attr:`_by_id`) those by ``verb:status`` ``finished``. A program
        #: holding such a verb is that operation's: sent again if a drop may have lost it while
        #: the operation waits, never once it is over (its id is then no longer here)
        self._hook_ids: dict[str, _Op] = {}
        #: the last kill since the last program went out (``None``: none): the
        #: ``reconnect_count`` of the socket it was written on, ``-1`` if the socket was down
        #: (nothing was sent). See :meth:`_kill_lost`.
        self._killed_on: int | None = None
        self._events_configured = False
        self._by_hook: dict[str, _Op] = {}
        self._by_id: dict[str, _Op] = {}
        self._closed = False
        self._send_other, self._recv_other = trio.open_memory_channel[Event](call.config.event_queue_size)
        self._started: set[str] = set()
        self._start_seen = trio.Event()
        self._tool_handlers: dict[str, ToolHandler] = {}
        self._llm_events: dict[str, LlmEventHandler] = {}
        # LLM work, bounded: tool handlers in flight (each worker drains the FIFO before it
        # ends), tool calls waiting with their deadline, and llm:event callbacks (one at a time)
        self._max_tools = max_tool_calls
        self._max_queued_tools = max_queued_tool_calls
        self._max_queued_events = max_queued_llm_events
        self._tools_running = 0
        self._tool_queue: deque[tuple[ToolHandler, LlmToolCall, float]] = deque()
        self._event_queue: deque[tuple[LlmEventHandler, LlmEvent]] | None = None
        self.tool_calls_dropped = 0
        self.llm_events_dropped = 0
        self._nursery: trio.Nursery | None = None
        #: drops of a full event queue are repeated at the peer's will: rate-limited
        self._log = CallLog(
            log, call.call_sid, trio.current_time, account_sid=call.account_sid, path=call.path
        )

    # -- events the conversation does not consume ---------------------------------------------

    async def next_event(self) -> Event:
        """The next event no operation consumed (``call:status``, reconnects, foreign hooks).

        Also, for a ``gather(..., early_turns=True)``, a ``deepgramflux`` gather's early turn
        reports (``EagerEndOfTurn`` / ``TurnResumed`` hooks), already answered by the
        conversation.

        Raises:
            CallClosed: the call ended and every such event was returned.
        """
        try:
            return await self._recv_other.receive()
        except trio.EndOfChannel:
            raise CallClosed("call ended") from None

    # -- operations ----------------------------------------------------------------------------

    async def say(self, text: str | Sequence[str], *, synthesizer: Synthesizer | None = None) -> None:
        """Speak ``text`` and return when it has been played."""
        await self._until_finished(
            Say(text=text if isinstance(text, str) else list(text), synthesizer=synthesizer)
        )

    async def pause(self, seconds: int) -> None:
        """Play silence for ``seconds``."""
        await self._until_finished(Pause(length=seconds))

    async def play(self, url: str | Sequence[str], *, loop: int | None = None) -> PlayResult:
        """Play audio from ``url`` (or several); returns jambonz's playback report."""
        message = await self._until_hook(
            "play",
            lambda hook, vid: Play(
                url=url if isinstance(url, str) else list(url), loop=loop, action_hook=hook, id=vid
            ),
        )
        data = dict(message.data)
        seconds = data.get("playback_seconds")
        return PlayResult(
            reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
            playback_seconds=seconds if isinstance(seconds, int | float) else None,
            raw=data,
        )

    async def gather(
        self,
        prompt: str | None = None,
        *,
        input: Sequence[Literal["speech", "digits"]] = ("speech", "digits"),
        input_timeout: float | None = None,
        num_digits: int | None = None,
        finish_on_key: str | None = None,
        recognizer: Recognizer | None = None,
        bargein: bool | None = None,
        early_turns: bool = False,
        **options: Any,
    ) -> GatherResult:
        """Optionally say ``prompt``, then listen; returns what the caller said or pressed.

        ``input_timeout`` is the gather verb's own no-input timeout (seconds of silence jambonz
        waits for); the result's ``transcript`` / ``digits`` are ``None`` then (``timed_out``).
        Extra keyword options are passed to :class:`~jambonz_trio.verbs.Gather`.

        With a ``deepgramflux`` recognizer in eager mode (``eager_eot_threshold``), jambonz
        calls the action hook for each ``EagerEndOfTurn`` / ``TurnResumed`` before the
        result: those hooks are answered at once (jambonz ignores the verbs of that answer)
        and dropped, or with ``early_turns=True`` passed on, already answered, to
        :meth:`next_event` (for speculative work on the likely transcript: read them, or they
        fill its queue); this returns the result.

        Raises:
            TypeError: an option the operation sets itself (``timeout``: use
                ``input_timeout``; ``say``, ``action_hook``, ``id``), before anything is sent.
        """
        refuse_own_options("gather", options, _SET_BY_OPERATION["gather"])
        message = await self._until_hook(
            "gather",
            early_turns=early_turns,
            build=lambda hook, vid: Gather(
                action_hook=hook,
                id=vid,
                input=list(input),
                timeout=input_timeout,
                num_digits=num_digits,
                finish_on_key=finish_on_key,
                recognizer=recognizer,
                bargein=bargein,
                say=Say(text=prompt) if prompt is not None else None,
                **options,
            ),
        )
        return GatherResult.from_data(message.data)

    async def dial(self, *targets: Target, ring_timeout: int | None = None, **options: Any) -> DialResult:
        """Call ``targets`` and bridge the first to answer; returns when the dial ends.

        ``ring_timeout`` is the dial verb's ``timeout`` (seconds to ring).

        Raises:
            TypeError: an option the operation sets itself (``timeout``: use
                ``ring_timeout``; ``target``, ``action_hook``, ``id``), before anything is sent.
        """
        refuse_own_options("dial", options, _SET_BY_OPERATION["dial"])
        message = await self._until_hook(
            "dial",
            lambda hook, vid: Dial(
                target=list(targets), action_hook=hook, id=vid, timeout=ring_timeout, **options
            ),
        )
        return DialResult.from_data(message.data)

    async def llm(
        self,
        verb: Llm,
        *,
        on_tool_call: ToolHandler | None = None,
        on_event: Callable[[LlmEvent], Awaitable[None]] | None = None,
    ) -> LlmResult:
        """Run an ``llm`` verb until the conversation with the model ends.

        Tool calls are answered with ``on_tool_call``'s return value (the vendor's
        ``llm:tool-output`` shape, see :mod:`jambonz_trio.llm`); a handler that raises or has
        not answered 4 ack deadlines (16 s) after the tool call arrived is logged and the model
        gets no answer for that call. At most ``max_tool_calls`` handlers (of
        :func:`open_conversation`) run at once; further tool calls wait, in order, up to
        ``max_queued_tool_calls``; more are dropped (logged, counted in
        :attr:`tool_calls_dropped`). ``on_event`` receives ``llm:event`` messages, one call at
        a time in order; up to ``max_queued_llm_events`` wait while it runs, more are dropped
        (:attr:`llm_events_dropped`). The verb's own hooks are set by the library.
        """
        n = next(self._ids)
        tool_hook = f"{_PREFIX}tool/{n}" if on_tool_call is not None else None
        event_hook = f"{_PREFIX}llm-event/{n}" if on_event is not None else None
        if tool_hook is not None and on_tool_call is not None:
            self._tool_handlers[tool_hook] = on_tool_call
        if event_hook is not None and on_event is not None:
            self._llm_events[event_hook] = on_event
        try:
            message = await self._until_hook(
                "llm",
                lambda hook, vid: attrs.evolve(
                    verb, action_hook=hook, id=vid, tool_hook=tool_hook, event_hook=event_hook
                ),
            )
        finally:
            if tool_hook is not None:
                self._tool_handlers.pop(tool_hook, None)
            if event_hook is not None:
                self._llm_events.pop(event_hook, None)
        return LlmResult.from_data(message.data)

    @asynccontextmanager
    async def listen(
        self, url: str, *, connect_timeout: float = 10.0, **options: Any
    ) -> AsyncIterator[AudioStream]:
        """Run a ``listen`` verb and hand its audio stream to the block:
        ``async with convo.listen("/audio", bidirectional=True) as stream:``.

        ``options`` are the verb options of :meth:`Call.listen <jambonz_trio.Call.listen>`
        (``bidirectional``, ``streaming``, ``sample_rate``, ``mix_type``, ``metadata``, any
        :class:`~jambonz_trio.verbs.Listen` option); the verb's ``actionHook`` is the
        conversation's. Leaving the block closes the stream (jambonz ends the verb) and waits
        for that hook, so the next operation answers it. Other operations wait for the block
        to end (the conversation runs one at a time).

        Raises:
            ListenConnectFailed: (a ``ListenTimeout``) jambonz ended the verb before its audio
                socket reached this app (its actionHook came first: a wrong URL or path, no
                :class:`~jambonz_trio.AudioRoute` there, wrong credentials...); raised at
                once, and the next operation answers that hook.
            ListenTimeout: jambonz did not connect within ``connect_timeout`` seconds (the
                verb is then killed, so the next operation runs at once).
            OperationInterrupted: another task replaced the program while the listen ran
                (jambonz then ended it, which ended the stream).
            CallClosed: the call ended first.
            TypeError: an option the operation sets itself (``action_hook``, ``id``).
        """
        refuse_own_options("listen", options, _SET_BY_OPERATION["listen"])
        n = next(self._ids)
        hook, vid = f"{_PREFIX}listen/{n}", f"jt-{n}"
        verb = listen_verb(url, action_hook=hook, id=vid, **options)
        op = _Op("listen")
        self._by_hook[hook] = op
        self._hook_ids[vid] = op
        try:
            async with self._lock:
                self._current = op
                try:
                    async with open_listen(
                        self.call,
                        verb,
                        send=self._send,
                        connect_timeout=connect_timeout,
                        verb_ended=op.done,
                    ) as stream:
                        yield stream
                except ListenConnectFailed:
                    # the verb is over (nothing to kill): interrupted by another task's
                    # command, the call's end, or its hook (answered by the next operation)
                    if op.interrupted:
                        raise OperationInterrupted(op.kind, op.interrupted_by) from None
                    if op.message is None:
                        raise CallClosed("call ended") from None
                    raise
                except ListenTimeout:
                    await self._kill_current()
                    raise
                await op.done.wait()  # the listen's actionHook (or an interruption, the end)
        finally:
            self._current = None
            self._by_hook.pop(hook, None)
            self._hook_ids.pop(vid, None)
            self._finish(op)
            if op.answerable and op.message is not None and not op.interrupted:
                # the next operation answers the hook, even when the listen is left by an
                # exception (a cancellation landing as the hook came, the block raising after
                # jambonz had ended the verb): the hook was routed to the listen, so nobody
                # else will (:meth:`_release` does, if the conversation ends first)
                self._answerable, self._answerable_at = op.message, op.replacements
        if op.interrupted:
            raise OperationInterrupted(op.kind, op.interrupted_by)
        if op.message is None:
            raise CallClosed("call ended")

    async def hangup(self) -> None:
        """Hang up and return when the call is over."""
        async with self._lock:
            self._current = op = _Op("hangup")
            try:
                await self._send([Hangup()])
                await self.call.wait_closed()
            finally:
                self._current = None
                self._finish(op)

    async def run(self, verbs: Sequence[Verb]) -> None:
        """Send raw verbs (no completion tracking) the right way for the moment."""
        async with self._lock:
            await self._send(list(verbs))

    # -- machinery -------------------------------------------------------------------------------

    async def _until_finished(self, verb: Verb) -> None:
        vid = f"jt-{next(self._ids)}"
        op = _Op(verb.VERB)
        self._by_id[vid] = op
        await self._perform(op, [attrs.evolve(verb, id=vid)], cleanup=lambda: self._by_id.pop(vid, None))

    async def _until_hook(
        self, kind: str, build: Callable[[str, str], Verb], *, early_turns: bool = False
    ) -> JambonzMessage:
        n = next(self._ids)
        hook, vid = f"{_PREFIX}{kind}/{n}", f"jt-{n}"
        op = _Op(kind)
        op.early_turns = early_turns
        self._by_hook[hook] = op
        self._hook_ids[vid] = op

        def cleanup() -> None:
            self._by_hook.pop(hook, None)
            self._hook_ids.pop(vid, None)

        await self._perform(op, [build(hook, vid)], cleanup=cleanup)
        assert op.message is not None
        if op.answerable:
            # the next operation answers this hook's ack
            self._answerable, self._answerable_at = op.message, op.replacements
        return op.message

    async def _perform(self, op: _Op, verbs: list[Verb], *, cleanup: Callable[[], object]) -> None:
        async with self._lock:
            self._current = op
            try:
                await self._send(verbs)
                await op.done.wait()
            except trio.Cancelled:
                cleanup()
                if op.answerable and op.message is not None:
                    # its hook came just before the cancellation (``done`` was already set):
                    # nobody else will answer it, so the kill does
                    self._answerable = op.message
                self._finish(op)  # over: its program is never sent again
                await self._kill_current()
                raise
            finally:
                self._current = None
                cleanup()
                self._finish(op)
            if op.interrupted:
                raise OperationInterrupted(op.kind, op.interrupted_by)
            if self._closed and op.message is None:
                raise CallClosed("call ended")

    def _finish(self, op: _Op) -> None:
        """``op`` is over (done, interrupted, cancelled, failed): what a reconnect would
        replay of it is dropped, and replays under way are cancelled (one still waiting for the
        reconnect is then never sent)."""
        op.done.set()
        for scope in op.replays:
            scope.cancel()

    def _program_replaced(self, command: Command, origin: object | None) -> None:
        """The call tells us a program-replacing command goes out (synchronously, as its
        write starts: what we send after this reaches jambonz after it). Another task's
        interrupts the operation in progress; ours are ignored."""
        if origin is self:
            return
        self._replacements += 1
        op = self._current
        if op is not None and not op.done.is_set():
            op.interrupted, op.interrupted_by = True, command
            op.done.set()

    async def _send(self, verbs: list[Verb]) -> None:
        if self._closed:
            raise CallClosed("call ended")
        if not self._events_configured:
            verbs = [Config(notify_events=True), *verbs]  # verb:status tells when verbs finish
            self._events_configured = True
        request, self._answerable = self._answerable, None
        replace, self._killed_on = self._kill_lost(), None
        token = command_origin.set(self)  # our own redirects interrupt nothing
        try:
            if request is not None and self._answerable_at != self._replacements:
                # Another task replaced the program after this hook came: verbs in its ack
                # would replace that program in turn (FS runs an actionHook ack's verbs with
                # replaceApplication), so release the hook and append instead.
                await self._ack_quietly(request)
                request = None
            if request is not None:
                try:
                    outcome = await self.call.ack(request, verbs)
                except NotDelivered:
                    # the socket died under the answer: jambonz failed that request at the
                    # drop (perhaps after reading it): run the verbs once it reconnects
                    await self._redirect(verbs, queue=False)
                    return
                if isinstance(request, SessionReconnect) and outcome is AckOutcome.ACKED:
                    await self._ensure_started(verbs)
                    return
                if outcome is not AckOutcome.DROPPED:
                    return
            # after a kill jambonz may not have had: replace what it may still run (the
            # cancelled verb) rather than queue behind it
            await self._redirect(verbs, queue=not replace)
        finally:
            command_origin.reset(token)

    async def _redirect(self, verbs: list[Verb], *, queue: bool) -> None:
        """Send ``verbs`` as a ``redirect``; if the socket dies under it, again (replacing)
        once jambonz reconnects. Raises :class:`CallClosed` if the call ends first."""
        for attempt in (1, 2):
            try:
                await self.call.redirect(verbs, queue=queue and attempt == 1)
                return
            except NotDelivered as exc:
                if self.call.closed:
                    raise CallClosed("call ended") from exc
                if not exc.maybe_sent or attempt == 2:
                    raise

    async def _ensure_started(self, verbs: list[Verb]) -> None:
        """A call first seen through ``session:reconnect`` (app restart): jambonz uses the
        ack's verbs only if it still waited for its ``session:new``. If the first verb does not
        start promptly, send the verbs again as a ``redirect``. "Promptly" counts from when
        jambonz can send the ``verb:status``: not while it may hold it after a re-keyed
        ``session:new`` until the library's release close, nor while the socket is down
        (docs/reconnects.md)."""
        ids = {v.id for v in verbs if v.id}
        engine = engine_of(self.call)
        while not ids & self._started and not self._closed:
            with trio.move_on_after(1.0) as scope:
                while not ids & self._started and not self._closed:
                    self._start_seen = trio.Event()
                    await self._start_seen.wait()
            if scope.cancelled_caught and not engine.traffic_held:
                break
        if not ids & self._started and not self._closed:
            await self.call.redirect(verbs, queue=True)

    async def _kill_current(self) -> None:
        """Kill the verb of a cancelled operation, so the next one runs at once."""
        request, self._answerable = self._answerable, None
        if self.call.state is not ConnState.CONNECTED:
            # nothing to kill now; never wait for a reconnect while being cancelled: the next
            # program replaces the verb instead, should jambonz still run it once back
            self._killed_on = -1
            return
        self._killed_on = self.call.reconnect_count  # (replaces an earlier lost kill too)
        token = command_origin.set(self)
        try:
            with trio.CancelScope(shield=True), trio.move_on_after(self.call.config.send_timeout):
                try:
                    if request is not None:
                        await self.call.ack(request)
                    await self.call.redirect([])
                except (JambonzTrioError, LocalProtocolError):
                    log.info("call %s: could not kill the cancelled verb", self.call.call_sid)
        finally:
            command_origin.reset(token)

    def _kill_lost(self) -> bool:
        """Whether the last kill may not have reached jambonz, so the next program must
        replace what it runs instead of queueing behind the cancelled verb: the kill could not
        be sent (the socket was down), or the socket dropped since it was written. A kill that
        dies in flight is reported (``CommandUnconfirmed``) only at the drop, and routed after
        the events ahead of it, perhaps after the next program went out; so every kill
        followed by a drop counts as lost. Replacing after a kill jambonz did read costs
        little: the kill had emptied the program (only verbs another task appended since then
        are replaced too)."""
        killed_on = self._killed_on
        if killed_on is None:
            return False
        return self.call.state is not ConnState.CONNECTED or self.call.reconnect_count != killed_on

    async def _release(self) -> None:
        """The block ends: answer empty the hook kept for a next operation (an empty
        ``verb:hook`` ack: jambonz carries on with its program, docs/protocol.md §3.3), else
        nothing would until the watchdog (the app never saw the hook).
        Shielded and bounded by ``send_timeout``: a block left by cancellation still answers,
        and never waits longer than one write (or at all for a reconnect: the socket being
        down, jambonz failed the request at the drop)."""
        request, self._answerable = self._answerable, None
        if request is None or request is self.call.session or not self.call.awaiting_ack(request):
            return  # (an unanswered session:new stays the app's: an empty answer is invalid)
        with trio.CancelScope(shield=True), trio.move_on_after(self.call.config.send_timeout):
            await self._ack_quietly(request)

    async def _pump(self) -> None:
        """Route the call's events to the waiting operations (runs for the conversation)."""
        try:
            while True:
                event = await self._read_event()
                await self._route(event)
        except CallClosed:
            pass
        finally:
            self._closed = True
            self._send_other.close()
            for op in [*self._by_hook.values(), *self._by_id.values()]:
                op.done.set()

    async def _route(self, event: Event) -> None:
        if isinstance(event, VerbHook) and event.hook and event.hook.startswith(_PREFIX):
            op = self._by_hook.get(event.hook)
            if op is None or op.done.is_set():
                await self._ack_quietly(event)  # a cancelled operation's late result
                return
            if op.kind == "gather" and early_turn(event):
                # not the result: the gather runs on and sends it later. Answered at once
                # (jambonz ignores the ack's verbs, but fails the request unanswered), then
                # handed to the app if it asked (it may start work on the likely
                # transcript); unasked, kept nowhere: one per pause of the caller's speech
                await self._ack_quietly(event)
                if op.early_turns:
                    self._pass_on(event)
                return
            op.message, op.answerable, op.replacements = event, True, self._replacements
            op.done.set()
            return
        if isinstance(event, AckUnconfirmed) and event.verbs and self._ours(event.message):
            # answered just before a drop and not seen read: jambonz may have failed that
            # request without running the verbs; run them (again) once it is back, unless
            # their operation is over (cancelled: the app has moved on), even if this event
            # comes after the cancel (an app cancelling on the Disconnected routed before it)
            op = self._program_op(event.verbs)
            if op is not None or not self._operation_program(event.verbs):
                assert self._nursery is not None
                self._nursery.start_soon(self._replay, list(event.verbs), op)
            return
        if isinstance(event, CommandUnconfirmed) and (op := self._lost_program(event.command)):
            # our redirect was written just before a drop and not seen read: jambonz may never
            # have had it, and the operation would wait for ever; run it (again) once back
            assert self._nursery is not None and isinstance(event.command, RedirectCommand)
            self._nursery.start_soon(self._replay, list(event.command.verbs), op)
            return
        if isinstance(event, HookAbandoned) and (event.message.hook or "").startswith(_PREFIX):
            op = self._by_hook.get(event.message.hook or "")
            if (
                op is not None
                and not op.done.is_set()
                and not (op.kind == "gather" and early_turn(event.message))
            ):
                op.message, op.answerable = event.message, False  # result kept; ack impossible
                op.done.set()
            return
        if isinstance(event, VerbStatus) and (event.verb_id or "").startswith("jt-"):
            if event.event == "starting":
                self._started.add(event.verb_id or "")
                self._start_seen.set()
            if event.event != "finished":
                return
            op = self._by_id.get(event.verb_id or "")
            if op is not None:
                op.message = event
                op.done.set()
                return
            op = self._hook_ids.get(event.verb_id or "")
            if op is not None and not op.done.is_set():
                # finished before its action hook came: the verb was killed (a hook always
                # comes first: the verb awaits its ack before it ends)
                op.interrupted = True
                op.done.set()
            return
        if isinstance(event, LlmToolCall) and event.hook in self._tool_handlers:
            self._tool_call(self._tool_handlers[event.hook], event)
            return
        if isinstance(event, LlmEvent) and event.hook in self._llm_events:
            self._llm_event(self._llm_events[event.hook], event)
            return
        self._pass_on(event)

    def _pass_on(self, event: Event) -> None:
        """Queue ``event`` for :meth:`next_event` (dropped, rate-limited log, when full)."""
        try:
            self._send_other.send_nowait(event)
        except trio.WouldBlock:
            self._log.throttled(
                "queue full",
                logging.WARNING,
                "conversation event queue full; dropped %s",
                type(event).__name__,
            )

    def _lost_program(self, command: Command) -> _Op | None:
        """The operation, still waiting, whose program ``command`` is: a ``redirect`` this
        conversation sent, none of whose verbs jambonz was seen to start (a ``verb:status``
        ``starting`` proves it had the redirect)."""
        if not isinstance(command, RedirectCommand):
            return None
        if any(v.id in self._started for v in command.verbs if v.id):
            return None
        return self._program_op(command.verbs)

    def _program_op(self, verbs: tuple[Verb, ...]) -> _Op | None:
        """The operation, still waiting, whose program ``verbs`` are (it holds its verb)."""
        for verb in verbs:
            op = self._by_id.get(verb.id or "") or self._hook_ids.get(verb.id or "")
            if op is not None and not op.done.is_set():
                return op
        return None

    @staticmethod
    def _operation_program(verbs: tuple[Verb, ...]) -> bool:
        """Whether ``verbs`` are an operation's program, waiting or over (they hold a verb
        with an id this conversation gave, ``jt-N``): a program of no operation (:meth:`run`'s
        verbs, a hang-up) is sent again on its own, as :meth:`Call.ack` advises."""
        return any((v.id or "").startswith("jt-") for v in verbs)

    def _ours(self, message: JambonzMessage) -> bool:
        return message is self.call.session or (message.hook or "").startswith(_PREFIX)

    async def _replay(self, verbs: list[Verb], op: _Op | None) -> None:
        """Send ``verbs`` again, replacing; cancelled when ``op`` (the operation they are the
        program of, if any) is over, so a finished or cancelled operation never runs again."""
        with trio.CancelScope() as scope:
            if op is not None:
                if op.done.is_set():
                    return
                op.replays.append(scope)
            token = command_origin.set(self)  # our own redirect interrupts nothing
            try:
                await self._redirect(verbs, queue=False)
            except JambonzTrioError as exc:
                self._log.info("could not run the unconfirmed answer again: %s", exc)
            finally:
                command_origin.reset(token)
                if op is not None:
                    op.replays.remove(scope)

    async def _ack_quietly(self, event: JambonzMessage) -> None:
        try:
            await self.call.ack(event)
        except JambonzTrioError:
            pass

    def _tool_call(self, handler: ToolHandler, event: LlmToolCall) -> None:
        """Start a handler for ``event`` if fewer than ``max_tool_calls`` run, else queue it
        (bounded: the rest are dropped). Never blocks routing."""
        deadline = trio.current_time() + self.call.config.ack_deadline * 4
        if self._tools_running < self._max_tools:
            assert self._nursery is not None
            self._tools_running += 1  # now, not when the task starts: the next call counts it
            self._nursery.start_soon(self._tool_worker, handler, event, deadline)
        elif len(self._tool_queue) < self._max_queued_tools:
            self._tool_queue.append((handler, event, deadline))
        else:
            # Not answered with an error output: that would turn a flood of tool calls into a
            # flood of writes; no model has this many calls outstanding.
            self.tool_calls_dropped += 1
            self._log.throttled(
                "tool dropped",
                logging.WARNING,
                "%d tool calls in progress and %d waiting; dropped tool call %s",
                self._tools_running,
                len(self._tool_queue),
                event.tool_call.name,
            )

    async def _tool_worker(self, handler: ToolHandler, event: LlmToolCall, deadline: float) -> None:
        """Answer ``event``, then the queued tool calls, one after another, until none wait."""
        try:
            while True:
                await self._answer_tool(handler, event, deadline)
                if not self._tool_queue:
                    return
                handler, event, deadline = self._tool_queue.popleft()
        finally:
            self._tools_running -= 1

    def _llm_event(self, handler: LlmEventHandler, event: LlmEvent) -> None:
        """Hand ``event`` to the ``on_event`` worker (started if none runs), or drop it if
        ``max_queued_llm_events`` already wait. Never blocks routing."""
        queue = self._event_queue
        if queue is None:
            assert self._nursery is not None
            self._event_queue = deque()
            self._nursery.start_soon(self._event_worker, handler, event)
        elif len(queue) < self._max_queued_events:
            queue.append((handler, event))
        else:
            self.llm_events_dropped += 1
            self._log.throttled(
                "llm event dropped",
                logging.WARNING,
                "%d llm:event messages wait for on_event; dropped one",
                len(queue),
            )

    async def _event_worker(self, handler: LlmEventHandler, event: LlmEvent) -> None:
        """Run ``on_event`` for each queued event in order; ends when none waits (an exception
        from the callback ends the conversation's block, as it always did)."""
        queue = self._event_queue
        assert queue is not None
        try:
            while True:
                await handler(event)
                if not queue:
                    return
                handler, event = queue.popleft()
        finally:
            self._event_queue = None

    async def _answer_tool(self, handler: ToolHandler, event: LlmToolCall, deadline: float) -> None:
        tool_call = event.tool_call
        try:
            if trio.current_time() >= deadline:  # waited in the queue until the model gave up
                raise trio.TooSlowError
            with trio.fail_at(deadline):
                output = await handler(tool_call)
            if tool_call.tool_call_id is None:
                raise LocalProtocolError("the tool call has no tool_call_id")
            await self.call.llm_tool_output(tool_call.tool_call_id, output)
        except trio.TooSlowError:
            self._log.throttled(
                "tool timeout", logging.WARNING, "tool %s got no answer in time", tool_call.name
            )
        except (JambonzTrioError, NotDelivered):
            self._log.throttled(
                "tool output", logging.WARNING, "tool output for %s not delivered", tool_call.name
            )
        except Exception:
            log.exception("call %s: tool handler for %s raised", self.call.call_sid, tool_call.name)


@asynccontextmanager
async def open_conversation(
    call: Call,
    *,
    max_tool_calls: int = DEFAULT_MAX_TOOL_CALLS,
    max_queued_tool_calls: int = DEFAULT_MAX_QUEUED_TOOL_CALLS,
    max_queued_llm_events: int = DEFAULT_MAX_QUEUED_LLM_EVENTS,
) -> AsyncIterator[Conversation]:
    """Drive ``call`` as straight-line code for the ``async with`` block.

    The conversation becomes the only reader of the call's events (``call.next_event()``
    raises inside the block; use :meth:`Conversation.next_event`). It answers the call's
    pending ``session:new`` with its first operation's verbs. Leaving the block (even by
    cancellation) answers empty the hook of its last operation, kept for a next one: jambonz
    carries on with its program.

    The ``max_*`` limits bound the LLM work of :meth:`Conversation.llm`: tool handlers run at
    once (8), tool calls waiting for one (32), ``llm:event`` messages waiting for the
    ``on_event`` callback (256); past them messages are dropped and counted.

    Raises:
        LocalProtocolError: the call's events are already reserved by another reader.
        ValueError: ``max_tool_calls`` below 1, or a negative queue size.
    """
    with call.reserve_events() as read_event:
        convo = create(
            Conversation,
            call,
            read_event,
            max_tool_calls=max_tool_calls,
            max_queued_tool_calls=max_queued_tool_calls,
            max_queued_llm_events=max_queued_llm_events,
        )
        try:
            with watch_program(call, convo._program_replaced):
                async with trio.open_nursery() as nursery:
                    convo._nursery = nursery
                    nursery.start_soon(convo._pump)
                    try:
                        yield convo
                    finally:
                        await convo._release()
                        nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # the pump never raises, so a group holds what the block raised: re-raise it as
            # itself (``except CallClosed`` around the block must work)
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            convo._log.summary()
