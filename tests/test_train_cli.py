"""`neox train` through the launcher: distributed equivalence, bad configs, export parity."""

import pytest
import torch
from transformers import GPTNeoXForCausalLM

from neox_model import load_model

from conftest import neox, run_config, train_losses, write_yaml


@pytest.fixture(scope="module")
def two_runs(corpus, tmp_path_factory):
    """The same global batch (8) trained by 1 worker (2 x 4 accumulation) and by 2 workers."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for workers, accumulation in ((1, 2), (2, 1)):
        save = root / f"workers{workers}"
        config = write_yaml(
            root / f"w{workers}.yml",
            run_config(
                corpus,
                save,
                num_gpus=workers,
                train_micro_batch_size_per_gpu=4,
                gradient_accumulation_steps=accumulation,
            ),
        )
        result = neox("train", config)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        runs[workers] = (save, result.stdout)
    return runs


def test_two_zero1_workers_give_the_losses_of_one(two_runs):
    one, two = train_losses(two_runs[1][0]), train_losses(two_runs[2][0])
    assert sorted(one) == sorted(two) == [1, 2, 3, 4, 5]
    for step, loss in one.items():
        assert abs(loss - two[step]) <= 1e-5 * abs(loss), (step, loss, two[step])
    assert "starting 2 worker(s)" in two_runs[2][1]


def test_the_export_computes_the_same_logits_and_continuation(two_runs, tmp_path):
    save = two_runs[2][0]
    result = neox("convert", "to-hf", "--input_dir", save, "--output_dir", tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    hf = GPTNeoXForCausalLM.from_pretrained(tmp_path / "hf").eval()
    _, _, ours = load_model(save)
    ids = torch.randint(0, 512, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max().item() <= 1e-4
        prompt = ids[:1, :10]
        theirs = hf.generate(
            prompt, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0
        )
        mine = prompt
        for _ in range(12):
            mine = torch.cat([mine, ours(mine)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert theirs.tolist() == mine.tolist()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"num_attention_head": 4},
            "unknown key 'num_attention_head'; did you mean 'num_attention_heads'?",
        ),
        ({"hidden_size": "wide"}, "hidden_size must be an integer, got 'wide'"),
        (
            {"num_gpus": 3, "train_micro_batch_size_per_gpu": 2},
            "train_batch_size (8) is not divisible by 6",
        ),
        ({"data_path": "/nonexistent/corpus"}, "/nonexistent/corpus.bin not found"),
        (
            {"vocab_file": "/nonexistent/tokenizer.json"},
            "vocab_file '/nonexistent/tokenizer.json' not found",
        ),
        (
            {"num_gpus": 3, "model_parallel_size": 2, "train_micro_batch_size_per_gpu": 2},
            "world size 3 is not divisible by pipe_parallel_size (1) x model_parallel_size (2) = 2",
        ),
    ],
)
def test_a_bad_config_is_one_line_a_nonzero_exit_and_nothing_written(
    corpus, tmp_path, change, message
):
    values = run_config(corpus, tmp_path / "save", train_batch_size=8)
    values.update(change)
    if "train_micro_batch_size_per_gpu" in change:
        values.pop("train_batch_size")
        values["train_batch_size"] = 8
    config = write_yaml(tmp_path / "bad.yml", values)
    result = neox("train", config)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "save").exists()


def test_sbatch_writes_a_batch_script_for_the_run(corpus, tmp_path):
    config = write_yaml(
        tmp_path / "run.yml",
        run_config(
            corpus,
            tmp_path / "save",
            num_gpus=2,
            train_micro_batch_size_per_gpu=2,
            launcher="slurm",
            partition="debug",
        ),
    )
    result = neox("train", config, "--sbatch", tmp_path / "job.sh")
    assert result.returncode == 0, result.stderr
    script = (tmp_path / "job.sh").read_text()
    assert script.startswith("#!")
    assert "#SBATCH --nodes=1" in script and "#SBATCH --ntasks-per-node=2" in script
    assert "#SBATCH --partition=debug" in script
    assert "srun" in script and f"neox_train train {config}" in script
    assert not (tmp_path / "save").exists()  # nothing started
