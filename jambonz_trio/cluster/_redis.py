"""coredis clients built the way the cluster needs them, URL redaction and error mapping.

Every client sets its own timeouts (coredis defaults to none) and ``NoRetryPolicy`` (coredis'
default retry re-sends writes after a reply timeout, which would duplicate commands and
events): the cluster decides what to retry. The long-lived command client only runs
non-blocking commands, which coredis multiplexes on one connection; each blocking reader
(``XREAD BLOCK``) gets a client of its own per session, because coredis 6.9 loses a pool slot
each time a leased connection dies.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import coredis
import coredis.exceptions
import trio
from coredis.retry import NoRetryPolicy

from .._log import get_logger
from .._sync import leaves
from ._errors import ClusterUnavailable

__all__ = ["LuaScript", "ScriptFailed", "guard", "make_client", "redact", "tls_context", "xadd_to_inbox"]

log = get_logger("jambonz_trio.cluster")

#: Query parameters whose values are never shown.
_SECRET_PARAMS = ("pass", "auth", "token", "secret", "key")
_SCHEMES = ("redis", "rediss", "unix")
#: Failures of the link to Redis (or of Redis itself), as coredis and anyio raise them.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    coredis.exceptions.RedisError,
    TimeoutError,
    OSError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    trio.TooSlowError,
)


def redact(url: str) -> str:
    """``url`` without its password (user info after the first ``:``, and query parameters
    that look like secrets): safe to log."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hostport}"
    query = urlencode(
        [
            (k, "***" if any(s in k.lower() for s in _SECRET_PARAMS) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def check_url(url: str) -> None:
    """Raises ``ValueError`` (naming the redacted URL) for a URL coredis cannot use: another
    scheme, or no host (``redis://:6379``: coredis fails on it only at the first command)."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {redact(url)!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"expected a {parts.scheme}://host[:port][/db] URL, got {redact(url)!r} (no host)")


def tls_context(url: str, given: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """The TLS context for ``rediss://``: ``given``, else full verification (certificate and
    host name; coredis' own default checks no host name) unless the URL's query sets
    ``ssl_cert_reqs`` itself."""
    if given is not None:
        return given
    parts = urlsplit(url)
    if parts.scheme != "rediss" or "ssl_cert_reqs" in dict(parse_qsl(parts.query)):
        return None
    return ssl.create_default_context()


def make_client(
    url: str, *, op_timeout: float, blocking: float = 0.0, ssl_context: ssl.SSLContext | None = None
) -> coredis.Redis[str]:
    """A client with explicit timeouts and no retries. ``blocking``: the longest server-side
    block of the commands it runs (added to the reply timeout)."""
    kwargs: dict[str, Any] = {
        "decode_responses": True,
        "decode_components": True,  # percent-encoded passwords
        "connect_timeout": op_timeout,
        "stream_timeout": op_timeout + blocking,
        "pool_timeout": op_timeout,
        "retry_policy": NoRetryPolicy(),
    }
    if ssl_context is not None:
        kwargs["ssl_context"] = ssl_context
    client: coredis.Redis[str] = coredis.Redis.from_url(url, **kwargs)
    return client


def _never_sent(exc: BaseException) -> bool:
    return isinstance(exc, coredis.exceptions.ConnectionError) and "Unable to establish" in str(exc)


@contextlib.contextmanager
def guard(what: str, where: str) -> Iterator[None]:
    """Turn a Redis failure inside the block into :class:`ClusterUnavailable` naming ``what``
    and ``where`` (a redacted URL); anything else passes through."""
    try:
        yield
    except BaseException as exc:
        found = leaves(exc)
        if not found or not all(isinstance(e, REDIS_ERRORS) for e in found):
            raise
        first = found[0]
        detail = f"{type(first).__name__}: {first}" if str(first) else type(first).__name__
        raise ClusterUnavailable(
            f"Redis at {where} unavailable ({what}): {detail}",
            maybe_sent=not all(_never_sent(e) for e in found),
        ) from exc


class ScriptFailed(ClusterUnavailable):
    """A Lua script of the cluster's failed in Redis: it does not compile, or it failed as it
    ran (a bug, or keys of the namespace written by something else), while Redis answers. Not
    an outage: logged at ERROR with the script's name. A :class:`ClusterUnavailable`, so the
    cluster's tasks and callers carry on as without Redis."""


#: Redis refusing to run a script for a state of its own (memory, a replica, a busy script,
#: permissions): not the script's fault
_STATE_CODES = ("OOM", "BUSY", "READONLY", "MASTERDOWN", "MISCONF", "NOREPLICAS", "NOPERM", "LOADING")


def _script_fault(exc: BaseException) -> bool:
    """A script error of the script itself (coredis strips an ``ERR`` code; other codes stay)."""
    text = str(exc)
    if type(exc) is not coredis.exceptions.ResponseError or "user_script" not in text:
        return False
    return not any(text.startswith(f"{code} ") or f"-{code} " in text for code in _STATE_CODES)


class LuaScript:
    """One of the cluster's Lua scripts (:mod:`._scripts`), by name, run with ``EVALSHA``
    (loaded when Redis lacks it). A failure of the script itself raises
    :class:`ScriptFailed`, logged at ERROR; Redis' other errors pass through (to
    :func:`guard`)."""

    def __init__(self, client: coredis.Redis[str], name: str, source: str, *, where: str) -> None:
        self.name = name
        self._client = client
        self._source = source
        self._where = where
        self._script = client.register_script(source)

    async def __call__(
        self, *, keys: Sequence[str], args: Sequence[str | int] = (), client: coredis.Redis[str] | None = None
    ) -> Any:
        try:
            return await self._script(keys=list(keys), args=list(args), client=client)
        except coredis.exceptions.NoScriptError:
            # coredis loads a script Redis lacks and runs it again: still missing, it did not
            # load. Load it here to learn why (a script that does not compile)
            try:
                await (client or self._client).script_load(self._source)
            except coredis.exceptions.ResponseError as exc:
                if _script_fault(exc) or "compiling script" in str(exc):
                    raise self._failed(exc) from exc
            raise
        except coredis.exceptions.ResponseError as exc:
            if _script_fault(exc):
                raise self._failed(exc) from exc
            raise

    def _failed(self, exc: BaseException) -> ScriptFailed:
        message = f"Lua script {self.name} failed in Redis at {self._where}: {exc}"
        log.error("cluster: %s (a bug, not an outage)", message)
        return ScriptFailed(message, maybe_sent=False)


async def xadd_to_inbox(
    client: coredis.Redis[str], inbox: str, entry: dict[str, str], *, maxlen: int, bound: float
) -> str | None:
    """XADD ``entry`` to a member's inbox if it exists (``None``: it does not: the member was
    swept), trimmed to about ``maxlen`` entries, within ``bound`` seconds. Wrap it in
    :func:`guard`."""
    with trio.fail_after(bound):
        added = await client.xadd(
            inbox,
            entry,
            nomkstream=True,
            trim_strategy=coredis.PureToken.MAXLEN,
            threshold=maxlen,
            trim_operator=coredis.PureToken.APPROXIMATELY,
        )
    return None if added is None else str(added)
