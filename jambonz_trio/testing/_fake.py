"""The public face of the fake jambonz: :class:`FakeCall`, one call driven by the test."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, overload

import trio
import trio_websocket

from .._protocol import (
    MESSAGE_TYPES,
    Command,
    HookSpec,
    JambonzMessage,
    SessionAdulting,
    SessionNew,
    SessionReconnect,
    SessionRedirect,
    UnknownMessage,
    VerbHook,
)
from .._protocol._state import wait_hook_urls
from .._protocol._verbs import Conference, Dial, Enqueue
from .._protocol._verbs_base import Verb
from .._public import Forwarded
from ._calldata import CallData
from ._core import LccHook, _Pending
from ._errors import ExpectationFailed, FakeJambonzError
from ._inbound import _Inbound
from ._jambonz import dumps
from ._media import _MediaServer
from ._records import AckRecord, CloseRecord, CommandRecord, TranscriptEntry, Violation

__all__ = ["FakeCall", "HookTarget", "StartKind", "WaitHookKind"]

_C = TypeVar("_C", bound=Command)

#: Where a hook goes: a hook (``"/gather"`` or a :class:`~jambonz_trio.verbs.HookSpec`), or
#: the verb whose ``action_hook`` fires (its ``id`` then becomes the ``verb_id``, as jambonz
#: adds it). ``None`` (an unset ``action_hook``) is refused with :class:`ExpectationFailed`:
#: jambonz sends no hook for a verb without one.
HookTarget = str | HookSpec | Verb | None

#: The first message on a socket: ``session:new`` (a new call), ``session:redirect``
#: (a ``redirect`` verb handed over to an absolute ws URL), ``session:adulting`` (a dialled
#: child leg promoted to its own session) or ``session:reconnect`` (as if this socket replaced
#: one that dropped, e.g. against a restarted app).
StartKind = Literal["session:new", "session:redirect", "session:adulting", "session:reconnect"]

#: The kind of a wait hook (:meth:`FakeCall.wait_hook`): what jambonz sends and what its answer
#: may play. A ``conf:hold-status`` ``wait_hook`` is a ``"conference"`` one.
WaitHookKind = Literal["conference", "enqueue", "dial"]

_WAIT_KINDS: dict[type[Verb], WaitHookKind] = {Conference: "conference", Enqueue: "enqueue", Dial: "dial"}

#: What jambonz adds around the call info in ``session:new`` only (FS v0.9.8
#: ``lib/middleware.js:447-451``): a conference wait hook sends the call info alone.
_SESSION_NEW_ONLY = frozenset({"sip", "service_provider_sid", "defaults", "env_vars"})

_SIP_FOR_STATUS: dict[str, tuple[int, str]] = {
    "trying": (100, "Trying"),
    "ringing": (180, "Ringing"),
    "early-media": (183, "Session Progress"),
    "in-progress": (200, "OK"),
    "completed": (200, "OK"),
    "failed": (503, "Service Unavailable"),
    "busy": (486, "Busy Here"),
    "no-answer": (487, "Request Terminated"),
}

_START_TYPES: dict[str, type[JambonzMessage]] = {
    "session:new": SessionNew,
    "session:redirect": SessionRedirect,
    "session:adulting": SessionAdulting,
    "session:reconnect": SessionReconnect,
}


class FakeCall(_Inbound, _MediaServer):
    """One call as jambonz 0.9.8 would run it against the app, driven by the test.

    Create it with :func:`open_fake_call`. Methods that send an ack-awaiting message
    (:meth:`start`, :meth:`hook` and the helpers built on it) block until the app acks and
    return an :class:`AckRecord`. Notifications (:meth:`status`, :meth:`llm_event` ...) return
    once the frame is written (or queued while jambonz is reconnecting, or dropped silently if
    the app closed the socket with 1000, as jambonz does). After such a 1000 close a request
    is not sent either: it returns at once, with ``AckRecord.delivered`` ``False``.

    Every ``async`` method is a checkpoint (also when it has nothing to wait for) and, in
    strict mode, first raises any protocol violation seen since the last call
    (:class:`ProtocolViolation` / :class:`InvalidVerbs`), and again any seen while it waited
    or that the answer it waited for caused. Once the call is over (:meth:`hangup`, a rejected
    ``session:new``, a failed reconnect) sending raises :class:`CallOver`; the records stay
    readable.

    Timeouts: the fake's own are jambonz's: ``ack_timeout`` bounds each wait for an ack
    (:class:`AckTimeout`), the reconnect back-off and ``close_timeout`` are jambonz's, and the
    ``expect_*`` methods wait ``within`` seconds. Anything else (a send held by back-pressure,
    :meth:`reconnect` waiting for a back-off) is bounded by the caller's ``trio.fail_after``.
    Cancelling a wait only stops waiting: a request already sent stays outstanding, as in
    jambonz; a late ack is recorded, an ack timeout (or invalid verbs in the late ack) is
    recorded in :attr:`violations` and, in strict mode, raised as :class:`ProtocolViolation` /
    :class:`InvalidVerbs` by the next call into the fake (or at the end of the ``async with``
    block), also when it fell on the very tick the wait was cancelled; and an unacked inbound
    ``session:new`` still gets the call rejected (closed with 1001) once ``ack_timeout`` has
    passed.
    """

    # -- records ---------------------------------------------------------------------------

    call = Forwarded[CallData](
        "_call", "The call's data; updated as the call progresses (``call_status`` ...)."
    )
    acks = Forwarded[list[AckRecord]](
        "_acks", "Every ack the app sent for an outstanding request, in arrival order.", copy=True
    )
    commands = Forwarded[list[CommandRecord]](
        "_commands", "Every command jambonz accepted, including ``tts:*`` ones, in arrival order.", copy=True
    )
    transcript = Forwarded[list[TranscriptEntry]](
        "_transcript", "Every frame both ways plus connection events, in order.", copy=True
    )
    violations = Forwarded[list[Violation]](
        "_violations", "Every protocol violation seen (reported or not).", copy=True
    )
    sent = Forwarded[list[JambonzMessage]](
        "_sent", "Every message the fake put on the wire (typed), in order.", copy=True
    )
    closes = Forwarded[list[CloseRecord]]("_closes", "Every close initiated by the app.", copy=True)
    jambonz_errors = Forwarded[list[dict[str, Any]]](
        "_errors_sent",
        "The ``data`` of every ``jambonz:error`` InvalidMessage the fake had to send.",
        copy=True,
    )

    @property
    def connected(self) -> bool:
        """Whether a socket to the app is open right now."""
        return self._link is not None

    connection_count = Forwarded[int](
        "_connections", "How many sockets were opened so far (1 + successful reconnects)."
    )

    @property
    def is_over(self) -> bool:
        """Whether the fake ended the call (hangup, rejection, failed reconnect)."""
        return self._state == "ended"

    closed_gracefully = Forwarded[bool](
        "_graceful", "Whether the app closed with 1000 (jambonz then never sends nor reconnects)."
    )
    tts_buffered = Forwarded[int](
        "_tts.length", "Characters in the TTS streaming buffer (UTF-16 units, as jambonz counts)."
    )
    tts_paused = Forwarded[bool](
        "_tts.full", "Whether the TTS buffer is full (``stream_paused`` sent, no ``stream_resumed`` yet)."
    )

    @property
    def tts_text(self) -> str:
        """All ``tts:tokens`` text accepted so far, concatenated."""
        return "".join(self._tts.text)

    tts_flushes = Forwarded[int]("_tts.flushes", "How many ``tts:flush`` commands arrived.")

    # -- requests (ack awaited) ------------------------------------------------------------

    async def start(
        self,
        kind: StartKind = "session:new",
        *,
        hook: str | None = None,
        parent: CallData | None = None,
    ) -> AckRecord:
        """Send the socket's first message and wait for its ack (``session:new`` by default).

        ``session:new`` carries :meth:`CallData.to_session_new_data`; the ack must carry a
        non-empty, valid verb list within ``ack_timeout`` or jambonz rejects the call (SIP
        480) and closes the socket with 1001. After the ack the fake sends ``call:status``
        ``trying`` (unless ``send_trying=False``), like jambonz.

        Args:
            kind: the first message (see :data:`StartKind`).
            hook: the hook for ``session:redirect`` (required for it).
            parent: the parent leg for ``session:adulting`` (default: a fresh inbound call).

        Blocks until the ack, at most ``ack_timeout`` seconds (a drop before a ``session:new``
        ack re-keys it, see :meth:`reconnect`: the wait then covers the reconnect too).

        Raises:
            CallRejected: (inbound ``session:new``) no ack in time, or the app closed the
                socket with 1000 before acking.
            InvalidInitialVerbs: (inbound ``session:new``) the ack's verbs were missing, empty
                or invalid; jambonz closes the socket with 1001.
            AckTimeout: no ack in time (``session:redirect`` / ``adulting`` / ``reconnect``,
                an outbound ``session:new``).
            AckAbandoned: the socket closed before the ack (not for ``session:new``, which
                jambonz re-sends after a drop).
            InvalidVerbs: invalid verbs in the ack to a ``session:redirect`` or an outbound
                ``session:new``.
            FakeJambonzError: ``start()`` was already called.
            ValueError: ``session:redirect`` without a ``hook``.
            CallOver: the call is over.
        """
        self._check()
        self._ensure_active()
        if self._first_kind is not None:
            raise self._fail(FakeJambonzError("start() was already called on this call"))
        if kind == "session:redirect" and hook is None:
            raise ValueError("session:redirect needs a hook")
        self._first_kind = kind
        self._state = "active"
        call_sid: str | None = None
        data: dict[str, Any]
        if kind in ("session:new", "session:reconnect"):
            data = self._call.to_session_new_data()
            call_sid = self._env_call_sid = self._call.call_sid
        elif kind == "session:adulting":
            data = self._call.call_info()
            data["parent_call_info"] = (parent or CallData()).call_info(call_status="in-progress")
        else:
            data = self._call.call_info()
        msg = self._message(
            _START_TYPES[kind],
            data,
            hook=hook if kind == "session:redirect" else None,
            call_sid=call_sid,
        )
        if kind != "session:redirect":
            self._session_data = dict(msg.data)
        if kind != "session:new":
            self._session_acked = True
        p = _Pending(msg)
        await self._emit(msg, p)
        return await self._await_ack(p)

    async def request(
        self,
        msg_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        hook: str | None = None,
        call_info: bool = True,
    ) -> AckRecord:
        """Send any ack-awaiting message and wait for the ack.

        ``data`` is merged over the current call info (unless ``call_info=False``) and its
        keys are snake_cased like jambonz does. Blocks until the ack (queued first while
        jambonz reconnects), at most ``ack_timeout`` seconds once sent.

        Raises:
            AckTimeout: no ack within ``ack_timeout``.
            AckAbandoned: the socket closed before the ack (jambonz fails the request), or the
                call ended meanwhile.
            NeverSent: jambonz 0.9.8 would hold it for good after a re-keyed ``session:new``
                (see :meth:`reconnect`).
            InvalidVerbs: the ack's ``data`` is an array with invalid verbs (raised in any
                mode: jambonz would fail the request).
            ProtocolViolation: (strict mode) the ack's ``data`` is neither an array nor
                absent (jambonz ignores it: an ``ignored-ack-data`` violation), or another
                violation seen meanwhile; the ack is in :attr:`acks` all the same.
            FakeJambonzError: :meth:`start` was not called yet.
            ValueError: ``msg_type`` is not an ack-awaiting jambonz message type.
            CallOver: the call is over.
        """
        self._check()
        self._require_started()
        cls = MESSAGE_TYPES.get(msg_type)
        if cls is None or not cls.NEEDS_ACK:
            raise ValueError(f"{msg_type!r} is not an ack-awaiting jambonz message type")
        payload = {**(self._call.call_info() if call_info else {}), **(data or {})}
        return await self._request(cls, payload, hook if _has_hook(msg_type) else None)

    async def _request(
        self,
        cls: type[JambonzMessage],
        payload: Mapping[str, Any],
        hook: str | None,
        *,
        wait: WaitHookKind | None = None,
        lcc: LccHook | None = None,
        kills_parent: bool = False,
        program: bool = True,
    ) -> AckRecord:
        msg = self._message(cls, payload, hook=hook)
        p = _Pending(msg)
        p.wait, p.lcc, p.kills_parent, p.program = wait, lcc, kills_parent, program
        await self._emit(msg, p)
        return await self._await_ack(p)

    async def hook(
        self,
        hook: HookTarget,
        data: Mapping[str, Any] | None = None,
        *,
        verb_id: str | None = None,
    ) -> AckRecord:
        """Send a ``verb:hook`` for ``hook`` and wait for the ack.

        ``hook`` is a hook (``"/gather"``, a ``HookSpec``) or the verb whose ``action_hook``
        fires (e.g. ``ack.first(Gather)``; its ``id`` is the default ``verb_id``). ``data``
        (the verb's result fields, protocol.md §9.3) is merged over the call info; ``verb_id``
        is added when given. An ack with verbs replaces the program; ``[]`` or no ``data``
        means "carry on".

        Blocks until the ack, like :meth:`request`.

        Raises:
            ExpectationFailed: ``hook`` is ``None`` or a verb without an ``action_hook``.
            AckTimeout, AckAbandoned, NeverSent, InvalidVerbs, ProtocolViolation, CallOver:
                see :meth:`request`.
        """
        url, verb_id = self._hook_target(hook, verb_id)
        payload = dict(data or {})
        if verb_id is not None:
            payload["verb_id"] = verb_id
        return await self.request("verb:hook", payload, hook=url)

    def _hook_target(self, hook: HookTarget, verb_id: str | None) -> tuple[str, str | None]:
        """The hook's url and the ``verb_id`` to send (a verb's own ``id`` by default)."""
        target: object = hook
        if isinstance(hook, Verb):
            target = getattr(hook, "action_hook", None)
            verb_id = hook.id if verb_id is None else verb_id
            if target is None:
                why = f"this {hook.VERB} verb has no actionHook: jambonz sends no hook for it"
                raise self._fail(ExpectationFailed(why))
        if isinstance(target, HookSpec):
            return target.url, verb_id
        if isinstance(target, str):
            return target, verb_id
        raise self._fail(ExpectationFailed("no hook given (an unset action_hook): jambonz sends none"))

    async def gather_speech(
        self,
        hook: HookTarget,
        transcript: str,
        *,
        confidence: float = 0.9,
        language_code: str = "en-US",
        verb_id: str | None = None,
    ) -> AckRecord:
        """A gather actionHook with ``reason: speechDetected`` and a final transcript.

        ``hook``: the ``Gather`` verb (best: its ``id`` is sent as ``verb_id``) or its hook.
        A gather that does not listen for speech records an ``unheard-input`` violation
        first (raised in strict mode, before sending).

        Raises:
            ExpectationFailed, AckTimeout, AckAbandoned, NeverSent, InvalidVerbs,
                ProtocolViolation, CallOver: see :meth:`hook` (blocks like it).
        """
        self._hears(self._gather_for(hook), "speech")
        self._check()
        data = speech_result(transcript, confidence, language_code)
        return await self.hook(hook, data, verb_id=verb_id)

    async def gather_digits(self, hook: HookTarget, digits: str, *, verb_id: str | None = None) -> AckRecord:
        """A gather actionHook with ``reason: dtmfDetected`` and ``digits``.

        A gather that does not listen for keys (its ``input`` lacks ``"digits"``; the fake
        knows it when ``hook`` is the verb, or from the app's program) records an
        ``unheard-input`` violation first (raised in strict mode, before sending).

        Raises:
            ExpectationFailed, AckTimeout, AckAbandoned, NeverSent, InvalidVerbs,
                ProtocolViolation, CallOver: see :meth:`hook` (blocks like it).
        """
        self._hears(self._gather_for(hook), "digits")
        self._check()
        return await self.hook(hook, {"reason": "dtmfDetected", "digits": digits}, verb_id=verb_id)

    async def gather_timeout(self, hook: HookTarget, *, verb_id: str | None = None) -> AckRecord:
        """A gather actionHook with ``reason: timeout`` (nothing heard).

        Raises:
            ExpectationFailed, AckTimeout, AckAbandoned, NeverSent, InvalidVerbs,
                ProtocolViolation, CallOver: see :meth:`hook` (blocks like it).
        """
        return await self.hook(hook, {"reason": "timeout"}, verb_id=verb_id)

    async def dial_result(
        self,
        hook: HookTarget,
        *,
        dial_call_status: str = "completed",
        dial_sip_status: int = 200,
        dial_call_sid: str | None = None,
        dial_sbc_callid: str | None = None,
        verb_id: str | None = None,
    ) -> AckRecord:
        """A dial actionHook (``dial_call_status``, ``dial_sip_status``, ``dial_call_sid``...).

        Raises:
            ExpectationFailed, AckTimeout, AckAbandoned, NeverSent, InvalidVerbs,
                ProtocolViolation, CallOver: see :meth:`hook` (blocks like it).
        """
        data = dial_result_data(dial_call_status, dial_sip_status, dial_call_sid, dial_sbc_callid)
        return await self.hook(hook, data, verb_id=verb_id)

    async def dial_confirm(self, hook: str, child: CallData | None = None) -> AckRecord:
        """A ``dial:confirm`` for the answered child leg; the ack's verbs run on the callee.

        Blocks until the ack, like :meth:`request`. A truthy answer that is not an array
        declines the callee in jambonz: :class:`InvalidVerbs`.

        Raises:
            AckTimeout, AckAbandoned, NeverSent, InvalidVerbs, ProtocolViolation, CallOver:
                see :meth:`request`.
        """
        leg = child or self._child_leg()
        return await self.request("dial:confirm", leg.call_info(), hook=hook, call_info=False)

    def _child_leg(self) -> CallData:
        """A fresh answered child leg of this call, as a ``dial`` places it."""
        return CallData(
            direction="outbound",
            from_=self._call.to,
            to="+15551230000",
            parent_call_sid=self._call.call_sid,
            account_sid=self._call.account_sid,
            application_sid=self._call.application_sid,
            sip=None,
            call_status="in-progress",
            sip_status=200,
            sip_reason="OK",
        )

    async def session_redirect(
        self,
        hook: str,
        *,
        call_hook: bool | None = None,
        child_call_hook: bool | None = None,
        child: CallData | None = None,
    ) -> AckRecord:
        """A ``session:redirect``: for a ``redirect`` verb's actionHook, or for a ``redirect``
        command's ``call_hook`` (``call_hook=True``) or ``child_call_hook``
        (``child_call_hook=True``); by default, for the command's hook when the app sent such
        a command for ``hook`` that this has not answered yet. Blocks until the ack.

        For the verb, a non-empty verb array replaces the rest of the program and anything
        else carries on (FS v0.9.8 ``lib/tasks/task.js:226``, ``:253-260``). For the command's
        ``call_hook``, the answer *is* the parent's program: an array replaces it, ``[]``
        included (the running verb is killed and nothing follows;
        ``lib/session/call-session.js:1639-1642``); no array is a ``refused-ack-data``
        violation: a falsy ``data`` (or none) kills the running verb (``:1649-1652``), a truthy
        one is lost (``normalizeJambones`` throws in a handler nobody awaits, ``:2305``).

        For the ``child_call_hook`` (jambonz sends it only while a ``dial`` is connected,
        ``:1600-1606``), the data is the child leg's call info (``child``, default: a fresh
        leg like :meth:`dial_confirm`'s) and the answer is the child's program: an array
        (``[]`` too) moves the child to a session of its own, on a new socket that gets
        ``session:adulting`` (``:1623-1638``; play it with another fake call and
        ``start("session:adulting")``); a falsy one leaves the child bridged; a truthy
        non-array is a ``refused-ack-data`` violation (the whole redirect is lost). When the
        command had no ``call_hook``, the parent's running verb is killed (``:1649-1652``).
        The fake drops a killed verb from its record of the program when it can tell which
        it is (see ``docs/testing.md``).

        Raises:
            AckTimeout, AckAbandoned, NeverSent, InvalidVerbs, CallOver: see :meth:`request`.
            ProtocolViolation: the answer is refused, see above (strict mode).
            FakeJambonzError: :meth:`start` was not called yet.
        """
        self._check()
        self._require_started()
        pending = hook in self._lcc_hooks
        child_pending = next((entry for entry in self._lcc_child_hooks if entry[0] == hook), None)
        if call_hook is None and child_call_hook is None:
            call_hook, child_call_hook = pending, not pending and child_pending is not None
        if child_call_hook:
            if child_pending is not None:
                self._lcc_child_hooks.remove(child_pending)
            alone = child_pending[1] if child_pending is not None else False
            leg = child or self._child_leg()
            return await self._request(
                SessionRedirect, leg.call_info(), hook, lcc="child_call_hook", kills_parent=alone
            )
        if pending and call_hook:
            self._lcc_hooks.remove(hook)
        lcc: LccHook | None = "call_hook" if call_hook else None
        return await self._request(SessionRedirect, self._call.call_info(), hook, lcc=lcc)

    async def wait_hook(
        self,
        hook: HookTarget,
        *,
        kind: WaitHookKind | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> AckRecord:
        """Ask a wait hook, like jambonz while a verb waits: a conference ``waitHook`` or
        ``enterHook`` (or a ``conf:hold-status`` / ``conf:participant-action`` ``wait_hook``:
        ``kind="conference"``), an enqueue ``waitHook`` (``"enqueue"``), a dial ``onHoldHook``
        (``"dial"``). Blocks until the ack.

        ``hook``: the ``Conference`` / ``Enqueue`` / ``Dial`` verb (its wait hook, and the kind),
        or the hook (then ``kind``, unless a verb of the app's program has that wait hook).
        ``data`` is merged over what 0.9.8 sends: the raw call info for a conference (FS v0.9.8
        ``lib/tasks/conference.js:654``: without the ``sip``, ``defaults``, ``env_vars`` and
        ``service_provider_sid`` of ``session:new``), the queue's numbers for an enqueue
        (``lib/tasks/enqueue.js:323-340``), the call info with ``hold_detail`` for a dial
        (``lib/tasks/dial.js:1101-1107``).

        jambonz plays the answer inside the waiting verb and asks again when it is done (a dial's
        ``onHoldHook`` only once in 0.9.8: its loop tests an ``isOnHold`` it never sets, FS
        v0.9.8 ``lib/tasks/dial.js:1136``); ``[]`` ends its loop. The answer must be a verb
        array (a missing ``data`` too is refused) of ``play``, ``say``, ``pause`` (an enqueue
        also ``leave``, ``tag``): anything else stops the loop (a ``refused-ack-data``
        violation). It never replaces the program.

        Raises:
            ExpectationFailed: no wait hook on that verb, or a hook whose kind is unknown.
            AckTimeout, AckAbandoned, NeverSent, InvalidVerbs, CallOver: see :meth:`request`.
            ProtocolViolation: the answer is refused (strict mode).
            FakeJambonzError: :meth:`start` was not called yet.
        """
        self._check()
        self._require_started()
        url, kind = self._wait_target(hook, kind)
        payload: dict[str, Any]
        if kind == "conference":  # cs.callInfo itself, not its toJSON() (conference.js:654)
            info = self._call.to_session_new_data()
            payload = {k: v for k, v in info.items() if k not in _SESSION_NEW_ONLY}
        elif kind == "enqueue":
            name = next(
                (v.name for v in self._program if isinstance(v, Enqueue) and url in wait_hook_urls([v])),
                "support",
            )
            payload = {
                "queue_sid": name,
                "queue_time": 0,
                "queue_size": 1,
                "queue_position": 0,
                "call_sid": self._call.call_sid,
                "call_id": self._call.call_id,
            }
        else:
            payload = self._call.call_info()
            payload["hold_detail"] = {
                "from": f"<sip:{self._call.from_}@127.0.0.1>",
                "to": f"<sip:{self._call.to}@127.0.0.1>",
            }
        payload.update(data or {})
        return await self._request(VerbHook, payload, url, wait=kind)

    def _wait_target(self, hook: HookTarget, kind: WaitHookKind | None) -> tuple[str, WaitHookKind]:
        """The wait hook's url and kind (see :meth:`wait_hook`)."""
        if isinstance(hook, Verb):
            urls = wait_hook_urls([hook])
            own = _WAIT_KINDS.get(type(hook))
            if not urls or own is None:
                why = f"this {hook.VERB} verb has no waitHook / enterHook / onHoldHook: jambonz asks none"
                raise self._fail(ExpectationFailed(why))
            return urls[0], kind or own
        if hook is None:
            raise self._fail(ExpectationFailed("no hook given (an unset wait hook): jambonz asks none"))
        url = hook.url if isinstance(hook, HookSpec) else hook
        if kind is None:
            for verb in [self._running, *reversed(self._program)]:
                found = _WAIT_KINDS.get(type(verb)) if verb is not None else None
                if found is not None and verb is not None and url in wait_hook_urls([verb]):
                    return url, found
            raise self._fail(
                ExpectationFailed(
                    f"no verb of the program has the wait hook {url!r}: give its kind "
                    "(conference, enqueue or dial)"
                )
            )
        return url, kind

    # -- notifications ---------------------------------------------------------------------

    async def notify(
        self, msg_type: str, data: Mapping[str, Any] | None = None, *, hook: str | None = None
    ) -> None:
        """Send any fire-and-forget message (``data`` snake_cased, no call info added).

        Returns once the frame is written: blocks only while the socket does not take it
        (no timeout of the fake's: the caller's). While jambonz reconnects it is queued (a
        send with no socket starts the reconnect at once); after a 1000 close by the app it
        is dropped. It may be sent before :meth:`start` (jambonz never does that).

        Raises:
            CallOver: the call is over.
            ValueError: ``msg_type`` is not a fire-and-forget jambonz message type.
        """
        self._check()
        self._ensure_active()
        cls = MESSAGE_TYPES.get(msg_type)
        if cls is None or cls.NEEDS_ACK:
            raise ValueError(f"{msg_type!r} is not a fire-and-forget jambonz message type")
        msg = self._message(cls, data or {}, hook=hook if _has_hook(msg_type) else None)
        await self._emit(msg)
        self._check()

    async def status(
        self,
        call_status: str,
        *,
        sip_status: int | None = None,
        sip_reason: str | None = None,
        **extra: Any,
    ) -> None:
        """Send ``call:status`` with the call info (§9.2) after moving the call to
        ``call_status`` (``ringing``, ``in-progress``, ``completed`` ...).

        ``extra`` fields (``duration``, ``call_termination_by``, ``error`` ...) are added.
        ``in-progress`` starts the clock :meth:`hangup` uses for ``duration``.

        Returns once the frame is written (or queued, or dropped), like :meth:`notify`.

        Raises:
            CallOver: the call is over.
        """
        default_sip = _SIP_FOR_STATUS.get(call_status)
        self._call.call_status = call_status
        if sip_status is not None or default_sip is not None:
            self._call.sip_status = sip_status if sip_status is not None else default_sip[0]  # type: ignore[index]
        if sip_reason is not None or default_sip is not None:
            self._call.sip_reason = sip_reason if sip_reason is not None else default_sip[1]  # type: ignore[index]
        if call_status == "in-progress" and self._answered_at is None:
            self._answered_at = self._now()
        await self.notify("call:status", {**self._call.call_info(), **extra})

    async def verb_status(
        self,
        event: str,
        *,
        id: str | None = None,
        name: str | None = None,
        verb: str | None = None,
        **extra: Any,
    ) -> None:
        """Send ``verb:status`` (``starting``/``finished`` use ``name``; playback events use
        ``verb``; protocol.md §4.8).

        Returns once the frame is written (or queued, or dropped), like :meth:`notify`.

        Raises:
            CallOver: the call is over.
        """
        data: dict[str, Any] = {"event": event}
        for key, value in (("id", id), ("name", name), ("verb", verb)):
            if value is not None:
                data[key] = value
        await self.notify("verb:status", {**data, **extra})

    async def llm_event(self, hook: str, data: Mapping[str, Any]) -> None:
        """Send an ``llm:event`` (a vendor event; keys are snake_cased like jambonz does).

        Returns once the frame is written (or queued, or dropped), like :meth:`notify`.

        Raises:
            CallOver: the call is over.
        """
        await self.notify("llm:event", data, hook=hook)

    async def llm_tool_call(self, hook: str, tool_call_id: str, name: str, args: Any = None) -> None:
        """Send an ``llm:tool-call`` (``args`` verbatim); answer with ``llm:tool-output``.

        Returns once the frame is written (or queued, or dropped), like :meth:`notify`.

        Raises:
            CallOver: the call is over.
        """
        await self.notify(
            "llm:tool-call",
            {"tool_call_id": tool_call_id, "name": name, "args": {} if args is None else args},
            hook=hook,
        )

    async def tts_streaming_event(self, event_type: str) -> None:
        """Send ``tts:streaming-event`` (``stream_open``, ``stream_closed``,
        ``user_interruption`` ...). ``stream_paused``/``resumed`` come from the TTS model.

        Returns once the frame is written (or queued, or dropped), like :meth:`notify`.

        Raises:
            CallOver: the call is over.
        """
        await self.notify("tts:streaming-event", {"event_type": event_type})

    async def jambonz_error(self, msg: str, details: str | None = None, **extra: Any) -> None:
        """Send a verb-level ``jambonz:error`` (``msg`` like ``"TTS error"``).

        Returns once the frame is written (or queued, or dropped), like :meth:`notify`.

        Raises:
            CallOver: the call is over.
        """
        data: dict[str, Any] = {"msg": msg}
        if details is not None:
            data["details"] = details
        await self.notify("jambonz:error", {**data, **extra})

    @overload
    async def send_raw(
        self, frame: str | bytes | Mapping[str, Any], *, await_ack: Literal[True]
    ) -> AckRecord: ...
    @overload
    async def send_raw(
        self, frame: str | bytes | Mapping[str, Any], *, await_ack: Literal[False] = ...
    ) -> None: ...

    async def send_raw(
        self, frame: str | bytes | Mapping[str, Any], *, await_ack: bool = False
    ) -> AckRecord | None:
        """Put a frame on the wire exactly as given (a mapping is JSON-encoded, unchanged).

        For messages jambonz 0.9.8 never sends (an unknown type of a newer server, a
        malformed envelope...). With ``await_ack=True`` the frame's ``msgid`` goes into the
        ack book like a request's: the call waits for the ack (``ack_timeout``) and returns
        it; otherwise an ack to it is an ``unknown-ack`` violation, as in jambonz.

        Unlike :meth:`notify` it never queues: it needs an open socket. Blocks while the
        socket does not take the frame (the caller's timeout), then, with ``await_ack``, until
        the ack (at most ``ack_timeout``).

        Raises:
            FakeJambonzError: there is no open socket (dropped and not reconnected yet, or
                closed by the app).
            ValueError: ``await_ack`` for a frame without a string ``msgid`` (or not JSON).
            AckTimeout, AckAbandoned, InvalidVerbs, ProtocolViolation: see :meth:`request`
                (``await_ack=True`` only).
            CallOver: the call is over.
        """
        self._check()
        self._ensure_active()
        link = self._link
        if link is None or link.ws is None:
            raise self._fail(FakeJambonzError("send_raw: no open socket to the app"))
        text = dumps(dict(frame)) if isinstance(frame, Mapping) else frame
        pending: _Pending | None = None
        if await_ack:
            obj = json.loads(text)
            if not isinstance(obj, dict) or not isinstance(obj.get("msgid"), str):
                raise ValueError("await_ack needs a JSON object frame with a string msgid")
            data = obj.get("data")
            pending = _Pending(
                UnknownMessage(
                    unknown_type=str(obj.get("type")),
                    msgid=obj["msgid"],
                    data=data if isinstance(data, dict) else {},
                )
            )
            self._pending[pending.msgid] = pending
            self._start_watchdog(pending, self._ack_timeout)
        self._log(link, "out", text if isinstance(text, str) else f"(binary) {text!r}")
        try:
            await link.ws.send_message(text)
        except trio_websocket.ConnectionClosed:
            # closed under us (the app's close read, not yet booked by the reader): as if
            # there had been no open socket
            if pending is not None:
                self._pending.pop(pending.msgid, None)
                if pending.watchdog is not None:
                    pending.watchdog.cancel()
            raise self._fail(FakeJambonzError("send_raw: the socket to the app closed")) from None
        if pending is None:
            self._check()
            return None
        return await self._await_ack(pending)

    async def drain_tts(self, chars: int | None = None) -> None:
        """Let the TTS buffer play out ``chars`` characters (all of them by default).

        Sends ``tts:streaming-event`` ``stream_resumed`` when a paused buffer drops to the
        low-water mark (like :meth:`notify`; not once the call is over). Returns once that is
        written; raises nothing of its own, even after the call is over.
        """
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._drain(chars)
        await trio.lowlevel.cancel_shielded_checkpoint()

    # -- expectations ----------------------------------------------------------------------

    @overload
    async def expect_command(self, kind: type[_C], *, within: float = ...) -> _C: ...
    @overload
    async def expect_command(self, kind: str | None = ..., *, within: float = ...) -> Command: ...

    async def expect_command(
        self, kind: type[Command] | str | None = None, *, within: float = 5.0
    ) -> Command:
        """The next command the app sent (typed), waiting up to ``within`` seconds.

        ``tts:tokens``/``tts:flush``/``tts:clear`` are served by the TTS model and only
        appear in :attr:`commands`. Commands jambonz would drop or not understand are
        violations, not commands.

        Args:
            kind: a wire name (``"redirect"``) or a command class (``RedirectCommand``) the next
                command must match; ``None`` accepts any.
            within: seconds to wait (the fake's timeout; the caller's ``trio.fail_after`` may
                cut it short, leaving the inbox as it was).

        Raises:
            ExpectationFailed: nothing arrived in time, or the next command is another kind
                (it is consumed all the same), or none is left and the app closed the socket
                with 1000 or the call is over (raised at once then).
        """
        self._check()
        arrived = await self._wait(
            lambda: bool(self._inbox) or self._graceful or self._state == "ended", within
        )
        if not self._inbox:
            why = f"within {within:g} s" if not arrived else "(the socket was closed for good)"
            raise self._fail(ExpectationFailed(f"expected a {_kind_name(kind)} command, got none {why}"))
        cmd = self._inbox.popleft()
        if kind is not None and not _matches(cmd, kind):
            raise self._fail(ExpectationFailed(f"expected a {_kind_name(kind)} command, got {cmd!r}"))
        self._check()
        return cmd

    async def expect_no_command(self, within: float = 1.0) -> None:
        """Assert that no (non-``tts:*``) command arrives within ``within`` seconds.

        Blocks for ``within`` seconds unless one arrives (or is already waiting in the inbox).

        Raises:
            ExpectationFailed: one did (it is left in the inbox).
        """
        self._check()
        if await self._wait(lambda: bool(self._inbox), within):
            raise self._fail(ExpectationFailed(f"expected no command, got {self._inbox[0]!r}"))

    async def expect_close(self, code: int | None = None, *, within: float = 5.0) -> CloseRecord:
        """Wait until the app closes a socket (the next close not yet expected).

        Only closes the app initiated count (see :attr:`closes`), not the fake's own
        (:meth:`hangup`, :meth:`drop`, a rejected call).

        Raises:
            ExpectationFailed: no close within ``within`` seconds, or a different ``code``
                (that close is consumed all the same).
        """
        self._check()
        if not await self._wait(lambda: len(self._closes) > self._close_cursor, within):
            raise self._fail(ExpectationFailed(f"expected the app to close the socket within {within:g} s"))
        record = self._closes[self._close_cursor]
        self._close_cursor += 1
        if code is not None and record.code != code:
            raise self._fail(
                ExpectationFailed(
                    f"expected the app to close with {code}, it closed with {record.code} "
                    f"({record.reason or 'no reason'})"
                )
            )
        return record

    # -- connection control ----------------------------------------------------------------

    async def drop(self, *, reconnect: bool | None = None) -> None:
        """Kill the socket abruptly, without a close frame (the app sees 1006).

        jambonz treats this as an unexpected close: requests in flight are abandoned (unless
        ``session:new`` is still unacked, see :meth:`reconnect`) and it reconnects after its
        back-off (500 ms, 1 s, 2 s, 4 s, 6 s ... never reset). Anything sent meanwhile is
        queued and flushed after the ``session:reconnect`` ack.

        Args:
            reconnect: reconnect automatically after the back-off; default: ``auto_reconnect``.
                With ``False`` the next send (or :meth:`reconnect`) reconnects at once.

        Blocks until what had reached the fake is read and the socket is closed; no timeout of
        its own.

        Raises:
            FakeJambonzError: there is no open socket.
            CallOver: the call is over.
        """
        self._check()
        self._ensure_active()
        link = self._link
        if link is None:
            raise self._fail(FakeJambonzError("drop(): no open socket"))
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._drop_link(link, self._auto_reconnect if reconnect is None else reconnect)

    def cut(
        self,
        *,
        after_sent: int | None = None,
        after_received: int | None = None,
        reconnect: bool | None = None,
    ) -> None:
        """Arm a drop at an exact byte of the open socket, as when a TCP connection dies with
        frames in flight: the connection is killed as soon as jambonz has written
        ``after_sent`` more bytes (the rest of what it writes never leaves) or has read
        ``after_received`` more bytes from the app (what the app wrote past them is lost,
        although the app's write succeeded). Counted from now (``0``: at once); whichever
        comes first. Then like :meth:`drop`: the app sees 1006 and jambonz reconnects.

        jambonz reads the app's frames on arrival, in order (Node ``ws``): a message whose
        last byte is within the cut is read, a later one is not. Not a checkpoint.

        Raises:
            FakeJambonzError: there is no open socket.
            ValueError: neither bound given, or a negative one.
            CallOver: the call is over.
        """
        if after_sent is None and after_received is None:
            raise ValueError("cut() needs after_sent and/or after_received")
        if (after_sent or 0) < 0 or (after_received or 0) < 0:
            raise ValueError("cut() bounds are byte counts (>= 0)")
        self._ensure_active()
        link = self._link
        if link is None or link.stream is None:
            raise self._fail(FakeJambonzError("cut(): no open socket"))
        again = self._auto_reconnect if reconnect is None else reconnect
        link.stream.cut_after(
            sent=after_sent, received=after_received, on_cut=lambda: self._cut_soon(link, again)
        )

    async def reconnect(self) -> AckRecord:
        """Reconnect like jambonz and wait for the ``session:reconnect`` ack.

        If a reconnect is already scheduled (after :meth:`drop`, an unexpected close by the
        app, or a 1009), waits for it, back-off included; otherwise connects now. The new
        socket gets ``session:reconnect`` with the original ``session:new`` data; queued
        messages follow its ack.

        If ``session:new`` was still unacked, jambonz re-keys it to the ``session:reconnect``
        msgid (protocol.md §6.2 step 6): that ack answers ``session:new`` and must carry its
        non-empty verbs; the returned record is then the ``session:new`` ack. jambonz 0.9.8
        then queues every later message for good (FS ``lib/utils/ws-requestor.js:184-186``,
        ``:244-261``, ``:282-284``, ``:296-311``): the call goes silent. The fake does the same
        and makes it loud: each message it holds is a ``never-sent`` violation (raised at the
        next call into the fake in strict mode, e.g. by :meth:`start` for the "trying"
        ``call:status``), and a request held this way raises :class:`NeverSent` at once
        instead of waiting for ever. As in jambonz, only another drop and an ordinary
        reconnect release what was held (requests first).

        Blocks through the back-off (jambonz's: 500 ms, 1 s, 2 s ...), the connection
        (``handshake_timeout``) and the ack (``ack_timeout``); the caller's timeout bounds
        the whole, and cancelling it does not stop the reconnect.

        Raises:
            AckTimeout: ``session:reconnect`` was not acked in time (jambonz hangs up).
            ConnectFailed: the connection attempt failed (another is scheduled when
                ``auto_reconnect``, unless the app rejected the handshake).
            CallRejected, InvalidInitialVerbs: the re-keyed ``session:new`` failed.
            CallOver: the call ended (or the app closed with 1000) during the reconnect, or
                was over already.
            FakeJambonzError: the socket is open, or the app closed it with 1000.
        """
        self._check()
        self._ensure_active()
        if self._graceful:
            raise self._fail(
                FakeJambonzError("the app closed the socket with 1000: jambonz never reconnects")
            )
        cycle = self._reconnect
        if cycle is None:
            last = self._last_cycle
            if self._link is not None:
                if last is None or last.done.is_set():
                    raise self._fail(FakeJambonzError("reconnect(): the socket is open; drop() it"))
                cycle = last
            else:
                cycle = self._schedule_reconnect(0.0)
        cycle.waiters += 1
        try:
            await self._wait(cycle.done.is_set)
        finally:
            cycle.waiters -= 1
            if cycle.waiters == 0:
                self._disown(cycle.violation)
        if cycle.error is not None:
            self._disown(cycle.violation, reported=True)
            raise self._fail(cycle.error)
        assert cycle.record is not None
        self._check()
        return cycle.record

    async def hangup(self, *, by: str = "caller", duration: int | None = None) -> None:
        """End the call: ``call:status`` ``completed`` (with ``duration`` and
        ``call_termination_by``), then close the socket with 1000, as jambonz does.

        Requests still waiting for an ack fail with :class:`AckAbandoned`. Blocks until the
        app answers the close, at most ``close_timeout`` seconds. With no socket open (a drop,
        or a 1000 close by the app) nothing is sent and the call just ends.

        Raises:
            CallOver: the call is already over.
        """
        self._check()
        self._ensure_active()
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._final_status(by, duration)
        await self._end_call(1000)
        await trio.lowlevel.cancel_shielded_checkpoint()
        self._check()

    async def wait_idle(self, seconds: float) -> None:
        """Let ``seconds`` pass while processing frames (strict violations are raised).

        Blocks for ``seconds`` (on trio's clock); works on a call that is over too.

        Raises:
            ProtocolViolation: (strict mode) a violation, as soon as it happens.
        """
        self._check()
        await self._wait(lambda: False, seconds)
        self._check()

    # -- helpers ---------------------------------------------------------------------------

    def _require_started(self) -> None:
        self._ensure_active()
        if self._first_kind is None:
            raise self._fail(FakeJambonzError("call start() first"))


def speech_result(transcript: str, confidence: float = 0.9, language_code: str = "en-US") -> dict[str, Any]:
    """A gather's ``speechDetected`` result with one final transcript."""
    speech = {
        "language_code": language_code,
        "channel_tag": 1,
        "is_final": True,
        "alternatives": [{"confidence": confidence, "transcript": transcript}],
    }
    return {"reason": "speechDetected", "speech": speech}


def flux_speech_result(
    transcript: str, event: str, confidence: float = 0.9, language_code: str = "en-US"
) -> dict[str, Any]:
    """A ``deepgramflux`` gather's ``speechDetected`` hook data for the Flux turn ``event``
    (``EagerEndOfTurn``, ``TurnResumed``, ``EndOfTurn``), normalized as FS v0.9.8 does
    (``lib/utils/transcription-utils.js:375-403``): final only for ``EndOfTurn``, Deepgram's
    message kept under ``vendor.evt``."""
    words = [{"word": word, "confidence": confidence} for word in transcript.split()]
    speech = {
        "language_code": language_code,
        "channel_tag": 1,
        "is_final": event == "EndOfTurn",
        "alternatives": [
            {
                "confidence": confidence,
                "end_of_turn_confidence": confidence,
                "transcript": transcript,
                "turn_taking_event": event,
            }
        ],
        "vendor": {
            "name": "deepgramflux",
            "evt": {
                "event": event,
                "transcript": transcript,
                "words": words,
                "end_of_turn_confidence": confidence,
            },
        },
    }
    return {"reason": "speechDetected", "speech": speech}


def dial_result_data(
    dial_call_status: str = "completed",
    dial_sip_status: int = 200,
    dial_call_sid: str | None = None,
    dial_sbc_callid: str | None = None,
) -> dict[str, Any]:
    """A dial's actionHook result (fresh ids unless given)."""
    return {
        "dial_call_status": dial_call_status,
        "dial_sip_status": dial_sip_status,
        "dial_call_sid": dial_call_sid or str(uuid.uuid4()),
        "dial_sbc_callid": dial_sbc_callid or f"{uuid.uuid4().hex}@0.0.0.0",
    }


def _has_hook(msg_type: str) -> bool:
    return msg_type in _HOOK_TYPES


_HOOK_TYPES = frozenset({"verb:hook", "dial:confirm", "session:redirect", "llm:event", "llm:tool-call"})


def _matches(cmd: Command, kind: type[Command] | str) -> bool:
    if isinstance(kind, str):
        return kind == cmd.COMMAND
    return isinstance(cmd, kind)


def _kind_name(kind: type[Command] | str | None) -> str:
    if kind is None:
        return "any"
    return repr(kind) if isinstance(kind, str) else kind.__name__
