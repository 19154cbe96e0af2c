"""jambonz-trio: build jambonz voice applications over the WebSocket API, with trio.

This module exports what most apps use: the server (:func:`serve_jambonz`, :class:`Route`,
:class:`ServerConfig`), the call (:class:`Call`, :class:`CallConfig`), the conversation layer
(:func:`open_conversation`), streaming TTS, audio streams (:class:`AudioRoute`,
:class:`AudioStream`), the variables a route takes from jambonz's portal (:class:`EnvVar`), the
most common messages and the errors. The rest lives in submodules:

* :mod:`jambonz_trio.verbs`: the verb models acks and redirects carry;
* :mod:`jambonz_trio.commands`: the command models (``send_command``);
* :mod:`jambonz_trio.messages`: every message and library event ``Call.next_event`` returns;
* :mod:`jambonz_trio.audio`: the rest of audio streams (``AudioStreams``, ``AudioConfig``...)
  and the audio socket's messages;
* :mod:`jambonz_trio.llm`: the vendor shapes of ``llm:tool-output``;
* :mod:`jambonz_trio.testing`: the fake jambonz for tests;
* :mod:`jambonz_trio.workers`, :mod:`jambonz_trio.cluster`: several processes, one cluster;
* :mod:`jambonz_trio.lowlevel`: the sans-io core and server plumbing.

Names moved or renamed in 0.x stay importable from here for one release, with a
``DeprecationWarning`` naming their new place (see CHANGELOG.md, "Migration").
"""

from . import audio as audio
from . import commands as commands
from . import lowlevel as lowlevel
from . import messages as messages
from . import verbs as verbs
from ._admission import AdmissionRequest, AudioRoute, BasicAuth, Route
from ._audio import AudioStream
from ._call import AckOutcome, Call, CloseInfo
from ._config import CallConfig, DisconnectedCommands, LateAck, Overflow, ServerConfig
from ._conversation import Conversation, PlayResult, ToolHandler, open_conversation
from ._engine import Handler
from ._errors import (
    AlreadyAcked,
    CallClosed,
    CommandQueueFull,
    JambonzTrioError,
    LocalProtocolError,
    MessageTooLarge,
    NotDelivered,
    OperationInterrupted,
    ProtocolError,
    RemoteProtocolError,
)
from ._events import Event
from ._protocol._envvars import EnvVar
from ._protocol._messages import CallStatus, JambonzMessage, SessionNew, VerbHook
from ._public import deprecated_aliases, fixup_module_metadata
from ._registry import CallRegistry
from ._server import JambonzServer, serve_jambonz
from ._tts import TokenStream, open_tts_stream
from ._version import __version__

__all__ = [
    "AckOutcome",
    "AdmissionRequest",
    "AlreadyAcked",
    "AudioRoute",
    "AudioStream",
    "BasicAuth",
    "Call",
    "CallClosed",
    "CallConfig",
    "CallRegistry",
    "CallStatus",
    "CloseInfo",
    "CommandQueueFull",
    "Conversation",
    "DisconnectedCommands",
    "EnvVar",
    "Event",
    "Handler",
    "JambonzMessage",
    "JambonzServer",
    "JambonzTrioError",
    "LateAck",
    "LocalProtocolError",
    "MessageTooLarge",
    "NotDelivered",
    "OperationInterrupted",
    "Overflow",
    "PlayResult",
    "ProtocolError",
    "RemoteProtocolError",
    "Route",
    "ServerConfig",
    "SessionNew",
    "TokenStream",
    "ToolHandler",
    "VerbHook",
    "__version__",
    "open_conversation",
    "open_tts_stream",
    "serve_jambonz",
]

fixup_module_metadata(__name__, globals())

#: Names this module exported before issue 13, with where they live now (one release).
_MOVED = {
    # renamed
    "AlreadyAnswered": (__name__, "AlreadyAcked"),
    "AnswerOutcome": (__name__, "AckOutcome"),
    "AnswerUnconfirmed": ("jambonz_trio.messages", "AckUnconfirmed"),
    "LateAnswer": (__name__, "LateAck"),
    "Message": (__name__, "JambonzMessage"),
    # moved to jambonz_trio.messages (AckUnconfirmed is new: it was AnswerUnconfirmed)
    **{
        name: ("jambonz_trio.messages", name)
        for name in messages.__all__
        if name not in __all__ and name != "AckUnconfirmed"
    },
    # moved to jambonz_trio.lowlevel
    **{
        name: ("jambonz_trio.lowlevel", name)
        for name in (
            "CallProtocol",
            "CallStatistics",
            "ConnState",
            "Identity",
            "NewCalls",
            "ServerStatistics",
        )
    },
}
__getattr__ = deprecated_aliases(__name__, _MOVED)
