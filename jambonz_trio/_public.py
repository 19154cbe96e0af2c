"""How the public API is presented: public module paths, no public constructors, deprecated names.

* :func:`fixup_module_metadata` sets ``__module__`` of every exported class and function to the
  public module that exports it, so reprs and tracebacks show ``jambonz_trio.Call``, not
  ``jambonz_trio._call.Call`` (trio does the same in its ``__init__``).
* :class:`NoPublicConstructor`: classes users get from a factory (``serve_jambonz`` gives the
  server, the server gives calls...) raise ``TypeError`` when called; the library builds them
  with :func:`create`.
* :func:`deprecated_aliases` keeps old names importable for one release, with a
  ``DeprecationWarning`` naming the new one.
* :class:`Forwarded`: a read-only attribute that reads another object's attribute, declared in
  one documented line instead of a property that only returns ``self.<x>.<y>``.
* :func:`refuse_own_options`: an operation taking a model's ``**options`` refuses, by name,
  one that sets a field it sets itself.
"""

from __future__ import annotations

import abc
import importlib
import inspect
import operator
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Generic, Never, NoReturn, TypeVar, cast, overload

import attrs

__all__ = [
    "Forwarded",
    "NoPublicConstructor",
    "create",
    "deprecated_aliases",
    "fixup_module_metadata",
    "refuse_own_options",
]

_T = TypeVar("_T")


class NoPublicConstructor(abc.ABCMeta):
    """Metaclass of classes the library builds itself (see :func:`create`).

    ``Cls(...)`` raises ``TypeError`` naming the factory to use, given in the class body as
    ``_FACTORY = "serve_jambonz"`` (a sentence part: ``get one from <factory>``). It derives from
    ``ABCMeta`` so that it also serves classes with abstract bases (``Mapping``,
    ``trio.abc.AsyncResource``).
    """

    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        factory = getattr(cls, "_FACTORY", "the library")
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor; get one from {factory}"
        )


def create(cls: type[_T], *args: Any, **kwargs: Any) -> _T:
    """Build an instance of a :class:`NoPublicConstructor` class (library use only)."""
    return type.__call__(cls, *args, **kwargs)  # type: ignore[no-any-return]


def fixup_module_metadata(module_name: str, namespace: Mapping[str, Any]) -> None:
    """Give every class and function exported by ``module_name`` (its ``__all__``, values in
    ``namespace``) that public module as ``__module__``, unless it already has a public one (a
    name exported twice keeps its first home: import the submodules first).

    Annotations are resolved first, for every class before any module changes: they are
    strings (``from __future__ import annotations``) that ``typing.get_type_hints`` (cattrs,
    Hypothesis, documentation tools, attrs) evaluates in the module ``__module__`` names, which
    would no longer be the one that imports the names they use.
    """
    moving = []
    for name in namespace["__all__"]:
        obj = namespace[name]
        current = getattr(obj, "__module__", None)
        if not isinstance(current, str) or not current.startswith("jambonz_trio"):
            continue  # a name from another package (or a typing alias)
        if not any(part.startswith("_") for part in current.split(".")):
            continue  # already public
        if not (isinstance(obj, type) or callable(obj)):
            continue
        if isinstance(obj, type):
            _resolve_annotations(obj)
            if attrs.has(obj):
                attrs.resolve_types(obj)
        moving.append(obj)
    for obj in moving:
        obj.__module__ = module_name


def _resolve_annotations(cls: type) -> None:
    """Replace the class's own string annotations by what they name, evaluated where the class
    was defined (a name only imported for type checking stays a string)."""
    own = inspect.get_annotations(cls)
    if not any(isinstance(value, str) for value in own.values()):
        return
    namespace = vars(sys.modules[cls.__module__])
    local = dict(vars(cls))
    for key, value in own.items():
        if isinstance(value, str):
            try:
                own[key] = eval(value, namespace, local)
            except NameError:
                pass
    cls.__annotations__ = own


def deprecated_aliases(module_name: str, aliases: Mapping[str, tuple[str, str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving old names: ``aliases`` maps an old name to ``(module,
    new name)``; using the old name warns (``DeprecationWarning``) and returns the new object."""

    def __getattr__(name: str) -> Any:
        target = aliases.get(name)
        if target is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        where, new = target
        warnings.warn(
            f"{module_name}.{name} is deprecated; use {where}.{new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(where), new)

    return __getattr__


class Forwarded(Generic[_T]):
    """A read-only attribute whose value is read along ``path`` from the instance:
    ``to = Forwarded[str | None]("info.to", "The called number.")`` in a class body makes
    ``obj.to`` return ``obj.info.to``, as a property would, with ``doc`` as its docstring
    (``help()`` shows it). ``copy=True`` returns ``list(value)``: a snapshot the caller may keep.
    Assigning raises ``AttributeError``, as for a property without a setter.
    """

    def __init__(self, path: str, doc: str, *, copy: bool = False) -> None:
        self.copy = copy
        self.name = path
        self.__doc__ = doc
        self._get = operator.attrgetter(path)

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    def read(self, instance: Any) -> _T:
        """The value for ``instance`` (a subclass may read it another way)."""
        value = self._get(instance)  # of the type declared: Forwarded[<type>]
        return cast(_T, list(value) if self.copy else value)

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Forwarded[_T]: ...

    @overload
    def __get__(self, instance: object, owner: type[Any]) -> _T: ...

    def __get__(self, instance: object, owner: type[Any]) -> Forwarded[_T] | _T:
        return self if instance is None else self.read(instance)

    def __set__(self, instance: object, value: Never) -> NoReturn:  # Never: mypy refuses assignments
        raise AttributeError(f"property {self.name!r} of {type(instance).__name__!r} object has no setter")


def refuse_own_options(operation: str, options: Mapping[str, Any], own: Mapping[str, str]) -> None:
    """Refuse a keyword option that names a field ``operation`` sets itself from its own
    parameters (``own``: each such field, and what to pass instead), before the model's
    constructor would say "got multiple values for keyword argument", which names neither
    the cause nor the fix.

    Raises:
        TypeError: naming the option and what to pass instead.
    """
    for name, instead in own.items():
        if name in options:
            raise TypeError(f"{operation}() got {name!r}: {instead}")
