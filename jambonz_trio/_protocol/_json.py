"""Hardened JSON in and out: the only place the protocol core touches ``json``."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .._errors import LocalProtocolError, MessageTooLarge, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_OUTBOUND_BYTES",
    "MAX_INBOUND_TOKENS",
    "TooComplex",
    "dumps_checked",
    "encoded_size",
    "loads_object",
]

#: jambonz's ``maxPayload`` for frames it receives (``JAMBONES_WS_MAX_PAYLOAD``).
DEFAULT_MAX_OUTBOUND_BYTES = 24 * 1024

#: Most structural tokens (``{`` ``[`` ``,`` ``:`` outside strings) one inbound message may
#: hold. Each stands for about one parsed value (a dict, a list slot, a number, a key), and a
#: parsed value costs up to ~70 bytes: ``[{},{},...]`` turns 1 MiB of JSON into ~24 MiB of
#: dicts. At most 32,768 tokens keep a 1 MiB message under ~3.5 MiB parsed; jambonz's own
#: messages hold tens to a few hundred.
MAX_INBOUND_TOKENS = 32_768


class TooComplex(RemoteProtocolError):
    """An inbound message holds more than :data:`MAX_INBOUND_TOKENS` JSON values (refused
    before parsing: the engine closes the socket with 1009, as for a message too big)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):  # 1e400: refused like Infinity itself
        raise ValueError("number out of range")
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
# A string literal, or an unterminated one up to the end of the text (so that every match
# attempt succeeds and the scan stays linear, whatever the quotes and backslashes). The
# quantifiers are possessive: a match never backtracks, so the regex engine keeps no state per
# escape (a greedy group kept ~130 bytes per escape: 60 MB for a 1 MB transcript of them).
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)


def _tokens(text: str) -> int:
    return text.count(",") + text.count(":") + text.count("[") + text.count("{")


def _check_tokens(text: str, limit: int) -> None:
    """Refuse ``text`` if it holds over ``limit`` structural tokens outside strings (counted
    in C: first with strings included, and only if that is over, without them)."""
    if len(text) <= limit or _tokens(text) <= limit:
        return
    # Valid JSON holds at most one string more than its ``,`` and ``:``: more quotes than that
    # means too complex or no JSON at all, and skipping each string costs the regex engine a
    # match (500,000 empty strings: ten times the parse of a valid 1 MiB message). Quotes
    # after a backslash are left out (at worst a real one after an escaped backslash: fewer).
    quotes = text.count('"') - text.count('\\"')
    if quotes > 2 * (limit + 1):
        raise TooComplex(f"message too complex: {quotes // 2} JSON strings (limit {limit})")
    count = _tokens(_STRING.sub("", text))
    if count > limit:
        raise TooComplex(f"message too complex: {count} JSON values (limit {limit})")


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def loads_object(text: str, max_tokens: int = MAX_INBOUND_TOKENS) -> dict[str, Any]:
    """Parse one inbound frame, which must be a JSON object.

    Raises:
        TooComplex: over ``max_tokens`` values (checked before parsing).
        RemoteProtocolError: for invalid JSON, NaN/Infinity (also as ``1e400``), integers too
            long to convert, nesting deep enough to exhaust the stack, or a non-object top
            level. Nothing else escapes.
    """
    _check_tokens(text, max_tokens)
    try:
        obj = _decoder.decode(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise RemoteProtocolError(f"invalid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"top level is a JSON {type(obj).__name__}, not an object")
    return obj


def encoded_size(text: str) -> int:
    """UTF-8 size of ``text``; raises :class:`LocalProtocolError` for unencodable text."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"outbound text cannot be encoded as UTF-8: {exc.reason}") from None


def dumps_checked(obj: Any, limit: int | None) -> str:
    """Serialise ``obj`` compactly and enforce the outbound byte limit.

    Raises:
        LocalProtocolError: the value is not JSON-serialisable (including NaN or a lone
            surrogate).
        MessageTooLarge: the UTF-8 encoding is over ``limit`` bytes.
    """
    try:
        text = _encoder.encode(obj)
    except (TypeError, ValueError, RecursionError) as exc:
        raise LocalProtocolError(f"cannot serialise outbound message: {exc}") from None
    if limit is not None and len(text) * 4 > limit:  # below that, no encoding can exceed it
        size = encoded_size(text)
        if size > limit:
            raise MessageTooLarge(size, limit)
    elif not text.isascii():
        encoded_size(text)  # still refuse lone surrogates
    return text
