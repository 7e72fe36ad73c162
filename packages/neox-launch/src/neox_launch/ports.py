"""TCP ports for the workers' rendezvous."""

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it).

    The port is released before returning, so another process could take it before the workers
    bind it; that window is short and the same one torchrun accepts.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ValueError(
            f"cannot resolve master address {host!r} ({error.strerror}); "
            "pass an address of this machine"
        ) from error
    with socket.socket(family, kind, proto) as sock:
        try:
            sock.bind(address)
        except OSError as error:
            raise ValueError(
                f"cannot open a port on master address {host!r} ({error.strerror}); "
                "pass an address of this machine or an explicit master port"
            ) from error
        port: int = sock.getsockname()[1]
        return port
