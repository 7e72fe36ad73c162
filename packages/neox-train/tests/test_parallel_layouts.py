"""The parity matrix: one model, seed and global batch trained in every parallel layout gives
the same losses as one process (fp32, relative difference <= 1e-5 over 5 steps), and its
checkpoint rebuilds the same model whatever the layout it was saved in."""

import pytest
import torch

from neox_model import load_model
from neox_testing import selected_params, side_by_side

from conftest import losses, run_workers, tiny_config, write_config

GLOBAL_BATCH = 8
LAYOUTS = {
    # name: (processes, overrides)
    "dp2-zero0": (2, dict(zero_optimization={"stage": 0})),
    "dp2-zero1": (2, dict(zero_optimization={"stage": 1})),
    "dp2-zero2": (2, dict(zero_optimization={"stage": 2})),
    "dp2-zero3": (2, dict(zero_optimization={"stage": 3})),
    "tp2": (2, dict(model_parallel_size=2)),
    "pp2": (2, dict(pipe_parallel_size=2)),
    "tp2-pp2": (4, dict(model_parallel_size=2, pipe_parallel_size=2)),
    "tp2-sp": (2, dict(model_parallel_size=2, sequence_parallel=True)),
    "tp2-pp2-sp": (4, dict(model_parallel_size=2, pipe_parallel_size=2, sequence_parallel=True)),
    "dp2-tp2-sp-zero2": (
        4,
        dict(model_parallel_size=2, sequence_parallel=True, zero_optimization={"stage": 2}),
    ),
    "dp2-pp2-zero1": (4, dict(pipe_parallel_size=2, zero_optimization={"stage": 1})),
}


def run_layout(data_dir, root, name, processes, overrides):
    save = root / name
    values = tiny_config(
        data_dir,
        save,
        train_batch_size=GLOBAL_BATCH,
        train_micro_batch_size_per_gpu=2,
        **overrides,
    )
    run_workers([write_config(root / f"{name}.yml", values)], processes)
    return save


def final_logits(save):
    """The saved model, rebuilt whole from the checkpoint's files, on a fixed batch."""
    _, _, model = load_model(save)
    ids = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(ids)


@pytest.fixture(scope="module")
def single(data_dir, tmp_path_factory):
    save = run_layout(data_dir, tmp_path_factory.mktemp("single"), "single", 1, {})
    return losses(save), final_logits(save)


@pytest.fixture(scope="module")
def layout_runs(data_dir, tmp_path_factory, request):
    """Each layout this session tests trained, two runs at a time (`side_by_side`): name -> the
    future of its run directory."""
    root = tmp_path_factory.mktemp("layouts")
    names = selected_params(request, test_layout_gives_the_single_process_losses, "name")
    return side_by_side(
        {name: (run_layout, data_dir, root, name, *LAYOUTS[name]) for name in names}
    )


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_gives_the_single_process_losses(single, layout_runs, name):
    _, overrides = LAYOUTS[name]
    save = layout_runs[name].result()
    trained, (single_losses, single_logits) = losses(save), single
    assert sorted(trained) == sorted(single_losses) == [1, 2, 3, 4, 5]
    for step, loss in single_losses.items():
        assert abs(trained[step] - loss) <= 1e-5 * abs(loss), (name, step, loss, trained[step])
    files = {p.name for p in (save / "global_step5").iterdir()}
    if "pipe_parallel_size" in overrides:  # really a pipeline: one file per layer
        assert "layer_01-model_00-model_states.pt" in files, files
    if "model_parallel_size" in overrides:  # really tensor parallel: a shard per rank
        assert any("model_01" in f or f.startswith("mp_rank_01") for f in files), files
    # the checkpoint, whatever its layout, rebuilds the model the single process trained
    diff = (final_logits(save) - single_logits).abs().max() / single_logits.abs().max()
    assert diff.item() <= 1e-4
