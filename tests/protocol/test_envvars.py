"""Issue 17 item 4, sans-io: env-var declarations (checked when made), the schema they answer
(checked with the api-server's own rules, ``app_env_errors``), and the typed values a call gets
(defaults applied, wrong values reported by name and never by value)."""

from __future__ import annotations

import json
from typing import Any, assert_type

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jambonz_trio import EnvVar, Route
from jambonz_trio._protocol._envvars import apply_env, schema_body
from jambonz_trio.messages import CallInfo, EnvVars
from jambonz_trio.testing import app_env_errors

GREETING = EnvVar("GREETING", description="What callers hear first", default="Hello")
RETRIES = EnvVar("RETRIES", int, description="Attempts", default=2, enum=[1, 2, 3])
RATE = EnvVar("RATE", float, description="Speech rate", default=1)
RECORD = EnvVar("RECORD", bool, description="Record calls", default=False)
API_KEY = EnvVar("API_KEY", description="Vendor key", obscure=True, required=True)
LANG = EnvVar("LANG", description="Language", enum=["en-US", "de-DE"])
DECLARED = (GREETING, RETRIES, RATE, RECORD, API_KEY, LANG)
SECRET = "sk-live-do-not-log-7731"


async def _handler(call: Any) -> None:
    pass


# -- declarations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("greeting-text",), {}, ValueError, "letters, digits and _ only"),
        (("",), {}, ValueError, "letters, digits and _ only"),
        (("GRÜSSE",), {}, ValueError, "letters, digits and _ only"),
        (("A\n",), {}, ValueError, "letters, digits and _ only"),  # a Python `$` would take it
        (("/ivr",), {}, ValueError, "letters, digits and _ only"),  # no per-path sections
        (("A", list), {}, TypeError, "type must be str, int, float or bool"),
        (("A",), {"description": "  "}, ValueError, "a description is required"),
        (("A",), {"required": 1}, TypeError, "required must be True or False"),
        (("A",), {"obscure": "yes"}, TypeError, "obscure must be True or False"),
        (("A", int), {"default": True}, ValueError, "the default must be an integer"),
        (("A", int), {"default": 1.5}, ValueError, "the default must be an integer"),
        (("A", int), {"default": "2"}, ValueError, "the default must be an integer"),
        (("A", float), {"default": float("nan")}, ValueError, "the default must be a number"),
        (("A", float), {"default": float("inf")}, ValueError, "the default must be a number"),
        (("A", bool), {"default": 0}, ValueError, "the default must be a boolean"),
        # the portal's checkbox for it is an HTML required one: it saves only ticked
        (("A", bool), {"required": True}, ValueError, "a required boolean could only be true"),
        (("A",), {"default": 3}, ValueError, "the default must be a string"),
        (("A",), {"obscure": True, "default": "k"}, ValueError, "obscure variable cannot have a default"),
        (("A",), {"enum": []}, ValueError, "empty enum"),
        (("A",), {"enum": "abc"}, TypeError, "enum must be a sequence"),
        (("A",), {"enum": {"a", "b"}}, TypeError, "enum must be a sequence"),
        (("A", int), {"enum": [1, "2"]}, ValueError, "every enum member must be an integer"),
        (("A", int), {"enum": [1, True]}, ValueError, "every enum member must be an integer"),
        (("A",), {"default": "z", "enum": ["a", "b"]}, ValueError, "one of the enum members"),
        (("A",), {"ui_hint": "big"}, ValueError, "ui_hint must be one of input, textarea, filepicker"),
        (("A", int), {"ui_hint": "textarea"}, ValueError, "ui_hint applies to string variables only"),
        (("A",), {"jambonz_resource": "phones"}, ValueError, "jambonz_resource must be one of carriers"),
        (("A", bool), {"jambonz_resource": "carriers"}, ValueError, "applies to string variables only"),
    ],
)
def test_bad_declarations_are_refused_when_made(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Each mistake raises at once, naming the variable: nothing reaches ``serve_jambonz``,
    and no schema jambonz would refuse (or a field it would ignore) is ever served."""
    with pytest.raises(error, match=match) as info:
        EnvVar(*args, **{"description": "d", **kwargs})
    if args[0] == "A":
        assert "env var A" in str(info.value)


def test_route_refuses_duplicates_and_foreign_entries() -> None:
    """A route's ``env`` is checked when the route is made (before serving): a name declared
    twice, or anything but an ``EnvVar`` (a dict copied from a Node app.json), is refused."""
    other = EnvVar("GREETING", description="Another greeting")
    with pytest.raises(ValueError, match="route /ivr: env var GREETING is declared twice"):
        Route(path="/ivr", handler=_handler, env=[GREETING, other])
    with pytest.raises(TypeError, match="route /ivr: env takes EnvVar declarations, not dict"):
        Route(path="/ivr", handler=_handler, env=[{"type": "string", "description": "d"}])  # type: ignore[list-item]
    route = Route(path="/ivr", handler=_handler, env=[GREETING])
    with pytest.raises(ValueError, match="declared twice"):
        attrs.evolve(route, env=[GREETING, GREETING])
    declared: list[EnvVar[Any]] = [GREETING, RETRIES]
    assert Route(path="/ivr", handler=_handler, env=iter(declared)).env == (GREETING, RETRIES)


def test_declarations_are_frozen_and_typed() -> None:
    """Declarations are values (immutable, comparable); ``int`` defaults of a ``float`` are
    stored as floats; a ``str`` variable needs no type argument."""
    assert RATE.default == 1.0 and isinstance(RATE.default, float)
    assert GREETING.type is str
    assert EnvVar("N", int, description="n", default=2.0).default == 2  # integral: kept as int
    assert EnvVar("GREETING", description="What callers hear first", default="Hello") == GREETING
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        GREETING.default = "x"  # type: ignore[misc]
    assert_type(GREETING, EnvVar[str])
    assert_type(RETRIES, EnvVar[int])


def test_schema_entries() -> None:
    """Python types map to the wire's ``string``/``number``/``boolean``; camelCase options;
    unset options are left out."""
    schema = json.loads(schema_body(DECLARED) or b"")
    assert schema == {
        "GREETING": {"type": "string", "description": "What callers hear first", "default": "Hello"},
        "RETRIES": {"type": "number", "description": "Attempts", "default": 2, "enum": [1, 2, 3]},
        "RATE": {"type": "number", "description": "Speech rate", "default": 1.0},
        "RECORD": {"type": "boolean", "description": "Record calls", "default": False},
        "API_KEY": {"type": "string", "description": "Vendor key", "required": True, "obscure": True},
        "LANG": {"type": "string", "description": "Language", "enum": ["en-US", "de-DE"]},
    }
    assert app_env_errors(schema) == []
    assert schema_body(()) is None  # never an empty object
    hinted = EnvVar("P", description="p", ui_hint="filepicker", jambonz_resource="carriers")
    assert hinted.to_wire() == {
        "type": "string",
        "description": "p",
        "uiHint": "filepicker",
        "jambonzResource": "carriers",
    }


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
)
_declarations = st.fixed_dictionaries(
    {
        "name": st.from_regex(r"[A-Za-z0-9_]{1,6}", fullmatch=True) | st.text(max_size=4),
        "type": st.sampled_from([str, int, float, bool]),
        "description": st.text(max_size=5),
    },
    optional={
        "required": st.booleans(),
        "default": _values,
        "enum": st.lists(_values, max_size=3) | _values,
        "obscure": st.booleans(),
        "ui_hint": st.sampled_from(["input", "textarea", "filepicker", "x"]),
        "jambonz_resource": st.sampled_from(["carriers", "x"]),
    },
)


@given(st.lists(_declarations, max_size=4))
def test_every_accepted_declaration_gives_a_schema_jambonz_accepts(decls: list[dict[str, Any]]) -> None:
    """Whatever a developer writes: either it is refused when made, or the route's schema
    passes the api-server's checks, its defaults pass the api-server's value checks
    (``typeof value == type``, in the enum: appenv_utils.js:43-72), and the options satisfy
    node-client-ws's stricter schema (uiHint / jambonzResource values)."""
    env: list[EnvVar[Any]] = []
    for kwargs in decls:
        kwargs = dict(kwargs)
        name, tp = kwargs.pop("name"), kwargs.pop("type")
        try:
            var = EnvVar(name, tp, **kwargs)
        except (TypeError, ValueError):
            continue
        if all(v.name != var.name for v in env):
            env.append(var)
    body = schema_body(env)
    if not env:
        assert body is None
        return
    assert body is not None
    schema = json.loads(body)
    assert app_env_errors(schema) == []
    js_type = {str: "string", int: "number", float: "number", bool: "boolean"}
    for var in env:
        entry = schema[var.name]
        assert entry["type"] == js_type[var.type]
        assert entry["description"].strip()
        assert entry.get("uiHint", "input") in ("input", "textarea", "filepicker")
        assert entry.get("jambonzResource", "carriers") == "carriers"
        if "default" in entry:
            default = entry["default"]
            assert js_type[type(default)] == entry["type"]
            assert "obscure" not in entry
            if "enum" in entry:
                assert default in entry["enum"]
        for member in entry.get("enum", []):
            assert js_type[type(member)] == entry["type"]


# -- values --------------------------------------------------------------------------------------


def test_values_are_typed_with_defaults_applied() -> None:
    """Values of the declared type are kept (an integral ``2.0`` becomes ``2``, an ``int`` for
    a ``float`` becomes a float); missing ones take their default; one with no default stays
    absent; variables the route does not declare are kept as sent."""
    env, problems = apply_env(
        {"RETRIES": 3.0, "RATE": 2, "API_KEY": SECRET, "EXTRA": [1, "x"], "camelCase": "y"}, DECLARED
    )
    assert problems == []
    assert dict(env) == {
        "RETRIES": 3,
        "RATE": 2.0,
        "API_KEY": SECRET,
        "EXTRA": [1, "x"],
        "camelCase": "y",
        "GREETING": "Hello",
        "RECORD": False,
    }
    assert isinstance(env["RETRIES"], int) and isinstance(env["RATE"], float)
    assert "LANG" not in env and env.get(LANG) is None
    with pytest.raises(KeyError):
        env[LANG]
    assert_type(env[RETRIES], int)
    assert_type(env[RECORD], bool)
    assert_type(env.get(LANG), str | None)
    assert_type(env.get(RETRIES, "none"), int | str)
    assert env.declared == DECLARED


@pytest.mark.parametrize(
    ("sent", "why"),
    [
        ({"RETRIES": True}, "env var RETRIES should be an integer but is a boolean; using its default"),
        ({"RETRIES": "2"}, "env var RETRIES should be an integer but is a string; using its default"),
        ({"RETRIES": 2.5}, "env var RETRIES should be an integer but is a number; using its default"),
        ({"RETRIES": 7}, "env var RETRIES is not one of its enum values; using its default"),
        ({"RECORD": "true"}, "env var RECORD should be a boolean but is a string; using its default"),
        ({"RATE": None}, "env var RATE should be a number but is null; using its default"),
        (
            {"GREETING": {"text": "hi"}},
            "env var GREETING should be a string but is an object; using its default",
        ),
        ({"LANG": "fr-FR"}, "env var LANG is not one of its enum values; it has no default"),
        ({"API_KEY": 12345}, "env var API_KEY should be a string but is a number; it has no default"),
    ],
)
def test_wrong_values_fall_back_and_are_reported_by_name(sent: dict[str, Any], why: str) -> None:
    """A value of the wrong type or outside the enum (jambonz checks values only when the app
    answered OPTIONS at save time) is replaced by the default (or left out), and reported by
    the variable's name and the value's JSON type - never the value."""
    env, problems = apply_env({"API_KEY": SECRET, **sent}, DECLARED)
    assert problems == [why]
    (name,) = sent
    var = next(v for v in DECLARED if v.name == name)
    if var.default is None:
        assert name not in env
    else:
        assert env[name] == var.default
    (value,) = sent.values()
    assert str(value) not in why and SECRET not in why


def test_missing_required_and_odd_env_vars_are_reported() -> None:
    """A required variable that was not sent is reported (the app's schema may have changed
    after the application was saved); an ``env_vars`` that is not an object is reported and
    the defaults apply; none sent at all is normal."""
    env, problems = apply_env({}, DECLARED)
    assert problems == ["env var API_KEY is required but was not sent; it has no default"]
    assert dict(env) == {"GREETING": "Hello", "RETRIES": 2, "RATE": 1.0, "RECORD": False}
    env, problems = apply_env(["API_KEY", SECRET], DECLARED)
    assert problems[0] == "env_vars is an array, not an object; using the declared defaults"
    assert env["GREETING"] == "Hello" and SECRET not in repr(problems)
    env, problems = apply_env(None, (GREETING,))
    assert problems == [] and dict(env) == {"GREETING": "Hello"}


def test_env_vars_mapping_hides_values_and_refuses_undeclared_keys() -> None:
    """``repr`` shows names only; an ``EnvVar`` the route does not declare (or declares
    differently) raises ``KeyError`` with a hint, from ``[]`` and ``get`` alike, because its
    value would be unchecked; plain names look up anything."""
    env, _ = apply_env({"API_KEY": SECRET, "OTHER": SECRET}, DECLARED)
    assert SECRET not in repr(env) and "API_KEY" in repr(env)
    stranger = EnvVar("OTHER", description="not on this route")
    changed = EnvVar("GREETING", description="What callers hear first", default="Hi")
    for key in (stranger, changed):
        with pytest.raises(KeyError, match="not declared on this call's route"):
            env[key]
        with pytest.raises(KeyError, match="not declared on this call's route"):
            env.get(key)
    assert env["OTHER"] == SECRET and env.get("NOPE", 1) == 1
    assert "OTHER" in env and "NOPE" not in env
    assert stranger in env  # type: ignore[comparison-overlap]  # by name; typed code: VAR.name in env
    assert env == {**dict(env)} and len(env) == len(dict(env))


def test_call_info_env_vars_is_always_a_mapping() -> None:
    """``CallInfo.env_vars`` holds what was sent, untyped (no route here), or nothing: an empty
    mapping, never ``None``; it never shows in the call info's repr."""
    info = CallInfo.from_data({"call_sid": "c", "env_vars": {"API_KEY": SECRET}})
    assert isinstance(info.env_vars, EnvVars)
    assert info.env_vars == {"API_KEY": SECRET}
    assert SECRET not in repr(info)
    assert CallInfo.from_data({"call_sid": "c"}).env_vars == {}
    assert not CallInfo.from_data({"env_vars": "x"}).env_vars
    assert CallInfo().env_vars == {}
