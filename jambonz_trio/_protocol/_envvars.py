"""The environment variables an application declares to the jambonz portal, and their values.

jambonz's portal asks an application which variables it takes: the api-server's
``GET /v1/AppEnv?url=<call hook>`` sends an HTTP ``OPTIONS`` to the call hook's URL (``ws://``
read as ``http://``, path and query kept; no credentials) and accepts a JSON object
``NAME -> {"type", "description", "required"?, "default"?, "enum"?, "obscure"?, ...}``
(jambonz-api-server v0.9.6 lib/utils/appenv_utils.js:14-41, lib/utils/appenv_schemaSchema.json:1-50,
lib/routes/api/appenv.js:23-45). The values saved in the portal come back in ``session:new`` as
``data.env_vars``, keys untouched (jambonz-feature-server v0.9.8 lib/middleware.js:437-452,
lib/utils/ws-requestor.js:190), and again in every ``session:reconnect`` (which re-sends the
``session:new`` payload, ws-requestor.js:191-192).

:class:`EnvVar` is one declaration, checked when it is made; :func:`schema_body` is the JSON
answered to ``OPTIONS``; :class:`EnvVars` is the typed, read-only view of the values a call got.
Pure data, no I/O: problems are returned, and the caller logs them.
"""

from __future__ import annotations

import builtins
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar, overload

import attrs

from ._wire import present

__all__ = ["EnvVar", "EnvVars", "UiHint", "JambonzResource", "apply_env", "check_env", "schema_body"]

T = TypeVar("T")
D = TypeVar("D")

#: How the portal renders a string variable (jambonz-webapp v0.9.6
#: src/containers/internal/views/applications/form.tsx:942-1010).
UiHint = Literal["input", "textarea", "filepicker"]
#: A jambonz object the portal offers as choices: ``carriers`` lists the account's VoIP
#: carriers, and the value is the carrier's name (form.tsx:592-615).
JambonzResource = Literal["carriers"]

_UI_HINTS = ("input", "textarea", "filepicker")
_RESOURCES = ("carriers",)
#: The api-server's pattern for variable names (appenv_schemaSchema.json:7).
_NAME = re.compile(r"[a-zA-Z0-9_]+")
#: Python type -> the schema's ``type`` (appenv_schemaSchema.json:13-20).
_WIRE_TYPES: dict[builtins.type[Any], str] = {str: "string", int: "number", float: "number", bool: "boolean"}
_KIND = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def _json_kind(value: object) -> str:
    """The JSON type of a value, for messages that must not show the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _conform(value: object, tp: builtins.type[Any]) -> tuple[bool, Any]:
    """``(True, typed value)`` if ``value`` is of the declared type, as jambonz checks it
    (``typeof value == type``, appenv_utils.js:61) plus what Python tells apart: ``bool`` is not
    a number, an ``int`` variable takes integral numbers only (``2.0`` becomes ``2``), a
    ``float`` one takes any finite number (as a ``float``)."""
    if tp is bool or tp is str:
        return isinstance(value, tp), value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False, None
    if isinstance(value, float) and not math.isfinite(value):
        return False, None
    if tp is int:
        if isinstance(value, float):
            return (True, int(value)) if value.is_integer() else (False, None)
        return True, value
    return True, float(value)


@attrs.frozen(init=False)
class EnvVar(Generic[T]):
    """One environment variable of a route, shown as a field in the jambonz portal.

    ``EnvVar("GREETING", description="What callers hear first", default="Hello")`` is a string;
    give ``int``, ``float`` or ``bool`` as the second argument for the other kinds
    (``"number"``/``"boolean"`` in the schema). Declare it on a route
    (``Route(path="/ivr", handler=ivr, env=[GREETING])``) and read it in the call with
    ``call.info.env_vars[GREETING]``, typed as declared.

    Everything declared here except the value is served without authentication (jambonz's
    api-server sends none): never put a secret in a description, default or enum.

    Args:
        name: the variable's name in the portal and in ``env_vars``: ASCII letters, digits and
            ``_`` only (jambonz's api-server refuses the whole schema otherwise).
        type: ``str`` (default), ``int``, ``float`` or ``bool``.
        description: the field's label in the portal; required, not blank.
        required: the portal will not save the application without a value. Not for ``bool``:
            the portal's checkbox would then save only ticked (jambonz-webapp v0.9.6
            src/containers/internal/views/applications/form.tsx:849-853).
        default: used when the call carries no (valid) value; pre-filled in the portal (only
            when truthy: the portal skips ``False``, ``0`` and ``""``). Of the declared type.
        enum: the allowed values (a dropdown in the portal for strings); a value outside it is
            treated as invalid. Of the declared type, not empty; ``default`` must be one.
        obscure: the portal masks the value (for secrets); such a variable has no default,
            because the schema is public.
        ui_hint: for strings: ``"input"``, ``"textarea"`` or ``"filepicker"`` (the text of an
            uploaded file becomes the value).
        jambonz_resource: for strings: ``"carriers"`` offers the account's carriers by name.

    Raises:
        TypeError: ``type`` is not one of the four, or an argument has the wrong Python type.
        ValueError: a bad name, a blank description, a default or enum member of the wrong
            type, a default outside the enum, an empty enum, a default on an ``obscure``
            variable, ``required`` on a ``bool``, or ``ui_hint`` / ``jambonz_resource`` on a
            non-string or unknown.
    """

    name: str
    type: builtins.type[T]
    description: str
    required: bool
    default: T | None
    enum: tuple[T, ...] | None
    obscure: bool
    ui_hint: UiHint | None
    jambonz_resource: JambonzResource | None

    @overload
    def __init__(
        self: EnvVar[str],
        name: str,
        *,
        description: str,
        required: bool = False,
        default: str | None = None,
        enum: Sequence[str] | None = None,
        obscure: bool = False,
        ui_hint: UiHint | None = None,
        jambonz_resource: JambonzResource | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        name: str,
        type: builtins.type[T],
        *,
        description: str,
        required: bool = False,
        default: T | None = None,
        enum: Sequence[T] | None = None,
        obscure: bool = False,
        ui_hint: UiHint | None = None,
        jambonz_resource: JambonzResource | None = None,
    ) -> None: ...

    def __init__(
        self,
        name: str,
        type: builtins.type[Any] = str,
        *,
        description: str,
        required: bool = False,
        default: Any = None,
        enum: Sequence[Any] | None = None,
        obscure: bool = False,
        ui_hint: UiHint | None = None,
        jambonz_resource: JambonzResource | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"env var name {name!r}: use ASCII letters, digits and _ only "
                "(jambonz's api-server refuses the whole schema otherwise)"
            )
        where = f"env var {name}"
        if type not in _WIRE_TYPES:
            raise TypeError(f"{where}: type must be str, int, float or bool, not {type!r}")
        if not isinstance(description, str) or not description.strip():
            raise ValueError(f"{where}: a description is required (the portal shows it as the label)")
        for flag, given in (("required", required), ("obscure", obscure)):
            if not isinstance(given, bool):
                raise TypeError(f"{where}: {flag} must be True or False")
        if required and type is bool:
            raise ValueError(
                f"{where}: a required boolean could only be true: the portal shows it as an HTML "
                "required checkbox, which saves only ticked; declare it without required= (with "
                "a default)"
            )
        kind = _KIND[type]
        if default is not None:
            ok, default = _conform(default, type)
            if not ok:
                raise ValueError(f"{where}: the default must be {kind}, as declared")
            if obscure:
                raise ValueError(
                    f"{where}: an obscure variable cannot have a default: the schema, defaults "
                    "included, is served to anyone without credentials"
                )
        members: tuple[Any, ...] | None = None
        if enum is not None:
            if isinstance(enum, str | bytes) or not isinstance(enum, Sequence):
                raise TypeError(f"{where}: enum must be a sequence of values (a list or tuple)")
            if not enum:
                raise ValueError(f"{where}: an empty enum allows no value")
            conformed = [_conform(member, type) for member in enum]
            if not all(ok for ok, _ in conformed):
                raise ValueError(f"{where}: every enum member must be {kind}, as declared")
            members = tuple(member for _, member in conformed)
            if default is not None and default not in members:
                raise ValueError(f"{where}: the default must be one of the enum members")
        for option, hint, allowed in (
            ("ui_hint", ui_hint, _UI_HINTS),
            ("jambonz_resource", jambonz_resource, _RESOURCES),
        ):
            if hint is None:
                continue
            if hint not in allowed:
                raise ValueError(f"{where}: {option} must be one of {', '.join(allowed)}, not {hint!r}")
            if type is not str:
                raise ValueError(f"{where}: {option} applies to string variables only")
        self.__attrs_init__(
            name=name,
            type=type,
            description=description,
            required=required,
            default=default,
            enum=members,
            obscure=obscure,
            ui_hint=ui_hint,
            jambonz_resource=jambonz_resource,
        )

    def to_wire(self) -> dict[str, Any]:
        """This variable's entry in the schema (unset options left out)."""
        return {
            "type": _WIRE_TYPES[self.type],
            "description": self.description,
            **present(
                required=self.required or None,
                default=self.default,
                enum=None if self.enum is None else list(self.enum),
                obscure=self.obscure or None,
                uiHint=self.ui_hint,
                jambonzResource=self.jambonz_resource,
            ),
        }


def check_env(env: Iterable[object], route: str) -> tuple[EnvVar[Any], ...]:
    """A route's declarations as a tuple; raises ``TypeError`` for anything that is not an
    :class:`EnvVar` and ``ValueError`` for a name declared twice."""
    out: list[EnvVar[Any]] = []
    seen: set[str] = set()
    for var in env:
        if not isinstance(var, EnvVar):
            raise TypeError(
                f"route {route}: env takes EnvVar declarations, not {builtins.type(var).__name__}"
            )
        if var.name in seen:
            raise ValueError(f"route {route}: env var {var.name} is declared twice")
        seen.add(var.name)
        out.append(var)
    return tuple(out)


def schema_body(env: Sequence[EnvVar[Any]]) -> bytes | None:
    """The JSON answered to ``OPTIONS``: one flat object, variables in declaration order (the
    portal's order); ``None`` when there is none (the portal refuses an empty object)."""
    if not env:
        return None
    schema = {var.name: var.to_wire() for var in env}
    return json.dumps(schema, separators=(",", ":"), allow_nan=False).encode("ascii")


_EMPTY: Mapping[str, Any] = MappingProxyType({})


class EnvVars(Mapping[str, Any]):
    """The environment variables a call got (``call.info.env_vars``): a read-only mapping.

    On a route that declares variables, each declared one maps to a value of its declared type:
    the value jambonz sent, else (absent, of the wrong type, outside the enum) its ``default``;
    a declared variable with neither is absent. Variables jambonz sent that the route does not
    declare are kept as sent (any JSON value). ``env_vars[VAR]`` with an :class:`EnvVar` key is
    typed for mypy too. Empty when jambonz sent none (the application has no variables set).

    The values are secrets as often as not: ``repr`` shows the names only.
    """

    __slots__ = ("_declared", "_values")

    def __init__(self, values: Mapping[str, Any] | None = None, declared: Sequence[EnvVar[Any]] = ()) -> None:
        # every message's call info has one: share the empty mappings instead of allocating
        self._values: Mapping[str, Any] = values if values is not None else _EMPTY
        self._declared: Mapping[str, EnvVar[Any]] = {v.name: v for v in declared} if declared else _EMPTY

    @property
    def declared(self) -> tuple[EnvVar[Any], ...]:
        """The declarations of the call's route (empty when it declares none)."""
        return tuple(self._declared.values())

    def _name(self, key: str | EnvVar[Any]) -> str:
        if isinstance(key, EnvVar):
            if self._declared.get(key.name) != key:
                raise KeyError(
                    f"env var {key.name} is not declared on this call's route: add it to "
                    "Route(env=[...]) (its value would not be checked against its type)"
                )
            return key.name
        return key

    @overload
    def __getitem__(self, key: EnvVar[T]) -> T: ...
    @overload
    def __getitem__(self, key: str) -> Any: ...
    def __getitem__(self, key: str | EnvVar[Any]) -> Any:
        """The value. Raises ``KeyError`` if it is absent, or if ``key`` is an :class:`EnvVar`
        the call's route does not declare (a mistake that would make the value untyped)."""
        return self._values[self._name(key)]

    @overload
    def get(self, key: EnvVar[T], default: None = None) -> T | None: ...
    @overload
    def get(self, key: EnvVar[T], default: D) -> T | D: ...
    @overload
    def get(self, key: str, default: Any = None) -> Any: ...
    def get(self, key: str | EnvVar[Any], default: Any = None) -> Any:
        """The value, or ``default`` if absent. An :class:`EnvVar` key the route does not
        declare raises ``KeyError`` (as with ``[]``): it is a mistake, not a missing value."""
        return self._values.get(self._name(key), default)

    def __contains__(self, key: object) -> bool:
        name = key.name if isinstance(key, EnvVar) else key
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"EnvVars(names={list(self._values)!r})"


def apply_env(raw: object, declared: Sequence[EnvVar[Any]]) -> tuple[EnvVars, list[str]]:
    """Type the ``env_vars`` of a call (``raw``: the ``data.env_vars`` value as received, or
    ``None``) against a route's declarations.

    Returns the view and the problems found, each naming the variable and what was wrong but
    never the value (the values may be secrets): a value of the wrong type or outside the
    enum (possible: jambonz checks values against the schema only when the app answered
    ``OPTIONS`` at save time, appenv_utils.js:43-72), a required variable not sent, an
    ``env_vars`` that is not an object.
    """
    problems: list[str] = []
    if raw is None:
        received: Mapping[str, Any] = {}
    elif isinstance(raw, dict):
        received = raw
    else:
        received = {}
        problems.append(f"env_vars is {_json_kind(raw)}, not an object; using the declared defaults")
    values = dict(received)
    for var in declared:
        fallback = "using its default" if var.default is not None else "it has no default"
        if var.name not in received:
            if var.required:
                problems.append(f"env var {var.name} is required but was not sent; {fallback}")
        else:
            value = received[var.name]
            ok, typed = _conform(value, var.type)
            if not ok:
                why = f"should be {_KIND[var.type]} but is {_json_kind(value)}"
            elif var.enum is not None and typed not in var.enum:
                ok, why = False, "is not one of its enum values"
            if ok:
                values[var.name] = typed
                continue
            problems.append(f"env var {var.name} {why}; {fallback}")
            if var.default is None:
                del values[var.name]
        if var.default is not None:
            values[var.name] = var.default
    return EnvVars(values, declared), problems
