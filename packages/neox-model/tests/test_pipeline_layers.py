"""`pipeline_layer` is where each weight lives in the pipeline: neox-train's plan counts a stage's
parameters with it, neox-convert writes the layer files of a checkpoint with it."""

import pytest

from neox_model import TPGroup, layer_name_map, pipeline_layer, pipeline_specs
from neox_testing import style


@pytest.mark.parametrize("name", ["mistral", "learned"])
def test_every_weight_is_in_the_layer_pipeline_layer_names(name):
    config = style(name, num_layers=3, no_weight_tying=True)
    specs = pipeline_specs(config, TPGroup.single(), 0)
    seen = 0
    for index, (cls, args, *_) in enumerate(specs):
        local, model = layer_name_map(config, index)
        for key in cls(*args).state_dict():
            assert pipeline_layer(model + key.removeprefix(local), config) == index, (index, key)
            seen += 1
    assert seen > len(specs)
