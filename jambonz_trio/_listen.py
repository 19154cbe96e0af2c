"""Listening sockets of a server: trio's own, or ``SO_REUSEPORT`` ones shared by worker processes.

With ``SO_REUSEPORT`` (Linux 3.9+, the BSDs, macOS) several processes bind the same address and
port, each with its own listening socket, and the kernel spreads new connections over them (on
Linux by a hash of the connection's addresses and ports). Every socket of the group must set the
option before ``bind`` and belong to the same user.
"""

from __future__ import annotations

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
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _name, address in infos:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(min(socket.SOMAXCONN, 0xFFFF))
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


def reserve_port(host: str | None, port: int) -> socket.socket:
    """A bound, *non-listening* ``SO_REUSEPORT`` socket on ``host``/``port`` (``port=0``: a free
    one, read it with ``getsockname()``). It keeps the port for the worker processes, which bind
    it with ``SO_REUSEPORT`` too; a socket that does not listen receives no connections."""
    family = socket.AF_INET6 if host is not None and ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
    except BaseException:
        sock.close()
        raise
    return sock
