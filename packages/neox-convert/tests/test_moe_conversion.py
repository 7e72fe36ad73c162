"""Mixtral and Qwen2-MoE both ways, against transformers' own classes built from configs: the
logits and greedy tokens, the training loss with its load-balancing term and every gradient,
bit-identical round trips, and the models neither side can express refused with the reason."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from test_import import LONG as IMPORT_LONG
from test_import import tp_worker

from neox_convert import ConversionError, ExportError, export_to_hf, import_from_hf
from neox_convert.moe_families import expert_interval, mixtral_to_hf, qwen2_moe_to_hf
from neox_model import IGNORE_INDEX, ParallelDims, load_model, read_manifest
from neox_testing import hf_model, spawn_ranks

from conftest import cached_greedy, greedy, hf_greedy, random_ids, save_hf

KINDS = ("mixtral", "qwen2_moe")
TO_HF = {"mixtral": mixtral_to_hf, "qwen2_moe": qwen2_moe_to_hf}
LONG = 40  # tokens: past Mixtral's window of 8


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {
        kind: (model, save_hf(model, root / kind)) for kind in KINDS for model in [hf_model(kind)]
    }


@pytest.fixture(scope="module")
def imported(hf_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for kind in KINDS:
        import_from_hf(hf_dirs[kind][1], root / kind)
    return root


@pytest.mark.parametrize("kind", KINDS)
def test_import_computes_the_hf_logits_and_continuation(hf_dirs, imported, kind):
    hf, _ = hf_dirs[kind]
    _, manifest, model = load_model(imported / kind)
    assert manifest.config.moe
    ids = random_ids(shape=(2, LONG))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert (ours[..., :384] - theirs).abs().max().item() <= 1e-5
    expected = hf_greedy(hf).tolist()
    assert greedy(model, vocab=384).tolist() == expected
    assert cached_greedy(model, vocab=384).tolist() == expected


@pytest.mark.parametrize("kind", KINDS)
def test_the_training_loss_and_every_gradient_equal_transformers(hf_dirs, imported, kind):
    """transformers adds router_aux_loss_coef x its load-balancing loss to the loss when asked
    for the router logits; neox's training loss adds moe_loss_coeff x the same loss."""
    hf, _ = hf_dirs[kind]
    _, manifest, model = load_model(imported / kind)
    assert manifest.config.moe_loss_coeff == 0.02
    ids = random_ids(shape=(2, LONG), seed=3)
    hf.train()
    try:
        out = hf(ids, labels=ids, output_router_logits=True)
        out.loss.backward()
    finally:
        hf.eval()
    # the same 40 tokens through the router; the last one has no next token to predict
    labels = torch.cat([ids[:, 1:], torch.full((2, 1), IGNORE_INDEX)], dim=1)
    ours = model.train()(ids, labels=labels)
    ours.backward()
    torch.testing.assert_close(model.moe_losses.load_balancing, out.aux_loss)
    torch.testing.assert_close(ours, out.loss)
    grads = TO_HF[kind]({n: p.grad for n, p in model.named_parameters()}, manifest.config)
    compared, stacked_seen = 0, 0
    for name, param in hf.named_parameters():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            stacked_seen += 1  # transformers' stacked experts, per expert in the files: below
            continue
        if kind == "mixtral":  # the router's name in memory and in the files
            name = name.replace(".mlp.gate.", ".block_sparse_moe.gate.")
        grad = param.grad
        torch.testing.assert_close(grads[name][: grad.shape[0]], grad, atol=1e-6, rtol=1e-4)
        compared += 1
    assert stacked_seen == 2 * manifest.config.moe_layers and compared > 10
    stacked = _hf_expert_grads(hf, kind)
    for name, grad in stacked.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)
    hf.zero_grad()


def _hf_expert_grads(hf, kind):
    """transformers' expert gradients under the files' per-expert names."""
    out = {}
    for i, layer in enumerate(hf.model.layers):
        experts = getattr(layer.mlp, "experts", None)
        if experts is None or not hasattr(experts, "gate_up_proj"):
            continue
        gate_up, down = experts.gate_up_proj.grad, experts.down_proj.grad
        for e in range(gate_up.shape[0]):
            gate, up = gate_up[e].chunk(2, dim=0)
            if kind == "mixtral":
                prefix = f"model.layers.{i}.block_sparse_moe.experts.{e}."
                names = ("w1.weight", "w3.weight", "w2.weight")
            else:
                prefix = f"model.layers.{i}.mlp.experts.{e}."
                names = ("gate_proj.weight", "up_proj.weight", "down_proj.weight")
            out |= dict(zip([prefix + n for n in names], (gate, up, down[e]), strict=True))
    assert out, "no expert gradients found"
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_hf_to_neox_to_hf_gives_identical_tensors_and_config(hf_dirs, imported, tmp_path, kind):
    _, directory = hf_dirs[kind]
    out = export_to_hf(imported / kind, tmp_path / "back")  # the architecture from the model
    original, back = (
        load_file(directory / "model.safetensors"),
        load_file(out / "model.safetensors"),
    )
    assert sorted(original) == sorted(back)
    assert all(torch.equal(original[k], back[k]) for k in original)
    source, exported = (json.loads((d / "config.json").read_text()) for d in (directory, out))
    keys = ["architectures", "num_experts_per_tok", "router_aux_loss_coef", "intermediate_size"]
    keys += (
        ["num_local_experts", "sliding_window"]
        if kind == "mixtral"
        else ["num_experts", "moe_intermediate_size", "shared_expert_intermediate_size",
              "norm_topk_prob", "mlp_only_layers"]
    )  # fmt: skip
    for key in keys:
        assert source.get(key) == exported.get(key), key


def test_the_imported_configs_have_the_families_features(imported):
    mixtral = read_manifest(imported / "mixtral" / "global_step0").config
    assert (mixtral.moe_num_experts, mixtral.moe_top_k, mixtral.moe_expert_interval) == (4, 2, 1)
    assert (mixtral.moe_router_type, mixtral.moe_normalize_topk) == ("softmax_topk", None)
    assert mixtral.sliding_window_width == 7 and mixtral.expert_ffn_size == 96
    qwen = read_manifest(imported / "qwen2_moe" / "global_step0").config
    assert (qwen.moe_expert_interval, qwen.moe_layers) == (2, 1)  # layer 1 dense
    assert qwen.moe_normalize_topk is False and qwen.qkv_bias
    assert (qwen.expert_ffn_size, qwen.ffn_size, qwen.moe_shared_expert_intermediate_size) == (
        32,
        96,
        80,
    )


def test_qwen2_moe_sparse_layers_map_to_an_interval_or_are_refused(tmp_path):
    assert expert_interval([0, 1, 2, 3], 4) == 1
    assert expert_interval([0, 2], 4) == 2
    assert expert_interval([0], 4) == 4
    assert expert_interval([1, 3], 4) is None  # decoder_sparse_step 2: layers 1, 3
    odd = save_hf(hf_model("qwen2_moe", decoder_sparse_step=2, mlp_only_layers=[]), tmp_path / "hf")
    with pytest.raises(ConversionError, match=r"experts on layers \[1\] \(decoder_sparse_step 2"):
        import_from_hf(odd, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_mixtral_jitter_and_experts_that_do_not_split_are_refused(tmp_path):
    jittery = save_hf(hf_model("mixtral", router_jitter_noise=0.1), tmp_path / "jitter")
    with pytest.raises(ConversionError, match=r"router_jitter_noise 0.1 .* the experts. input"):
        import_from_hf(jittery, tmp_path / "run")
    three = save_hf(hf_model("mixtral", num_local_experts=3), tmp_path / "three")
    with pytest.raises(ConversionError, match="moe_num_experts 3 do not split over 2"):
        import_from_hf(three, tmp_path / "run", layout=ParallelDims(2, 1))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_experts_split_over_two_tensor_parallel_ranks_compute_the_hf_logits(
    hf_dirs, tmp_path, kind
):
    """Each rank's file holds half the experts; on a real group of 2 the ranks compute the
    logits transformers does."""
    hf, directory = hf_dirs[kind]
    import_from_hf(directory, tmp_path / "run", layout=ParallelDims(2, 1))
    manifest = read_manifest(tmp_path / "run" / "global_step0")
    assert manifest.tensor_parallel == 2
    rank0 = torch.load(tmp_path / "run" / "global_step0" / "mp_rank_00_model_states.pt")
    assert rank0["module"]["layers.0.mlp.experts.w_in"].shape[0] == 2  # of 4
    out = tmp_path / "logits.pt"
    spawn_ranks(tp_worker, 2, str(tmp_path / "run"), str(out))
    with torch.no_grad():
        theirs = hf(random_ids(shape=(2, IMPORT_LONG))).logits  # the ids tp_worker runs
    assert (torch.load(out)[..., :384] - theirs).abs().max().item() <= 1e-5


def test_exports_name_what_each_family_cannot_express(imported, tmp_path):
    qwen_dir = imported / "qwen2_moe"
    with pytest.raises(ExportError) as err:
        export_to_hf(qwen_dir, tmp_path / "out", architecture="mixtral")
    message = str(err.value)
    assert "moe_expert_interval 2 (Mixtral has experts on every layer)" in message
    assert "moe_shared_expert_intermediate_size 80 (Mixtral has none)" in message
    assert "--architecture qwen2_moe reproduces it exactly" in message
    with pytest.raises(ExportError, match=r"moe_num_experts 4 \(Llama's MLPs are dense\)"):
        export_to_hf(imported / "mixtral", tmp_path / "out", architecture="llama")
    assert not (tmp_path / "out").exists()


def test_a_dense_model_is_not_exported_as_a_mixture(tmp_path):
    from neox_convert.moe_families import mixtral_export_problems, qwen2_moe_export_problems
    from neox_testing import style

    dense = style("llama")
    assert "moe_num_experts 1 (Mixtral's MLPs are mixtures of experts)" in mixtral_export_problems(
        dense
    )
    gnx = dataclasses.replace(dense, moe_num_experts=4, moe_top_k=2, moe_router_type="topk")
    problems = qwen2_moe_export_problems(gnx)
    assert any("moe_router_type 'topk'" in p for p in problems)


@pytest.mark.parametrize("layout", [(1, 2), (2, 2)], ids=["pp2", "tp2-pp2"])
@pytest.mark.parametrize("kind", KINDS)
def test_pipeline_layouts_hold_the_model_and_give_it_back(hf_dirs, tmp_path, kind, layout):
    """Layer files per pipeline layer (the experts with their block), read back as one model
    with transformers' logits, and exported bit-identical."""
    hf, directory = hf_dirs[kind]
    import_from_hf(directory, tmp_path / "run", layout=ParallelDims(*layout))
    _, manifest, model = load_model(tmp_path / "run")
    assert any("layer_01" in f.file for f in manifest.files)
    ids = random_ids(shape=(2, LONG))
    with torch.no_grad():
        assert (model(ids)[..., :384] - hf(ids).logits).abs().max().item() <= 1e-5
    out = export_to_hf(tmp_path / "run", tmp_path / "back")
    original, back = (
        load_file(directory / "model.safetensors"),
        load_file(out / "model.safetensors"),
    )
    assert (
        all(torch.equal(original[k], back[k]) for k in original) and original.keys() == back.keys()
    )
