"""Several jambonz applications on one server, each on its own path with its own admission.

Run it::

    python examples/multi_app.py --host 127.0.0.1 --port 8080 --username U --password P

and point each jambonz application's call hook at its path on ``ws://<host>:8080``:

* ``/ivr``: the IVR of ``examples/ivr.py`` (its :func:`route`, without credentials: open);
* ``/secure``: a PIN-protected balance line, admitted only with HTTP Basic auth (set the same
  username and password on the jambonz application; flags, or ``JAMBONZ_WS_USERNAME`` /
  ``JAMBONZ_WS_PASSWORD``);
* ``/agent``: a *prefix* route - ``/agent``, ``/agent/sales``, ``/agent/support/fr`` ... all
  reach the weather agent of ``examples/llm_agent.py`` (``/agents`` does not).

Any other path is refused with 404 before the WebSocket opens, as are ``/secure`` upgrades
without the right credentials (401). Basic auth travels in clear text over ``ws://``: outside
a test bench, serve ``wss://`` (``ssl_context=``) or terminate TLS in front of the server.
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
    from . import ivr, llm_agent
else:  # run as a script (python examples/multi_app.py): make ``examples`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from examples import ivr, llm_agent

SECURE_PATH = "/secure"
AGENT_PREFIX = "/agent"
#: The PIN the demo balance line accepts.
DEMO_PIN = "1234"


async def secure_line(call: Call) -> None:
    """The ``/secure`` application: ask for a PIN, read out a balance."""
    async with open_conversation(call) as convo:
        entry = await convo.gather(
            "Welcome to the secure line. Please enter your four digit PIN.",
            input=["digits"],
            num_digits=4,
            input_timeout=10,
        )
        if entry.digits == DEMO_PIN:
            await convo.say("Thank you. Your balance is forty two dollars.")
        elif entry.digits:
            await convo.say("Sorry, that PIN is not valid.")
        await convo.say("Goodbye.")
        await convo.hangup()


def routes(username: str, password: str) -> list[Route]:
    """The server's applications, matched by path (exact unless ``prefix``)."""
    return [
        ivr.route(),
        Route(path=SECURE_PATH, handler=secure_line, auth=BasicAuth(username=username, password=password)),
        Route(path=AGENT_PREFIX, handler=llm_agent.agent, prefix=True),
    ]


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    username: str,
    password: str,
    task_status: trio.TaskStatus[JambonzServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve every application on one listener until cancelled."""
    await serve_jambonz(routes(username, password), host=host, port=port, task_status=task_status)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; ``/secure`` needs credentials (flags or environment)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--username", default=os.environ.get("JAMBONZ_WS_USERNAME"))
    parser.add_argument("--password", default=os.environ.get("JAMBONZ_WS_PASSWORD"))
    args = parser.parse_args(argv)
    if not (args.username and args.password):
        parser.error(f"{SECURE_PATH} needs --username and --password (or JAMBONZ_WS_USERNAME / _PASSWORD)")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    base = f"ws://{args.host}:{args.port}"
    print(
        f"serving {base}{ivr.PATH}, {base}{SECURE_PATH} (Basic auth), {base}{AGENT_PREFIX}[/...]", flush=True
    )
    trio.run(lambda: serve(host=args.host, port=args.port, username=args.username, password=args.password))


if __name__ == "__main__":
    main()
