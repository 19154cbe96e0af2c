from __future__ import annotations

import trio

from jambonz_trio import Call, VerbHook, serve_jambonz
from jambonz_trio.verbs import Gather, Hangup, Say

from .helpers import SESSION_DATA, msg, raw_ws, recv


async def test_session_new_then_hook(nursery: trio.Nursery) -> None:
    seen: list[str] = []

    async def app(call: Call) -> None:
        await call.ack(call.session, [Say(text="hi"), Gather(input=["speech"], action_hook="/g")])
        async for event in call:
            if isinstance(event, VerbHook):
                seen.append(event.hook or "")
                await call.ack(event, [Hangup()])

    server = await nursery.start(serve_jambonz, app)
    async with raw_ws(server) as ws:
        await ws.send_message(msg("session:new", "m1", SESSION_DATA, call_sid="sid-1"))
        ack = await recv(ws)
        assert ack == {
            "type": "ack",
            "msgid": "m1",
            "data": [
                {"verb": "say", "text": "hi"},
                {"verb": "gather", "input": ["speech"], "actionHook": "/g"},
            ],
        }
        assert server.calls.get("sid-1") is not None
        await ws.send_message(msg("verb:hook", "m2", {"reason": "timeout"}, hook="/g", call_sid="sid-1"))
        ack2 = await recv(ws)
        assert ack2 == {"type": "ack", "msgid": "m2", "data": [{"verb": "hangup"}]}
    assert seen == ["/g"]
