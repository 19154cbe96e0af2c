"""The library's logging: one place where peer-supplied values are made safe to log.

Every module gets its logger from :func:`get_logger`, which installs :class:`SafeArgs`: each
argument of a log call is escaped (control characters, line and paragraph separators and lone
surrogates become ``\\n``, ``\\x1b``, ``\\u2028``... so a value can never start a new line) and
capped (:data:`MAX_VALUE_CHARS` characters, then a marker saying how much was cut), whatever
``%s`` / ``%r`` the call uses. Numbers pass through untouched, so ``%d`` and ``%.1f`` still work.
Call sids, paths, header values, frames, close reasons, exception texts: a peer chooses them
all, so the rule applies to every argument, not to a list of suspicious ones. The format string
itself is the library's own text and is left alone.

:class:`CallLog` is the per-call logger: it names the call (``call <sid>: ...``) and rate-limits
warnings that a peer can repeat at will (a flood of bad frames, of unanswered requests) per
call and per kind, with a count of what was left out.

Per-call context: every record of a library logger carries ``call_sid``, ``account_sid`` and
``path`` as attributes (``None`` when not made on behalf of a call), so a JSON formatter finds
them (docs/operations.md). :class:`CallLog` passes its own call's; other records take those of
the call the current task works for (:data:`current_call`, which the server sets in the tasks
of each call), through :class:`CallContextFilter`, which an app may install on its own loggers
or handlers too. The values are peer-supplied, so they are escaped and capped like arguments;
``path`` has no query string (a call hook URL may carry a token there).
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "MAX_VALUE_CHARS",
    "CallContextFilter",
    "CallLog",
    "SafeArgs",
    "current_call",
    "get_logger",
    "path_of",
    "safe",
]

#: Longest rendering of one log argument (before escaping; an escape takes up to 6 characters).
MAX_VALUE_CHARS = 256

# C0 and C1 controls, DEL, the Unicode line/paragraph separators (some log viewers break lines
# on them) and lone surrogates (unencodable: a UTF-8 log handler would raise on them).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    known = _ESCAPES.get(char)
    if known is not None:
        return known
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """``str(value)`` made safe for a log line: capped at ``limit`` characters (plus a marker
    ``...[N more chars]``) and escaped so that it holds no line break or control character."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    text = _UNSAFE.sub(_escape, text)
    return f"{text}...[{cut} more chars]" if cut > 0 else text


def path_of(target: str) -> str:
    """The path of a request target, for a log line: its query string (which may carry a
    token: a ``jt_listen`` token, an authenticator's) and fragment left out."""
    return target.partition("?")[0].partition("#")[0]


class _Safe:
    """A log argument rendered safely by ``%s`` and ``%r`` alike."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return safe(self.value)

    def __repr__(self) -> str:
        value = self.value
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            # repr of the kept part only: repr of a 1 MB value would cost 1 MB per line
            cut = len(value) - MAX_VALUE_CHARS
            return safe(repr(value[:MAX_VALUE_CHARS]), 2 * MAX_VALUE_CHARS) + f"...[{cut} more chars]"
        return safe(repr(value), 2 * MAX_VALUE_CHARS)


_PASS = (int, float, type(None))  # bool is an int


def _wrap(arg: object) -> object:
    return arg if isinstance(arg, _PASS) else _Safe(arg)


class SafeArgs(logging.Filter):
    """Wraps every argument of a record so that it renders escaped and capped (see
    :func:`safe`). Installed on each library logger by :func:`get_logger`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            if args:
                record.args = tuple(_wrap(a) for a in args)
        elif isinstance(args, dict):
            record.args = {k: _wrap(v) for k, v in args.items()}
        return True


#: The structured fields of a record made on behalf of no call.
_NO_CALL: Mapping[str, str | None] = {"call_sid": None, "account_sid": None, "path": None}


class CallContextFilter(logging.Filter):
    """Gives every record it sees the attributes ``call_sid``, ``account_sid`` and ``path`` of
    the call the current task works for (``None`` outside calls), unless the record has them
    already (the library's per-call lines do). Values are escaped and capped; ``path`` has no
    query string.

    Installed on every library logger. Add one to your own logger or handler to give your
    app's records the same fields: the call's handler and the tasks it starts count as working
    for the call. Never blocks, never raises, never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        if "call_sid" not in fields:
            call = current_call.get()
            fields.update(_NO_CALL if call is None else call.fields)
        return True


_FILTER = SafeArgs()
_CONTEXT = CallContextFilter()


def get_logger(name: str) -> logging.Logger:
    """The logger ``name`` with :class:`SafeArgs` and :class:`CallContextFilter` installed
    (idempotent). Every module of the library gets its logger here; ``tests/test_project.py``
    checks that none bypasses it."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    if _CONTEXT not in logger.filters:
        logger.addFilter(_CONTEXT)
    return logger


class _Budget:
    """How many lines one kind of warning may still write (a token bucket)."""

    __slots__ = ("at", "suppressed", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at
        self.suppressed = 0


class CallLog:
    """The log of one call: messages prefixed with ``call <sid>:``, repeated warnings limited.

    :meth:`throttled` lets each *kind* of message write a burst of :attr:`BURST` lines, then
    one line per :attr:`INTERVAL` seconds of ``clock``; the next line written says how many were
    left out, and :meth:`summary` reports what was still left out when the call ends. A peer
    that repeats an error 200,000 times therefore writes a few dozen lines, not 200,000.
    """

    BURST = 5
    INTERVAL = 10.0

    __slots__ = ("_account_sid", "_budgets", "_clock", "_fields", "_logger", "_path", "prefix", "sid")

    def __init__(
        self,
        logger: logging.Logger,
        sid: str | None,
        clock: Callable[[], float],
        *,
        account_sid: object = None,
        path: str | None = None,
    ) -> None:
        self._logger = logger
        self.sid = sid
        #: the format of the line's start (the library's own text; ``%s`` is the sid)
        self.prefix = "call %s: "
        self._clock = clock
        self._budgets: dict[str, _Budget] | None = None
        self._account_sid = account_sid
        self._path = path
        self._fields: dict[str, str | None] | None = None

    @property
    def fields(self) -> Mapping[str, str | None]:
        """The call's structured log fields (built at the first record that needs them)."""
        fields = self._fields
        if fields is None:
            account, path = self._account_sid, self._path
            fields = self._fields = {
                "call_sid": None if self.sid is None else safe(self.sid),
                "account_sid": safe(account) if isinstance(account, str) else None,
                "path": None if path is None else safe(path_of(path)),
            }
        return fields

    def log(self, level: int, msg: str, *args: Any, exc_info: Any = None) -> None:
        """Log ``msg % args`` for this call (arguments are made safe by :class:`SafeArgs`),
        with the call's structured fields (:attr:`fields`)."""
        logger = self._logger
        if logger.isEnabledFor(level):
            logger.log(level, self.prefix + msg, self.sid, *args, exc_info=exc_info, extra=self.fields)

    def info(self, msg: str, *args: Any) -> None:
        self.log(logging.INFO, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: Any, exc_info: Any = None) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=exc_info)

    def throttled(self, kind: str, level: int, msg: str, *args: Any) -> bool:
        """Log like :meth:`log` unless ``kind`` used up its budget (then only count it).
        Returns whether a line was written."""
        if not self._logger.isEnabledFor(level):
            return False
        now = self._clock()
        budgets = self._budgets
        if budgets is None:
            budgets = self._budgets = {}
        budget = budgets.get(kind)
        if budget is None:
            budget = budgets[kind] = _Budget(self.BURST, now)
        else:
            budget.tokens = min(self.BURST, budget.tokens + (now - budget.at) / self.INTERVAL)
            budget.at = now
        if budget.tokens < 1:
            budget.suppressed += 1
            return False
        budget.tokens -= 1
        if budget.suppressed:
            msg += " (%d similar messages not logged)"
            args = (*args, budget.suppressed)
            budget.suppressed = 0
        self.log(level, msg, *args)
        return True

    def summary(self) -> None:
        """Report (at WARNING) the lines :meth:`throttled` left out and has not reported yet."""
        budgets = self._budgets
        if not budgets:
            return
        left = {kind: b.suppressed for kind, b in budgets.items() if b.suppressed}
        for budget in budgets.values():
            budget.suppressed = 0
        if left:
            detail = ", ".join(f"{kind}: {n}" for kind, n in sorted(left.items()))
            self.log(logging.WARNING, "%d repeated messages were not logged (%s)", sum(left.values()), detail)


#: The :class:`CallLog` of the call the current task works for: set by the server in the task
#: of each socket of a call (before the call's own task, which inherits it, is started).
current_call: contextvars.ContextVar[CallLog | None] = contextvars.ContextVar(
    "jambonz_trio_current_call", default=None
)
