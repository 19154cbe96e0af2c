"""Run the app's program the way jambonz would, for a scripted caller.

:func:`run_call` walks the verb lists the app answers with: it "plays" ``say``/``play``/
``pause`` (taking a little time, so commands can arrive meanwhile), sends a ``redirect``
verb's ``session:redirect``, asks the :class:`Caller`
what to answer at each ``gather`` (and how a ``dial`` or an ``llm`` turn ends), sends the
action hooks with the result shapes 0.9.8 sends, emits ``verb:status`` ``starting`` /
``finished`` once a ``config`` verb turned ``notifyEvents`` on, narrates the verbs it does not
simulate (docs/testing.md has the table), follows ``redirect`` commands
(replace or append; to a ``call_hook`` / ``child_call_hook``: the ``session:redirect`` round
trips), and ends the call on ``hangup`` / ``sip:decline`` / ``call:status
completed`` - or as the caller, when nothing is left to run for ``idle`` seconds. A socket
that drops while a hook waits for its ack abandons that request and reconnects, as jambonz
does, and the program carries on. It returns a :class:`CallRun`: what the caller heard and the
narration.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import attrs
import trio

from .._protocol import VerbHook
from .._protocol._outbound import (
    CallStatusCommand,
    LlmToolOutputCommand,
    RedirectCommand,
    RedirectLegsCommand,
    RedirectToHookCommand,
    absolute_url,
)
from .._protocol._verbs import (
    Conference,
    Config,
    Dial,
    Gather,
    Hangup,
    Listen,
    Llm,
    Pause,
    Play,
    Redirect,
    Say,
    SipDecline,
    Transcribe,
)
from .._protocol._verbs_base import Verb
from ._audio import AudioSource
from ._calldata import CallData
from ._errors import AckAbandoned, FakeJambonzError
from ._fake import FakeCall, WaitHookKind, dial_result_data, flux_speech_result, speech_result
from ._jambonz import truthy
from ._media import run_listen
from ._records import AckRecord

__all__ = [
    "CallRun",
    "Caller",
    "ConferenceOutcome",
    "Digits",
    "DialOutcome",
    "HangUp",
    "Refer",
    "Speech",
    "ToolCallScript",
    "run_call",
]


@attrs.frozen
class Speech:
    """The caller says ``text``."""

    text: str
    confidence: float = 0.9


@attrs.frozen
class Digits:
    """The caller presses ``digits``."""

    digits: str


@attrs.frozen
class HangUp:
    """The caller hangs up instead of answering (``call:status`` ``completed``, then the
    socket closes with 1000, as jambonz does)."""


def _refer_uri(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    """A ``Refer`` URI must be one jambonz parses (``sip:``, ``sips:``, ``tel:``)."""
    if value is not None and not value.startswith(("sip:", "sips:", "tel:")):
        raise ValueError(f"Refer.{attribute.name} must be a sip:, sips: or tel: URI, not {value!r}")


@attrs.frozen
class Refer:
    """A blind transfer: the phone on one leg of a connected ``dial`` sends a SIP REFER.

    Attributes:
        to: the ``Refer-To`` URI: ``sip:``, ``sips:`` or ``tel:`` (anything else raises
            ``ValueError``), e.g. ``"sip:+15557654321@example.com"``.
        by: the leg whose phone sends it: ``"callee"`` (the dialed party transfers the caller
            away) or ``"caller"`` (the caller transfers the callee away).
        referred_by: the ``Referred-By`` URI; default: the referring leg's own
            (``sip:<its number>@127.0.0.1``).
        user_agent: the REFER's ``User-Agent`` (``refer_details.sip_user_agent``); default none.
    """

    to: str = attrs.field(validator=_refer_uri)
    by: Literal["caller", "callee"] = "callee"
    referred_by: str | None = attrs.field(default=None, validator=_refer_uri)
    user_agent: str | None = None


@attrs.frozen
class DialOutcome:
    """How a ``dial`` ends (the fields of its actionHook). An answered one (``completed``) is
    connected while it runs: a ``redirect`` command's ``child_call_hook`` then reaches the
    callee.

    With a ``confirm_hook`` (the dial's or its first target's), the answered callee is asked
    first: ``dial:confirm`` with the child leg's call info, and the answer's verbs play to the
    callee; ``callee`` answers its ``gather`` verbs like the caller's (default: silence). A
    callee the program hangs up on, or an answer jambonz fails on, is declined: the dial ends
    at once (see docs/testing.md).

    While an answered dial is connected: ``caller_keys`` then ``callee_keys`` are pressed
    (SIP INFO, one after another: within jambonz's 3 s inter-digit timeout), each leg's keys
    matched against the dial's ``dtmfCapture`` and a match sent to its ``dtmfHook``; then, with
    ``hold``, the callee puts the caller on hold: the dial's ``onHoldHook`` is asked and its
    answer plays to the caller, and the callee takes the caller back; then, with ``refer``,
    one leg's phone sends a REFER (a :class:`Refer`): the dial's ``referHook`` is asked (the
    session's, from a ``config`` verb, for the caller's REFER on a dial without one) and its
    answer's verbs take the other leg elsewhere, which ends the dial (see docs/testing.md).
    """

    dial_call_status: str = "completed"
    dial_sip_status: int = 200
    callee: Caller | None = attrs.field(default=None, eq=False)
    caller_keys: str = ""
    callee_keys: str = ""
    hold: bool = False
    refer: Refer | None = None


@attrs.frozen
class ConferenceOutcome:
    """How a ``conference`` goes for the caller.

    Attributes:
        running: the conference is in progress when the caller arrives: the caller joins it
            (one other member is in). Otherwise the caller starts it - or, when the verb's
            ``start_conference_on_enter`` is ``False``, waits for someone else to start it:
            jambonz asks the ``wait_hook`` and plays its answer in a loop meanwhile.
        waits: how many times the ``wait_hook`` is asked (and its answer played) before the
            conference starts; it starts sooner if the app ends the loop (``[]``, or an
            answer jambonz refuses), and at once when there is no ``wait_hook``.
    """

    running: bool = False
    waits: int = 1


@attrs.frozen
class ToolCallScript:
    """The model calls tool ``name`` with ``args`` during an ``llm`` verb."""

    name: str
    args: Any = None
    tool_call_id: str = "call_1"


Answer = Speech | Digits | HangUp | None
#: ``on_gather``: returns the answer (a ``str`` is :class:`Speech`), or an awaitable of it
#: (a scripted caller may wait).
OnGather = Callable[[Gather], str | Answer | Awaitable[str | Answer]]
Step = Callable[[str, str], None]


def _hook_url(hook: Any) -> str:
    return str(getattr(hook, "url", hook))


def _hook_arrow(hook: Any) -> str:
    """`` -> <hook's url>`` for the narration, or nothing for a verb without that hook."""
    return "" if hook is None else f" -> {_hook_url(hook)}"


class _Killed:
    """The running verb was killed by a redirect."""


_KILLED = _Killed()

#: How a dial's ``confirmHook`` program ended for the callee (:meth:`_Runner._confirm`).
_Confirmed = Literal["accepted", "declined", "callee hung up", "killed"]

#: How a command ends the running verb: its program is replaced (``KillReason.Replaced``), or
#: it is killed and the program goes on (a falsy ``call_hook`` answer, or a ``child_call_hook``
#: alone, FS v0.9.8 ``lib/session/call-session.js:1649-1652``: ``kill(cs)``, no reason).
Kill = Literal["replaced", "killed"]


class Caller:
    """What the caller does: answers for each ``gather`` in order, dial outcomes, and tool
    calls the model makes in ``llm`` verbs.

    Args:
        answers: one per ``gather``, in order: a ``str`` or :class:`Speech` is speech,
            :class:`Digits` keys, ``None`` silence, :class:`HangUp` hangs up. Once they run
            out, the caller stays silent.
        dials: how each ``dial`` ends, in order (default: answered, then completed).
        conferences: how each ``conference`` goes, in order (default: the caller starts it,
            or waits one ``wait_hook`` round when it may not start it).
        tool_calls: the tool calls the model makes in each ``llm`` verb.
        on_gather: instead of ``answers``: called with each ``Gather`` verb, returns the answer
            as ``answers`` gives it (a ``str`` is speech), sync or ``async`` (an ``async``
            one may wait, e.g. for a person to type, while the call goes on: commands the app
            pushes meanwhile are followed, and a redirect that kills the gather cancels the
            wait).
        audio: what the caller speaks into each ``listen`` (see :func:`run_call`).
        audio_pace: how fast it is sent, in multiples of real time on trio's clock; ``None``:
            as fast as the socket takes it, with instant playout of what the app plays back.
    """

    def __init__(
        self,
        *answers: str | Answer,
        dials: Sequence[DialOutcome] = (),
        conferences: Sequence[ConferenceOutcome] = (),
        tool_calls: Sequence[ToolCallScript] = (),
        on_gather: OnGather | None = None,
        audio: AudioSource | None = None,
        audio_pace: float | None = 1.0,
    ) -> None:
        self._answers = [Speech(a) if isinstance(a, str) else a for a in answers]
        self._dials = list(dials)
        self._conferences = list(conferences)
        self.tool_calls = list(tool_calls)
        self._on_gather = on_gather
        self.audio = audio
        self.audio_pace = audio_pace

    async def answer(self, gather: Gather) -> Answer:
        """The answer to ``gather`` (awaits ``on_gather`` when it is ``async``: blocks as long
        as it does, with no timeout of its own; what it raises propagates)."""
        if self._on_gather is not None:
            result = self._on_gather(gather)
            if not (result is None or isinstance(result, str | Speech | Digits | HangUp)):
                result = await result
            return Speech(result) if isinstance(result, str) else result
        return self._answers.pop(0) if self._answers else None

    def dial(self, dial: Dial) -> DialOutcome:
        """How ``dial`` ends: the next of ``dials``, else answered and completed."""
        return self._dials.pop(0) if self._dials else DialOutcome()

    def conference(self, conference: Conference) -> ConferenceOutcome:
        """How ``conference`` goes: the next of ``conferences``, else ``ConferenceOutcome()``."""
        return self._conferences.pop(0) if self._conferences else ConferenceOutcome()


@attrs.frozen
class CallRun:
    """What :func:`run_call` played.

    Attributes:
        heard: what the caller heard, in order, however the app sent it (an ack, or a
            ``redirect``): the text of each ``say`` that started playing (a gather's prompt
            too; a list of texts joined with ``" | "``), and ``"play <url>"`` for each
            ``play``.
        steps: the narration, ``(who, text)`` pairs (see :func:`run_call`).
    """

    heard: list[str]
    steps: list[tuple[str, str]]


async def run_call(
    fc: FakeCall,
    caller: Caller,
    *,
    idle: float = 2.0,
    speaking: float = 0.05,
    on_step: Step | None = None,
    start: bool = True,
) -> CallRun:
    """Play the whole call: ``session:new`` (unless ``start=False``), then the app's program.

    Blocks until the call is over, and returns what the caller heard and the narration.
    ``on_step(who, text)`` narrates the call as it goes: ``who`` is ``jambonz``, ``app`` (the
    verbs of an ack), ``command`` (a command the app pushed), ``caller`` (an answer),
    ``callee`` (a dial's ``confirmHook`` program on the callee) or ``heard`` (a ``say`` /
    ``play`` starts playing, whichever way the app sent it). A hook abandoned by a socket drop
    does not end the call: jambonz reconnects and carries on.

    The fake's ``ack_timeout`` bounds each hook, ``idle`` the quiet end; an ``async``
    ``on_gather`` or a program that never ends is bounded only by the caller's
    ``trio.fail_after``.

    Raises:
        FakeJambonzError: the fake's errors (strict violations, ack timeouts, a rejected call).
    """
    runner = _Runner(fc, caller, idle=idle, speaking=speaking, on_step=on_step or (lambda w, t: None))
    await runner.run(start=start)
    return CallRun(heard=runner.heard, steps=runner.steps)


class _Runner:
    def __init__(self, fc: FakeCall, caller: Caller, *, idle: float, speaking: float, on_step: Step) -> None:
        self.fc = fc
        self.caller = caller
        self.idle = idle
        self.speaking = speaking
        self.on_step = on_step
        self.program: list[Verb] = []
        self.seen = 0
        self.notify = False
        self.ended = False
        self.heard: list[str] = []
        self.steps: list[tuple[str, str]] = []
        #: the child leg of the connected ``dial`` (while one runs), for ``child_call_hook``
        self.child: CallData | None = None
        #: how the last command that ended the running verb did it
        self.kill: Kill | None = None
        #: the session's ``referHook`` (a ``config`` verb's), for a REFER outside a dial's own
        self.refer_hook: Any = None

    def step(self, who: str, text: str) -> None:
        self.steps.append((who, text))
        self.on_step(who, text)

    def _hear(self, verb: Say | Play) -> None:
        if isinstance(verb, Say):
            text = verb.text if isinstance(verb.text, str) else " | ".join(verb.text or [])
        else:
            text = "play " + (verb.url if isinstance(verb.url, str) else " | ".join(verb.url))
        self.heard.append(text)
        self.step("heard", text)

    def _narrate_ack(self, ack: AckRecord) -> None:
        if not ack.verbs:
            self.step("app", "(acked, no change)")
        for verb in ack.verbs:
            self.step("app", describe_verb(verb))

    async def run(self, *, start: bool) -> None:
        fc = self.fc
        if start:
            ack = await fc.start()
            self.step("jambonz", f"session:new  {fc.call.from_} -> {fc.call.to}")
            self._narrate_ack(ack)
            self.program = list(ack.verbs)
        while not self.ended and not fc.is_over:
            await self._follow_commands()
            if self.ended:
                break
            if not self.program:
                if not await self._idle():
                    self.step("caller", "(hangs up)")
                    await fc.hangup()
                    return
                continue
            await self._execute(self.program.pop(0))
        if not fc.is_over:
            await fc.hangup(by="jambonz")

    async def _idle(self) -> bool:
        """Wait for a command; ``False`` when none came within ``idle`` seconds."""
        with trio.move_on_after(self.idle):
            while len(self.fc.commands) == self.seen and not self.fc.is_over:
                await self.fc.wait_idle(0.05)
        return len(self.fc.commands) > self.seen

    async def _follow_commands(self, until: int | None = None) -> Kill | None:
        """Follow the commands that arrived (up to index ``until``); how one of them ended the
        running verb, if one did (:attr:`kill` keeps it). A ``redirect`` to a hook waits for
        the ``session:redirect`` answers: meanwhile the verb runs on, as in jambonz. Shielded
        from the caller's cancellation (an ``async`` caller answering meanwhile): a request
        jambonz sent is seen through; the fake's ack timeout bounds it."""
        kill: Kill | None = None
        with trio.CancelScope(shield=True):
            while self.seen < (len(self.fc.commands) if until is None else until):
                record = self.fc.commands[self.seen]
                self.seen += 1
                self.step("command", describe_command(record.command))
                cmd = record.command
                ended: Kill | None = None
                if isinstance(cmd, RedirectCommand):
                    if cmd.queue:
                        self.program.extend(cmd.verbs)
                    else:
                        self.program = list(cmd.verbs)
                        ended = "replaced"
                elif isinstance(cmd, RedirectLegsCommand) and cmd.parent_call is not None:
                    self.program = list(cmd.parent_call)
                    ended = "replaced"
                elif isinstance(cmd, RedirectToHookCommand):
                    ended = await self._redirect_to_hook(cmd)
                elif isinstance(cmd, CallStatusCommand) and cmd.call_status == "completed":
                    self.ended = True
                if ended is not None and kill != "replaced":
                    kill = ended
        if kill is not None:
            self.kill = kill
        return kill

    async def _redirect_to_hook(self, cmd: RedirectToHookCommand) -> Kill | None:
        """jambonz's ``_lccCallHook`` for a ``redirect`` to hooks (FS v0.9.8
        ``lib/session/call-session.js:1589-1657``): ``session:redirect`` to ``call_hook`` with
        the call info, and to ``child_call_hook`` with the child's while a ``dial`` is
        connected, both at once (``:1595-1608``); then the child's answer moves it to a session
        of its own (``:1623-1638``), the parent's replaces the program (``:1639-1642``), and
        with no parent program the running verb is killed (``:1649-1652``)."""
        fc = self.fc
        running = fc._running
        parent = _hook_url(cmd.call_hook) if cmd.call_hook is not None else None
        child_hook = _hook_url(cmd.child_call_hook) if cmd.child_call_hook is not None else None
        # between two verbs (an actionHook's answer awaited) the verb whose hook went out is
        # jambonz's current task: a kill ends nothing more; with no verb left, there is none
        idle = running is None and not self.program
        if child_hook is not None and idle:
            # reading the running verb's sd throws with none running (:1601-1602), after the
            # parent's session:redirect went out (:1596-1598): its answer is lost
            self.step("jambonz", "no verb runs: the redirect fails in jambonz (call-session.js:1602)")
            if parent is not None:
                self.step("jambonz", f"session:redirect {parent} (its answer is lost)")
                await self._session_redirect(parent)
            return None
        leg = self.child if child_hook is not None and isinstance(running, Dial) else None
        if child_hook is not None and leg is None:
            self.step("jambonz", f"no connected dial: no session:redirect for {child_hook} (:1600-1606)")
        requests: list[tuple[str, CallData | None]] = []
        if parent is not None:
            requests.append((parent, None))
        if child_hook is not None and leg is not None:
            requests.append((child_hook, leg))
        for url, to_child in requests:
            self.step("jambonz", f"session:redirect {url}" + (" (the child leg)" if to_child else ""))
        acks = await self._session_redirects(requests)
        if any(ack is None for ack in acks):
            return None  # abandoned by a drop: Promise.all rejects, nothing more happens
        answers = dict(zip([url for url, _ in requests], acks, strict=True))
        child_ack = answers.get(child_hook) if leg is not None and child_hook is not None else None
        if child_ack is not None:
            data = child_ack.raw.get("data")
            if isinstance(data, list):
                names = ", ".join(describe_verb(verb) for verb in child_ack.verbs) or "(no verbs)"
                self.step(
                    "jambonz",
                    "the child leg leaves the dial for a session of its own: session:adulting on "
                    f"a new socket to <call hook>/adulting, not played here; its program: {names}",
                )
                self.child = None  # the dial lets go of it (lib/tasks/dial.js:764-772)
            elif truthy(data):
                return None  # normalizeJambones throws (:1626): the whole redirect is lost
        parent_ack = answers.get(parent) if parent is not None else None
        if parent_ack is None:
            return "killed" if running is not None else None  # :1649-1652
        self._narrate_ack(parent_ack)
        data = parent_ack.raw.get("data")
        if isinstance(data, list):
            self.program = list(parent_ack.verbs)  # [] too: nothing follows (:1639-1642)
            return "replaced"
        if truthy(data):
            return None  # normalizeJambones throws (:1640): the redirect is lost
        return "killed" if running is not None else None  # :1649-1652

    async def _session_redirect(self, url: str, child: CallData | None = None) -> AckRecord | None:
        """One ``session:redirect`` of a ``redirect`` command; ``None`` if a drop abandoned it."""
        try:
            if child is not None:
                return await self.fc.session_redirect(url, child_call_hook=True, child=child)
            return await self.fc.session_redirect(url, call_hook=True)
        except AckAbandoned as exc:
            if self.fc.is_over:
                raise
            self.step("jambonz", f"the socket dropped before the ack: {exc.msg_type} abandoned; carrying on")
            return None

    async def _session_redirects(
        self, requests: Sequence[tuple[str, CallData | None]]
    ) -> list[AckRecord | None]:
        """The ``session:redirect`` requests at once, as jambonz's ``Promise.all`` (:1608): an
        app may answer them in any order. The first error of the fake is raised as is."""
        acks: list[AckRecord | None] = [None] * len(requests)
        errors: list[FakeJambonzError] = []

        async def one(index: int, url: str, child: CallData | None) -> None:
            try:
                acks[index] = await self._session_redirect(url, child)
            except FakeJambonzError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for index, (url, child) in enumerate(requests):
                nursery.start_soon(one, index, url, child)
        if errors:
            raise errors[0]
        return acks

    async def _status(self, event: str, verb: Verb) -> None:
        if self.notify and not self.fc.is_over:
            await self.fc.verb_status(event, id=verb.id, name=verb.VERB)

    async def _play(self, verb: Verb, *, hear: bool = True) -> bool:
        """Let ``speaking`` seconds pass; ``False`` if a redirect killed the verb. ``hear``:
        a ``say`` / ``play`` is heard by the caller (not one played to the callee)."""
        if hear and isinstance(verb, Say | Play):
            self._hear(verb)
        await self.fc.wait_idle(self.speaking)
        return not await self._follow_commands() and not self.ended

    async def _ask(self, verb: Gather) -> Answer | _Killed:
        """The caller's answer, while the call goes on: commands that arrive meanwhile are
        followed (and narrated) at once; one that replaces the program kills the gather and
        cancels the wait."""
        got: list[Answer] = []
        async with trio.open_nursery() as nursery:

            async def ask() -> None:
                got.append(await self.caller.answer(verb))
                nursery.cancel_scope.cancel()

            nursery.start_soon(ask)
            while True:
                if await self._follow_commands() or self.ended or self.fc.is_over:
                    nursery.cancel_scope.cancel()
                    return _KILLED
                await self.fc.wait_idle(0.05)
        return got[0]

    async def _after_hook(self, ack: AckRecord | None, *, use_verbs: bool = True) -> None:
        if ack is None:
            return  # abandoned: the verb ends with no new verbs
        self._narrate_ack(ack)
        if ack.verbs and use_verbs:
            self.program = list(ack.verbs)

    async def _hook(self, verb: Verb, data: dict[str, Any]) -> AckRecord | None:
        """Send the verb's action hook; ``None`` if a socket drop abandoned it (jambonz fails
        the request, reconnects and carries on, docs/protocol.md §6.2 step 1)."""
        try:
            return await self.fc.hook(verb, data)
        except AckAbandoned as exc:
            if self.fc.is_over:
                raise
            self.step("jambonz", f"the socket dropped before the ack: {exc.msg_type} abandoned; carrying on")
            return None

    async def _execute(self, verb: Verb) -> None:
        fc = self.fc
        await self._status("starting", verb)
        fc._set_running(verb)
        try:
            finished = await self._run_verb(verb)
        finally:
            fc._set_running(None)
        if finished is not None:
            await self._status("finished", verb)

    async def _run_verb(self, verb: Verb) -> bool | None:
        """Run one verb; ``None`` if it ended the call (no ``finished`` report), ``False`` if a
        redirect killed it (still reported ``finished``, as jambonz does)."""
        run = _VERB_RUNNERS.get(type(verb))
        if run is not None:
            return await run(self, verb)
        if isinstance(verb, Config):
            if verb.notify_events:
                self.notify = True
            if verb.refer_hook is not None:
                self.refer_hook = verb.refer_hook  # FS v0.9.8 lib/tasks/config.js:342-344
        elif isinstance(verb, Say | Pause):
            if not await self._play(verb):
                return False
        elif isinstance(verb, Hangup | SipDecline):
            self.step("jambonz", f"runs {describe_verb(verb)}: the call ends")
            self.ended = True
            await self.fc.hangup(by="jambonz")
            return None
        else:
            # never silently: a test author must see that this verb did nothing here
            self.step("jambonz", f"{describe_verb(verb)}: not simulated by run_call ({not_simulated(verb)})")
        return True

    async def _play_verb(self, verb: Play) -> bool:
        """A ``play``; its actionHook goes out even when a command killed it, and its answer's
        verbs replace the program, even one the command just put in place (FS v0.9.8
        ``lib/tasks/play.js:91-95``: ``this.killed`` reports too, with ``expectResponse`` true
        for a top-level play; ``lib/tasks/task.js:253-260``)."""
        played = await self._play(verb)
        if self.ended or self.fc.is_over:
            return False
        if verb.action_hook is not None:
            killed = "" if played else ", the killed play still reports"
            self.step("jambonz", f"verb:hook {_hook_url(verb.action_hook)} (playCompleted{killed})")
            data = {"reason": "playCompleted", "playback_seconds": 1, "playback_milliseconds": 1000}
            await self._after_hook(await self._hook(verb, data))
        return played

    async def _redirect_verb(self, verb: Redirect) -> bool | None:
        """A ``redirect`` verb (FS v0.9.8 ``lib/tasks/redirect.js``): its actionHook goes out as
        ``session:redirect`` with the call info and ``verb_id`` (``lib/tasks/task.js:226``,
        ``:233``) and a non-empty verb array answer replaces the program; anything else carries
        on (``:253-260``). An absolute URL hands the call to a new requestor (``redirect.js:20-47``,
        ``lib/session/call-session.js:126-135``): ``run_call`` cannot follow it there."""
        hook = verb.action_hook
        if not isinstance(hook, str):
            # redirect.js:20 asks requestor._isAbsoluteUrl(this.actionHook), which calls
            # u.startsWith on anything but a string (lib/utils/base-requestor.js:68-72): the
            # TypeError fails the task and the exec loop stops (call-session.js:1389-1391, :1420-1424)
            self.step(
                "jambonz",
                f"redirect {hook.url}: an actionHook given as an object fails the redirect verb in "
                "jambonz 0.9.8 (base-requestor.js:68-72 throws); the call ends",
            )
            self.ended = True
            await self.fc.hangup(by="jambonz")
            return None
        if verb.status_hook is not None and not await self._redirect_status_hook(_hook_url(verb.status_hook)):
            return None
        if absolute_url(hook):
            # the session:redirect goes to a new socket (or an HTTP webhook): this socket gets no
            # more verbs, its commands are ignored (call-session.js:126-135), but call:status
            # still comes here (the notifier stays, lib/middleware.js:336) until the call ends
            self.step(
                "jambonz",
                f"session:redirect {hook} goes to a new socket: the call leaves this app; "
                "run_call does not follow it and ends the call as the caller hanging up",
            )
            self.ended = True
            await self.fc.hangup()
            return None
        self.step("jambonz", f"session:redirect {hook} (redirect verb)")
        try:
            data = {"verb_id": verb.id} if verb.id else None
            ack = await self.fc.request("session:redirect", data, hook=hook)
        except AckAbandoned as exc:
            if self.fc.is_over:
                raise
            # performAction rethrows (task.js:262-266): the exec loop stops and the call ends
            self.step("jambonz", f"the socket dropped before the ack: {exc.msg_type} abandoned; call ends")
            self.ended = True
            await self.fc.hangup(by="jambonz")
            return None
        await self._after_hook(ack)
        return True

    async def _redirect_status_hook(self, url: str) -> bool:
        """A ``redirect`` verb's ``statusHook`` (FS v0.9.8 ``lib/tasks/redirect.js:53-78``).
        A relative one only renames the hook of ``call:status``, which carries no hook on a
        socket (``lib/utils/ws-requestor.js:204-206``): nothing changes here. An absolute one
        gets a notifier of its own, and the old notifier is closed: on a WebSocket app it is
        the app's requestor (``lib/middleware.js:335-336``), so jambonz closes this socket
        with 1000 and never reconnects; what it would send later is discarded
        (``ws-requestor.js:81-84``, ``:325-339``). ``False`` then: the app hears no more of
        the call (``call:status`` goes to the new URL)."""
        if not absolute_url(url):
            self.step(
                "jambonz",
                f"statusHook {url}: jambonz renames the call:status hook (redirect.js:73-74); "
                "call:status carries no hook on a socket: nothing changes here",
            )
            return True
        self.step(
            "jambonz",
            f"statusHook {url}: jambonz 0.9.8 gives call:status a notifier of its own and closes "
            "the old one, this app's socket (redirect.js:57-71, middleware.js:335-336): closed "
            "with 1000, nothing more is sent here (the session:redirect is discarded)",
        )
        self.ended = True
        await self.fc._end_call(1000)
        return False

    async def _conference(self, verb: Conference) -> bool | None:
        """A ``conference`` (FS v0.9.8 ``lib/tasks/conference.js``). Not running yet and
        ``start_conference_on_enter`` ``False``: the caller waits, and the ``wait_hook`` is
        asked and its answer played in a loop (``:161-163``, ``:240-253``); then, or at once,
        it starts (``statusHook`` ``start``, ``:335-337``) or the caller joins it: the
        ``enter_hook``'s answer plays (``:340-350``), then ``join`` (``:384``). It runs
        ``speaking`` seconds (whisper, mute act on it) and ends, killed or not: ``leave``, and
        ``end`` when it is empty or ``end_conference_on_exit`` (``:618-647``); then its
        actionHook with ``{}`` (``:107-110``, ``:117-134``), whose answer is the new program."""
        outcome = self.caller.conference(verb)
        conf = _ConfState(self, verb)
        action = "join" if outcome.running else "wait" if verb.start_conference_on_enter is False else "start"
        killed = False
        if action == "wait":
            self.step(
                "jambonz", f"conference {verb.name} has not started: the caller waits (conference.js:161-163)"
            )
            if verb.wait_hook is not None:
                killed = not await self._wait_loop(_hook_url(verb.wait_hook), outcome.waits)
            if not killed:
                self.step("jambonz", f"conference {verb.name} starts: the caller joins it")
                conf.started = trio.current_time()  # notifyStartConference (:450)
        if self.ended or self.fc.is_over:
            return None
        if not killed:
            if action == "start":
                self.step("jambonz", f"conference {verb.name} starts with the caller")
                await conf.notify("start", members=0)  # :335-337
            if verb.enter_hook is not None:
                killed = not await self._play_hook(_hook_url(verb.enter_hook), "enterHook")
        if self.ended or self.fc.is_over:
            return None
        if not killed:
            conf.members = 1 if action == "start" else 2
            await conf.notify("join", members=conf.members)  # :381-384
            killed = not await self._play(verb)
            if self.ended or self.fc.is_over:
                return None
            # a kill counts the members without this one (:623-625); an end of the
            # conference itself finds none (:624)
            conf.members = conf.members - 1 if killed else 0
            await conf.notify("leave", members=conf.members)  # :630
            if conf.members == 0 or verb.end_conference_on_exit:
                await conf.notify("end", members=conf.members)  # :636-639
        if self.ended or self.fc.is_over:
            return None
        if verb.action_hook is not None:
            self.step("jambonz", f"conference ends; verb:hook {_hook_url(verb.action_hook)}")
            await self._after_hook(await self._hook(verb, {}))
        return not killed

    async def _wait_loop(self, hook: str, rounds: int) -> bool:
        """The ``waitHook`` loop while the conference has not started (FS v0.9.8
        ``lib/tasks/conference.js:240-253``): 750 ms of silence, ask the hook, play its answer;
        ``[]`` or a failure ends the loop (the caller waits in silence). ``False`` if a
        command killed the verb."""
        for _ in range(rounds):
            await self.fc.wait_idle(0.75)  # silence_stream://750 (:243)
            if await self._follow_commands() or self.ended or self.fc.is_over:
                return False
            played = await self._play_hook(hook, "waitHook")
            if played is None:
                return True  # the loop ends (:245, :246-251)
            if not played:
                return False
        return True

    async def _play_hook(
        self,
        hook: str,
        name: str,
        *,
        kind: WaitHookKind = "conference",
        where: str = "conference.js:655-661",
        data: dict[str, Any] | None = None,
    ) -> bool | None:
        """Ask a wait hook and play its answer to the caller: a conference's ``waitHook`` /
        ``enterHook`` (FS v0.9.8 ``lib/tasks/conference.js:650-686``), a dial's ``onHoldHook``
        (``lib/tasks/dial.js:1091-1129``): only ``play``, ``say``, ``pause`` (anything else
        throws, ``where``). ``None`` if nothing played (``[]``, or the request or the answer
        failed), ``False`` if a command killed the verb."""
        self.step("jambonz", f"verb:hook {hook} ({name})")
        try:
            ack = await self.fc.wait_hook(hook, kind=kind, data=data)
        except AckAbandoned as exc:
            if self.fc.is_over:
                raise
            self.step("jambonz", f"the socket dropped before the ack: {exc.msg_type} abandoned; carrying on")
            return None
        self._narrate_ack(ack)
        self.fc._check()  # strict: a refused answer raises here
        data = ack.raw.get("data")
        if not isinstance(data, list) or any(not isinstance(v, Say | Play | Pause) for v in ack.verbs):
            self.step("jambonz", f"the {name} answer is refused ({where}): nothing plays")
            return None
        if not ack.verbs:
            return None
        for played in ack.verbs:
            if not await self._play(played):
                return False
        return True

    async def _transcribe(self, verb: Transcribe) -> bool | None:
        """A ``transcribe`` verb runs until something kills it (FS v0.9.8
        ``lib/tasks/transcribe.js:136``: ``awaitTaskDone``): the verbs after it wait. No
        transcripts are simulated; with no command for ``idle`` seconds the caller hangs up."""
        self.step("jambonz", "transcribe runs until a command ends it (no transcripts simulated)")
        while True:
            with trio.move_on_after(self.idle) as quiet:
                while len(self.fc.commands) == self.seen and not self.fc.is_over:
                    await self.fc.wait_idle(0.05)
            if await self._follow_commands() or self.ended or self.fc.is_over:
                return False
            if quiet.cancelled_caught:
                self.step("caller", "(hangs up)")
                self.ended = True
                await self.fc.hangup()
                return None

    async def _gather(self, verb: Gather) -> bool | None:
        """A ``gather``: the prompt, the caller's answer, the actionHook with the result. One
        without an actionHook still listens (the caller's answer goes to it) and ends on the
        result like any other; only ``performAction`` sends nothing (FS v0.9.8
        ``lib/tasks/gather.js:1313-1420``, ``lib/tasks/task.js:225``)."""
        prompt = verb.say if verb.say is not None else verb.play
        if prompt is not None and not await self._play(prompt):
            return False
        answer = await self._ask(verb)
        if answer is _KILLED:
            return False
        if isinstance(answer, HangUp):
            self.step("caller", "(hangs up)")
            self.ended = True
            await self.fc.hangup()
            return None
        assert not isinstance(answer, _Killed)
        kind: Literal["digits", "speech"] = "digits" if isinstance(answer, Digits) else "speech"
        if answer is not None and not self.fc._hears(verb, kind):
            self.fc._check()  # strict: unheard-input raises here
            self.step("caller", f"{_said(answer)} (not listened for: the gather times out)")
            answer = None
        self.step("caller", _said(answer) if answer is not None else "(silence)")
        if verb.action_hook is None:
            self.step(
                "jambonz", "the gather ends; it has no actionHook: the result goes nowhere (task.js:225)"
            )
            return True
        hook = _hook_url(verb.action_hook)
        data: dict[str, Any]
        if isinstance(answer, Digits):
            data = {"reason": "dtmfDetected", "digits": answer.digits}
        elif isinstance(answer, Speech) and _eager_flux(verb):
            # Deepgram Flux reports the turn's likely end first (EagerEndOfTurn, sent only with
            # eager_eot_threshold; EndOfTurn then carries the same transcript): FS v0.9.8
            # lib/tasks/gather.js:1115-1118 passes it to the actionHook while the gather runs
            # on, ignoring the ack's verbs (performAction(..., false), lib/tasks/task.js:224-267).
            # jambonz does not wait for that ack; the fake does, so an app that leaves the hook
            # unanswered fails with AckTimeout (jambonz fails the request after 5 s)
            self.step("jambonz", f"verb:hook {hook} (EagerEndOfTurn)")
            early = flux_speech_result(answer.text, "EagerEndOfTurn", answer.confidence)
            await self._after_hook(await self._hook(verb, early), use_verbs=False)
            data = flux_speech_result(answer.text, "EndOfTurn", answer.confidence)
        elif isinstance(answer, Speech):
            data = speech_result(answer.text, answer.confidence)
        else:
            data = {"reason": "timeout"}
        self.step("jambonz", f"verb:hook {hook}")
        ack = await self._hook(verb, data)
        if ack is None and not self.fc.is_over:
            # FS v0.9.8 lib/tasks/gather.js:1426-1447: a failed actionHook is reported with a
            # jambonz:error and a call:status carrying `error` (err.message of the string
            # "abandoning msgid ..." is undefined: no details, no reason), then the gather ends
            await self.fc.jambonz_error("invalid actionHook response", verb="gather", id=verb.id)
            await self.fc.notify(
                "call:status", {**self.fc.call.call_info(), "error": "invalid actionHook response"}
            )
        await self._after_hook(ack)
        return True

    async def _dial(self, verb: Dial) -> bool:
        outcome = self.caller.dial(verb)
        self.step("jambonz", f"dials {describe_verb(verb)}")
        answered = outcome.dial_call_status == "completed"
        leg = self.fc._child_leg() if answered else None
        confirm = _confirm_hook(verb)
        data: dict[str, Any] | None = None
        self.kill = None
        killed = False
        if leg is not None and confirm is not None:
            confirmed = await self._confirm(confirm, leg, outcome.callee)
            killed = confirmed == "killed"
            if confirmed == "callee hung up":
                # the callee's BYE reports completed, with no sip status (FS v0.9.8
                # lib/utils/place-outdial.js:272-277, lib/tasks/dial.js:701-710); its session
                # ends and the callee, no longer connected, is declined (place-outdial.js:428)
                data = dial_result_data("completed", 200, leg.call_sid)
                del data["dial_sip_status"]
            elif confirmed != "accepted":
                # the callee answered (callStatusChange in-progress, FS v0.9.8
                # lib/tasks/dial.js:701-710) and was declined or the dial killed before the
                # bridge: the dial ends with those results (:748-756)
                data = dial_result_data("in-progress", 200, leg.call_sid)
        if data is None:
            # an answered dial is connected while it runs: a child_call_hook can reach the callee
            self.child = leg
            try:
                killed = not await self._connected(verb, outcome, leg)
            finally:
                self.child = None
            child_sid = leg.call_sid if leg is not None else None
            data = dial_result_data(outcome.dial_call_status, outcome.dial_sip_status, child_sid)
        if self.ended or self.fc.is_over:
            return False
        if verb.action_hook is None:
            return not killed
        hook = _hook_url(verb.action_hook)
        self.step("jambonz", f"dial ends: {data['dial_call_status']}; verb:hook {hook}")
        # a dial killed by a redirect still sends its actionHook; it ignores the ack's verbs
        # when the program was replaced (FS v0.9.8 lib/tasks/dial.js:249: expectResponse is
        # false for KillReason.Replaced), not when it was only killed (:270: reason hangup)
        ack = await self._hook(verb, data)
        await self._after_hook(ack, use_verbs=not (killed and self.kill == "replaced"))
        return not killed

    async def _connected(self, verb: Dial, outcome: DialOutcome, leg: CallData | None) -> bool:
        """The dial while it runs (connected when answered): the scripted keys and hold, then
        ``speaking`` seconds; commands may arrive throughout. ``False`` if one killed it, or
        a REFER ended it (:attr:`kill` says how)."""
        if leg is None and (outcome.caller_keys or outcome.callee_keys or outcome.hold or outcome.refer):
            self.step("jambonz", "the dial is not answered: no keys are captured, nobody holds or transfers")
        elif leg is not None:
            if not await self._dial_keys(verb, outcome, leg):
                return False
            if outcome.hold and not await self._dial_hold(verb, leg):
                return False
            if outcome.refer is not None and await self._dial_refer(verb, outcome.refer, leg):
                return False
        return await self._play(verb)

    async def _dial_keys(self, verb: Dial, outcome: DialOutcome, leg: CallData) -> bool:
        """The keys pressed on each leg while the dial is connected (FS v0.9.8
        ``lib/tasks/dial.js``): with a ``dtmfHook`` each leg has a collector of ``dtmfCapture``
        patterns (``:115-122``, ``:29-52``), installed once the callee is bridged
        (``:922-923``); a key (a SIP INFO, ``:484-510``; none is watched while the session has
        a ``sipRequestWithinDialogHook``, ``:486-488``, which ``run_call`` does not model) that
        makes the keys so far end with a pattern (``lib/utils/dtmf-collector.js:20-39``, the
        keys kept after a match) sends ``verb:hook`` to the ``dtmfHook`` with ``dtmf`` and that
        leg's call info, over this socket (the child leg's session shares the parent's
        requestor until it is adulted), without waiting for the answer, which is ignored
        (``:511-517``). ``False`` if a command killed the dial meanwhile."""
        fc = self.fc
        if not (outcome.caller_keys or outcome.callee_keys):
            return True
        if verb.dtmf_hook is None:
            self.step("jambonz", "the dial has no dtmfHook: no keys are captured (dial.js:115)")
            return True
        hook = _hook_url(verb.dtmf_hook)
        capture: Any = verb.dtmf_capture
        parent, child = _dtmf_patterns(capture)
        if isinstance(capture, dict) and capture.get("parentCall"):
            self.step(
                "jambonz",
                "dtmfCapture.parentCall: jambonz 0.9.8 adds those patterns to the callee's leg "
                "(dial.js:41-43); the caller's keys are not captured",
            )
        legs = (("caller", outcome.caller_keys, parent, fc.call), ("callee", outcome.callee_keys, child, leg))
        for who, keys, patterns, info in legs:
            if not keys:
                continue
            self.step(who, f"presses {keys}")
            if not patterns:
                self.step("jambonz", f"no dtmfCapture pattern on the {who}'s leg: the keys are not captured")
                continue
            pressed = ""
            for key in keys:
                pressed += key
                match = next((pattern for pattern in patterns if pressed.endswith(pattern)), None)
                if match is None:
                    continue
                self.step("jambonz", f"verb:hook {hook} (dtmfHook {match}, the {who}'s leg)")
                await self._verb_hook(hook, {"dtmf": match, **info.call_info()})
                if await self._follow_commands() or self.ended or fc.is_over:
                    return False
        return True

    async def _dial_hold(self, verb: Dial, leg: CallData) -> bool:
        """The callee puts the caller on hold (a re-INVITE with hold SDP on the child leg, FS
        v0.9.8 ``lib/tasks/dial.js:757-760``, ``:807-828``), then takes the caller back. With an
        ``onHoldHook``: 500 ms of silence, then the hook with the call info and
        ``hold_detail`` (the re-INVITE's From and To), and its ``say`` / ``play`` / ``pause``
        play on the caller's leg (``:1091-1129``: ``cs.dlg``, as ``isIncomingLegHold`` is unset);
        0.9.8 asks once (the loop tests an
        ``isOnHold`` it never sets, ``:1136``). ``False`` if a command killed the dial."""
        self.step("callee", "puts the caller on hold (a re-INVITE with hold SDP)")
        if verb.on_hold_hook is None:
            self.step(
                "jambonz", "the dial has no onHoldHook: the re-INVITE is passed on, no hook (dial.js:808-851)"
            )
        else:
            await self.fc.wait_idle(0.5)  # silence_stream://500 (:1094)
            if await self._follow_commands() or self.ended or self.fc.is_over:
                return False
            # the callee's re-INVITE: From is the callee, To the caller's side of the child leg
            detail = {"from": f"<sip:{leg.to}@127.0.0.1>", "to": f"<sip:{leg.from_}@127.0.0.1>"}
            played = await self._play_hook(
                _hook_url(verb.on_hold_hook),
                "onHoldHook",
                kind="dial",
                where="dial.js:1108-1112, :1131-1134",
                data={"hold_detail": detail},
            )
            if played is False:
                return False
        self.step("callee", "takes the caller off hold")
        return not await self._follow_commands() and not self.ended

    async def _verb_hook(self, hook: str, data: dict[str, Any], *, program: bool = False) -> AckRecord | None:
        """A ``verb:hook`` with ``data`` as it is (no call info added): a conference
        ``statusHook`` event, a dial's ``dtmfHook`` (whose answers jambonz ignores, without
        waiting: ``run_call`` waits for the ack, the fake bounds it), a callee's gather, a
        ``referHook``. ``program``: whether the fake takes the answer's verbs as the caller's
        program. ``None`` if a drop abandoned it (the call goes on)."""
        fc = self.fc
        try:
            fc._check()
            return await fc._request(VerbHook, data, hook, program=program)
        except AckAbandoned as exc:
            if fc.is_over:
                raise
            self.step("jambonz", f"the socket dropped before the ack: {exc.msg_type} abandoned; carrying on")
            return None

    async def _dial_refer(self, verb: Dial, refer: Refer, leg: CallData) -> bool:
        """A REFER from the phone on one leg of the connected dial (FS v0.9.8). The caller's
        goes to the dial's ``handleRefer`` when the dial has a ``referHook``, else to the
        session's (``lib/session/call-session.js:2858-2867``); the callee's always to the
        dial's (``lib/tasks/dial.js:691``). With no such hook jambonz answers 501 and nothing
        happens (``dial.js:449-451``, ``call-session.js:2913-2914``). Otherwise the hook gets
        the referring leg's call info and ``refer_details`` (``dial.js:394-406``,
        ``call-session.js:2882-2894``); an answer that is not a non-empty verb array changes
        nothing (``dial.js:410-415``, ``:441-443``). Its verbs take the *other* leg elsewhere:
        the caller's REFER to the dial's hook moves the callee to a session of its own
        (``session:adulting`` on a new socket, ``lib/utils/place-outdial.js:439-501``) and
        ends the dial (``KillReason.ReferComplete``: its actionHook's answer is the caller's
        program, ``dial.js:249``, ``:431-435``); the callee's REFER, or the caller's to the
        session's hook, replaces the caller's program (``dial.js:418``,
        ``lib/tasks/task.js:297-301``; ``call-session.js:2896-2900``): the dial is killed
        (``KillReason.Replaced``, the callee hung up), its actionHook's answer ignored.
        ``True`` if the dial ended (:attr:`kill` says how)."""
        fc = self.fc
        by_callee = refer.by == "callee"
        referring = leg if by_callee else fc.call
        referred_by = refer.referred_by or f"sip:{referring.to if by_callee else referring.from_}@127.0.0.1"
        self.step(refer.by, f"transfers the call to {refer.to} (a SIP REFER on the {refer.by}'s leg)")
        hook: Any = verb.refer_hook
        if hook is None and not by_callee:
            hook = self.refer_hook
        if hook is None:
            where = "dial.js:449-451" if by_callee else "call-session.js:2913-2914"
            self.step("jambonz", f"no referHook: jambonz answers the REFER 501 ({where}); the dial goes on")
            return False
        session = verb.refer_hook is None
        to_user, by_user = _uri_user(refer.to), _uri_user(referred_by)
        details: dict[str, Any]
        if session:  # call-session.js:2884-2893
            details = {
                "sip_refer_to": f"<{refer.to}>",
                "sip_referred_by": f"<{referred_by}>",
                "sip_user_agent": refer.user_agent,
                "refer_to_user": to_user,
                "referred_by_user": by_user,
                "referring_call_sid": fc.call.call_sid,
            }
        else:  # dial.js:396-404
            details = {
                "sip_refer_to": f"<{refer.to}>",
                "refer_to_user": to_user,
                "sip_referred_by": f"<{referred_by}>",
                "sip_user_agent": refer.user_agent,
                "referred_by_user": by_user,
                "referring_call_sid": referring.call_sid,
                "referred_call_sid": fc.call.call_sid if by_callee else leg.call_sid,
            }
        details = {key: value for key, value in details.items() if value is not None}  # undefined
        if session:
            details["referred_call_sid"] = None  # null on the wire (:2891)
        url = _hook_url(hook)
        whose = "the session's referHook" if session else "referHook"
        self.step("jambonz", f"verb:hook {url} ({whose}, the {refer.by}'s leg)")
        replaces = by_callee or session
        ack = await self._verb_hook(
            url, {**referring.call_info(), "refer_details": details}, program=replaces
        )
        if ack is None:
            self.step("jambonz", "jambonz answers the REFER 501; the dial goes on")
            return False
        self._narrate_ack(ack)
        fc._check()
        if not isinstance(ack.raw.get("data"), list) or not ack.verbs:
            self.step(
                "jambonz", "REFER answered 202; no verbs: nothing changes, the dial goes on (dial.js:441-443)"
            )
            return False
        program = ", ".join(describe_verb(v) for v in ack.verbs)
        if not replaces:
            self.step(
                "jambonz",
                "REFER answered 202; the callee leaves the dial for a session of its own: "
                "session:adulting on a new socket to <call hook>/adulting, not played here; "
                f"its program: {program}",
            )
            self.step("jambonz", "the dial ends (refer-complete, dial.js:431-435)")
            self.kill = "killed"
            return True
        self.step(
            "jambonz",
            "REFER answered 202; the answer is the caller's new program: the dial is killed and "
            "the callee hung up (replaced)",
        )
        self.program = list(ack.verbs)
        self.kill = "replaced"
        return True

    async def _confirm(self, hook: str, leg: CallData, callee: Caller | None) -> _Confirmed:
        """The ``confirmHook`` on the answered callee (FS v0.9.8
        ``lib/utils/place-outdial.js:310``, ``:389-437``): ``dial:confirm`` with the child's
        call info; a falsy answer or ``[]`` accepts it at once (``:393-396``); a verb array
        plays to the callee, in a session of its own (``:411-425``), and the callee is accepted
        if still connected after (``:428``); a failure declines it (``:429-435``): a request
        that fails, an answer that is not an array, a ``sip:decline`` (precondition
        unanswered-call, ``:399-408``). ``killed``: a command killed the dial meanwhile."""
        fc = self.fc
        self.step("jambonz", f"the callee answers; dial:confirm {hook} (the child leg)")
        try:
            ack = await fc.dial_confirm(hook, leg)
        except AckAbandoned as exc:
            if fc.is_over:
                raise
            self.step("jambonz", f"the socket dropped: {exc.msg_type} abandoned; the callee is declined")
            return "declined"
        self._narrate_ack(ack)
        fc._check()
        data = ack.raw.get("data")
        if not isinstance(data, list) and truthy(data):
            self.step("jambonz", "the dial:confirm answer is not a verb array: the callee is declined (:398)")
            return "declined"
        program = list(ack.verbs)
        if any(isinstance(verb, SipDecline) for verb in program):
            self.step(
                "jambonz", "sip:decline may not run on an answered callee: the callee is declined (:399-408)"
            )
            return "declined"
        callee = callee or Caller()
        while program:
            verb = program.pop(0)
            if isinstance(verb, Say | Play | Pause):
                self.step("callee", f"hears {describe_verb(verb)}")
                if not await self._play(verb, hear=False):
                    return "killed"
            elif isinstance(verb, Hangup):
                self.step(
                    "jambonz", "the callee's program hangs up on the callee: the callee is declined (:428)"
                )
                return "declined"
            elif isinstance(verb, Gather):
                answer = await self._callee_gather(verb, leg, callee)
                if isinstance(answer, _Killed):
                    return "killed"
                if isinstance(answer, HangUp):
                    return "callee hung up"
                if isinstance(answer, list):
                    program = answer  # the answer replaces the callee's program (task.js:254-259)
            else:
                self.step("jambonz", f"{describe_verb(verb)} on the callee: not simulated by run_call")
            if self.ended or fc.is_over:
                return "killed"
        self.step("jambonz", "the callee's program is done: the callee is accepted and bridged (:428)")
        return "accepted"

    async def _callee_gather(
        self, verb: Gather, leg: CallData, callee: Caller
    ) -> list[Verb] | HangUp | _Killed | None:
        """A ``gather`` of the callee's confirm program: the prompt plays to the callee,
        ``callee`` answers, and the actionHook goes out with the child's call info (FS v0.9.8
        ``lib/tasks/task.js:227``: the confirm session's ``callInfo``). Its answer's verbs, if
        any, are the callee's new program. A callee who hangs up (:class:`HangUp`) ends it.
        Without an actionHook the callee's answer is taken all the same and goes nowhere
        (``task.js:225``)."""
        fc = self.fc
        prompt = verb.say if verb.say is not None else verb.play
        if prompt is not None:
            self.step("callee", f"hears {describe_verb(prompt)}")
            if not await self._play(prompt, hear=False):
                return _KILLED
        with trio.CancelScope() as scope:
            answer: Answer = None
            async with trio.open_nursery() as nursery:

                async def ask() -> None:
                    nonlocal answer
                    answer = await callee.answer(verb)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(ask)
                while True:
                    if await self._follow_commands() or self.ended or fc.is_over:
                        scope.cancel()
                    await fc.wait_idle(0.05)
        if scope.cancelled_caught:
            return _KILLED
        kind: Literal["digits", "speech"] = "digits" if isinstance(answer, Digits) else "speech"
        if isinstance(answer, HangUp):
            self.step("callee", "(hangs up)")
            return answer
        if isinstance(answer, Digits | Speech) and not fc._hears(verb, kind):
            fc._check()
            answer = None
        data: dict[str, Any]
        if isinstance(answer, Digits):
            data = {"reason": "dtmfDetected", "digits": answer.digits}
        elif isinstance(answer, Speech):
            data = speech_result(answer.text, answer.confidence)
        else:
            data = {"reason": "timeout"}
        self.step("callee", _said(answer) if isinstance(answer, Digits | Speech) else "(silence)")
        if verb.action_hook is None:
            self.step(
                "jambonz", "the callee's gather has no actionHook: the result goes nowhere (task.js:225)"
            )
            return None
        hook = _hook_url(verb.action_hook)
        self.step("jambonz", f"verb:hook {hook} (the callee's gather)")
        payload = {**leg.call_info(), **data}
        if verb.id:
            payload["verb_id"] = verb.id
        ack = await self._verb_hook(hook, payload)
        if ack is None:
            return None
        self._narrate_ack(ack)
        return list(ack.verbs) if ack.verbs else None

    async def _next_tool_output(self) -> LlmToolOutputCommand | None:
        """Wait (bounded by the ack timeout) for the app's next ``llm:tool-output``; other
        commands that arrive meanwhile are followed as usual. ``None`` if one of them killed
        the ``llm`` (or the call ended) first."""
        with trio.fail_after(self.fc._ack_timeout):
            while True:
                arrived = len(self.fc.commands)
                for index in range(self.seen, arrived):
                    command = self.fc.commands[index].command
                    if isinstance(command, LlmToolOutputCommand):
                        if await self._follow_commands(until=index) or self.ended:
                            return None
                        self.seen = index + 1
                        return command
                if await self._follow_commands(until=arrived) or self.ended or self.fc.is_over:
                    return None
                await self.fc.wait_idle(0.05)

    async def _llm(self, verb: Llm) -> bool | None:
        """An ``llm``: the scripted tool calls, then the conversation runs ``speaking`` seconds
        (commands such as ``llm:update`` may arrive). A command that kills it ends it at once;
        its actionHook goes out either way with the default ``completion_reason`` (FS v0.9.8
        ``lib/tasks/llm/llms/openai_s2s.js:91-93``, ``:140-144``: ``kill`` ends the wait,
        ``:149-155``), and its answer is the new program."""
        fc = self.fc
        killed = False
        for script in self.caller.tool_calls:
            if verb.tool_hook is None:
                break
            self.step("jambonz", f"llm:tool-call {script.name}({script.args})")
            await fc.llm_tool_call(_hook_url(verb.tool_hook), script.tool_call_id, script.name, script.args)
            output = await self._next_tool_output()
            if output is None:
                killed = True
                break
            self.step("app", f"llm:tool-output {dict(output.data)}")
        if not killed:
            killed = not await self._play(verb)
        if self.ended or fc.is_over:
            return None if fc.is_over else False
        if verb.action_hook is not None:
            hook = _hook_url(verb.action_hook)
            self.step("jambonz", f"verb:hook {hook} (normal conversation end)")
            await self._after_hook(await self._hook(verb, {"completion_reason": "normal conversation end"}))
        return not killed


class _ConfState:
    """A conference's ``statusHook`` events (FS v0.9.8 ``lib/tasks/conference.js:714-742``):
    only the ``status_events`` it lists (``:57-61``), each a ``verb:hook`` with ``event``,
    ``duration`` since the conference started, ``time``, ``members``, ``conference_sid``,
    ``friendly_name`` and the call info. jambonz does not wait for the answer and ignores
    it; ``run_call`` waits for the ack (the fake bounds it) and ignores it too. A caller who
    joins a running conference sends the events of the member who started it (``:156-157``):
    ``run_call`` takes this verb's."""

    def __init__(self, runner: _Runner, verb: Conference) -> None:
        self.runner = runner
        self.verb = verb
        self.started = trio.current_time()
        self.members = 0
        order = ("start", "end", "join", "leave", "start-talking", "stop-talking")
        listed = verb.status_events or []
        self.events = [e for e in order if e in listed] if verb.status_hook is not None else []

    async def notify(self, event: str, *, members: int) -> None:
        if event not in self.events or self.verb.status_hook is None:
            return
        runner, fc = self.runner, self.runner.fc
        hook = _hook_url(self.verb.status_hook)
        runner.step("jambonz", f"verb:hook {hook} (statusHook {event}, members {members})")
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        data = {
            "event": event,
            "duration": round(trio.current_time() - self.started, 3),
            "time": now.replace("+00:00", "Z"),
            "members": members,
            "conference_sid": f"conf:{fc.call.account_sid}:{self.verb.name}",
            "friendly_name": self.verb.name,
            **fc.call.call_info(),
        }
        await runner._verb_hook(hook, data)


def _confirm_hook(verb: Dial) -> str | None:
    """The ``confirmHook`` of the leg ``run_call`` answers (the first target): its own, or the
    dial's (FS v0.9.8 ``lib/tasks/dial.js:614``)."""
    hook = (verb.target[0].confirm_hook if verb.target else None) or verb.confirm_hook
    return _hook_url(hook) if hook is not None else None


def _dtmf_patterns(capture: object) -> tuple[list[str], list[str]]:
    """The ``dtmfCapture`` patterns of the caller's and the callee's leg, parsed as FS v0.9.8
    does (``lib/tasks/dial.js:29-52``): an array is both legs'; of an object, ``childCall``
    and - a slip of 0.9.8 - ``parentCall`` go to the callee's leg (``:37-43``)."""
    if isinstance(capture, list):
        keys = [str(k) for k in capture]
        return keys, list(keys)
    child: list[str] = []
    if isinstance(capture, dict):
        for name in ("childCall", "parentCall"):
            if isinstance(capture.get(name), list):
                child.extend(str(k) for k in capture[name])
    return [], child


def _uri_user(uri: str) -> str | None:
    """The user part of a ``sip:`` / ``sips:`` URI, the number of a ``tel:`` one, as
    ``refer_details`` gives them (FS v0.9.8 ``lib/tasks/dial.js:398``, ``:401``: drachtio's
    ``parseUri``); ``None`` (left out) for a URI without one."""
    scheme, _, rest = uri.partition(":")
    if scheme == "tel":
        return rest.split(";")[0]
    user, at, _ = rest.partition("@")
    return user.split(":")[0] if at else None  # a password after ":" is not the user


#: The verbs with a runner of their own (each returns like :meth:`_Runner._run_verb`); ``listen``
#: runs the audio socket as jambonz's media server does, until something ends the verb.
_VERB_RUNNERS: dict[type[Verb], Callable[[_Runner, Any], Awaitable[bool | None]]] = {
    Play: _Runner._play_verb,
    Redirect: _Runner._redirect_verb,
    Gather: _Runner._gather,
    Dial: _Runner._dial,
    Listen: run_listen,
    Conference: _Runner._conference,
    Llm: _Runner._llm,
    Transcribe: _Runner._transcribe,
}


#: What jambonz does with each verb ``run_call`` does not simulate (narrated when it runs).
_NOT_SIMULATED: dict[str, str] = {
    "alert": "jambonz writes an application alert for the account, lib/tasks/alert.js",
    "answer": "jambonz answers the call; the fake's call is answered already",
    "tag": "jambonz sets the call's customerData for later hooks, lib/tasks/tag.js:12-15; "
    "run_call's hooks do not carry it",
    "dtmf": "jambonz sends the keys to the caller",
    "dub": "jambonz changes an extra audio track",
    "leave": "jambonz leaves the conference or queue the call waits in",
    "sip:request": "jambonz sends the SIP request; its actionHook is not sent",
    "sip:refer": "jambonz sends the REFER; its actionHook is not sent",
    "message": "jambonz sends the SMS; its actionHook is not sent",
    "enqueue": "jambonz queues the call; its waitHook and actionHook are not sent",
    "dequeue": "jambonz bridges a queued call; its actionHook is not sent",
    "dialogflow": "a Dialogflow bot converses; its hooks are not sent",
    "lex": "a Lex bot converses; its hooks are not sent",
    "rasa": "a Rasa bot converses; its hooks are not sent",
    "rest:dial": "jambonz's own verb for REST calls",
}


def not_simulated(verb: Verb) -> str:
    """Why ``verb`` does nothing under :func:`run_call`: what jambonz would do instead."""
    return _NOT_SIMULATED.get(verb.VERB, "a verb run_call does not know")


def _eager_flux(verb: Gather) -> bool:
    """Whether the gather's recognizer is Deepgram Flux in eager mode (``eagerEotThreshold``)."""
    recognizer = verb.recognizer
    if recognizer is None or recognizer.vendor != "deepgramflux":
        return False
    options = recognizer.deepgram_options
    return options is not None and options.eager_eot_threshold is not None


def _said(answer: Speech | Digits) -> str:
    return f"presses {answer.digits}" if isinstance(answer, Digits) else f'says "{answer.text}"'


#: The line of each verb that reads as its name and one option: a ``str.format`` template.
_VERB_LINES: dict[type[Verb], str] = {
    Play: "play {0.url}",
    Pause: "pause {0.length}s",
    Llm: "llm {0.vendor}",
    SipDecline: "sip:decline {0.status}",
    Listen: "listen {0.url}",
}


def describe_verb(verb: Verb) -> str:
    """One readable line for a verb."""
    if isinstance(verb, Say):
        text = verb.text if isinstance(verb.text, str) else " | ".join(verb.text or [])
        return f'say "{text}"'
    if isinstance(verb, Gather):
        inputs = "+".join(verb.input or ["digits"])
        options = [f"timeout {verb.timeout}s"] if verb.timeout is not None else []
        if verb.say is not None:
            options.append(f"prompt: {describe_verb(verb.say)}")
        details = f" ({', '.join(options)})" if options else ""
        return f"gather {inputs}{_hook_arrow(verb.action_hook)}{details}"
    if isinstance(verb, Dial):
        return f"dial {len(verb.target)} target(s){_hook_arrow(verb.action_hook)}"
    if isinstance(verb, Config):
        return "config" + (" (notifyEvents)" if verb.notify_events else "")
    for cls, template in _VERB_LINES.items():
        if isinstance(verb, cls):
            return template.format(verb)
    return verb.VERB


def describe_command(command: Any) -> str:
    """One readable line for a command."""
    if isinstance(command, RedirectCommand):
        how = "append" if command.queue else "replace"
        return f"redirect ({how}): " + ("; ".join(describe_verb(v) for v in command.verbs) or "(empty)")
    if isinstance(command, RedirectToHookCommand):
        hooks = [
            f"{name} {_hook_url(hook)}"
            for name, hook in (("call_hook", command.call_hook), ("child_call_hook", command.child_call_hook))
            if hook is not None
        ]
        return "redirect to " + ", ".join(hooks)
    if isinstance(command, CallStatusCommand):
        return f"call:status {command.call_status}"
    wire = command.to_wire()
    data = wire.get("data")
    return f"{wire['command']} {data}" if data is not None else str(wire["command"])
