"""Whether a TCP port is free to listen on: asked before a server prints that it is listening."""

from __future__ import annotations

import errno
import socket


def listen_error(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, or None when it can.

    Bound the way uvicorn binds (``SO_REUSEADDR``), so a port that only has connections in
    TIME_WAIT from a previous run counts as free, as it is for the server.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"{host} is not an address this machine can listen on ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (another service, or an earlier run still going)"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None
