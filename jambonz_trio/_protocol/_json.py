"""Hardened JSON in and out: the only place the protocol core touches ``json``."""

from __future__ import annotations

import json
from typing import Any

from .._errors import LocalProtocolError, MessageTooLarge, RemoteProtocolError

__all__ = ["DEFAULT_MAX_OUTBOUND_BYTES", "dumps_checked", "encoded_size", "loads_object"]

#: jambonz's ``maxPayload`` for frames it receives (``JAMBONES_WS_MAX_PAYLOAD``).
DEFAULT_MAX_OUTBOUND_BYTES = 24 * 1024


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def loads_object(text: str) -> dict[str, Any]:
    """Parse one inbound frame, which must be a JSON object.

    Raises:
        RemoteProtocolError: for invalid JSON, NaN/Infinity, integers too long to convert,
            nesting deep enough to exhaust the stack, or a non-object top level. Nothing else
            escapes.
    """
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
