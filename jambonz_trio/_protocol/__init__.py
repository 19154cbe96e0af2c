"""The sans-io core of jambonz-trio: models, codec and the per-call state machine.

Nothing in this package imports trio (a test checks it), does I/O or reads a clock. This
package exports what its modules export (each module's ``__all__``); the public faces are
:mod:`jambonz_trio.messages`, :mod:`jambonz_trio.commands`, :mod:`jambonz_trio.verbs` and
:mod:`jambonz_trio.lowlevel`.
"""

from ._calldata import *  # noqa: F403
from ._calldata import __all__ as _calldata_all
from ._envvars import *  # noqa: F403
from ._envvars import __all__ as _envvars_all
from ._json import *  # noqa: F403
from ._json import __all__ as _json_all
from ._messages import *  # noqa: F403
from ._messages import __all__ as _messages_all
from ._outbound import *  # noqa: F403
from ._outbound import COMMAND_TYPES, Ack
from ._outbound import __all__ as _outbound_all
from ._state import *  # noqa: F403
from ._state import __all__ as _state_all
from ._verbs_base import *  # noqa: F403
from ._verbs_base import __all__ as _verbs_base_all

__all__ = [
    "COMMAND_TYPES",
    "Ack",
    *_calldata_all,
    *_envvars_all,
    *_json_all,
    *_messages_all,
    *_outbound_all,
    *_state_all,
    *_verbs_base_all,
]
