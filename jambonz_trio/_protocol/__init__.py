"""The sans-io core of jambonz-trio: models, codec and the per-call state machine.

Nothing in this package imports trio (a test checks it), does I/O or reads a clock.
"""

from ._calldata import (
    CallInfo,
    DialResult,
    GatherResult,
    LlmResult,
    SpeechAlternative,
    SpeechResult,
    ToolCall,
)
from ._envvars import EnvVar, EnvVars
from ._json import DEFAULT_MAX_OUTBOUND_BYTES, dumps_checked, loads_object
from ._messages import *  # noqa: F403
from ._messages import __all__ as _messages_all
from ._outbound import *  # noqa: F403
from ._outbound import COMMAND_TYPES, Ack
from ._outbound import __all__ as _outbound_all
from ._state import (
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
from ._verbs_base import (
    Hook,
    HookSpec,
    RawVerb,
    Verb,
    structure_verbs,
    unstructure_verbs,
)

__all__ = [
    "COMMAND_TYPES",
    "DEFAULT_ACK_DEADLINE",
    "DEFAULT_MAX_OUTBOUND_BYTES",
    "Ack",
    "AckResult",
    "AnswerPlan",
    "Answerer",
    "CallInfo",
    "CallProtocol",
    "ConnState",
    "Delivery",
    "DialResult",
    "EnvVar",
    "EnvVars",
    "GatherResult",
    "Hook",
    "HookSpec",
    "LlmResult",
    "OwedAck",
    "PlanKind",
    "RawVerb",
    "SpeechAlternative",
    "SentAnswer",
    "SessionState",
    "SpeechResult",
    "ToolCall",
    "Verb",
    "dumps_checked",
    "loads_object",
    "structure_verbs",
    "unstructure_verbs",
    *_messages_all,
    *_outbound_all,
]
