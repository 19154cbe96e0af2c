"""Hypothesis strategies (and deterministic builders) for the verb models.

Everything is derived from the models' attrs fields and type hints, so a new verb or a new
field is covered without touching this file.
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import attrs
from hypothesis import strategies as st

from jambonz_trio._protocol._verbs import ALL_VERB_CLASSES, Redirect
from jambonz_trio._protocol._verbs_base import Verb

__all__ = [
    "for_type",
    "full_instance",
    "instances",
    "json_values",
    "minimal_instance",
    "verb_lists",
    "verbs",
]

_MAX_INT = 2**53 - 1  # survives a trip through a JavaScript number

_text = st.text(max_size=6)
_ints = st.integers(min_value=-_MAX_INT, max_value=_MAX_INT)
_floats = st.floats(allow_nan=False, allow_infinity=False)

#: JSON values for pass-through (``Any``) slots. No ``null``: the wire never carries one.
json_values: st.SearchStrategy[Any] = st.recursive(
    st.booleans() | _ints | _floats | _text,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_text, inner, max_size=2),
    max_leaves=4,
)


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def for_type(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for values of the (resolved) type hint ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return json_values
    if tp is type(None):
        return st.none()
    if tp is str:
        return _text
    if tp is bool:
        return st.booleans()
    if tp is int:
        return _ints
    if tp is float:
        return _floats
    if origin is Literal:
        return st.sampled_from(get_args(tp))
    if _is_union(tp):
        return st.one_of([for_type(member) for member in get_args(tp)])
    if origin is list:
        (item,) = get_args(tp)
        return st.lists(for_type(item), max_size=2)
    if origin is dict:
        key, value = get_args(tp)
        return st.dictionaries(for_type(key), for_type(value), max_size=2)
    if isinstance(tp, type) and attrs.has(tp):
        return instances(tp)
    raise TypeError(f"no strategy for {tp!r}")


_instances: dict[type[Any], st.SearchStrategy[Any]] = {}

#: Fields narrower than their type hint: the ``redirect`` verb's hooks are sent as URL strings
#: (jambonz 0.9.8 fails on a hook object there; the library refuses one with more than a url,
#: tests/protocol/test_verbs.py), so they do not round-trip as a ``HookSpec``.
_NARROWER: dict[tuple[type[Any], str], Any] = {
    (Redirect, "action_hook"): str,
    (Redirect, "status_hook"): str | None,
}

#: Fields whose generated values are narrower still: an absolute ``redirect`` ``status_hook``
#: is refused while ``action_hook`` is relative (it would close the app's socket), so the
#: generated one is a relative path.
_GENERATED: dict[tuple[type[Any], str], st.SearchStrategy[Any]] = {
    (Redirect, "status_hook"): st.none() | _text.map(lambda t: "/" + t),
}


def _hint(cls: type[Any], hints: dict[str, Any], name: str) -> Any:
    return _NARROWER.get((cls, name), hints[name])


def instances(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Instances of the attrs model ``cls``: required fields always set, others maybe."""
    if cls not in _instances:
        hints = get_type_hints(cls)
        fields = {
            f.alias: _GENERATED[cls, f.name]
            if (cls, f.name) in _GENERATED
            else for_type(_hint(cls, hints, f.name))
            for f in attrs.fields(cls)
        }
        _instances[cls] = st.builds(cls, **fields)
    return _instances[cls]


def verbs() -> st.SearchStrategy[Verb]:
    """Any verb model, with randomly populated fields."""
    return st.one_of([instances(cls) for cls in ALL_VERB_CLASSES])


def verb_lists() -> st.SearchStrategy[list[Verb]]:
    """A short verb list."""
    return st.lists(verbs(), max_size=3)


# -- deterministic builders ------------------------------------------------------------------


def _pick(members: tuple[Any, ...], full: bool) -> Any:
    """The union member to build: the richest (model, mapping, list) or the simplest."""
    candidates = [m for m in members if m is not type(None)]

    def rank(tp: Any) -> int:
        if isinstance(tp, type) and attrs.has(tp):
            return 0
        origin = get_origin(tp)
        return 1 if origin is dict else 2 if origin is list else 3

    return (min if full else max)(candidates, key=rank)


def _value(tp: Any, name: str, full: bool) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return {"any": [1, "two"]}
    if tp is str:
        return f"{name}-value"
    if tp is bool:
        return True
    if tp is int:
        return 7
    if tp is float:
        return 1.5
    if origin is Literal:
        return get_args(tp)[-1 if full else 0]
    if _is_union(tp):
        return _value(_pick(get_args(tp), full), name, full)
    if origin is list:
        return [_value(get_args(tp)[0], name, full)]
    if origin is dict:
        return {"X-Key": _value(get_args(tp)[1], name, full)} if full else {}
    if isinstance(tp, type) and attrs.has(tp):
        return full_instance(tp) if full else minimal_instance(tp)
    raise TypeError(f"no value for {tp!r}")


def full_instance(cls: type[Any]) -> Any:
    """An instance of ``cls`` with every field set, nested models fully populated too."""
    hints = get_type_hints(cls)
    return cls(**{f.alias: _value(_hint(cls, hints, f.name), f.name, True) for f in attrs.fields(cls)})


def minimal_instance(cls: type[Any]) -> Any:
    """An instance of ``cls`` with only its required fields set, nested models minimal too."""
    hints = get_type_hints(cls)
    return cls(
        **{
            f.alias: _value(_hint(cls, hints, f.name), f.name, False)
            for f in attrs.fields(cls)
            if f.default is attrs.NOTHING
        }
    )
