"""Training runs with other precisions and optimizers."""

import shutil

import pytest
import torch

from conftest import (
    as_if_killed_after,
    losses,
    neox_train,
    run_side_by_side,
    run_workers,
    start_workers,
    tiny_config,
    train_without,
    write_config,
)


@pytest.mark.parametrize("stage", [0, 1])
def test_bf16_two_workers_track_one_within_a_stated_tolerance(data_dir, tmp_path, stage):
    """bf16 rounds differently with a different reduction order: 2% here, where fp32 gives 1e-5.
    Stage 0 is DeepSpeed's bf16 optimizer (one replica: no all-reduce), stage 1 ZeRO's."""
    configs = {}
    for processes in (1, 2):
        values = tiny_config(
            data_dir,
            tmp_path / f"bf16-{processes}",
            train_batch_size=8,
            train_micro_batch_size_per_gpu=2,
            bf16={"enabled": True},
            zero_optimization={"stage": stage},
        )
        configs[processes] = write_config(tmp_path / f"{processes}.yml", values)
    run_side_by_side([([config], processes) for processes, config in configs.items()])
    runs = {processes: losses(tmp_path / f"bf16-{processes}") for processes in configs}
    for step, loss in runs[1].items():
        assert abs(runs[2][step] - loss) <= 2e-2 * loss, (step, loss, runs[2][step])
    assert runs[1][5] < runs[1][1]


def test_sgd_and_lion_train(data_dir, tmp_path):
    kinds = {"sgd": 0.5, "lion": 2e-3}
    configs = [
        write_config(
            tmp_path / f"{kind}.yml",
            tiny_config(
                data_dir,
                tmp_path / kind,
                train_micro_batch_size_per_gpu=4,
                train_iters=8,
                optimizer={"type": kind, "params": {"lr": lr, "momentum": 0.9}},
            ),
        )
        for kind, lr in kinds.items()
    ]
    run_side_by_side([([config], 1) for config in configs])
    for kind in kinds:
        trained = losses(tmp_path / kind)
        assert trained[8] < trained[1] - 0.2, (kind, trained)


def test_cpu_adam_with_the_optimizer_offloaded_matches_adam(data_dir, tmp_path):
    zeros = {
        "adam": {"stage": 2},
        "cpu_adam": {"stage": 2, "offload_optimizer": {"device": "cpu"}},
    }
    configs = [
        write_config(
            tmp_path / f"{kind}.yml",
            tiny_config(
                data_dir,
                tmp_path / kind,
                train_micro_batch_size_per_gpu=2,
                optimizer={"type": kind, "params": {"lr": 3e-3}},
                zero_optimization=zero,
            ),
        )
        for kind, zero in zeros.items()
    ]
    run_side_by_side([([config], 1) for config in configs])
    runs = {kind: losses(tmp_path / kind) for kind in zeros}
    for step, loss in runs["adam"].items():
        assert abs(runs["cpu_adam"][step] - loss) <= 1e-4 * loss, (step, runs)


def test_fp16_without_a_gpu_is_one_clear_error(data_dir, tmp_path):
    values = tiny_config(
        data_dir, tmp_path / "never", train_micro_batch_size_per_gpu=2, fp16={"enabled": True}
    )
    config = write_config(tmp_path / "fp16.yml", values)
    proc = neox_train("train", config)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "neox-train: error: fp16 training needs a GPU (its loss scaling runs on CUDA); "
        "use bf16 or fp32 here"
    ]
    assert not (tmp_path / "never").exists()


BNB = dict(use_bnb_optimizer=True, pos_emb="rotary", train_micro_batch_size_per_gpu=2)
BNB_LAYOUTS = {
    # name: (processes, overrides, the files that hold the optimizer state)
    "single": (1, {}, "mp_rank_00_model_states.pt"),
    "dp2-zero1": (2, {"zero_optimization": {"stage": 1}}, "zero_pp_rank_*_optim_states.pt"),
}


@pytest.mark.parametrize("name", sorted(BNB_LAYOUTS))
def test_bnb_8_bit_adam_saves_its_8_bit_state_and_resumes_exactly(data_dir, tmp_path, name):
    """use_bnb_optimizer: 6 steps straight = 3 steps, a checkpoint holding bitsandbytes' 8-bit
    moments (uint8 codes with per-block scales), a crash, a resume and 3 more steps, without ZeRO
    and with ZeRO-1's flat partitions; a resume at another layout is refused naming the
    optimizer (its 8-bit blocks cannot be split)."""
    processes, overrides, files = BNB_LAYOUTS[name]
    values = tiny_config(
        data_dir, tmp_path / "full", train_iters=6, checkpoint_factor=3, **BNB, **overrides
    )
    run_workers([write_config(tmp_path / "full.yml", values)], processes)
    full = losses(tmp_path / "full")
    assert full[6] < full[1]
    codes = eight_bit_states(sorted((tmp_path / "full" / "global_step3").glob(files)))
    assert codes and all(q["state2"].dtype == torch.uint8 and "absmax1" in q for q in codes)
    crashed, widened = tmp_path / "crashed", tmp_path / "widened"
    for run in (crashed, widened):
        shutil.copytree(tmp_path / "full", run)
        as_if_killed_after(run, 3, 6)
    wider = dict(
        values, save=str(widened), load=str(widened), model_parallel_size=2,
        zero_optimization={"stage": 1},
    )  # fmt: skip
    procs = start_workers([write_config(tmp_path / "wider.yml", wider)], 2)  # meanwhile
    resumed = dict(values, save=str(crashed), load=str(crashed))
    out = run_workers([write_config(tmp_path / "resume.yml", resumed)], processes)
    assert "at step 3" in out
    assert losses(crashed) == {step: full[step] for step in (4, 5, 6)}
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outputs[0][-2000:]
    assert "cannot carry the optimizer state of Adam8bit" in outputs[0]


def eight_bit_states(paths):
    """bitsandbytes' quantised states (those with uint8 codes) in DeepSpeed's checkpoint files:
    the optimizer of a model-states file, the base optimizer of a ZeRO partition file."""
    from neox_model.checkpoint import load_file

    found = []
    for path in paths:
        saved = load_file(path)
        optimizer = saved.get("optimizer") or saved["optimizer_state_dict"]["base_optimizer_state"]
        quantised = [s["__bnb_optimizer_quant_state__"] for s in optimizer["state"].values()]
        found += [q for q in quantised if q["state1"].dtype == torch.uint8]
    return found


def test_bnb_where_it_cannot_run_is_one_line_and_exit_2(data_dir, tmp_path):
    """With the optimizer offloaded (DeepSpeed's CPU Adam steps it), with a learned position
    embedding (GPT-NeoX's StableEmbedding) and without bitsandbytes: one line, exit 2, before
    training."""
    offload = {"stage": 2, "offload_optimizer": {"device": "cpu"}}
    offloaded = tiny_config(data_dir, tmp_path / "o", **BNB, zero_optimization=offload)
    proc = neox_train("check", write_config(tmp_path / "offloaded.yml", offloaded))
    assert proc.returncode == 2
    assert "use_bnb_optimizer with an offloaded optimizer" in proc.stderr
    learned = tiny_config(data_dir, tmp_path / "l", **{**BNB, "pos_emb": "learned"})
    proc = neox_train("check", write_config(tmp_path / "learned.yml", learned))
    assert proc.returncode == 2 and "bitsandbytes' StableEmbedding" in proc.stderr
    config = write_config(tmp_path / "bnb.yml", tiny_config(data_dir, tmp_path / "b", **BNB))
    proc = train_without(config, "bitsandbytes")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "neox-train: error: use_bnb_optimizer needs the 'bnb' extra: pip install 'neox-train[bnb]'"
    )
    assert "step 1/" not in proc.stdout
