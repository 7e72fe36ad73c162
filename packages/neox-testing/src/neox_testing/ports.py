"""A free TCP port on the loopback address, for the rendezvous of the ranks a test starts."""

import socket


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the OS picks it, then it is released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
