"""The GPUs on this machine, counted without importing torch."""

import logging
import os
import shutil
from collections.abc import Mapping

from neox_launch.program import query

log = logging.getLogger(__name__)


def count_local_gpus(environ: Mapping[str, str] | None = None) -> int:
    """How many GPUs a worker on this machine may use.

    ``CUDA_VISIBLE_DEVICES`` in ``environ`` (default: this process's) wins when set (empty → 0;
    otherwise the number of listed devices, stopping at the first negative one as CUDA does);
    else the GPUs ``nvidia-smi -L`` lists; else 0.
    """
    visible = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return _count_visible(visible)
    return _count_nvidia_smi()


def _count_visible(value: str) -> int:
    count = 0
    for item in value.split(","):
        item = item.strip()
        if not item or item.startswith("-"):
            break
        count += 1
    return count


def _count_nvidia_smi() -> int:
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return 0
    try:
        result = query([executable, "-L"])
    except OSError as error:
        log.warning("cannot run %s -L (%s); assuming no GPUs", executable, error)
        return 0
    if result.returncode != 0:
        log.warning(
            "%s -L failed with code %d; assuming no GPUs: %s",
            executable,
            result.returncode,
            result.stderr.strip() or result.stdout.strip(),
        )
        return 0
    # MIG devices are listed as indented lines under their GPU; count the GPUs only.
    return sum(1 for line in result.stdout.splitlines() if line.startswith("GPU "))
