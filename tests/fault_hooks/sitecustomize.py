"""Fault-injection hooks for the end-to-end fault tests, loaded by every Python process that
has this directory on its PYTHONPATH (the launcher passes its environment to the workers).
Each hook acts only when its variable is set, so the product itself is unchanged:

NEOX_FAULT_STEP_SECONDS   every training step sleeps this long (steps slower than any grace
                          period a launcher might use)
NEOX_FAULT_SLOW_FROM      the first step (counted from 1) that NEOX_FAULT_STEP_SECONDS slows;
                          1 unless set
NEOX_FAULT_WRITE_SECONDS  every atomic rename (`os.replace`, the last act of each metadata
                          write of a save) sleeps this long first, so that a save spans seconds
                          and a kill lands inside it
NEOX_FAULT_RAISE          RANK:user or RANK:bug: the first training step of that rank raises a
                          user error (a ConfigError) or a bug (a KeyError); the others go on
"""

import os
import time

_STEP = float(os.environ.get("NEOX_FAULT_STEP_SECONDS", "0") or 0)
_SLOW_FROM = int(os.environ.get("NEOX_FAULT_SLOW_FROM", "1") or 1)
_WRITE = float(os.environ.get("NEOX_FAULT_WRITE_SECONDS", "0") or 0)
_RAISE_RANK, _, _RAISE_KIND = os.environ.get("NEOX_FAULT_RAISE", "").partition(":")


def _raise_here():
    """The fault NEOX_FAULT_RAISE asks of this rank, if any."""
    if os.environ.get("RANK", "0") != _RAISE_RANK:
        return
    if _RAISE_KIND == "user":
        from neox_train import ConfigError

        raise ConfigError(f"a user error planted on rank {_RAISE_RANK}")
    raise KeyError(f"a bug planted on rank {_RAISE_RANK}")


if _WRITE:
    _replace = os.replace

    def _slow_replace(src, dst, *args, **kwargs):
        time.sleep(_WRITE)
        return _replace(src, dst, *args, **kwargs)

    os.replace = _slow_replace

if _STEP or _RAISE_RANK:
    import importlib.abc
    import importlib.util
    import sys

    class _SlowSteps(importlib.abc.MetaPathFinder):
        """Wraps neox_train.loop.trainer.train_step once the module is imported."""

        def find_spec(self, name, path=None, target=None):
            if name != "neox_train.loop.trainer":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            loader = spec.loader
            original_exec = loader.exec_module

            def exec_module(module):
                original_exec(module)
                step = module.train_step

                def slow_step(session, index, *args, **kwargs):  # index: the step - 1
                    _raise_here()
                    if index + 1 >= _SLOW_FROM:
                        time.sleep(_STEP)
                    return step(session, index, *args, **kwargs)

                module.train_step = slow_step

            loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _SlowSteps())
