"""Supervised fine-tuning on conversations, as a user runs it: `neox data preprocess-chat` with a
tokenizer's own chat template, then `neox train` on the token and label files.

The assistant turns are learnable (they repeat the user's words backwards); the user turns are
random words. Trained on the labels, the loss is the assistant tokens' alone: the model learns
them, and the tokens outside the assistant turns (the template's markers, the user's words)
only as far as they resemble what it learned, far less than a run on the same tokens without
labels, which learns them directly."""

import json
import math
import random

import pytest
import torch
from tokenizers import Tokenizer

from neox_data.token_file import TokenFile
from neox_model import load_model
from neox_testing import write_tokenizer_files
from neox_testing.configs import TINY_RUN

from conftest import neox, train_losses, write_yaml

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "rock", "sea"]


def conversations(count, seed):
    rng = random.Random(seed)
    for _ in range(count):
        said = rng.choices(WORDS, k=3)
        yield {
            "messages": [
                {"role": "user", "content": " ".join(said)},
                {"role": "assistant", "content": " ".join(reversed(said))},
            ]
        }


def write_chats(path, count, seed):
    path.write_text("".join(json.dumps(c) + "\n" for c in conversations(count, seed)))
    return path


def chat_tokenizer(directory):
    """A Qwen 2 style tokenizer directory whose tokenizer_config.json has `CHATML`."""
    tokenizer = write_tokenizer_files("qwen2", directory)
    config_path = tokenizer / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "chat_template": CHATML}))
    return tokenizer


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    tokenizer = chat_tokenizer(root / "tokenizer")
    for name, count, seed in (("train", 400, 1), ("heldout", 40, 2)):
        chats = write_chats(root / f"{name}.jsonl", count, seed)
        result = neox(
            "data",
            "preprocess-chat",
            "--input",
            chats,
            "--tokenizer-path",
            tokenizer,
            "--output-prefix",
            root / name,
        )
        assert result.returncode == 0, result.stderr
        assert "labelled" in result.stdout
    data = str(root / "train_messages_document")
    labels = str(root / "train_messages_label_document")
    runs = {}
    for name, label_paths in (("sft", {"train_label_data_paths": [labels]}), ("plain", {})):
        values = dict(
            train_data_paths=[data],
            valid_data_paths=[data],
            test_data_paths=[data],
            vocab_file=str(tokenizer / "tokenizer.json"),
            save=str(root / name),
            launcher="local",
            pack_impl="unpacked",
            train_iters=60,
            train_micro_batch_size_per_gpu=8,
            checkpoint_factor=60,
            eval_interval=1000,
            **label_paths,
        )
        result = neox("train", write_yaml(root / f"{name}.yml", {**TINY_RUN, **values}))
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = root / name
    return root, runs


def heldout_losses(root, run):
    """Mean next-token loss of the trained model over the held-out conversations' assistant
    tokens and over their other tokens (the label file says which is which)."""
    _, _, model = load_model(run / "global_step60")
    tokens = TokenFile(str(root / "heldout_messages_document"))
    labels = TokenFile(str(root / "heldout_messages_label_document"))
    sums = {"assistant": [0.0, 0], "other": [0.0, 0]}
    with torch.no_grad():
        for i in range(len(tokens)):
            ids = torch.as_tensor(tokens[i].astype("int64"))
            logits = model(ids[None, :-1])[0].float()
            losses = torch.nn.functional.cross_entropy(logits, ids[1:], reduction="none")
            learned = torch.as_tensor(labels[i][1:].astype("int64")) != -100
            for key, mask in (("assistant", learned), ("other", ~learned)):
                sums[key][0] += float(losses[mask].sum())
                sums[key][1] += int(mask.sum())
    return {key: total / count for key, (total, count) in sums.items()}


def test_sft_learns_the_assistant_tokens_only(sft):
    root, runs = sft
    vocab = Tokenizer.from_file(str(root / "tokenizer" / "tokenizer.json")).get_vocab_size()
    chance = math.log(vocab)  # the loss of a uniform guess
    sft_losses, plain = heldout_losses(root, runs["sft"]), heldout_losses(root, runs["plain"])
    losses = train_losses(runs["sft"])
    assert losses[60] < losses[1] - 1.0, losses
    # the assistant's tokens: learned by both runs
    assert sft_losses["assistant"] < chance - 2.0, sft_losses
    assert plain["assistant"] < chance - 2.0, plain
    # the rest: learned directly by the run without labels only (measured: 3.83 against 1.69)
    assert sft_losses["other"] > plain["other"] + 1.0, (sft_losses, plain)
