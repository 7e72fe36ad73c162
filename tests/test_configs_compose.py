"""The shipped configs compose as configs/README.md says, and `neox plan` reads them."""

from pathlib import Path

import pytest

from neox_train import load_run_config

from conftest import neox

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SETUPS = ("local_setup.yml", "slurm_local.yml", "text_generation.yml", "cpu_demo.yml")
# run files merged after a model file (cpu/llama_tiny.yml), as their comments say
OVERLAYS = sorted(
    str(p.relative_to(CONFIGS)) for p in (CONFIGS / "cpu" / "post-training").glob("*.yml")
)
ARCHITECTURES = sorted(
    str(p.relative_to(CONFIGS))
    for p in CONFIGS.rglob("*.yml")
    if p.name not in SETUPS and str(p.relative_to(CONFIGS)) not in OVERLAYS
)


def test_every_shipped_file_is_in_the_readme():
    readme = (CONFIGS / "README.md").read_text()
    for name in [*ARCHITECTURES, *SETUPS, *OVERLAYS]:
        assert f"`{name}`" in readme or f"`{Path(name).parent}/`" in readme, name


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_an_architecture_takes_paths_and_sampling_from_later_files(name):
    loaded = load_run_config(
        [CONFIGS / name, CONFIGS / "local_setup.yml", CONFIGS / "text_generation.yml"]
    )
    run = loaded.run
    assert run.checkpoint.save == "checkpoints"
    assert run.text_generation.text_gen_type == "unconditional"
    assert loaded.ignored == ()  # the shipped files use no ignored GPT-NeoX switch


@pytest.mark.parametrize("name", OVERLAYS)
def test_a_post_training_file_goes_after_the_tiny_model(name):
    run = load_run_config([CONFIGS / "cpu" / "llama_tiny.yml", CONFIGS / name]).run
    impl = Path(name).stem.removesuffix("_tiny").replace("sft", "normal")
    assert run.objective.train_impl == impl
    assert run.model.value_head == (run.objective.train_impl == "rm")


def test_a_later_file_overrides_and_the_override_is_reported(tmp_path):
    mine = tmp_path / "mine.yml"
    mine.write_text("train_micro_batch_size_per_gpu: 8\noptimizer: {params: {lr: 1.0e-4}}\n")
    loaded = load_run_config([CONFIGS / "pythia/410M.yml", mine])
    assert loaded.run.optimizer.optimizer.params.lr == 1e-4
    assert loaded.run.optimizer.optimizer.params.betas == (0.9, 0.95)  # merged, not replaced
    assert {o.key for o in loaded.overrides} == {
        "train_micro_batch_size_per_gpu",
        "optimizer.params.lr",
    }


def test_neox_plan_runs_from_the_neox_command():
    result = neox("plan", CONFIGS / "cpu" / "neox_tiny.yml", "--vocab-size", 512)
    assert result.returncode == 0, result.stderr
    assert "model: 165,632 parameters" in result.stdout
    assert "2 GPUs = 1 pipeline stage(s) x 1 tensor-parallel x 2 data-parallel" in result.stdout
