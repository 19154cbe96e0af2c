"""Base machinery for verb models: the ``Verb`` base class, hooks and the verb registry."""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

import attrs

from ._wire import Model, converter, structure_strict

__all__ = [
    "VERB_ALIASES",
    "VERBS",
    "Hook",
    "HookSpec",
    "RawVerb",
    "Verb",
    "VerbLike",
    "register_verbs",
    "structure_verbs",
    "unstructure_verbs",
]


@attrs.frozen(kw_only=True, repr=False)
class HookSpec(Model):
    """A hook given as an object: where jambonz should send the hook, and how.

    On a WebSocket session a relative ``url`` travels over the call's socket (it is what the app
    sees as the message's ``hook``); an absolute ``http(s)://`` URL is sent as an HTTP webhook.
    """

    url: str
    method: Literal["GET", "POST", "WS"] | None = None
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)


#: A hook: a relative path / name (``"/gather"``), an absolute URL, or a :class:`HookSpec`.
Hook = str | HookSpec


@attrs.frozen(kw_only=True, repr=False)
class Verb(Model):
    """Base class of every verb model. ``id`` is echoed in ``verb:status`` and ``verb_id``."""

    VERB: ClassVar[str]
    id: str | None = None


@attrs.frozen(kw_only=True, repr=False)
class RawVerb(Verb):
    """Escape hatch: a verb given as the exact dict to send (e.g. a verb of a newer jambonz).

    ``data`` must contain the ``"verb"`` key; it is sent verbatim and not validated.
    """

    VERB: ClassVar[str] = "<raw>"
    data: Mapping[str, Any]

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.data.get("verb"), str):
            raise ValueError('RawVerb data needs a string "verb" key')


converter.register_unstructure_hook(RawVerb, lambda v: dict(v.data))

#: Anything accepted where a verb list is expected.
VerbLike = Verb

#: Verb name -> model, filled by :func:`register_verbs`.
VERBS: dict[str, type[Verb]] = {}

#: Aliases jambonz rewrites before validation (verb-specifications ``normalizeJambones``).
VERB_ALIASES: dict[str, tuple[str, dict[str, str]]] = {
    "stream": ("listen", {}),
    "s2s": ("llm", {}),
    "openai_s2s": ("llm", {"vendor": "openai"}),
    "microsoft_s2s": ("llm", {"vendor": "microsoft"}),
    "google_s2s": ("llm", {"vendor": "google"}),
    "elevenlabs_s2s": ("llm", {"vendor": "elevenlabs"}),
    "deepgram_s2s": ("llm", {"vendor": "deepgram"}),
    "voiceagent_s2s": ("llm", {"vendor": "voiceagent"}),
    "ultravox_s2s": ("llm", {"vendor": "ultravox"}),
}


def register_verbs(classes: Iterable[type[Verb]]) -> None:
    """Make :func:`structure_verbs` parse each class's ``VERB`` name into it."""
    VERBS.update({cls.VERB: cls for cls in classes})


def unstructure_verbs(verbs: Iterable[Verb]) -> list[dict[str, Any]]:
    """Turn verb models into the JSON-ready list an ack or ``redirect`` carries.

    Raises:
        TypeError: an element is not a :class:`Verb`.
    """
    out = []
    for v in verbs:
        if not isinstance(v, Verb):
            raise TypeError(f"expected a Verb model, got {type(v).__name__}")
        out.append(converter.unstructure(v))
    return out


def _is_verb_tuple(tp: Any) -> bool:
    """``tuple[Verb, ...]``, ``tuple[Say | Play, ...]``: a verb list field of a command."""
    args = get_args(tp)
    if get_origin(tp) is not tuple or len(args) != 2 or args[1] is not Ellipsis:
        return False
    members = get_args(args[0]) if get_origin(args[0]) in (Union, types.UnionType) else (args[0],)
    return all(isinstance(m, type) and issubclass(m, Verb) for m in members)


def structure_verbs(data: Any) -> list[Verb]:
    """Parse a wire verb list strictly, the way jambonz normalises it.

    Accepts both ``{"verb": "say", ...}`` and ``{"say": {...}}`` element forms and the verb
    aliases (``stream``, ``openai_s2s``...).

    Raises:
        ValueError: not a list of objects, an unknown verb, an unknown property or a value of
            the wrong type.
    """
    if not isinstance(data, list):
        raise ValueError("malformed jambonz payload: must be array")
    out: list[Verb] = []
    for item in data:
        if not isinstance(item, dict):
            raise ValueError("malformed jambonz payload: must be array of objects")
        if "verb" in item:
            name = item["verb"]
            props = {k: v for k, v in item.items() if k != "verb"}
        elif len(item) == 1:
            ((name, props),) = item.items()
            if not isinstance(props, dict):
                raise ValueError(f"{name}: verb body must be an object")
        else:
            raise ValueError("malformed jambonz payload: missing verb property")
        if not isinstance(name, str):
            raise ValueError("verb name must be a string")
        if name in VERB_ALIASES:
            name, preset = VERB_ALIASES[name]
            props = {**preset, **props}
        cls = VERBS.get(name)
        if cls is None:
            raise ValueError(f"invalid instruction: {name}")
        try:
            out.append(structure_strict(props, cls))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return out


converter.register_unstructure_hook_func(_is_verb_tuple, unstructure_verbs)
converter.register_structure_hook_func(_is_verb_tuple, lambda data, _: tuple(structure_verbs(data)))
