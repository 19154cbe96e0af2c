"""Reference floor, not a peer: bare trio-websocket + json with the same contract and no library.

    python bench/apps/floor_app.py PORT

What any trio-websocket based server pays at least (handshake, framing, tasks); used to tell the
library's own cost from its stack's. Not part of the default run (``--apps trio,node,pysdk,floor``).
"""

from __future__ import annotations

import json
import sys

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

GREETING = [
    {"verb": "say", "text": "Hello from jambonz"},
    {
        "verb": "gather",
        "input": ["speech", "digits"],
        "actionHook": "/gather",
        "timeout": 10,
        "say": {"text": "Say something"},
    },
]


async def handler(request: WebSocketRequest) -> None:
    ws = await request.accept(subprotocol="ws.jambonz.org")
    try:
        while True:
            msg = json.loads(await ws.get_message())
            if msg["type"] == "session:new":
                await ws.send_message(json.dumps({"type": "ack", "msgid": msg["msgid"], "data": GREETING}))
            elif msg["type"] == "verb:hook":
                alts = msg["data"].get("speech", {}).get("alternatives") or [{}]
                reply = [
                    {"verb": "say", "text": f"You said: {alts[0].get('transcript')}"},
                    {"verb": "hangup"},
                ]
                await ws.send_message(json.dumps({"type": "ack", "msgid": msg["msgid"], "data": reply}))
    except ConnectionClosed:
        pass


def main() -> None:
    port = int(sys.argv[1])
    trio.run(lambda: serve_websocket(handler, "127.0.0.1", port, ssl_context=None))


if __name__ == "__main__":
    main()
