"""Tunables of the server and of each call, with the defaults a production deployment wants."""

from __future__ import annotations

import enum
import ipaddress
import warnings
from collections.abc import Sequence
from typing import Any

import attrs

from ._protocol._json import DEFAULT_MAX_OUTBOUND_BYTES
from ._protocol._state import DEFAULT_ACK_DEADLINE, DEFAULT_MAX_OWED_ACKS
from ._protocol._verbs import Hangup, Pause
from ._protocol._verbs_base import Verb

__all__ = ["AudioConfig", "CallConfig", "DisconnectedCommands", "LateAck", "Overflow", "ServerConfig"]


class Overflow(enum.Enum):
    """What happens when the app does not drain a call's events and the queue is full."""

    #: Drop the new event and log a warning (counted in ``Call.statistics()``). A dropped request
    #: is still answered by the ack watchdog at its deadline, so jambonz never waits in vain.
    DROP = "drop"
    #: Log an error, send the fallback verbs (default: hang up) and close the socket with 1000.
    END_CALL = "end_call"


class LateAck(enum.Enum):
    """What ``Call.ack`` does with verbs for a request the watchdog (or a drop) already ended.

    Whatever this says, a late answer to ``dial:confirm`` or ``session:adulting`` is dropped
    (logged; ``AckOutcome.DROPPED``): as a ``redirect`` it would replace the wrong program. A
    ``dial:confirm`` answer's verbs are for the callee, and a ``redirect`` replaces the
    caller's program, killing its ``dial`` (FS v0.9.8 ``lib/utils/place-outdial.js:389-426``,
    ``lib/session/call-session.js:2280-2288``, ``:2119-2125``); jambonz ignores even an on-time
    ``session:adulting`` answer (``lib/utils/place-outdial.js:491-496``). docs/replying.md.
    """

    #: Send them as a ``redirect`` command (replacing the current program), never a stale ack.
    REDIRECT = "redirect"
    #: Raise :class:`~jambonz_trio.AlreadyAcked`.
    RAISE = "raise"


class DisconnectedCommands(enum.Enum):
    """What ``Call.send_command`` does while the call's socket is down."""

    #: Wait (bounded queue, FIFO) until jambonz reconnects and the reconnect is acked.
    QUEUE = "queue"
    #: Raise :class:`~jambonz_trio.NotDelivered` at once.
    FAIL = "fail"


def _verbs(value: Sequence[Verb]) -> tuple[Verb, ...]:
    return tuple(value)


def _networks(value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("trusted_sources is a sequence of addresses or networks, not one string")
    return tuple(value)


@attrs.frozen(kw_only=True)
class CallConfig:
    """Per-call behaviour. All durations are seconds.

    Attributes:
        ack_deadline: how long after receipt the watchdog answers a request for the app
            (jambonz gives up at 5 s).
        holding_verbs: what the watchdog answers a late ``session:new`` with (must be
            non-empty: an empty answer makes jambonz reject the call). The app's late answer then
            goes out as a ``redirect``.
        fallback_verbs: sent (as a ``redirect``) when the handler raises, before closing with
            1000; not for an :class:`~jambonz_trio.OperationInterrupted` whose ``command`` this
            process sent (that command's program runs).
        late_ack: see :class:`LateAck`.
        ack_unknown_types: answer unknown message types that carry a msgid, at the deadline.
        max_owed_acks: requests owed at once; past it (a flood of distinct msgids: jambonz
            itself has a handful in flight), each new one is answered at once, empty, like the
            watchdog would at its deadline (logged, rate-limited; counted as auto-answered).
        event_queue_size: bounded queue of events waiting for the app (count).
        max_queued_event_bytes: the same queue's bound in frame bytes (a peer cannot pin
            ``event_queue_size`` x ``max_inbound_bytes`` of memory).
        overflow: see :class:`Overflow`.
        send_timeout: bound on every write; a peer that stops reading is cut off after it.
        ping_interval / ping_timeout: keepalive; a call whose pong does not come is aborted.
        close_timeout: bound on the closing handshake.
        max_outbound_bytes: jambonz's ``maxPayload``; bigger frames are refused locally.
        reconnect_grace: how long a disconnected call waits for jambonz to reconnect.
        disconnected_commands: see :class:`DisconnectedCommands`.
        max_queued_commands / max_queued_bytes: bounds of the disconnected command queue.
        reconnect_budget: jambonz's ``rc`` (at most 5 reconnects a call); a warning is logged
            when a call gets close to it.
        rekey_quiet: after a drop before jambonz was seen to read the ``session:new`` answer,
            feature-server 0.9.8 may hold every later message of the call for good; once the
            answer written on the new socket is proven read and jambonz has sent nothing for
            this many seconds, the library closes the socket once (1012) so that jambonz
            reconnects and releases them (docs/reconnects.md). ``None`` or 0: never (a warning
            is logged instead); so too when ``reconnect_budget`` leaves jambonz no reconnect.
        inbound_rate / inbound_burst: what one socket may send, in tokens (every frame costs:
            a message or fragment one token per started KiB of payload, a Ping or Pong one):
            ``inbound_rate`` per second sustained, bursts of ``inbound_burst``. Past it the
            call stops reading its socket until the budget is back (TCP back-pressure slows
            the sender; nothing is dropped). The defaults are ten times the busiest jambonz
            traffic we know (see docs/security.md).
        strict: re-raise handler exceptions (for tests) instead of containing them.
    """

    ack_deadline: float = DEFAULT_ACK_DEADLINE
    holding_verbs: tuple[Verb, ...] = attrs.field(default=(Pause(length=1),), converter=_verbs)
    fallback_verbs: tuple[Verb, ...] = attrs.field(default=(Hangup(),), converter=_verbs)
    late_ack: LateAck = LateAck.REDIRECT
    ack_unknown_types: bool = True
    max_owed_acks: int = DEFAULT_MAX_OWED_ACKS
    event_queue_size: int = 256
    max_queued_event_bytes: int = 4 * 1024 * 1024
    overflow: Overflow = Overflow.DROP
    send_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 10.0
    close_timeout: float = 3.0
    max_outbound_bytes: int | None = DEFAULT_MAX_OUTBOUND_BYTES
    reconnect_grace: float = 60.0
    disconnected_commands: DisconnectedCommands = DisconnectedCommands.QUEUE
    max_queued_commands: int = 64
    max_queued_bytes: int = 256 * 1024
    reconnect_budget: int = 5
    rekey_quiet: float | None = 1.0
    inbound_rate: float = 1000.0
    inbound_burst: float = 2000.0
    strict: bool = False

    def __attrs_post_init__(self) -> None:
        if not (self.inbound_rate > 0 and self.inbound_burst >= 1):
            raise ValueError("inbound_rate must be positive and inbound_burst at least 1")
        if not self.holding_verbs:
            raise ValueError("holding_verbs must not be empty (jambonz rejects an empty session:new ack)")
        if not 0 < self.ack_deadline < 5:
            raise ValueError("ack_deadline must be between 0 and jambonz's 5 s")
        if self.max_owed_acks < 1:
            raise ValueError("max_owed_acks must be at least 1")
        if self.rekey_quiet is not None and not self.rekey_quiet >= 0:
            raise ValueError("rekey_quiet must be None or at least 0")

    @property
    def late_answer(self) -> LateAck:
        """Deprecated: :attr:`late_ack`."""
        warnings.warn("CallConfig.late_answer is deprecated; use late_ack", DeprecationWarning, stacklevel=2)
        return self.late_ack


_call_config_init = CallConfig.__init__


def _call_config_init_accepting_late_answer(self: CallConfig, **kwargs: Any) -> None:
    """``CallConfig(late_answer=...)``: the deprecated name of ``late_ack`` (one release)."""
    if "late_answer" in kwargs:
        warnings.warn(
            "CallConfig(late_answer=...) is deprecated; use late_ack=", DeprecationWarning, stacklevel=2
        )
        kwargs.setdefault("late_ack", kwargs.pop("late_answer"))
    _call_config_init(self, **kwargs)


CallConfig.__init__ = _call_config_init_accepting_late_answer  # type: ignore[method-assign]


@attrs.frozen(kw_only=True)
class AudioConfig:
    """Limits and behaviour of each audio stream (``listen`` / ``stream`` sockets). Seconds
    and bytes.

    Attributes:
        max_frame_bytes: largest binary (audio) message accepted; bigger: close 1009. The
            media server sends all the audio it has buffered at once, normally 20 ms, at most
            its buffer (up to 5 s of 64 kHz stereo: 1.28 MB).
        max_text_bytes: largest text (JSON) message accepted; bigger: close 1009. The metadata
            frame is at most 8 KiB and the events are tiny.
        buffer_seconds: audio kept for a consumer that reads slower than real time, in
            seconds of the stream's own format; beyond it the oldest chunks are dropped (and
            counted). Capped by ``max_buffered_bytes``.
        max_buffered_bytes: hard cap of that buffer, whatever the sample rate. A chunk
            counts as at least 64 bytes (what a small one costs in memory beyond its
            payload), so tiny frames cannot make the buffer hold more than about twice its
            bound; jambonz's frames (20 ms, 320 bytes and up) count as their payload.
        event_queue_size: ``playDone`` / ``mark`` / DTMF events kept for the app; beyond it
            the oldest are dropped (and counted).
        max_event_bytes: bound on the size of those events together, counted as the length of
            their text frames; beyond it the oldest are dropped (and counted) too. jambonz's
            events are about 100 bytes each, so only a peer sending big unknown messages
            reaches it (without it, 256 frames of up to ``max_text_bytes``: 16 MiB).
        first_message_timeout: how long an accepted audio socket may stay silent before its
            metadata frame (jambonz sends it at once).
        send_timeout: bound on every write; a peer that stops reading is cut off after it.
        ping_interval / ping_timeout: keepalive, as for calls (:class:`CallConfig`): a Ping
            ``ping_interval`` seconds after the last Pong; a stream whose Pong does not come
            within ``ping_timeout`` of its Ping is aborted (a peer gone without closing, e.g.
            a media server whose host vanished). The stream then ends with ``by="lost"``,
            code 1006, reason ``"ping timeout"``.
        close_timeout: bound on the closing handshake.
    """

    max_frame_bytes: int = 2 * 1024 * 1024
    max_text_bytes: int = 64 * 1024
    buffer_seconds: float = 2.0
    max_buffered_bytes: int = 1024 * 1024
    event_queue_size: int = 256
    max_event_bytes: int = 256 * 1024
    first_message_timeout: float = 10.0
    send_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 10.0
    close_timeout: float = 3.0

    def __attrs_post_init__(self) -> None:
        if (
            self.buffer_seconds <= 0
            or self.max_buffered_bytes <= 0
            or self.event_queue_size <= 0
            or self.max_event_bytes <= 0
        ):
            raise ValueError("audio buffers must be positive")
        if not (self.ping_interval > 0 and self.ping_timeout > 0):
            raise ValueError("ping_interval and ping_timeout must be positive")

    def buffer_bytes(self, bytes_per_second: int) -> int:
        """The inbound buffer's bound for a stream of ``bytes_per_second``."""
        return max(1, min(self.max_buffered_bytes, int(self.buffer_seconds * bytes_per_second)))


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Admission and resource limits of a :class:`~jambonz_trio.JambonzServer`.

    Attributes:
        handshake_timeout: total budget for one connection's request head, auth and 101 reply
            (jambonz itself gives up after 1.5 s).
        first_message_timeout: how long an accepted socket may stay silent before its first
            message (jambonz sends it at once).
        first_byte_timeout: how long a new connection may stay silent before the first byte of
            its request (or TLS hello) arrives; then it is closed without an answer. jambonz
            writes its request as soon as TCP connects.
        max_request_head_bytes: cap on the HTTP request head.
        max_request_headers: cap on the number of header lines, checked on the raw bytes
            before any parsing; more: 431.
        max_pending_handshakes: handshakes in progress at once; more get 503.
        reserved_pending_handshakes: the part of ``max_pending_handshakes`` only *known*
            sources may use: addresses that authenticated recently, or listed in
            ``trusted_sources``. ``None`` (default): a quarter of ``max_pending_handshakes``.
            Unused when no route requires credentials and no ``trusted_sources`` are given
            (nobody could earn it).
        max_pending_per_source: handshakes in progress at once from one address that is not
            known (IPv6: one /64) while the slots are contended: once half of the slots unknown
            sources may use are taken, such an address holding this many gets 503. On a server
            with room, one address may go past it up to that half (jambonz's bursts of new
            calls come from one feature server). ``None``: no per-source cap. Known sources are
            never capped per source.
        known_source_ttl: how long a successful authentication keeps an address known.
        trusted_sources: addresses or networks (``"10.0.0.0/8"``, ``"2001:db8::/32"``) that are
            always known, e.g. your jambonz feature servers.
        max_connections: open sockets at once; more get 503.
        max_inbound_bytes: largest frame accepted from jambonz (UTF-8 bytes); bigger: close 1009.
        max_partial_message_bytes: bytes of unfinished inbound messages (fragmented, or a
            frame spanning reads) all sockets together (calls and audio streams) may hold
            beyond the first 64 KiB of each; a socket whose next piece does not fit is closed
            with 1009 (jambonz reconnects). Messages up to 64 KiB never draw on it. Without
            it, partial messages could hold ``max_connections`` x ``max_inbound_bytes``
            (~10 GiB); with it at most ``max_connections`` x 64 KiB plus this.
        health_path: plain ``GET`` on this path answers 200 (load balancer checks).
        metrics: serve Prometheus metrics on ``metrics_path`` (a plain ``GET`` on the same
            port; needs the ``metrics`` extra, ``prometheus-client``). When any route requires
            credentials, so does the scrape: credentials one of the routes accepts. Off by
            default: then nothing is counted and prometheus-client is not imported. See
            docs/operations.md.
        metrics_path: where ``metrics`` are served.
        tracing: an OpenTelemetry span per call and per request answered, parented on the
            ``b3`` context jambonz sends (the ``otel`` extra, ``opentelemetry-api``). Without
            OpenTelemetry installed this logs a warning and traces nothing. Off by default:
            then OpenTelemetry is not imported.
        tracer_provider: the ``TracerProvider`` to trace with; ``None``: OpenTelemetry's
            global one.
        max_parked_calls: disconnected calls kept waiting for a reconnect at once; a call that
            disconnects when that many wait is given up at once (its reconnect starts a new
            call): the calls already waiting keep their place.
        max_parked_calls_per_account: the same for one tenant (route, Basic user and
            ``account_sid``); at the cap that tenant's *oldest* waiting call is given up.
            ``None``: no per-tenant cap. With shared credentials ``account_sid`` is chosen by
            the peer, so this shares the slots among honest tenants; ``max_parked_calls``
            still bounds them all.
        call: the per-call settings.
        audio: the per-audio-stream settings.
    """

    handshake_timeout: float = 5.0
    first_message_timeout: float = 10.0
    first_byte_timeout: float = 1.0
    max_request_head_bytes: int = 16 * 1024
    max_request_headers: int = 100
    max_pending_handshakes: int = 256
    reserved_pending_handshakes: int | None = None
    max_pending_per_source: int | None = 32
    known_source_ttl: float = 3600.0
    trusted_sources: tuple[str, ...] = attrs.field(default=(), converter=_networks)
    max_connections: int = 10_000
    max_inbound_bytes: int = 1024 * 1024
    max_partial_message_bytes: int = 64 * 1024 * 1024
    health_path: str | None = "/healthz"
    metrics: bool = False
    metrics_path: str = "/metrics"
    tracing: bool = False
    tracer_provider: Any = attrs.field(default=None, eq=False, repr=False)
    max_parked_calls: int = 10_000
    max_parked_calls_per_account: int | None = None
    call: CallConfig = CallConfig()
    audio: AudioConfig = AudioConfig()

    def __attrs_post_init__(self) -> None:
        reserve = self.reserved_pending_handshakes
        if reserve is not None and not 0 <= reserve < self.max_pending_handshakes:
            raise ValueError("reserved_pending_handshakes must be below max_pending_handshakes")
        if self.max_pending_per_source is not None and self.max_pending_per_source < 1:
            raise ValueError("max_pending_per_source must be at least 1 (or None: no cap)")
        if self.max_partial_message_bytes < 0:
            raise ValueError("max_partial_message_bytes must not be negative")
        if self.max_request_headers < 1:
            raise ValueError("max_request_headers must be at least 1")
        if not self.metrics_path.startswith("/") or self.metrics_path == self.health_path:
            raise ValueError("metrics_path must start with / and differ from health_path")
        for network in self.trusted_sources:
            ipaddress.ip_network(network, strict=False)  # a typo fails here, not under attack
