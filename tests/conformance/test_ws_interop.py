"""Interop: the server against the websocket client library feature-server 0.9.8 uses.

``ws_client.js`` (Node ``ws`` 8, installed with ``npm install --prefix tests/conformance``)
connects like jambonz does - subprotocol ``ws.jambonz.org``, permessage-deflate offered,
``maxPayload`` 24 KiB - over a real socket on 127.0.0.1, and reports what it saw: the
handshake, acks to a fragmented and a 20 KB message, a binary frame ignored, its ping
answered, our keepalive pings answered by ``ws``, closes started by either side, and 1009 for
a message over the server's limit. Without node or ``ws`` the test skips, unless ``CI`` is set.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import trio

from jambonz_trio import Call, CallConfig, CloseInfo, ServerConfig, VerbHook, serve_jambonz
from jambonz_trio.messages import Disconnected
from jambonz_trio.verbs import Say

from .helpers import node_with, run_node


async def test_node_ws_client_talks_to_the_server(nursery: trio.Nursery) -> None:
    node = node_with("ws")
    ended: dict[str, CloseInfo | None] = {}
    dropped: dict[str, int | None] = {}
    settled = trio.Event()  # two calls ended, one dropped

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text=f"hello {call.call_sid}")])
        async for event in call:
            if isinstance(event, VerbHook):
                data = event.data
                await call.ack(event, [Say(text=f"got {data['marker']} {len(data['blob'])}")])
                if event.hook == "/close":
                    await call.aclose(1000, "bye")
            elif isinstance(event, Disconnected):
                dropped[str(call.call_sid)] = event.code  # jambonz would now reconnect
                if len(ended) == 2:
                    settled.set()
        ended[str(call.call_sid)] = call.close_info
        if len(ended) == 2 and dropped:
            settled.set()

    config = ServerConfig(max_inbound_bytes=30_000, call=CallConfig(ping_interval=0.2, ping_timeout=2.0))
    server = await nursery.start(partial(serve_jambonz, app, config=config))
    with trio.fail_after(30):
        seen: dict[str, Any] = await run_node(node, "ws_client.js", f"ws://127.0.0.1:{server.port}/")
        await settled.wait()

    basic = seen["basic"]
    assert basic["protocol"] == "ws.jambonz.org"
    assert basic["extensions"] == ""  # permessage-deflate offered, never accepted (S-10)
    assert basic["sessionAck"] == {
        "type": "ack",
        "msgid": "interop-basic-new",
        "data": [{"verb": "say", "text": "hello interop-basic"}],
    }
    assert basic["fragmentedAck"]["msgid"] == "h1"
    assert basic["fragmentedAck"]["data"] == [{"verb": "say", "text": "got fragmented 3000"}]
    assert basic["bigAck"]["msgid"] == "h2"  # the binary frame before it was skipped
    assert basic["bigAck"]["data"] == [{"verb": "say", "text": "got after-binary 20000"}]
    assert basic["pongs"] == ["p-123"]
    assert basic["pings"] >= 2  # our keepalive, answered by ws (else the call would be aborted)
    assert basic["closeAck"]["msgid"] == "h3"
    assert basic["closed"] == {"code": 1000, "reason": "bye"}
    info = ended["interop-basic"]
    assert info is not None and info.by == "app"

    assert seen["clientClose"]["closed"]["code"] == 1000
    info = ended["interop-client-close"]
    assert info is not None and info.by == "jambonz" and info.code == 1000

    assert seen["tooBig"]["closed"]["code"] == 1009
    assert dropped == {"interop-too-big": 1009}
