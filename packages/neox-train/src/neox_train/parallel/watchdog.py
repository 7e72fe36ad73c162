"""A hung rank is not silent: when a collective times out (`distributed_timeout_minutes`), the
rank that waited says which ranks stopped answering.

Every rank keeps two records in the launcher's rendezvous store (the TCP store the process
group was formed through, served by rank 0): where it runs (host and pid) and, from a
background thread, a heartbeat every second with the last step it finished. A process that is
stopped, killed or wedged with the interpreter lock held stops beating; one that merely waits in
a collective goes on. When a collective times out, the waiting rank reads every record and
names the ranks whose heartbeat went quiet, else those behind in steps; if the store itself does
not answer, rank 0 (which serves it) is the one gone.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
from typing import Any

import torch.distributed as dist

from neox_model import LaunchEnv

log = logging.getLogger(__name__)

# A rank whose collective lost another rank exits this (76, EX_PROTOCOL; neox_launch.PEER_LOST):
# the launcher then names the rank that failed first, whose error is the cause.
PEER_LOST = os.EX_PROTOCOL
BEAT_SECONDS = 1.0
QUIET_SECONDS = 5.0  # a heartbeat older than this: the rank is not running
_TIMEOUT_WORDS = ("timed out", "timeout", "time out")
# What gloo and NCCL say when the rank at the other end of a collective has gone away.
_LOST_RANK_WORDS = (
    "connection reset by peer",
    "connection closed by peer",
    "broken pipe",
    "remote process exited",
)


class HungRank(RuntimeError):
    """A collective timed out; the message names the ranks that stopped answering."""


def is_timeout(err: BaseException) -> bool:
    return any(word in str(err).lower() for word in _TIMEOUT_WORDS)


def lost_rank(err: BaseException) -> str | None:
    """How a collective's error says another rank went away ("connection reset by peer"), or
    None: that rank's own error is the cause, not this one."""
    text = str(err).lower()
    return next((words for words in _LOST_RANK_WORDS if words in text), None)


class Heartbeat:
    """This rank's records in the rendezvous store (none in a world of one)."""

    def __init__(self, env: LaunchEnv, timeout_minutes: float) -> None:
        self.env, self.timeout_minutes = env, timeout_minutes
        self.step = 0
        self.lock = threading.Lock()
        self.store: Any = None
        if env.world_size == 1 or env.master_port is None:
            return
        self.store = dist.PrefixStore(
            "neox/",
            dist.TCPStore(
                env.master_addr,
                env.master_port,
                is_master=False,
                timeout=datetime.timedelta(seconds=30),
            ),
        )
        where = f"{socket.gethostname()} pid {os.getpid()}"
        self._set(f"where/{env.rank}", where)
        self._beat()
        threading.Thread(target=self._run, name="neox-heartbeat", daemon=True).start()

    def _set(self, key: str, value: str) -> None:
        with self.lock:
            self.store.set(key, value)

    def _beat(self) -> None:
        self._set(f"beat/{self.env.rank}", f"{time.time()} {self.step}")

    def _run(self) -> None:
        while True:
            time.sleep(BEAT_SECONDS)
            try:
                self._beat()
            except Exception:  # the store is gone (rank 0 ended): nothing left to report to
                return

    def finished(self, step: int) -> None:
        self.step = step

    def explain(self, err: BaseException) -> str:
        """One line on a timed-out collective: which ranks stopped answering."""
        me = self.env.rank
        waited = f"{self.timeout_minutes:g} min"
        head = f"rank {me} waited {waited} in a collective after step {self.step}"
        try:
            records = self._records()
        except Exception:
            return (
                f"{head}, and the rendezvous store served by rank 0 does not answer either: "
                "rank 0 is hung or dead"
            )
        now = time.time()
        quiet = {r: rec for r, rec in records.items() if now - rec[0] > QUIET_SECONDS}
        last = max(rec[1] for rec in records.values())
        behind = {r: rec for r, rec in records.items() if rec[1] < last}
        suspects = quiet or behind
        if not suspects:
            return (
                f"{head}; every rank is running and finished step {last}: the collective "
                f"itself is stuck (network?) ({' '.join(str(err).split())[:200]})"
            )

        def state(rank: int, beat: float) -> str:
            return f"no heartbeat for {now - beat:.0f} s" if rank in quiet else "still running"

        named = "; ".join(
            f"rank {r} ({rec[2]}) had finished step {rec[1]} at its last report, {state(r, rec[0])}"
            for r, rec in sorted(suspects.items())
        )
        what = "stopped answering (hung, stopped or dead)" if quiet else "fell behind"
        return f"{head}: {named}: {'it' if len(suspects) == 1 else 'they'} {what}"

    def _records(self) -> dict[int, tuple[float, int, str]]:
        """rank -> (time of its last heartbeat, last finished step, where it runs)."""
        with self.lock:
            self.store.set_timeout(datetime.timedelta(seconds=10))
            records = {}
            for rank in range(self.env.world_size):
                if not self.store.check([f"beat/{rank}"]):
                    records[rank] = (0.0, 0, "never started")
                    continue
                beat, step = self.store.get(f"beat/{rank}").decode().split()
                where = self.store.get(f"where/{rank}").decode()
                records[rank] = (float(beat), int(step), where)
        return records
