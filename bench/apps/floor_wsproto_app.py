"""Reference floor, not a peer: wsproto driven directly on trio streams (no trio-websocket).

    python bench/apps/floor_wsproto_app.py PORT

The same contract as the other apps with no library, no reader task and no channels: one task per
connection feeds wsproto and answers. It shows what the trio + wsproto stack costs without
trio-websocket's machinery. Not part of the default run (``--apps ...,floorws``).
"""

from __future__ import annotations

import json
import sys
from functools import partial

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

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


def answer(text: str) -> str | None:
    msg = json.loads(text)
    if msg["type"] == "session:new":
        return json.dumps({"type": "ack", "msgid": msg["msgid"], "data": GREETING})
    if msg["type"] == "verb:hook":
        alts = msg["data"].get("speech", {}).get("alternatives") or [{}]
        reply = [{"verb": "say", "text": f"You said: {alts[0].get('transcript')}"}, {"verb": "hangup"}]
        return json.dumps({"type": "ack", "msgid": msg["msgid"], "data": reply})
    return None


async def handler(stream: trio.SocketStream) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    parts: list[str] = []
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            ws.receive_data(data)
            out = b""
            for event in ws.events():
                if isinstance(event, Request):
                    out += ws.send(AcceptConnection(subprotocol="ws.jambonz.org"))
                elif isinstance(event, TextMessage):
                    parts.append(event.data)
                    if event.message_finished:
                        reply = answer("".join(parts))
                        parts.clear()
                        if reply is not None:
                            out += ws.send(TextMessage(data=reply))
                elif isinstance(event, Ping):
                    out += ws.send(event.response())
                elif isinstance(event, CloseConnection):
                    out += ws.send(event.response())
                    await stream.send_all(out)
                    return
            if out:
                await stream.send_all(out)
    except trio.BrokenResourceError:
        pass
    finally:
        await trio.aclose_forcefully(stream)


def main() -> None:
    port = int(sys.argv[1])
    trio.run(partial(trio.serve_tcp, handler, port, host="127.0.0.1"))


if __name__ == "__main__":
    main()
