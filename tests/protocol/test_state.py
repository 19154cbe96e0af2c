"""CallProtocol: the ack book, outbound checks, deadlines, reconnect re-keying (sans-io).

Time is just the float passed in. References: docs/protocol.md §3.3, §5, §6 and
docs/reliability.md FM-15, FM-16, FM-21..FM-23, FM-28, FM-29.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, precondition, rule

from jambonz_trio._errors import AlreadyAcked, LocalProtocolError, MessageTooLarge, RemoteProtocolError
from jambonz_trio._protocol import _verbs as v
from jambonz_trio._protocol._json import DEFAULT_MAX_OUTBOUND_BYTES
from jambonz_trio._protocol._messages import MESSAGE_TYPES, SessionNew, SessionReconnect
from jambonz_trio._protocol._outbound import (
    Ack,
    CallStatusCommand,
    Command,
    ConfHoldStatusCommand,
    RedirectCommand,
    TtsFlushCommand,
    TtsTokensCommand,
)
from jambonz_trio._protocol._state import (
    DEFAULT_ACK_DEADLINE,
    AckResult,
    Answerer,
    CallProtocol,
    ConnState,
    Delivery,
    OwedAck,
    PlanKind,
    SessionState,
    UnconfirmedCommands,
    ends_the_call,
)
from jambonz_trio._protocol._verbs_base import HookSpec, RawVerb, Verb, unstructure_verbs
from jambonz_trio.testing._fake import flux_speech_result
from tests.protocol_strategies import NO_ACK_TYPES
from tests.strategies import verbs

# Random verbs can be fully populated dials whose repr is tens of kB; Hypothesis warns when it
# renders one, and warnings are errors in this suite.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)

SID = "9fb35c28-3a5e-4f4f-9d6b-0a5c1b6f0d11"
SESSION_DATA: dict[str, Any] = {
    "call_sid": SID,
    "direction": "inbound",
    "from": "+15083084809",
    "to": "+15083728299",
    "call_status": "trying",
    "env_vars": {"KEY": "secret"},
}
SAY = v.Say(text="Welcome")
PAUSE = v.Pause(length=1)
LIMIT = 24_576


def frame(mtype: str, msgid: str, data: dict[str, Any] | None = None, **env: Any) -> str:
    obj: dict[str, Any] = {"type": mtype, "msgid": msgid, **env}
    obj["data"] = {} if data is None else data
    return json.dumps(obj)


def hook(msgid: str, name: str = "/h") -> str:
    return frame("verb:hook", msgid, {"call_sid": SID}, call_sid=SID, hook=name)


def session_new(msgid: str = "sn-1") -> str:
    return frame("session:new", msgid, SESSION_DATA, call_sid=SID)


def reconnect(msgid: str) -> str:
    return frame("session:reconnect", msgid, SESSION_DATA, call_sid=SID)


def connected(**kwargs: Any) -> CallProtocol:
    p = CallProtocol(**kwargs)
    p.connection_made()
    return p


def answered(p: CallProtocol, now: float = 0.0) -> CallProtocol:
    """``p`` after a session:new that was acked, and read by jambonz (the Pong proved it)."""
    p.receive_text(session_new(), now)
    p.ack("sn-1", [SAY])
    assert p.answer_written("sn-1", p.generation, Delivery.WRITTEN) is AckResult.SENT
    assert p.pong_received(p.ping_payload(receipt=True))
    assert p.session is SessionState.CONFIRMED
    return p


def session_of(p: CallProtocol) -> SessionState:
    """``p.session``, read afresh (mypy keeps an attribute narrowed across calls)."""
    return p.session


def sent(text: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(text)
    return obj


def snapshot(p: CallProtocol) -> tuple[Any, ...]:
    return (
        p.state,
        p.generation,
        p.call_sid,
        p.session,
        [(o.msgid, o.wire_msgid, o.generation, o.deadline, o.optional) for o in p.owed()],
        p.next_deadline(),
    )


def wire_size(obj: Any) -> tuple[str, int]:
    """The frame jambonz would receive, computed independently of the library's encoder."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text, len(text.encode("utf-8"))


# -- FM-22: refusals are synchronous and change nothing -----------------------------------------


def test_double_ack_raises_already_answered() -> None:
    p = answered(connected())
    p.receive_text(hook("h1"), 1.0)
    assert sent(p.ack("h1", [SAY])) == {
        "type": "ack",
        "msgid": "h1",
        "data": [{"verb": "say", "text": "Welcome"}],
    }
    before = snapshot(p)
    with pytest.raises(AlreadyAcked):
        p.ack("h1")
    with pytest.raises(AlreadyAcked):
        p.ack("h1", [SAY])
    assert snapshot(p) == before
    with pytest.raises(AlreadyAcked):
        p.ack("sn-1", [SAY])


@pytest.mark.parametrize("mtype", sorted(NO_ACK_TYPES))
def test_ack_of_fire_and_forget_type(mtype: str) -> None:
    p = answered(connected())
    p.receive_text(frame(mtype, "nf-1", {"call_status": "in-progress"}), 1.0)
    assert not p.is_owed("nf-1")
    before = snapshot(p)
    with pytest.raises(LocalProtocolError) as info:
        p.ack("nf-1")
    assert not isinstance(info.value, AlreadyAcked)
    assert snapshot(p) == before


def test_ack_of_unknown_msgid() -> None:
    p = answered(connected())
    p.receive_text(hook("h1"), 1.0)
    before = snapshot(p)
    for msgid in ("nope", "", "H1", "h1 "):
        with pytest.raises(LocalProtocolError) as info:
            p.ack(msgid)
        assert type(info.value) is LocalProtocolError
    assert snapshot(p) == before
    assert p.is_owed("h1")


def test_everything_refused_after_close() -> None:
    p = answered(connected())
    p.receive_text(hook("h1"), 1.0)
    p.receive_text(hook("h2"), 1.0)
    left = p.close()
    assert [o.msgid for o in left] == ["h1", "h2"]
    assert p.state is ConnState.CLOSED
    before = snapshot(p)
    with pytest.raises(LocalProtocolError):
        p.ack("h1")
    with pytest.raises(LocalProtocolError):
        p.ack("h1", [SAY])
    with pytest.raises(LocalProtocolError):
        p.command(TtsFlushCommand())
    with pytest.raises(LocalProtocolError):
        p.connection_made()
    assert p.connection_lost() == []
    assert p.close() == []  # idempotent
    assert snapshot(p) == before
    assert p.overdue(1e9) == []
    assert p.next_deadline() is None


def test_ack_before_any_socket_is_refused() -> None:
    p = CallProtocol()
    assert p.state is ConnState.IDLE
    p.receive_text(hook("h1"), 0.0)
    with pytest.raises(LocalProtocolError):
        p.ack("h1")
    assert p.is_owed("h1")


@pytest.mark.parametrize(
    "bad_verbs",
    [
        pytest.param([v.Say(text="x" * (LIMIT + 1))], id="too-large"),
        pytest.param([v.Say(text="€" * (LIMIT // 3 + 10))], id="too-large-multibyte"),
        pytest.param([v.Say(text="hi \ud800 there")], id="lone-surrogate"),
        pytest.param([v.Pause(length=float("nan"))], id="nan"),
        pytest.param([RawVerb(data={"verb": "say", "text": {1, 2}})], id="unserialisable"),
    ],
)
def test_failed_ack_leaves_the_msgid_owed(bad_verbs: list[Verb]) -> None:
    p = answered(connected())
    p.receive_text(hook("h1"), 1.0)
    before = snapshot(p)
    with pytest.raises(LocalProtocolError):
        p.ack("h1", bad_verbs)
    assert snapshot(p) == before
    assert p.is_owed("h1")
    assert p.overdue(1.0 + DEFAULT_ACK_DEADLINE)[0].msgid == "h1"
    assert sent(p.ack("h1", [SAY]))["msgid"] == "h1"  # still answerable, once
    with pytest.raises(AlreadyAcked):
        p.ack("h1")


def test_message_too_large_reports_sizes() -> None:
    p = answered(connected())
    p.receive_text(hook("h1"), 1.0)
    verbs = [v.Say(text="a" * LIMIT)]
    expected_size = wire_size(Ack(msgid="h1", verbs=verbs).to_wire())[1]
    with pytest.raises(MessageTooLarge) as info:
        p.ack("h1", verbs)
    assert info.value.limit == LIMIT
    assert info.value.size == expected_size
    assert isinstance(info.value, LocalProtocolError)


# -- FM-23: several outstanding requests, any order ---------------------------------------------


def test_out_of_order_acks_carry_their_msgids() -> None:
    p = answered(connected())
    p.receive_text(hook("partial-1", "/partial"), 1.0)
    p.receive_text(hook("action-2", "/action"), 1.5)
    assert [o.msgid for o in p.owed()] == ["partial-1", "action-2"]
    second = sent(p.ack("action-2", [SAY]))
    assert second["msgid"] == "action-2"
    assert second["data"] == [{"verb": "say", "text": "Welcome"}]
    first = sent(p.ack("partial-1"))
    assert first == {"type": "ack", "msgid": "partial-1", "data": []}
    assert p.owed() == []


def test_empty_ack_sends_an_empty_array() -> None:
    # FM-21: "data": [] and never omitted (waitHook/onHoldHook reject a missing array)
    p = answered(connected())
    p.receive_text(hook("h1"), 0.0)
    assert sent(p.ack("h1")) == {"type": "ack", "msgid": "h1", "data": []}


# -- session:new and commands ---------------------------------------------------------------------


def test_session_new_needs_verbs_and_gates_commands() -> None:
    p = connected()
    msg = p.receive_text(session_new(), 0.0)
    assert isinstance(msg, SessionNew)
    assert p.call_sid == SID
    assert p.session is SessionState.OWED
    owed = p.get_owed("sn-1")
    assert owed is not None
    assert owed.needs_verbs
    before = snapshot(p)
    with pytest.raises(LocalProtocolError, match="at least one verb"):
        p.ack("sn-1")
    with pytest.raises(LocalProtocolError, match="at least one verb"):
        p.ack("sn-1", [])
    for cmd in (TtsFlushCommand(), RedirectCommand(verbs=[SAY])):
        with pytest.raises(LocalProtocolError, match=r"session:new"):
            p.command(cmd)
    assert snapshot(p) == before
    ack = sent(p.ack("sn-1", [SAY, PAUSE]))
    assert ack["msgid"] == "sn-1"
    assert ack["data"] == [{"verb": "say", "text": "Welcome"}, {"verb": "pause", "length": 1}]
    assert session_of(p) is SessionState.SENT
    assert sent(p.command(TtsFlushCommand())) == {"type": "command", "command": "tts:flush"}
    assert sent(p.command(RedirectCommand(verbs=[SAY])))["data"] == [{"verb": "say", "text": "Welcome"}]


def test_rest_outbound_call_commands_before_session_new() -> None:
    # REST-created calls: call:status (no envelope call_sid) comes before session:new, and the
    # session exists from the start, so commands are not refused (protocol.md §2.4, §5.2)
    p = connected()
    p.receive_text(frame("call:status", "cs-1", {"call_status": "trying"}), 0.0)
    assert p.session is SessionState.NONE
    assert p.call_sid is None
    assert sent(p.command(TtsFlushCommand()))["command"] == "tts:flush"
    p.receive_text(session_new(), 1.0)
    assert p.call_sid == SID
    with pytest.raises(LocalProtocolError):
        p.command(TtsFlushCommand())
    p.ack("sn-1", [SAY])
    p.command(TtsFlushCommand())


def test_call_sid_comes_from_data_when_envelope_lacks_it() -> None:
    p = connected()
    p.receive_text(frame("session:new", "sn-1", SESSION_DATA), 0.0)
    assert p.call_sid == SID


def test_commands_are_allowed_while_disconnected() -> None:
    # the engine queues them for the reconnect (FM-24); the core only renders
    p = answered(connected())
    p.connection_lost()
    assert sent(p.command(TtsFlushCommand()))["command"] == "tts:flush"


# -- FM-15: outbound size guard ------------------------------------------------------------------

_UNITS = st.text(alphabet='aé€😀"\\\x00\n', min_size=1, max_size=3)
_long_texts = st.builds(lambda unit, n: unit * n, _UNITS, st.integers(min_value=0, max_value=13_000))
_sized_verbs = st.one_of(
    st.builds(v.Say, text=_long_texts),
    st.builds(lambda t: v.Tag(data={"note": t}), _long_texts),
    verbs(),
)


@settings(max_examples=150)
@given(
    verb_list=st.lists(_sized_verbs, max_size=3),
    limit=st.sampled_from([LIMIT]) | st.integers(min_value=40, max_value=30_000),
    as_command=st.booleans(),
)
def test_sent_iff_within_limit(verb_list: list[Verb], limit: int, as_command: bool) -> None:
    p = answered(connected(max_outbound_bytes=None))
    p.max_outbound_bytes = limit
    p.receive_text(hook("h1"), 0.0)
    if as_command:
        cmd: Command = RedirectCommand(verbs=verb_list, queue=True)
        expected, size = wire_size(cmd.to_wire())
    else:
        expected, size = wire_size(Ack(msgid="h1", verbs=verb_list).to_wire())
    before = snapshot(p)
    try:
        text = p.command(cmd) if as_command else p.ack("h1", verb_list)
    except MessageTooLarge as exc:
        assert size > limit
        assert exc.size == size
        assert exc.limit == limit
        assert snapshot(p) == before  # nothing changed, h1 still owed
        return
    assert size <= limit
    assert text == expected
    assert len(text.encode("utf-8")) <= limit


@settings(max_examples=100)
@given(tokens=_long_texts, limit=st.integers(min_value=30, max_value=LIMIT))
def test_tts_tokens_guard(tokens: str, limit: int) -> None:
    p = answered(connected())
    p.max_outbound_bytes = limit
    cmd = TtsTokensCommand(id=1, tokens=tokens)
    expected, size = wire_size(cmd.to_wire())
    if size <= limit:
        assert p.command(cmd) == expected
    else:
        with pytest.raises(MessageTooLarge):
            p.command(cmd)


def _fill(n_bytes: int, unit: str) -> str:
    """Text of exactly ``n_bytes`` UTF-8 bytes, mostly ``unit``, padded with ASCII."""
    width = len(unit.encode())
    text = unit * (n_bytes // width) + "a" * (n_bytes % width)
    assert len(text.encode()) == n_bytes
    return text


@pytest.mark.parametrize("unit", ["a", "é", "€", "😀"])
def test_exact_boundary_ack(unit: str) -> None:
    assert DEFAULT_MAX_OUTBOUND_BYTES == LIMIT
    assert CallProtocol().max_outbound_bytes == LIMIT
    base = wire_size(Ack(msgid="h1", verbs=[v.Say(text="")]).to_wire())[1]
    fits = _fill(LIMIT - base, unit)
    p = answered(connected())
    p.receive_text(hook("h1"), 0.0)
    # one byte over, by an ASCII character
    with pytest.raises(MessageTooLarge) as one_over:
        p.ack("h1", [v.Say(text=fits + "a")])
    assert one_over.value.size == LIMIT + 1
    # one byte over, by a multi-byte character (24,575 + 2 bytes)
    with pytest.raises(MessageTooLarge) as mb_over:
        p.ack("h1", [v.Say(text=_fill(LIMIT - base - 1, unit) + "é")])
    assert mb_over.value.size == LIMIT + 1
    if unit != "a":
        assert len(fits) < LIMIT - base  # characters are well under the limit, bytes are not
    assert p.is_owed("h1")
    text = p.ack("h1", [v.Say(text=fits)])
    assert len(text.encode("utf-8")) == LIMIT


def test_exact_boundary_command() -> None:
    p = answered(connected())
    base = wire_size(TtsTokensCommand(id=1, tokens="").to_wire())[1]
    fits = _fill(LIMIT - base, "😀")
    assert len(p.command(TtsTokensCommand(id=1, tokens=fits)).encode()) == LIMIT
    with pytest.raises(MessageTooLarge):
        p.command(TtsTokensCommand(id=1, tokens=fits + "a"))
    with pytest.raises(MessageTooLarge):
        p.command(TtsTokensCommand(id=1, tokens=_fill(LIMIT - base - 3, "a") + "😀"))


def test_json_escapes_count_on_the_wire() -> None:
    # quotes, backslashes and control characters grow when escaped; the guard measures the
    # final JSON, not the Python string
    p = answered(connected())
    base = wire_size(TtsTokensCommand(id=1, tokens="").to_wire())[1]
    tokens = '"' * ((LIMIT - base) // 2)  # each becomes \" (2 bytes)
    assert wire_size(TtsTokensCommand(id=1, tokens=tokens).to_wire())[1] <= LIMIT
    p.command(TtsTokensCommand(id=1, tokens=tokens))
    with pytest.raises(MessageTooLarge):
        p.command(TtsTokensCommand(id=1, tokens=tokens + "\x00"))  # \u0000: 6 bytes


def test_no_limit_when_disabled() -> None:
    p = answered(connected(max_outbound_bytes=None))
    p.receive_text(hook("h1"), 0.0)
    text = p.ack("h1", [v.Say(text="😀" * 20_000)])
    assert len(text.encode()) > 80_000


# -- FM-16: unencodable text ------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [chr(0xD800), "ok" + chr(0xDFFF), chr(0xD83D) + "x"],
    ids=["high", "trailing-low", "high-then-ascii"],
)
def test_lone_surrogate_is_a_local_error_and_protocol_stays_usable(bad: str) -> None:
    p = answered(connected())
    p.receive_text(hook("h1"), 0.0)
    before = snapshot(p)
    with pytest.raises(LocalProtocolError) as info:
        p.ack("h1", [v.Say(text=bad)])
    assert not isinstance(info.value, MessageTooLarge)
    with pytest.raises(LocalProtocolError):
        p.command(RedirectCommand(verbs=[v.Say(text=bad)]))
    with pytest.raises(LocalProtocolError):
        p.command(TtsTokensCommand(id=bad, tokens="x"))
    assert snapshot(p) == before
    assert sent(p.ack("h1", [v.Say(text="fine 😀")]))["data"][0]["text"] == "fine 😀"
    assert sent(p.command(TtsTokensCommand(id=2, tokens="ok")))["data"] == {"id": 2, "tokens": "ok"}


def test_lone_surrogate_over_the_limit_is_still_a_local_error() -> None:
    p = answered(connected())
    p.receive_text(hook("h1"), 0.0)
    with pytest.raises(LocalProtocolError):
        p.ack("h1", [v.Say(text="x" * LIMIT + "\ud800")])
    assert p.is_owed("h1")


# -- deadlines ------------------------------------------------------------------------------------


def test_deadlines_follow_ack_deadline() -> None:
    p = answered(connected(ack_deadline=2.5), now=0.0)
    assert p.next_deadline() is None
    p.receive_text(hook("h1"), 10.0)
    p.receive_text(hook("h2"), 11.0)
    p.receive_text(frame("call:status", "cs", {}), 11.5)  # never owed
    assert p.next_deadline() == 12.5
    assert p.overdue(12.49) == []
    assert [o.msgid for o in p.overdue(12.5)] == ["h1"]
    assert [o.msgid for o in p.overdue(100.0)] == ["h1", "h2"]
    owed = p.get_owed("h1")
    assert owed is not None
    assert (owed.received_at, owed.deadline) == (10.0, 12.5)
    p.ack("h1")
    assert p.next_deadline() == 13.5
    p.ack("h2")
    assert p.next_deadline() is None
    assert p.overdue(1e9) == []


class _Time(float):
    """A ``now`` that counts how often deadlines are compared (time is just a float here)."""

    compared = 0

    def __add__(self, other: object) -> _Time:
        return _Time(float(self) + float(other))  # type: ignore[arg-type]

    __hash__ = float.__hash__


def _counting(name: str) -> Any:
    compare = getattr(float, name)

    def method(self: float, other: object) -> bool:
        _Time.compared += 1
        return bool(compare(self, other))

    return method


for _name in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__"):
    setattr(_Time, _name, _counting(_name))


def test_i19_11_a_request_costs_log_n_deadline_work() -> None:
    """Issue 19 #11: every inbound message reschedules the watchdog (``next_deadline``); with
    many requests owed that must not rescan them all (the old book compared every deadline)."""
    n = 250  # under the owed bound
    p = answered(connected())
    for i in range(n):
        p.receive_text(hook(f"h{i}"), _Time(i))
    _Time.compared = 0
    p.receive_text(hook("one-more"), _Time(n))
    assert p.next_deadline() == DEFAULT_ACK_DEADLINE
    per_message = _Time.compared
    assert per_message <= 40  # O(log n); the old scan made ~n comparisons
    _Time.compared = 0
    due = p.overdue(_Time(DEFAULT_ACK_DEADLINE + 1.5))
    assert [o.msgid for o in due] == ["h0", "h1"]
    assert _Time.compared <= 120  # O(k log n) for k due, not a scan of all n (~n)
    for o in due:
        p.ack(o.msgid)
    assert p.next_deadline() == DEFAULT_ACK_DEADLINE + 2


def test_i19_11_past_the_owed_bound_requests_are_due_at_once() -> None:
    p = answered(connected(max_owed=3))
    for i in range(5):
        p.receive_text(hook(f"h{i}"), 10.0)
    owed = p.owed()
    assert [(o.msgid, o.overflow, o.deadline) for o in owed] == [
        ("h0", False, 14.0),
        ("h1", False, 14.0),
        ("h2", False, 14.0),
        ("h3", True, 10.0),
        ("h4", True, 10.0),
    ]
    assert [o.msgid for o in p.overdue(10.0)] == ["h3", "h4"]
    plan = p.auto_answer(owed[3])
    assert plan.kind is PlanKind.SEND and sent(plan.text or "") == {"type": "ack", "msgid": "h3", "data": []}
    assert p.auto_answered == 1
    assert p.plan_answer("h3", [SAY]).kind is PlanKind.REDIRECT  # late, like after the watchdog
    # ... except a dial:confirm's: its verbs were for the callee, a redirect would replace the
    # caller's program (test_a_late_dial_confirm_answer_is_not_turned_into_a_redirect_...)
    p.receive_text(frame("dial:confirm", "d5", {"call_sid": "child"}, call_sid=SID, hook="/confirm"), 10.0)
    (d5,) = (o for o in p.overdue(10.0) if o.msgid == "d5")
    assert d5.overflow and p.auto_answer(d5).kind is PlanKind.SEND
    assert p.plan_answer("d5", [SAY]).kind is PlanKind.DROP


def test_default_ack_deadline_leaves_a_margin() -> None:
    assert DEFAULT_ACK_DEADLINE == 4.0  # inside jambonz's 5 s
    p = answered(connected())
    p.receive_text(hook("h1"), 100.0)
    assert p.next_deadline() == 104.0


def test_unknown_type_with_msgid_is_owed_optionally() -> None:
    p = answered(connected())
    p.receive_text(frame("agent:event", "u1", {"x": 1}), 0.0)
    owed = p.get_owed("u1")
    assert owed is not None
    assert owed.optional
    assert [o.msgid for o in p.overdue(DEFAULT_ACK_DEADLINE)] == ["u1"]
    assert sent(p.ack("u1")) == {"type": "ack", "msgid": "u1", "data": []}


def test_nothing_is_overdue_while_disconnected() -> None:
    p = connected()
    p.receive_text(session_new(), 0.0)
    p.receive_text(hook("h1"), 0.0)
    p.connection_lost()
    assert p.state is ConnState.DISCONNECTED
    assert p.next_deadline() is None
    assert p.overdue(1e9) == []
    # a new socket alone does not make the old session:new answerable: it waits for the
    # session:reconnect msgid to be re-keyed to
    p.connection_made()
    assert p.next_deadline() is None
    assert p.overdue(1e9) == []
    assert not p.can_answer_now("sn-1")
    with pytest.raises(LocalProtocolError):
        p.ack("sn-1", [SAY])
    assert p.is_owed("sn-1")


# -- reconnects -----------------------------------------------------------------------------------


def test_drop_abandons_owed_hooks() -> None:
    p = answered(connected())
    p.receive_text(hook("h1"), 1.0)
    p.receive_text(hook("h2"), 2.0)
    p.receive_text(frame("agent:event", "u1"), 2.0)
    p.receive_text(frame("call:status", "cs1"), 2.0)
    abandoned = p.connection_lost()
    assert [o.msgid for o in abandoned] == ["h1", "h2", "u1"]
    assert all(isinstance(o, OwedAck) for o in abandoned)
    assert p.owed() == []
    for msgid in ("h1", "h2", "u1"):
        assert p.was_abandoned(msgid)
    assert not p.was_abandoned("cs1")
    assert not p.was_abandoned("sn-1")
    assert p.connection_lost() == []  # not connected any more
    p.connection_made()
    p.receive_text(reconnect("rc-1"), 3.0)
    for msgid in ("h1", "h2"):
        with pytest.raises(LocalProtocolError, match="redirect") as info:
            p.ack(msgid)
        assert not isinstance(info.value, AlreadyAcked)


def test_normal_reconnect_makes_its_msgid_owed() -> None:
    p = answered(connected())
    p.connection_lost()
    p.connection_made()
    assert p.generation == 2
    msg = p.receive_text(reconnect("rc-1"), 5.0)
    assert isinstance(msg, SessionReconnect)
    assert p.is_owed("rc-1")
    assert p.next_deadline() == 5.0 + DEFAULT_ACK_DEADLINE
    # its data is ignored by jambonz; an empty ack is fine (protocol.md §6.3)
    assert sent(p.ack("rc-1")) == {"type": "ack", "msgid": "rc-1", "data": []}
    p.receive_text(hook("h9"), 6.0)
    assert sent(p.ack("h9"))["msgid"] == "h9"


def test_fm29_unanswered_session_new_is_rekeyed_to_the_reconnect() -> None:
    p = connected(ack_deadline=4.0)
    p.receive_text(session_new("sn-1"), 0.0)
    p.receive_text(hook("h1"), 0.05)
    abandoned = p.connection_lost()
    assert [o.msgid for o in abandoned] == ["h1"]  # the session:new survives the drop
    assert p.is_owed("sn-1")
    assert not p.was_abandoned("sn-1")
    p.connection_made()
    p.receive_text(reconnect("rc-1"), 0.6)
    assert not p.is_owed("rc-1")  # not separately owed
    owed = p.get_owed("sn-1")
    assert owed is not None
    assert (owed.wire_msgid, owed.generation, owed.deadline) == ("rc-1", 2, 4.6)
    assert [o.msgid for o in p.owed()] == ["sn-1"]
    assert p.next_deadline() == 4.6
    assert p.can_answer_now("sn-1")
    with pytest.raises(LocalProtocolError):
        p.ack("rc-1")
    with pytest.raises(LocalProtocolError, match="answer session:new first"):
        p.command(TtsFlushCommand())  # still before the session:new answer
    ack = sent(p.ack("sn-1", [SAY]))
    assert ack["msgid"] == "rc-1"
    assert ack["data"] == [{"verb": "say", "text": "Welcome"}]
    assert p.session is SessionState.SENT
    assert p.owed() == []
    with pytest.raises(AlreadyAcked):
        p.ack("sn-1", [SAY])
    with pytest.raises(LocalProtocolError):
        p.ack("rc-1")
    p.command(TtsFlushCommand())


def test_fm29_two_drops_before_the_answer() -> None:
    p = connected()
    p.receive_text(session_new("sn-1"), 0.0)
    for gen, rc in enumerate(["rc-1", "rc-2", "rc-3"], start=2):
        p.connection_lost()
        p.connection_made()
        p.receive_text(reconnect(rc), float(gen))
        owed = p.get_owed("sn-1")
        assert owed is not None
        assert (owed.wire_msgid, owed.generation) == (rc, gen)
    assert [o.msgid for o in p.overdue(100.0)] == ["sn-1"]
    assert sent(p.ack("sn-1", [PAUSE]))["msgid"] == "rc-3"


def test_rekey_release_after_an_unanswered_session_new() -> None:
    """A reconnect that finds session:new unanswered opens the suspicion (jambonz re-keyed it,
    and 0.9.8 then holds the call's traffic); the close is due once the answer on the new
    socket is proven read, at most once, and only if jambonz can reconnect (its rc)."""
    p = connected()
    p.receive_text(session_new("sn-1"), 0.0)
    assert not p.rekey_suspected
    p.connection_lost()
    p.connection_made()
    p.receive_text(reconnect("rc-1"), 1.0)
    assert p.rekey_suspected and not p.rekey_release_ready
    assert not p.rekey_bounce(reconnects=1, budget=5)  # not proven read yet
    p.ack("sn-1", [SAY])
    assert p.answer_written("sn-1", p.generation, Delivery.WRITTEN) is AckResult.SENT
    assert not p.rekey_release_ready
    p.command_written(TtsFlushCommand(), p.generation)  # unproven: closing would lose it
    assert p.pong_received(p.ping_payload(receipt=True))
    assert p.session is SessionState.CONFIRMED and p.rekey_release_ready
    assert not p.rekey_bounce(reconnects=4, budget=5)  # rc: jambonz's 5th connection is its last
    assert p.rekey_bounce(reconnects=1, budget=5)
    assert not p.rekey_suspected and not p.rekey_bounce(reconnects=1, budget=5)  # once
    p.connection_lost()
    p.connection_made()
    p.receive_text(reconnect("rc-2"), 3.0)  # jambonz's ordinary reconnect: nothing suspected
    assert not p.rekey_suspected


def test_no_rekey_release_once_jambonz_sends() -> None:
    """An answer written, then a drop before its receipt Pong: sent again on the reconnect, the
    suspicion opens; any message jambonz sends on that socket proves its queue flows."""
    p = connected()
    p.receive_text(session_new("sn-1"), 0.0)
    p.ack("sn-1", [SAY])
    assert p.answer_written("sn-1", p.generation, Delivery.WRITTEN) is AckResult.SENT
    p.connection_lost()
    p.connection_made()
    p.receive_text(reconnect("rc-1"), 1.0)
    assert p.rekey_suspected
    plan = p.reconnect_answer("rc-1")
    assert plan is not None and plan.text is not None
    p.answer_written(plan.msgid, p.generation, Delivery.WRITTEN)
    p.receive_text(frame("call:status", "cs1", {"call_status": "trying"}), 1.1)
    assert p.pong_received(p.ping_payload(receipt=True))
    assert not p.rekey_suspected and not p.rekey_bounce(reconnects=1, budget=5)


def test_no_rekey_release_after_a_proven_answer() -> None:
    p = answered(connected())
    p.connection_lost()
    p.connection_made()
    p.receive_text(reconnect("rc-1"), 1.0)
    assert not p.rekey_suspected


def test_a_call_first_seen_on_a_reconnect_is_not_suspected_when_an_answer_was_read_before() -> None:
    """A call first seen through ``session:reconnect`` (the process that served it drained or
    died) is suspected of a re-keyed ``session:new``, unless that process saw jambonz read an
    answer of the call (``session_confirmed``: a cluster member's stored fact). jambonz clears
    ``_initMsgId`` at the first ack it reads (FS v0.9.8 ``lib/utils/ws-requestor.js:537-538``)
    and only sending ``session:new`` sets it (``:197``): that reconnect is an ordinary one, and
    a release close would only cost the call a reconnect. The fact is the call's from then on,
    and a suspected reconnect's answer proven read establishes it too (the next hand-over
    carries it)."""
    p = connected()
    assert not p.session_confirmed
    p.receive_text(reconnect("rc-1"), 0.0)
    assert p.rekey_suspected
    p.ack("rc-1", [SAY])
    assert p.answer_written("rc-1", p.generation, Delivery.WRITTEN) is AckResult.SENT
    assert not p.session_confirmed
    assert p.pong_received(p.ping_payload(receipt=True))
    assert p.rekey_release_ready and p.session_confirmed  # jambonz read it: it forgot session:new

    q = connected(session_confirmed=True)
    assert q.session_confirmed
    q.receive_text(reconnect("rc-1"), 0.0)
    assert not q.rekey_suspected
    q.ack("rc-1", [SAY])
    assert q.answer_written("rc-1", q.generation, Delivery.WRITTEN) is AckResult.SENT
    assert q.pong_received(q.ping_payload(receipt=True))
    assert not q.rekey_release_ready and not q.rekey_bounce(reconnects=1, budget=5)
    assert q.session_confirmed and q.session is SessionState.NONE
    assert answered(connected()).session_confirmed  # its session:new answer proven read here


def test_watchdog_answers_a_rekeyed_session_new_with_holding_verbs() -> None:
    p = connected()
    p.receive_text(session_new("sn-1"), 0.0)
    p.connection_lost()
    p.connection_made()
    p.receive_text(reconnect("rc-1"), 10.0)
    assert p.overdue(13.9) == []
    (due,) = p.overdue(14.0)
    assert due.needs_verbs
    assert sent(p.ack(due.msgid, [PAUSE])) == {
        "type": "ack",
        "msgid": "rc-1",
        "data": [{"verb": "pause", "length": 1}],
    }


def test_no_ack_carries_a_previous_generation_msgid() -> None:
    p = answered(connected())
    p.receive_text(hook("old-1"), 0.0)
    p.connection_lost()
    p.connection_made()
    p.receive_text(reconnect("rc-1"), 1.0)
    p.receive_text(hook("new-1"), 1.0)
    with pytest.raises(LocalProtocolError):
        p.ack("old-1")
    assert {sent(p.ack(m))["msgid"] for m in ("rc-1", "new-1")} == {"rc-1", "new-1"}


def test_reconnect_first_on_a_socket_without_session_new() -> None:
    # an app restart: the first thing this protocol sees is a session:reconnect (FM-30)
    p = connected()
    msg = p.receive_text(reconnect("rc-1"), 0.0)
    assert isinstance(msg, SessionReconnect)
    assert p.call_sid == SID
    assert p.is_owed("rc-1")
    assert p.session is SessionState.NONE
    assert sent(p.ack("rc-1", [SAY]))["msgid"] == "rc-1"


def test_restore_puts_back_an_owed_session_new() -> None:
    # (restore() is gone: the engine reports the failed write with answer_written)
    p = connected()
    p.receive_text(session_new("sn-1"), 0.0)
    owed = p.get_owed("sn-1")
    assert owed is not None
    p.ack("sn-1", [SAY])  # ... and the write fails: the socket died
    assert p.session is SessionState.SENT
    p.connection_lost()
    assert p.answer_written("sn-1", 1, Delivery.NOT_WRITTEN) is AckResult.DEFERRED
    assert p.is_owed("sn-1")
    assert session_of(p) is SessionState.HELD  # it never left: held, like an answer given while down
    # the app did answer: the error says what it waits for, not "answer session:new first"
    with pytest.raises(LocalProtocolError, match="waits for jambonz's reconnect"):
        p.command(TtsFlushCommand())
    p.connection_made()
    p.receive_text(reconnect("rc-1"), 1.0)
    assert not p.is_owed("rc-1")
    assert sent(p.ack("sn-1", [SAY]))["msgid"] == "rc-1"
    assert p.session is SessionState.SENT


def test_restore_on_the_live_socket_and_after_close() -> None:
    p = connected()
    p.receive_text(session_new("sn-1"), 0.0)
    owed = p.get_owed("sn-1")
    assert owed is not None
    p.ack("sn-1", [SAY])
    assert p.answer_written("sn-1", 1, Delivery.MAYBE) is AckResult.DEFERRED  # not reported lost
    assert sent(p.ack("sn-1", [SAY]))["msgid"] == "sn-1"
    p.close()
    assert p.answer_written("sn-1", 1, Delivery.WRITTEN) is AckResult.LOST
    assert p.owed() == []


def test_restore_of_a_hook_after_the_drop_abandons_it() -> None:
    # a failed write of any other answer: jambonz failed that request at the drop
    p = answered(connected())
    p.receive_text(hook("h1"), 0.0)
    owed = p.get_owed("h1")
    assert owed is not None
    p.ack("h1")  # ... and the write fails
    p.connection_lost()
    assert p.answer_written("h1", 1, Delivery.MAYBE) is AckResult.LOST
    for o in p.owed():
        assert o.generation == p.generation or o.needs_verbs
    assert p.was_abandoned("h1")


def test_closed_while_disconnected_returns_the_session_new() -> None:
    p = connected()
    p.receive_text(session_new("sn-1"), 0.0)
    p.connection_lost()
    assert [o.msgid for o in p.close()] == ["sn-1"]


# -- the stateful model ---------------------------------------------------------------------------

_GENERIC_TYPES = sorted(set(MESSAGE_TYPES) - {"session:new", "session:reconnect"})
_HOLDING: list[Verb] = [v.Pause(length=1)]
_VERB_CHOICES: list[list[Verb]] = [[], [SAY], [PAUSE, v.Hangup()]]
_MAX_OWED = 5  # small, so that the owed bound is reached
#: late answers to these are dropped, never redirected (CallProtocol.plan_answer)
_NO_LATE_REDIRECT = ("dial:confirm", "session:adulting")


class _Owed:
    def __init__(
        self, wire: str, gen: int, needs_verbs: bool, deadline: float, overflow: bool = False
    ) -> None:
        self.wire = wire
        self.gen = gen
        self.needs_verbs = needs_verbs
        self.deadline = deadline
        self.overflow = overflow
        self.held: tuple[Verb, ...] | None = None
        self.held_by: Answerer | None = None
        self.scheduled = True  # its deadline counts (until answered; again once re-keyed)


class _Sent:
    """An answer rendered by the protocol, as the model sees it."""

    def __init__(self, msgid: str, owed: _Owed, verbs: tuple[Verb, ...], by: Answerer, gen: int) -> None:
        self.msgid = msgid
        self.owed = owed
        self.verbs = verbs
        self.by = by
        self.gen = gen
        self.wire = owed.wire
        self.written = False
        self.ping: int | None = None


class CallProtocolMachine(RuleBasedStateMachine):
    """A model of what jambonz is owed, and of where every answer is, checked against
    CallProtocol after every step: the outcome matrix of answers (ack now, hold for the
    reconnect, late redirect or drop), their writes, the Pings that prove jambonz read them,
    the resend of an unproven session:new answer on the reconnect, the reconnect gate and the
    owed bound."""

    msgids = Bundle("msgids")

    def __init__(self) -> None:
        super().__init__()
        self.deadline = 4.0
        self.p = CallProtocol(ack_deadline=self.deadline, max_owed=_MAX_OWED)
        self.now = 0.0
        self.gen = 0
        self.connected = False
        self.closed = False
        self.counter = 0
        self.owed: dict[str, _Owed] = {}
        self.received_on: dict[str, int] = {}  # msgid -> generation it arrived on
        self.emitted: set[str] = set()  # wire msgids of every ack produced
        self.answered: dict[str, Answerer] = {}
        self.abandoned: set[str] = set()
        self.session_new: str | None = None
        self.session_owed: _Owed | None = None
        self.session = SessionState.NONE
        self.resend_from: tuple[str, int] | None = None
        self.awaiting_reconnect = False
        self.gate: str | None = None
        self.sent: dict[tuple[str, int], _Sent] = {}
        self.pings = 0
        self.last_pong = 0
        self.receipt_ping = 0
        self.lost: list[str] = []
        self.first: str | None = None
        self.types: dict[str, str] = {}  # msgid -> message type

    # -- helpers --

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def live(self, o: _Owed) -> bool:
        return self.connected and not self.closed and o.gen == self.gen

    def expect_ack(self, msgid: str, verbs: Sequence[Verb]) -> str | None:
        """The wire msgid the ack must carry, or None if it must be refused."""
        if self.closed or not self.connected:
            return None
        o = self.owed.get(msgid)
        if o is None or o.gen != self.gen:
            return None
        if o.needs_verbs and not verbs:
            return None
        return o.wire

    def book_answer(self, msgid: str, verbs: Sequence[Verb], by: Answerer, text: str) -> None:
        """The protocol rendered an ack for ``msgid``: check it and follow it in the model."""
        o = self.owed[msgid]
        out = json.loads(text)
        assert out == {"type": "ack", "msgid": o.wire, "data": unstructure_verbs(verbs)}
        assert o.wire not in self.emitted, "a msgid was acked twice"
        assert self.received_on.get(o.wire) == self.gen, "ack for another generation"
        self.emitted.add(o.wire)
        del self.owed[msgid]
        o.scheduled = False
        self.answered[msgid] = by
        if o.needs_verbs:
            self.session = SessionState.SENT
            self.resend_from = None
            o.held = o.held_by = None
        self.sent[(msgid, self.gen)] = _Sent(msgid, o, tuple(verbs), by, self.gen)

    def do_ack(self, msgid: str, verbs: Sequence[Verb]) -> None:
        expected = self.expect_ack(msgid, verbs)
        before = snapshot(self.p)
        try:
            text = self.p.ack(msgid, verbs)
        except LocalProtocolError as exc:
            assert expected is None, f"ack({msgid!r}) refused: {exc}"
            assert snapshot(self.p) == before
            if msgid in self.answered and msgid not in self.owed and not self.closed:
                assert isinstance(exc, AlreadyAcked)
            if msgid in self.abandoned and not self.closed:
                assert not isinstance(exc, AlreadyAcked)
            return
        assert expected is not None, f"ack({msgid!r}) should have been refused"
        assert not self.closed
        self.book_answer(msgid, verbs, Answerer.APP, text)

    def hold(self, sent: _Sent, *, certain: bool) -> None:
        o = sent.owed
        o.held, o.held_by = sent.verbs, sent.by
        self.owed[sent.msgid] = o
        self.answered.pop(sent.msgid, None)
        self.session = SessionState.HELD if certain else SessionState.RESEND
        self.resend_from = (sent.msgid, sent.gen)

    def receive(self, mtype: str, msgid: str, data: dict[str, Any] | None = None) -> None:
        msg = self.p.receive_text(frame(mtype, msgid, data or {}, call_sid=SID), self.now)
        assert msg.msgid == msgid
        self.received_on[msgid] = self.gen
        self.types[msgid] = mtype
        if self.first is None:
            self.first = msgid

    def book(self, msgid: str, needs_verbs: bool) -> None:
        overflow = len(self.owed) >= _MAX_OWED
        deadline = self.now if overflow else self.now + self.deadline
        self.owed[msgid] = _Owed(msgid, self.gen, needs_verbs, deadline, overflow)

    # -- rules --

    @initialize(start=st.sampled_from(["session:new", "session:new", "session:new", "nothing"]))
    def connect(self, start: str) -> None:
        self.p.connection_made()
        self.gen = 1
        self.connected = True
        if start == "session:new":  # most calls: the session:new arrives at once
            self.receive_session_new()

    @precondition(lambda self: self.connected and not self.awaiting_reconnect and self.session_new is None)
    @rule(target=msgids)
    def receive_session_new(self) -> str:
        msgid = self.fresh("sn")
        self.receive("session:new", msgid, SESSION_DATA)
        self.session_new = msgid
        self.session = SessionState.OWED
        self.book(msgid, True)
        self.session_owed = self.owed[msgid]
        return msgid

    @precondition(lambda self: self.connected and not self.awaiting_reconnect)
    @rule(target=msgids, mtype=st.sampled_from([*_GENERIC_TYPES, "foo:bar", "foo:nomsgid"]))
    def receive_other(self, mtype: str) -> str:
        msgid = self.fresh("m")
        if mtype == "foo:nomsgid":
            self.p.receive_text(json.dumps({"type": "foo:bar", "data": {}}), self.now)
            if self.first is None:
                self.first = ""
            return msgid  # never sent: any ack of it must be refused
        self.receive(mtype, msgid)
        if (mtype in MESSAGE_TYPES and MESSAGE_TYPES[mtype].NEEDS_ACK) or mtype == "foo:bar":
            self.book(msgid, False)
        return msgid

    @precondition(lambda self: self.connected and not self.awaiting_reconnect and bool(self.p.owed()))
    @rule(data=st.data())
    def receive_duplicate_of_owed(self, data: st.DataObject) -> None:
        o = data.draw(st.sampled_from(self.p.owed()))
        if o.wire_msgid != o.msgid:
            return
        before = snapshot(self.p)
        with pytest.raises(RemoteProtocolError):
            self.p.receive_text(hook(o.msgid), self.now)
        assert snapshot(self.p) == before

    @precondition(lambda self: bool(self.p.owed()))
    @rule(data=st.data(), verbs=st.sampled_from(_VERB_CHOICES))
    def app_acks_owed(self, data: st.DataObject, verbs: list[Verb]) -> None:
        o = data.draw(st.sampled_from(self.p.owed()))
        self.do_ack(o.msgid, verbs)

    @rule(msgid=msgids, verbs=st.sampled_from(_VERB_CHOICES))
    def app_acks_known(self, msgid: str, verbs: list[Verb]) -> None:
        self.do_ack(msgid, verbs)

    @rule(msgid=st.text(max_size=4), verbs=st.sampled_from(_VERB_CHOICES))
    def app_acks_random(self, msgid: str, verbs: list[Verb]) -> None:
        self.do_ack(msgid, verbs)

    @precondition(lambda self: bool(self.p.owed()))
    @rule(data=st.data())
    def app_ack_too_large(self, data: st.DataObject) -> None:
        o = data.draw(st.sampled_from(self.p.owed()))
        before = snapshot(self.p)
        with pytest.raises(LocalProtocolError):
            self.p.ack(o.msgid, [v.Say(text="x" * 30_000)])
        assert snapshot(self.p) == before

    @rule(msgid=msgids, verbs=st.sampled_from(_VERB_CHOICES), raise_late=st.booleans())
    def app_answers(self, msgid: str, verbs: list[Verb], raise_late: bool) -> None:
        """``Call.ack``'s decision: the whole outcome matrix."""
        verbs_t = tuple(verbs)
        o = self.owed.get(msgid)
        expected: PlanKind | type[Exception]
        late = False
        if self.closed:
            expected = LocalProtocolError
        elif o is not None:
            if o.held is not None and o.held_by is not Answerer.WATCHDOG:
                expected = AlreadyAcked
            elif o.held is not None and self.session is not SessionState.HELD:
                late = True
                expected = PlanKind.DROP
            elif self.live(o):
                expected = LocalProtocolError if o.needs_verbs and not verbs else PlanKind.SEND
            elif o.needs_verbs:
                expected = PlanKind.HOLD if verbs else LocalProtocolError
            else:
                expected = LocalProtocolError
        elif self.answered.get(msgid) is Answerer.WATCHDOG or msgid in self.abandoned:
            late = True
            expected = PlanKind.DROP
        else:
            expected = AlreadyAcked if msgid in self.answered else LocalProtocolError
        if late and self.types.get(msgid) in _NO_LATE_REDIRECT:
            expected = PlanKind.DROP  # whatever the verbs and the policy: a redirect misplaces them
        elif late:
            expected = AlreadyAcked if raise_late else PlanKind.REDIRECT if verbs else PlanKind.DROP
        before = snapshot(self.p)
        try:
            plan = self.p.plan_answer(msgid, verbs, raise_late=raise_late)
        except LocalProtocolError as exc:
            assert expected in (LocalProtocolError, AlreadyAcked), f"{expected} expected, got {exc!r}"
            assert isinstance(exc, AlreadyAcked) == (expected is AlreadyAcked), exc
            assert snapshot(self.p) == before
            return
        assert plan.kind is expected, (plan, expected)
        assert plan.msgid == msgid
        event(f"answer: {plan.kind.value}")
        if plan.kind is PlanKind.SEND:
            assert plan.text is not None
            self.book_answer(msgid, verbs, Answerer.APP, plan.text)
        elif plan.kind is PlanKind.HOLD:
            assert o is not None
            o.held, o.held_by = verbs_t, Answerer.APP
            self.session = SessionState.HELD
        else:
            assert snapshot(self.p) == before
            assert plan.verbs == (verbs_t if plan.kind is PlanKind.REDIRECT else ())

    @precondition(lambda self: bool(self.p.owed()))
    @rule(data=st.data(), verbs=st.sampled_from(_VERB_CHOICES), raise_late=st.booleans())
    def app_answers_owed(self, data: st.DataObject, verbs: list[Verb], raise_late: bool) -> None:
        self.app_answers(data.draw(st.sampled_from(self.p.owed())).msgid, verbs, raise_late)

    @precondition(lambda self: any(not s.written for s in self.sent.values()))
    @rule(data=st.data(), delivery=st.sampled_from(Delivery), receipt=st.booleans(), pong_first=st.booleans())
    def write_returns(self, data: st.DataObject, delivery: Delivery, receipt: bool, pong_first: bool) -> None:
        """The engine reports how the write of a rendered answer went (``receipt``: with a
        receipt Ping in the same write, when none waits for its Pong; ``pong_first``: its Pong
        came before the write returned, as a peer that reads at once can make it)."""
        key = data.draw(st.sampled_from(sorted(k for k, s in self.sent.items() if not s.written)))
        sent = self.sent[key]
        payload = None
        if receipt and key[1] == self.gen:
            idle = self.connected and not self.closed and self.receipt_ping <= self.last_pong
            payload = self.p.receipt_for_write()
            assert (payload is not None) == idle
            if payload is not None:
                self.pings += 1
                assert payload == b"jt%d" % self.pings
                self.receipt_ping = self.pings
                for other in self.sent.values():  # written before it: covered by it too
                    if other.written and other.ping is None and other.gen == self.gen:
                        other.ping = self.pings
                event("answer written with its receipt Ping")
        reserved = self.pings
        if delivery is not Delivery.WRITTEN and self.connected and key[1] == self.gen:
            self.drop()  # the engine reports a failed write as the loss of its socket first
        elif payload is not None and pong_first:
            self.pong(reserved, garbage=False)
        result = self.p.answer_written(key[0], key[1], delivery, payload)
        live = self.connected and not self.closed and key[1] == self.gen
        if live and delivery is Delivery.WRITTEN:
            assert result is AckResult.SENT
            sent.written = True
            if payload is not None and self.last_pong >= reserved:
                event("receipt Pong before the write returned")
                if self.gate == sent.owed.wire:
                    self.gate = None
                self.sent.pop(key, None)  # proven read
                if sent.owed.needs_verbs and self.session is SessionState.SENT:
                    self.session = SessionState.CONFIRMED
                return
            if payload is not None:
                sent.ping = reserved
            if self.gate == sent.owed.wire:
                self.gate = None
            if sent.by is not Answerer.APP and not sent.owed.needs_verbs:
                del self.sent[key]
            return
        del self.sent[key]
        if delivery is Delivery.NOT_WRITTEN:
            self.emitted.discard(sent.wire)  # it never left: the msgid may be acked after all
        if sent.owed.needs_verbs:
            assert result is AckResult.DEFERRED
            if live:
                self.hold(sent, certain=delivery is Delivery.NOT_WRITTEN)
            elif (
                delivery is Delivery.NOT_WRITTEN
                and self.session is SessionState.RESEND
                and self.resend_from == key
            ):
                self.session = SessionState.HELD
            return
        assert result is AckResult.LOST
        self.answered.pop(key[0], None)
        self.abandoned.add(key[0])

    @precondition(lambda self: self.connected and not self.closed)
    @rule(receipt=st.booleans())
    def ping(self, receipt: bool) -> None:
        due = self.receipt_ping <= self.last_pong and any(
            s.written and s.ping is None and s.gen == self.gen for s in self.sent.values()
        )
        assert self.p.receipt_due == due
        payload = self.p.ping_payload(receipt=receipt)
        self.pings += 1
        assert payload == b"jt%d" % self.pings
        if receipt:
            self.receipt_ping = self.pings
        for sent in self.sent.values():
            if sent.written and sent.ping is None and sent.gen == self.gen:
                sent.ping = self.pings

    @rule(n=st.integers(min_value=-1, max_value=6), garbage=st.booleans())
    def pong(self, n: int, garbage: bool) -> None:
        payload = b"x%d" % n if garbage else b"jt%d" % n
        proved = self.p.pong_received(payload)
        if garbage or not (self.connected and not self.closed and 1 <= n <= self.pings):
            assert not proved
            return
        self.last_pong = max(self.last_pong, n)
        expected = False
        for key, sent in list(self.sent.items()):
            if sent.gen == self.gen and sent.ping is not None and sent.ping <= n:
                del self.sent[key]
                expected = True
                if sent.owed.needs_verbs and self.session is SessionState.SENT:
                    self.session = SessionState.CONFIRMED
                    event("session:new answer proven read")
        assert proved == expected

    @rule(dt=st.floats(min_value=0, max_value=6, allow_nan=False))
    def watchdog_tick(self, dt: float) -> None:
        self.now += dt
        due = self.p.overdue(self.now)
        if self.connected and not self.closed:
            # earliest deadline first (a request past the owed bound is due at once, before
            # older ones), arrival order among equal deadlines
            expected = [
                m
                for m, o in sorted(self.owed.items(), key=lambda item: item[1].deadline)
                if o.gen == self.gen and o.scheduled and o.deadline <= self.now
            ]
        else:
            expected = []
        assert [o.msgid for o in due] == expected
        for o in due:
            mo = self.owed[o.msgid]
            if mo.held is not None:
                verbs, by = mo.held, mo.held_by or Answerer.WATCHDOG
            elif mo.needs_verbs or (o.msgid == self.first and isinstance(o.message, SessionReconnect)):
                verbs, by = tuple(_HOLDING), Answerer.WATCHDOG
            else:
                verbs, by = (), Answerer.WATCHDOG
            plan = self.p.auto_answer(o)
            assert plan.kind is PlanKind.SEND and plan.text is not None
            self.book_answer(o.msgid, verbs, by, plan.text)
            assert o.msgid not in self.owed
        assert self.p.overdue(self.now) == []

    @rule(queue=st.booleans())
    def app_command(self, queue: bool) -> None:
        cmd = RedirectCommand(verbs=[SAY], queue=queue)
        ok = not self.closed and self.session not in (SessionState.OWED, SessionState.HELD)
        try:
            text = self.p.command(cmd)
        except LocalProtocolError:
            assert not ok
            return
        assert ok
        assert json.loads(text) == cmd.to_wire()

    @precondition(lambda self: self.connected)
    @rule()
    def drop(self) -> None:
        abandoned = self.p.connection_lost()
        expected = [m for m, o in self.owed.items() if not o.needs_verbs]
        assert [o.msgid for o in abandoned] == expected
        for m in expected:
            del self.owed[m]
            self.abandoned.add(m)
            assert self.p.was_abandoned(m)
        lost = []
        for key, sent in list(self.sent.items()):
            if sent.gen != self.gen:
                continue
            if sent.owed.needs_verbs:
                self.hold(sent, certain=False)
                if sent.written:
                    del self.sent[key]
            elif sent.written:
                del self.sent[key]
                lost.append(key[0])
        assert [s.owed.msgid for s in self.p.take_unconfirmed()] == lost
        assert self.p.take_unconfirmed() == []
        self.connected = False
        self.awaiting_reconnect = False

    def session_new_owed_here(self) -> bool:
        """Connected, with ``session:new`` still owed on this very socket."""
        return (
            self.connected
            and self.session_new is not None
            and self.session_new in self.owed
            and self.owed[self.session_new].gen == self.gen
        )

    @precondition(
        lambda self: (
            self.session_new_owed_here()
            and self.session_new is not None
            and self.owed[self.session_new].held is None
        )
    )
    @rule()
    def session_new_ack_lost_in_a_drop(self) -> None:
        """The ack is rendered, the socket dies during the write: the answer is held for the
        reconnect (it certainly never left)."""
        assert self.session_new is not None
        gen = self.gen
        self.do_ack(self.session_new, [SAY])
        self.drop()
        assert self.session is SessionState.RESEND
        assert self.p.answer_written(self.session_new, gen, Delivery.NOT_WRITTEN) is AckResult.DEFERRED
        del self.sent[(self.session_new, gen)]
        self.session = SessionState.HELD
        assert self.p.is_owed(self.session_new)

    @precondition(lambda self: self.session_new_owed_here())
    @rule()
    def drop_before_session_new_answer(self) -> None:
        """FM-29's trigger, made likelier than a plain drop at this point."""
        self.drop()

    @precondition(lambda self: self.session is SessionState.SENT and self.connected)
    @rule()
    def session_new_answer_written_then_dropped(self) -> None:
        """Issue 12's trigger: the answer is written, the socket dies before any Pong."""
        for key, sent in list(self.sent.items()):
            if sent.owed.needs_verbs and not sent.written and key[1] == self.gen:
                assert self.p.answer_written(key[0], key[1], Delivery.WRITTEN) is AckResult.SENT
                sent.written = True
                if self.gate == sent.owed.wire:
                    self.gate = None
        self.drop()

    @precondition(lambda self: not self.connected and not self.closed)
    @rule()
    def open_socket(self) -> None:
        """jambonz reconnected; its session:reconnect has not arrived yet."""
        self.p.connection_made()
        self.gen += 1
        self.connected = True
        self.awaiting_reconnect = True
        self.gate = None
        self.pings = self.last_pong = self.receipt_ping = 0

    @precondition(lambda self: self.connected and self.awaiting_reconnect)
    @rule(target=msgids)
    def receive_reconnect(self) -> str:
        self.awaiting_reconnect = False
        msgid = self.fresh("rc")
        self.receive("session:reconnect", msgid, SESSION_DATA)
        if self.first == msgid:  # the call's first message (an app restart): the app answers
            self.book(msgid, False)
            return msgid
        self.gate = msgid
        pending = [o for o in self.owed.values() if o.needs_verbs]
        if pending:
            (o,) = pending
            o.wire, o.gen, o.deadline = msgid, self.gen, self.now + self.deadline
            o.scheduled = True
        else:
            self.book(msgid, False)
        return msgid

    @precondition(lambda self: self.connected and self.gate is not None and not self.closed)
    @rule()
    def library_answers_reconnect(self) -> None:
        """The engine answers the new socket's session:reconnect at once: with the
        session:new answer again when jambonz may not have read it (issue 12)."""
        rc = self.gate
        assert rc is not None
        before = snapshot(self.p)
        plan = self.p.reconnect_answer(rc)
        pending = [
            (m, o) for m, o in self.owed.items() if o.needs_verbs and o.wire == rc and o.gen == self.gen
        ]
        if pending:
            ((msgid, o),) = pending
            if o.held is None:
                assert plan is None  # the app (or the watchdog) answers the re-keyed session:new
                assert snapshot(self.p) == before
                return
            assert plan is not None and plan.text is not None and plan.msgid == msgid
            verbs, by = o.held, o.held_by or Answerer.APP
            event(f"session:new answer sent again on the reconnect ({self.session.value})")
            self.book_answer(msgid, verbs, by, plan.text)
            assert json.loads(plan.text)["msgid"] == rc
            return
        o2 = self.owed.get(rc)
        if o2 is None or not self.live(o2):
            assert plan is None
            return
        assert plan is not None and plan.text is not None
        self.book_answer(rc, (), Answerer.LIBRARY, plan.text)

    @rule(roll=st.integers(min_value=0, max_value=9))
    def close(self, roll: int) -> None:
        if roll:  # rare: after a close there is little left to explore
            return
        left = self.p.close()
        if not self.closed:
            assert {o.msgid for o in left} == set(self.owed)
        self.closed = True
        self.connected = False
        self.awaiting_reconnect = False
        self.owed.clear()
        self.sent.clear()

    @precondition(lambda self: self.closed)
    @rule()
    def reopen_refused(self) -> None:
        with pytest.raises(LocalProtocolError):
            self.p.connection_made()

    # -- invariants --

    @invariant()
    def book_matches_model(self) -> None:
        real = {o.msgid: (o.wire_msgid, o.generation, o.overflow, o.held) for o in self.p.owed()}
        assert real == {m: (o.wire, o.gen, o.overflow, o.held) for m, o in self.owed.items()}

    @invariant()
    def only_session_new_outlives_its_socket(self) -> None:
        for o in self.p.owed():
            assert o.generation == self.p.generation or o.needs_verbs

    @invariant()
    def deadline_matches_model(self) -> None:
        live = [o.deadline for o in self.owed.values() if o.gen == self.gen and o.scheduled]
        expected = min(live) if live and self.connected and not self.closed else None
        assert self.p.next_deadline() == expected

    @invariant()
    def state_matches_model(self) -> None:
        assert self.p.generation == self.gen
        assert (self.p.state is ConnState.CONNECTED) == (self.connected and not self.closed)
        assert (self.p.state is ConnState.CLOSED) == self.closed
        assert self.p.session is self.session

    @invariant()
    def commands_flow_after_the_reconnect_answer(self) -> None:
        assert self.p.commands_flow == (self.connected and not self.closed and self.gate is None)

    @invariant()
    def receipts_match_model(self) -> None:
        wants = (
            self.connected
            and not self.closed
            and any(s.written and s.ping is None and s.gen == self.gen for s in self.sent.values())
        )
        assert self.p.wants_receipt == wants
        assert self.p.receipt_due == (wants and self.receipt_ping <= self.last_pong)

    @invariant()
    def unproven_session_answer_is_kept(self) -> None:
        """Issue 12: while jambonz may lack the session:new answer, the protocol holds it."""
        if self.session in (SessionState.HELD, SessionState.RESEND) and not self.closed:
            assert self.session_new is not None
            o = self.p.get_owed(self.session_new)
            assert o is not None and o.held
            assert not self.p.session_answered or self.session is SessionState.RESEND


CallProtocolMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestCallProtocolMachine = CallProtocolMachine.TestCase


# -- commands: proven read by a Pong, or reported at the drop ------------------------------------


def test_a_command_proven_read_is_forgotten_and_an_unproven_one_is_unconfirmed_at_the_drop() -> None:
    p = answered(connected())
    read = RedirectCommand(verbs=(SAY,), queue=True)
    unread = RedirectCommand(verbs=(PAUSE,), queue=True)
    p.command_written(read, p.generation)
    assert p.wants_receipt and p.receipt_due
    assert p.pong_received(p.ping_payload(receipt=True))  # jambonz read ``read``
    assert not p.wants_receipt
    p.command_written(unread, p.generation)
    payload = p.ping_payload(receipt=True)  # written, its Pong never comes
    assert not p.receipt_due  # one receipt Ping at a time
    p.connection_lost()
    lost = p.take_unconfirmed_commands()
    assert (lost.report, lost.resend) == ((unread,), ())
    assert p.commands_unconfirmed == 1
    assert p.take_unconfirmed_commands().report == ()  # reported once
    assert not p.pong_received(payload)  # a late Pong of the dead socket proves nothing


@pytest.mark.parametrize(
    ("command", "resend"),
    [
        (CallStatusCommand(call_status="completed"), True),
        (CallStatusCommand(call_status="no-answer"), True),
        (RedirectCommand(verbs=(v.Hangup(),), queue=True), True),
        (RedirectCommand(verbs=(SAY, v.Hangup())), False),  # the say would play twice
        (RedirectCommand(verbs=()), False),
        (TtsFlushCommand(), False),
    ],
)
def test_only_a_hangup_is_sent_again_on_the_reconnect(command: Command, resend: bool) -> None:
    """A hang-up cannot run twice (one that jambonz read ended the call: it never reconnects);
    anything else is the app's to decide."""
    assert ends_the_call(command) is resend
    p = answered(connected())
    p.command_written(command, p.generation)
    p.connection_lost()
    lost = p.take_unconfirmed_commands()
    assert (lost.resend, lost.report) == (((command,), ()) if resend else ((), (command,)))


def test_a_command_written_on_a_socket_already_lost_is_unconfirmed_at_once() -> None:
    p = answered(connected())
    gen = p.generation
    p.connection_lost()
    assert p.take_unconfirmed_commands().report == ()
    p.command_written(TtsFlushCommand(), gen)  # its write returned after the drop was seen
    assert p.take_unconfirmed_commands().report == (TtsFlushCommand(),)
    p.connection_made()
    p.command_written(TtsFlushCommand(), gen)  # an older socket's
    assert p.take_unconfirmed_commands().report == (TtsFlushCommand(),)
    assert not p.wants_receipt


def test_tracked_commands_are_bounded() -> None:
    """A peer that never answers Pings is cut off by the keepalive; until then only the latest
    commands are kept for a receipt."""
    p = answered(connected())
    for i in range(1000):
        p.command_written(RedirectCommand(verbs=(v.Pause(length=i + 1),), queue=True), p.generation)
    p.connection_lost()
    lost = p.take_unconfirmed_commands().report
    assert len(lost) == 256
    assert lost[-1] == RedirectCommand(verbs=(v.Pause(length=1000),), queue=True)


def test_closing_forgets_the_commands() -> None:
    p = answered(connected())
    p.command_written(TtsFlushCommand(), p.generation)
    p.close()
    p.command_written(TtsFlushCommand(), p.generation)
    assert p.take_unconfirmed_commands() == UnconfirmedCommands()


def _receipt(p: CallProtocol) -> bytes:
    """The receipt Ping to write with the next frame (one must be free)."""
    receipt = p.receipt_for_write()
    assert receipt is not None
    return receipt


def _unconfirmed_at_a_drop(p: CallProtocol) -> tuple[Command, ...]:
    p.connection_lost()
    return p.take_unconfirmed_commands().report


@pytest.mark.parametrize("pong_first", [False, True], ids=["pong-after", "pong-before-the-write-returns"])
def test_a_command_written_with_its_receipt_ping_is_proven_by_that_pings_pong(pong_first: bool) -> None:
    """The engine writes the receipt Ping right behind the command's frame; its Pong proves
    the command read, also when it comes before the write has returned."""
    p = answered(connected())
    receipt = _receipt(p)
    if pong_first:
        assert not p.pong_received(receipt)  # nothing written yet to prove
    p.command_written(RedirectCommand(verbs=(SAY,), queue=True), p.generation, receipt)
    assert not p.receipt_due  # that Ping is the receipt: no other is wanted
    if not pong_first:
        assert p.pong_received(receipt)
    assert not p.wants_receipt
    assert _unconfirmed_at_a_drop(p) == ()


def test_a_command_written_while_a_receipt_ping_waits_is_covered_by_the_next_one() -> None:
    p = answered(connected())
    first = _receipt(p)
    p.command_written(TtsFlushCommand(), p.generation, first)
    assert p.receipt_for_write() is None  # one receipt Ping at a time
    later = RedirectCommand(verbs=(PAUSE,), queue=True)
    p.command_written(later, p.generation)  # written without one
    assert p.wants_receipt and not p.receipt_due
    assert p.pong_received(first)  # proves the first only
    assert p.receipt_due  # the later one wants its own now
    assert _unconfirmed_at_a_drop(p) == (later,)


def test_a_command_recorded_after_one_that_took_a_later_receipt_is_still_pinged_and_proven() -> None:
    """Two tasks send commands: P's write starts while a receipt Ping waits (P takes none);
    that Pong comes; Q takes the next receipt Ping for its own write, queued behind P's; then
    P is recorded, then Q. P, unpinged, sits before Q, pinged: the next Ping must still cover
    P, and its Pong prove it (fresh-eyes review: P stayed unproven for good, and every later
    command with it, all reported unconfirmed at the drop)."""
    p = answered(connected())
    gen = p.generation
    first = _receipt(p)
    p.command_written(TtsFlushCommand(), gen, first)  # its receipt Ping waits for its Pong
    assert p.receipt_for_write() is None  # P's write starts without one
    assert p.pong_received(first)
    second = _receipt(p)  # Q's, before P is recorded
    cmd_p = RedirectCommand(verbs=(SAY,), queue=True)
    cmd_q = RedirectCommand(verbs=(PAUSE,), queue=True)
    p.command_written(cmd_p, gen)  # P's write returns
    p.command_written(cmd_q, gen, second)  # then Q's
    assert p.pong_received(second)  # proves Q (P is not known to be before that Ping)
    assert p.receipt_due  # P wants one
    third = p.ping_payload(receipt=True)
    assert p.pong_received(third)
    later = [RedirectCommand(verbs=(v.Pause(length=i + 1),), queue=True) for i in range(3)]
    for cmd in later:
        receipt = _receipt(p)
        p.command_written(cmd, gen, receipt)
        assert p.pong_received(receipt)
    assert not p.wants_receipt
    assert _unconfirmed_at_a_drop(p) == ()


def test_a_late_dial_confirm_answer_is_not_turned_into_a_redirect_of_the_callers_call() -> None:
    """A ``dial:confirm`` ack carries verbs for the **called** party (call screening): FS runs
    them in a ``ConfirmCallSession`` on the child leg (FS v0.9.8
    ``lib/utils/place-outdial.js:389-426``); an empty one accepts the callee at once (``:392-396``).
    Once the watchdog answered it empty, the callee is bridged and those verbs have nowhere to
    go. A ``redirect`` command with a verb array replaces the *session's* program (FS
    ``lib/session/call-session.js:2280-2289``) and kills its current task (``:2119-2125``), i.e.
    the caller's ``dial``:
    the bridged callee is hung up and the caller hears the callee's screening prompt. So a late
    answer to ``dial:confirm`` must not become a redirect (``DROP``, as for an empty one);
    ``plan_answer`` makes it one (``_late``: any late answer with verbs is a ``REDIRECT``)."""
    p = answered(connected())
    p.receive_text(frame("dial:confirm", "dc-1", {"call_sid": "child"}, call_sid=SID, hook="/confirm"), 10.0)
    (due,) = p.overdue(14.0)
    plan = p.auto_answer(due)
    assert sent(plan.text or "") == {"type": "ack", "msgid": "dc-1", "data": []}
    assert p.answer_written("dc-1", p.generation, Delivery.WRITTEN) is AckResult.SENT
    screening = [v.Say(text="Press 1 to accept the call"), v.Gather(input=["digits"], num_digits=1)]
    assert p.plan_answer("dc-1", screening).kind is PlanKind.DROP


def _late_after_watchdog(p: CallProtocol, raw: str, msgid: str) -> PlanKind:
    """Receive ``raw``, let the watchdog answer it empty, then plan the app's late answer."""
    p.receive_text(raw, 10.0)
    (due,) = (o for o in p.overdue(14.0) if o.msgid == msgid)
    plan = p.auto_answer(due)
    assert sent(plan.text or "") == {"type": "ack", "msgid": msgid, "data": []}
    assert p.answer_written(msgid, p.generation, Delivery.WRITTEN) is AckResult.SENT
    return p.plan_answer(msgid, [v.Play(url="https://example.com/hold.mp3")]).kind


def test_a_late_wait_hook_answer_is_not_turned_into_a_redirect_that_ends_the_wait() -> None:
    """A wait hook (conference ``waitHook`` / ``enterHook``, enqueue ``waitHook``, dial
    ``onHoldHook``, a ``conf:hold-status`` ``wait_hook``) is a ``verb:hook`` whose answer jambonz
    plays *inside* the waiting verb (FS v0.9.8 ``lib/tasks/conference.js:650-684``,
    ``lib/tasks/enqueue.js:314-384``, ``lib/tasks/dial.js:1091-1136``); an empty answer ends
    its loop. Once the watchdog answered it, a late answer sent as a ``redirect`` replaces the
    call's program and kills its current task (``lib/session/call-session.js:2280-2289``,
    ``:2119-2125``): the very conference / enqueue / dial the caller waits in, so the caller
    would leave the queue to hear the hold music. It must be dropped, like a late
    ``dial:confirm`` answer. The core knows a wait hook by the hooks the app gave (its acks'
    and commands' verbs, a ``conf:hold-status`` ``wait_hook``) and, for a call whose program
    another process sent, by the data only those hooks carry."""
    p = answered(connected())
    p.receive_text(hook("h-prog", "/start"), 1.0)
    p.ack(
        "h-prog",
        [
            v.Conference(name="room", wait_hook="/conf-wait", enter_hook=HookSpec(url="/conf-enter")),
            v.Enqueue(name="support", wait_hook="/queue-wait"),
            v.Dial(target=[v.Target(type="phone", number="+15551230000")], on_hold_hook="/held"),
        ],
    )
    for n, url in enumerate(["/conf-wait", "/conf-enter", "/queue-wait", "/held"]):
        assert _late_after_watchdog(p, hook(f"w{n}", url), f"w{n}") is PlanKind.DROP, url
    p.command(ConfHoldStatusCommand(conf_hold_status="hold", wait_hook="/on-hold"))
    assert _late_after_watchdog(p, hook("w9", "/on-hold"), "w9") is PlanKind.DROP
    # another process sent the program: the data says it (enqueue.js:323-336, dial.js:1101-1107)
    q = answered(connected())
    queue = {"queue_sid": "support", "queue_time": 3, "queue_size": 1, "queue_position": 0}
    raw = frame("verb:hook", "q1", {**queue, "call_sid": SID}, call_sid=SID, hook="/elsewhere")
    assert _late_after_watchdog(q, raw, "q1") is PlanKind.DROP
    held = {"call_sid": SID, "hold_detail": {"from": "<sip:a@b>", "to": "<sip:c@d>"}}
    raw = frame("verb:hook", "d1", held, call_sid=SID, hook="/other")
    assert _late_after_watchdog(q, raw, "d1") is PlanKind.DROP
    # an ordinary action hook's late answer still becomes a redirect
    assert _late_after_watchdog(q, hook("a1", "/gather"), "a1") is PlanKind.REDIRECT


def _verb_hook(msgid: str, data: dict[str, Any], url: str = "/elsewhere") -> str:
    return frame("verb:hook", msgid, {"call_sid": SID, **data}, call_sid=SID, hook=url)


def test_a_late_answer_to_a_hook_whose_answer_jambonz_ignores_is_dropped_whatever_its_url() -> None:
    """Some ``verb:hook`` requests await an ack whose verbs jambonz ignores even when on time
    (FS v0.9.8): a conference ``statusHook`` (``lib/tasks/conference.js:715-742``), a dial
    ``dtmfHook`` (``lib/tasks/dial.js:516``), a ``sip:refer`` ``eventHook``
    (``lib/tasks/sip_refer.js:93-94``), the hold / unhold notice on the in-dialog hook
    (``lib/session/call-session.js:2839-2849``, ``lib/session/siprec-call-session.js:70-81``),
    a deepgramflux gather's early turn report (``lib/tasks/gather.js:1115-1118``,
    ``performAction(..., false)``, ``lib/tasks/task.js:224-267``), and a dialogflow / lex /
    rasa actionHook reporting that an eventHook answer redirected the call
    (``lib/tasks/dialogflow/index.js:579-584``, ``lib/tasks/lex.js:342``,
    ``lib/tasks/rasa.js:102``, ``:143``); a dial ``referHook`` asked for a REFER on the parent
    leg gives the *child* its program (``lib/tasks/dial.js:410-435``). A late answer to one of
    them sent as a ``redirect`` would replace the call's program and kill the verb that runs
    on (the conference, the gather, the dial). Each carries data no other hook does, so it is
    known whatever its url (a conference's ``statusHook`` may even be the one of the member
    that started it, ``lib/tasks/conference.js:150-158``)."""
    p = answered(connected())
    flux = {**flux_speech_result("I need to", "EagerEndOfTurn"), "verb_id": "g1"}
    resumed = flux_speech_result("I need to", "TurnResumed")
    status = {"event": "join", "duration": 2.5, "time": "2026-01-01T00:00:00Z", "members": 2}
    refer = {"referring_call_sid": SID, "referred_call_sid": "child-sid", "refer_to_user": "100"}
    ignored = [
        {**status, "conference_sid": "conf:acct:room", "friendly_name": "room"},
        flux,
        resumed,
        {"sip_method": "INVITE", "event": "hold", "on_hold": True, "sip_body": "v=0", "sip_headers": {}},
        {"dtmf": "*2"},
        {"event": "transfer-status", "call_status": 180},
        {"dialogflow_result": "redirect"},
        {"lex_result": "redirect"},
        {"rasa_result": "redirect"},
        {"refer_details": refer},
    ]
    for n, data in enumerate(ignored):
        assert _late_after_watchdog(p, _verb_hook(f"i{n}", data), f"i{n}") is PlanKind.DROP, data
    # the hooks whose answer is the next program still get a redirect
    program = [
        flux_speech_result("I need to cancel", "EndOfTurn"),  # the gather's result
        {"dialogflow_result": "completed"},
        {"parent_call_sid": "parent-sid", "refer_details": {**refer, "referred_call_sid": "parent-sid"}},
        {"refer_details": {**refer, "referred_call_sid": None}},  # a REFER outside a dial
        {"sip_method": "INFO", "sip_body": "Signal=1", "sip_headers": {}},
    ]
    for n, data in enumerate(program):
        assert _late_after_watchdog(p, _verb_hook(f"p{n}", data), f"p{n}") is PlanKind.REDIRECT, data


def test_a_late_answer_to_a_hook_of_the_dialled_legs_confirm_program_is_dropped() -> None:
    """A dial's ``confirmHook`` program runs on the *called* leg, in a ``ConfirmCallSession``
    that uses the caller's requestor (FS v0.9.8 ``lib/utils/place-outdial.js:390-420``,
    ``:63-66``): its verbs' hooks come on the caller's socket with the callee's call info
    (``call_sid`` the callee's, ``parent_call_sid`` the caller's;
    ``lib/tasks/task.js:224-227``, ``lib/session/call-info.js:62``). An on-time answer
    replaces the confirm program; a late one sent as a ``redirect`` would replace the
    *caller's* program and kill its ``dial`` (``lib/session/call-session.js:2280-2289``,
    ``:2119-2125``): the callee hung up mid-screening. It is dropped. A REFER on the called
    leg is the exception: its referHook answer is the caller's next program
    (``lib/tasks/dial.js:373-378``, ``:410-416``), and so is every hook of a call whose own
    session is the dialled leg (after ``session:adulting``, on its own socket)."""
    p = answered(connected())
    callee = {"call_sid": "child-sid", "parent_call_sid": SID, "direction": "outbound"}
    screened = {**callee, "reason": "dtmfDetected", "digits": "1"}
    assert _late_after_watchdog(p, _verb_hook("c1", screened, "/screen-done"), "c1") is PlanKind.DROP
    assert _late_after_watchdog(p, _verb_hook("c2", callee, "/screen-said"), "c2") is PlanKind.DROP
    refer = {"referring_call_sid": "child-sid", "referred_call_sid": SID, "refer_to_user": "100"}
    child_refer = {**callee, "refer_details": refer}
    assert _late_after_watchdog(p, _verb_hook("c3", child_refer), "c3") is PlanKind.REDIRECT
    own = {**screened, "call_sid": SID, "parent_call_sid": "grandparent-sid"}  # an adult leg
    assert _late_after_watchdog(p, _verb_hook("c4", own, "/gather"), "c4") is PlanKind.REDIRECT


def test_a_late_answer_to_a_hook_the_app_gave_for_answers_jambonz_ignores_is_dropped() -> None:
    """A gather's (or a config ``bargeIn``'s) ``partialResultHook`` (FS v0.9.8
    ``lib/tasks/gather.js:1108-1113``: the request's result is not even awaited) and the hooks
    of the verbs jambonz runs nested in another (``lib/tasks/dial.js:127-130``,
    ``lib/tasks/gather.js:80-83``, ``lib/tasks/listen.js:64``): a nested ``listen``'s or
    ``play``'s actionHook (``performAction(..., false)``, ``lib/tasks/listen.js:94``,
    ``lib/tasks/play.js:93-95``), a nested ``transcribe``'s transcription / translation hook
    (``lib/tasks/transcribe.js:641``, ``:708``: only a top-level one replaces the program).
    Their data is not distinctive: the core knows them by the hooks the app gave. Data only a
    verb's result carries (its ``reason``, ``dial_call_status``...) tells an action hook that
    shares the url: its late answer is still a redirect."""
    p = answered(connected())
    p.receive_text(hook("h-prog", "/start"), 1.0)
    nested = v.Transcribe(transcription_hook="/nested-text", translation_hook="/nested-tr")
    p.ack(
        "h-prog",
        [
            v.Config(barge_in=v.BargeIn(enable=True, partial_result_hook="/bargein-partial")),
            v.Gather(
                input=["speech"],
                action_hook="/events",
                partial_result_hook=HookSpec(url="/events"),
                play=v.Play(url="https://example.com/p.mp3", action_hook="/gather-play"),
            ),
            v.Dial(
                target=[v.Target(type="phone", number="+15551230000")],
                action_hook="/dial-done",
                listen=v.Listen(url="wss://rec.example.com", action_hook="/dial-listen", transcribe=nested),
                transcribe=v.Transcribe(transcription_hook="/dial-text"),
            ),
        ],
    )
    partial = {"speech": {"is_final": False, "alternatives": [{"transcript": "I need"}]}, "verb_id": "g1"}
    urls = [
        "/bargein-partial",
        "/events",
        "/gather-play",
        "/dial-listen",
        "/nested-text",
        "/nested-tr",
        "/dial-text",
    ]
    for n, url in enumerate(urls):
        data = partial if "partial" in url or url == "/events" else {}
        assert _late_after_watchdog(p, _verb_hook(f"n{n}", data, url), f"n{n}") is PlanKind.DROP, url
    # the gather's result at the url it shares with its partialResultHook: the next program
    result = _verb_hook("r1", {"reason": "speechDetected", "speech": {"is_final": True}}, "/events")
    assert _late_after_watchdog(p, result, "r1") is PlanKind.REDIRECT
    assert _late_after_watchdog(p, _verb_hook("r2", {}, "/dial-done"), "r2") is PlanKind.REDIRECT


def test_a_hook_whose_answer_jambonz_ignores_is_known_when_its_socket_drops_too() -> None:
    """Abandoned requests (owed at a drop, read from a socket already lost, or answered on a
    socket that died under the answer) get the same rule as those the watchdog answered."""
    p = answered(connected())
    status = _verb_hook("s1", {"conference_sid": "conf:acct:room", "event": "leave"})
    p.receive_text(status, 5.0)
    p.receive_text(_verb_hook("s2", {"dtmf": "1"}), 5.0)
    p.ack("s2")
    assert [o.msgid for o in p.connection_lost()] == ["s1"]
    p.receive_text(_verb_hook("s3", {"dtmf": "2"}), 6.0)  # read after the drop
    assert p.answer_written("s2", p.generation, Delivery.WRITTEN) is AckResult.LOST
    late = [v.Play(url="https://example.com/x.mp3")]
    for msgid in ("s1", "s2", "s3"):
        assert p.plan_answer(msgid, late).kind is PlanKind.DROP, msgid
        assert p.plan_answer(msgid, late, raise_late=True).kind is PlanKind.DROP, msgid


def test_a_late_answer_to_a_gathers_nested_play_action_hook_is_dropped_though_it_reports_a_reason() -> None:
    """A gather's nested ``play`` sends its actionHook with the play's result, ``reason``
    ``playCompleted`` (or ``playFailed``), and jambonz ignores the answer (FS v0.9.8
    ``lib/tasks/play.js:93-95``, ``:104``: ``performAction(..., !this.parentTask)``;
    ``lib/tasks/gather.js:82-83``). That ``reason`` is the play's own result, not an action
    hook sharing the url: a late answer to it sent as a ``redirect`` would kill the gather
    that runs on. A top-level ``play``'s actionHook at another url is still the next program."""
    p = answered(connected())
    p.receive_text(hook("h-prog", "/start"), 1.0)
    prompt = v.Play(url="https://example.com/p.mp3", action_hook="/gather-play")
    p.ack("h-prog", [v.Gather(input=["speech"], action_hook="/gathered", play=prompt)])
    played = {"playback_seconds": "2", "playback_milliseconds": "2040", "playback_last_offset_pos": "0"}
    for n, reason in enumerate(["playCompleted", "playFailed"]):
        raw = _verb_hook(f"gp{n}", {**played, "reason": reason}, "/gather-play")
        assert _late_after_watchdog(p, raw, f"gp{n}") is PlanKind.DROP, reason
    # the gather's own result, and a play's actionHook the app gave at another url: redirects
    gathered = _verb_hook("g1", {"reason": "timeout"}, "/gathered")
    assert _late_after_watchdog(p, gathered, "g1") is PlanKind.REDIRECT
    top = _verb_hook("t1", {**played, "reason": "playCompleted"}, "/played")
    assert _late_after_watchdog(p, top, "t1") is PlanKind.REDIRECT
