"""``CallProtocol``: the sans-io state machine of one jambonz call.

It never does I/O and never reads a clock: time comes in as ``now`` (any monotonic float, e.g.
``trio.current_time()``). Frames come in through :meth:`CallProtocol.receive_text`; the text to
send comes out of :meth:`CallProtocol.ack` and :meth:`CallProtocol.command`, which check the
state *synchronously* and raise :class:`LocalProtocolError` before anything would be sent.

The ack book records every msgid jambonz is waiting on, with its deadline, per socket
"generation": when a socket drops, what was owed on it is abandoned (jambonz failed those
requests at the drop, ``shared/protocol.md`` §6.2) - except an unanswered ``session:new``, which
jambonz re-keys to the ``session:reconnect`` msgid (§6.2 step 6) and which this machine re-keys
the same way.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import attrs

from .._errors import AlreadyAnswered, LocalProtocolError, RemoteProtocolError
from ._json import DEFAULT_MAX_OUTBOUND_BYTES, dumps_checked, loads_object
from ._messages import Message, SessionNew, SessionReconnect, UnknownMessage, parse_message
from ._outbound import Ack, Command
from ._verbs_base import Verb

__all__ = ["DEFAULT_ACK_DEADLINE", "CallProtocol", "ConnState", "OwedAck"]

#: Seconds after receipt by which the watchdog answers for the app: 1 s inside jambonz's 5 s.
DEFAULT_ACK_DEADLINE = 4.0

_REMEMBERED = 256  # answered / abandoned msgids kept for precise error messages


class ConnState(enum.Enum):
    """Where the call's socket is."""

    IDLE = "idle"  #: no socket yet
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  #: the socket dropped; jambonz may reconnect
    CLOSED = "closed"  #: over; nothing more can be sent


@attrs.define(kw_only=True)
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
    """

    msgid: str
    wire_msgid: str
    message: Message
    received_at: float
    deadline: float
    generation: int
    optional: bool = False

    @property
    def needs_verbs(self) -> bool:
        """``session:new`` must be answered with a non-empty verb list."""
        return isinstance(self.message, SessionNew)


class CallProtocol:
    """Per-call protocol state: parsing, the ack book, reconnect re-keying, outbound checks.

    Args:
        ack_deadline: seconds after receipt by which a request counts as overdue.
        max_outbound_bytes: UTF-8 size limit of every frame sent (jambonz's ``maxPayload``);
            ``None`` disables the check.
        ack_unknown_types: record unknown message types that carry a msgid as (optionally) owed,
            so the watchdog answers them (harmless if jambonz was not waiting).
    """

    def __init__(
        self,
        *,
        ack_deadline: float = DEFAULT_ACK_DEADLINE,
        max_outbound_bytes: int | None = DEFAULT_MAX_OUTBOUND_BYTES,
        ack_unknown_types: bool = True,
    ) -> None:
        self.ack_deadline = ack_deadline
        self.max_outbound_bytes = max_outbound_bytes
        self.ack_unknown_types = ack_unknown_types
        self.state = ConnState.IDLE
        self.generation = 0
        self.call_sid: str | None = None
        #: ``None`` until a ``session:new`` arrives, then whether it has been answered.
        self.session_new_acked: bool | None = None
        self._owed: dict[str, OwedAck] = {}
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._abandoned: OrderedDict[str, None] = OrderedDict()

    # -- socket lifecycle ------------------------------------------------------------------

    def connection_made(self) -> None:
        """A (new) socket is carrying this call."""
        if self.state is ConnState.CLOSED:
            raise LocalProtocolError("the call is closed")
        self.generation += 1
        self.state = ConnState.CONNECTED

    def connection_lost(self) -> list[OwedAck]:
        """The socket dropped. Returns the requests abandoned with it.

        An unanswered ``session:new`` is *not* abandoned: it stays owed, to be answered on the
        ``session:reconnect`` msgid of the next socket.
        """
        if self.state is not ConnState.CONNECTED:
            return []
        self.state = ConnState.DISCONNECTED
        abandoned = []
        for key, owed in list(self._owed.items()):
            if owed.needs_verbs:
                continue
            del self._owed[key]
            self._remember(self._abandoned, key)
            abandoned.append(owed)
        return abandoned

    def close(self) -> list[OwedAck]:
        """The call is over. Returns what was still owed. Idempotent."""
        self.state = ConnState.CLOSED
        owed = list(self._owed.values())
        self._owed.clear()
        return owed

    # -- inbound ---------------------------------------------------------------------------

    def receive_text(self, text: str, now: float) -> Message:
        """Parse one text frame and book it if jambonz waits for an answer.

        Raises:
            RemoteProtocolError: the frame is not a valid jambonz message (bad JSON, not an
                object, bad envelope) or repeats a msgid still owed. Nothing else escapes.
        """
        msg = parse_message(loads_object(text))
        self.receive_message(msg, now)
        return msg

    def receive_message(self, msg: Message, now: float) -> None:
        """Book an already parsed message (see :meth:`receive_text`)."""
        if msg.call_sid is not None and self.call_sid is None:
            self.call_sid = msg.call_sid
        if isinstance(msg, SessionNew):
            self.session_new_acked = False
            if self.call_sid is None:
                self.call_sid = msg.call.call_sid
        optional = isinstance(msg, UnknownMessage)
        if not (msg.NEEDS_ACK or (optional and msg.msgid and self.ack_unknown_types)):
            return
        if self.state is ConnState.DISCONNECTED:
            # read from a socket already considered lost: jambonz failed it at the drop
            self._remember(self._abandoned, msg.msgid)
            return
        if isinstance(msg, SessionReconnect):
            pending = self._pending_session_new()
            if pending is not None:
                # jambonz re-keyed its unanswered session:new to this msgid (§6.2 step 6).
                pending.wire_msgid = msg.msgid
                pending.generation = self.generation
                pending.deadline = now + self.ack_deadline
                return
        if msg.msgid in self._owed:
            raise RemoteProtocolError(f"duplicate msgid {msg.msgid!r} while still owed")
        self._owed[msg.msgid] = OwedAck(
            msgid=msg.msgid,
            wire_msgid=msg.msgid,
            message=msg,
            received_at=now,
            deadline=now + self.ack_deadline,
            generation=self.generation,
            optional=optional,
        )

    def _pending_session_new(self) -> OwedAck | None:
        for owed in self._owed.values():
            if owed.needs_verbs:
                return owed
        return None

    # -- queries ---------------------------------------------------------------------------

    def is_owed(self, msgid: str) -> bool:
        """Whether ``msgid`` is a request still waiting for the app's answer."""
        return msgid in self._owed

    def owed(self) -> list[OwedAck]:
        """Every request still owed an answer, oldest first."""
        return list(self._owed.values())

    def get_owed(self, msgid: str) -> OwedAck | None:
        """The owed request ``msgid``, or ``None``."""
        return self._owed.get(msgid)

    def can_answer_now(self, msgid: str) -> bool:
        """Owed, and its socket is the live one (so :meth:`ack` would not raise for state)."""
        owed = self._owed.get(msgid)
        return owed is not None and self.state is ConnState.CONNECTED and owed.generation == self.generation

    def was_abandoned(self, msgid: str) -> bool:
        """Whether ``msgid`` was owed when its socket dropped (jambonz failed it then)."""
        return msgid in self._abandoned

    def restore(self, owed: OwedAck) -> None:
        """Put back a request whose ack could not be written (the socket died mid-send).

        Only meaningful for ``session:new``: jambonz keeps it and re-keys it on the reconnect,
        so it is owed again; anything else is abandoned with the socket anyway.
        """
        if self.state is ConnState.CLOSED:
            return
        self._answered.pop(owed.msgid, None)
        if not owed.needs_verbs and (
            owed.generation != self.generation or self.state is not ConnState.CONNECTED
        ):
            self._remember(self._abandoned, owed.msgid)  # its socket is gone: jambonz failed it
            return
        self._owed[owed.msgid] = owed
        if owed.needs_verbs:
            self.session_new_acked = False

    def next_deadline(self) -> float | None:
        """The earliest deadline among requests answerable on the live socket, or ``None``."""
        if self.state is not ConnState.CONNECTED:
            return None
        deadlines = [o.deadline for o in self._owed.values() if o.generation == self.generation]
        return min(deadlines) if deadlines else None

    def overdue(self, now: float) -> list[OwedAck]:
        """Requests on the live socket whose deadline is ``<= now``, oldest first."""
        if self.state is not ConnState.CONNECTED:
            return []
        return [o for o in self._owed.values() if o.deadline <= now and o.generation == self.generation]

    # -- outbound --------------------------------------------------------------------------

    def ack(self, msgid: str, verbs: Sequence[Verb] = ()) -> str:
        """Answer request ``msgid``; return the frame to send.

        The ack book is updated before returning, so the caller must send the text (or treat
        the call as failed): nothing here yields, so two tasks can never both answer.

        Raises:
            AlreadyAnswered: ``msgid`` was answered already (by the app or the watchdog).
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
                raise AlreadyAnswered(f"msgid {msgid!r} was already answered")
            if msgid in self._abandoned:
                raise LocalProtocolError(
                    f"msgid {msgid!r} was abandoned when its socket dropped; "
                    "jambonz no longer waits for it (send a redirect instead)"
                )
            raise LocalProtocolError(f"msgid {msgid!r} is not awaiting an ack")
        if self.state is not ConnState.CONNECTED or owed.generation != self.generation:
            raise LocalProtocolError("the call's socket is down; the answer cannot be sent now")
        if owed.needs_verbs and not verbs:
            raise LocalProtocolError(
                "session:new must be answered with at least one verb "
                "(an empty answer makes jambonz reject the call with SIP 480)"
            )
        text = self.render(Ack(msgid=owed.wire_msgid, verbs=tuple(verbs)).to_wire())
        del self._owed[msgid]
        self._remember(self._answered, msgid)
        if owed.needs_verbs:
            self.session_new_acked = True
        return text

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
        if self.session_new_acked is False:
            raise LocalProtocolError(
                "commands sent before the session:new ack are dropped by jambonz; answer session:new first"
            )
        return self.render(command.to_wire())

    def render(self, obj: Any) -> str:
        """Serialise ``obj`` with the outbound size guard (no state change)."""
        return dumps_checked(obj, self.max_outbound_bytes)

    @staticmethod
    def _remember(book: OrderedDict[str, None], msgid: str) -> None:
        book[msgid] = None
        if len(book) > _REMEMBERED:
            book.popitem(last=False)
