"""A small IVR on jambonz, plus a supervisor that pushes commands into live calls.

Run it::

    python examples/ivr.py --host 127.0.0.1 --port 8080 [--username U --password P]
    python examples/ivr.py --host 0.0.0.0 --port 8080 --workers 2 --redis redis://127.0.0.1:6379/0

and point a jambonz application's call hook at ``ws://<host>:8080/ivr``. Basic auth is
enforced when both a username and a password are given (flags, or the environment variables
``JAMBONZ_WS_USERNAME`` / ``JAMBONZ_WS_PASSWORD``). ``--workers N`` serves the port from N
processes (:mod:`jambonz_trio.workers`); ``--redis URL`` joins a cluster
(:mod:`jambonz_trio.cluster`, the ``redis`` extra): every worker lists its calls there, and
``python examples/cluster_supervisor.py --redis URL`` or ``python -m jambonz_trio calls --redis
URL`` see and command them all.

The caller hears a greeting and is asked to say something or press keys; the app repeats what
it got and hangs up. A supervisor task, outside any call handler, watches new calls through
the server's registry: for a caller on the block list it replaces the program with a short
message (a ``redirect``, which kills the greeting) and hangs up - in that order, right after
the ``session:new`` ack. (It does not ``mute``: jambonz acts on ``mute:status`` only during a
``dial`` or ``conference``, and ignores it here; see ``examples/supervisor.py`` for that.)

Per-call state lives in the handler's local variables and ``call.user_data``: it survives a
jambonz reconnect, because the same ``Call`` (and the same handler) carries on. A socket drop
around an answer never ends the call: the ``session:new`` answer is re-sent by the library if
jambonz may have missed it, and a ``/gather`` reply that may not have arrived is played again
once jambonz is back (docs/reconnects.md).

The greeting and the gather's timeout are environment variables (``GREETING``,
``GATHER_TIMEOUT``): jambonz's portal asks ``OPTIONS /ivr`` for them when the application's
call hook is set, shows a form, and sends the values saved there with every call; unset, the
defaults below apply (see docs/operations.md).

``--metrics`` serves Prometheus metrics on the same port, at ``/metrics`` (behind the same
Basic auth as ``/ivr`` when it has one; the ``metrics`` extra: ``pip install
'jambonz-trio[metrics]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import trio

from jambonz_trio import (
    BasicAuth,
    Call,
    CallClosed,
    EnvVar,
    Handler,
    JambonzServer,
    NotDelivered,
    Route,
    ServerConfig,
    VerbHook,
    serve_jambonz,
)
from jambonz_trio.messages import AckUnconfirmed, HookAbandoned, Reconnected
from jambonz_trio.verbs import Gather, Hangup, Say, Verb
from jambonz_trio.workers import Workers, run_workers

PATH = "/ivr"
#: seconds a drain (SIGTERM) gives live calls to end before closing them with 1012
GRACE = 30.0
DEFAULT_BLOCKLIST = ("+15550000001",)

log = logging.getLogger("ivr")

#: Set per application in jambonz's portal (a form built from ``OPTIONS /ivr``).
GREETING = EnvVar("GREETING", description="What callers hear first", default="Hello from jambonz")
GATHER_TIMEOUT = EnvVar(
    "GATHER_TIMEOUT", int, description="Seconds to wait for the caller to say or press something", default=10
)
ENV = (GREETING, GATHER_TIMEOUT)


def greeting(text: str = "Hello from jambonz", timeout: int = 10) -> list[Say | Gather]:
    """The program answered to ``session:new``."""
    return [
        Say(text=text),
        Gather(
            input=["speech", "digits"],
            action_hook="/gather",
            timeout=timeout,
            say=Say(text="Say something"),
        ),
    ]


def speakable(text: str, limit: int = 500) -> str:
    """Caller input made safe to put in a verb: lone surrogates (valid JSON escapes that no
    UTF-8 frame can carry) become ``?``, and at most ``limit`` characters are kept (a
    transcript can be longer than the 24,576 bytes jambonz accepts in one frame). Without
    this, ``call.ack`` raises ``LocalProtocolError`` / ``MessageTooLarge`` on such input."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "..."


def gather_reply(event: VerbHook) -> list[Say | Hangup]:
    """The program answered to the ``/gather`` hook."""
    result = event.gather
    if result.transcript:
        return [Say(text=f"You said: {speakable(result.transcript)}"), Hangup()]
    if result.digits:
        return [Say(text=f"You pressed: {speakable(result.digits, 40)}"), Hangup()]
    return [Hangup()]


async def answer(call: Call, hook: VerbHook, verbs: Sequence[Verb]) -> None:
    """Answer ``hook``; if the socket dies under the answer, play it once jambonz is back."""
    try:
        await call.ack(hook, verbs)
    except NotDelivered:
        # jambonz failed the hook at the drop (perhaps after reading the answer): answering
        # again sends the verbs as a redirect once it reconnects (or nothing if empty)
        await replay(call, call.ack(hook, verbs))


async def replay(call: Call, send: Awaitable[object]) -> None:
    """Wait for a send that goes out once jambonz reconnects; the call may end first."""
    try:
        await send
    except (CallClosed, NotDelivered) as exc:
        log.info("call %s: not replayed: %s", call.call_sid, exc)


async def ivr(call: Call) -> None:
    """The call handler: runs once per call, for the whole call (across reconnects)."""
    call.user_data.setdefault("hooks", 0)  # restored when the call carries on elsewhere
    env = call.info.env_vars  # typed as declared in ENV, defaults applied
    # a drop meanwhile: sent on the reconnect
    await call.ack(call.session, greeting(env[GREETING], env[GATHER_TIMEOUT]))
    async for event in call:
        if isinstance(event, VerbHook) and event.hook == "/gather":
            call.user_data["hooks"] += 1
            await answer(call, event, gather_reply(event))
        elif isinstance(event, VerbHook):
            await answer(call, event, [])  # a hook this app does not use: carry on
        elif isinstance(event, HookAbandoned) and isinstance(event.message, VerbHook):
            # the socket dropped before the app answered: play the reply once reconnected
            if event.message.hook == "/gather":
                await replay(call, call.ack(event.message, gather_reply(event.message)))
        elif isinstance(event, AckUnconfirmed) and event.verbs:
            # answered just before a drop, not seen read: jambonz may have failed the hook
            # without playing the reply, so play it again (the caller may hear it twice)
            await replay(call, call.redirect(event.verbs))
        elif isinstance(event, Reconnected):
            log.info(
                "call %s reconnected (%d); state kept: %s",
                call.call_sid,
                event.count,
                call.user_data,
            )


async def supervise(server: JambonzServer, blocklist: Sequence[str]) -> None:
    """Push commands into calls this task did not answer: redirect, hang up."""
    async with trio.open_nursery() as nursery:
        async for call in server.calls.new_calls():
            if call.from_ in blocklist:
                nursery.start_soon(_block, call)


async def _block(call: Call) -> None:
    try:
        await call.wait_session_acked()
        await call.redirect([Say(text="redirected")])
        await call.hangup()
        log.info("blocked caller %s on call %s", call.from_, call.call_sid)
    except (CallClosed, NotDelivered) as exc:
        log.info("could not block call %s: %s", call.call_sid, exc)


def route(
    username: str | None = None, password: str | None = None, *, handler: Handler | None = None
) -> Route:
    """The ``/ivr`` application, with Basic auth when both credentials are given, and its
    environment variables."""
    auth = BasicAuth(username=username, password=password) if username and password else None
    return Route(path=PATH, handler=handler or ivr, auth=auth, env=ENV)


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    username: str | None = None,
    password: str | None = None,
    blocklist: Sequence[str] = DEFAULT_BLOCKLIST,
    handler: Handler | None = None,
    redis: str | None = None,
    member_ttl: float = 5.0,
    reuse_port: bool = False,
    metrics: bool = False,
    task_status: trio.TaskStatus[JambonzServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the IVR (``handler``: another implementation of it) and run its supervisor until
    cancelled. ``redis``: join the cluster at that URL (its calls are listed there and reachable
    by commands from other processes); ``reuse_port``: share the port with other workers;
    ``metrics``: serve Prometheus metrics at ``/metrics``."""
    async with contextlib.AsyncExitStack() as stack:
        cluster = None
        if redis:
            from jambonz_trio.cluster import ClusterConfig, open_cluster

            # keep_user_data: a call whose worker died (or drained) carries on where jambonz
            # reconnects, with its user_data (the hook count) restored
            # (op_timeout must stay below member_ttl / 3: shortened with a short member_ttl)
            config = ClusterConfig(
                member_ttl=member_ttl, op_timeout=min(1.0, member_ttl / 4), keep_user_data=True
            )
            cluster = await stack.enter_async_context(open_cluster(redis, config=config))
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    serve_jambonz,
                    route(username, password, handler=handler),
                    host=host,
                    port=port,
                    reuse_port=reuse_port,
                    cluster=cluster,
                    config=ServerConfig(metrics=metrics),
                )
            )
            nursery.start_soon(supervise, server, tuple(blocklist))
            task_status.started(server)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {value}")
    return value


def main(
    argv: Sequence[str] | None = None,
    *,
    serve: Callable[..., Awaitable[None]] | None = None,
    description: str | None = None,
) -> None:
    """Parse the command line and serve (``serve``: another IVR's serve coroutine)."""
    serve_fn = serve or globals()["serve"]
    parser = argparse.ArgumentParser(description=description or __doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--username", default=os.environ.get("JAMBONZ_WS_USERNAME"))
    parser.add_argument("--password", default=os.environ.get("JAMBONZ_WS_PASSWORD"))
    parser.add_argument("--blocklist", nargs="*", default=list(DEFAULT_BLOCKLIST))
    parser.add_argument(
        "--workers", type=_at_least_one, default=1, help="processes serving the port (SO_REUSEPORT)"
    )
    parser.add_argument(
        "--redis", default=os.environ.get("JAMBONZ_TRIO_REDIS"), help="join this Redis cluster"
    )
    parser.add_argument("--member-ttl", type=float, default=5.0, help="cluster heartbeat TTL (seconds)")
    parser.add_argument("--metrics", action="store_true", help="serve Prometheus metrics at /metrics")
    parser.add_argument(
        "--grace", type=float, default=GRACE, help="seconds live calls get to end on SIGTERM (drain)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    options: dict[str, Any] = {
        "username": args.username,
        "password": args.password,
        "blocklist": list(args.blocklist),
    }
    if args.redis:
        options |= {"redis": args.redis, "member_ttl": args.member_ttl}
    if args.metrics:
        options["metrics"] = True
    if args.workers > 1:

        def ready(workers: Workers) -> None:
            print(f"serving ws://{args.host}:{workers.port}{PATH} with {args.workers} workers", flush=True)

        run_workers(
            args.workers,
            serve_fn,
            host=args.host,
            port=args.port,
            kwargs=options,
            grace=args.grace,
            on_ready=ready,
        )
        return
    trio.run(partial(serve_until_signal, serve_fn, args.grace, host=args.host, port=args.port, **options))


async def serve_until_signal(serve_fn: Callable[..., Awaitable[None]], grace: float, **options: Any) -> None:
    """One process: serve until SIGTERM or SIGINT, then drain (``server.drain()``: the calls
    still up after ``grace`` seconds are closed with 1012 and jambonz reconnects them
    elsewhere), as each worker of ``run_workers`` does; a second signal stops at once."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def serving(task_status: trio.TaskStatus[JambonzServer]) -> None:
                await serve_fn(task_status=task_status, **options)
                nursery.cancel_scope.cancel()  # served out: no signal to wait for

            server: JambonzServer = await nursery.start(serving)
            print(f"serving ws://{options['host']}:{server.port}{PATH}", flush=True)
            draining = False
            async for _ in signals:
                if draining:  # jambonz sees the sockets drop, and reconnects elsewhere
                    nursery.cancel_scope.cancel()
                    break
                draining = True
                nursery.start_soon(partial(server.drain, grace=grace))  # then serve returns


if __name__ == "__main__":
    main()
