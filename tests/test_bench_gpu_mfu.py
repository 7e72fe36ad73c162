"""`benchmarks/bench_gpu_mfu.py --cpu-check`: the GPU benchmark's own path, run on CPU with a tiny
model. The script asserts its plumbing itself (one record per step, warm-up steps left out,
HFU / MFU equal to the recomputation factor); this runs it as a user would and reads its lines."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "bench_gpu_mfu.py"


def test_the_mfu_benchmark_leaves_out_warmup_and_counts_recomputation_apart():
    command = [sys.executable, str(SCRIPT), "--cpu-check", "--steps", "5", "--warmup", "2"]
    result = subprocess.run(
        [*command, "--micro-batches", "2"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("bench_gpu_mfu: {")]
    runs = [json.loads(line.split(": ", 1)[1]) for line in lines]
    assert [(r["micro_batch"], r["activation_checkpointing"]) for r in runs] == [
        (2, False),
        (2, True),
    ]
    for run in runs:
        assert run["steps_timed"] == 3 and run["warmup_steps_left_out"] == 2
        for key in ("step_time_s", "tflops_per_device", "mfu", "hfu"):
            assert run[key]["min"] <= run[key]["median"] <= run[key]["max"]
    plain, recomputed = runs
    assert plain["hfu_over_mfu"] == 1.0
    assert recomputed["hfu_over_mfu"] > 1.0
