"""Verb models: wire round trip, naming, secrets, reprs, parsing, agreement with specs.json, and
the generator that writes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import attrs
import pytest
from hypothesis import given

from jambonz_trio import commands
from jambonz_trio import verbs as public_verbs
from jambonz_trio._errors import LocalProtocolError
from jambonz_trio._protocol import _verbs as v
from jambonz_trio._protocol._verbs_base import VERBS, HookSpec, Verb, structure_verbs, unstructure_verbs
from jambonz_trio._protocol._wire import converter, to_wire_name
from tests.strategies import full_instance, minimal_instance, verb_lists, verbs

ROOT = Path(__file__).parents[2]
SPECS_PATH = ROOT / "tests/conformance/node_modules/@jambonz/verb-specifications/specs.json"
GENERATOR = ROOT / "tools/gen_verbs.py"
OVERRIDES = ROOT / "tools/verbs_overrides.toml"

#: Verb names feature-server 0.9.8 implements (lib/tasks/make_task.js), minus the aliases.
IMPLEMENTED_VERBS = {
    "alert",
    "answer",
    "conference",
    "config",
    "dequeue",
    "dial",
    "dialogflow",
    "dtmf",
    "dub",
    "enqueue",
    "gather",
    "hangup",
    "leave",
    "lex",
    "listen",
    "llm",
    "message",
    "pause",
    "play",
    "rasa",
    "redirect",
    "say",
    "sip:decline",
    "sip:refer",
    "sip:request",
    "tag",
    "transcribe",
    "rest:dial",
}

#: specs.json name of every nested (non-verb) model.
NESTED_SPEC_NAMES: dict[type[Any], str] = {
    v.ActionHookDelayAction: "actionHookDelayAction",
    v.Amd: "amd",
    v.AmdTimers: "amdTimers",
    v.AssemblyAiOptions: "assemblyAiOptions",
    v.Auth: "auth",
    v.AwsOptions: "awsOptions",
    v.AzureOptions: "azureOptions",
    v.BargeIn: "bargeIn",
    v.BidirectionalAudio: "bidirectionalAudio",
    v.CobaltOptions: "cobaltOptions",
    v.ConferenceRecord: "record",
    v.CustomOptions: "customOptions",
    v.DeepgramOptions: "deepgramOptions",
    v.DialFrom: "dialFrom",
    v.ElevenlabsOptions: "elevenlabsOptions",
    v.FillerNoise: "fillerNoise",
    v.GoogleOptions: "googleOptions",
    v.HoundifyOptions: "houndifyOptions",
    v.IbmOptions: "ibmOptions",
    v.LexIntent: "lexIntent",
    v.ListenOptions: "listenOptions",
    v.McpServer: "mcpServer",
    v.NoiseIsolation: "noiseIsolation",
    v.NuanceFormatting: "formatting",
    v.NuanceOptions: "nuanceOptions",
    v.NuanceResource: "resource",
    v.NuanceResourceReference: "resourceReference",
    v.NvidiaOptions: "nvidiaOptions",
    v.OpenaiOptions: "openaiOptions",
    v.PromptTemplates: "promptTemplates",
    v.QueryInput: "queryInput",
    v.Recognizer: "recognizer",
    v.RecordOptions: "recordOptions",
    v.SmAudioFilteringConfig: "sm_audioFilteringConfig",
    v.SmConversationConfig: "sm_conversationConfig",
    v.SmPunctuationOverrides: "sm_puctuationOverrides",
    v.SmSpeakerDiarizationConfig: "sm_speakerDiarizationConfig",
    v.SmTranscriptFilteringConfig: "sm_transcriptFilteringConfig",
    v.SmTranscriptionConfig: "sm_transcriptionConfig",
    v.SmTranslationConfig: "sm_translationConfig",
    v.SonioxOptions: "sonioxOptions",
    v.SonioxStorage: "sonioxStorage",
    v.SpeechmaticsOptions: "speechmaticsOptions",
    v.Synthesizer: "synthesizer",
    v.Target: "target",
    v.TranscribeOptions: "transcribeOptions",
    v.TtsStream: "ttsStream",
    v.TurnDetection: "turnDetection",
    v.TurnTaking: "turnTaking",
    v.Vad: "vad",
    v.VerbioOptions: "verbioOptions",
}

#: Spec properties deliberately not modelled (see the class docstrings).
NOT_MODELLED = {
    ("enqueue", "_"),
    ("mcpServer", "roots"),
    ("speechmaticsOptions", "audio_events_config_config"),
}


def _walk(value: Any) -> Any:
    """Yield every (key, value) pair and list element of a JSON-like value, recursively."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield None, item
            yield from _walk(item)


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _members(tp: Any) -> list[Any]:
    return [m for m in (get_args(tp) if _is_union(tp) else (tp,)) if m is not type(None)]


def _spec_name(cls: type[Any]) -> str:
    return cls.VERB if issubclass(cls, Verb) else NESTED_SPEC_NAMES[cls]


def _unstructure(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Verb):
        return unstructure_verbs([obj])[0]
    data: dict[str, Any] = converter.unstructure(obj)
    return data


def _wire_names(cls: type[Any]) -> dict[str, attrs.Attribute[Any]]:
    """Each field of ``cls`` under the key the converter actually writes for it."""
    data = _unstructure(full_instance(cls))
    out = {}
    for field in attrs.fields(cls):
        (key,) = {to_wire_name(field, "camel"), to_wire_name(field, "snake")} & set(data)
        out[key] = field
    assert set(out) == set(data) - {"verb"}
    return out


# -- (a) round trip ------------------------------------------------------------------------------


@given(verbs())
def test_round_trip_one_verb(verb: Verb) -> None:
    assert structure_verbs(unstructure_verbs([verb])) == [verb]


@given(verb_lists())
def test_round_trip_verb_list(verb_list: list[Verb]) -> None:
    assert structure_verbs(unstructure_verbs(verb_list)) == verb_list


@pytest.mark.parametrize("cls", v.ALL_VERB_CLASSES, ids=lambda c: c.VERB)
def test_round_trip_full_and_minimal(cls: type[Verb]) -> None:
    for verb in (minimal_instance(cls), full_instance(cls)):
        wire = unstructure_verbs([verb])
        assert wire[0]["verb"] == cls.VERB
        assert structure_verbs(json.loads(json.dumps(wire))) == [verb]


# -- (b) unset options are omitted ---------------------------------------------------------------


@given(verbs())
def test_no_none_on_the_wire(verb: Verb) -> None:
    wire = unstructure_verbs([verb])
    assert all(item is not None for _, item in _walk(wire))


def test_minimal_instance_carries_only_required_keys() -> None:
    assert unstructure_verbs([v.Gather()]) == [{"verb": "gather"}]
    assert unstructure_verbs([v.Pause(length=2)]) == [{"verb": "pause", "length": 2}]


# -- (c) wire names ------------------------------------------------------------------------------


def test_camel_case_and_exception_names() -> None:
    wire = unstructure_verbs(
        [
            v.Gather(action_hook="/gather", finish_on_key="#", dtmf_bargein=True),
            v.Message(to="+15551234567", from_="+15557654321", account_sid="AC1", message_sid="M1"),
            v.RestDial(call_hook="/new", from_="+1555", to=v.Target(type="phone", number="1")),
            v.Config(record=v.RecordOptions(action="startCallRecording", recording_id="r1")),
            v.Dial(target=[v.Target(type="user", name="bob", from_=v.DialFrom(user="a"))]),
        ]
    )
    assert wire[0] == {
        "verb": "gather",
        "actionHook": "/gather",
        "finishOnKey": "#",
        "dtmfBargein": True,
    }
    assert wire[1] == {
        "verb": "message",
        "to": "+15551234567",
        "from": "+15557654321",
        "account_sid": "AC1",
        "message_sid": "M1",
    }
    assert wire[2] == {
        "verb": "rest:dial",
        "call_hook": "/new",
        "from": "+1555",
        "to": {"type": "phone", "number": "1"},
    }
    assert wire[3]["record"] == {"action": "startCallRecording", "recordingID": "r1"}
    assert wire[4]["target"] == [{"type": "user", "name": "bob", "from": {"user": "a"}}]


def test_embedded_verbs_have_no_verb_key() -> None:
    wire = unstructure_verbs(
        [
            v.Gather(say=v.Say(text="hi"), play=v.Play(url="https://x/a.mp3")),
            v.Dial(
                target=[v.Target(type="phone", number="1")],
                listen=v.Listen(url="wss://a", transcribe=v.Transcribe(channel=1)),
                dub=[v.Dub(action="addTrack", track="t")],
            ),
            v.Conference(name="c", listen=v.Listen(url="wss://b")),
        ]
    )
    assert wire[0]["say"] == {"text": "hi"}
    assert wire[0]["play"] == {"url": "https://x/a.mp3"}
    assert wire[1]["listen"] == {"url": "wss://a", "transcribe": {"channel": 1}}
    assert wire[1]["dub"] == [{"action": "addTrack", "track": "t"}]
    assert wire[2]["listen"] == {"url": "wss://b"}
    # Top-level verbs keep their "verb" key.
    assert unstructure_verbs([v.Say(text="x")]) == [{"verb": "say", "text": "x"}]


# -- (d) secrets ---------------------------------------------------------------------------------


SECRET = "s3cr3t-value"


@pytest.mark.parametrize(
    "obj",
    [
        v.Auth(username="u", password=SECRET),
        HookSpec(url="/x", username="u", password=SECRET),
        v.Target(type="sip", sip_uri="sip:a@b", auth=v.Auth(username="u", password=SECRET)),
        v.Listen(url="wss://x", ws_auth=v.Auth(username="u", password=SECRET)),
        v.Dialogflow(project="p", lang="en", credentials=SECRET),
        v.Lex(bot_id="b", bot_alias="a", region="r", credentials={"secretKey": SECRET}),
        v.Llm(vendor="openai", llm_options={}, auth={"apiKey": SECRET}),
        v.McpServer(url="https://m", auth={"token": SECRET}),
        v.Recognizer(vendor="deepgram", deepgram_options=v.DeepgramOptions(api_key=SECRET)),
        v.AwsOptions(access_key=SECRET, secret_key=SECRET, security_token=SECRET),
        v.NuanceOptions(secret=SECRET),
        v.CustomOptions(auth_token=SECRET),
        v.IbmOptions(stt_api_key=SECRET, tts_api_key=SECRET),
        v.OpenaiOptions(api_key=SECRET),
        v.SonioxOptions(api_key=SECRET),
        v.AssemblyAiOptions(api_key=SECRET),
        v.Recognizer(vendor="gladia", gladia_options={"apiKey": SECRET}),
    ],
    ids=lambda o: type(o).__name__,
)
def test_repr_hides_secrets(obj: object) -> None:
    assert SECRET not in repr(obj)


def _hides_something(obj: Any) -> bool:
    """Whether ``obj`` (or a model inside it) has a ``repr=False`` field that is set."""
    if isinstance(obj, list | tuple):
        return any(_hides_something(item) for item in obj)
    if isinstance(obj, dict):
        return any(_hides_something(item) for item in obj.values())
    if attrs.has(type(obj)):
        return any(
            (not f.repr and getattr(obj, f.name) is not None) or _hides_something(getattr(obj, f.name))
            for f in attrs.fields(type(obj))
        )
    return False


def test_repr_shows_only_the_fields_that_are_set() -> None:
    assert repr(v.Hangup()) == "Hangup()"
    assert repr(v.Say(text="Hello")) == "Say(text='Hello')"
    gather = v.Gather(input=["speech"], action_hook=HookSpec(url="/g"), say=v.Say(text="Hi"), id="jt-1")
    assert repr(gather) == (
        "Gather(id='jt-1', action_hook=HookSpec(url='/g'), input=['speech'], say=Say(text='Hi'))"
    )
    # a required field is shown even when falsy; secrets never are
    assert repr(v.Pause(length=0)) == "Pause(length=0)"
    assert repr(v.Auth(username="u", password=SECRET)) == "Auth(username='u')"
    # commands too: a field at its (non-None) default is not shown
    assert repr(commands.CallStatusCommand()) == "CallStatusCommand()"
    assert repr(commands.CallStatusCommand(call_status="no-answer", call_sid="leg-2")) == (
        "CallStatusCommand(call_sid='leg-2', call_status='no-answer')"
    )
    assert repr(commands.RedirectCommand(verbs=[v.Hangup()])) == "RedirectCommand(verbs=(Hangup(),))"


@given(verbs())
def test_repr_never_prints_unset_options_and_rebuilds_the_verb(verb: Verb) -> None:
    text = repr(verb)
    assert "=None" not in text
    if not _hides_something(verb):
        namespace = {name: getattr(public_verbs, name) for name in public_verbs.__all__}
        assert eval(text, namespace) == verb


# -- (e) parsing ---------------------------------------------------------------------------------


def test_parse_alias_and_shorthand_forms() -> None:
    parsed = structure_verbs(
        [
            {"say": {"text": "hello"}},
            {"verb": "stream", "url": "wss://audio"},
            {"stream": {"url": "wss://audio2"}},
            {"verb": "openai_s2s", "llmOptions": {"x": 1}},
            {"deepgram_s2s": {"llmOptions": {}, "vendor": "mine"}},
            {"verb": "sip:decline", "status": 486},
        ]
    )
    assert parsed == [
        v.Say(text="hello"),
        v.Listen(url="wss://audio"),
        v.Listen(url="wss://audio2"),
        v.Llm(vendor="openai", llm_options={"x": 1}),
        v.Llm(vendor="mine", llm_options={}),
        v.SipDecline(status=486),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        [{"verb": "say", "text": "x", "bogus": 1}],
        [{"verb": "gather", "say": {"verb": "say", "text": "x"}}],
        [{"verb": "dial", "target": [{"type": "phone", "numbr": "1"}]}],
        [{"verb": "config", "recognizer": {"vendor": "x", "deepgramOptions": {"nope": True}}}],
        [{"verb": "pause", "length": "5"}],
        [{"verb": "pause", "length": True}],
        [{"verb": "sip:decline", "status": 486.5}],
        [{"verb": "say", "text": 5}],
        [{"verb": "dial", "target": [{"type": "pstn"}]}],
        [{"verb": "dial", "target": {"type": "phone"}}],
        [{"verb": "hangup", "headers": {"X-A": 1}}],
        [{"verb": "pause"}],
        [{"verb": "pipeline", "llm": {}}],
        [{"verb": "say", "text": "x", "id": 3}],
        [{"say": "hello"}],
        [{"verb": "say"}, "not an object"],
        {"verb": "say"},
    ],
)
def test_parse_refuses_invalid(payload: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by case
        structure_verbs(payload)


# -- (f) agreement with specs.json ---------------------------------------------------------------


@pytest.fixture(scope="module")
def specs() -> dict[str, Any]:
    if not SPECS_PATH.exists():
        message = f"{SPECS_PATH} missing: run npm install --prefix tests/conformance"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    data: dict[str, Any] = json.loads(SPECS_PATH.read_text(encoding="utf-8"))
    return data


def test_every_implemented_verb_has_a_class(specs: dict[str, Any]) -> None:
    assert set(specs) >= IMPLEMENTED_VERBS
    assert {cls.VERB for cls in v.ALL_VERB_CLASSES} == IMPLEMENTED_VERBS
    assert len(v.ALL_VERB_CLASSES) == len(IMPLEMENTED_VERBS)
    for cls in v.ALL_VERB_CLASSES:
        assert VERBS[cls.VERB] is cls
    assert "pipeline" not in VERBS


def _reachable_models() -> set[type[Any]]:
    seen: set[type[Any]] = set()
    todo: list[type[Any]] = list(v.ALL_VERB_CLASSES)
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for hint in get_type_hints(cls).values():
            stack = [hint]
            while stack:
                tp = stack.pop()
                if isinstance(tp, type) and attrs.has(tp):
                    todo.append(tp)
                stack.extend(get_args(tp))
    return seen - {HookSpec}


def _class_name(cls: Any) -> str:
    return str(cls.__name__)


def test_every_nested_model_is_mapped_to_a_spec() -> None:
    nested = _reachable_models() - set(v.ALL_VERB_CLASSES)
    assert nested == set(NESTED_SPEC_NAMES)


def _kinds(hint: Any) -> set[str]:
    out = set()
    for tp in _members(hint):
        origin = get_origin(tp)
        if tp is str or origin is Literal:
            out.add("string")
        elif tp is bool:
            out.add("boolean")
        elif tp in (int, float):
            out.add("number")
        elif tp is HookSpec or origin is dict:
            out.add("object")
        elif origin is list:
            (item,) = get_args(tp)
            is_model = isinstance(item, type) and attrs.has(item)
            out.add(f"[#{_spec_name(item)}]" if is_model else "array")
        elif isinstance(tp, type) and attrs.has(tp):
            out.add(f"#{_spec_name(tp)}")
        else:
            raise AssertionError(f"unexpected type {tp!r}")
    return out


def _spec_kinds(prop: Any) -> set[str]:
    if isinstance(prop, list):
        return {f"[{prop[0]}]"}
    if isinstance(prop, dict):
        return {prop["type"]}
    return {part.strip() for part in prop.split("|")}


@pytest.mark.parametrize(
    "cls",
    sorted(_reachable_models(), key=_class_name),
    ids=_class_name,
)
def test_model_matches_spec(cls: type[Any], specs: dict[str, Any]) -> None:
    name = _spec_name(cls)
    spec = specs[name]
    props: dict[str, Any] = spec["properties"]
    hints = get_type_hints(cls)
    wire = _wire_names(cls)
    assert set(wire) <= set(props), f"{name}: unknown wire names {set(wire) - set(props)}"
    missing = {p for p in props if p not in wire and (name, p) not in NOT_MODELLED}
    assert not missing, f"{name}: spec properties not modelled: {missing}"
    required = {key for key, f in wire.items() if f.default is attrs.NOTHING}
    assert required == set(spec.get("required") or []), name
    for key, field in wire.items():
        hint = hints[field.name]
        prop = props[key]
        assert _kinds(hint) == _spec_kinds(prop), f"{name}.{key}: {hint} vs {prop}"
        literals = [m for m in _members(hint) if get_origin(m) is Literal]
        if isinstance(prop, dict) and "enum" in prop:
            assert len(literals) == 1, f"{name}.{key} should be a Literal"
            assert list(get_args(literals[0])) == prop["enum"], f"{name}.{key}"
        else:
            assert not literals, f"{name}.{key} is not an enum in specs.json"


# -- (g) the generated module --------------------------------------------------------------------


def _generate(tmp_path: Path, overrides: Path = OVERRIDES, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), str(SPECS_PATH), "--out", str(tmp_path / "_verbs.py"),
         "--overrides", str(overrides), *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )  # fmt: skip


def test_generated_module_is_current(specs: dict[str, Any], tmp_path: Path) -> None:
    """``_verbs.py`` is what tools/gen_verbs.py writes from specs.json and the overrides."""
    proc = _generate(tmp_path)
    assert proc.returncode == 0, proc.stderr
    generated = (tmp_path / "_verbs.py").read_text(encoding="utf-8")
    assert generated == Path(v.__file__).read_text(encoding="utf-8"), (
        "jambonz_trio/_protocol/_verbs.py is not current: run .venv/bin/python tools/gen_verbs.py"
    )


def test_generator_follows_the_overrides(specs: dict[str, Any], tmp_path: Path) -> None:
    """A changed override changes the module (so the check above can fail), and --check sees it."""
    overrides = tmp_path / "overrides.toml"
    text = OVERRIDES.read_text(encoding="utf-8")
    text = text.replace('doc = "Speak text (``say``).', 'doc = "Say it (``say``).', 1)
    text = text.replace('secret = ["password"]', "", 1)
    overrides.write_text(text, encoding="utf-8")
    assert _generate(tmp_path, overrides).returncode == 0
    generated = (tmp_path / "_verbs.py").read_text(encoding="utf-8")
    assert '"""Say it (``say``).' in generated
    assert "password: str = attrs.field(repr=False)" not in generated
    assert "password: str = attrs.field(repr=False)" in Path(v.__file__).read_text(encoding="utf-8")
    check = _generate(tmp_path, OVERRIDES, "--check")
    assert check.returncode == 1
    assert "not current" in check.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["models"]["auth"].update(secret=["passwd"]), "unknown properties ['passwd']"),
        (lambda d: d["models"].update(sayy={"doc": "x"}), "not generated: ['sayy']"),
        (lambda d: d["models"]["say"].pop("doc"), "say: tools/verbs_overrides.toml gives it no doc"),
        (lambda d: d["verbs"].append("no-such-verb"), "specs.json has no 'no-such-verb'"),
    ],
    ids=["unknown-property", "unknown-model", "missing-doc", "unknown-verb"],
)
def test_generator_refuses_overrides_that_do_not_fit_the_spec(
    specs: dict[str, Any], tmp_path: Path, edit: Any, message: str
) -> None:
    data = tomllib.loads(OVERRIDES.read_text(encoding="utf-8"))
    edit(data)
    overrides = tmp_path / "overrides.toml"
    overrides.write_text(_to_toml(data), encoding="utf-8")
    proc = _generate(tmp_path, overrides)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "_verbs.py").exists()


def _to_toml(data: dict[str, Any]) -> str:
    """Just enough TOML for the overrides file (lists of strings, tables of strings/lists)."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in data.items() if key != "models"]
    for name, model in data["models"].items():
        lines.append(f"[models.{json.dumps(name)}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in model.items())
    return "\n".join(lines) + "\n"


def test_the_redirect_verbs_hooks_go_out_as_url_strings() -> None:
    """jambonz 0.9.8's ``redirect`` verb calls ``startsWith`` on its hooks (FS v0.9.8
    ``lib/utils/base-requestor.js:68-72``, ``lib/tasks/redirect.js:20``, ``:55-58``): a hook
    object fails the verb and ends the call (``actionHook``) or is ignored (``statusHook``).
    A ``HookSpec`` that is only a url goes out as that url; one with a method or credentials
    is refused before anything is sent."""
    sent = unstructure_verbs([v.Redirect(action_hook=HookSpec(url="/next"), status_hook=HookSpec(url="/s"))])
    assert sent == [{"verb": "redirect", "actionHook": "/next", "statusHook": "/s"}]
    for hook in (HookSpec(url="/next", method="POST"), HookSpec(url="/next", username="u", password="p")):
        with pytest.raises(LocalProtocolError, match=r"actionHook.*URL string"):
            unstructure_verbs([v.Redirect(action_hook=hook)])
        with pytest.raises(LocalProtocolError, match=r"statusHook.*URL string"):
            unstructure_verbs([v.Redirect(action_hook="/next", status_hook=hook)])
    # other verbs keep their hook objects
    (gather,) = unstructure_verbs([v.Gather(action_hook=HookSpec(url="/g", method="POST"))])
    assert gather["actionHook"] == {"url": "/g", "method": "POST"}


def test_a_redirect_verb_whose_absolute_status_hook_would_close_the_apps_socket_is_refused() -> None:
    """jambonz 0.9.8 gives an absolute ``statusHook`` a call-status sender of its own and
    closes the one it replaces (FS v0.9.8 ``lib/tasks/redirect.js:54-71``), which on a
    WebSocket app is the app's own socket (``lib/middleware.js:331-336``): the app lost the
    call (closed with 1000, never reconnected) and the verb's ``session:redirect`` with it.
    Refused before anything is sent, unless the ``actionHook`` hands the call over anyway."""
    for status in ("https://example.com/s", "http://example.com/s", "ws://x/s", "wss://x/s"):
        with pytest.raises(LocalProtocolError, match=r"statusHook.*close this app's websocket"):
            unstructure_verbs([v.Redirect(action_hook="/next", status_hook=status)])
        with pytest.raises(LocalProtocolError, match=r"statusHook"):
            unstructure_verbs(
                [v.Redirect(action_hook=HookSpec(url="/next"), status_hook=HookSpec(url=status))]
            )
        handed_over = unstructure_verbs(
            [v.Redirect(action_hook="wss://other.example.com/app", status_hook=status)]
        )
        assert handed_over == [
            {"verb": "redirect", "actionHook": "wss://other.example.com/app", "statusHook": status}
        ]
    assert (
        unstructure_verbs([v.Redirect(action_hook="/next", status_hook="/status")])[0]["statusHook"]
        == "/status"
    )
