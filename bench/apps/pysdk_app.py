"""The benchmark's contract app written with the PyPI ``jambonz-python-sdk`` (asyncio, aiohttp).

    bench/.venv-peers/bin/python bench/apps/pysdk_app.py PORT

Same contract as the other apps, except that the gather has no nested ``say`` prompt: this
SDK's verb builder adds a ``"verb": "say"`` key inside a gather's nested ``say``, which jambonz
rejects. Serves ws://127.0.0.1:PORT/ivr with the SDK's defaults (``create_endpoint``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from jambonz_sdk.websocket import create_endpoint


async def handle_session(session: Any) -> None:
    async def on_gather(evt: dict[str, Any]) -> None:
        speech = evt.get("speech") or {}
        alts = speech.get("alternatives") or [{}]
        transcript = alts[0].get("transcript")
        if transcript:
            session.say(text=f"You said: {transcript}").hangup()
        elif evt.get("digits"):
            session.say(text=f"You pressed: {evt['digits']}").hangup()
        else:
            session.hangup()
        await session.reply()

    session.on("/gather", on_gather)
    session.say(text="Hello from jambonz").gather(
        input=["speech", "digits"], actionHook="/gather", timeout=10
    )
    await session.send()


async def main() -> None:
    port = int(sys.argv[1])
    make_service, runner = await create_endpoint(host="127.0.0.1", port=port)
    svc = make_service(path="/ivr")
    svc.on("session:new", handle_session)
    try:
        await asyncio.Future()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
