"""The DeepSpeed JSON config, generated from the run config by one pure function.

Every value DeepSpeed relies on is written out, defaults included: nothing is left to DeepSpeed's
own defaults, and nothing is dropped because it equals a default (GPT-NeoX drops values equal to
its defaults, which silently turns `gradient_clipping: 1.0` into no clipping).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from neox_train.config.batch import BatchLayout
from neox_train.config.run_config import RunConfig
from neox_train.config.schema import ConfigError

# DeepSpeed prints its own progress every `steps_per_print` steps; neox prints its own lines.
_NEVER = 2**31 - 1


def zero_stage(run: RunConfig, data_parallel: int) -> int:
    """The ZeRO stage the engine runs with `data_parallel` replicas.

    ZeRO 1 and 2 over one replica partition nothing; in fp32 they only add a second fp32 copy of
    the weights and gradients and copy through it every step (on CPU a third of the step time),
    so such a run is stage 0, its gradients checked and clipped by `GradientGuard` as ZeRO would.
    In bf16/fp16 the ZeRO optimizer is what holds the fp32 master weights, and optimizer offload
    needs ZeRO: those keep the stage asked for.
    """
    zero = run.parallel.zero_optimization
    one_replica_fp32 = data_parallel == 1 and run.precision.dtype == "fp32"
    if zero.stage in (1, 2) and one_replica_fp32 and not zero.offloads_optimizer:
        return 0
    return zero.stage


def neox_checks_gradients(run: RunConfig, data_parallel: int) -> bool:
    """Whether neox's `GradientGuard`, not DeepSpeed, computes the gradient norm, clips and skips
    non-finite steps: fp32 without ZeRO, where DeepSpeed does no check and reports no norm."""
    return run.precision.dtype == "fp32" and zero_stage(run, data_parallel) == 0


def deepspeed_config(run: RunConfig, batch: BatchLayout) -> dict[str, Any]:
    """The DeepSpeed JSON of `run` at `batch`, with `deepspeed_extra_args` merged in (an entry
    that neox writes itself is a ConfigError)."""
    guarded = neox_checks_gradients(run, batch.data_parallel)
    precision = run.precision
    own = {
        "train_batch_size": batch.global_batch,
        "train_micro_batch_size_per_gpu": batch.micro_batch,
        "gradient_accumulation_steps": batch.grad_accum,
        # 0: neox's GradientGuard clips (fp32 without ZeRO)
        "gradient_clipping": 0.0 if guarded else run.optimizer.gradient_clipping,
        "zero_optimization": _zero(run, batch.data_parallel),
        "fp16": _fp16(run),
        # skip (and count) steps whose gradients are not finite, as fp16 and fp32 ZeRO do
        "bf16": {"enabled": precision.dtype == "bf16", "check_grad_overflow": True},
        "communication_data_type": precision.communication_dtype,
        "data_types": {"grad_accum_dtype": precision.data_types.grad_accum_dtype},
        # DeepSpeed's pipeline sends 1 / tp of a stage's (replicated) output from each tensor
        # rank; under sequence parallelism each rank's output is its own part: sent whole
        "pipeline": {
            "pipe_partitioned": not run.parallel.splits_sequence,
            "grad_partitioned": not run.parallel.splits_sequence,
        },
        "zero_allow_untested_optimizer": True,  # the optimizer is torch's AdamW, built by neox
        "steps_per_print": _NEVER,
        "wall_clock_breakdown": False,
    }
    return _with_extra(own, run.parallel.deepspeed_extra_args or {})


def _zero(run: RunConfig, data_parallel: int) -> dict[str, Any]:
    zero_config = run.parallel.zero_optimization
    zero = dataclasses.asdict(zero_config)
    zero["stage"] = zero_stage(run, data_parallel)
    del zero["cpu_offload"]  # GPT-NeoX's name for offload_optimizer: {device: cpu}
    if zero_config.cpu_offload and not zero_config.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {key: value for key, value in zero.items() if value is not None}


def _fp16(run: RunConfig) -> dict[str, Any]:
    fp16 = run.precision.fp16
    return {
        "enabled": run.precision.dtype == "fp16",
        "auto_cast": fp16.auto_cast,
        "loss_scale": fp16.loss_scale,
        "loss_scale_window": fp16.loss_scale_window,
        "hysteresis": fp16.hysteresis,
        "consecutive_hysteresis": fp16.consecutive_hysteresis,
        "min_loss_scale": fp16.min_loss_scale,
        "initial_scale_power": fp16.initial_scale_power,
    }


def _with_extra(own: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    clash = sorted(set(own) & set(extra))
    if clash:
        raise ConfigError(
            f"deepspeed_extra_args sets {', '.join(clash)}, which neox writes into the DeepSpeed "
            "config itself from the run config's keys: set those keys instead"
        )
    return {**own, **extra}
