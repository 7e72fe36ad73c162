"""`neox eval` against lm-eval's own `hf` backend on the same model exported with neox-convert:
the same per-document log-likelihoods (within 1e-4), generations and metrics, on local tasks
(multiple choice, perplexity, generation) over local JSONL data, for a Pythia-style model with
GPT-NeoX's tokenizer and a Llama 3-style one with Llama 3's (a BOS before every text, its own end
of document). Nothing is downloaded."""

import json
import shutil

import pytest
import torch
import yaml

import neox_testing
from neox_convert import export_to_hf
from neox_data import HFTokenizer, train_bpe_tokenizer
from neox_testing import TOKENIZER_FAMILIES, style, write_tokenizer_files

from conftest import neox, write_yaml

SEQ_LENGTH = 40
TEXT = (  # the words of every test document
    "the cat sat on a mat while the dog ran to the park and a bird sang in the old tree "
    "every morning people walk along the river to buy bread milk and fresh apples"
)
WORDS = TEXT.split()


def sentence(seed, length):
    picks = torch.randint(0, len(WORDS), (length,), generator=torch.Generator().manual_seed(seed))
    return " ".join(WORDS[i] for i in picks.tolist())


TASKS = {
    "parity_mc": (
        dict(
            output_type="multiple_choice",
            doc_to_text="Question: {{question}}\nAnswer:",
            doc_to_choice="{{choices}}",
            doc_to_target="label",
            metric_list=[{"metric": "acc"}, {"metric": "acc_norm"}],
        ),
        [
            {
                "question": sentence(i, 3 + 6 * i),  # the last ones are cut to seq_length
                "choices": [sentence(50 + i, 1 + i % 3), sentence(60 + i, 2), sentence(70 + i, 4)],
                "label": i % 3,
            }
            for i in range(8)
        ],
    ),
    "parity_ppl": (
        dict(
            output_type="loglikelihood_rolling",
            doc_to_text="",
            doc_to_target="{{text}}",
            metric_list=[{"metric": m} for m in ("word_perplexity", "bits_per_byte")],
        ),
        [{"text": sentence(100 + i, 5 + 15 * i) + "."} for i in range(5)],  # up to 2+ windows
    ),
    "parity_gen": (
        dict(
            output_type="generate_until",
            doc_to_text="Q: {{question}}\nA:",
            doc_to_target=" {{answer}}",
            # " sang" cuts some of this random model's answers short
            generation_kwargs={"until": ["\n", " sang"], "max_gen_toks": 10, "do_sample": False},
            metric_list=[{"metric": "exact_match"}],
        ),
        [
            {"question": sentence(200 + i, 2 + 9 * i), "answer": sentence(300 + i, 2)}
            for i in range(5)
        ],
    ),
}


def write_task(directory, name):
    config, docs = TASKS[name]
    data = directory / f"{name}.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    files = {"data_files": {"test": str(data)}, "cache_dir": str(directory / "datasets")}
    body = dict(task=name, dataset_path="json", dataset_kwargs=files, test_split="test", **config)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return str(path)


# Llama 3's rotary scaling with an original context SEQ_LENGTH exceeds, and band edges (wavelengths
# of 16 / 2 and 16 / 0.25 tokens; a head's 8 are 6.3, 32, 167... tokens) that put a frequency in
# each band: kept, smoothed, divided by the factor
LLAMA3_ROPE = dict(
    rope_type="llama3",
    factor=8.0,
    low_freq_factor=0.25,
    high_freq_factor=2.0,
    original_max_position_embeddings=16,
)
TOKENIZER_TEXTS = [sentence(1000 + i, 30) + "." for i in range(200)]


def make_checkpoint(root, family, vocab):
    """A random tiny model in the style of `family` ("pythia": GPT-NeoX's tokenizer; "llama3":
    tied, Llama 3's rotary scaling, a tokenizer.json laid out as Llama 3's) saved as neox-train
    saves a step with its tokenizer.json alone; the tokenizer has `vocab` tokens, the model 320
    rows."""
    sizes = dict(hidden_size=64, seq_length=SEQ_LENGTH, vocab_size=vocab, init_method_std=0.1)
    if family == "llama3":
        config = style("llama3", **sizes, make_vocab_size_divisible_by=64, rope_scaling=LLAMA3_ROPE)
        trained = vocab - len(TOKENIZER_FAMILIES["llama3"].specials)
        files = write_tokenizer_files("llama3", root.parent / "llama3", trained, TOKENIZER_TEXTS)
    else:
        config = style("pythia", **sizes, make_vocab_size_divisible_by=64)

    def write_tokenizer(path):
        if family == "llama3":
            shutil.copyfile(files / "tokenizer.json", path)
        else:
            train_bpe_tokenizer(TOKENIZER_TEXTS, vocab, path)
        assert HFTokenizer(path).vocab_size == vocab

    saved = {"tokenizer_type": "HFTokenizer", "seq_length": SEQ_LENGTH}
    neox_testing.make_checkpoint(root, config, write_tokenizer, step=5, seed=7, run_config=saved)


def hf_backend(hf_dir, task_files, batch_size):
    """lm-eval's own Hugging Face backend on the exported model."""
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    args = {"pretrained": str(hf_dir), "max_length": SEQ_LENGTH, "dtype": "float32"}
    return simple_evaluate(
        model="hf",
        model_args=args,
        tasks=task_files,
        device="cpu",
        batch_size=batch_size,
        task_manager=TaskManager(include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
    )


def per_doc(results, task):
    return [
        s["filtered_resps"] for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])
    ]


def numbers(value):
    if isinstance(value, list | tuple):
        return [n for item in value for n in numbers(item)]
    return [float(value)] if isinstance(value, int | float) and not isinstance(value, bool) else []


@pytest.mark.parametrize(
    ("family", "vocab", "tasks"),
    [
        ("pythia", 320, ["parity_mc", "parity_ppl", "parity_gen"]),
        ("pythia", 300, ["parity_mc", "parity_ppl"]),
        ("llama3", 320, ["parity_mc", "parity_ppl", "parity_gen"]),
    ],
    ids=["vocab-unpadded", "vocab-padded", "llama3"],
)
def test_neox_eval_agrees_with_lm_evals_hf_backend_on_the_exported_model(
    tmp_path, family, vocab, tasks
):
    make_checkpoint(tmp_path / "run", family, vocab)
    hf_dir = export_to_hf(tmp_path / "run", tmp_path / "hf")
    task_files = [write_task(tmp_path, name) for name in tasks]
    config = write_yaml(tmp_path / "eval.yml", {"load": str(tmp_path / "run")})
    out = tmp_path / "neox.json"
    args = ["--eval_tasks", *task_files, "--batch_size", "3", "--bootstrap_iters", "0"]
    result = neox("eval", config, *args, "--log_samples", "--output_path", out)
    assert result.returncode == 0, result.stderr
    ours, theirs = json.loads(out.read_text()), hf_backend(hf_dir, task_files, batch_size=2)
    for task in tasks:
        mine, hf = per_doc(ours, task), per_doc(theirs, task)
        assert len(mine) == len(hf) == len(TASKS[task][1])
        if task == "parity_gen":
            assert mine == hf
        else:
            diff = max(abs(a - b) for a, b in zip(numbers(mine), numbers(hf), strict=True))
            assert diff <= 1e-4, f"{task}: per-document log-likelihoods differ by {diff}"
        if task == "parity_mc":  # is-greedy flags too
            assert [[c[1] for c in doc] for doc in mine] == [[c[1] for c in doc] for doc in hf]
        for key, value in theirs["results"][task].items():
            if isinstance(value, float):
                assert ours["results"][task][key] == pytest.approx(value, rel=1e-5), key
