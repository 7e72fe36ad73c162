import dataclasses

import pytest
import torch

from neox_model import Transformer
from neox_model.pipeline import OutputPipe, pipeline_loss, pipeline_specs
from neox_model.tensor_parallel import TPGroup, shard, shard_spec, unshard
from neox_testing import style


def build(config, seed, part=slice(None)):
    return [
        layer.cls(*layer.args) for layer in pipeline_specs(config, TPGroup.single(), seed)[part]
    ]


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


@pytest.mark.parametrize("name", ["gemma2", "llama3", "learned"])
def test_a_tied_output_layer_runs_on_its_copy_of_the_embedding(name):
    """Tied: the last layer holds a copy of the embedding weight, the same at the start; the
    model's gradient of the embedding is the sum of the two copies' gradients (what the pipeline
    engine all-reduces over the two stages)."""
    config = style(name, num_layers=2)
    assert not config.no_weight_tying
    specs = pipeline_specs(config, TPGroup.single(), 4)
    assert [layer.tie for layer in specs] == ["embed", None, None, None, "embed"]
    assert specs[0].tied_weights == specs[-1].tied_weights == ("embed_in.weight",)
    layers = [layer.cls(*layer.args) for layer in specs]
    first, output = layers[0], layers[-1]
    assert list(output.state_dict()) == ["embed_in.weight"]
    assert torch.equal(output.embed_in.weight, first.embed_in.weight)
    model = Transformer(config, seed=4)
    ids = torch.randint(0, 64, (2, config.max_positions + 1))
    x = ids[:, :-1]
    for layer in layers:
        x = layer(x)
    loss = pipeline_loss(TPGroup.single())(x, ids[:, 1:])
    expected = model(ids[:, :-1], labels=ids[:, 1:])
    torch.testing.assert_close(x, model(ids[:, :-1]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    for layer in layers[1:-1]:
        for key, param in layer.named_parameters():
            torch.testing.assert_close(param.grad, model.get_parameter(layer.model_name(key)).grad)
    summed = first.embed_in.weight.grad + output.embed_in.weight.grad
    torch.testing.assert_close(summed, model.embed_in.weight.grad)
    assert output.embed_in.weight.grad.abs().sum() > 0  # the output's share is not nothing


def test_the_untied_output_layer_is_refused_for_a_tied_model():
    (args,) = pipeline_specs(style("pythia"), TPGroup.single(), 0)[-1].args
    tied = dataclasses.replace(args, config=style("pythia", no_weight_tying=False))
    with pytest.raises(ValueError, match="TiedOutputPipe"):
        OutputPipe(tied)


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
