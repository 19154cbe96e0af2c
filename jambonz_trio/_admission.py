"""Admission of one TCP connection: the whole HTTP side of the websocket handshake.

We read and parse the HTTP request head ourselves (h11, once, bounded in bytes and time), decide
everything that can be decided on it - routing, plain-HTTP answers, subprotocol, ``Origin``,
Basic auth, header sanity - and answer refusals at once; an admitted upgrade gets its 101 from
:func:`._websocket.accept_response`. This removes, at the source, the request shapes that make
wsproto's handshake raise something other than its own ``RemoteProtocolError`` (a non-ASCII or
bad-IDNA ``Host``, non-ASCII comma headers: F1 under S-13 in docs/reliability.md), and frees junk
requests in milliseconds instead of holding them for trio-websocket's 60 s connect timeout (F8).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NoReturn

import attrs
import h11
import trio

from ._log import get_logger
from ._protocol._audio import AUDIO_SUBPROTOCOLS
from ._protocol._envvars import EnvVar, check_env, schema_body

__all__ = [
    "AdmissionRequest",
    "AudioRoute",
    "BasicAuth",
    "HandshakeBudget",
    "Identity",
    "MetricsPage",
    "Refusal",
    "Route",
    "admit",
    "judge",
    "http_response",
    "parse_basic_auth",
    "read_head",
    "source_key",
]

log = get_logger("jambonz_trio.server")

SUBPROTOCOL = "ws.jambonz.org"
_MAX_AUTH_HEADER = 1024


@attrs.frozen(kw_only=True)
class BasicAuth:
    """HTTP Basic credentials an app requires on the upgrade (jambonz sends them when the
    application's call hook has a username and password). ``password`` never shows in repr."""

    username: str
    password: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class Identity:
    """Who a connection authenticated as: used to bind a reconnect to the call's owner."""

    route: str
    username: str | None = None


@attrs.frozen(kw_only=True)
class AdmissionRequest:
    """What an async authenticator sees of the upgrade request (no ``Authorization`` header)."""

    path: str
    headers: tuple[tuple[str, str], ...]
    username: str | None
    password: str | None = attrs.field(repr=False)


#: ``async def authenticate(request) -> bool``: decides admission; bounded by the handshake
#: deadline (slow -> 503, raising -> 500).
Authenticator = Callable[[AdmissionRequest], Awaitable[bool]]


def _env_tuple(env: Iterable[EnvVar[Any]]) -> tuple[EnvVar[Any], ...]:
    return tuple(env)


@attrs.frozen(kw_only=True)
class Route:
    """One application on the server: its path, its handler and its admission policy.

    ``env``: the environment variables it takes (:class:`~jambonz_trio.EnvVar`), answered as
    JSON to an ``OPTIONS`` on its path (how jambonz's portal discovers them: no credentials
    needed, see docs/security.md) and typed in ``call.info.env_vars``. Checked here: raises
    ``TypeError`` for an entry that is not an ``EnvVar``, ``ValueError`` for a name declared
    twice.
    """

    path: str
    handler: Callable[[Any], Awaitable[None]]
    prefix: bool = False
    auth: BasicAuth | Authenticator | None = None
    allow_origins: frozenset[str] = frozenset()
    env: tuple[EnvVar[Any], ...] = attrs.field(default=(), converter=_env_tuple)

    def __attrs_post_init__(self) -> None:
        check_env(self.env, self.path)

    def matches(self, path: str) -> bool:
        """Whether this route serves ``path`` (without the query string)."""
        return _path_matches(self.path, self.prefix, path)

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """What the route accepts: jambonz's call sockets (``ws.jambonz.org``) only."""
        return (SUBPROTOCOL,)


def _path_matches(route_path: str, prefix: bool, path: str) -> bool:
    if prefix:
        base = route_path.rstrip("/")
        return path == base or path.startswith(base + "/")
    return path == route_path


@attrs.frozen(kw_only=True)
class AudioRoute:
    """Where jambonz's media server connects for ``listen`` / ``stream`` verbs: audio sockets
    only (a call socket here is refused, as an audio socket is on a :class:`Route`).

    Admission is the same as for calls (``auth``, ``allow_origins``, the server's limits),
    except that an ``Origin`` naming the request's own host (``http(s)://`` + the ``Host``
    header's host) is allowed: jambonz's media server always sends one. A relative listen URL
    reaches the same server with the call hook's credentials, so give the audio route the same
    ``auth`` as the call route.

    Attributes:
        handler: ``async def handler(stream: AudioStream)``, run (in the stream's own
            nursery) for every stream that no call handler started (:meth:`Call.listen
            <jambonz_trio.Call.listen>`) and no task waits for (``AudioStreams.wait_stream``).
            ``None``: such streams are closed (1008). Returning closes the stream (1000).
        subprotocols: the names accepted and echoed in the 101: the media server's default
            ``audio.drachtio.org`` and the documented ``audio.jambonz.org``; a deployment that
            sets ``MOD_AUDIO_FORK_SUBPROTOCOL_NAME`` lists its own. A client offering none is
            refused (jambonz always offers one).
    """

    path: str
    handler: Callable[[Any], Awaitable[None]] | None = None
    prefix: bool = False
    auth: BasicAuth | Authenticator | None = None
    allow_origins: frozenset[str] = frozenset()
    subprotocols: tuple[str, ...] = AUDIO_SUBPROTOCOLS

    def __attrs_post_init__(self) -> None:
        if not self.subprotocols or SUBPROTOCOL in self.subprotocols:
            raise ValueError(f"an audio route needs its own subprotocols (not {SUBPROTOCOL})")

    def matches(self, path: str) -> bool:
        """Whether this route serves ``path`` (without the query string)."""
        return _path_matches(self.path, self.prefix, path)


#: Anything ``serve_jambonz`` routes to.
AnyRoute = Route | AudioRoute


class Refusal(Exception):
    """Admission refused: answer ``status`` and close.

    ``why`` is for the log (it may quote the request, made safe there); ``reason`` is a fixed
    text of the library's, the label of the refusals metric (default: ``why``, which must then
    be a fixed text): a peer never chooses a label.
    """

    def __init__(
        self,
        status: int,
        why: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        reason: str | None = None,
    ) -> None:
        super().__init__(why)
        self.status = status
        self.why = why
        self.reason = reason or why
        self.headers = tuple(headers)
        self.body = body


_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


def http_response(status: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b"") -> bytes:
    """A complete ``HTTP/1.1`` response that closes the connection."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if status != 204:
        lines.append(f"Content-Length: {len(body)}")
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("ascii") + body


@attrs.frozen(kw_only=True)
class Admitted:
    """An upgrade that passed admission."""

    route: Route | AudioRoute
    identity: Identity
    path: str
    key: bytes  # Sec-WebSocket-Key, for the 101 reply
    trailing: bytes = b""  # bytes read past the request head (a first frame sent early)
    subprotocol: str = SUBPROTOCOL  # the one the 101 selects


@attrs.frozen
class MetricsPage:
    """What a plain ``GET`` on ``path`` answers: ``render()`` returns the content type and the
    body (the server's Prometheus metrics)."""

    path: str
    render: Callable[[], tuple[str, bytes]]


class Silent(EOFError):
    """The peer sent nothing within ``first_byte_timeout``: closed without an answer."""


async def read_head(
    stream: trio.abc.Stream,
    max_bytes: int,
    *,
    max_headers: int | None = None,
    first_byte_deadline: float | None = None,
) -> bytes:
    """Read until the end of the request head (and whatever came with it).

    Raises :class:`Refusal` (431) past ``max_bytes`` or past ``max_headers`` header lines -
    both counted on the raw bytes as they arrive, so a dribbled or padded head is refused
    before it is complete and before anything parses it - :class:`Silent` if not one byte
    came by ``first_byte_deadline``, and ``EOFError`` if the peer goes away first.
    """
    # the request line and each header line end with LF (h11 also takes a bare LF)
    max_lines = None if max_headers is None else max_headers + 1
    buf = bytearray()
    lines = counted = 0
    end = -1
    while end < 0:
        if len(buf) > max_bytes:
            raise Refusal(431, "request head too large")
        if not buf and first_byte_deadline is not None:
            with trio.move_on_at(first_byte_deadline) as idle:
                chunk = await stream.receive_some(4096)
            if idle.cancelled_caught:
                raise Silent
        else:
            chunk = await stream.receive_some(4096)
        if not chunk:
            raise EOFError
        searched = max(0, len(buf) - 3)
        buf += chunk
        end = buf.find(b"\r\n\r\n", searched)
        if max_lines is not None:
            limit = len(buf) if end < 0 else end + 2  # not the empty line's LF
            lines += buf.count(b"\n", counted, limit)
            counted = limit
            if lines > max_lines:
                raise Refusal(431, "too many header fields")
    if end + 4 > max_bytes:
        raise Refusal(431, "request head too large")
    return bytes(buf)


def _check_bytes(head: bytes, max_headers: int | None) -> None:
    """Cheap checks on the raw head, before h11 parses it (a parse costs ~1 us per header line
    in Python: 3,000 tiny headers took milliseconds, before authentication)."""
    end = head.find(b"\r\n\r\n")
    if end < 0:
        return  # incomplete: h11 refuses it
    # the request line and each header line end with LF
    if max_headers is not None and head.count(b"\n", 0, end + 2) > max_headers + 1:
        raise Refusal(431, "too many header fields")
    # obs-fold (RFC 9112 §5.2): a line starting with a space or tab continues the previous one
    if head.find(b"\n ", 0, end) >= 0 or head.find(b"\n\t", 0, end) >= 0:
        raise Refusal(400, "obsolete line folding")
    version = head[: head.find(b"\n")].rstrip(b"\r").rpartition(b" ")[2]
    if version.startswith(b"HTTP/") and version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise Refusal(505, "HTTP version not supported")


@attrs.frozen
class _Request:
    """What admission reads of a request head (h11's ``Request`` has the same fields)."""

    method: bytes
    target: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]


# The strict fast path: a well-formed ``GET`` head as jambonz's client writes it, matched by two
# regexes in C instead of h11's parse in Python. Strict on purpose: CRLF line ends only, a
# request target and header values of visible ASCII (spaces and tabs inside values), token
# header names, exactly one Host, no Content-Length or Transfer-Encoding; anything else goes to
# h11 and gets exactly the answer it got before (a property test compares the two).
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]++"
_VALUE = rb"(?:[\x21-\x7e]++(?:[ \t]++[\x21-\x7e]++)*+)?+"
_REQUEST_LINE = re.compile(rb"GET (/[\x21-\x7e]*+) HTTP/1\.1\r\n")
_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*+(" + _VALUE + rb")[ \t]*+\r\n")
_FIELDS = re.compile(rb"(?:" + _TOKEN + rb":[ \t]*+" + _VALUE + rb"[ \t]*+\r\n)*+\r\n")
_NEEDS_H11 = frozenset({b"content-length", b"transfer-encoding"})


def _fast_parse(head: bytes) -> _Request | None:
    """The request of a strictly well-formed ``GET`` head (see above), or ``None``: then h11
    parses it."""
    line = _REQUEST_LINE.match(head)
    if line is None:
        return None
    start = line.end()
    block = _FIELDS.match(head, start)
    if block is None:  # (a match ends at the head's first blank line: no field matches CR or LF)
        return None
    headers = [(name.lower(), value) for name, value in _FIELD.findall(head, start, block.end())]
    hosts = 0
    for name, _value in headers:
        if name in _NEEDS_H11:
            return None
        if name == b"host":
            hosts += 1
    if hosts != 1:
        return None
    return _Request(b"GET", line.group(1), b"1.1", headers)


def _parse(head: bytes, max_bytes: int) -> _Request | h11.Request:
    fast = _fast_parse(head)
    if fast is not None:
        return fast
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_bytes)
    try:
        conn.receive_data(head)
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        raise Refusal(400, f"malformed request: {exc}", reason="malformed request") from None
    if not isinstance(event, h11.Request):
        raise Refusal(400, "malformed request")
    return event


_CHALLENGE = (("WWW-Authenticate", 'Basic realm="jambonz", charset="UTF-8"'),)


def parse_basic_auth(values: Sequence[bytes]) -> tuple[str, str] | None:
    """Strictly parse ``Authorization: Basic ...``; ``None`` if absent.

    Raises :class:`Refusal` (400 for several headers, 401 for anything malformed): scheme is
    case-insensitive, the header is at most 1 KiB, base64 must be strict, the text UTF-8, and
    the split happens on the *first* colon (passwords may contain colons).
    """
    if not values:
        return None
    if len(values) > 1:
        raise Refusal(400, "several Authorization headers")
    value = values[0]
    if len(value) > _MAX_AUTH_HEADER:
        raise Refusal(401, "Authorization header too long", headers=_CHALLENGE)
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"basic" or not token or b" " in token.strip(b" "):
        raise Refusal(401, "not Basic credentials", headers=_CHALLENGE)
    try:
        raw = base64.b64decode(token.strip(b" "), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise Refusal(401, "malformed Basic credentials", headers=_CHALLENGE) from None
    user, colon, password = text.partition(":")
    if not colon:
        raise Refusal(401, "malformed Basic credentials", headers=_CHALLENGE)
    return user, password


def _is_websocket_key(key: bytes) -> bool:
    """RFC 6455 §4.1: the key is 16 random bytes, base64-encoded."""
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _same_host(origin: str, host: str) -> bool:
    """Whether ``origin`` is ``http(s)://`` + the host of the ``Host`` header (ports ignored:
    the media server's websocket library sends neither)."""
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or "/" in rest or "@" in rest:
        return False
    return _hostname(rest) == _hostname(host) != ""


def _hostname(authority: str) -> str:
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority.partition("]")[0] + "]"
    return authority.rpartition(":")[0] if authority.count(":") == 1 else authority


def check_basic(expected: BasicAuth, given: tuple[str, str] | None) -> bool:
    """Constant-time comparison of both fields, always both (no short-circuit)."""
    user, password = given if given is not None else ("", "")
    user_ok = hmac.compare_digest(user.encode("utf-8"), expected.username.encode("utf-8"))
    password_ok = hmac.compare_digest(password.encode("utf-8"), expected.password.encode("utf-8"))
    return given is not None and user_ok and password_ok


async def admit(
    stream: trio.abc.Stream,
    routes: Sequence[Route | AudioRoute],
    *,
    max_head_bytes: int,
    health_path: str | None,
    max_headers: int | None = None,
) -> Admitted:
    """Read and judge one request head. The caller owns the deadline.

    Returns the admitted upgrade, or raises :class:`Refusal` (the caller answers it) or
    ``EOFError`` (peer gone).
    """
    head = await read_head(stream, max_head_bytes, max_headers=max_headers)
    return await judge(
        head, routes, max_head_bytes=max_head_bytes, health_path=health_path, max_headers=max_headers
    )


async def judge(
    head: bytes,
    routes: Sequence[Route | AudioRoute],
    *,
    max_head_bytes: int,
    health_path: str | None,
    max_headers: int | None = None,
    metrics: MetricsPage | None = None,
) -> Admitted:
    """Judge a complete request head (see :func:`admit`); only an async authenticator awaits.
    ``metrics``: answer a plain ``GET`` / ``HEAD`` on its path with it, behind the routes'
    credentials (:func:`_allow_scrape`)."""
    _check_bytes(head, max_headers)
    request = _parse(head, max_head_bytes)
    try:
        target = request.target.decode("ascii")
    except UnicodeDecodeError:
        raise Refusal(400, "non-ASCII request target") from None
    if not target.startswith("/") or not target.isprintable():
        raise Refusal(400, "bad request target")
    path = target.split("?", 1)[0]
    headers: dict[bytes, list[bytes]] = {}
    for name, value in request.headers:
        if not value.isascii() and name != b"authorization":
            raise Refusal(
                400,
                f"non-ASCII value in header {name.decode('ascii', 'replace')}",
                reason="non-ASCII header value",
            )
        headers.setdefault(bytes(name), []).append(bytes(value))
    for host in headers.get(b"host", []):
        try:
            host.decode("idna")
        except UnicodeError:
            raise Refusal(400, "bad Host header") from None

    def tokens(name: bytes) -> list[str]:
        return [
            t.strip().lower()
            for v in headers.get(name, [])
            for t in v.decode("ascii").split(",")
            if t.strip()
        ]

    is_upgrade = "websocket" in tokens(b"upgrade") and "upgrade" in tokens(b"connection")
    if not is_upgrade:
        if request.method in (b"GET", b"HEAD") and health_path is not None and path == health_path:
            raise Refusal(200, "health check", body=b"ok\n" if request.method == b"GET" else b"")
        if request.method in (b"GET", b"HEAD") and metrics is not None and path == metrics.path:
            await _allow_scrape(routes, headers, target)
            content_type, body = metrics.render()
            body = body if request.method == b"GET" else b""
            raise Refusal(200, "metrics", headers=(("Content-Type", content_type),), body=body)
        if request.method == b"OPTIONS":
            _answer_options(path, routes)
        raise Refusal(426, "not a WebSocket upgrade", headers=(("Upgrade", "websocket"),))
    if request.method != b"GET":
        raise Refusal(405, "upgrade must be GET", headers=(("Allow", "GET"),))
    if request.http_version != b"1.1":
        raise Refusal(400, "a WebSocket upgrade must be HTTP/1.1")  # RFC 6455 §4.1
    upgrade = headers.get(b"upgrade", [])
    if len(upgrade) != 1 or upgrade[0].strip().lower() != b"websocket" or len(headers[b"connection"]) != 1:
        # wsproto reads only the last of each and wants exactly "websocket": refuse here, at once
        raise Refusal(400, "ambiguous Upgrade/Connection headers")
    if headers.get(b"sec-websocket-version") != [b"13"] or len(headers.get(b"sec-websocket-key", [])) != 1:
        raise Refusal(426, "WebSocket version 13 required", headers=(("Sec-WebSocket-Version", "13"),))
    if not _is_websocket_key(headers[b"sec-websocket-key"][0]):
        raise Refusal(400, "bad Sec-WebSocket-Key")
    if b"host" not in headers:
        raise Refusal(400, "missing Host header")

    candidates = [r for r in routes if r.matches(path)]
    if not candidates:
        raise Refusal(404, f"no application at {path}", reason="no application at this path")
    offered = [
        t.strip() for v in headers.get(b"sec-websocket-protocol", []) for t in v.decode("ascii").split(",")
    ]
    # the first route on this path that takes a subprotocol the client offers (call sockets
    # and audio sockets may share a path); the client's first acceptable name is selected
    route: Route | AudioRoute | None = None
    selected = SUBPROTOCOL
    for candidate in candidates:
        proto = next((p for p in offered if p in candidate.subprotocols), None)
        if proto is not None:
            route, selected = candidate, proto
            break
    if route is None:
        names = list(dict.fromkeys(p for r in candidates for p in r.subprotocols))
        raise Refusal(400, f"subprotocol {' or '.join(names)} not offered", reason="subprotocol not offered")
    for origin in headers.get(b"origin", []):
        text = origin.decode("ascii")
        if text in route.allow_origins:
            continue
        if isinstance(route, AudioRoute) and _same_host(text, headers[b"host"][-1].decode("ascii")):
            continue  # jambonz's media server sends Origin: http(s)://<Host> (docs/protocol.md §13.2)
        raise Refusal(403, "Origin not allowed")

    given = parse_basic_auth(headers.get(b"authorization", [])) if route.auth is not None else None
    username = given[0] if given else None
    if route.auth is not None and not await _passes(route.auth, given, headers, target, path):
        if isinstance(route.auth, BasicAuth):
            raise Refusal(401, "bad credentials", headers=_CHALLENGE)
        raise Refusal(401, "refused by authenticator", headers=_CHALLENGE)
    return Admitted(
        route=route,
        identity=Identity(route=route.path, username=username),
        path=target,
        key=headers[b"sec-websocket-key"][0],
        trailing=head[head.index(b"\r\n\r\n") + 4 :],
        subprotocol=selected,
    )


async def _passes(
    auth: BasicAuth | Authenticator,
    given: tuple[str, str] | None,
    headers: dict[bytes, list[bytes]],
    target: str,
    what: str,
) -> bool:
    """Whether ``auth`` accepts the request: Basic credentials compared in constant time, or
    the authenticator's answer (asked with the headers but ``Authorization``). An
    authenticator that raises is a 500 (:class:`Refusal`); ``what`` names the request in
    its log line."""
    if isinstance(auth, BasicAuth):
        return check_basic(auth, given)
    visible = tuple(
        (k.decode("ascii"), v.decode("ascii"))
        for k, vs in headers.items()
        if k != b"authorization"
        for v in vs
    )
    request = AdmissionRequest(
        path=target,
        headers=visible,
        username=given[0] if given else None,
        password=given[1] if given else None,
    )
    try:
        return bool(await auth(request))
    except Exception:
        log.exception("authenticator raised for %s", what)
        raise Refusal(500, "authenticator failed") from None


async def _allow_scrape(
    routes: Sequence[Route | AudioRoute], headers: dict[bytes, list[bytes]], target: str
) -> None:
    """A metrics scrape needs what the routes need: when any route requires credentials, Basic
    credentials that one of them accepts (a :class:`BasicAuth` compared in constant time, or
    an authenticator asked with the scrape's path); else nothing. Raises :class:`Refusal`."""
    guards = list(dict.fromkeys(r.auth for r in routes if r.auth is not None))
    if not guards:
        return
    given = parse_basic_auth(headers.get(b"authorization", []))
    for guard in guards:
        if await _passes(guard, given, headers, target, "a metrics scrape"):
            return
    raise Refusal(401, "bad credentials", headers=_CHALLENGE)


def _answer_options(path: str, routes: Sequence[Route | AudioRoute]) -> NoReturn:
    """``OPTIONS`` (the query string ignored): the env-var schema of the route serving
    ``path``, or 204 when it declares none - never an empty object, which jambonz's portal
    refuses (jambonz-api-server v0.9.6 lib/utils/appenv_schemaSchema.json:5). Answered to
    anyone: jambonz's api-server sends no credentials (lib/utils/appenv_utils.js:13, 24-29)."""
    allow = ("Allow", "GET, OPTIONS")
    route = next((r for r in routes if isinstance(r, Route) and r.matches(path)), None)  # calls' env
    body = schema_body(route.env) if route is not None else None
    if body is None:
        raise Refusal(204, "options", headers=(allow,))
    raise Refusal(200, "env-var schema", headers=(allow, ("Content-Type", "application/json")), body=body)


# -- who may start a handshake ------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def source_key(address: str | None) -> str | None:
    """The unit of the per-source limits for a peer address: the IPv4 address, or the /64 of
    an IPv6 address (one host usually holds a whole /64). ``None`` for no or no IP address.
    Cached: the peers of a server are a few feature servers, parsed once each."""
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class HandshakeBudget:
    """The pending-handshake budget of a server: the global cap, a per-source cap for
    unknown sources that only applies while the slots are contended, and a reserve only
    known sources may use (see docs/security.md).

    Of the ``limit`` slots, ``limit - reserve`` are *shared* (anyone may use them). An unknown
    source holding ``per_source`` handshakes or more gets another only while fewer than half of
    the shared slots are taken: alone on an idle server, one source (a feature server's burst
    of new calls) may hold up to half of them; when the pool is under pressure, it is held to
    ``per_source``, and no one source ever holds more than half of the shared slots past its
    cap, so the other half is left to everyone else. A source is *known* while it is in
    ``trusted`` networks, or for ``known_ttl`` seconds after one of its upgrades passed
    authentication; known sources are never capped per source and may use the reserve.
    Pure bookkeeping, O(1) per connection, no I/O: time is an argument.
    """

    #: known sources remembered at once (they are jambonz feature servers: a handful); past
    #: it the least recently refreshed one is forgotten
    MAX_KNOWN = 4096

    def __init__(
        self,
        *,
        limit: int,
        reserve: int,
        per_source: int | None,
        known_ttl: float,
        trusted: Sequence[str] = (),
    ) -> None:
        self.limit = limit
        self.reserve = reserve
        self.per_source = per_source
        self.known_ttl = known_ttl
        self.trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted)
        #: from this many handshakes in progress on, the slots are contended: the per-source
        #: cap applies (half of the shared slots)
        self.contended = (limit - reserve) // 2
        self.pending = 0
        self._by_source: dict[str, int] = {}
        self._known: dict[str, float] = {}  # source -> known until; oldest refresh first

    def is_known(self, source: str | None, now: float) -> bool:
        """Whether ``source`` may use the reserve (and is exempt from the per-source cap)."""
        if source is None:
            return False
        until = self._known.get(source)
        if until is not None:
            if until > now:
                return True
            del self._known[source]
        if self.trusted:
            unit = ipaddress.ip_network(source)  # an address, or an IPv6 /64
            return any(network.overlaps(unit) for network in self.trusted)
        return False

    def acquire(self, source: str | None, now: float) -> str | None:
        """Take a slot for a new handshake from ``source``; returns why not (answer 503)."""
        if self.pending >= self.limit:
            return "too many handshakes in progress"
        if not self.is_known(source, now):
            if self.pending >= self.limit - self.reserve:
                return "handshakes left are reserved for known sources"
            if (
                self.pending >= self.contended
                and source is not None
                and self.per_source is not None
                and self._by_source.get(source, 0) >= self.per_source
            ):
                return "too many handshakes in progress from one source"
        self.pending += 1
        if source is not None:
            self._by_source[source] = self._by_source.get(source, 0) + 1
        return None

    def release(self, source: str | None) -> None:
        """Give back the slot taken by :meth:`acquire` (once per successful acquire)."""
        self.pending -= 1
        if source is not None:
            left = self._by_source[source] - 1
            if left:
                self._by_source[source] = left
            else:
                del self._by_source[source]

    def authenticated(self, source: str | None, now: float) -> None:
        """``source`` just passed authentication: it is known for ``known_ttl`` from now."""
        if source is None:
            return
        self._known.pop(source, None)  # re-insert: the dict stays ordered by refresh time
        self._known[source] = now + self.known_ttl
        if len(self._known) > self.MAX_KNOWN:
            del self._known[next(iter(self._known))]
