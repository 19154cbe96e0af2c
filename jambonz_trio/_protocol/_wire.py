"""The one cattrs converter, the base of every wire model, and the naming rules of the wire.

The wire is mixed-case: verb options are camelCase (``actionHook``), command payloads and
everything jambonz sends are snake_case (``call_status``), and a few names are fixed exceptions
(``from``, ``customerData``, ``account_sid`` inside ``message``). So each model class declares its
``STYLE``, and single fields override it with ``metadata={WIRE: "name"}`` - never one global rule.

Every :class:`Model` subclass gets its hooks from two cattrs hook factories registered here, built
on first use (no per-class registration):

* unstructuring omits every field whose default is ``None`` while it is still ``None`` (the wire
  never carries ``null`` for an unset option) and the fields marked ``metadata={ENVELOPE: ...}``
  (a command's ``callSid`` travels beside its ``data``, not in it);
* structuring is strict: unknown keys, values of the wrong JSON type and enum values not listed
  are refused (what an application sends is checked the way jambonz's validator checks it).

A model with a ``VERB`` class attribute is a verb: it is written with its ``"verb"`` key, except
where another model embeds it as an option (``gather.say``, ``dial.dub``), which specs.json types
as the bare property object.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

__all__ = [
    "ENVELOPE",
    "WIRE",
    "Model",
    "Style",
    "converter",
    "present",
    "structure_strict",
    "to_wire_name",
    "unstructure_hook",
]

Style = Literal["camel", "snake"]
WIRE = "wire"  # attrs metadata key for an explicit wire name
ENVELOPE = "envelope"  # attrs metadata key of a field that is not part of the model's dict

converter = cattrs.Converter()

_T = TypeVar("_T")


def present(**fields: Any) -> dict[str, Any]:
    """The given wire keys whose value is not ``None``, in order: an unset optional key is left
    out, never sent as ``null``."""
    return {key: value for key, value in fields.items() if value is not None}


class Model:
    """Base of every model the converter reads and writes (verbs, their options, commands).

    Subclasses are ``@attrs.frozen(kw_only=True, repr=False)`` classes; their ``repr`` shows the
    fields that are set (not ``None``, not at their default), never those with ``repr=False``
    (credentials).
    """

    __slots__ = ()

    #: How field names are written on the wire when a field gives no ``WIRE`` name.
    STYLE: ClassVar[Style] = "camel"

    def __repr__(self) -> str:
        shown = []
        for field in attrs.fields(type(self)):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if field.repr and value is not field.default and value != field.default:
                shown.append(f"{field.name}={value!r}")
        return f"{type(self).__qualname__}({', '.join(shown)})"


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


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Model) and attrs.has(tp)


def _embedded_verb_hook(tp: Any) -> Callable[[Any], Any] | None:
    """How to write a field that embeds verbs (``Say | None``, ``list[Dub] | None``): as bare
    property objects, without ``"verb"``. ``None`` for any other field."""
    members = [m for m in get_args(tp) if m is not type(None)] if _is_union(tp) else [tp]
    if len(members) != 1:
        return None
    (tp,) = members
    is_list = get_origin(tp) is list
    item = get_args(tp)[0] if is_list else tp
    if not (_is_model(item) and hasattr(item, "VERB")):
        return None
    body = _body_hook(item)
    return (lambda items: [body(i) for i in items]) if is_list else body


_BODY_HOOKS: dict[type[Any], Callable[[Any], dict[str, Any]]] = {}


def _body_hook(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """Unstructure ``cls``'s fields (no ``"verb"`` key) under their wire names."""
    if cls in _BODY_HOOKS:
        return _BODY_HOOKS[cls]
    # resolved by attrs (cached on the fields): a public class's __module__ names the public
    # module, where get_type_hints would not find the names its annotations use
    attrs.resolve_types(cls)
    hints = {f.name: f.type for f in attrs.fields(cls)}
    overrides: dict[str, Any] = {}
    for f in attrs.fields(cls):
        if ENVELOPE in f.metadata:
            overrides[f.name] = override(omit=True)
            continue
        overrides[f.name] = override(
            rename=to_wire_name(f, cls.STYLE),
            omit_if_default=f.default is None,
            unstruct_hook=_embedded_verb_hook(hints[f.name]),
        )
    fn: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(cls, converter, **overrides)
    _BODY_HOOKS[cls] = fn
    return fn


def unstructure_hook(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """How a model is written: its fields under their wire names (and ``"verb"``, for a verb).
    For a model whose writing adds a rule of its own to this one."""
    return _unstructure_hook(cls)


def _unstructure_hook(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    body = _body_hook(cls)
    tag = getattr(cls, "VERB", None)
    if tag is None:
        return body

    def unstructure_verb(v: Any) -> dict[str, Any]:
        out = {"verb": tag}
        out.update(body(v))
        return out

    return unstructure_verb


def _structure_hook(cls: type[Any]) -> Callable[[Any, Any], Any]:
    # an envelope field is read under its envelope key: the caller merges the envelope in
    overrides: dict[str, Any] = {
        f.name: override(rename=f.metadata.get(ENVELOPE) or to_wire_name(f, cls.STYLE))
        for f in attrs.fields(cls)
    }
    fn: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls, converter, _cattrs_forbid_extra_keys=True, **overrides
    )
    return fn


converter.register_unstructure_hook_factory(_is_model, _unstructure_hook)
converter.register_structure_hook_factory(_is_model, _structure_hook)


def structure_strict(data: Any, cls: type[_T]) -> _T:
    """Structure ``data`` as ``cls``, turning every cattrs error into one ``ValueError``.

    Raises:
        ValueError: naming each problem (unknown key, wrong type, value not in an enum...).
    """
    try:
        return converter.structure(data, cls)
    except Exception as exc:  # cattrs raises ClassValidationError (a group), TypeError, ...
        raise ValueError(_describe(exc)) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, KeyError):  # cattrs: a required key is missing
        return f"missing {exc.args[0]!r}"
    return str(exc)


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
