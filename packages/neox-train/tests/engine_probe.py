"""One rank of `test_deepspeed_keys.py`: for each config set given as a JSON list of lists of
files, build neox's DeepSpeed engine (vocabulary 512) and print, as one JSON line, what the
engine made of the DeepSpeed keys: the dtype it reduces gradients in, its optimizer wrapper,
whether a resume takes the fp32 partitions, and whether DeepSpeed's comms logger is on."""

import json
import os
import sys

from neox_train.config.run_config import load_run_config
from neox_train.engine.build import build_engine
from neox_train.loop.trainer import schedule_for
from neox_train.parallel.distributed import DistEnv, init_distributed
from neox_train.parallel.topology import build_parallel, parallel_dims

VOCAB = 512


def describe(files, env, device):
    run = load_run_config(files).run
    batch = run.batch(env.world_size)
    parallel = build_parallel(parallel_dims(run, env.world_size))
    engine = build_engine(
        run, run.model.with_vocab(VOCAB), parallel, batch, schedule_for(run), device
    )
    return {
        "communication_data_type": str(engine.communication_data_type),
        "optimizer": type(engine.optimizer).__name__,
        "load_from_fp32_weights": engine.zero_load_from_fp32_weights(),
        "comms_logger": engine._config.comms_config.comms_logger_enabled,
    }


def main():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    env = DistEnv.from_environ(os.environ)
    device = init_distributed(env)
    for files in json.loads(sys.argv[1]):
        print(json.dumps({"files": files, **describe(files, env, device)}), flush=True)


if __name__ == "__main__":
    main()
