"""The public API as users see it: what each module exports, that it is documented and shows
its public path, that objects built by the library cannot be built by hand, and that the names
of before issue 13 still work for one release, with a ``DeprecationWarning``."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pydoc
import re
import types
import typing
import warnings
from typing import Any

import pytest
import trio
import trio.testing

import jambonz_trio
import jambonz_trio.commands
from jambonz_trio import (
    AckOutcome,
    AlreadyAcked,
    AudioStream,
    Call,
    CallConfig,
    CallRegistry,
    Conversation,
    JambonzMessage,
    JambonzServer,
    LateAck,
    TokenStream,
    serve_jambonz,
)
from jambonz_trio._public import Forwarded
from jambonz_trio.audio import AudioStreams
from jambonz_trio.commands import DialCommand
from jambonz_trio.lowlevel import CallStatistics, NewCalls
from jambonz_trio.messages import AckUnconfirmed
from jambonz_trio.testing import open_fake_call
from jambonz_trio.verbs import Say

PACKAGE = pathlib.Path(jambonz_trio.__file__).parent

PUBLIC_MODULES = [
    "jambonz_trio",
    "jambonz_trio.audio",
    "jambonz_trio.commands",
    "jambonz_trio.llm",
    "jambonz_trio.lowlevel",
    "jambonz_trio.messages",
    "jambonz_trio.testing",
    "jambonz_trio.verbs",
    "jambonz_trio.workers",
    "jambonz_trio.cluster",
]

#: The top level: what most apps use (issue 13: at most 40 names). A change here is deliberate.
TOP_LEVEL = {
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
}


def exports() -> list[tuple[str, str, Any]]:
    found = []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        found += [(name, attr, getattr(module, attr)) for attr in module.__all__]
    return found


def test_the_top_level_keeps_what_most_apps_use() -> None:
    assert set(jambonz_trio.__all__) == TOP_LEVEL
    assert len(jambonz_trio.__all__) <= 40
    assert len(jambonz_trio.__all__) == len(set(jambonz_trio.__all__))


def test_nothing_private_is_exported() -> None:
    for module, name, _obj in exports():
        assert not name.startswith("_") or name == "__version__", f"{module}.{name}"


@pytest.mark.parametrize(("module", "name", "obj"), exports(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_export_shows_its_public_path(module: str, name: str, obj: Any) -> None:
    """Reprs and tracebacks name a public module, and that module has the object."""
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return
    home = obj.__module__
    assert not any(part.startswith("_") for part in home.split(".")), f"{module}.{name}: {home}"
    assert getattr(importlib.import_module(home), obj.__qualname__) is obj
    assert home in PUBLIC_MODULES


@pytest.mark.parametrize(("module", "name", "obj"), exports(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_export_is_documented(module: str, name: str, obj: Any) -> None:
    """Classes and functions have a docstring of their own; other names (type aliases,
    constants) a ``#:`` comment where they are defined."""
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__")
    elif inspect.isfunction(obj):
        doc = obj.__doc__
    elif name == "__version__":
        return
    else:
        pattern = re.compile(rf"^#: .*\n(?:#: .*\n)*{re.escape(name)}\b[^\n]*=", re.M)
        doc = next((p.name for p in PACKAGE.rglob("*.py") if pattern.search(p.read_text())), None)
    assert doc and doc.strip(), f"{module}.{name} is not documented"


def kit_members() -> list[tuple[str, Any]]:
    """The public methods and properties of the classes ``jambonz_trio.testing`` exports,
    inherited ones included (an attrs field is documented in its class's Attributes)."""
    import jambonz_trio.testing as testing

    found = []
    for name in testing.__all__:
        cls = getattr(testing, name)
        if not inspect.isclass(cls):
            continue
        for klass in cls.__mro__:
            if not klass.__module__.startswith("jambonz_trio"):
                continue
            for attr, value in vars(klass).items():
                if attr.startswith("_") and attr != "__call__":
                    continue
                if isinstance(value, classmethod | staticmethod):
                    value = value.__func__
                if isinstance(value, property):
                    value = value.fget
                if inspect.isfunction(value):
                    found.append((f"{name}.{attr}", value))
    return found


@pytest.mark.parametrize(("name", "member"), kit_members(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_method_of_the_testing_kit_is_documented(name: str, member: Any) -> None:
    """App developers call these from their tests: each says what it does (and, per the
    project's standard, what blocks, what it raises and who owns timeouts)."""
    assert member.__doc__ and member.__doc__.strip(), f"jambonz_trio.testing.{name} has no docstring"


def test_reprs_show_public_paths() -> None:
    assert repr(Call) == "<class 'jambonz_trio.Call'>"
    assert repr(JambonzServer) == "<class 'jambonz_trio.JambonzServer'>"
    assert repr(jambonz_trio.SessionNew) == "<class 'jambonz_trio.messages.SessionNew'>"
    assert repr(jambonz_trio.commands.RedirectCommand) == "<class 'jambonz_trio.commands.RedirectCommand'>"
    assert serve_jambonz.__module__ == "jambonz_trio"


def test_type_hints_of_public_classes_still_resolve() -> None:
    """``__module__`` names the public module; ``typing.get_type_hints`` (used by cattrs,
    Hypothesis, documentation tools) must still resolve the annotations of every class."""
    for _module, _name, obj in exports():
        if inspect.isclass(obj):
            typing.get_type_hints(obj)


def test_forwarded_attributes_read_through_are_read_only_and_show_their_docstring() -> None:
    class Box:
        items = Forwarded[list[int]]("inner.items", "The items, a copy.", copy=True)
        size = Forwarded[int]("inner.size", "How many.")

        def __init__(self) -> None:
            self.inner = types.SimpleNamespace(items=[1], size=1)

    box = Box()
    assert box.items == [1] and box.items is not box.inner.items and box.size == 1
    with pytest.raises(AttributeError, match="property 'size' of 'Box' object has no setter"):
        box.size = 2  # type: ignore[assignment]  # mypy refuses it too
    assert inspect.getdoc(Box.items) == "The items, a copy."
    assert "How many." in pydoc.plain(pydoc.render_doc(Box))
    assert "The calling number / user" in pydoc.plain(pydoc.render_doc(Call))


@pytest.mark.parametrize(
    ("cls", "factory"),
    [
        (Call, "the server"),
        (JambonzServer, "serve_jambonz"),
        (CallRegistry, "server.calls"),
        (NewCalls, "new_calls"),
        (Conversation, "open_conversation"),
        (TokenStream, "open_tts_stream"),
        (AudioStream, "Call.listen"),
        (AudioStreams, "server.audio_streams"),
    ],
)
def test_objects_the_library_builds_cannot_be_built_by_hand(cls: type, factory: str) -> None:
    with pytest.raises(TypeError, match=f"has no public constructor; get one from .*{re.escape(factory)}"):
        cls()


async def test_the_factories_still_build_them(nursery: trio.Nursery) -> None:
    calls: list[Call] = []

    async def app(call: Call) -> None:
        calls.append(call)
        await call.ack(call.session, [Say(text="hi")])

    server = await nursery.start(serve_jambonz, app)
    assert isinstance(server, JambonzServer) and isinstance(server.calls, CallRegistry)
    assert isinstance(server.calls.new_calls(), NewCalls)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
    assert isinstance(calls[0], Call) and repr(calls[0]).startswith("<Call ")


# -- deprecated names (one release) ------------------------------------------------------------


@pytest.mark.parametrize(("old", "target"), sorted(jambonz_trio._MOVED.items()))
def test_old_top_level_names_warn_and_give_the_new_object(old: str, target: tuple[str, str]) -> None:
    module, new = target
    with pytest.warns(
        DeprecationWarning, match=rf"jambonz_trio\.{old} is deprecated; use {re.escape(module)}\.{new}"
    ):
        obj = getattr(jambonz_trio, old)
    assert obj is getattr(importlib.import_module(module), new)


def test_old_names_import_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="AckOutcome"):
        from jambonz_trio import AnswerOutcome
    with pytest.warns(DeprecationWarning, match="AlreadyAcked"):
        from jambonz_trio import AlreadyAnswered
    with pytest.warns(DeprecationWarning, match="JambonzMessage"):
        from jambonz_trio import Message
    with pytest.warns(DeprecationWarning, match="jambonz_trio.messages.AckUnconfirmed"):
        from jambonz_trio import AnswerUnconfirmed
    with pytest.warns(DeprecationWarning, match="LateAck"):
        from jambonz_trio import LateAnswer
    assert (AnswerOutcome, AlreadyAnswered, Message) == (AckOutcome, AlreadyAcked, JambonzMessage)
    assert (AnswerUnconfirmed, LateAnswer) == (AckUnconfirmed, LateAck)


#: The 66 names of the top level before issue 13: each still imports (kept, or a deprecated alias).
BEFORE_ISSUE_13 = [
    "AdmissionRequest",
    "AlreadyAnswered",
    "AnswerOutcome",
    "AnswerUnconfirmed",
    "BasicAuth",
    "Call",
    "CallClosed",
    "CallConfig",
    "CallInfo",
    "CallProtocol",
    "CallRegistry",
    "CallStatistics",
    "CallStatus",
    "CloseInfo",
    "CommandQueueFull",
    "ConnState",
    "Conversation",
    "DialConfirm",
    "DialResult",
    "Disconnected",
    "DisconnectedCommands",
    "Event",
    "GatherResult",
    "Handler",
    "HookAbandoned",
    "Identity",
    "JambonzErrorReport",
    "JambonzServer",
    "JambonzTrioError",
    "LateAnswer",
    "LlmEvent",
    "LlmResult",
    "LlmToolCall",
    "LocalProtocolError",
    "Message",
    "MessageTooLarge",
    "NewCalls",
    "NotDelivered",
    "OperationInterrupted",
    "Overflow",
    "PlayResult",
    "ProtocolError",
    "QueueStatus",
    "Reconnected",
    "RemoteProtocolError",
    "Route",
    "ServerConfig",
    "ServerStatistics",
    "SessionAdulting",
    "SessionNew",
    "SessionReconnect",
    "SessionRedirect",
    "SpeechAlternative",
    "SpeechResult",
    "TokenStream",
    "ToolCall",
    "ToolHandler",
    "TtsStreamingEvent",
    "TtsTokensResult",
    "UnknownMessage",
    "VerbHook",
    "VerbStatus",
    "__version__",
    "open_conversation",
    "open_tts_stream",
    "serve_jambonz",
]


def test_every_name_of_before_still_imports() -> None:
    assert len(BEFORE_ISSUE_13) == 66
    assert set(BEFORE_ISSUE_13) <= set(jambonz_trio.__all__) | set(jambonz_trio._MOVED)


def test_unknown_names_still_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        jambonz_trio.Nope  # noqa: B018
    with pytest.raises(ImportError):
        from jambonz_trio import Nope  # noqa: F401


@pytest.mark.parametrize("old", sorted(jambonz_trio.commands._RENAMED))
def test_old_command_names_warn_and_give_the_new_class(old: str) -> None:
    with pytest.warns(
        DeprecationWarning, match=rf"jambonz_trio\.commands\.{old} is deprecated; use .*{old}Command"
    ):
        cls = getattr(jambonz_trio.commands, old)
    assert cls is getattr(jambonz_trio.commands, old + "Command")
    assert cls.__name__ == old + "Command"


def test_deprecated_config_and_statistics_names() -> None:
    with pytest.warns(DeprecationWarning, match="late_ack"):
        config = CallConfig(late_answer=LateAck.RAISE)  # type: ignore[call-arg] # flagged, as it should be
    assert config.late_ack is LateAck.RAISE
    with pytest.warns(DeprecationWarning, match="late_ack"):
        assert config.late_answer is LateAck.RAISE
    stats = CallStatistics(
        state="connected",
        events_queued=0,
        events_capacity=1,
        events_dropped=0,
        acks_owed=0,
        auto_acked=3,
        commands_queued=0,
        reconnects=0,
        frames_received=0,
        frames_sent=0,
        acks_unconfirmed=2,
    )
    with pytest.warns(DeprecationWarning, match="auto_acked"):
        assert stats.auto_answered == 3
    with pytest.warns(DeprecationWarning, match="acks_unconfirmed"):
        assert stats.answers_unconfirmed == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CallConfig(late_ack=LateAck.RAISE) == config  # the new name warns nothing


async def test_deprecated_call_names(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    seen: dict[str, Any] = {}

    async def app(call: Call) -> None:
        with pytest.warns(DeprecationWarning, match="awaiting_ack"):
            seen["awaiting"] = call.awaiting_answer(call.session)
        await call.ack(call.session, [Say(text="hi")])
        with pytest.warns(DeprecationWarning, match="wait_session_acked"):
            await call.wait_answered()
        with pytest.warns(DeprecationWarning, match="Call.restored"):
            seen["reconnected"] = call.reconnected
        with pytest.warns(DeprecationWarning, match="create_call"):
            await call.dial({"from": "+1", "to": {"type": "phone", "number": "+2"}})
        await call.wait_closed()

    server = await nursery.start(serve_jambonz, app)
    async with open_fake_call(server.connect_memory) as fc:
        await fc.start()
        command = await fc.expect_command(DialCommand)
        assert command.body["to"] == {"type": "phone", "number": "+2"}
    assert seen == {"awaiting": True, "reconnected": False}
