"""A Redis-backed cluster of jambonz-trio processes (``pip install 'jambonz-trio[redis]'``).

``async with open_cluster("redis://host:6379/0") as cluster`` gives a :class:`Cluster` handle:

* given to ``serve_jambonz(..., cluster=cluster)``, the server's live calls are listed in the
  cluster's directory (each member beats; a dead member's calls go within
  :attr:`ClusterConfig.expiry_bound`) and commands sent from other processes reach them;
* anywhere, also in a control process serving no calls: :meth:`Cluster.send_command` /
  :meth:`Cluster.call` (the :class:`~jambonz_trio.Call` command API, for a call held by any
  member), :meth:`Cluster.list_calls`, :meth:`Cluster.watch_calls`.

Nothing on a call's path waits for Redis; when Redis is down, local calls go on as in one
process, cluster operations raise :class:`ClusterUnavailable` at once, and the member
re-registers itself and its calls when Redis is back. ``python -m jambonz_trio calls --redis
URL`` prints the live calls as JSON lines.

Importing :mod:`jambonz_trio` never imports this module nor Redis code.
"""

from __future__ import annotations

try:
    import coredis as _coredis  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "jambonz_trio.cluster needs the redis extra: pip install 'jambonz-trio[redis]'"
    ) from exc

from .._public import fixup_module_metadata
from ._cluster import Cluster, RemoteCall, open_cluster
from ._errors import CallNotFound, ClusterError, ClusterUnavailable, OwnerGone
from ._model import *  # noqa: F403
from ._model import __all__ as _model_all
from ._redis import redact

__all__ = [
    "CallNotFound",
    "Cluster",
    "ClusterError",
    "ClusterUnavailable",
    "OwnerGone",
    "RemoteCall",
    "open_cluster",
    "redact",
    *_model_all,
]

fixup_module_metadata(__name__, globals())
