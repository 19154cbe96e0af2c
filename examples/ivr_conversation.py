"""The IVR of ``examples/ivr.py``, written as straight-line code with :func:`open_conversation`.

Run it::

    python examples/ivr_conversation.py --host 127.0.0.1 --port 8080 [--username U --password P]

and point a jambonz application's call hook at ``ws://<host>:8080/ivr``. Basic auth is
enforced when both a username and a password are given (flags, or the environment variables
``JAMBONZ_WS_USERNAME`` / ``JAMBONZ_WS_PASSWORD``).

The caller hears the same thing as with ``examples/ivr.py``: a greeting, a prompt to say
something or press keys (10 s of silence give up), what they said or pressed, then a hang-up.
Compare the handler below with ``greeting``, ``gather_reply`` and ``ivr`` there: no hook
names, no event loop, no ack bookkeeping - each ``await`` returns when jambonz has done it.
The conversation picks the wire form (ack of the pending request, or a queued ``redirect``)
and names its hooks itself (``/jt/...``), so the wire differs from ``ivr.py`` while the call
sounds the same. Reconnects are invisible here: the same handler keeps waiting on the same
``await``.

The block-list supervisor is ``examples/ivr.py``'s own :func:`supervise`, imported unchanged:
commands pushed from another task work the same whichever style the handler is written in.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import trio

from jambonz_trio import BasicAuth, Call, JambonzServer, Route, open_conversation, serve_jambonz

if __package__:
    from . import ivr as callback_ivr
else:  # run as a script (python examples/ivr_conversation.py): make ``examples`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from examples import ivr as callback_ivr

PATH = callback_ivr.PATH
DEFAULT_BLOCKLIST = callback_ivr.DEFAULT_BLOCKLIST


async def ivr(call: Call) -> None:
    """The call handler: the whole call, top to bottom."""
    async with open_conversation(call) as convo:
        await convo.say("Hello from jambonz")
        result = await convo.gather("Say something", input=["speech", "digits"], input_timeout=10)
        if result.transcript:
            await convo.say(f"You said: {result.transcript}")
        elif result.digits:
            await convo.say(f"You pressed: {result.digits}")
        await convo.hangup()


def route(username: str | None = None, password: str | None = None) -> Route:
    """The ``/ivr`` application, with Basic auth when both credentials are given."""
    auth = BasicAuth(username=username, password=password) if username and password else None
    return Route(path=PATH, handler=ivr, auth=auth)


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    username: str | None = None,
    password: str | None = None,
    blocklist: Sequence[str] = DEFAULT_BLOCKLIST,
    task_status: trio.TaskStatus[JambonzServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the IVR and run ``examples/ivr.py``'s block-list supervisor until cancelled."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_jambonz(
                route(username, password), host=host, port=port, task_status=task_status
            )
        )
        nursery.start_soon(callback_ivr.supervise, server, tuple(blocklist))
        task_status.started(server)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (credentials default to ``JAMBONZ_WS_USERNAME`` / ``_PASSWORD``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--username", default=os.environ.get("JAMBONZ_WS_USERNAME"))
    parser.add_argument("--password", default=os.environ.get("JAMBONZ_WS_PASSWORD"))
    parser.add_argument("--blocklist", nargs="*", default=list(DEFAULT_BLOCKLIST))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"serving ws://{args.host}:{args.port}{PATH}", flush=True)
    trio.run(
        lambda: serve(
            host=args.host,
            port=args.port,
            username=args.username,
            password=args.password,
            blocklist=args.blocklist,
        )
    )


if __name__ == "__main__":
    main()
