"""The benchmark's contract app written with jambonz_trio (examples/ivr.py without the supervisor).

    python bench/apps/trio_app.py PORT

session:new -> [say "Hello from jambonz", gather(speech+digits, /gather, timeout 10, say prompt)];
verb:hook /gather -> [say "You said: <transcript>", hangup]. Serves ws://127.0.0.1:PORT/ivr.
"""

from __future__ import annotations

import sys

import trio

from jambonz_trio import Call, Route, ServerConfig, VerbHook, serve_jambonz
from jambonz_trio.verbs import Gather, Hangup, Say


async def ivr(call: Call) -> None:
    await call.ack(
        call.session,
        [
            Say(text="Hello from jambonz"),
            Gather(
                input=["speech", "digits"],
                action_hook="/gather",
                timeout=10,
                say=Say(text="Say something"),
            ),
        ],
    )
    async for event in call:
        if isinstance(event, VerbHook) and event.hook == "/gather":
            result = event.gather
            if result.transcript:
                reply = [Say(text=f"You said: {result.transcript}"), Hangup()]
            elif result.digits:
                reply = [Say(text=f"You pressed: {result.digits}"), Hangup()]
            else:
                reply = [Hangup()]
            await call.ack(event, reply)
        elif isinstance(event, VerbHook):
            await call.ack(event)


def main() -> None:
    port = int(sys.argv[1])
    # room for the 10,000-call idle hold plus the connects in flight
    config = ServerConfig(max_connections=12_000)
    trio.run(
        lambda: serve_jambonz(Route(path="/ivr", handler=ivr), host="127.0.0.1", port=port, config=config)
    )


if __name__ == "__main__":
    main()
