"""Fuzzing the engine (reliability.md FM-09 and FM-18), over memory streams:

- a Hypothesis ``RuleBasedStateMachine`` that plays jambonz against a real server: random
  sequences of ``session:new``, hooks the app answers at once / late / never, notifications,
  unknown types, junk frames, pings, drops, half-open and legacy reconnects, and virtual time
  passing. Invariants after every step: no msgid is acked twice; every ack arrives on the
  socket its request came on (so never after a drop for an old msgid); nothing that is not a
  request is acked; a request on a socket that stays up is acked by the deadline; nothing
  escapes a connection (no ERROR log, the server task never fails);
- a property over raw frame bytes sent after a valid handshake: the connection either keeps
  working or closes; nothing escapes.

The handshake bytes (``_admission.admit``) and the codec (any text -> message /
UnknownMessage / RemoteProtocolError) are fuzzed where they live:
tests/admission/test_hostile_requests.py (test_fm01_property_*) and
tests/protocol/test_messages.py (test_any_text_gives_a_message_or_remote_protocol_error).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from wsproto.events import AcceptConnection

from jambonz_trio import (
    Call,
    CallConfig,
    JambonzServer,
    JambonzTrioError,
    NotDelivered,
    ServerConfig,
    VerbHook,
    serve_jambonz,
)
from jambonz_trio.messages import DialConfirm
from jambonz_trio.verbs import Say

from .helpers import Client, ErrorRecorder, frame, session_data, slow_enabled

T = TypeVar("T")

ACK_DEADLINE = 4.0
SID = "sid-fuzz"
#: The F2 race is contained but logged at ERROR (known bug, test_close_and_races.py).
F2_SIGNATURE = "cannot be sent in state ConnectionState.LOCAL_CLOSING"

#: How the app answers a hook, by hook name (virtual seconds; None: never).
DELAYS: dict[str, float | None] = {"/now": 0.0, "/slow": 2.0, "/late": 6.0, "/never": None}


async def fuzz_app(call: Call) -> None:
    async def answer(event: VerbHook | DialConfirm, delay: float | None) -> None:
        if delay is None:
            return
        await trio.sleep(delay)
        try:
            await call.ack(event, [Say(text=f"answer {event.hook}")])
        except JambonzTrioError:
            pass

    try:
        try:
            await call.ack(call.session, [Say(text="hello")])
        except NotDelivered:
            await call.ack(call.session, [Say(text="hello")])  # deferred to the reconnect
    except JambonzTrioError:
        pass
    async with trio.open_nursery() as nursery:
        async for event in call:
            if isinstance(event, VerbHook | DialConfirm):
                nursery.start_soon(answer, event, DELAYS.get(event.hook or "", 0.0))
        nursery.cancel_scope.cancel()


class TrioPortal:
    """One trio run (virtual clock, advanced only by :meth:`jump`) in a thread, driven
    synchronously from a Hypothesis state machine."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock(rate=0)
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trio-portal", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "trio portal did not start"

    def _run(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as exc:
            self.error = exc

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self.stop.wait()
            nursery.cancel_scope.cancel()

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        assert self.error is None, self.error
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def close(self) -> None:
        if self._thread.is_alive():
            trio.from_thread.run_sync(self.stop.set, trio_token=self.token)
            self._thread.join(10)
        assert self.error is None, self.error


@attrs.define
class Conn:
    index: int
    client: Client
    frames: list[dict[str, Any]] = attrs.Factory(list)
    ended_at: float | None = None


@attrs.define
class Request:
    conn: int
    sent_at: float
    optional: bool = False  # a junk frame's msgid: may or may not be answered


class EngineMachine(RuleBasedStateMachine):
    """jambonz, played at random against a real server over memory streams."""

    def __init__(self) -> None:
        super().__init__()
        self.errors = ErrorRecorder(logging.ERROR)
        logging.getLogger().addHandler(self.errors)
        self.portal = TrioPortal()
        self.server: JambonzServer = self.portal.run(self._start)
        self.conns: list[Conn] = []
        self.live: Conn | None = None
        self.started = False
        self.ids = itertools.count()
        self.requests: dict[str, Request] = {}
        self.acked: dict[str, int] = {}
        self.seen: dict[int, int] = {}

    async def _start(self) -> JambonzServer:
        config = ServerConfig(
            max_inbound_bytes=16 * 1024,
            call=CallConfig(ack_deadline=ACK_DEADLINE, ping_interval=1000, reconnect_grace=30),
        )
        server: JambonzServer = await self.portal.nursery.start(
            lambda task_status: serve_jambonz(fuzz_app, config=config, task_status=task_status)
        )
        return server

    def teardown(self) -> None:
        try:
            self.portal.close()
        finally:
            logging.getLogger().removeHandler(self.errors)

    # -- plumbing (runs in the trio thread) --

    def now(self) -> float:
        return self.portal.clock.current_time()

    async def _settle(self) -> None:
        await trio.testing.wait_all_tasks_blocked()
        now = trio.current_time()
        for conn in self.conns:
            if conn.ended_at is None and conn.client.close_code is not None:
                conn.ended_at = now

    async def _open(self) -> Conn:
        client = Client(await self.server.connect_memory())
        event = await client.handshake()
        assert isinstance(event, AcceptConnection), event
        conn = Conn(len(self.conns), client)
        self.conns.append(conn)

        async def read() -> None:
            while True:
                try:
                    reply = await client.receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    reply = None
                if reply is None:
                    if client.close_code is None:
                        client.close_code = 1006
                    return
                conn.frames.append(reply)

        self.portal.nursery.start_soon(read)
        return conn

    async def _send(self, conn: Conn, mtype: str, data: dict[str, Any] | None = None, **env: Any) -> str:
        msgid = f"m{next(self.ids)}"
        try:
            await conn.client.send(mtype, msgid, data or {}, call_sid=SID, **env)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return msgid
        return msgid

    def expect(self, msgid: str, conn: Conn, *, optional: bool = False) -> None:
        self.requests[msgid] = Request(conn.index, self.now(), optional)

    # -- rules --

    @precondition(lambda self: self.live is None)
    @rule(mode=st.sampled_from(["normal", "normal", "normal", "legacy", "drop-at-once"]))
    def connect(self, mode: str) -> None:
        """jambonz opens a socket: ``session:new`` first, later ``session:reconnect`` (or,
        like an older feature server, just the next hook: FM-35). ``drop-at-once``: the
        first message goes out and the socket dies before any answer (FM-29 when it is the
        ``session:new``)."""

        async def go() -> None:
            conn = await self._open()
            if not self.started:
                msgid = await self._send(conn, "session:new", session_data(SID))
                self.started = True
            elif mode == "legacy":
                msgid = await self._send(conn, "verb:hook", {}, hook="/now")
            else:
                msgid = await self._send(conn, "session:reconnect", session_data(SID))
            if mode == "drop-at-once":
                await conn.client.drop()
                conn.ended_at = trio.current_time()
            else:
                self.expect(msgid, conn)
                self.live = conn
            await self._settle()

        self.portal.run(go)

    @precondition(lambda self: self.live is not None)
    @rule(hook=st.sampled_from(sorted(DELAYS)), kind=st.sampled_from(["verb:hook", "dial:confirm"]))
    def request(self, hook: str, kind: str) -> None:
        async def go() -> None:
            assert self.live is not None
            msgid = await self._send(self.live, kind, {}, hook=hook)
            self.expect(msgid, self.live)
            await self._settle()

        self.portal.run(go)

    @precondition(lambda self: self.live is not None)
    @rule(mtype=st.sampled_from(["call:status", "verb:status", "llm:event", "foo:bar"]))
    def notify(self, mtype: str) -> None:
        """Notifications are never acked; an unknown type with a msgid is (optionally)."""

        async def go() -> None:
            assert self.live is not None
            msgid = await self._send(self.live, mtype, {"call_status": "in-progress"}, hook="/e")
            if mtype == "foo:bar":
                self.expect(msgid, self.live, optional=True)
            await self._settle()

        self.portal.run(go)

    @precondition(lambda self: self.live is not None)
    @rule(
        junk=st.sampled_from(
            [
                b"not json",
                b"[1, 2]",
                b"BAD-DATA",  # a hook whose data is not an object: answered empty, by msgid
                b'{"a": NaN}',
                b"DEEP",  # 2,000 levels of nesting
                b"\xff\xfe",  # invalid UTF-8: the server closes with 1007
                b"BINARY",
                b"PING",
                b"BIG",  # over max_inbound_bytes: 1009
            ]
        )
    )
    def junk(self, junk: bytes) -> None:
        async def go() -> None:
            assert self.live is not None
            client = self.live.client
            try:
                if junk == b"BINARY":
                    await client.send_bytes(b'{"type":"verb:hook","msgid":"bin","data":{}}')
                elif junk == b"PING":
                    await client.stream.send_all(frame(0x9, b"p") * 5)
                elif junk == b"BAD-DATA":
                    junk_id = f"junk{next(self.ids)}"
                    self.expect(junk_id, self.live, optional=True)
                    bad = {"type": "verb:hook", "msgid": junk_id, "hook": "/x", "data": "str"}
                    await client.send_text(json.dumps(bad))
                elif junk == b"DEEP":
                    await client.stream.send_all(frame(0x1, b"[" * 2000 + b"]" * 2000))
                elif junk == b"BIG":
                    await client.send_text("x" * (17 * 1024))
                else:
                    await client.stream.send_all(frame(0x1, junk))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await self._settle()
            if self.live.ended_at is not None:
                self.live = None

        self.portal.run(go)

    @precondition(lambda self: self.live is not None)
    @rule()
    def drop(self) -> None:
        async def go() -> None:
            assert self.live is not None
            await self.live.client.drop()
            self.live.ended_at = trio.current_time()
            self.live = None
            await self._settle()

        self.portal.run(go)

    @precondition(lambda self: self.live is not None and self.started)
    @rule()
    def reconnect_while_old_looks_open(self) -> None:
        """FM-31, sequential: a new socket reconnects while the old one was never closed."""
        old = self.live

        async def go() -> None:
            conn = await self._open()
            msgid = await self._send(conn, "session:reconnect", session_data(SID))
            self.expect(msgid, conn)
            self.live = conn
            await self._settle()
            assert old is not None
            if old.ended_at is None:  # replaced: from now on it does not count as live
                old.ended_at = trio.current_time()

        self.portal.run(go)

    @precondition(lambda self: self.live is not None)
    @rule()
    def hang_up(self) -> None:
        """jambonz ends the call: Close 1000. A later socket for the sid is a new call."""

        async def go() -> None:
            assert self.live is not None
            await self.live.client.close(1000)
            await self._settle()
            self.live.ended_at = trio.current_time()
            self.live = None

        self.portal.run(go)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.5, 4.5, 7.0, 35.0]))
    def advance(self, seconds: float) -> None:
        async def go() -> None:
            for _ in range(int(seconds / 0.5)):
                self.portal.clock.jump(0.5)
                await self._settle()
            if self.live is not None and self.live.ended_at is not None:
                self.live = None

        self.portal.run(go)

    # -- invariants --

    @invariant()
    def acks_are_once_and_on_their_own_socket(self) -> None:
        for conn in self.conns:
            new = conn.frames[self.seen.get(conn.index, 0) :]
            self.seen[conn.index] = len(conn.frames)
            for out in new:
                assert out.get("type") in ("ack", "command"), out
                if out["type"] != "ack":
                    continue
                msgid = out["msgid"]
                request = self.requests.get(msgid)
                assert request is not None, f"ack for something that was not a request: {out}"
                assert request.conn == conn.index, (
                    f"{msgid} acked on socket {conn.index}, sent on {request.conn}"
                )
                assert msgid not in self.acked, f"{msgid} acked twice"
                self.acked[msgid] = conn.index

    @invariant()
    def requests_on_a_live_socket_are_acked_by_the_deadline(self) -> None:
        now = self.now()
        for msgid, request in self.requests.items():
            if request.optional or msgid in self.acked:
                continue
            due = request.sent_at + ACK_DEADLINE + 0.6
            ended = self.conns[request.conn].ended_at
            if now >= due and (ended is None or ended > due):
                raise AssertionError(f"{msgid} (socket {request.conn}) not acked by {due}")

    @invariant()
    def nothing_escapes(self) -> None:
        assert self.portal.error is None, self.portal.error
        unexpected = [m for m in self.errors.messages() if F2_SIGNATURE not in m]
        assert unexpected == [], unexpected


#: ``JAMBONZ_TRIO_SLOW=1`` runs a long hunt instead of the bounded default.
_SCALE = 25 if slow_enabled() else 1

EngineMachine.TestCase.settings = settings(
    max_examples=100 * _SCALE,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineMachine = EngineMachine.TestCase


# -- raw frames after a valid handshake --------------------------------------------------------

_frames = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda op, payload, fin: frame(op, payload, fin=fin),
        st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xF]),
        st.one_of(
            st.binary(max_size=200),
            st.just(json.dumps({"type": "verb:hook", "msgid": "h", "hook": "/now", "data": {}}).encode()),
        ),
        st.booleans(),
    ),
)


async def _frames_scenario(chunks: list[bytes]) -> list[str]:
    errors = ErrorRecorder(logging.ERROR)
    logging.getLogger().addHandler(errors)
    try:
        async with trio.open_nursery() as nursery:
            config = ServerConfig(
                max_inbound_bytes=4096, call=CallConfig(ping_interval=1000, reconnect_grace=5)
            )
            server: JambonzServer = await nursery.start(
                lambda task_status: serve_jambonz(fuzz_app, config=config, task_status=task_status)
            )
            client = Client(await server.connect_memory())
            assert isinstance(await client.handshake(), AcceptConnection)
            await client.send("session:new", "m1", session_data(SID), call_sid=SID)
            assert (await client.receive() or {}).get("msgid") == "m1"
            try:
                for chunk in chunks:
                    await client.stream.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            with trio.move_on_after(10):  # virtual
                while await client.receive() is not None:
                    pass
            await client.drop()
            await trio.sleep(40)  # past every timeout: the call and connection are gone
            stats = server.statistics()
            assert (stats.connections, stats.calls, stats.pending_handshakes) == (0, 0, 0), stats
            nursery.cancel_scope.cancel()
    finally:
        logging.getLogger().removeHandler(errors)
    return [m for m in errors.messages() if F2_SIGNATURE not in m]


@settings(max_examples=150 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(_frames, max_size=8))
def test_fuzz_random_frames_after_handshake(chunks: list[bytes]) -> None:
    """Frame fuzzing / FM-09 chaos variant: any byte chunks (random bytes, and well-formed frames
    of every opcode incl. Close/Ping/Pong/continuations, in any order) after a valid handshake
    and ``session:new``: the connection keeps working or closes; nothing escapes, nothing leaks."""
    unexpected = trio.run(_frames_scenario, chunks, clock=trio.testing.MockClock(autojump_threshold=0))
    assert unexpected == [], unexpected
