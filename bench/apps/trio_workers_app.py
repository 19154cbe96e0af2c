"""The benchmark's contract app (bench/apps/trio_app.py's handler) on 2 worker processes.

    python bench/apps/trio_workers_app.py PORT [WORKERS]

``jambonz_trio.workers.run_workers``: each worker a ``serve_jambonz(..., reuse_port=True)`` on
the same port, the kernel spreading the connections over them. The benchmark counts the CPU of
the supervisor and every worker.
"""

from __future__ import annotations

import sys
from typing import Any

from trio_app import ivr

from jambonz_trio import Route, ServerConfig, serve_jambonz
from jambonz_trio.workers import run_workers


async def serve(*, host: str, port: int, reuse_port: bool, task_status: Any) -> None:
    """One worker: the contract app on the shared port."""
    await serve_jambonz(
        Route(path="/ivr", handler=ivr),
        host=host,
        port=port,
        reuse_port=reuse_port,
        config=ServerConfig(max_connections=12_000),
        task_status=task_status,
    )


def main() -> None:
    port = int(sys.argv[1])
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    run_workers(workers, serve, host="127.0.0.1", port=port, grace=2.0)


if __name__ == "__main__":
    main()
