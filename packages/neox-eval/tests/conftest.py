"""Shared builders: a tokenizer trained on a small corpus, tiny random neox checkpoints laid out as
neox-train saves them (one module file, or pipeline layer files), and three local lm-eval tasks
over JSONL data (multiple choice, perplexity, generation). Nothing is downloaded."""

import json
import os

import pytest
import torch
import yaml

import neox_testing
from neox_data import train_bpe_tokenizer
from neox_testing import style

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


def make_checkpoint(root, layout="module"):
    """A run directory with one step (`global_step10`) as neox-train saves it, with the model's
    weights in one module file or in pipeline layer files; returns the model (eval mode)."""
    config = style(
        "pythia",
        hidden_size=64,
        seq_length=SEQ_LENGTH,
        vocab_size=VOCAB,
        make_vocab_size_divisible_by=64,
        init_method_std=0.1,
    )
    saved = {"tokenizer_type": "HFTokenizer", "vocab_file": "data/tokenizer.json"}
    return neox_testing.make_checkpoint(
        root,
        config,
        make_tokenizer,
        layout=layout,
        run_config=dict(saved, seq_length=SEQ_LENGTH),
    )


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
