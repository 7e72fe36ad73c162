"""Tied input and output embeddings under pipeline parallelism: the last stage runs the output
on its copy of the embedding weight, DeepSpeed keeps the copy equal to the first stage's (the
gradients summed over the two stages), and the run is the single process's run: losses and
gradient norms over 8 steps, the saved weights, resuming at the same and at another layout."""

import pytest
import torch

from neox_model import LAYER_FILE
from neox_model.weights import load_state_dict
from neox_train.monitoring.metrics import read_metrics

from conftest import losses, run_side_by_side, run_workers, step_only, tiny_config, write_config

TOLERANCE = 1e-5
ZERO0 = {"stage": 0}
# name: (processes, overrides); fp32 without ZeRO: neox's own gradient check and clipping
LAYOUTS = {
    "single": (1, dict(zero_optimization=ZERO0)),
    "pp2": (2, dict(pipe_parallel_size=2, zero_optimization=ZERO0)),
    # ZeRO-1 over two replicas: DeepSpeed's flat partitions hold the copy too
    "pp2-dp2-zero1": (4, dict(pipe_parallel_size=2, zero_optimization={"stage": 1})),
}


def config(data_dir, save, layout, **extra):
    _, overrides = LAYOUTS[layout]
    return tiny_config(
        data_dir,
        save,
        no_weight_tying=False,
        gradient_clipping=0.05,  # reached: a miscounted norm would change every step
        train_batch_size=8,
        train_micro_batch_size_per_gpu=2,
        train_iters=8,
        checkpoint_factor=5,
        **overrides,
        **extra,
    )


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """8 steps straight in each layout, saving at steps 5 and 8."""
    root = tmp_path_factory.mktemp("tied")
    runs = {layout: root / layout for layout in LAYOUTS}
    configs = {
        layout: write_config(root / f"{layout}.yml", config(data_dir, save, layout))
        for layout, save in runs.items()
    }
    run_side_by_side([([configs[layout]], LAYOUTS[layout][0]) for layout in runs])
    return runs


def metric(run_dir, key):
    return {r["step"]: r[key] for r in read_metrics(run_dir / "metrics.jsonl") if key in r}


@pytest.mark.parametrize("layout", ["pp2", "pp2-dp2-zero1"])
def test_a_tied_pipeline_trains_as_the_single_process(straight, layout):
    single, piped = losses(straight["single"]), losses(straight[layout])
    assert sorted(single) == sorted(piped) == list(range(1, 9))
    for step, loss in single.items():
        assert abs(piped[step] - loss) <= TOLERANCE * loss, (step, piped[step], loss)
    norms, piped_norms = (
        metric(straight["single"], "grad_norm"),
        metric(straight[layout], "grad_norm"),
    )
    assert min(norms.values()) > 0.05  # clipping was reached on every step
    for step, norm in norms.items():  # the tied weight's gradient counted once
        assert piped_norms[step] == pytest.approx(norm, rel=TOLERANCE), step
    assert single[8] < single[1]


def test_the_saved_pipeline_step_holds_the_model_once(straight):
    step = straight["pp2"] / "global_step5"
    layers = sorted({int(m[1]) for p in step.iterdir() if (m := LAYER_FILE.match(p.name))})
    num_layers = 2
    # the embedding (with the tied weight), the blocks, the final norm: no file for the copy
    assert layers == list(range(num_layers + 2))
    _, manifest, piped = load_state_dict(step)
    _, _, single = load_state_dict(straight["single"] / "global_step5")
    assert not manifest.config.no_weight_tying
    assert sorted(piped) == sorted(single) and "embed_out.weight" not in piped
    for name, tensor in single.items():
        torch.testing.assert_close(piped[name], tensor, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("source", "target"),
    [("pp2", "pp2"), ("pp2", "single"), ("single", "pp2"), ("pp2-dp2-zero1", "single")],
)
def test_a_tied_pipeline_resumes(data_dir, tmp_path, straight, source, target):
    """At the saved layout (DeepSpeed's own load, the copy broadcast from the first stage) and at
    another (neox's relayout: both stages' entries name the embedding)."""
    load = step_only(straight[source], tmp_path / "load")
    values = config(data_dir, tmp_path / "save", target, load=str(load))
    out = run_workers([write_config(tmp_path / "resume.yml", values)], LAYOUTS[target][0])
    assert "resumed from" in out and "at step 5" in out, out[-2000:]
    assert ("was saved at" in out) == (source != target)
    full, resumed = losses(straight[source]), losses(tmp_path / "save")
    assert sorted(resumed) == [6, 7, 8]
    for step, loss in resumed.items():
        assert abs(loss - full[step]) <= TOLERANCE * full[step], (step, loss, full[step])
