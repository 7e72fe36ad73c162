"""The parent-death signal: a child process that Linux kills when the process that started it
ends, even by SIGKILL, so that no worker outlives its launcher (elsewhere: nothing is arranged).
"""

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen`` run by process ``parent``: the child gets
    SIGKILL when ``parent`` ends, and exits at once if it has ended already."""

    def arrange() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    return arrange
