"""Listening sockets of a server: trio's own, or ``SO_REUSEPORT`` ones shared by worker processes.

With ``SO_REUSEPORT`` (Linux 3.9+, the BSDs, macOS) several processes bind the same address and
port, each with its own listening socket, and the kernel spreads new connections over them (on
Linux by a hash of the connection's addresses and ports). Every socket of the group must set the
option before ``bind`` and belong to the same user.
"""

from __future__ import annotations

import errno
import socket
import ssl
from typing import Any

import trio

__all__ = ["open_listeners", "reserve_port"]


async def open_listeners(
    port: int, *, host: str | None, ssl_context: ssl.SSLContext | None, reuse_port: bool
) -> list[Any]:
    """The server's listeners: trio's defaults, or ``SO_REUSEPORT`` sockets when ``reuse_port``.

    Raises:
        OSError: the address cannot be bound (in use without ``SO_REUSEPORT`` on every socket of
            the port, or by another user), or ``SO_REUSEPORT`` does not exist on this system.
    """
    if not reuse_port:
        if ssl_context is not None:
            return list(await trio.open_ssl_over_tcp_listeners(port, ssl_context, host=host))
        return list(await trio.open_tcp_listeners(port, host=host))
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("SO_REUSEPORT is not available on this system")
    tcp = await _reuse_port_listeners(port, host)
    if ssl_context is None:
        return tcp
    return [trio.SSLListener(listener, ssl_context, https_compatible=False) for listener in tcp]


async def _reuse_port_listeners(port: int, host: str | None) -> list[trio.SocketListener]:
    infos = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    sockets = _bind_all(infos, port)  # as reserve_port binds them: the same addresses, one port
    if not sockets:
        raise OSError(errno.EAFNOSUPPORT, f"no address family of {host!r} is supported here")
    try:
        for sock in sockets:
            sock.listen(min(socket.SOMAXCONN, 0xFFFF))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]


async def reserve_port(host: str | None, port: int) -> list[socket.socket]:
    """Bound, *non-listening* ``SO_REUSEPORT`` sockets on every address the workers bind for
    ``host``/``port`` (as :func:`_reuse_port_listeners` binds them, with :func:`_bind_all`:
    ``host=None`` is ``0.0.0.0`` and ``::``), all on one port (``port=0``: one free on every address, read it
    with ``getsockname()``). They keep the port for the worker processes, which bind it with
    ``SO_REUSEPORT`` too; a socket that does not listen receives no connections. An address
    family this system lacks is skipped, as trio's ``open_tcp_listeners`` does.

    Raises:
        OSError: the port cannot be bound on one of the addresses (or on none).
    """
    infos = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    attempts = 20 if port == 0 else 1  # port 0: the first address's free port may be taken on another
    while True:
        try:
            sockets = _bind_all(infos, port)
            if not sockets:
                raise OSError(errno.EAFNOSUPPORT, f"no address family of {host!r} is supported here")
            return sockets
        except OSError as exc:
            attempts -= 1
            if exc.errno != errno.EADDRINUSE or attempts == 0:
                raise


def _bind_all(infos: list[Any], port: int) -> list[socket.socket]:
    """``SO_REUSEPORT`` sockets bound on every address of ``infos`` (``getaddrinfo``'s), all on
    one port (``port=0``: the one the first got), skipping an address family this system lacks,
    as trio's ``open_tcp_listeners`` does."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in infos:
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:
                    continue
                raise
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]  # port 0: the others take the one the first got
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
