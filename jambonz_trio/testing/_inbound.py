"""What the fake does with each frame from the app, like ws-requestor.js ``_onMessage``.

Size and frame-type checks, the envelope checks of docs/protocol.md §7 (answered with ``jambonz:error``), acks
matched against the ack book and validated, commands checked against what 0.9.8's handlers
read, and the TTS token buffer.
"""

from __future__ import annotations

from typing import Any

import trio

from .._protocol import (
    MESSAGE_TYPES,
    Command,
    JambonzErrorReport,
    TtsStreamingEvent,
    TtsTokensResult,
    Verb,
    structure_verbs,
)
from .._protocol._outbound import (
    MuteStatusCommand,
    RedirectCommand,
    RedirectLegsCommand,
    RedirectToHookCommand,
    WhisperCommand,
)
from .._protocol._verbs import Conference, Dial, Listen
from .._protocol._verbs_base import HookSpec
from ._core import _Core, _Link
from ._errors import InvalidInitialVerbs, InvalidVerbs
from ._jambonz import TTS_COMMANDS, check_envelope, dumps, js_str, parse_app_command, truthy
from ._records import AckRecord, CommandRecord

__all__: list[str] = []

#: Commands jambonz 0.9.8 acts on only while one of these verbs is the current task (it logs
#: and ignores them otherwise): the verbs, how docs/commands.md names them, the source.
_NEEDS_VERB: dict[type, tuple[tuple[type[Verb], ...], str, str]] = {
    MuteStatusCommand: ((Dial, Conference), "dial or conference", "lib/session/call-session.js:1719-1727"),
    WhisperCommand: ((Dial, Listen), "dial or listen", "lib/session/call-session.js:1805-1815"),
}


#: Where jambonz 0.9.8 ignores an ack's ``data`` that is not an array (and carries on), by the
#: type of the request acked (``session:new`` here: a REST call's, sent on answer).
_IGNORED_BY: dict[str, str] = {
    "verb:hook": "FS lib/tasks/task.js:254, :281",
    "session:redirect": "FS lib/tasks/task.js:226, :254",
    "session:new": "FS lib/tasks/rest_dial.js:115-118",
    "dial:confirm": "a falsy answer accepts the callee at once, FS lib/utils/place-outdial.js:393-396",
    "queue:status": "never sent on the call socket",
}


#: What a wait hook's answer may hold, by kind, and where jambonz 0.9.8 refuses the rest (the
#: answer goes to ``normalizeJambones`` whatever it is, so anything but an array throws too;
#: the wait loop then stops).
WAIT_HOOK_RULES: dict[str, tuple[tuple[str, ...], str]] = {
    "conference": (("play", "say", "pause"), "FS lib/tasks/conference.js:650-660, the loop :240-252"),
    "enqueue": (
        ("play", "say", "pause", "leave", "tag"),
        "FS lib/tasks/enqueue.js:314-347, the loop :160-173",
    ),
    "dial": (("play", "say", "pause"), "FS lib/tasks/dial.js:1091-1113, the loop :1096-1136"),
}


def _declines(mtype: str, data: Any) -> bool:
    """A non-array ``dial:confirm`` answer jambonz fails on: a truthy one (``normalizeJambones``
    throws, the callee is declined: FS v0.9.8 ``lib/utils/place-outdial.js:398``, ``:429-435``)."""
    return mtype == "dial:confirm" and truthy(data)


class _Inbound(_Core):
    async def _on_frame(self, link: _Link, frame: str | bytes) -> None:
        binary = isinstance(frame, bytes)
        if isinstance(frame, bytes):
            size = len(frame)
            text = frame.decode("utf-8", errors="replace")
        else:
            text = frame
            size = len(text.encode("utf-8", errors="surrogatepass"))
        self._log(link, "in", text if not binary else f"(binary) {text}")
        if size > self._max_payload:
            self._violate(
                "oversize-frame",
                f"{size}-byte frame is over jambonz's maxPayload ({self._max_payload} bytes): "
                "its ws client closes the socket with 1009 and jambonz reconnects",
                frame=text,
                link=link,
            )
            link.local_close = "oversize"
            self._link_lost(link, 1009, "Max payload size exceeded")
            self._nursery.start_soon(self._close_link, link, 1009, "Max payload size exceeded")
            return
        if binary:
            self._violate(
                "binary-frame",
                "binary frame: the protocol is JSON in text frames (0.9.8 parses it anyway)",
                frame=text,
                link=link,
            )
        obj, details = check_envelope(text)
        if obj is None:
            assert details is not None
            await self._invalid(link, text, details)
        elif obj["type"] == "ack":
            await self._on_ack(link, obj, text)
        else:
            await self._on_command(link, obj, text)

    async def _invalid(self, link: _Link, text: str, details: str) -> None:
        data = {"msg": "InvalidMessage", "details": details, "content": text}
        self._violate(
            "invalid-message",
            f"jambonz answers with jambonz:error InvalidMessage: {details}",
            frame=text,
            link=link,
        )
        self._errors_sent.append(data)
        if self._state != "ended" and not self._graceful:
            await self._emit(self._message(JambonzErrorReport, data))

    async def _on_ack(self, link: _Link, obj: dict[str, Any], text: str) -> None:
        msgid = obj["msgid"]
        self._init_msgid = None  # any ack clears the "session:new not acked" marker
        p = self._pending.get(msgid) if isinstance(msgid, str) else None
        if p is None:
            if msgid in self._expired:
                why = "it arrived after the ack timeout"
            elif msgid in self._acked:
                why = "that msgid was already acked"
            elif msgid in self._abandoned:
                why = "jambonz abandoned that request when its socket closed"
            elif isinstance(msgid, str) and msgid in self._sent_types:
                why = f"jambonz does not wait for acks to {self._sent_types[msgid]}"
            else:
                why = "jambonz never sent that msgid"
            self._violate(
                "unknown-ack",
                f"ack for msgid {msgid!r} discarded by jambonz: {why}",
                frame=text,
                link=link,
            )
            return
        del self._pending[msgid]
        self._acked.add(msgid)
        p.watchdog.cancel()
        mtype = p.message.type
        data = obj.get("data")
        verbs: list[Verb] = []
        initial = mtype == "session:new"
        if mtype in ("session:reconnect", "session:adulting"):
            pass  # ack data ignored by jambonz
        elif initial and self._rejects_call(p):
            problem = None
            if not isinstance(data, list) or not data:
                problem = "the session:new ack must carry a non-empty verb array"
            else:
                try:
                    verbs = structure_verbs(data)
                except ValueError as exc:
                    problem = f"invalid verbs in the session:new ack: {exc}"
            if problem is not None:
                v = self._violate("invalid-verbs", problem, frame=text, link=link, owned=self._own(p))
                p.fail(InvalidInitialVerbs([self._violations[v]]), v)
                self._end_call_soon(1001)
                return
        elif p.wait is not None and not isinstance(data, list):
            allowed, where = WAIT_HOOK_RULES[p.wait]
            self._violate(
                "refused-ack-data",
                f"the ack to a {p.wait} wait hook has "
                f"{'no data' if 'data' not in obj else 'data ' + dumps(data)[:60]}: jambonz 0.9.8 "
                "hands it to normalizeJambones, which throws 'malformed jambonz payload: must be "
                f"array', and the wait loop stops: the caller waits in silence ({where}). Send a "
                f"verb array ({', '.join(allowed)}); [] stops the loop quietly",
                frame=text,
                link=link,
            )
        elif p.lcc == "child_call_hook" and not isinstance(data, list):
            if not truthy(data):
                pass  # no program for the child: it stays bridged (FS call-session.js:1623)
            else:
                self._report_lost_child_answer(data, text, link)
        elif p.lcc == "call_hook" and not isinstance(data, list):
            if truthy(data):
                effect = (
                    "normalizeJambones throws (:1639-1640) in a handler nobody awaits (:2305): the "
                    "redirect is lost and the running verb goes on"
                )
            else:
                effect = "it kills the running verb (:1649-1652) and the rest of the program runs"
            self._violate(
                "refused-ack-data",
                f"the ack to the session:redirect for a redirect command's call_hook has "
                f"{'no data' if 'data' not in obj else 'data ' + dumps(data)[:60]}: jambonz 0.9.8 "
                f"takes it as the new program (FS lib/session/call-session.js:1595-1613); {effect}. "
                "Send a verb array ([] clears the program)",
                frame=text,
                link=link,
            )
        elif data is not None and not isinstance(data, list) and not _declines(mtype, data):
            # jambonz uses the data only if it is an array; anything else is "carry on", with no
            # error and no jambonz:error (a truthy non-array dial:confirm answer is the
            # exception: normalizeJambones throws and the callee is declined, below)
            where = _IGNORED_BY.get(mtype, "FS lib/tasks/task.js:254")
            self._violate(
                "ignored-ack-data",
                f"the ack to {mtype} has data {dumps(data)[:60]}, not a verb array: jambonz 0.9.8 "
                f"ignores it and carries on as if the ack were empty ({where}); send "
                "[] or leave data out (where jambonz requires an array the same value fails: a "
                "truthy one, {} included, declines a dial:confirm callee; any one stops a wait "
                "hook, see wait_hook())",
                frame=text,
                link=link,
            )
        elif data is not None:
            try:
                verbs = structure_verbs(data)
            except ValueError as exc:
                v = self._violate(
                    "invalid-verbs",
                    f"invalid verbs in the ack to {mtype}: {exc}",
                    frame=text,
                    owned=self._own(p),
                )
                p.fail(InvalidVerbs([self._violations[v]]), v)
                self._notify()
                return
        if p.wait is not None and isinstance(data, list):
            allowed, where = WAIT_HOOK_RULES[p.wait]
            others = sorted({v.VERB for v in verbs} - set(allowed))
            if others:
                self._violate(
                    "refused-ack-data",
                    f"the ack to a {p.wait} wait hook has {', '.join(others)}: jambonz 0.9.8 "
                    f"plays only {', '.join(allowed)} there; it refuses the answer and the wait "
                    f"loop stops: the caller waits in silence ({where})",
                    frame=text,
                    link=link,
                )
        record = AckRecord(
            msgid=msgid,
            request=p.message,
            verbs=verbs,
            raw=obj,
            connection=link.index,
            time=self._now(),
        )
        self._acks.append(record)
        if p.lcc == "call_hook":
            if isinstance(data, list):
                self._program_changed(verbs)  # the parent's new program, [] included (:1639-1642)
            elif not truthy(data):
                self._running_killed()  # :1649-1652
        elif p.lcc == "child_call_hook":
            # the verbs are the child's program (:1623-1638), not the parent's; with no
            # call_hook the parent's running verb is killed (:1649-1652), unless the answer
            # made _lccCallHook throw first (a truthy non-array, :1626)
            if p.kills_parent and (isinstance(data, list) or not truthy(data)):
                self._running_killed()
        elif (
            verbs
            and p.wait is None
            and p.program
            and mtype in ("session:new", "verb:hook", "session:redirect")
        ):
            self._program_changed(verbs)  # the ack's verbs replace the program (a wait hook's play)
        if initial:
            # jambonz creates the call session, then reports "trying"; sending it before
            # waking start() makes the order deterministic for tests.
            self._session_acked = True
            if self._send_trying and self._call.direction == "inbound":
                trying = self._message(MESSAGE_TYPES["call:status"], self._call.call_info())
                await self._emit(trying)
        p.succeed(record)
        self._notify()

    def _report_lost_child_answer(self, data: Any, text: str, link: _Link) -> None:
        """A truthy non-array answer to a ``child_call_hook``'s ``session:redirect``."""
        self._violate(
            "refused-ack-data",
            f"the ack to the session:redirect for a redirect command's child_call_hook has "
            f"data {dumps(data)[:60]}: jambonz 0.9.8 takes it as the child leg's program "
            "(FS lib/session/call-session.js:1623-1627); normalizeJambones throws (:1626) in a "
            "handler nobody awaits (:2305): the whole redirect is lost (the child stays "
            "bridged, nothing happens to the parent, whatever its own answer). Send a verb "
            "array, or nothing to leave the child alone",
            frame=text,
            link=link,
        )

    async def _on_command(self, link: _Link, obj: dict[str, Any], text: str) -> None:
        name = obj["command"]
        early = self._state == "idle" or (
            self._first_kind == "session:new"
            and self._call.direction == "inbound"
            and not self._session_acked
        )
        if early:
            self._violate(
                "early-command",
                f"{js_str(name)} command before the session:new ack: jambonz drops it "
                "silently (no call session exists yet)",
                frame=text,
                link=link,
            )
            return
        if name == "tts:tokens":
            paused, result = self._tts.tokens(obj.get("data"))
            if paused:
                await self._emit(self._message(TtsStreamingEvent, {"event_type": "stream_paused"}))
            if result is not None:
                await self._emit(self._message(TtsTokensResult, result))
        cmd, problem = parse_app_command(obj)
        if problem is not None:
            self._violate(problem[0], problem[1], frame=text, link=link)
        if cmd is None:
            return
        self._commands.append(CommandRecord(command=cmd, raw=obj, connection=link.index, time=self._now()))
        self._check_running(cmd, text, link)
        if isinstance(cmd, RedirectToHookCommand):
            if cmd.call_hook is not None:
                self._lcc_hooks.append(_url(cmd.call_hook))
            if cmd.child_call_hook is not None:
                self._lcc_child_hooks.append((_url(cmd.child_call_hook), cmd.call_hook is None))
        if isinstance(cmd, RedirectCommand):
            self._program_changed(list(cmd.verbs), append=cmd.queue)
        elif isinstance(cmd, RedirectLegsCommand) and cmd.parent_call is not None:
            self._program_changed(list(cmd.parent_call))
        if name == "tts:clear":
            self._tts.clear()
        elif name == "tts:flush":
            self._tts.flushes += 1
        elif name not in TTS_COMMANDS:
            self._inbox.append(cmd)
        self._notify()

    def _check_running(self, cmd: Command, text: str, link: _Link) -> None:
        """A command jambonz ignores unless a certain verb runs (docs/commands.md)."""
        rule = _NEEDS_VERB.get(type(cmd))
        if rule is None:
            return
        kinds, names, source = rule
        if self._running_known:
            if isinstance(self._running, kinds):
                return
            now = f"while {self._running.VERB} runs" if self._running is not None else "while no verb runs"
        elif any(isinstance(v, kinds) for v in self._program):
            return  # driven by hand: one of them may be running
        else:
            now = "with no " + names.replace(" or ", " nor ") + " in the call's program"
        self._violate(
            "ignored-command",
            f"{cmd.COMMAND} {now}: jambonz 0.9.8 acts on it only during {names}, and logs and "
            f"ignores it otherwise (FS {source})",
            frame=text,
            link=link,
        )

    # -- TTS playout -----------------------------------------------------------------------

    async def _drain(self, chars: int | None) -> None:
        if self._tts.drain(chars) and self._state != "ended":
            await self._emit(self._message(TtsStreamingEvent, {"event_type": "stream_resumed"}))
        self._notify()

    async def _auto_drain(self, per_second: float) -> None:
        tick = 0.1
        carry = 0.0
        while self._state != "ended":
            while self._tts.length == 0:
                event = self._changed
                await event.wait()
            await trio.sleep(tick)
            carry += per_second * tick
            whole = int(carry)
            carry -= whole
            if whole:
                await self._drain(whole)


def _url(hook: str | HookSpec) -> str:
    return hook.url if isinstance(hook, HookSpec) else hook
