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
Its ``redirect`` replaces the program the conversation is running: the operation in progress
raises :class:`~jambonz_trio.OperationInterrupted`, and the handler leaves the call to it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence

from jambonz_trio import Call, OperationInterrupted, open_conversation

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
        try:
            env = call.info.env_vars  # ivr.py's route and variables: GREETING, GATHER_TIMEOUT
            await convo.say(env[callback_ivr.GREETING])
            timeout = env[callback_ivr.GATHER_TIMEOUT]
            result = await convo.gather("Say something", input=["speech", "digits"], input_timeout=timeout)
            if result.transcript:  # caller input: capped and sanitised before it goes in a verb
                await convo.say(f"You said: {callback_ivr.speakable(result.transcript)}")
            elif result.digits:
                await convo.say(f"You pressed: {callback_ivr.speakable(result.digits, 40)}")
            await convo.hangup()
        except OperationInterrupted:
            await call.wait_closed()  # another task replaced the program: the call is its now


#: The same server, supervisor and command line as ``examples/ivr.py``, with this handler.
serve = functools.partial(callback_ivr.serve, handler=ivr)


def main(argv: Sequence[str] | None = None) -> None:
    callback_ivr.main(argv, serve=serve, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
