"""The one cattrs converter, and the naming rules between Python and the jambonz wire.

The wire is mixed-case: verb options are camelCase (``actionHook``), command payloads and
everything jambonz sends are snake_case (``call_status``), and a few names are fixed exceptions
(``from``, ``customerData``, ``account_sid`` inside ``message``). So each model class declares its
style, and single fields override it with ``metadata={"wire": "name"}`` - never one global rule.

Unset options (``None``) are omitted on the wire, never sent as ``null``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

__all__ = ["WIRE", "converter", "register_model", "to_wire_name"]

Style = Literal["camel", "snake"]
WIRE = "wire"  # attrs metadata key for an explicit wire name

converter = cattrs.Converter()

_T = TypeVar("_T")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def to_wire_name(field: attrs.Attribute[Any], style: Style) -> str:
    """The name ``field`` has on the wire under ``style``."""
    explicit = field.metadata.get(WIRE)
    if explicit is not None:
        return str(explicit)
    name = field.name.rstrip("_")  # from_ -> from
    return _camel(name) if style == "camel" else name


def register_model(cls: type[_T], style: Style) -> type[_T]:
    """Register unstructure and (strict) structure hooks for the attrs class ``cls``.

    Unstructuring omits every field still at its default (``None``), so the wire never carries
    ``null`` for an unset option. Structuring forbids unknown keys: it is used to check what an
    application sends (and by the fake jambonz), where jambonz itself rejects unknown
    properties.
    """
    overrides: dict[str, Any] = {
        f.name: override(rename=to_wire_name(f, style))
        for f in attrs.fields(cls)  # type: ignore[arg-type]
    }
    unstructure = make_dict_unstructure_fn(
        cls,
        converter,
        _cattrs_omit_if_default=True,
        **overrides,
    )
    structure = make_dict_structure_fn(
        cls,
        converter,
        _cattrs_forbid_extra_keys=True,
        **overrides,
    )
    converter.register_unstructure_hook(cls, unstructure)
    converter.register_structure_hook(cls, structure)
    return cls


# -- unions ---------------------------------------------------------------------------------
# jambonz properties are often "string or object" / "string or array" / "number or string".
# Structuring such a union picks the member that matches the JSON value's shape, and refuses
# anything else (cattrs' default would coerce, e.g. turn 5 into "5").

_PRIMS: dict[type, tuple[type, ...]] = {
    str: (str,),
    bool: (bool,),
    int: (int,),
    float: (int, float),
}


def _matches(tp: Any, value: Any) -> bool:
    if tp is Any:
        return True
    if tp in _PRIMS:
        if isinstance(value, bool) and tp is not bool:
            return False
        return isinstance(value, _PRIMS[tp])
    origin = get_origin(tp)
    if origin is Literal:
        return value in get_args(tp)
    if attrs.has(tp) or origin in (dict, Mapping) or tp in (dict,):
        return isinstance(value, dict)
    if origin in (list, Sequence, tuple) or tp in (list,):
        return isinstance(value, list)
    return False


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _union_hook_factory(tp: Any) -> Callable[[Any, Any], Any]:
    members = [m for m in get_args(tp) if m is not type(None)]
    optional = len(members) != len(get_args(tp))

    def structure_union(value: Any, _: Any) -> Any:
        if value is None and optional:
            return None
        for member in members:
            if _matches(member, value):
                return converter.structure(value, member)
        raise TypeError(f"{value!r} matches none of {tp}")

    return structure_union


converter.register_structure_hook_factory(_is_union, _union_hook_factory)


def _strict_prim(tp: type) -> Callable[[Any, Any], Any]:
    def structure_prim(value: Any, _: Any) -> Any:
        if not _matches(tp, value):
            raise TypeError(f"expected {tp.__name__}, got {type(value).__name__}")
        return value

    return structure_prim


for _tp in (str, bool, int, float):
    converter.register_structure_hook(_tp, _strict_prim(_tp))


def _any_dict(value: Any, _: Any) -> Any:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


converter.register_structure_hook(typing.Any, lambda v, _: v)


def _is_any_dict(tp: Any) -> bool:
    if tp is dict or tp is Mapping:
        return True
    return get_origin(tp) in (dict, Mapping) and get_args(tp)[1:] == (Any,)


converter.register_structure_hook_func(_is_any_dict, _any_dict)
