"""Typed command models, for :meth:`jambonz_trio.Call.send_command`.

Each produces the exact ``data`` shape feature-server 0.9.8's handler reads (for instance the
wrapped ``{"sip_request": {...}}`` and ``{"dtmf": {...}}`` forms). :class:`RawCommand` sends a
command of a newer server verbatim. ``Call`` also has a method per command.
"""

from ._protocol._outbound import *  # noqa: F403
from ._protocol._outbound import __all__ as _outbound_all

__all__ = [*_outbound_all]
