"""``CallProtocol``: the sans-io state machine of one jambonz call.

It never does I/O and never reads a clock: time comes in as ``now`` (any monotonic float, e.g.
``trio.current_time()``). Frames come in through :meth:`CallProtocol.receive_text`; the text to
send comes out of :meth:`CallProtocol.plan_answer`, :meth:`CallProtocol.ack` and
:meth:`CallProtocol.command`, which check the state *synchronously* and raise
:class:`LocalProtocolError` before anything would be sent. The engine then reports what became
of each answer's write (:meth:`CallProtocol.answer_written`) and of its Pings
(:meth:`CallProtocol.pong_received`).

Every answer decision lives here (``docs/reconnects.md`` explains them):

* the ack book: every msgid jambonz is waiting on, with its deadline (a heap, so a flood of
  requests costs O(log n) each), per socket "generation". When a socket drops, what was owed on
  it is abandoned (jambonz fails those requests at the drop), except an unanswered
  ``session:new``, which jambonz re-keys to the msgid of the next ``session:reconnect`` and
  which this machine re-keys the same way;
* the ``session:new`` answer (:class:`SessionState`): jambonz forgets its ``session:new`` only
  when it *reads* an ack. An answer written on a socket that then drops, with no proof that
  jambonz read it, is sent again as the ack of the next ``session:reconnect``; an answer given
  while the socket is down waits for it;
* the proof of reading: a Pong to a Ping written after the answer (jambonz's websocket library
  handles a connection's frames in order);
* commands are proven read the same way; at a drop, those that were not are reported
  (:meth:`CallProtocol.take_unconfirmed_commands`), and a hang-up among them is sent again
  once jambonz reconnects (it cannot run twice: a hang-up jambonz read ended the call);
* late answers (after the watchdog or a drop ended the request): a ``redirect``, or nothing
  (always nothing for ``dial:confirm``, ``session:adulting``, wait hooks and the other hooks
  whose answer jambonz does not run as the next program: see :meth:`CallProtocol.plan_answer`);
* the reconnect gate: commands wait until the new socket's ``session:reconnect`` is answered;
* the re-key release (:meth:`CallProtocol.rekey_bounce`): after a ``session:reconnect`` that
  found the ``session:new`` answer unproven, jambonz 0.9.8 may hold the call's traffic for
  good; once the answer is proven read on the new socket and jambonz stays quiet, the engine
  closes the socket once so that jambonz's ordinary reconnect releases it. A call first seen
  through a reconnect is suspected too, unless the process that served it before proved an
  answer read (``session_confirmed``, carried by a cluster: :attr:`CallProtocol.session_confirmed`);
* a bound on the requests owed at once: past it, requests are answered at once, empty.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .._errors import AlreadyAcked, LocalProtocolError, RemoteProtocolError
from ._json import DEFAULT_MAX_OUTBOUND_BYTES, dumps_checked, loads_object
from ._messages import (
    DialConfirm,
    JambonzMessage,
    SessionAdulting,
    SessionNew,
    SessionReconnect,
    UnknownMessage,
    VerbHook,
    parse_message,
)
from ._outbound import (
    Ack,
    CallStatusCommand,
    Command,
    ConfHoldStatusCommand,
    ConfParticipantActionCommand,
    RedirectCommand,
    RedirectLegsCommand,
)
from ._verbs import Conference, Config, Dial, Enqueue, Gather, Hangup, Listen, Pause
from ._verbs_base import Hook, HookSpec, Verb

__all__ = [
    "DEFAULT_ACK_DEADLINE",
    "DEFAULT_MAX_OWED_ACKS",
    "AckResult",
    "AnswerPlan",
    "Answerer",
    "CallProtocol",
    "ConnState",
    "Delivery",
    "OwedAck",
    "PlanKind",
    "SentAnswer",
    "SentCommand",
    "SessionState",
    "UnconfirmedCommands",
    "early_turn",
    "ends_the_call",
    "wait_hook_urls",
]

#: Seconds after receipt by which the watchdog answers for the app: 1 s inside jambonz's 5 s.
DEFAULT_ACK_DEADLINE = 4.0

#: Requests owed at once on one call before the library answers new ones at once (empty).
#: jambonz has a handful in flight at most (each one times out after 5 s on its side).
DEFAULT_MAX_OWED_ACKS = 256

_REMEMBERED = 256  # answered / abandoned msgids kept for precise error messages
_MAX_TRACKED = 256  # written answers kept until a Pong proves jambonz read them
_PING_PREFIX = b"jt"

#: Requests whose late answer is dropped, never sent as a ``redirect`` (:meth:`CallProtocol.plan_answer`).
_NO_LATE_REDIRECT = (DialConfirm, SessionAdulting)

#: The wait hooks of a verb: jambonz asks them, while the verb waits, for ``play`` / ``say`` /
#: ``pause`` to loop *inside* it (docs/protocol.md §3.3): conference ``waitHook`` and
#: ``enterHook`` (FS v0.9.8 ``lib/tasks/conference.js:240-252``, ``:340-342``, ``:650-684``),
#: enqueue ``waitHook`` (``lib/tasks/enqueue.js:160-173``, ``:314-384``), dial ``onHoldHook``
#: (``lib/tasks/dial.js:1091-1136``).
_WAIT_HOOKS: dict[type[Verb], tuple[str, ...]] = {
    Conference: ("wait_hook", "enter_hook"),
    Enqueue: ("wait_hook",),
    Dial: ("on_hold_hook",),
}

#: Every hook of a verb, by attribute path, whose answer jambonz does not run as the call's
#: next program (a late answer to it is dropped): the wait hooks (:data:`_WAIT_HOOKS`); a
#: gather's or a config ``bargeIn``'s ``partialResultHook`` (FS v0.9.8
#: ``lib/tasks/gather.js:1108-1113``: the result is not awaited); the hooks of the verbs run
#: nested in another (``lib/tasks/dial.js:127-130``, ``lib/tasks/gather.js:80-83``,
#: ``lib/tasks/listen.js:64``), whose answers are ignored: a nested ``listen``'s or ``play``'s
#: actionHook (``performAction(..., false)``: ``lib/tasks/listen.js:94``,
#: ``lib/tasks/play.js:93-95``, ``lib/tasks/task.js:224-267``), a nested ``transcribe``'s hooks
#: (``lib/tasks/transcribe.js:641``, ``:708``).
_TRANSCRIBE_HOOKS = (("transcribe", "transcription_hook"), ("transcribe", "translation_hook"))
_IGNORED_HOOKS: dict[type[Verb], tuple[tuple[str, ...], ...]] = {
    **{kind: tuple((name,) for name in names) for kind, names in _WAIT_HOOKS.items()},
    Dial: (
        *((name,) for name in _WAIT_HOOKS[Dial]),
        ("listen", "action_hook"),
        *_TRANSCRIBE_HOOKS,
        *(("listen", *path) for path in _TRANSCRIBE_HOOKS),
    ),
    Gather: (("partial_result_hook",), ("play", "action_hook")),
    Listen: _TRANSCRIBE_HOOKS,
    Config: (("barge_in", "partial_result_hook"),),
}

#: ``verb:hook`` data keys only a verb's result (its actionHook) carries, FS v0.9.8: gather
#: and play ``reason`` (``lib/tasks/gather.js:1393-1423``, ``lib/tasks/play.js:93-104``), dial
#: ``dial_call_status`` (``lib/tasks/dial.js:605``, ``:905``), enqueue ``queue_result``
#: (``lib/tasks/enqueue.js:109-115``), dequeue ``dequeue_result`` (``lib/tasks/dequeue.js:32-39``),
#: llm ``completion_reason`` (``lib/tasks/llm/llms/*.js``). A hook known by its url
#: (:data:`_IGNORED_HOOKS`) whose data has one is an action hook that shares the url, unless
#: it is the hook's own result (:data:`_OWN_REASONS`).
_RESULT_KEYS = frozenset(
    {"reason", "dial_call_status", "queue_result", "dequeue_result", "completion_reason"}
)

#: The ``reason`` an ignored hook (:data:`_IGNORED_HOOKS`, by its last attribute) sends as its
#: own result: a nested ``play``'s actionHook reports ``playCompleted`` / ``playFailed``
#: (``lib/tasks/play.js:93-95``, ``:104``). A top-level ``play`` whose actionHook shares that
#: url cannot be told from it: its late answer is dropped too.
_NO_REASONS: frozenset[str] = frozenset()
_OWN_REASONS: dict[tuple[str, ...], frozenset[str]] = {
    ("play", "action_hook"): frozenset({"playCompleted", "playFailed"}),
}

#: The deepgramflux turn events a gather reports before its result (see :func:`early_turn`).
_EARLY_TURN_EVENTS = frozenset({"EagerEndOfTurn", "TurnResumed"})

#: actionHook results of a dialogflow / lex / rasa verb whose eventHook answer replaced the
#: program: sent with ``performAction(..., false)``, their answer is ignored
#: (``lib/tasks/dialogflow/index.js:579-584``, ``lib/tasks/lex.js:342``, ``lib/tasks/rasa.js:102``).
_BOT_RESULTS = ("dialogflow_result", "lex_result", "rasa_result")


def _url(hook: Hook) -> str:
    return hook.url if isinstance(hook, HookSpec) else hook


def wait_hook_urls(verbs: Sequence[Verb]) -> list[str]:
    """The wait hooks (their ``hook`` as jambonz sends it: the url) of ``verbs``."""
    urls: list[str] = []
    for verb in verbs:
        names = _WAIT_HOOKS.get(type(verb))  # one lookup per verb
        if names is not None:
            for name in names:
                value = getattr(verb, name)
                if value is not None:
                    urls.append(_url(value))
    return urls


def _ignored_hook_urls(verbs: Sequence[Verb]) -> list[tuple[str, frozenset[str]]]:
    """The urls of ``verbs``' hooks whose answer jambonz ignores (:data:`_IGNORED_HOOKS`),
    each with the ``reason`` values it reports as its own (:data:`_OWN_REASONS`)."""
    urls: list[tuple[str, frozenset[str]]] = []
    for verb in verbs:
        paths = _IGNORED_HOOKS.get(type(verb))  # one lookup per verb: this runs on every answer
        if paths is not None:
            for path in paths:
                value: Any = verb
                for name in path:
                    value = getattr(value, name)
                    if value is None:
                        break
                else:
                    urls.append((_url(value), _OWN_REASONS.get(path, _NO_REASONS)))
    return urls


def _command_hooks(command: Command) -> list[tuple[str, frozenset[str]]]:
    """The hooks a command gives jambonz whose answers it ignores: its verbs' (see
    :func:`_ignored_hook_urls`), or a conference hold's ``wait_hook``
    (``lib/tasks/conference.js:494-507``, ``:554-567``)."""
    if isinstance(command, RedirectCommand):
        return _ignored_hook_urls(command.verbs)
    if isinstance(command, RedirectLegsCommand):
        return _ignored_hook_urls([*(command.parent_call or ()), *(command.child_call or ())])
    if isinstance(command, ConfHoldStatusCommand | ConfParticipantActionCommand):
        return [(command.wait_hook, _NO_REASONS)] if command.wait_hook is not None else []
    return []


def early_turn(msg: JambonzMessage) -> bool:
    """Whether ``msg`` is a gather's early turn report, not the gather's result.

    A gather whose recognizer is ``deepgramflux`` calls its actionHook for each
    ``EagerEndOfTurn`` / ``TurnResumed`` transcript while it keeps listening, ignoring the
    ack's verbs (FS v0.9.8 ``lib/tasks/gather.js:1115-1118``: ``performAction(..., false)``,
    ``lib/tasks/task.js:224-267``); the result follows in another hook. Such a transcript is
    never final (``is_final`` is ``event === 'EndOfTurn'``,
    ``lib/utils/transcription-utils.js:375-403``); a result is, but for an early hints match
    (``lib/tasks/gather.js:964-971``, enabled by a server setting) on the gather's first
    transcript, which Flux starts with ``StartOfTurn``, never an ``EagerEndOfTurn``.
    """
    return isinstance(msg, VerbHook) and _early_turn_data(msg.data)


def _early_turn_data(data: Mapping[str, Any]) -> bool:
    speech = data.get("speech")
    if data.get("reason") != "speechDetected" or not isinstance(speech, dict):
        return False
    vendor = speech.get("vendor")
    if speech.get("is_final") is True or not isinstance(vendor, dict) or vendor.get("name") != "deepgramflux":
        return False
    evt = vendor.get("evt")
    return isinstance(evt, dict) and evt.get("event") in _EARLY_TURN_EVENTS


def _ignored_by_data(data: Mapping[str, Any]) -> bool:
    """Whether a ``verb:hook``'s data is one only a hook whose answer jambonz ignores (or runs
    inside a verb, or gives another leg) sends, whatever its url (FS v0.9.8):

    * an enqueue ``waitHook``'s queue position (``lib/tasks/enqueue.js:323-336``; its
      actionHook has ``queue_result`` instead, ``:109-115``), a dial ``onHoldHook``'s
      ``hold_detail`` (``lib/tasks/dial.js:1101-1107``): wait hooks (a conference's raw call
      info is not distinctive: only its hook tells);
    * a conference ``statusHook``'s ``conference_sid`` (``lib/tasks/conference.js:715-742``);
    * a deepgramflux gather's early turn report (:func:`early_turn`);
    * the hold / unhold notice sent to the in-dialog hook, ``on_hold``
      (``lib/session/call-session.js:2839-2849``, ``lib/session/siprec-call-session.js:70-81``;
      that hook's INFO / MESSAGE requests replace the program, ``call-session.js:2777-2780``);
    * a dial ``dtmfHook``'s ``dtmf`` (``lib/tasks/dial.js:516``);
    * a ``sip:refer`` ``eventHook``'s ``transfer-status`` (``lib/tasks/sip_refer.js:93-94``);
    * a dialogflow / lex / rasa actionHook's ``redirect`` result (:data:`_BOT_RESULTS`);
    * a dial ``referHook`` asked for a REFER on the parent leg: its verbs become the *child's*
      program (``lib/tasks/dial.js:373-378``, ``:410-435``), so they must not replace the
      parent's; there ``referred_call_sid`` is the child, while a REFER on the child leg names
      the parent (its ``parent_call_sid``), and one outside a dial names none
      (``lib/session/call-session.js:2882-2905``).
    """
    if "reason" in data:  # a verb's result: only an early turn report is not the next program
        return _early_turn_data(data)
    if "hold_detail" in data or "conference_sid" in data or "on_hold" in data or "dtmf" in data:
        return True
    if "queue_position" in data and "queue_result" not in data:
        return True
    if data.get("event") == "transfer-status" or any(data.get(k) == "redirect" for k in _BOT_RESULTS):
        return True
    refer = data.get("refer_details")
    if isinstance(refer, dict):
        referred = refer.get("referred_call_sid")
        return isinstance(referred, str) and referred != data.get("parent_call_sid")
    return False


class ConnState(enum.Enum):
    """Where the call's socket is."""

    IDLE = "idle"  #: no socket yet
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  #: the socket dropped; jambonz may reconnect
    CLOSED = "closed"  #: over; nothing more can be sent


class SessionState(enum.Enum):
    """Where the answer to the call's ``session:new`` is."""

    NONE = "none"  #: no ``session:new`` on this call (yet)
    OWED = "owed"  #: received, not answered yet
    HELD = "held"  #: answered while the socket was down: goes out on the next ``session:reconnect``
    SENT = "sent"  #: written on the live socket; jambonz has not been seen to read it yet
    RESEND = "resend"  #: written, then the socket dropped unproven: sent again on the reconnect
    CONFIRMED = "confirmed"  #: jambonz read it (a Pong answered a Ping written after it)


class Answerer(enum.Enum):
    """Who answered a request."""

    APP = "app"
    WATCHDOG = "watchdog"  #: at the deadline, or at once past the owed bound
    LIBRARY = "library"  #: the library's own ``session:reconnect`` acks


class Delivery(enum.Enum):
    """What the engine's write of a frame did."""

    WRITTEN = "written"
    NOT_WRITTEN = "not_written"  #: certainly not: the socket was already gone
    MAYBE = "maybe"  #: failed half-way


class AckResult(enum.Enum):
    """What became of an answer once its write returned (:meth:`CallProtocol.answer_written`)."""

    SENT = "sent"  #: on the live socket
    DEFERRED = "deferred"  #: a ``session:new`` answer, kept for the next ``session:reconnect``
    LOST = "lost"  #: its socket died: jambonz failed the request (perhaps after reading it)


class PlanKind(enum.Enum):
    """What to do with an answer (:meth:`CallProtocol.plan_answer`)."""

    SEND = "send"  #: write ``text`` now, then report it with ``answer_written``
    HOLD = "hold"  #: kept: goes out as the ack of the next ``session:reconnect``
    REDIRECT = "redirect"  #: too late for an ack: send ``verbs`` as a ``redirect`` command
    #: too late, and empty (or for a ``dial:confirm`` / ``session:adulting``): nothing to send
    DROP = "drop"


@attrs.frozen(kw_only=True)
class AnswerPlan:
    """The decision for one answer."""

    kind: PlanKind
    msgid: str
    text: str | None = None
    verbs: tuple[Verb, ...] = ()
    #: ``SEND`` plans: the request answered, and who answered it (for telemetry)
    owed: OwedAck | None = attrs.field(default=None, repr=False)
    by: Answerer | None = None


@attrs.define(kw_only=True, eq=False)
class OwedAck:
    """One request jambonz is waiting on.

    Attributes:
        msgid: the request's own msgid (what the app answers).
        wire_msgid: the msgid the ack must carry: differs from ``msgid`` once an unanswered
            ``session:new`` was re-keyed to a ``session:reconnect``.
        message: the request.
        received_at: ``now`` at receipt.
        deadline: when the watchdog answers instead of the app.
        generation: the socket it must be answered on.
        optional: ``True`` for an unknown message type (jambonz may not be waiting at all).
        overflow: booked past the owed bound: the library answers it at once.
        held: a ``session:new`` answer waiting for the next ``session:reconnect``.
        held_by: who gave ``held``.
    """

    msgid: str
    wire_msgid: str
    message: JambonzMessage
    received_at: float
    deadline: float
    generation: int
    optional: bool = False
    overflow: bool = False
    held: tuple[Verb, ...] | None = None
    held_by: Answerer | None = None
    heap_key: int = attrs.field(default=0, repr=False)

    @property
    def needs_verbs(self) -> bool:
        """``session:new`` must be answered with a non-empty verb list."""
        return isinstance(self.message, SessionNew)


@attrs.define(kw_only=True, eq=False)
class SentAnswer:
    """An answer rendered for a socket, until jambonz is seen to read it (or the socket dies).

    Attributes:
        owed: the request it answers (``owed.wire_msgid`` is the msgid on the wire).
        verbs: the answer.
        by: who answered.
        generation: the socket it was written on.
        written: its write completed.
        ping: the first Ping written after it (its Pong proves jambonz read the answer).
    """

    owed: OwedAck
    verbs: tuple[Verb, ...]
    by: Answerer
    generation: int
    written: bool = False
    ping: int | None = None

    @property
    def message(self) -> JambonzMessage:
        """The request answered."""
        return self.owed.message


@attrs.define(kw_only=True, eq=False)
class SentCommand:
    """A command written on a socket, until jambonz is seen to read it (or the socket dies).

    Attributes:
        command: the command.
        generation: the socket it was written on.
        ping: the first Ping written after it (its Pong proves jambonz read it).
    """

    command: Command
    generation: int
    ping: int | None = None


@attrs.frozen(kw_only=True)
class UnconfirmedCommands:
    """Commands written on a socket that dropped before jambonz was seen to read them
    (:meth:`CallProtocol.take_unconfirmed_commands`).

    Attributes:
        resend: hang-ups (:func:`ends_the_call`): send them again as soon as the reconnect
            allows commands, before any command queued meanwhile.
        report: the others: jambonz may never have read them; only the app knows whether
            running one twice is worse than not at all.
    """

    resend: tuple[Command, ...] = ()
    report: tuple[Command, ...] = ()


def ends_the_call(command: Command) -> bool:
    """Whether ``command`` only ends the call: ``call:status`` ``completed`` / ``no-answer``,
    or a ``redirect`` to a program that is a single ``hangup``. Such a command is safe to send
    twice: if jambonz read the first, the call is over and it never reconnects."""
    if isinstance(command, CallStatusCommand):
        return command.call_status in ("completed", "no-answer")
    if isinstance(command, RedirectCommand):
        return len(command.verbs) == 1 and isinstance(command.verbs[0], Hangup)
    return False


class CallProtocol:
    """Per-call protocol state: parsing, the ack book, answers and their delivery, reconnects.

    Args:
        ack_deadline: seconds after receipt by which a request counts as overdue.
        max_outbound_bytes: UTF-8 size limit of every frame sent (jambonz's ``maxPayload``);
            ``None`` disables the check.
        ack_unknown_types: record unknown message types that carry a msgid as (optionally) owed,
            so the watchdog answers them (harmless if jambonz was not waiting).
        holding_verbs: what the watchdog answers ``session:new`` with (non-empty).
        max_owed: requests owed at once; past it, new ones are booked as ``overflow``: the
            engine answers them at once (empty), like the watchdog would at the deadline.
        session_confirmed: for a call first seen here through a ``session:reconnect``: the
            process that served it before saw jambonz read an answer of it (a cluster member's
            stored fact, :attr:`session_confirmed`), so that reconnect cannot carry a re-keyed
            ``session:new`` and is not suspected (:attr:`rekey_suspected`). Ignored otherwise.
    """

    # (slots: a live call holds one; a __dict__ of its ~30 fields cost ~1.6 KB: issue 16)
    __slots__ = (
        "_abandoned",
        "_answered",
        "_commands",
        "_first",
        "_gate",
        "_heap",
        "_ignored_hooks",
        "_last_pong",
        "_lost",
        "_lost_commands",
        "_owed",
        "_pings",
        "_read_before",
        "_receipt_ping",
        "_rekey",
        "_rekey_msgid",
        "_rekey_proven",
        "_resend_from",
        "_sent",
        "_seq",
        "_session",
        "_unredirectable",
        "ack_deadline",
        "ack_unknown_types",
        "auto_answered",
        "call_sid",
        "commands_unconfirmed",
        "generation",
        "holding_verbs",
        "max_outbound_bytes",
        "max_owed",
        "session",
        "state",
        "unconfirmed",
    )

    def __init__(
        self,
        *,
        ack_deadline: float = DEFAULT_ACK_DEADLINE,
        max_outbound_bytes: int | None = DEFAULT_MAX_OUTBOUND_BYTES,
        ack_unknown_types: bool = True,
        holding_verbs: Sequence[Verb] = (Pause(length=1),),
        max_owed: int = DEFAULT_MAX_OWED_ACKS,
        session_confirmed: bool = False,
    ) -> None:
        self.ack_deadline = ack_deadline
        self.max_outbound_bytes = max_outbound_bytes
        self.ack_unknown_types = ack_unknown_types
        self.holding_verbs = tuple(holding_verbs)
        self.max_owed = max_owed
        self.state = ConnState.IDLE
        self.generation = 0
        self.call_sid: str | None = None
        self.session = SessionState.NONE
        #: requests the watchdog answered (at the deadline or past the owed bound)
        self.auto_answered = 0
        #: answers written on a socket that dropped before jambonz was seen to read them
        self.unconfirmed = 0
        #: commands written on a socket that dropped before jambonz was seen to read them
        self.commands_unconfirmed = 0
        self._session: OwedAck | None = None  # the session:new request
        self._first: str | None = None  # msgid of the call's first message
        self._gate: str | None = None  # the live socket's session:reconnect, until answered
        self._owed: dict[str, OwedAck] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        # (plain dicts keep their order too, at half an empty OrderedDict's size: issue 16)
        self._answered: dict[str, Answerer] = {}
        self._abandoned: dict[str, None] = {}
        self._unredirectable: dict[str, None] = {}  # late answers to these are dropped
        # hooks the app gave whose answers jambonz ignores, with the reasons they report as their own
        self._ignored_hooks: dict[str, frozenset[str]] = {}
        self._sent: dict[tuple[str, int], SentAnswer] = {}
        self._resend_from: tuple[str, int] | None = None
        self._lost: list[SentAnswer] = []
        self._commands: list[SentCommand] = []  # written on the live socket, unproven, oldest first
        self._lost_commands: list[SentCommand] = []
        self._pings = 0  # Pings numbered on the live socket
        self._last_pong = 0  # the highest of them answered
        self._receipt_ping = 0  # the latest Ping written for a receipt
        # the generation whose session:reconnect found the session:new answer unproven, while
        # jambonz has sent nothing after it (0: none; see rekey_bounce), that reconnect's
        # msgid, and whether the answer on it is proven read
        self._rekey = 0
        self._rekey_msgid: str | None = None
        self._rekey_proven = False
        # jambonz read an answer of this call before this socket's answers (on the process
        # that served it before, or a re-keyed reconnect's answer here): see session_confirmed
        self._read_before = session_confirmed

    # -- socket lifecycle ------------------------------------------------------------------

    def connection_made(self) -> None:
        """A (new) socket is carrying this call."""
        if self.state is ConnState.CLOSED:
            raise LocalProtocolError("the call is closed")
        self.generation += 1
        self.state = ConnState.CONNECTED
        self._lost_commands.extend(self._commands)  # a socket replaced while live
        self._commands.clear()
        self._gate = None
        self._pings = self._last_pong = self._receipt_ping = 0

    def connection_lost(self) -> list[OwedAck]:
        """The socket dropped. Returns the requests abandoned with it (unanswered).

        An unanswered ``session:new`` is *not* abandoned: it stays owed, to be answered on the
        ``session:reconnect`` msgid of the next socket; nor is a ``session:new`` answer that
        jambonz was not seen to read: it is sent again there. Other answers written on this
        socket and not proven read are collected for :meth:`take_unconfirmed`.
        """
        if self.state is not ConnState.CONNECTED:
            return []
        self.state = ConnState.DISCONNECTED
        self._rekey = 0  # the next session:reconnect tells anew
        abandoned = []
        for key, owed in list(self._owed.items()):
            if owed.needs_verbs:
                continue
            del self._owed[key]
            self._abandon(owed.message)
            abandoned.append(owed)
        for sent_key, sent in list(self._sent.items()):
            if sent.generation != self.generation:
                continue
            if sent.owed.needs_verbs:
                self._hold(sent, certain=False)
                if sent.written:
                    del self._sent[sent_key]
                # else: its write is still running; answer_written() settles it
            elif sent.written:
                del self._sent[sent_key]
                if sent.by is Answerer.APP:  # (the library's own are kept only for rekey_bounce)
                    self.unconfirmed += 1
                    self._lost.append(sent)
        self._lost_commands.extend(self._commands)  # all on this socket (the only live one)
        self._commands.clear()
        return abandoned

    def close(self) -> list[OwedAck]:
        """The call is over. Returns what was still owed. Idempotent."""
        self.state = ConnState.CLOSED
        owed = list(self._owed.values())
        self._owed.clear()
        self._heap.clear()
        self._sent.clear()
        self._lost.clear()
        self._commands.clear()
        self._lost_commands.clear()
        return owed

    # -- inbound ---------------------------------------------------------------------------

    def receive_text(self, text: str, now: float) -> JambonzMessage:
        """Parse one text frame and book it if jambonz waits for an answer.

        Raises:
            RemoteProtocolError: the frame is not a valid jambonz message (bad JSON, not an
                object, bad envelope) or repeats a msgid still owed. Nothing else escapes.
        """
        msg = parse_message(loads_object(text))
        self.receive_message(msg, now)
        return msg

    def receive_message(self, msg: JambonzMessage, now: float) -> None:
        """Book an already parsed message (see :meth:`receive_text`)."""
        first = self._first is None
        if first:
            self._first = msg.msgid
        if msg.call_sid is not None and self.call_sid is None:
            self.call_sid = msg.call_sid
        if isinstance(msg, SessionNew) and self.call_sid is None:
            self.call_sid = msg.call.call_sid
        if self._rekey == self.generation:
            self._rekey = 0  # jambonz sends: its queue flows (see rekey_bounce)
        optional = isinstance(msg, UnknownMessage)
        if not (msg.NEEDS_ACK or (optional and msg.msgid and self.ack_unknown_types)):
            return
        if self.state is ConnState.DISCONNECTED:
            # read from a socket already considered lost: jambonz failed it at the drop
            self._abandon(msg)
            return
        if isinstance(msg, SessionReconnect) and first and not self._read_before:
            # a call first seen on a reconnect (this process never saw its session:new): its
            # answer may be the re-keyed session:new answer too (rekey_suspected), unless the
            # process that served it saw jambonz read an answer (session_confirmed)
            self._suspect_rekey(msg.msgid)
        if isinstance(msg, SessionReconnect) and not first:
            self._gate = msg.msgid  # commands wait until this is answered
            pending = self._session if self.session in _SESSION_PENDING else None
            if pending is not None and pending.msgid in self._owed:
                # jambonz re-keyed its session:new to this msgid if it had not read an answer
                # (docs/reconnects.md): the answer goes on this msgid.
                pending.wire_msgid = msg.msgid
                pending.generation = self.generation
                pending.deadline = now + self.ack_deadline
                self._push(pending)
                self._suspect_rekey(msg.msgid)  # jambonz may hold what follows (rekey_bounce)
                return
        if msg.msgid in self._owed:
            raise RemoteProtocolError(f"duplicate msgid {msg.msgid!r} while still owed")
        overflow = len(self._owed) >= self.max_owed
        owed = OwedAck(
            msgid=msg.msgid,
            wire_msgid=msg.msgid,
            message=msg,
            received_at=now,
            deadline=now if overflow else now + self.ack_deadline,
            generation=self.generation,
            optional=optional,
            overflow=overflow,
        )
        self._owed[msg.msgid] = owed
        self._push(owed)
        if isinstance(msg, SessionNew) and self._session is None:
            self._session = owed
            self.session = SessionState.OWED

    def _may_be_late(self, msg: JambonzMessage) -> None:
        """The request ``msg`` ended without the app's answer (the watchdog answered it, or
        its socket dropped): note whether a late answer to it must be dropped rather than
        sent as a ``redirect`` (see :meth:`plan_answer`). Decided here, not at receipt: a late
        answer is rare, every request is not."""
        if isinstance(msg, _NO_LATE_REDIRECT) or (isinstance(msg, VerbHook) and self._ignored_hook(msg)):
            self._remember(self._unredirectable, msg.msgid)

    def _ignored_hook(self, msg: VerbHook) -> bool:
        """Whether jambonz does not run ``msg``'s answer as the call's next program: known by
        its data (:func:`_ignored_by_data`), or by its url among the hooks the app gave
        (:data:`_IGNORED_HOOKS`) unless its data is a verb's result (:data:`_RESULT_KEYS`: an
        action hook sharing that url; a conference's actionHook, which reports nothing, cannot
        be told from its wait hook at the same url: its late answer is dropped), or that result
        is the hook's own (:data:`_OWN_REASONS`: a nested ``play``'s ``playCompleted``); or
        it comes from the dialled leg's confirm program (:meth:`_confirm_program_hook`)."""
        data = msg.data
        if _ignored_by_data(data) or self._confirm_program_hook(data):
            return True
        own = self._ignored_hooks.get(msg.hook) if msg.hook is not None else None
        if own is None:
            return False
        results = _RESULT_KEYS.intersection(data)
        return not results or (results == {"reason"} and data["reason"] in own)

    def _confirm_program_hook(self, data: Mapping[str, Any]) -> bool:
        """Whether a ``verb:hook``'s data is the call info of a leg this call dialled (its
        ``parent_call_sid`` set, its ``call_sid`` not this call's), other than for a REFER:
        a hook of that leg's ``confirmHook`` program, which runs in a ``ConfirmCallSession``
        on the caller's requestor (FS v0.9.8 ``lib/utils/place-outdial.js:390-420``,
        ``:63-66``; ``lib/tasks/task.js:224-227``). Its answer replaces the confirm program;
        as a ``redirect`` it would replace the caller's and kill the ``dial``
        (``lib/session/call-session.js:2280-2289``, ``:2119-2125``). A REFER on that leg asks
        for the caller's next program (``lib/tasks/dial.js:373-378``, ``:410-416``)."""
        sid = data.get("call_sid")
        return (
            "parent_call_sid" in data
            and "refer_details" not in data
            and sid is not None
            and self.call_sid is not None
            and sid != self.call_sid
        )

    def _abandon(self, msg: JambonzMessage) -> None:
        self._remember(self._abandoned, msg.msgid)
        self._may_be_late(msg)

    def _note_ignored_hooks(self, urls: Sequence[tuple[str, frozenset[str]]]) -> None:
        hooks = self._ignored_hooks
        for url, reasons in urls:
            known = hooks.get(url)  # (the same url given for another hook keeps its reasons)
            self._remember(hooks, url, reasons if not known else known | reasons)

    def _suspect_rekey(self, msgid: str) -> None:
        self._rekey, self._rekey_msgid, self._rekey_proven = self.generation, msgid, False

    def _proven(self, sent: SentAnswer) -> None:
        """``sent`` is proven read (a Pong)."""
        if sent.owed.needs_verbs and self.session is SessionState.SENT:
            self.session = SessionState.CONFIRMED
        if sent.generation == self._rekey and sent.owed.wire_msgid == self._rekey_msgid:
            self._rekey_proven = self._read_before = True

    # -- queries ---------------------------------------------------------------------------

    def is_owed(self, msgid: str) -> bool:
        """Whether ``msgid`` is a request jambonz may still be waiting on (including a
        ``session:new`` whose answer waits for the reconnect)."""
        return msgid in self._owed

    def owed(self) -> list[OwedAck]:
        """Every request still owed an answer, oldest first."""
        return list(self._owed.values())

    @property
    def owed_count(self) -> int:
        """How many requests are owed (O(1))."""
        return len(self._owed)

    def get_owed(self, msgid: str) -> OwedAck | None:
        """The owed request ``msgid``, or ``None``."""
        return self._owed.get(msgid)

    @property
    def session_request(self) -> OwedAck | None:
        """The ``session:new`` request, while jambonz may still wait for its answer."""
        s = self._session
        return s if s is not None and s.msgid in self._owed else None

    @property
    def session_answered(self) -> bool:
        """Whether commands may follow: no ``session:new``, or its answer went out."""
        return self.session not in (SessionState.OWED, SessionState.HELD)

    def can_answer_now(self, msgid: str) -> bool:
        """Owed, and its socket is the live one (so :meth:`ack` would not raise for state)."""
        owed = self._owed.get(msgid)
        return owed is not None and self._answerable(owed)

    def _answerable(self, owed: OwedAck) -> bool:
        return self.state is ConnState.CONNECTED and owed.generation == self.generation

    def was_abandoned(self, msgid: str) -> bool:
        """Whether ``msgid`` was owed when its socket dropped (jambonz failed it then)."""
        return msgid in self._abandoned

    def answered_by(self, msgid: str) -> Answerer | None:
        """Who answered ``msgid`` (among the latest answers), or ``None``."""
        return self._answered.get(msgid)

    @property
    def commands_flow(self) -> bool:
        """Commands may be written now: connected, and this socket's ``session:reconnect`` (if
        any) answered, so they arrive after it (else they wait for the reconnect)."""
        return self.state is ConnState.CONNECTED and self._gate is None

    # -- deadlines (a heap with lazy deletion: O(log n) per request) ----------------------

    def _push(self, owed: OwedAck) -> None:
        self._seq += 1
        owed.heap_key = self._seq
        heapq.heappush(self._heap, (owed.deadline, self._seq, owed.msgid))
        if len(self._heap) > 2 * len(self._owed) + 64:
            live = [e for e in self._heap if self._valid(e)]
            heapq.heapify(live)
            self._heap = live

    def _valid(self, entry: tuple[float, int, str]) -> bool:
        owed = self._owed.get(entry[2])
        return owed is not None and owed.heap_key == entry[1] and owed.generation == self.generation

    def next_deadline(self) -> float | None:
        """The earliest deadline among requests answerable on the live socket, or ``None``."""
        if self.state is not ConnState.CONNECTED:
            return None
        heap = self._heap
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def overdue(self, now: float) -> list[OwedAck]:
        """Requests on the live socket whose deadline is ``<= now``, earliest deadline first
        (arrival order among equal deadlines)."""
        if self.state is not ConnState.CONNECTED:
            return []
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._valid(entry):
                due.append(entry)
        for entry in due:
            heapq.heappush(heap, entry)
        return [self._owed[e[2]] for e in due]

    # -- answers ---------------------------------------------------------------------------

    def plan_answer(self, msgid: str, verbs: Sequence[Verb] = (), *, raise_late: bool = False) -> AnswerPlan:
        """Decide what to do with the app's answer ``verbs`` to request ``msgid``.

        ``SEND``: write ``plan.text`` now (the book is already updated), then report the write
        with :meth:`answer_written`. ``HOLD``: a ``session:new`` answer given while the socket
        is down, sent on the next ``session:reconnect``. ``REDIRECT`` / ``DROP``: the watchdog
        or a drop already ended the request (``raise_late``: raise instead).

        A late answer to ``dial:confirm``, ``session:adulting``, a wait hook, or a hook whose
        answer jambonz does not run as the call's next program (a conference ``statusHook``, a
        ``partialResultHook``, a deepgramflux early turn report, a nested verb's hook...: see
        :func:`_ignored_by_data` and :data:`_IGNORED_HOOKS`) is always ``DROP``, verbs or not,
        ``raise_late`` or not: a ``redirect`` would misplace its verbs, or replace the program
        and kill the verb that runs on, where an on-time answer's verbs are ignored.
        A wait hook's verbs play inside the verb that waits (:data:`_WAIT_HOOKS`); as a
        ``redirect`` they would replace the program and kill that very verb
        (``lib/session/call-session.js:2280-2289``, ``:2119-2125``): the caller would leave the
        queue, the conference or the held dial. ``dial:confirm``
        verbs are for the *called* party, run before the bridge (FS v0.9.8
        ``lib/utils/place-outdial.js:389-426``); once the request ended, jambonz accepted the
        callee (an empty or missing answer, ``:393-396``) or declined it (a failure,
        ``:429-435``), and a ``redirect`` on that socket goes to the *caller's* session (the
        confirm request uses the parent's requestor, ``:63-66``; a confirm session takes no
        commands, ``lib/session/call-session.js:137``), which replaces its program
        (``:2280-2288``) and kills its current task, the ``dial`` (``:2119-2125``): the callee
        is hung up and the caller hears the screening prompt. ``session:adulting``: jambonz
        ignores even an on-time answer's verbs (the child's program came with the command that
        promoted it; the request's result is not used, ``lib/utils/place-outdial.js:491-496``),
        so a late one must not replace that program either.

        Raises:
            AlreadyAcked: the app answered this request before (or ``raise_late``).
            LocalProtocolError: an unknown msgid, a message jambonz does not wait on, an empty
                ``session:new`` answer, a request abandoned while the socket is down, the
                call is closed, or the frame would be too large (``MessageTooLarge``).
        """
        verbs = tuple(verbs)
        if self.state is ConnState.CLOSED:
            raise LocalProtocolError("the call is closed")
        owed = self._owed.get(msgid)
        if owed is not None:
            if owed.held is not None:
                if owed.held_by is not Answerer.WATCHDOG:
                    raise AlreadyAcked(f"msgid {msgid!r} already has an answer waiting for the reconnect")
                if self.session is not SessionState.HELD:  # the holding verbs may have arrived
                    return self._late(msgid, verbs, raise_late)
                # the watchdog's answer certainly never left: the app's replaces it
            if self._answerable(owed):
                return self._send(owed, verbs, Answerer.APP)
            if owed.needs_verbs:
                if not verbs:
                    raise LocalProtocolError("session:new must be answered with at least one verb")
                self.render(Ack(msgid=owed.wire_msgid, verbs=verbs).to_wire())  # size check now
                owed.held, owed.held_by = verbs, Answerer.APP
                self.session = SessionState.HELD
                return AnswerPlan(kind=PlanKind.HOLD, msgid=msgid, verbs=verbs)
            raise LocalProtocolError("the call's socket is down; this request was abandoned")
        if self._answered.get(msgid) is Answerer.WATCHDOG or msgid in self._abandoned:
            return self._late(msgid, verbs, raise_late)
        self.ack(msgid, verbs)  # raises the precise LocalProtocolError
        raise AssertionError("unreachable")  # pragma: no cover

    def _late(self, msgid: str, verbs: tuple[Verb, ...], raise_late: bool) -> AnswerPlan:
        if msgid in self._unredirectable:
            return AnswerPlan(kind=PlanKind.DROP, msgid=msgid)  # see plan_answer
        if raise_late:
            raise AlreadyAcked(f"msgid {msgid!r} was already answered by the watchdog")
        if not verbs:
            return AnswerPlan(kind=PlanKind.DROP, msgid=msgid)
        return AnswerPlan(kind=PlanKind.REDIRECT, msgid=msgid, verbs=verbs)

    def auto_answer(self, owed: OwedAck) -> AnswerPlan:
        """The watchdog's answer to an overdue (or ``overflow``) request, to write now: a held
        ``session:new`` answer, else the holding verbs for ``session:new`` and a first-message
        ``session:reconnect``, else empty.

        Raises:
            LocalProtocolError: not answerable now, or the holding verbs cannot be sent.
        """
        if owed.held is not None:
            verbs, by = owed.held, owed.held_by or Answerer.WATCHDOG
        elif owed.needs_verbs or (isinstance(owed.message, SessionReconnect) and owed.msgid == self._first):
            verbs, by = self.holding_verbs, Answerer.WATCHDOG
        else:
            verbs, by = (), Answerer.WATCHDOG
        try:
            plan = self._send(owed, verbs, by)
        except LocalProtocolError:
            owed.heap_key = 0  # never overdue again: jambonz times it out (the engine logs it)
            raise
        if by is Answerer.WATCHDOG:
            self.auto_answered += 1
            self._may_be_late(owed.message)
        return plan

    def reconnect_answer(self, msgid: str) -> AnswerPlan | None:
        """The library's answer to the live socket's ``session:reconnect`` ``msgid``, to write
        now: the ``session:new`` answer again when jambonz may not have read it (it is the
        answer to its re-keyed ``session:new`` then, and ignored otherwise), else empty.
        ``None`` when the app (or the watchdog) must answer: the re-keyed ``session:new`` has
        no answer yet.
        """
        pending = self.session_request
        if pending is not None and pending.wire_msgid == msgid and pending.generation == self.generation:
            if pending.held is None:
                return None
            return self._send(pending, pending.held, pending.held_by or Answerer.APP)
        owed = self._owed.get(msgid)
        if owed is None or not self._answerable(owed):
            return None
        return self._send(owed, (), Answerer.LIBRARY)

    # -- the re-key release -----------------------------------------------------------------

    @property
    def session_confirmed(self) -> bool:
        """Whether jambonz is known to have read an answer of this call: the ``session:new``
        answer here (:attr:`SessionState.CONFIRMED`), the answer to a ``session:reconnect``
        suspected of carrying the re-keyed ``session:new``, or (the constructor's
        ``session_confirmed``) an answer on the process that served the call before. jambonz
        forgets its ``session:new`` at the first ack it reads, whichever (``_recvAck`` clears
        ``_initMsgId``, FS v0.9.8 ``lib/utils/ws-requestor.js:537-538``; only sending
        ``session:new`` sets it, ``:197``), so no later reconnect of the call carries it: a
        process that sees the call first through one need not suspect a re-key. A cluster
        member stores this with the call it hands over (docs/reconnects.md)."""
        return self._read_before or self.session is SessionState.CONFIRMED

    @property
    def rekey_suspected(self) -> bool:
        """The live socket's ``session:reconnect`` found the ``session:new`` answer not proven
        read (the app had not answered, or no receipt Pong came for its answer; or the call's
        first message here is that reconnect, as when the first socket died while jambonz
        wrote ``session:new``, unless :attr:`session_confirmed` came from the process that
        served it), and jambonz has sent nothing since. jambonz then re-keyed its
        ``session:new`` to that reconnect, or may have: and 0.9.8 then holds every later
        message of the call for good (FS
        v0.9.8 ``lib/utils/ws-requestor.js:86-91``, ``:184``, ``:244-260``: only the send
        callback of an ack-awaiting request clears ``_reconnectPromise``, ``:296-311``, and
        the re-keyed reconnect is sent as a notification). In that state it sends nothing at
        all; any message it sends proves its queue flows and ends the suspicion."""
        return self.state is ConnState.CONNECTED and self._rekey == self.generation

    @property
    def rekey_release_ready(self) -> bool:
        """:attr:`rekey_suspected`, the answer to that ``session:reconnect`` proven read
        (jambonz took it, and cleared its ``_initMsgId``, ``ws-requestor.js:537-538``, so its
        next reconnect is an ordinary one), and nothing
        else written on this socket waits for its proof: closing the socket now loses nothing
        (jambonz, holding everything, has no request in flight either)."""
        gen = self.generation
        return (
            self.rekey_suspected
            and self._rekey_proven
            and not self._commands
            and not any(s.generation == gen for s in self._sent.values())
        )

    @staticmethod
    def reconnect_allowed(reconnects: int, budget: int) -> bool:
        """Whether jambonz reconnects after one more unexpected close of a call that has made
        ``reconnects + 1`` connections: ``connections < maxReconnects`` (its ``rc``, at most 5;
        FS v0.9.8 ``lib/utils/ws-requestor.js:54``, ``:455``)."""
        return reconnects + 1 < budget

    def rekey_bounce(self, *, reconnects: int, budget: int) -> bool:
        """Decide, once jambonz has stayed quiet for a while after :attr:`rekey_release_ready`,
        whether the engine closes the live socket now (with a code other than 1000) so that
        jambonz reconnects: its ordinary ``session:reconnect``, acked, clears
        ``_reconnectPromise`` and flushes what it held (``ws-requestor.js:296-311``,
        ``:367``, ``:421-458``). ``True`` ends the suspicion: at most one close per episode
        (the next one needs another reconnect that finds the answer unproven). ``False``:
        not (or not yet) ready, or jambonz would not reconnect (``reconnects`` / ``budget``:
        :meth:`reconnect_allowed`)."""
        if not (self.rekey_release_ready and self.reconnect_allowed(reconnects, budget)):
            return False
        self._rekey = 0
        return True

    def ack(self, msgid: str, verbs: Sequence[Verb] = (), *, by: Answerer = Answerer.APP) -> str:
        """Answer request ``msgid`` on the live socket; return the frame to send.

        The book is updated before returning, so the caller must send the text and report the
        write with :meth:`answer_written`: nothing here yields, so two tasks can never both
        answer. (:meth:`plan_answer` is the full decision; this is its ``SEND`` case.)

        Raises:
            AlreadyAcked: ``msgid`` was answered already (by the app or the watchdog).
            LocalProtocolError: the call is closed or disconnected; ``msgid`` is unknown, was
                abandoned with a dropped socket, or is a message jambonz does not wait on; an
                empty answer to ``session:new``; an unserialisable verb.
            MessageTooLarge: the frame would exceed ``max_outbound_bytes``.
        """
        if self.state is ConnState.CLOSED:
            raise LocalProtocolError("the call is closed")
        owed = self._owed.get(msgid)
        if owed is None:
            if msgid in self._answered:
                raise AlreadyAcked(f"msgid {msgid!r} was already answered")
            if msgid in self._abandoned:
                raise LocalProtocolError(
                    f"msgid {msgid!r} was abandoned when its socket dropped; "
                    "jambonz no longer waits for it (send a redirect instead)"
                )
            raise LocalProtocolError(f"msgid {msgid!r} is not awaiting an ack")
        if not self._answerable(owed):
            raise LocalProtocolError("the call's socket is down; the answer cannot be sent now")
        text = self._send(owed, tuple(verbs), by).text
        assert text is not None
        return text

    def _send(self, owed: OwedAck, verbs: tuple[Verb, ...], by: Answerer) -> AnswerPlan:
        if not self._answerable(owed):
            raise LocalProtocolError("the call's socket is down; the answer cannot be sent now")
        if owed.needs_verbs and not verbs:
            raise LocalProtocolError(
                "session:new must be answered with at least one verb "
                "(an empty answer makes jambonz reject the call with SIP 480)"
            )
        text = self.render(Ack(msgid=owed.wire_msgid, verbs=verbs).to_wire())
        self._note_ignored_hooks(_ignored_hook_urls(verbs))
        del self._owed[owed.msgid]
        owed.heap_key = 0  # its deadline is gone, even if the request is held again later
        self._remember(self._answered, owed.msgid, by)
        if owed.needs_verbs:
            owed.held = owed.held_by = None
            self.session = SessionState.SENT
            self._resend_from = None
        self._sent[(owed.msgid, self.generation)] = SentAnswer(
            owed=owed, verbs=verbs, by=by, generation=self.generation
        )
        return AnswerPlan(kind=PlanKind.SEND, msgid=owed.msgid, text=text, verbs=verbs, owed=owed, by=by)

    def answer_written(
        self, msgid: str, generation: int, delivery: Delivery, receipt: bytes | None = None
    ) -> AckResult:
        """Report the write of a ``SEND`` answer to ``msgid`` on socket ``generation``.
        ``receipt``: the Ping of :meth:`receipt_for_write` went out in the same write, right
        after the answer's frame (its Pong proves the answer read).

        ``SENT``: it is on the live socket (a Ping written now would prove its receipt).
        ``DEFERRED``: a ``session:new`` answer whose socket died under it: it goes out again on
        the next ``session:reconnect``. ``LOST``: any other answer whose socket died: jambonz
        failed that request at the drop (perhaps after reading the answer); a late answer to
        it is sent as a ``redirect`` (see :meth:`plan_answer`).
        """
        key = (msgid, generation)
        sent = self._sent.get(key)
        if sent is None:
            return AckResult.LOST  # the call closed meanwhile
        live = self.state is ConnState.CONNECTED and generation == self.generation
        if live and delivery is Delivery.WRITTEN:
            sent.written = True
            if self._gate == sent.owed.wire_msgid:
                self._gate = None
            if receipt is not None:
                ping = self._ping_number(receipt)
                if self._last_pong >= ping:
                    # its Pong came while the write was still returning: proven read already
                    del self._sent[key]
                    self._proven(sent)
                    return AckResult.SENT
                sent.ping = ping
            if (
                sent.by is not Answerer.APP
                and not sent.owed.needs_verbs
                and not (generation == self._rekey and sent.owed.wire_msgid == self._rekey_msgid)
            ):
                del self._sent[key]  # the library's own answers are not reported when lost
            self._trim()
            return AckResult.SENT
        del self._sent[key]
        if sent.owed.needs_verbs:
            if live:
                # (the engine reports a failed write as a drop first; should it not, the
                # socket is broken all the same: the answer waits for the reconnect)
                self._hold(sent, certain=delivery is Delivery.NOT_WRITTEN)
            elif (
                delivery is Delivery.NOT_WRITTEN
                and self.session is SessionState.RESEND
                and self._resend_from == key
            ):
                self.session = SessionState.HELD  # it never left: exactly like an answer held
            return AckResult.DEFERRED
        self._answered.pop(msgid, None)
        self._abandon(sent.message)  # its socket is gone: jambonz failed it
        return AckResult.LOST

    def _hold(self, sent: SentAnswer, *, certain: bool) -> None:
        """Keep a ``session:new`` answer for the next ``session:reconnect``."""
        owed = sent.owed
        owed.held, owed.held_by = sent.verbs, sent.by
        self._owed[owed.msgid] = owed  # owed again: re-keyed by the next session:reconnect
        self._answered.pop(owed.msgid, None)
        self.session = SessionState.HELD if certain else SessionState.RESEND
        self._resend_from = (owed.msgid, sent.generation)

    def _trim(self) -> None:
        """Bound the answers kept for a receipt (a peer that never answers Pings is cut off by
        the keepalive; until then the oldest are forgotten, never the ``session:new`` one)."""
        if len(self._sent) <= _MAX_TRACKED:
            return
        for key, sent in list(self._sent.items()):
            if sent.written and not sent.owed.needs_verbs:
                del self._sent[key]
                if len(self._sent) <= _MAX_TRACKED:
                    return

    def take_unconfirmed(self) -> list[SentAnswer]:
        """The answers (other than ``session:new``'s) written on sockets that dropped before
        jambonz was seen to read them, since the last call: jambonz may have failed their
        requests at the drop without using them."""
        lost, self._lost = self._lost, []
        return lost

    # -- receipts: Pings and Pongs -------------------------------------------------------

    @property
    def wants_receipt(self) -> bool:
        """An answer on the live socket is not yet covered by a Ping written after it."""
        gen = self.generation
        return self.state is ConnState.CONNECTED and (
            any(s.written and s.ping is None and s.generation == gen for s in self._sent.values())
            or any(c.ping is None for c in self._commands)
        )

    @property
    def receipt_due(self) -> bool:
        """A receipt Ping should be written now: :attr:`wants_receipt`, and no receipt Ping is
        waiting for its Pong (at most one at a time; its Pong brings the next)."""
        return self._receipt_ping <= self._last_pong and self.wants_receipt

    def ping_payload(self, *, receipt: bool = False) -> bytes:
        """The payload of the next Ping on the live socket (write it now): its Pong will prove
        that jambonz read every answer written before it. ``receipt``: written for that
        purpose (see :attr:`receipt_due`), not as a keepalive."""
        self._pings += 1
        n = self._pings
        if receipt:
            self._receipt_ping = n
        gen = self.generation
        for sent in self._sent.values():
            if sent.written and sent.ping is None and sent.generation == gen:
                sent.ping = n
        for cmd in self._commands:
            # (every command without a Ping: usually the newest, but a command that took its
            # receipt Ping for its own write, receipt_for_write, can be recorded after one
            # whose write started first)
            if cmd.ping is None:
                cmd.ping = n
        return _PING_PREFIX + str(n).encode()

    def receipt_for_write(self) -> bytes | None:
        """The payload of a receipt Ping to write right after the answer (or command) about to
        be written, in the same write (report it to :meth:`answer_written` or
        :meth:`command_written`), when no receipt Ping waits for its Pong; ``None`` otherwise
        (the frame is covered by the Ping written once that Pong comes: :attr:`receipt_due`).
        Saves the separate write of the Ping."""
        if self.state is not ConnState.CONNECTED or self._receipt_ping > self._last_pong:
            return None
        return self.ping_payload(receipt=True)

    def pong_received(self, payload: bytes) -> bool:
        """A Pong arrived on the live socket. ``True`` if it proved answers read.

        jambonz's websocket library (Node ``ws``) handles a connection's frames strictly in
        order and answers a Ping from inside that loop, so a Pong to a Ping written after an
        answer proves the answer's frame was read (docs/reconnects.md)."""
        if self.state is not ConnState.CONNECTED or not payload.startswith(_PING_PREFIX):
            return False
        digits = payload[len(_PING_PREFIX) :]
        if not digits.isdigit() or len(digits) > 18:
            return False
        n = int(digits)
        if not 1 <= n <= self._pings:
            return False
        self._last_pong = max(self._last_pong, n)
        gen = self.generation
        proved = False
        for key, sent in list(self._sent.items()):
            if sent.generation == gen and sent.ping is not None and sent.ping <= n:
                del self._sent[key]
                proved = True
                self._proven(sent)
        commands = self._commands
        if commands:
            # (all the proven ones, not "oldest first until one is not": their Pings are not
            # always in the order they were recorded, see ping_payload)
            unread = [cmd for cmd in commands if cmd.ping is None or cmd.ping > n]
            proved = proved or len(unread) < len(commands)
            self._commands = unread
        return proved

    # -- outbound --------------------------------------------------------------------------

    def command(self, command: Command) -> str:
        """Render a command; return the frame to send.

        Raises:
            LocalProtocolError: the call is closed; ``session:new`` is still unanswered (jambonz
                drops commands that arrive before its call session exists, protocol.md §5.2);
                the command cannot be serialised.
            MessageTooLarge: the frame would exceed ``max_outbound_bytes``.
        """
        if self.state is ConnState.CLOSED:
            raise LocalProtocolError("the call is closed")
        if self.session is SessionState.HELD:
            raise LocalProtocolError(
                "the session:new answer waits for jambonz's reconnect (the socket dropped before it "
                "went out), and jambonz drops commands that arrive before it: wait for "
                "Call.wait_session_acked() first"
            )
        if not self.session_answered:
            raise LocalProtocolError(
                "commands sent before the session:new ack are dropped by jambonz; answer session:new first"
            )
        text = self.render(command.to_wire())
        self._note_ignored_hooks(_command_hooks(command))
        return text

    def command_written(self, command: Command, generation: int, receipt: bytes | None = None) -> None:
        """Report that ``command`` was written whole on socket ``generation``: it is kept until
        a Pong proves jambonz read it (see :attr:`wants_receipt`). Written on a socket already
        reported lost, it is unconfirmed at once (:meth:`take_unconfirmed_commands`).
        ``receipt``: the Ping of :meth:`receipt_for_write` went out in the same write, right
        after the command's frame (its Pong proves the command read)."""
        if self.state is ConnState.CLOSED:
            return
        sent = SentCommand(command=command, generation=generation)
        if self.state is not ConnState.CONNECTED or generation != self.generation:
            self._lost_commands.append(sent)
            return
        if receipt is not None:
            sent.ping = self._ping_number(receipt)
            if self._last_pong >= sent.ping:
                return  # its Pong came while the write was still returning: proven read already
        self._commands.append(sent)
        if len(self._commands) > _MAX_TRACKED:
            # a peer that never answers Pings is cut off by the keepalive; until then the
            # oldest are forgotten
            del self._commands[0]

    def take_unconfirmed_commands(self) -> UnconfirmedCommands:
        """The commands written on sockets that dropped before jambonz was seen to read them,
        since the last call, oldest first: jambonz may never have read them (docs/reconnects.md).
        Hang-ups are to be sent again on the reconnect; the rest reported to the app."""
        lost, self._lost_commands = self._lost_commands, []
        self.commands_unconfirmed += len(lost)
        resend = tuple(c.command for c in lost if ends_the_call(c.command))
        report = tuple(c.command for c in lost if not ends_the_call(c.command))
        return UnconfirmedCommands(resend=resend, report=report)

    def render(self, obj: Any) -> str:
        """Serialise ``obj`` with the outbound size guard (no state change)."""
        return dumps_checked(obj, self.max_outbound_bytes)

    @staticmethod
    def _ping_number(payload: bytes) -> int:
        """The number of a Ping this core numbered (:meth:`ping_payload`)."""
        return int(payload[len(_PING_PREFIX) :])

    @staticmethod
    def _remember(book: dict[str, Any], msgid: str, value: Any = None) -> None:
        book.pop(msgid, None)  # (to the end, as the newest)
        book[msgid] = value
        if len(book) > _REMEMBERED:
            del book[next(iter(book))]


_SESSION_PENDING = (SessionState.OWED, SessionState.HELD, SessionState.RESEND)
