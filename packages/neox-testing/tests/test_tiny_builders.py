"""The shared configs and checkpoints: importable without torch, and what they say they are."""

import subprocess
import sys
from pathlib import Path

import pytest

from neox_testing import STYLES, TINY_RUN, tiny_run


def test_importing_it_imports_neither_torch_nor_neox_model():
    code = "import sys, neox_testing; print(sorted({'torch', 'neox_model'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_tiny_run_is_the_tiny_model_in_pythias_style_without_a_vocabulary():
    values = tiny_run(Path("d/corpus"), Path("d/tokenizer.json"), Path("run"), train_iters=3)
    assert values["data_path"] == "d/corpus" and values["save"] == "run"
    assert values["train_iters"] == 3 and TINY_RUN["train_iters"] == 5
    assert not {key for key in values if "vocab_size" in key}  # the tokenizer's
    assert STYLES["pythia"].items() <= values.items()


def test_every_style_is_a_valid_model_config():
    pytest.importorskip("neox_model")
    from neox_testing import style

    for name in STYLES:
        assert style(name).num_layers == 2


def test_a_checkpoint_is_a_complete_step_that_loads_as_the_model(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("yaml")
    from neox_model import load_model
    from neox_testing import make_checkpoint, style

    def write_tokenizer(path):
        path.write_text("{}")

    for layout in ("module", "pipeline"):
        root = tmp_path / layout
        model = make_checkpoint(root, style("llama"), write_tokenizer, step=3, layout=layout)
        assert (root / "latest").read_text() == "global_step3\n"
        _, _, loaded = load_model(root)
        ids = torch.arange(12)[None]
        torch.testing.assert_close(loaded(ids), model(ids))
