"""jambonz's key casing: every key of an outgoing ``data`` is passed through npm ``to-snake-case``.

A faithful port of ``to-no-case`` / ``to-space-case`` / ``to-snake-case`` 1.x and of the
feature server's ``snakecase-keys.js`` (protocol.md §3.2), so payloads built by the fake look
exactly like jambonz's: ``callSid`` -> ``call_sid``, ``X-My-Header`` -> ``x_my_header``,
``_customerData`` -> ``customerdata``. Keys named ``customerData``, ``sip``, ``env_vars`` and
``args`` are kept, and their values are not descended into.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["EXCLUDED_KEYS", "snake_case", "snake_case_keys"]

EXCLUDED_KEYS = frozenset({"customerData", "sip", "env_vars", "args"})

# JavaScript regexes without the ``u`` flag: \W and \s are ASCII-ish, hence re.ASCII.
_HAS_SPACE = re.compile(r"\s", re.ASCII)
_HAS_SEPARATOR = re.compile(r"(_|-|\.|:)")
_HAS_CAMEL = re.compile(r"([a-z][A-Z]|[A-Z][a-z])")
_SEPARATOR_SPLITTER = re.compile(r"[\W_]+(.|$)", re.ASCII | re.DOTALL)
_CAMEL_SPLITTER = re.compile(r"(.)([A-Z]+)", re.DOTALL)


def _unseparate(s: str) -> str:
    return _SEPARATOR_SPLITTER.sub(lambda m: " " + m.group(1) if m.group(1) else "", s)


def _uncamelize(s: str) -> str:
    return _CAMEL_SPLITTER.sub(lambda m: m.group(1) + " " + " ".join(m.group(2).lower()), s)


def _to_no_case(s: str) -> str:
    if _HAS_SPACE.search(s):
        return s.lower()
    if _HAS_SEPARATOR.search(s):
        return (_unseparate(s) or s).lower()
    if _HAS_CAMEL.search(s):
        return _uncamelize(s).lower()
    return s.lower()


def snake_case(key: str) -> str:
    """``to-snake-case``: ``"callSid"`` -> ``"call_sid"``, ``"a.b"`` -> ``"a_b"``."""
    spaced = _SEPARATOR_SPLITTER.sub(
        lambda m: " " + m.group(1) if m.group(1) else "", _to_no_case(key)
    ).strip()
    return re.sub(r"\s", "_", spaced)


def snake_case_keys(value: Any) -> Any:
    """Deep-convert the keys of ``value`` like jambonz does before sending ``data``."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in EXCLUDED_KEYS:
                out[k] = v
            else:
                out[snake_case(str(k))] = snake_case_keys(v)
        return out
    if isinstance(value, list | tuple):
        return [snake_case_keys(v) for v in value]
    return value
