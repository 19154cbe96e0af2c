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
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import coredis
import coredis.exceptions
import trio
from coredis.retry import NoRetryPolicy

from .._sync import leaves
from ._errors import ClusterUnavailable

__all__ = ["guard", "make_client", "redact", "tls_context", "xadd_to_inbox"]

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
