"""The PMI-1 link Hydra (MPICH, MVAPICH2, Intel MPI) gives each rank it starts (``PMI_FD``).

Hydra cleans up a job when one of its MPI ranks aborts, but a rank that never spoke PMI and
exits with an error just ends, leaving the others running. So the rendezvous shim joins over
this link: ``init`` at start, ``finalize`` when the command succeeds, ``abort`` with the
command's exit code when it fails, which makes Hydra stop the other ranks and exit with that
code. Wire format: one ``cmd=NAME key=value ...`` line per message.
"""

import logging
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

FD_VARIABLE = "PMI_FD"
_TIMEOUT = 60.0


class PmiLink:
    """One rank's PMI-1 connection to its Hydra proxy."""

    def __init__(self, fd: int) -> None:
        self._socket = socket.socket(fileno=fd)
        self._socket.settimeout(_TIMEOUT)
        self._stream = self._socket.makefile("rw", encoding="ascii", newline="\n")

    @classmethod
    def open(cls, environ: Mapping[str, str]) -> "PmiLink | None":
        """The link named by ``PMI_FD``, initialised; None when there is none or it fails."""
        value = environ.get(FD_VARIABLE, "")
        if not value.isdigit():
            return None
        try:
            link = cls(int(value))
            reply = link._ask("cmd=init pmi_version=1 pmi_subversion=1")
        except OSError as error:
            log.warning(
                "no PMI link on fd %s (%s); a failing rank won't stop the job", value, error
            )
            return None
        if "rc=0" not in reply.split():
            log.warning("PMI init refused (%s); a failing rank will not stop the job", reply)
            return None
        return link

    def _ask(self, line: str) -> str:
        self._send(line)
        return self._stream.readline().strip()

    def _send(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()

    def finalize(self) -> None:
        """Tell Hydra this rank ended normally."""
        try:
            self._ask("cmd=finalize")
        except OSError as error:
            log.warning("PMI finalize failed: %s", error)

    def abort(self, exit_code: int) -> None:
        """Ask Hydra to stop every rank and end the job with ``exit_code``."""
        try:
            self._send(f"cmd=abort exitcode={exit_code}")
        except OSError as error:
            log.warning("PMI abort failed: %s", error)


def without_link(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the link's variable, for the command (the shim owns the link)."""
    return {name: value for name, value in environ.items() if name != FD_VARIABLE}
