"""Post-training as a user runs it, with the shipped tiny configs (configs/cpu/post-training/):
conversations through `neox data preprocess-chat`, supervised fine-tuning, then from its
checkpoint DPO, a reward model and KTO (each `neox train` on two processes, two runs at a
time), and the reward model exported with `neox convert to-hf` and scored by transformers.

The task: the user says three words, the assistant says them backwards (what the fine-tuning
teaches). The preferred answer reverses them, the dispreferred one answers with words of refusal
instead; held-out conversations measure what each objective learned.
"""

import json
import random
from functools import partial
from pathlib import Path

import pytest
import torch
from test_sft_chat import WORDS, chat_tokenizer

from neox_model import load_model
from neox_testing import side_by_side

from conftest import neox, write_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "cpu"
REFUSALS = ["no", "bad", "wrong", "never", "nothing"]


def turns(words, answer):
    return [
        {"role": "user", "content": " ".join(words)},
        {"role": "assistant", "content": " ".join(answer)},
    ]


def records(count, seed):
    rng = random.Random(seed)
    for i in range(count):
        said = rng.sample(WORDS, k=3)
        good, bad = turns(said, reversed(said)), turns(said, rng.sample(REFUSALS, k=3))
        yield {"messages": good, "chosen": good, "rejected": bad}
        # KTO's unpaired data: the good answer desirable, the bad one not
        yield {"messages": bad if i % 2 else good, "label": not i % 2}


def preprocess(root, tokenizer, name, count, seed, *flags):
    path = root / f"{name}.jsonl"
    lines = [r for r in records(count, seed) if ("label" in r) == ("--reward-key" in flags)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    result = neox(
        "data",
        "preprocess-chat",
        "--input",
        path,
        "--tokenizer-path",
        tokenizer,
        "--output-prefix",
        root / name,
        *flags,
    )
    assert result.returncode == 0, result.stderr


def train(root, name, overlay, **paths):
    values = dict(paths, vocab_file=str(root / "tokenizer" / "tokenizer.json"))
    values["save"] = str(root / name)
    setup = write_yaml(root / f"{name}_paths.yml", values)
    result = neox("train", CONFIGS / "llama_tiny.yml", CONFIGS / "post-training" / overlay, setup)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / name


def metrics(run, prefix="valid_"):
    found = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        values = {k[len(prefix) :]: v for k, v in record.items() if k.startswith(prefix)}
        if values:
            found.setdefault(record["step"], {}).update(values)
    return found


def pairs(root, name):
    return {
        f"{side}_{purpose}_{label}data_paths": [f"{root}/{name}_{purpose}_{key}_{label}document"]
        for side, key in (("pos", "chosen"), ("neg", "rejected"))
        for purpose in ("train", "valid")
        for label in ("", "label_")
    }


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("post_training")
    tokenizer = chat_tokenizer(root / "tokenizer")
    for purpose, count, seed in (("train", 200, 1), ("valid", 16, 2)):
        preprocess(root, tokenizer, f"sft_{purpose}", count, seed)
        preprocess(root, tokenizer, f"dpo_{purpose}", count, seed, "--jsonl-keys", "chosen",
                   "rejected", "--only-last")  # fmt: skip
        preprocess(root, tokenizer, f"rm_{purpose}", count, seed, "--jsonl-keys", "chosen",
                   "rejected", "--for-rm")  # fmt: skip
        preprocess(root, tokenizer, f"kto_{purpose}", count, seed, "--reward-key", "label")
    sft = train(
        root,
        "sft",
        "sft_tiny.yml",
        **{
            f"{purpose}_{label}data_paths": [f"{root}/sft_{purpose}_messages_{label}document"]
            for purpose in ("train", "valid")
            for label in ("", "label_")
        },
    )
    start = dict(load=str(sft / "global_step40"))
    kto = {
        f"{purpose}_{kind}data_paths": [f"{root}/kto_{purpose}_messages_{kind}document"]
        for purpose in ("train", "valid")
        for kind in ("", "label_", "reward_")
    }
    calls = {
        "dpo": (partial(train, **start, **pairs(root, "dpo")), root, "dpo", "dpo_tiny.yml"),
        "rm": (partial(train, **start, **pairs(root, "rm")), root, "rm", "rm_tiny.yml"),
        "kto": (partial(train, **start, **kto), root, "kto", "kto_tiny.yml"),
    }
    runs = {name: future.result() for name, future in side_by_side(calls).items()}
    return root, runs


def test_dpo_from_the_fine_tuned_model_prefers_the_reversed_answers_more(chain):
    _, runs = chain
    valid = metrics(runs["dpo"])
    assert valid[0]["margins"] == 0  # the policy starts as its reference, the SFT model
    assert valid[16]["margins"] > valid[8]["margins"] > 0
    assert valid[16]["reward_acc"] >= 0.75 and valid[16]["loss"] < valid[0]["loss"]


def test_kto_from_the_fine_tuned_model(chain):
    _, runs = chain
    valid = metrics(runs["kto"])
    assert valid[0]["kl"] == 0
    gain = valid[16]["pos_policy_logp"] - valid[16]["pos_ref_logp"]
    drop = valid[16]["neg_policy_logp"] - valid[16]["neg_ref_logp"]
    assert gain > drop and valid[16]["loss"] < valid[0]["loss"]


def test_the_reward_model_learns_and_exports_as_llama_sequence_classification(chain):
    """Its held-out accuracy rises; transformers' LlamaForSequenceClassification, loaded from
    the export, gives the scores neox's model gives."""
    from transformers import AutoModelForSequenceClassification

    from neox_data import TokenFile

    root, runs = chain
    valid = metrics(runs["rm"])
    assert valid[16]["accuracy"] > valid[0]["accuracy"] and valid[16]["accuracy"] >= 0.75
    out = root / "rm_hf"
    result = neox("convert", "to-hf", "--input_dir", runs["rm"], "--output_dir", out)
    assert result.returncode == 0, result.stderr
    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(hf).__name__ == "LlamaForSequenceClassification"
    _, _, model = load_model(runs["rm"] / "global_step16")
    chosen = TokenFile(str(root / "rm_valid_chosen_document"))
    with torch.no_grad():
        for i in range(4):
            ids = torch.as_tensor(chosen[i].astype("int64"))[None]  # ends with the EOS
            ours = model(ids)[0]
            every = hf.score(hf.base_model(ids).last_hidden_state)[0, :, 0]
            assert torch.allclose(every, ours, rtol=1e-4, atol=1e-4)
            # transformers pools the score at the last token before the pad token (the EOS):
            # where neox's reward model reads it (the position whose label is the EOS)
            assert abs(float(hf(ids).logits[0, 0] - ours[-2])) <= 1e-4 * max(1.0, abs(ours[-2]))
    # a reward model generates no text and answers no lm-eval task: said in one line
    result = neox("generate", "--checkpoint", runs["rm"], "--prompt", "red")
    assert result.returncode == 2 and "is a reward model" in result.stderr, result.stderr
    from neox_eval.checkpoint import load_checkpoint  # what `neox eval` loads with

    with pytest.raises(ValueError, match="is a reward model"):
        load_checkpoint(runs["rm"])
