"""The low-level pieces: what the library is built on, for tools, tests and the curious.

Apps do not need these (trio's ``trio.lowlevel`` plays the same role):

* the sans-io state machine of one call, :class:`CallProtocol` (parsing, the ack book and
  its deadlines, answers and their delivery, reconnects; no I/O, time is an argument), with
  its states and decisions: :class:`ConnState`, :class:`SessionState`, :class:`AnswerPlan` /
  :class:`PlanKind`, :class:`AckResult`, :class:`Delivery`, :class:`OwedAck`,
  :class:`SentAnswer`, :class:`Answerer`;
* the wire: :class:`Ack` (the ``ack`` message), :func:`parse_message`, :func:`parse_command`;
* server plumbing: :class:`NewCalls` (a ``server.calls.new_calls()`` subscription),
  :class:`CallStatistics` (``call.statistics()``), :class:`ServerStatistics`, :class:`Identity`
  (``call.identity``), :data:`Authenticator`;
* logging: :class:`CallContextFilter`, which gives your own log records the ``call_sid``,
  ``account_sid`` and ``path`` fields the library's records carry (docs/operations.md).
"""

from ._admission import Authenticator, Identity
from ._call import CallStatistics
from ._log import CallContextFilter
from ._protocol._messages import parse_message
from ._protocol._outbound import Ack, parse_command
from ._protocol._state import (
    DEFAULT_ACK_DEADLINE,
    AckResult,
    Answerer,
    AnswerPlan,
    CallProtocol,
    ConnState,
    Delivery,
    OwedAck,
    PlanKind,
    SentAnswer,
    SessionState,
)
from ._public import fixup_module_metadata
from ._registry import NewCalls
from ._server import ServerStatistics

__all__ = [
    "DEFAULT_ACK_DEADLINE",
    "Ack",
    "AckResult",
    "AnswerPlan",
    "Answerer",
    "Authenticator",
    "CallContextFilter",
    "CallProtocol",
    "CallStatistics",
    "ConnState",
    "Delivery",
    "Identity",
    "NewCalls",
    "OwedAck",
    "PlanKind",
    "SentAnswer",
    "ServerStatistics",
    "SessionState",
    "parse_command",
    "parse_message",
]

fixup_module_metadata(__name__, globals())
