"""Outbound commands: the exact 0.9.8 wire shapes, round trips, and what the parser refuses.

Shapes follow docs/protocol.md §5.2-§5.3 (checked against feature-server 0.9.8's
``_onCommand`` / ``_lcc*`` handlers).
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jambonz_trio._protocol import _outbound as out
from jambonz_trio._protocol import _verbs as v
from jambonz_trio._protocol._state import CallProtocol
from jambonz_trio._protocol._verbs_base import HookSpec
from tests.protocol_strategies import (
    ALL_COMMAND_CLASSES,
    COMMAND_STRATEGIES,
    LEG_AWARE_COMMANDS,
    commands,
    json_values,
)

# Random verbs from tests.strategies can be fully populated dials / configs whose repr is tens
# of kB; Hypothesis warns when it renders one, and warnings are errors in this suite.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)

SAY = v.Say(text="Hello")
SAY_WIRE = {"verb": "say", "text": "Hello"}


def sent(cmd: out.Command) -> dict[str, Any]:
    """What goes on the wire for ``cmd``, through the state machine's renderer.

    No size limit here: random verb lists can legitimately exceed 24 KiB (test_state.py
    covers the limit).
    """
    text = CallProtocol(max_outbound_bytes=None).command(cmd)
    obj: dict[str, Any] = json.loads(text)
    return obj


def test_every_command_class_has_a_strategy() -> None:
    classes = {
        obj
        for obj in (getattr(out, name) for name in out.__all__)
        if isinstance(obj, type) and issubclass(obj, out.Command) and obj not in (out.Command, out.RawCommand)
    }
    assert classes == set(ALL_COMMAND_CLASSES)
    assert len(classes) == 25
    # and every command name 0.9.8 handles has a parser (§5.3), nothing else
    assert set(out.COMMAND_TYPES) == {
        "redirect", "call:status", "mute:status", "conf:mute-status", "conf:hold-status",
        "conf:participant-action", "listen:status", "stream:status", "transcribe:status",
        "whisper", "sip:request", "dtmf", "record", "config", "dial", "dub",
        "boostAudioSignal", "media:path", "llm:tool-output", "llm:update", "tts:tokens",
        "tts:flush", "tts:clear",
    }  # fmt: skip
    assert frozenset({"tts:flush", "tts:clear", "llm:tool-output"}) == out.NO_DATA_COMMANDS


# -- exact wire shapes ----------------------------------------------------------------------------

EXACT: list[tuple[str, out.Command, dict[str, Any]]] = [
    (
        "redirect",
        out.RedirectCommand(verbs=[SAY]),
        {"type": "command", "command": "redirect", "queueCommand": False, "data": [SAY_WIRE]},
    ),
    (
        "redirect-queued-leg",
        out.RedirectCommand(verbs=[SAY, v.Hangup()], queue=True, call_sid="leg-2"),
        {
            "type": "command",
            "command": "redirect",
            "callSid": "leg-2",
            "queueCommand": True,
            "data": [SAY_WIRE, {"verb": "hangup"}],
        },
    ),
    (
        "redirect-to-hook",
        out.RedirectToHookCommand(
            call_hook="/new-app", child_call_hook=HookSpec(url="/child", method="POST")
        ),
        {
            "type": "command",
            "command": "redirect",
            "data": {
                "call_hook": "/new-app",
                "child_call_hook": {"url": "/child", "method": "POST"},
            },
        },
    ),
    (
        "redirect-legs",
        out.RedirectLegsCommand(parent_call=[SAY], child_call=[v.Hangup()]),
        {
            "type": "command",
            "command": "redirect",
            "data": {"parent_call": [SAY_WIRE], "child_call": [{"verb": "hangup"}]},
        },
    ),
    (
        "call-status",
        out.CallStatusCommand(),
        {"type": "command", "command": "call:status", "data": {"call_status": "completed"}},
    ),
    (
        "call-status-no-answer",
        out.CallStatusCommand(call_status="no-answer"),
        {"type": "command", "command": "call:status", "data": {"call_status": "no-answer"}},
    ),
    (
        "mute-status",
        out.MuteStatusCommand(mute_status="mute", call_sid="child-1"),
        {
            "type": "command",
            "command": "mute:status",
            "callSid": "child-1",
            "data": {"mute_status": "mute"},
        },
    ),
    (
        "conf-mute-status",
        out.ConfMuteStatusCommand(conf_mute_status="unmute"),
        {"type": "command", "command": "conf:mute-status", "data": {"conf_mute_status": "unmute"}},
    ),
    (
        "conf-hold-status",
        # 0.9.8 conference.js does `this.wait_hook = {url: wait_hook}`: a string is what it reads
        out.ConfHoldStatusCommand(conf_hold_status="hold", wait_hook="/hold-music"),
        {
            "type": "command",
            "command": "conf:hold-status",
            "data": {"conf_hold_status": "hold", "wait_hook": "/hold-music"},
        },
    ),
    (
        "conf-participant-action",
        out.ConfParticipantActionCommand(action="coach", tag="supervisors"),
        {
            "type": "command",
            "command": "conf:participant-action",
            "data": {"action": "coach", "tag": "supervisors"},
        },
    ),
    (
        "listen-status",
        out.ListenStatusCommand(listen_status="pause"),
        {"type": "command", "command": "listen:status", "data": {"listen_status": "pause"}},
    ),
    (
        "stream-status",
        out.StreamStatusCommand(stream_status="resume"),
        {"type": "command", "command": "stream:status", "data": {"stream_status": "resume"}},
    ),
    (
        "transcribe-status",
        out.TranscribeStatusCommand(transcribe_status="pause"),
        {
            "type": "command",
            "command": "transcribe:status",
            "data": {"transcribe_status": "pause"},
        },
    ),
    (
        "whisper",
        out.WhisperCommand(verbs=[v.Say(text="psst")], call_sid="child-1"),
        {
            "type": "command",
            "command": "whisper",
            "callSid": "child-1",
            "data": {"whisper": [{"verb": "say", "text": "psst"}]},
        },
    ),
    (
        "sip-request",
        out.SipRequestCommand(
            method="INFO",
            content_type="application/json",
            content='{"event":"x"}',
            headers={"X-Reason": "test"},
        ),
        {
            "type": "command",
            "command": "sip:request",
            "data": {
                "sip_request": {
                    "method": "INFO",
                    "content_type": "application/json",
                    "content": '{"event":"x"}',
                    "headers": {"X-Reason": "test"},
                }
            },
        },
    ),
    (
        "sip-request-minimal",
        out.SipRequestCommand(method="INFO"),
        {"type": "command", "command": "sip:request", "data": {"sip_request": {"method": "INFO"}}},
    ),
    (
        "dtmf",
        out.DtmfCommand(digit="1", duration=250),
        {"type": "command", "command": "dtmf", "data": {"dtmf": {"digit": "1", "duration": 250}}},
    ),
    (
        "dtmf-no-duration",
        out.DtmfCommand(digit="#", call_sid="child-1"),
        {
            "type": "command",
            "command": "dtmf",
            "callSid": "child-1",
            "data": {"dtmf": {"digit": "#"}},
        },
    ),
    (
        "record",
        out.RecordCommand(
            action="startCallRecording",
            type="siprec",
            recording_id="rec-1",
            siprec_server_url="sip:srs@recorder.example.com",
            headers={"X-Tenant": "t1"},
        ),
        {
            "type": "command",
            "command": "record",
            "data": {
                "action": "startCallRecording",
                "type": "siprec",
                "recordingID": "rec-1",
                "siprecServerURL": "sip:srs@recorder.example.com",
                "headers": {"X-Tenant": "t1"},
            },
        },
    ),
    (
        "record-stop",
        out.RecordCommand(action="stopCallRecording"),
        {"type": "command", "command": "record", "data": {"action": "stopCallRecording"}},
    ),
    (
        "config",
        out.ConfigCommand(config=v.Config(notify_events=True, barge_in=v.BargeIn(enable=False))),
        {
            "type": "command",
            "command": "config",
            "data": {"notifyEvents": True, "bargeIn": {"enable": False}},
        },
    ),
    (
        "dial",
        out.DialCommand(
            body={
                "from": "+15083084809",
                "to": {"type": "phone", "number": "+15083728299"},
                "call_hook": "/outbound-answered",
                "tag": {"campaign": "c-1"},
            }
        ),
        {
            "type": "command",
            "command": "dial",
            "data": {
                "from": "+15083084809",
                "to": {"type": "phone", "number": "+15083728299"},
                "call_hook": "/outbound-answered",
                "tag": {"campaign": "c-1"},
            },
        },
    ),
    (
        "dub",
        out.DubCommand(dub=v.Dub(action="playOnTrack", track="bg", play="https://x/a.mp3")),
        {
            "type": "command",
            "command": "dub",
            "data": {"action": "playOnTrack", "track": "bg", "play": "https://x/a.mp3"},
        },
    ),
    (
        "boost-number",
        out.BoostAudioCommand(gain=6, call_sid="child-1"),
        {"type": "command", "command": "boostAudioSignal", "callSid": "child-1", "data": 6},
    ),
    (
        "boost-string",
        out.BoostAudioCommand(gain="-3 dB"),
        {"type": "command", "command": "boostAudioSignal", "data": "-3 dB"},
    ),
    (
        "media-path",
        out.MediaPathCommand(path="no-media"),
        {"type": "command", "command": "media:path", "data": "no-media"},
    ),
    (
        "llm-tool-output",
        out.LlmToolOutputCommand(
            tool_call_id="call_AbC123",
            data={
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": "call_AbC123", "output": "72F"},
            },
        ),
        {
            "type": "command",
            "command": "llm:tool-output",
            "tool_call_id": "call_AbC123",
            "data": {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": "call_AbC123", "output": "72F"},
            },
        },
    ),
    (
        "llm-update",
        out.LlmUpdateCommand(data={"type": "session.update", "session": {"instructions": "be brief"}}),
        {
            "type": "command",
            "command": "llm:update",
            "data": {"type": "session.update", "session": {"instructions": "be brief"}},
        },
    ),
    (
        "tts-tokens",
        out.TtsTokensCommand(id=1, tokens="Hello there, "),
        {"type": "command", "command": "tts:tokens", "data": {"id": 1, "tokens": "Hello there, "}},
    ),
    ("tts-flush", out.TtsFlushCommand(), {"type": "command", "command": "tts:flush"}),
    ("tts-clear", out.TtsClearCommand(), {"type": "command", "command": "tts:clear"}),
]


@pytest.mark.parametrize(("name", "cmd", "expected"), EXACT, ids=[n for n, _, _ in EXACT])
def test_exact_wire_shape(name: str, cmd: out.Command, expected: dict[str, Any]) -> None:
    assert cmd.to_wire() == expected
    assert sent(cmd) == expected
    assert out.parse_command(expected) == cmd


def test_exact_table_covers_every_command_class() -> None:
    assert {type(cmd) for _, cmd, _ in EXACT} == set(ALL_COMMAND_CLASSES)


def test_sip_request_and_dtmf_are_wrapped() -> None:
    # protocol.md §11.7: the docs' flat forms throw in 0.9.8
    data = sent(out.SipRequestCommand(method="INFO"))["data"]
    assert set(data) == {"sip_request"}
    assert "method" not in data
    data = sent(out.DtmfCommand(digit="5"))["data"]
    assert set(data) == {"dtmf"}
    assert "digit" not in data


def test_tool_call_id_is_top_level() -> None:
    wire = sent(out.LlmToolOutputCommand(tool_call_id="t-9", data={"result": 1}))
    assert wire["tool_call_id"] == "t-9"
    assert "tool_call_id" not in wire["data"]


def test_status_commands_send_object_form() -> None:
    # §11.8: bare strings only work for mute:status; the library always sends objects
    for cmd in (
        out.CallStatusCommand(),
        out.MuteStatusCommand(mute_status="unmute"),
        out.ListenStatusCommand(listen_status="resume"),
        out.StreamStatusCommand(stream_status="pause"),
        out.TranscribeStatusCommand(transcribe_status="resume"),
        out.ConfMuteStatusCommand(conf_mute_status="mute"),
        out.ConfHoldStatusCommand(conf_hold_status="unhold"),
    ):
        assert isinstance(sent(cmd)["data"], dict)


@settings(max_examples=200)
@given(commands(), st.text(min_size=1, max_size=12))
def test_call_sid_is_camel_case_and_never_snake(cmd: out.Command, sid: str) -> None:
    cmd = attrs.evolve(cmd, call_sid=sid)
    wire = sent(cmd)
    assert wire["callSid"] == sid
    assert "call_sid" not in wire
    assert wire["type"] == "command"
    assert wire["command"] == type(cmd).COMMAND
    assert ("data" in wire) is type(cmd).HAS_DATA


def test_invalid_constructions_are_refused() -> None:
    with pytest.raises(ValueError, match="call_hook"):
        out.RedirectToHookCommand()
    with pytest.raises(ValueError, match="parent_call"):
        out.RedirectLegsCommand()
    with pytest.raises(ValueError, match="0 dB"):
        out.BoostAudioCommand(gain=0)
    with pytest.raises(ValueError, match="0 dB"):
        out.BoostAudioCommand(gain=0.0)
    with pytest.raises(ValueError, match="Say / Play"):
        out.WhisperCommand(verbs=[v.Hangup()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="Say / Play"):
        out.WhisperCommand(verbs=[])
    with pytest.raises(ValueError, match="to"):
        out.DialCommand(body={"from": "+1"})


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_COMMAND_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=40)
@given(data=st.data())
def test_round_trip_every_command(cls: type[out.Command], data: st.DataObject) -> None:
    cmd = data.draw(COMMAND_STRATEGIES[cls])
    assert type(cmd) is cls
    wire = cmd.to_wire()
    assert out.parse_command(wire) == cmd
    # through JSON text, as the fake jambonz would receive it
    assert out.parse_command(sent(cmd)) == cmd
    assert out.parse_command(json.loads(json.dumps(wire))) == cmd


@pytest.mark.parametrize(
    "cls",
    [c for c in ALL_COMMAND_CLASSES if c not in LEG_AWARE_COMMANDS],
    ids=lambda c: c.__name__,
)
def test_call_sid_survives_parse_for_every_command(cls: type[out.Command]) -> None:
    base = next(cmd for _, cmd, _ in EXACT if type(cmd) is cls)
    cmd = attrs.evolve(base, call_sid="leg-7")
    assert out.parse_command(cmd.to_wire()) == cmd


@pytest.mark.parametrize(
    "cls",
    [c for c in ALL_COMMAND_CLASSES if c in LEG_AWARE_COMMANDS],
    ids=lambda c: c.__name__,
)
def test_call_sid_survives_parse_for_leg_aware_commands(cls: type[out.Command]) -> None:
    base = next(cmd for _, cmd, _ in EXACT if type(cmd) is cls)
    cmd = attrs.evolve(base, call_sid="leg-7")
    assert out.parse_command(cmd.to_wire()) == cmd


# -- what the parser refuses ----------------------------------------------------------------------

REJECTED: list[tuple[str, dict[str, Any]]] = [
    (
        "snake-call-sid",
        {"type": "command", "command": "mute:status", "call_sid": "x", "data": {"mute_status": "mute"}},
    ),
    ("missing-data", {"type": "command", "command": "redirect"}),
    ("null-data", {"type": "command", "command": "call:status", "data": None}),
    ("zero-data", {"type": "command", "command": "boostAudioSignal", "data": 0}),
    ("zero-float-data", {"type": "command", "command": "boostAudioSignal", "data": 0.0}),
    ("false-data", {"type": "command", "command": "boostAudioSignal", "data": False}),
    ("empty-string-data", {"type": "command", "command": "media:path", "data": ""}),
    (
        "unwrapped-sip-request",
        {"type": "command", "command": "sip:request", "data": {"method": "INFO"}},
    ),
    ("unwrapped-dtmf", {"type": "command", "command": "dtmf", "data": {"digit": "1"}}),
    (
        "unwrapped-dtmf-duration",
        {"type": "command", "command": "dtmf", "data": {"digit": "1", "duration": 250}},
    ),
    ("dtmf-float-duration", {"type": "command", "command": "dtmf", "data": {"dtmf": {"digit": "1", "duration": 1.5}}}),
    ("bare-string-call-status", {"type": "command", "command": "call:status", "data": "completed"}),
    ("bare-string-listen-status", {"type": "command", "command": "listen:status", "data": "pause"}),
    ("bare-string-transcribe", {"type": "command", "command": "transcribe:status", "data": "pause"}),
    ("bad-call-status", {"type": "command", "command": "call:status", "data": {"call_status": "busy"}}),
    ("unknown-tag", {"type": "command", "command": "tag", "data": {"a": 1}}),
    (
        "unknown-noise-isolation",
        {"type": "command", "command": "noiseIsolation:status", "data": {"status": "on"}},
    ),
    ("unknown-room-say", {"type": "command", "command": "room:say", "data": {"text": "x"}}),
    ("unknown-agent-update", {"type": "command", "command": "agent:update", "data": {"x": 1}}),
    ("not-a-command", {"type": "ack", "msgid": "m", "data": []}),
    ("no-command-name", {"type": "command", "data": {"x": 1}}),
    ("numeric-command-name", {"type": "command", "command": 5, "data": {"x": 1}}),
    ("callsid-not-string", {"type": "command", "command": "dtmf", "callSid": 5, "data": {"dtmf": {"digit": "1"}}}),
    ("queue-command-not-bool", {"type": "command", "command": "redirect", "queueCommand": "yes", "data": [SAY_WIRE]}),
    ("redirect-bad-verb", {"type": "command", "command": "redirect", "data": [{"verb": "nope"}]}),
    ("redirect-mixed-keys", {"type": "command", "command": "redirect", "data": {"call_hook": "/a", "parent_call": []}}),
    ("whisper-hangup", {"type": "command", "command": "whisper", "data": {"whisper": {"verb": "hangup"}}}),
    ("tool-output-no-id", {"type": "command", "command": "llm:tool-output", "data": {"x": 1}}),
    ("tts-tokens-no-tokens", {"type": "command", "command": "tts:tokens", "data": {"id": 1}}),
    ("tts-tokens-bool-id", {"type": "command", "command": "tts:tokens", "data": {"id": True, "tokens": "x"}}),
    ("media-path-bad", {"type": "command", "command": "media:path", "data": "half-media"}),
    ("record-bad-action", {"type": "command", "command": "record", "data": {"action": "record"}}),
    ("record-extra-key", {"type": "command", "command": "record", "data": {"action": "stopCallRecording", "x": 1}}),
    ("config-unknown-prop", {"type": "command", "command": "config", "data": {"bogus": 1}}),
    ("dial-no-to", {"type": "command", "command": "dial", "data": {"from": "+1"}}),
    ("conf-mute-extra", {"type": "command", "command": "conf:mute-status", "data": {"conf_mute_status": "mute", "x": 1}}),
    # every command's data is read by the one strict converter: unknown keys and wrong types
    # are refused for all of them, as for verbs
    ("call-status-extra", {"type": "command", "command": "call:status", "data": {"call_status": "completed", "x": 1}}),
    ("mute-status-extra", {"type": "command", "command": "mute:status", "data": {"mute_status": "mute", "x": 1}}),
    ("conf-hold-extra", {"type": "command", "command": "conf:hold-status", "data": {"conf_hold_status": "hold", "x": 1}}),
    ("dtmf-extra", {"type": "command", "command": "dtmf", "data": {"dtmf": {"digit": "1", "x": 1}}}),
    ("tts-tokens-extra", {"type": "command", "command": "tts:tokens", "data": {"id": 1, "tokens": "x", "x": 1}}),
    ("record-type-not-string", {"type": "command", "command": "record", "data": {"action": "stopCallRecording", "type": 5}}),
    ("record-silence-not-bool", {"type": "command", "command": "record", "data": {"action": "stopCallRecording", "silence": "yes"}}),
    ("envelope-key-in-data", {"type": "command", "command": "mute:status", "data": {"mute_status": "mute", "callSid": "x"}}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "obj"), REJECTED, ids=[n for n, _ in REJECTED])
def test_parse_command_rejects(name: str, obj: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        out.parse_command(obj)


def test_mute_status_accepts_the_string_shortcut() -> None:
    # the one command whose handler reads a bare string (§11.8)
    cmd = out.parse_command({"type": "command", "command": "mute:status", "data": "unmute"})
    assert cmd == out.MuteStatusCommand(mute_status="unmute")


def test_no_data_commands_accept_missing_data() -> None:
    assert out.parse_command({"type": "command", "command": "tts:flush"}) == out.TtsFlushCommand()
    assert out.parse_command({"type": "command", "command": "tts:clear"}) == out.TtsClearCommand()
    ok = {"type": "command", "command": "llm:tool-output", "tool_call_id": "t", "data": {}}
    assert out.parse_command(ok) == out.LlmToolOutputCommand(tool_call_id="t", data={})


JS_TRUTHY_EMPTY: list[tuple[str, out.Command | None, dict[str, Any]]] = [
    ("redirect-empty-array", out.RedirectCommand(verbs=[]), {"type": "command", "command": "redirect", "queueCommand": False, "data": []}),
    ("config-empty-object", out.ConfigCommand(config=v.Config()), {"type": "command", "command": "config", "data": {}}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "cmd", "wire"), JS_TRUTHY_EMPTY, ids=[n for n, _, _ in JS_TRUTHY_EMPTY])
def test_empty_array_or_object_data_counts_as_supplied(
    name: str, cmd: out.Command, wire: dict[str, Any]
) -> None:
    assert cmd.to_wire() == wire
    assert out.parse_command(wire) == cmd


BAD_HOOKS: list[Any] = [5, None, [], {"url": "/x", "bogus": 1}, {"url": 5}, {"method": "GET"}]


@pytest.mark.parametrize("hook", BAD_HOOKS, ids=repr)
@pytest.mark.parametrize("key", ["call_hook", "child_call_hook"])
def test_bad_redirect_hook_raises_value_error(key: str, hook: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        out.parse_command({"type": "command", "command": "redirect", "data": {key: hook}})


_command_names = st.sampled_from(sorted(out.COMMAND_TYPES)) | st.text(max_size=12) | json_values
_near_valid_data = st.one_of(
    json_values,
    st.dictionaries(
        st.sampled_from(
            [
                "call_hook",
                "child_call_hook",
                "parent_call",
                "child_call",
                "call_status",
                "mute_status",
                "conf_mute_status",
                "conf_hold_status",
                "wait_hook",
                "action",
                "tag",
                "listen_status",
                "stream_status",
                "transcribe_status",
                "whisper",
                "sip_request",
                "dtmf",
                "type",
                "recordingID",
                "headers",
                "to",
                "id",
                "tokens",
            ]
        ),
        json_values,
        max_size=3,
    ),
)
_near_valid_commands = st.fixed_dictionaries(
    {"type": st.just("command") | json_values, "command": _command_names},
    optional={
        "data": _near_valid_data,
        "callSid": st.text(max_size=6) | json_values,
        "call_sid": st.text(max_size=6),
        "queueCommand": st.booleans() | json_values,
        "tool_call_id": st.text(max_size=6) | json_values,
        "msgid": st.text(max_size=6),
    },
)


_hook_like = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "url": st.text(max_size=6) | json_values,
            "method": st.sampled_from(["GET", "POST", "WS", "PUT"]) | json_values,
            "username": st.text(max_size=4),
            "password": st.text(max_size=4),
            "bogus": json_values,
        },
    ),
)
_redirect_objects = st.fixed_dictionaries(
    {"type": st.just("command"), "command": st.just("redirect")},
    optional={"callSid": st.text(max_size=6), "queueCommand": st.booleans()},
).flatmap(
    lambda env: st.fixed_dictionaries(
        {},
        optional={
            "call_hook": _hook_like,
            "child_call_hook": _hook_like,
            "parent_call": json_values,
            "child_call": json_values,
        },
    ).map(lambda data: {**env, "data": data})
)


@settings(max_examples=200)
@given(st.one_of(_near_valid_commands, _redirect_objects, commands().map(lambda c: c.to_wire())))
def test_parse_command_raises_only_value_error(obj: dict[str, Any]) -> None:
    try:
        cmd = out.parse_command(obj)
    except ValueError:
        return
    assert isinstance(cmd, out.Command)
    assert obj["type"] == "command"
    assert "call_sid" not in obj
    assert obj.get("data") or obj["command"] in out.NO_DATA_COMMANDS
    # what was accepted renders again
    CallProtocol(max_outbound_bytes=None).command(cmd)


# -- RawCommand ------------------------------------------------------------------------------------


def test_raw_command_is_sent_verbatim() -> None:
    data = {"nested": {"camelCase": [1, "two", None, {"x": False}]}, "snake_key": 0}
    cmd = out.RawCommand(
        command="noiseIsolation:status",
        data=data,
        call_sid="leg-1",
        queue_command=True,
        tool_call_id="tc-1",
    )
    expected = {
        "type": "command",
        "command": "noiseIsolation:status",
        "queueCommand": True,
        "callSid": "leg-1",
        "tool_call_id": "tc-1",
        "data": data,
    }
    assert cmd.to_wire() == expected
    assert sent(cmd) == expected
    assert cmd.to_wire()["data"] is data  # not copied or rewritten


def test_raw_command_minimal_and_falsy_data() -> None:
    assert sent(out.RawCommand(command="tts:flush")) == {"type": "command", "command": "tts:flush"}
    # falsy but present data is still sent as given (the app asked for it)
    assert sent(out.RawCommand(command="boostAudioSignal", data=0))["data"] == 0
    assert sent(out.RawCommand(command="redirect", data=[]))["data"] == []


@given(st.text(max_size=20), json_values)
def test_raw_command_any_json_data(name: str, data: Any) -> None:
    wire = sent(out.RawCommand(command=name, data=data))
    assert wire["command"] == name
    if data is None:
        assert "data" not in wire
    else:
        assert wire["data"] == data
