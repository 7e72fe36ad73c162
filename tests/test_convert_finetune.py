"""`neox convert from-hf` then `neox train` with `finetune: true`: DeepSpeed loads the imported
files at tensor size 2 and pipeline size 2, training continues from them and lowers the loss."""

import json
import shutil

import pytest
import torch
from tokenizers import Tokenizer

from neox_model import load_model, load_state_dict
from neox_testing import hf_model, selected_params, side_by_side
from neox_train.config.run_config import load_run_config
from neox_train.monitoring.metrics import read_metrics

from conftest import neox, run_config, write_yaml

TRAINING_KEYS = (
    "data_path",
    "split",
    "optimizer",
    "lr_decay_style",
    "warmup",
    "eval_interval",
    "eval_iters",
    "log_interval",
    "zero_optimization",
    "seed",
    "launcher",
)


def test_fine_tuning_an_imported_llama_lowers_its_loss(corpus, tmp_path):
    vocab = len(json.loads((corpus / "tokenizer.json").read_text())["model"]["vocab"])
    hf_dir = tmp_path / "hf"
    hf_model("llama", vocab_rows=vocab).save_pretrained(hf_dir)
    shutil.copyfile(corpus / "tokenizer.json", hf_dir / "tokenizer.json")
    imported = tmp_path / "imported"
    result = neox(
        "convert", "from-hf", "--input_dir", hf_dir, "--output_dir", imported,
        "--model_parallel_size", 2, "--pipe_parallel_size", 2,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    step_yaml = imported / "global_step0" / "config.yml"
    assert load_run_config([str(step_yaml)]).run.checkpoint.finetune  # a valid run config

    reference = run_config(corpus, tmp_path / "tuned")
    training = {k: reference[k] for k in TRAINING_KEYS}  # the model is the imported one
    data = write_yaml(
        tmp_path / "data.yml",
        {
            **training,
            "save": str(tmp_path / "tuned"),
            "num_gpus": 4,
            "train_micro_batch_size_per_gpu": 4,
            "train_iters": 6,
        },
    )
    result = neox("train", step_yaml, data)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "weights of" in result.stdout  # loaded as a fine-tune, from step 0

    records = read_metrics(tmp_path / "tuned" / "metrics.jsonl")
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    # training moved the imported weights a little; a fresh initialisation would be far away
    _, _, start = load_state_dict(imported)
    _, _, end = load_state_dict(tmp_path / "tuned")
    for name in ("layers.0.attention.query_key_value.weight", "embed_out.weight"):
        change = (end[name] - start[name]).norm() / start[name].norm()
        assert 0 < change.item() < 0.2, (name, change.item())
    # and the fine-tuned model predicts the corpus better than the imported one
    text = json.loads((corpus / "docs.jsonl").read_text().splitlines()[3])["text"]
    ids = torch.tensor([Tokenizer.from_file(str(corpus / "tokenizer.json")).encode(text).ids[:65]])
    before, after = (
        load_model(run)[2](ids[:, :-1], labels=ids[:, 1:]) for run in (imported, tmp_path / "tuned")
    )
    assert after.item() < before.item() - 0.05, (before.item(), after.item())


FAMILY_RUNS = [
    *(
        (k, "--model_parallel_size", 2)
        for k in ("llama3", "llama3.2", "qwen2", "qwen3", "olmo2", "gemma2")
    ),
    ("gemma2", "--pipe_parallel_size", 2),  # tied: the last stage's output runs on a copy
    # mixtures of experts: 2 data-parallel ranks (experts run without tensor parallelism)
    ("mixtral", "--model_parallel_size", 1),
    ("qwen2_moe", "--model_parallel_size", 1),
]
LAYOUT_IDS = {"--model_parallel_size": "tp", "--pipe_parallel_size": "pp"}


def round_trip(corpus, root, kind, split, size):
    """The family's tiny model saved under `root` with the corpus' tokenizer, and the `neox`
    commands of its round trip there: `convert from-hf` at the layout `split size`, `train` for 4
    steps from the import, `convert to-hf` of the result. Returns the model and the commands."""
    vocab = len(json.loads((corpus / "tokenizer.json").read_text())["model"]["vocab"])
    original = hf_model(kind, vocab_rows=vocab)
    hf_dir, imported = root / "hf", root / "imported"
    original.save_pretrained(hf_dir)
    shutil.copyfile(corpus / "tokenizer.json", hf_dir / "tokenizer.json")
    reference = run_config(corpus, root / "tuned")
    data = write_yaml(
        root / "data.yml",
        {
            **{k: reference[k] for k in TRAINING_KEYS},
            "save": str(root / "tuned"),
            "num_gpus": 2,
            "train_micro_batch_size_per_gpu": 4,
            "train_iters": 4,
        },
    )
    return original, [
        ("convert", "from-hf", "--input_dir", hf_dir, "--output_dir", imported, split, size),
        ("train", imported / "global_step0" / "config.yml", data),
        ("convert", "to-hf", "--input_dir", root / "tuned", "--output_dir", root / "exported"),
    ]


def run_in_turn(commands):
    """The `neox` commands one after another: their results."""
    return [neox(*args) for args in commands]


@pytest.fixture(scope="module")
def round_trips(corpus, tmp_path_factory, request):
    """The round trip of each family this session tests, two families at a time
    (`side_by_side`): (kind, split, size) -> its directory, the model imported and the future of
    the three commands' results."""
    test = test_fine_tuning_an_imported_new_family_model_and_exporting_it
    runs = selected_params(request, test, "kind", "split", "size")
    roots = {run: tmp_path_factory.mktemp(f"{run[0]}-{LAYOUT_IDS[run[1]]}{run[2]}") for run in runs}
    # one after another: hf_model seeds torch's global generator
    prepared = {run: round_trip(corpus, roots[run], *run) for run in runs}
    done = side_by_side({run: (run_in_turn, commands) for run, (_, commands) in prepared.items()})
    return {run: (roots[run], original, done[run]) for run, (original, _) in prepared.items()}


@pytest.mark.parametrize(
    ("kind", "split", "size"),
    FAMILY_RUNS,
    ids=[f"{k}-{LAYOUT_IDS[s]}{n}" for k, s, n in FAMILY_RUNS],
)
def test_fine_tuning_an_imported_new_family_model_and_exporting_it(
    corpus, round_trips, kind, split, size
):
    """Llama 3.1 (llama3 rotary scaling), Llama 3.2 (tied), Qwen2 (QKV bias, linear scaling) and
    Qwen3 (wide heads, query/key norms, yarn), OLMo 2 (post norms, query/key norms over all
    heads), Gemma 2 (sandwich norms scaling by 1 + weight, soft caps, a window on every other
    layer, scaled and tied embeddings), Mixtral and Qwen2-MoE (experts, the load-balancing loss
    in training): imported at tensor size 2 (Gemma 2 also over 2 pipeline stages; the mixtures
    of experts at 1, trained over 2 data-parallel ranks), fine-tuned for a few steps (the loss
    falls), exported without naming the architecture: transformers loads the export as the
    family's class and computes neox's logits."""
    from transformers import AutoModelForCausalLM

    vocab = len(json.loads((corpus / "tokenizer.json").read_text())["model"]["vocab"])
    root, original, done = round_trips[kind, split, size]
    imported, trained, exported = done.result()
    assert imported.returncode == 0, imported.stderr
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    losses = [
        r["train_loss"] for r in read_metrics(root / "tuned" / "metrics.jsonl") if "train_loss" in r
    ]
    assert len(losses) == 4 and losses[-1] < losses[0], losses

    assert exported.returncode == 0, exported.stderr
    theirs = AutoModelForCausalLM.from_pretrained(root / "exported", dtype=torch.float32).eval()
    assert type(theirs) is type(original)
    text = json.loads((corpus / "docs.jsonl").read_text().splitlines()[3])["text"]
    ids = torch.tensor([Tokenizer.from_file(str(corpus / "tokenizer.json")).encode(text).ids[:48]])
    ours = load_model(root / "tuned")[2]
    with torch.no_grad():
        expected = ours(ids)[..., :vocab]
        got = theirs(ids).logits[..., :vocab]
        before = original(ids).logits[..., :vocab]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, before, atol=1e-4)  # the export is the fine-tuned model
