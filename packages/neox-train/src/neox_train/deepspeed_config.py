"""The DeepSpeed JSON config, generated from the run config by one pure function.

Every value DeepSpeed relies on is written out, defaults included: nothing is left to DeepSpeed's
own defaults, and nothing is dropped because it equals a default (GPT-NeoX drops values equal to
its defaults, which silently turns `gradient_clipping: 1.0` into no clipping).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from neox_train.batch import BatchLayout
from neox_train.run_config import RunConfig

# DeepSpeed prints its own progress every `steps_per_print` steps; neox prints its own lines.
_NEVER = 2**31 - 1


def deepspeed_config(run: RunConfig, batch: BatchLayout) -> dict[str, Any]:
    fp16 = run.precision.fp16
    zero_config = run.parallel.zero_optimization
    zero = dataclasses.asdict(zero_config)
    del zero["cpu_offload"]  # GPT-NeoX's name for offload_optimizer: {device: cpu}
    if zero_config.cpu_offload and not zero_config.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    zero = {key: value for key, value in zero.items() if value is not None}
    return {
        "train_batch_size": batch.global_batch,
        "train_micro_batch_size_per_gpu": batch.micro_batch,
        "gradient_accumulation_steps": batch.grad_accum,
        "gradient_clipping": run.optimizer.gradient_clipping,
        "zero_optimization": zero,
        "fp16": {
            "enabled": run.precision.dtype == "fp16",
            "loss_scale": fp16.loss_scale,
            "loss_scale_window": fp16.loss_scale_window,
            "hysteresis": fp16.hysteresis,
            "min_loss_scale": fp16.min_loss_scale,
            "initial_scale_power": fp16.initial_scale_power,
        },
        # skip (and count) steps whose gradients are not finite, as fp16 and fp32 ZeRO do
        "bf16": {"enabled": run.precision.dtype == "bf16", "check_grad_overflow": True},
        "zero_allow_untested_optimizer": True,  # the optimizer is torch's AdamW, built by neox
        "steps_per_print": _NEVER,
        "wall_clock_breakdown": False,
    }
