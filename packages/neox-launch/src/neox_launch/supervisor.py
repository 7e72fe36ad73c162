"""The supervisor: starts worker processes, watches them, and stops them together.

Each worker runs in its own process group, so stopping a worker also stops the processes it
spawned, and dies with the supervisor (Linux parent-death signal), even one killed by SIGKILL.
A job stops in one of two ways:

- Preemption: one of the policy's signals reaches the supervisor (or a worker, signalled itself,
  exits 75, or ``stop_check`` says the launcher went away). The signal is passed on to every
  worker's group, and the workers get the grace period to save and exit before SIGKILL. The
  same or another signal more than a second after the first cuts the wait short.
- Failure: a worker exits non-zero. The others cannot go on without it: they get SIGTERM, and
  SIGKILL a few seconds later. A worker that exits ``PEER_LOST`` (its collective lost another
  rank) is a consequence, not the cause: the launcher waits a moment for the rank that failed
  first and names that one.
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

from neox_launch.parent_death import die_with_parent
from neox_launch.preemption import PEER_LOST, PREEMPTED, REPEAT_AFTER, PreemptionPolicy
from neox_launch.worker import WorkerCommand

log = logging.getLogger(__name__)

# After a failure the others are stopped, not saved: they get at most this long.
FAILURE_GRACE_PERIOD = 5.0
# How long a worker that lost its peer waits for that peer's own failure to be seen: the peer's
# exit closes the connection, so it is at most a moment behind.
PEER_LOST_WAIT = 3.0
_POLL_INTERVAL = 0.05

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


@dataclass(frozen=True)
class _Received:
    signum: int
    at: float  # time.monotonic()


class _SignalInbox:
    """Records the policy's signals the launcher receives while installed."""

    def __init__(self, signals: Sequence[int]) -> None:
        self.signals = tuple(signals)
        self.received: list[_Received] = []

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(_Received(signum, time.monotonic()))

    def repeat(self) -> _Received | None:
        """A signal that came ``REPEAT_AFTER`` seconds or more after the first: "stop now"."""
        if not self.received:
            return None
        first = self.received[0].at
        return next((r for r in self.received if r.at - first >= REPEAT_AFTER), None)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Route the signals here; the previous handlers come back on exit.

        A signal the launcher was started with ignored (``nohup``, ``&``) stays ignored. Off the
        main thread Python cannot install handlers, so nothing is caught there.
        """
        if threading.current_thread() is not threading.main_thread():
            log.debug("not on the main thread: signals are not passed on to the workers")
            yield
            return
        previous = {signum: signal.getsignal(signum) for signum in self.signals}
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
    policy: PreemptionPolicy | None = None,
    stdin: Stdin = None,
    stop_check: StopCheck | None = None,
) -> int:
    """Run ``commands`` as workers until they end; the launcher's exit code.

    0 when every worker succeeds; else the first failing worker's code (128 + signal number
    when it was killed by a signal), passing over workers that exited ``PEER_LOST`` for one
    that failed by itself. A preemption gives 75 when every worker exited 75 (0 when
    they all finished instead, unless a worker's 0 is no proof of that:
    ``WorkerCommand.zero_after_signal_is_success``); else 128 + the signal's number (SIGHUP
    for ``stop_check``).
    ``policy`` (default: ``PreemptionPolicy()``) names the signals and the grace period.
    """
    policy = policy or PreemptionPolicy()
    inbox = _SignalInbox(policy.signals)
    with inbox.installed():
        workers = _start_all(commands, stdin)
        try:
            return _watch(workers, inbox, policy, stop_check)
        finally:
            _kill_running(workers)


def _start_all(commands: Sequence[WorkerCommand], stdin: Stdin) -> list[_Worker]:
    workers: list[_Worker] = []
    for command in commands:
        try:
            process = subprocess.Popen(
                command.argv,
                env=dict(command.env),
                stdin=stdin,
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()),
            )
        except OSError as error:
            _stop(workers, FAILURE_GRACE_PERIOD)
            raise WorkerStartError(
                f"cannot start {command.name}: {command.argv[0]!r}: "
                f"{error.strerror or error}; check that the command exists and is executable"
            ) from error
        log.info("started %s (pid %d): %s", command.name, process.pid, shlex.join(command.argv))
        workers.append(_Worker(command, process))
    return workers


def _watch(
    workers: list[_Worker],
    inbox: _SignalInbox,
    policy: PreemptionPolicy,
    stop_check: StopCheck | None,
) -> int:
    while True:
        if inbox.received:
            signum = inbox.received[0].signum
            log.warning("received %s: %s", signal_name(signum), _waiting(policy))
            return _preempt(workers, signum, policy, inbox, 128 + signum)
        failed = _first_failure(workers)
        if failed is not None and failed.process.returncode == PEER_LOST:
            failed = _cause(failed, workers)
        if failed is not None and failed.process.returncode == PREEMPTED:
            log.warning("%s saved and stopped (exit 75): %s", _named(failed), _waiting(policy))
            return _preempt(workers, signal.SIGTERM, policy, inbox, 128 + signal.SIGTERM)
        if failed is not None:
            log.error("%s %s; stopping the others", *_told(failed))
            _stop(workers, min(policy.grace_period, FAILURE_GRACE_PERIOD), inbox)
            return _exit_code(failed.process.returncode)
        if not _running(workers):
            return 0
        reason = stop_check() if stop_check is not None else None
        if reason is not None:
            log.warning("%s: %s", reason, _waiting(policy))
            return _preempt(workers, signal.SIGTERM, policy, inbox, 128 + signal.SIGHUP)
        time.sleep(_POLL_INTERVAL)


def _waiting(policy: PreemptionPolicy) -> str:
    return (
        f"the workers are saving and stopping; waiting up to {policy.grace_period:g} s before "
        "killing them (signal again, a second or more later, to kill them now)"
    )


def _preempt(
    workers: list[_Worker],
    signum: int,
    policy: PreemptionPolicy,
    inbox: _SignalInbox,
    interrupted: int,
) -> int:
    """Pass ``signum`` on to every worker and wait for them to save and exit: 75 when they all
    exited 75 (0 when they all finished, from workers whose 0 says so), else ``interrupted``."""
    _signal_groups(workers, signum, preempting=True)
    start = time.monotonic()
    deadline = start + policy.grace_period
    failed: _Worker | None = None
    while _running(workers) and time.monotonic() < deadline:
        if failed is None and (failed := _failed_while_stopping(workers)) is not None:
            log.error("%s %s while stopping; killing the others soon", *_told(failed))
            deadline = min(deadline, time.monotonic() + FAILURE_GRACE_PERIOD)
        repeat = inbox.repeat()
        if repeat is not None:
            log.warning("received %s again: killing the workers now", signal_name(repeat.signum))
            break
        time.sleep(_POLL_INTERVAL)
    left = _running(workers)
    if left:
        log.warning(
            "killing %s: still running %.0f s after %s",
            _names(left),
            time.monotonic() - start,
            signal_name(signum),
        )
    _kill(workers)
    codes = {worker.process.returncode for worker in workers}
    if codes <= {0, PREEMPTED} and PREEMPTED in codes:
        return PREEMPTED
    if codes == {0}:
        unsure = [w for w in workers if not w.command.zero_after_signal_is_success]
        if not unsure:
            return 0  # every worker finished before it could be stopped
        log.warning(
            "%s exited 0 after %s, which it also reports for ranks the signal stopped: "
            "whether they saved is unknown; exiting %d",
            _names(unsure),
            signal_name(signum),
            interrupted,
        )
    return interrupted


def _first_failure(workers: list[_Worker]) -> _Worker | None:
    for worker in workers:
        if worker.process.poll() not in (None, 0):
            return worker
    return None


def _cause(lost: _Worker, workers: list[_Worker]) -> _Worker:
    """The worker whose own failure made ``lost`` lose its peer: one that exited non-zero and not
    ``PEER_LOST`` within ``PEER_LOST_WAIT`` seconds, else ``lost`` itself."""
    deadline = time.monotonic() + PEER_LOST_WAIT
    while True:
        codes = [(worker, worker.process.poll()) for worker in workers]
        cause = next((w for w, code in codes if code not in (None, 0, PEER_LOST)), None)
        if cause is not None:
            log.info("%s %s: it lost its peer", *_told(lost))
            return cause
        if all(code is not None for _, code in codes) or time.monotonic() >= deadline:
            return lost
        time.sleep(_POLL_INTERVAL)


def _failed_while_stopping(workers: list[_Worker]) -> _Worker | None:
    """A worker that exited with an error code (not 75, and not killed by the signal)."""
    for worker in workers:
        code = worker.process.poll()
        if code is not None and code > 0 and code != PREEMPTED:
            return worker
    return None


def _running(workers: list[_Worker]) -> list[_Worker]:
    return [worker for worker in workers if worker.process.poll() is None]


def _stop(workers: list[_Worker], grace_period: float, inbox: _SignalInbox | None = None) -> None:
    """SIGTERM every worker's group; SIGKILL the groups after the grace period, or at once when
    the launcher receives a signal meanwhile."""
    _signal_groups(workers, signal.SIGTERM)
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
    _kill(workers)


def _kill(workers: list[_Worker]) -> None:
    """SIGKILL every group (also reaching processes the workers spawned that outlived them)."""
    _signal_groups(workers, signal.SIGKILL)
    for worker in workers:
        worker.process.wait()


def _kill_running(workers: list[_Worker]) -> None:
    """Last resort when supervision ends early (an unexpected exception)."""
    left = _running(workers)
    if left:
        log.warning("killing %s", _names(left))
        _kill(left)


def _signal_groups(workers: list[_Worker], signum: int, *, preempting: bool = False) -> None:
    for worker in workers:
        sent = worker.command.signal_for(signum, preempting=preempting)
        # The group is gone once its leader and everything it spawned have exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.process.pid, sent)


def _names(workers: list[_Worker]) -> str:
    return ", ".join(worker.command.name for worker in workers)


def _named(worker: _Worker) -> str:
    return f"{worker.command.name} (pid {worker.process.pid})"


def _told(worker: _Worker) -> tuple[str, str]:
    """The worker and how it ended, for a log line."""
    return _named(worker), exit_description(worker.process.returncode)


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
