"""Pure functions reproducing what feature-server 0.9.8 does with frames from the app.

``check_envelope`` is ws-requestor.js ``_onMessage`` (protocol.md §7), including JavaScript's
truthiness (``[]`` and ``{}`` are truthy, ``0`` and ``""`` are not); ``parse_app_command``
checks a command against what the 0.9.8 handlers can read, using the library's strict
``parse_command``.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from .._protocol import COMMAND_TYPES, Command, parse_command
from ._records import ViolationKind

__all__ = [
    "MTYPE_NO_DATA",
    "TTS_COMMANDS",
    "check_envelope",
    "dumps",
    "js_len",
    "js_str",
    "new_msgid",
    "parse_app_command",
    "truthy",
]

#: Commands whose ``data`` may be missing (``MTYPE_NO_DATA`` in ws-requestor.js).
MTYPE_NO_DATA = frozenset({"llm:tool-output", "tts:flush", "tts:clear"})
#: Commands served by the fake's TTS model instead of the ``expect_command`` inbox.
TTS_COMMANDS = frozenset({"tts:tokens", "tts:flush", "tts:clear"})

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def new_msgid() -> str:
    """A fresh msgid shaped like jambonz's (short-uuid: base58 of a uuid4, ~22 chars)."""
    n = uuid.uuid4().int
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    return "".join(reversed(out))


def truthy(v: Any) -> bool:
    """JavaScript truthiness of a JSON value."""
    if v is None or v is False:
        return False
    if isinstance(v, int | float) and not isinstance(v, bool):
        return v != 0 and not math.isnan(v)
    if isinstance(v, str):
        return v != ""
    return True


def js_str(v: Any) -> str:
    """``${v}`` in JavaScript, for the value kinds JSON can produce."""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, dict):
        return "[object Object]"
    if isinstance(v, list):
        return ",".join("" if x is None else js_str(x) for x in v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def js_len(s: str) -> int:
    """``String.length`` in JavaScript (UTF-16 code units)."""
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def _reject_constant(name: str) -> Any:
    raise ValueError(f"Unexpected token '{name[0]}', \"{name}\" is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def dumps(obj: Any, *, allow_nan: bool = True) -> str:
    """Compact JSON, as jambonz's ``JSON.stringify`` sends it (``allow_nan=False``: a NaN or
    infinity raises ``ValueError``)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=allow_nan)


def check_envelope(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """jambonz's checks of one frame from the app.

    Returns:
        ``(obj, None)`` for an ``ack`` or ``command`` jambonz dispatches, or ``(None,
        details)`` when it answers with ``jambonz:error`` ``InvalidMessage`` (``details`` is
        the error message it puts in the reply; JSON parse errors use Python's wording).
    """
    try:
        obj = _decoder.decode(text)
    except (ValueError, RecursionError) as exc:
        return None, str(exc)
    if obj is None:
        return None, "Cannot destructure property 'type' of 'obj' as it is null."
    fields: dict[str, Any] = obj if isinstance(obj, dict) else {}
    mtype = fields.get("type")
    if not truthy(mtype):
        return None, "type property not supplied"
    if mtype == "ack":
        if not truthy(fields.get("msgid")):
            return None, "msgid not supplied"
        return fields, None
    if mtype == "command":
        command = fields.get("command")
        if not truthy(command):
            return None, "command property not supplied"
        if not truthy(fields.get("data")) and command not in MTYPE_NO_DATA:
            return None, "data property not supplied"
        return fields, None
    return None, f"invalid type property: {js_str(mtype)}"


def parse_app_command(
    obj: dict[str, Any],
) -> tuple[Command | None, tuple[ViolationKind, str] | None]:
    """The typed command, and the violation if 0.9.8 could not use it as sent.

    A snake ``call_sid`` is a violation but the command is still returned (jambonz runs it on
    the session's own call). An unknown name or a ``data`` shape the handler cannot read gives
    no command. ``[]`` / ``{}`` data are accepted as jambonz does.
    """
    snake = "call_sid" in obj
    envelope = {k: v for k, v in obj.items() if k != "call_sid"}
    name, data = envelope.get("command"), envelope.get("data")
    try:
        if isinstance(data, list | dict) and not data:
            # [] and {} are truthy for jambonz; parse_command would call them missing.
            parser = COMMAND_TYPES.get(name) if isinstance(name, str) else None
            if parser is None:
                raise ValueError(f"invalid command {name!r} (not handled by 0.9.8)")
            cmd: Command = parser(data, envelope)
        else:
            cmd = parse_command(envelope)
    except Exception as exc:  # ValueError, and cattrs / shape errors from the parsers
        verbs_involved = name == "redirect" and (
            isinstance(data, list)
            or (isinstance(data, dict) and bool({"parent_call", "child_call"} & set(data)))
        )
        kind: ViolationKind = "invalid-verbs" if verbs_involved else "invalid-command"
        return None, (kind, f"{js_str(name)} command not usable by jambonz 0.9.8: {exc}")
    if snake:
        return cmd, (
            "invalid-command",
            f"{name} command carries snake 'call_sid': jambonz ignores it and targets "
            "the session's own call (use 'callSid')",
        )
    return cmd, None
