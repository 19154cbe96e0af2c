"""Everything :meth:`Call.next_event <jambonz_trio.Call.next_event>` returns: jambonz's messages
and the library's own events, and the typed views of their payloads.

* jambonz's messages, one frozen class per type feature-server 0.9.8 sends (``docs/protocol.md``
  §4), all :class:`JambonzMessage`\\ s; :class:`UnknownMessage` for a type a newer jambonz adds.
  ``SessionNew``, ``VerbHook`` and ``CallStatus`` are also exported by :mod:`jambonz_trio`.
* the library's events: :class:`Disconnected`, :class:`Reconnected`, :class:`HookAbandoned`,
  :class:`AckUnconfirmed`, :class:`CommandUnconfirmed`; :data:`Event` is the union of
  everything ``next_event`` returns.
* typed payload views: :class:`CallInfo` (``message.call``), :class:`GatherResult`
  (``.gather``), :class:`SpeechResult`, :class:`SpeechAlternative`, :class:`DialResult`,
  :class:`LlmResult`, :class:`ToolCall`, :class:`EnvVars` (``call.info.env_vars``).

Example::

    from jambonz_trio.messages import CallStatus, Disconnected, VerbHook

    async for event in call:
        if isinstance(event, VerbHook) and event.hook == "/gather":
            ...
"""

from ._events import AckUnconfirmed, CommandUnconfirmed, Disconnected, Event, HookAbandoned, Reconnected
from ._protocol._calldata import (
    CallInfo,
    DialResult,
    GatherResult,
    LlmResult,
    SpeechAlternative,
    SpeechResult,
    ToolCall,
)
from ._protocol._envvars import EnvVars
from ._protocol._messages import (
    CallStatus,
    DialConfirm,
    JambonzErrorReport,
    JambonzMessage,
    LlmEvent,
    LlmToolCall,
    QueueStatus,
    SessionAdulting,
    SessionNew,
    SessionReconnect,
    SessionRedirect,
    TtsStreamingEvent,
    TtsTokensResult,
    UnknownMessage,
    VerbHook,
    VerbStatus,
)
from ._public import fixup_module_metadata

__all__ = [
    "AckUnconfirmed",
    "CallInfo",
    "CallStatus",
    "CommandUnconfirmed",
    "DialConfirm",
    "DialResult",
    "Disconnected",
    "EnvVars",
    "Event",
    "GatherResult",
    "HookAbandoned",
    "JambonzErrorReport",
    "JambonzMessage",
    "LlmEvent",
    "LlmResult",
    "LlmToolCall",
    "QueueStatus",
    "Reconnected",
    "SessionAdulting",
    "SessionNew",
    "SessionReconnect",
    "SessionRedirect",
    "SpeechAlternative",
    "SpeechResult",
    "ToolCall",
    "TtsStreamingEvent",
    "TtsTokensResult",
    "UnknownMessage",
    "VerbHook",
    "VerbStatus",
]

fixup_module_metadata(__name__, globals())
