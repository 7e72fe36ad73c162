"""The supervisor: starts worker processes, watches them, and stops them together.

Each worker runs in its own process group, so stopping a worker also stops the processes it
spawned. The first worker to fail, or a SIGINT/SIGTERM sent to the launcher, stops all of them:
the signal (SIGTERM on a failure) goes to every group, then SIGKILL after a grace period.
"""

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import IO

from neox_launch.worker import WorkerCommand

log = logging.getLogger(__name__)

DEFAULT_GRACE_PERIOD = 5.0
_POLL_INTERVAL = 0.05
_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Asked on every poll: a reason to stop all workers now (e.g. "the launcher went away"), or None.
StopCheck = Callable[[], str | None]
# What the workers read as stdin: inherited (None), subprocess.DEVNULL, or an open file.
Stdin = int | IO[bytes] | None


class WorkerStartError(RuntimeError):
    """A worker process could not be started (missing executable, no permission, ...)."""


@dataclass(frozen=True)
class _Worker:
    command: WorkerCommand
    process: subprocess.Popen[bytes]


class _SignalInbox:
    """Records the SIGINT/SIGTERM the launcher receives while installed."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Route the forwarded signals here; the previous handlers come back on exit.

        A signal the launcher was started with ignored (``nohup``, ``&``) stays ignored. Off the
        main thread Python cannot install handlers, so nothing is forwarded there.
        """
        if threading.current_thread() is not threading.main_thread():
            log.debug("not on the main thread: SIGINT/SIGTERM are not forwarded to workers")
            yield
            return
        previous = {signum: signal.getsignal(signum) for signum in _FORWARDED_SIGNALS}
        installed = [signum for signum, old in previous.items() if old is not signal.SIG_IGN]
        try:
            for signum in installed:
                signal.signal(signum, self._record)
            yield
        finally:
            for signum in installed:
                old = previous[signum]
                signal.signal(signum, signal.SIG_DFL if old is None else old)


def supervise(
    commands: Sequence[WorkerCommand],
    *,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    stdin: Stdin = None,
    stop_check: StopCheck | None = None,
) -> int:
    """Run ``commands`` as workers until they end; the launcher's exit code.

    0 when every worker succeeds; the first failing worker's code (128 + signal number when it
    was killed by a signal); 128 + signal number when the launcher got SIGINT/SIGTERM; 128 +
    SIGHUP when ``stop_check`` gave a reason to stop.
    """
    inbox = _SignalInbox()
    with inbox.installed():
        workers = _start_all(commands, grace_period, stdin)
        try:
            return _watch(workers, inbox, grace_period, stop_check)
        finally:
            _kill_running(workers)


def _start_all(
    commands: Sequence[WorkerCommand], grace_period: float, stdin: Stdin
) -> list[_Worker]:
    workers: list[_Worker] = []
    for command in commands:
        try:
            process = subprocess.Popen(
                command.argv, env=dict(command.env), stdin=stdin, start_new_session=True
            )
        except OSError as error:
            _stop(workers, signal.SIGTERM, grace_period, None)
            raise WorkerStartError(
                f"cannot start {command.name}: {command.argv[0]!r}: "
                f"{error.strerror or error}; check that the command exists and is executable"
            ) from error
        log.info("started %s (pid %d): %s", command.name, process.pid, shlex.join(command.argv))
        workers.append(_Worker(command, process))
    return workers


def _watch(
    workers: list[_Worker], inbox: _SignalInbox, grace_period: float, stop_check: StopCheck | None
) -> int:
    while True:
        if inbox.received:
            signum = inbox.received[0]
            log.warning("received %s; forwarding it to the workers", signal_name(signum))
            _stop(workers, signum, grace_period, inbox)
            return 128 + signum
        failed = _first_failure(workers)
        if failed is not None:
            log.error(
                "%s (pid %d) %s; stopping the others",
                failed.command.name,
                failed.process.pid,
                exit_description(failed.process.returncode),
            )
            _stop(workers, signal.SIGTERM, grace_period, inbox)
            return _exit_code(failed.process.returncode)
        if not _running(workers):
            return 0
        reason = stop_check() if stop_check is not None else None
        if reason is not None:
            log.warning("%s; stopping the workers", reason)
            _stop(workers, signal.SIGTERM, grace_period, inbox)
            return 128 + signal.SIGHUP
        time.sleep(_POLL_INTERVAL)


def _first_failure(workers: list[_Worker]) -> _Worker | None:
    for worker in workers:
        if worker.process.poll() not in (None, 0):
            return worker
    return None


def _running(workers: list[_Worker]) -> list[_Worker]:
    return [worker for worker in workers if worker.process.poll() is None]


def _stop(
    workers: list[_Worker], signum: int, grace_period: float, inbox: _SignalInbox | None
) -> None:
    """Send ``signum`` to every worker's group; SIGKILL the groups after the grace period.

    A further signal to the launcher while waiting cuts the grace period short.
    """
    _signal_groups(workers, signum)
    deadline = time.monotonic() + grace_period
    signals_seen = len(inbox.received) if inbox is not None else 0
    while _running(workers) and time.monotonic() < deadline:
        if inbox is not None and len(inbox.received) > signals_seen:
            log.warning("received another signal; killing the workers now")
            break
        time.sleep(_POLL_INTERVAL)
    left = _running(workers)
    if left:
        log.warning("killing what is still running: %s", _names(left))
    # Also reaches processes the workers spawned that outlived them.
    _signal_groups(workers, signal.SIGKILL)
    for worker in workers:
        worker.process.wait()


def _kill_running(workers: list[_Worker]) -> None:
    """Last resort when supervision ends early (an unexpected exception)."""
    left = _running(workers)
    if left:
        log.warning("killing %s", _names(left))
        _signal_groups(left, signal.SIGKILL)
        for worker in left:
            worker.process.wait()


def _signal_groups(workers: list[_Worker], signum: int) -> None:
    for worker in workers:
        sent = worker.command.interrupt_signal if signum == signal.SIGINT else signum
        # The group is gone once its leader and everything it spawned have exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.process.pid, sent)


def _names(workers: list[_Worker]) -> str:
    return ", ".join(worker.command.name for worker in workers)


def _exit_code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def exit_description(returncode: int) -> str:
    """``exited with code N`` or ``was killed by SIGNAME`` for a Popen return code."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    return f"was killed by {signal_name(-returncode)}"


def signal_name(signum: int) -> str:
    """SIGTERM, SIGINT, ... for a signal number."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
