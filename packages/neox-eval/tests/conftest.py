"""Shared builders: a tokenizer trained on a small corpus, tiny random neox checkpoints laid out as
neox-train saves them (one module file, or pipeline layer files), and three local lm-eval tasks
over JSONL data (multiple choice, perplexity, generation). Nothing is downloaded."""

import json
import os

import pytest
import torch
import yaml

from neox_data import train_bpe_tokenizer
from neox_model import ModelConfig, ModelManifest, Transformer, WeightFile, write_manifest
from neox_model.checkpoint import seal_step

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TEXT = (  # the words of every test document
    "the cat sat on a mat while the dog ran to the park and a bird sang in the old tree "
    "every morning people walk along the river to buy bread milk and fresh apples"
)
WORDS = TEXT.split()
VOCAB = 320  # tokens of the test tokenizer = the model's rows (make_vocab_size_divisible_by 64)
SEQ_LENGTH = 40
TASKS = ("neox_mc", "neox_ppl", "neox_gen")


def sentence(seed, length):
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
    return " ".join(WORDS[i] for i in picks)


def corpus():
    return [sentence(seed, 30) + "." for seed in range(200)]


def make_tokenizer(path, vocab=VOCAB):
    tokenizer = train_bpe_tokenizer(corpus(), vocab, path)
    assert tokenizer.vocab_size == vocab
    return tokenizer


def perturb(model, seed=0):
    """Norm weights and biases away from 1 and 0, so that a mix-up would show in the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


def model_config(vocab=VOCAB, **overrides):
    values = dict(
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        seq_length=SEQ_LENGTH,
        pos_emb="rotary",
        rotary_pct=0.25,
        gpt_j_residual=True,
        no_weight_tying=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        vocab_size=vocab,
        make_vocab_size_divisible_by=64,
        init_method_std=0.1,
    )
    values.update(overrides)
    return ModelConfig(**values)


def _module_files(step, state):
    torch.save({"module": state, "ds_config": {}}, step / "mp_rank_00_model_states.pt")
    return (WeightFile("mp_rank_00_model_states.pt", "module"),)


def _pipeline_files(step, state, config):
    """DeepSpeed pipeline layer files: layer 0 the embedding, 1..n the blocks (as `block.*`),
    n+1 the final norm, n+2 the output layer."""
    layers = {0: {}, config.num_layers + 1: {}, config.num_layers + 2: {}}
    for name, tensor in state.items():
        if name.startswith("layers."):
            index, rest = name[len("layers.") :].split(".", 1)
            layers.setdefault(int(index) + 1, {})["block." + rest] = tensor
        elif name.startswith("final_layer_norm."):
            layers[config.num_layers + 1][name] = tensor
        elif name.startswith("embed_out."):
            layers[config.num_layers + 2][name] = tensor
        else:
            layers[0][name] = tensor
    files = []
    for layer, own in sorted(layers.items()):
        name = f"layer_{layer:02d}-model_00-model_states.pt"
        torch.save(own, step / name)
        block = 1 <= layer <= config.num_layers
        rename = ("block.", f"layers.{layer - 1}.") if block else ("", "")
        files.append(WeightFile(name, "", 0, *rename))
    return tuple(files)


def make_checkpoint(root, layout="module", vocab=VOCAB, run_config=None, **overrides):
    """A run directory with one step (`global_step10`) as neox-train saves it; returns the
    model (eval mode) whose weights it holds."""
    config = model_config(vocab, **overrides)
    step = root / "global_step10"
    step.mkdir(parents=True)
    model = perturb(Transformer(config, seed=3)).eval()
    state = model.state_dict()
    files = (
        _module_files(step, state) if layout == "module" else _pipeline_files(step, state, config)
    )
    make_tokenizer(step / "tokenizer.json", vocab)
    saved = {"tokenizer_type": "HFTokenizer", "vocab_file": "data/tokenizer.json"}
    saved.update(seq_length=config.seq_length, **(run_config or {}))
    (step / "config.yml").write_text(yaml.safe_dump(saved))
    write_manifest(step, ModelManifest(config, files, tokenizer="tokenizer.json"))
    seal_step(step)  # files.json, as a save writes last
    (root / "latest").write_text("global_step10\n")
    return model


MC_DOCS = [
    {
        "question": sentence(100 + i, 4 + 5 * i),
        "choices": [sentence(200 + i, 2), sentence(300 + i, 3), sentence(400 + i, 1)],
        "label": i % 3,
    }
    for i in range(6)
]
PPL_DOCS = [{"text": sentence(500 + i, 6 + 12 * i) + "."} for i in range(5)]
GEN_DOCS = [
    {"question": sentence(600 + i, 3 + 7 * i), "answer": sentence(700 + i, 2)} for i in range(5)
]

TASK_CONFIGS = {
    "neox_mc": dict(
        output_type="multiple_choice",
        doc_to_text="Question: {{question}}\nAnswer:",
        doc_to_choice="{{choices}}",
        doc_to_target="label",
        metric_list=[{"metric": "acc"}, {"metric": "acc_norm"}],
    ),
    "neox_ppl": dict(
        output_type="loglikelihood_rolling",
        doc_to_text="",
        doc_to_target="{{text}}",
        metric_list=[
            {"metric": "word_perplexity"},
            {"metric": "byte_perplexity"},
            {"metric": "bits_per_byte"},
        ],
    ),
    "neox_gen": dict(
        output_type="generate_until",
        doc_to_text="Q: {{question}}\nA:",
        doc_to_target=" {{answer}}",
        generation_kwargs={"until": ["\n", "."], "max_gen_toks": 8, "do_sample": False},
        metric_list=[{"metric": "exact_match"}],
    ),
}
TASK_DOCS = {"neox_mc": MC_DOCS, "neox_ppl": PPL_DOCS, "neox_gen": GEN_DOCS}


def write_tasks(directory):
    """The three task YAMLs (and their JSONL data) in `directory`; returns {task: yaml path}."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for task, config in TASK_CONFIGS.items():
        data = directory / f"{task}.jsonl"
        data.write_text("".join(json.dumps(doc) + "\n" for doc in TASK_DOCS[task]))
        body = dict(
            task=task,
            dataset_path="json",
            dataset_kwargs={
                "data_files": {"test": str(data)},
                "cache_dir": str(directory / "hf_datasets"),
            },
            test_split="test",
            **config,
        )
        paths[task] = directory / f"{task}.yaml"
        paths[task].write_text(yaml.safe_dump(body, sort_keys=False))
    return paths


@pytest.fixture(scope="session")
def tasks(tmp_path_factory):
    return write_tasks(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    make_checkpoint(root)
    return root


@pytest.fixture(scope="session")
def loaded(run_dir):
    from neox_eval import load_checkpoint

    return load_checkpoint(run_dir)
