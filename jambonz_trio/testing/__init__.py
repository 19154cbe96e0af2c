"""A fake jambonz feature server (0.9.8) for testing jambonz WebSocket apps with trio.

jambonz dials *into* the app, so the fake is the WebSocket client: it opens a socket to the
app, sends jambonz's messages and holds the app's answers to the rules the real feature server
applies (protocol.md); for a ``listen`` verb it also plays jambonz's media server on the
audio socket (:meth:`FakeCall.open_listen`, :class:`FakeAudioStream`; ``run_call`` does it
with ``Caller(audio=AudioSource.tone())``)::

    async with open_fake_call(tcp_connector("ws://127.0.0.1:8080/voice")) as fc:
        ack = await fc.start()                        # session:new -> ack with verbs
        ack = await fc.gather_speech("/gather", "yes")
        cmd = await fc.expect_command("redirect")
        await fc.hangup()

Failures raise :class:`FakeJambonzError` subclasses (all ``AssertionError``\\s) whose message
includes the call transcript. A pytest plugin (entry point ``jambonz_trio``) provides the
``fake_jambonz`` fixture.
"""

from .._public import fixup_module_metadata
from ._appenv import InvalidAppEnvSchema, app_env_errors, fetch_app_env
from ._audio import AudioSource, write_wav
from ._calldata import DEFAULT_DEFAULTS, CallData
from ._errors import (
    AckAbandoned,
    AckTimeout,
    CallOver,
    CallRejected,
    ConnectFailed,
    ExpectationFailed,
    FakeJambonzError,
    HandshakeRejected,
    HandshakeTimeout,
    InvalidInitialVerbs,
    InvalidVerbs,
    NeverSent,
    ProtocolViolation,
    SubprotocolMissing,
)
from ._factory import FakeJambonzFactory
from ._fake import FakeCall, HookTarget, StartKind, WaitHookKind
from ._media import FakeAudioStream, PlayAudioRecord, open_fake_audio_stream
from ._open import open_fake_call
from ._records import (
    AckRecord,
    CloseRecord,
    CommandRecord,
    TranscriptEntry,
    Violation,
    ViolationKind,
    format_transcript,
)
from ._runner import (
    Caller,
    CallRun,
    ConferenceOutcome,
    DialOutcome,
    Digits,
    HangUp,
    Refer,
    Speech,
    ToolCallScript,
    describe_command,
    describe_verb,
    run_call,
)
from ._snake import snake_case, snake_case_keys
from ._transport import SUBPROTOCOL, Connector, TcpConnector, tcp_connector
from ._tts import TtsModel

__all__ = [
    "AudioSource",
    "FakeAudioStream",
    "PlayAudioRecord",
    "open_fake_audio_stream",
    "write_wav",
    "FakeJambonzFactory",
    "Caller",
    "CallRun",
    "ConferenceOutcome",
    "DialOutcome",
    "Digits",
    "HangUp",
    "Refer",
    "Speech",
    "ToolCallScript",
    "describe_command",
    "describe_verb",
    "run_call",
    "DEFAULT_DEFAULTS",
    "SUBPROTOCOL",
    "AckAbandoned",
    "AckRecord",
    "AckTimeout",
    "CallData",
    "CallOver",
    "CallRejected",
    "CloseRecord",
    "CommandRecord",
    "ConnectFailed",
    "Connector",
    "ExpectationFailed",
    "FakeCall",
    "FakeJambonzError",
    "HandshakeRejected",
    "HookTarget",
    "HandshakeTimeout",
    "InvalidAppEnvSchema",
    "InvalidInitialVerbs",
    "InvalidVerbs",
    "NeverSent",
    "ProtocolViolation",
    "StartKind",
    "SubprotocolMissing",
    "TcpConnector",
    "TranscriptEntry",
    "TtsModel",
    "Violation",
    "ViolationKind",
    "WaitHookKind",
    "app_env_errors",
    "fetch_app_env",
    "format_transcript",
    "open_fake_call",
    "snake_case",
    "snake_case_keys",
    "tcp_connector",
]

fixup_module_metadata(__name__, globals())
