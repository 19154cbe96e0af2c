"""Base machinery for verb models: the ``Verb`` base class, hooks and the verb registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal, TypeVar

import attrs

from ._wire import Style, converter, register_model

__all__ = [
    "VERB_ALIASES",
    "VERBS",
    "Hook",
    "HookSpec",
    "RawVerb",
    "Verb",
    "VerbLike",
    "nested",
    "structure_verbs",
    "unstructure_verbs",
    "verb",
]


@attrs.frozen(kw_only=True)
class HookSpec:
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

register_model(HookSpec, "camel")


@attrs.frozen(kw_only=True)
class Verb:
    """Base class of every verb model. ``id`` is echoed in ``verb:status`` and ``verb_id``."""

    VERB: ClassVar[str]
    id: str | None = None


@attrs.frozen(kw_only=True)
class RawVerb(Verb):
    """Escape hatch: a verb given as the exact dict to send (e.g. a verb of a newer jambonz).

    ``data`` must contain the ``"verb"`` key; it is sent verbatim and not validated.
    """

    VERB: ClassVar[str] = "<raw>"
    data: Mapping[str, Any]

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.data.get("verb"), str):
            raise ValueError('RawVerb data needs a string "verb" key')


#: Anything accepted where a verb list is expected.
VerbLike = Verb

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

_V = TypeVar("_V", bound=Verb)
_N = TypeVar("_N")


def verb(name: str) -> Callable[[type[_V]], type[_V]]:
    """Class decorator: register a verb model under its wire name (``"say"``, ``"sip:request"``)."""

    def register(cls: type[_V]) -> type[_V]:
        cls.VERB = name
        register_model(cls, "camel")
        fields_fn = converter.get_unstructure_hook(cls)

        def unstructure_verb(v: Any) -> dict[str, Any]:
            out: dict[str, Any] = {"verb": name}
            out.update(fields_fn(v))
            return out

        converter.register_unstructure_hook(cls, unstructure_verb)
        VERBS[name] = cls
        return cls

    return register


def nested(style: Style = "camel") -> Callable[[type[_N]], type[_N]]:
    """Class decorator for nested option objects (synthesizer, target, ...)."""

    def register(cls: type[_N]) -> type[_N]:
        return register_model(cls, style)

    return register


converter.register_unstructure_hook(RawVerb, lambda v: dict(v.data))


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
            out.append(converter.structure(props, cls))
        except Exception as exc:  # cattrs raises ClassValidationError (an ExceptionGroup)
            raise ValueError(f"{name}: {_describe(exc)}") from None
    return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return str(exc)
