"""Typed verb models: build the verb lists that acks and ``redirect`` commands carry.

Every verb feature-server 0.9.8 accepts, with its nested option objects. Python names are
snake_case; the wire names are exactly jambonz's (``actionHook``, ``finishOnKey``...). Options
left unset are omitted from the wire. :class:`RawVerb` sends a dict verbatim (a verb of a newer
jambonz).

Example::

    from jambonz_trio.verbs import Gather, Hangup, Say

    verbs = [Say(text="Hello"), Gather(input=["speech", "digits"], action_hook="/gather"), Hangup()]
"""

from ._protocol._verbs import *  # noqa: F403
from ._protocol._verbs import __all__ as _verbs_all
from ._protocol._verbs_base import Hook, HookSpec, RawVerb, Verb, structure_verbs, unstructure_verbs
from ._public import fixup_module_metadata

__all__ = [
    "Hook",
    "HookSpec",
    "RawVerb",
    "Verb",
    "structure_verbs",
    "unstructure_verbs",
    *_verbs_all,
]

fixup_module_metadata(__name__, globals())
