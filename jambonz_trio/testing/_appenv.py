"""jambonz's env-var schema discovery, as its api-server does it: ``OPTIONS`` and the checks.

jambonz's portal shows a form for an application's environment variables after asking the
api-server ``GET /v1/AppEnv?url=<call hook>``, which sends ``OPTIONS`` to the call hook's URL
(``ws://`` read as ``http://``, path and query kept, header ``Accept: application/json``, no
credentials) and answers (jambonz-api-server v0.9.6 lib/utils/appenv_utils.js:14-41,
lib/routes/api/appenv.js:23-45):

* 200 with the app's JSON when it passes the checks of lib/utils/appenv_schemaSchema.json;
* 400 ``Invalid appenv schema`` when it does not (the portal shows that message);
* 204 (no form) when the app answers a non-2xx status, a body that is not JSON, or a falsy
  JSON value, or cannot be reached.

:func:`fetch_app_env` plays that request against an app; :func:`app_env_errors` is the check,
written from appenv_schemaSchema.json (a draft-07 JSON schema compiled by ajv 8).
"""

from __future__ import annotations

import json
import re
from typing import Any

import h11
import trio

from ._errors import FakeJambonzError
from ._transport import Connector, TcpConnector

__all__ = ["InvalidAppEnvSchema", "app_env_errors", "fetch_app_env"]

#: appenv_schemaSchema.json:7 (a JavaScript ``$``: the end of the string only).
_NAME = re.compile(r"[a-zA-Z0-9_]+")
_TYPES = ("string", "number", "boolean")
#: What Node's fetch sent, observed on the wire (Node 20; the api-server's image runs Node 24).
_HEADERS = (
    ("Accept", "application/json"),
    ("Accept-Language", "*"),
    ("Sec-Fetch-Mode", "cors"),
    ("User-Agent", "node"),
)


class InvalidAppEnvSchema(FakeJambonzError):
    """The app answered ``OPTIONS`` with JSON that jambonz's api-server refuses: the portal
    would show "Invalid appenv schema" and no form.

    Attributes:
        errors: what is wrong, one line each.
        schema: the JSON the app answered.
    """

    def __init__(self, errors: list[str], schema: Any) -> None:
        super().__init__(
            "jambonz would refuse this env-var schema (Invalid appenv schema): " + "; ".join(errors)
        )
        self.errors = tuple(errors)
        self.schema = schema


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def app_env_errors(schema: object) -> list[str]:
    """What jambonz's api-server finds wrong with an env-var schema (empty: it accepts it).

    The rules of appenv_schemaSchema.json: a JSON object with at least one entry (line 5), each
    key made of ASCII letters, digits and ``_`` (lines 4, 7), each value an object (8) with a
    string ``description`` and a ``type`` of ``string``/``number``/``boolean`` (10-20, 44-47),
    and, when present, a boolean ``required`` and ``obscure``, a string, number or boolean
    ``default`` and an array ``enum`` (21-42). Other fields (``uiHint``, ``jambonzResource``)
    are not checked, and a default of another type than declared passes.
    """
    if not isinstance(schema, dict):
        return ["the schema must be a JSON object"]
    if not schema:
        return ["the schema must have at least one variable (an empty object is refused)"]
    errors: list[str] = []
    for name, entry in schema.items():
        if not _NAME.fullmatch(name):
            errors.append(f"variable name {name!r} must match ^[a-zA-Z0-9_]+$")
            continue
        if not isinstance(entry, dict):
            errors.append(f"{name}: must be an object")
            continue
        for field in ("type", "description"):
            if field not in entry:
                errors.append(f"{name}: {field} is required")
        if "description" in entry and not isinstance(entry["description"], str):
            errors.append(f"{name}: description must be a string")
        if "type" in entry and entry["type"] not in _TYPES:
            errors.append(f"{name}: type must be one of {', '.join(_TYPES)}")
        for field in ("required", "obscure"):
            if field in entry and not isinstance(entry[field], bool):
                errors.append(f"{name}: {field} must be a boolean")
        if "default" in entry:
            default = entry["default"]
            if not (isinstance(default, str | bool) or _is_number(default)):
                errors.append(f"{name}: default must be a string, a number or a boolean")
        if "enum" in entry and not isinstance(entry["enum"], list):
            errors.append(f"{name}: enum must be an array")
    return errors


def _js_falsy(value: object) -> bool:
    """JavaScript's falsy JSON values: ``false``, ``0``, ``""``, ``null`` (``[]`` and ``{}``
    are truthy there)."""
    return value is None or value is False or value == "" or (_is_number(value) and value == 0)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def fetch_app_env(
    connector: Connector, path: str | None = None, *, max_bytes: int = 1 << 20
) -> dict[str, Any] | None:
    """Ask an app for its env-var schema the way jambonz's api-server does.

    Opens a connection with ``connector`` (``tcp_connector(url)`` or a server's
    ``connect_memory``), sends ``OPTIONS path`` (default: the connector's path, else ``/``)
    without credentials, and reads the answer (at most ``max_bytes`` of body).

    Returns the schema (what the portal would render), or ``None`` where jambonz answers 204
    (no form): a non-2xx status, a body that is not JSON or is a falsy JSON value, a
    connection that fails or closes early. Blocks until the app answers or closes; jambonz sets
    no timeout, so the caller owns it (``trio.fail_after``). Redirects are not followed
    (jambonz's would be): a 3xx answer raises.

    Raises:
        InvalidAppEnvSchema: JSON that jambonz refuses (its 400 "Invalid appenv schema").
        FakeJambonzError: a redirect, or a body over ``max_bytes``.
    """
    tcp = connector if isinstance(connector, TcpConnector) else None
    target = path if path is not None else (tcp.path if tcp is not None else "/")
    host = tcp.host_header if tcp is not None else "localhost"
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(method="OPTIONS", target=target, headers=[("Host", host), *_HEADERS])
    status: int | None = None
    body = bytearray()
    try:
        stream = await connector()
    except OSError:
        return None
    async with stream:
        try:
            await stream.send_all(client.send(request) + (client.send(h11.EndOfMessage()) or b""))
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(bytes(await stream.receive_some(65536)))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > max_bytes:
                        raise FakeJambonzError(f"the OPTIONS answer's body is over {max_bytes} bytes")
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return None
    if status is None or not 200 <= status < 300:
        if status is not None and 300 <= status < 400:
            raise FakeJambonzError(
                f"the app redirected OPTIONS {target} ({status}); the fake does not follow"
            )
        return None
    try:
        schema = json.loads(bytes(body), parse_constant=_reject_constant)
    except ValueError:  # includes a body that is not UTF-8
        return None
    if _js_falsy(schema):  # ``appenv && validate(appenv)``: "no schema" (appenv.js:31-38)
        return None
    errors = app_env_errors(schema)
    if errors:
        raise InvalidAppEnvSchema(errors, schema)
    return schema  # type: ignore[no-any-return]
