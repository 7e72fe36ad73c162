import torch

from neox_model import Transformer
from neox_model.pipeline import pipeline_loss, pipeline_specs
from neox_model.tensor_parallel import TPGroup, shard, shard_spec, unshard
from neox_testing import style


def build(config, seed, part=slice(None)):
    return [cls(*args) for cls, args in pipeline_specs(config, TPGroup.single(), seed)[part]]


def test_the_layers_in_sequence_compute_the_model():
    config = style("llama")
    model = Transformer(config, seed=3).eval()
    ids = torch.randint(0, 64, (2, 12))
    x = ids
    for layer in build(config, 3):
        x = layer.eval()(x)
    torch.testing.assert_close(x, model(ids))
    loss = pipeline_loss(TPGroup.single())(x[:, :-1], ids[:, 1:])
    torch.testing.assert_close(loss, model(ids[:, :-1], labels=ids[:, 1:]))
    labels = ids[:, 1:].masked_fill(ids[:, 1:] % 2 == 1, -100)  # odd labels carry no loss
    loss = pipeline_loss(TPGroup.single())(x[:, :-1], labels)
    logits = x[:, :-1].flatten(0, 1)
    expected = torch.nn.functional.cross_entropy(logits, labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss, model(ids[:, :-1], labels=labels))


def test_a_stage_built_alone_has_the_whole_models_weights():
    for name in ("mistral", "learned"):
        config = style(name, num_layers=4, no_weight_tying=True)
        whole = Transformer(config, seed=5).state_dict()
        seen = set()
        for part in (slice(0, 2), slice(2, 4), slice(4, None)):  # three "stages"
            for layer in build(config, 5, part):
                for key, tensor in layer.state_dict().items():
                    assert torch.equal(tensor, whole[layer.model_name(key)]), key
                    seen.add(layer.model_name(key))
        assert seen == set(whole)


def test_tied_output_is_refused_in_a_pipeline():
    config = style("pythia", no_weight_tying=False)
    try:
        build(config, 0)
    except ValueError as err:
        assert "no_weight_tying: true" in str(err)
    else:
        raise AssertionError("a tied output layer was built for a pipeline")


def test_unshard_inverts_shard():
    full = torch.arange(48.0).reshape(12, 4)
    for dim, chunks in ((0, 1), (0, 2), (1, 1)):
        pieces = [shard(full, TPGroup(None, r, 2), dim, chunks) for r in range(2)]
        assert torch.equal(unshard(pieces, dim, chunks), full)
    model = Transformer(style("llama"))
    specs = {
        f"{m}.{p}": shard_spec(mod, p)
        for m, mod in model.named_modules()
        for p, _ in mod.named_parameters(recurse=False)
    }
    assert specs["layers.0.mlp.dense_h_to_4h.weight"] == (0, 2)
    assert specs["layers.0.attention.dense.weight"] == (1, 1)
    assert specs["embed_in.weight"] == (0, 1)
    assert specs["layers.0.input_layernorm.weight"] is None
