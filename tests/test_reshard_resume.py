"""`neox convert reshard` of a training checkpoint carries its optimizer state: `neox train` on
the resharded step, at the new layout, continues with the losses of the run it came from."""

import yaml

from neox_model import read_layout

from conftest import neox, run_config, train_losses, write_yaml


def test_a_resharded_checkpoint_resumes_with_its_optimizer_state(corpus, tmp_path):
    straight = tmp_path / "tp2"
    values = run_config(
        corpus,
        straight,
        num_gpus=2,
        model_parallel_size=2,
        train_batch_size=8,
        train_micro_batch_size_per_gpu=4,
        train_iters=8,
        checkpoint_factor=5,
    )
    result = neox("train", write_yaml(tmp_path / "tp2.yml", values))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    resharded = tmp_path / "tp1"
    result = neox(
        "convert", "reshard", "--input_dir", straight / "global_step5", "--output_dir", resharded,
        "--model_parallel_size", 1, "--pipe_parallel_size", 1,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    step = resharded / "global_step5"
    saved = read_layout(step)
    assert saved is not None and saved.resharded and saved.layout.tensor == 2
    assert all((step / r.model_file).is_file() for r in saved.ranks)
    config = yaml.safe_load((step / "config.yml").read_text())
    assert config["finetune"] is False and config["model_parallel_size"] == 1

    one_process = write_yaml(tmp_path / "one.yml", {"num_gpus": 1})
    result = neox("train", step / "config.yml", one_process)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "resumed from" in result.stdout and "at step 5" in result.stdout
    before, after = train_losses(straight), train_losses(resharded)
    assert sorted(after) == [6, 7, 8]
    for step_number, loss in after.items():
        assert abs(loss - before[step_number]) <= 1e-5 * before[step_number], step_number
