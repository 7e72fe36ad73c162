"""train_impl dpo and rm (GPT-NeoX's keys, dataset_impl pairwise) trained for real: one process
against data parallelism with ZeRO-1 and tensor parallelism (losses and metrics to 1e-5), an
exact DPO resume, the DPO reference model's origin, a reward model fine-tuned from a language
model's step, and runs that learn the preference on held-out pairs.

The pairs: a prompt from the corpus, then a response; the chosen responses are made of one half
of the vocabulary, the rejected ones of the other, so the preference is learnable and held-out
pairs measure it. Prompts carry no loss (label -100), as `neox data preprocess-chat` writes them.
"""

import contextlib
import json
import shutil

import numpy as np
import pytest
import torch

from neox_data import IGNORE_INDEX, TokenFile, TokenFileWriter, build_tokenizer
from neox_testing import TINY_RUN, side_by_side

from conftest import (
    as_if_killed_after,
    corpus_texts,
    neox_train,
    run_workers,
    step_only,
    tiny_config,
    write_config,
)

PAIRS = dict(
    train_impl="dpo",
    dataset_impl="pairwise",
    pos_train_data_paths=["a"],
    neg_train_data_paths=["b"],
)
TINY = dict(TINY_RUN, train_micro_batch_size_per_gpu=2, vocab_file="tokenizer.json")
METRICS = ("chosen_rewards", "rejected_rewards", "reward_acc", "margins", "chosen_pos")
RM_METRICS = ("pos_values", "neg_values", "margin", "accuracy")


def write_pairs(data_dir, root, name, count, seed):
    """Pairwise token and label files `root/{name}_{pos,neg}[_label]`; their prefixes."""
    tokenizer = build_tokenizer("HFTokenizer", str(data_dir / "tokenizer.json"))
    vocab = tokenizer.vocab_size
    rng = np.random.default_rng(seed)
    corpus = tokenizer.encode(corpus_texts()[0])
    halves = (np.arange(5, vocab // 2), np.arange(vocab // 2, vocab))
    prefixes = {
        f"{side}{kind}": str(root / f"{name}_{side}{kind}")
        for side in ("pos", "neg")
        for kind in ("", "_label")
    }
    with contextlib.ExitStack() as stack:
        writers = {
            key: stack.enter_context(TokenFileWriter(prefix, np.int32))
            for key, prefix in prefixes.items()
        }
        for _ in range(count):
            start = int(rng.integers(0, len(corpus) - 20))
            prompt = list(corpus[start : start + int(rng.integers(6, 14))])
            for side, half in zip(("pos", "neg"), halves, strict=True):
                length = int(rng.integers(6, 16))
                response = [int(t) for t in rng.choice(half, length)] + [tokenizer.eod_id]
                writers[side].add_document(prompt + response)
                writers[f"{side}_label"].add_document([IGNORE_INDEX] * len(prompt) + response)
    return prefixes


def write_kto(data_dir, root, name, count, seed):
    """KTO's unpaired data from the same kind of documents: each pair's chosen document
    desirable (reward +1 on its labelled tokens), its rejected one undesirable (-1), as
    `preprocess-chat --reward-key` writes them. Prefixes of the token, label and reward files."""
    pairs = write_pairs(data_dir, root, f"{name}_from", count, seed)
    prefixes = {kind: str(root / f"{name}_{kind}") for kind in ("tokens", "labels", "rewards")}
    sources = {
        side: (TokenFile(pairs[side]), TokenFile(pairs[f"{side}_label"])) for side in ("pos", "neg")
    }
    with contextlib.ExitStack() as stack:
        tokens, labels = (
            stack.enter_context(TokenFileWriter(prefixes[k], np.int32))
            for k in ("tokens", "labels")
        )
        rewards = stack.enter_context(TokenFileWriter(prefixes["rewards"], np.float32, floats=True))
        for i in range(count):
            for side, reward in (("pos", 1.0), ("neg", -1.0))[:: 1 if i % 2 else -1]:
                doc, doc_labels = (f[i] for f in sources[side])
                tokens.add_document(doc)
                labels.add_document(doc_labels)
                rewards.add_document(np.where(doc_labels != IGNORE_INDEX, reward, 0.0))
    return prefixes


@pytest.fixture(scope="module")
def pairs(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    return write_pairs(data_dir, root, "train", 64, 0), write_pairs(data_dir, root, "valid", 16, 1)


def dpo_config(data_dir, pairs, save, **overrides):
    train, valid = pairs
    values = dict(
        data_path=None,
        train_impl="dpo",
        dataset_impl="pairwise",
        dpo_beta=0.1,
        pos_train_data_paths=[train["pos"]],
        neg_train_data_paths=[train["neg"]],
        pos_train_label_data_paths=[train["pos_label"]],
        neg_train_label_data_paths=[train["neg_label"]],
        pos_valid_data_paths=[valid["pos"]],
        neg_valid_data_paths=[valid["neg"]],
        pos_valid_label_data_paths=[valid["pos_label"]],
        neg_valid_label_data_paths=[valid["neg_label"]],
        train_batch_size=8,
        train_micro_batch_size_per_gpu=2,
    )
    return tiny_config(data_dir, save, **{**values, **overrides})


def run_dpo(data_dir, pairs, root, name, processes, overrides):
    save = root / name
    config = write_config(root / f"{name}.yml", dpo_config(data_dir, pairs, save, **overrides))
    return run_workers([config], processes)


def by_step(save, prefix="", names=("train_loss", *METRICS)):
    """step -> {name: value} of a run's metrics.jsonl, for `names` each led by `prefix`."""
    found = {}
    for line in (save / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        values = {n: record[prefix + n] for n in names if prefix + n in record}
        if values:
            found.setdefault(record["step"], {}).update(values)
    return found


SINGLE = dict(train_iters=6, checkpoint_factor=3, eval_interval=3)
LAYOUTS = {
    "single": (1, SINGLE),
    "dp2-zero1": (2, dict(SINGLE, zero_optimization={"stage": 1})),
    "dp2-zero3": (2, dict(SINGLE, zero_optimization={"stage": 3})),
    "tp2": (2, dict(SINGLE, model_parallel_size=2)),
    "pp2": (2, dict(SINGLE, pipe_parallel_size=2)),
}


# reward models fine-tuned from the single DPO run's step 3 (a language model's weights)
# (a fine-tuning rate: Adam's first steps move every weight by about lr whatever the size of
# its gradient, which would turn the layouts' rounding in near-zero gradients into whole steps)
RM = dict(
    train_impl="rm",
    train_iters=10,
    eval_interval=5,
    finetune=True,
    extra_save_iters=[0],
    optimizer={"type": "Adam", "params": {"lr": 1.0e-3, "betas": [0.9, 0.95], "eps": 1.0e-6}},
)
RM_LAYOUTS = {
    "rm-single": (1, RM),
    "rm-dp2-zero1": (2, dict(RM, zero_optimization={"stage": 1})),
    "rm-tp2": (2, dict(RM, model_parallel_size=2)),
    "rm-pp2": (2, dict(RM, pipe_parallel_size=2)),
    "rm-dp2-tp2-zero1": (4, dict(RM, model_parallel_size=2, zero_optimization={"stage": 1})),
}


KTO_METRICS = ("pos_policy_logp", "neg_policy_logp", "pos_ref_logp", "kl", "reward_acc")
KTO = dict(train_impl="kto", kto_beta=0.1, train_iters=6, eval_interval=3)
KTO_LAYOUTS = {
    "kto-single": (1, KTO),
    "kto-dp2-zero1": (2, dict(KTO, zero_optimization={"stage": 1})),
    "kto-pp2": (2, dict(KTO, pipe_parallel_size=2)),
}


def run_kto(data_dir, kto, root, name, processes, overrides):
    train, valid = kto
    values = dict(
        data_path=None,
        train_data_paths=[train["tokens"]],
        train_label_data_paths=[train["labels"]],
        train_reward_data_paths=[train["rewards"]],
        valid_data_paths=[valid["tokens"]],
        valid_label_data_paths=[valid["labels"]],
        valid_reward_data_paths=[valid["rewards"]],
        pack_impl="unpacked",
        train_batch_size=8,
        train_micro_batch_size_per_gpu=2,
    )
    config = tiny_config(data_dir, root / name, **{**values, **overrides})
    return run_workers([write_config(root / f"{name}.yml", config)], processes)


@pytest.fixture(scope="module")
def kto_runs(data_dir, tmp_path_factory):
    """KTO trained in every layout of `KTO_LAYOUTS`, two at a time. The root directory."""
    root = tmp_path_factory.mktemp("kto")
    kto = write_kto(data_dir, root, "train", 32, 2), write_kto(data_dir, root, "valid", 8, 3)
    calls = {
        name: (run_kto, data_dir, kto, root, name, processes, overrides)
        for name, (processes, overrides) in KTO_LAYOUTS.items()
    }
    for future in side_by_side(calls).values():
        future.result()
    return root


@pytest.mark.parametrize("name", ["kto-dp2-zero1", "kto-pp2"])
def test_a_layout_gives_the_single_process_kto_losses_and_metrics(kto_runs, name):
    names = ("train_loss", *KTO_METRICS)
    single, other = (
        by_step(kto_runs / "kto-single", names=names),
        by_step(kto_runs / name, names=names),
    )
    assert sorted(other) == sorted(single) == [1, 2, 3, 4, 5, 6]
    for step, values in single.items():
        assert sorted(other[step]) == sorted(names)
        for key, value in values.items():
            assert other[step][key] == pytest.approx(value, rel=1e-5, abs=1e-5), (step, key)


def test_kto_raises_the_desirable_and_lowers_the_undesirable_held_out(kto_runs):
    """Before training the policy is its reference (KL 0); after 6 steps the held-out desirable
    responses are likelier than under the reference and the undesirable ones less likely."""
    names = ("loss", "pos_policy_logp", "neg_policy_logp", "pos_ref_logp", "neg_ref_logp")
    valid = by_step(kto_runs / "kto-single", "valid_", (*names, "kl", "reward_acc"))
    assert valid[0]["kl"] == 0 and valid[0]["pos_policy_logp"] == valid[0]["pos_ref_logp"]
    gain = {t: valid[t]["pos_policy_logp"] - valid[t]["pos_ref_logp"] for t in (3, 6)}
    loss = {t: valid[t]["neg_policy_logp"] - valid[t]["neg_ref_logp"] for t in (3, 6)}
    assert gain[6] > 0 > loss[6]
    assert valid[6]["loss"] < valid[0]["loss"]
    assert valid[6]["reward_acc"] > valid[0]["reward_acc"]


@pytest.fixture(scope="module")
def runs(data_dir, pairs, tmp_path_factory):
    """Every layout of `LAYOUTS` trained, two at a time; then the single process's run killed
    after its step-3 checkpoint and resumed, beside the reward models of `RM_LAYOUTS` starting
    from that step. The root directory."""
    root = tmp_path_factory.mktemp("dpo")
    calls = {
        name: (run_dpo, data_dir, pairs, root, name, processes, overrides)
        for name, (processes, overrides) in LAYOUTS.items()
    }
    for future in side_by_side(calls).values():
        future.result()
    crashed = root / "crashed"
    shutil.copytree(root / "single", crashed)
    as_if_killed_after(crashed, 3, 6)
    start = str(root / "single" / "global_step3")
    calls = {
        "crashed": (run_dpo, data_dir, pairs, root, "crashed", 1, dict(SINGLE, load=str(crashed)))
    }
    for name, (processes, overrides) in RM_LAYOUTS.items():
        calls[name] = (run_dpo, data_dir, pairs, root, name, processes, dict(overrides, load=start))
    outputs = {name: future.result() for name, future in side_by_side(calls).items()}
    assert "resumed from" in outputs["crashed"] and "at step 3" in outputs["crashed"]
    assert "is a language model's step" in outputs["rm-single"]
    return root


@pytest.mark.parametrize("name", ["dp2-zero1", "dp2-zero3", "tp2", "pp2"])
def test_a_layout_gives_the_single_process_dpo_losses_and_metrics(runs, name):
    single, other = by_step(runs / "single"), by_step(runs / name)
    assert sorted(other) == sorted(single) == [1, 2, 3, 4, 5, 6]
    for step, values in single.items():
        assert sorted(other[step]) == sorted(values) == sorted(("train_loss", *METRICS))
        for key, value in values.items():
            assert other[step][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)
    valid, other_valid = by_step(runs / "single", "valid_"), by_step(runs / name, "valid_")
    for step in (0, 3, 6):
        for key, value in valid[step].items():
            assert other_valid[step][key] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_dpo_learns_the_preference_on_held_out_pairs(runs):
    """Before training the policy is its reference: no reward, no margin, loss log 2; after 6
    steps the held-out pairs' chosen responses have the higher reward."""
    valid = by_step(runs / "single", "valid_", ("loss", *METRICS))
    assert valid[0]["loss"] == pytest.approx(np.log(2), rel=1e-6)
    assert valid[0]["margins"] == 0 and valid[0]["reward_acc"] == 0
    assert valid[6]["reward_acc"] >= 0.8
    assert valid[6]["margins"] > valid[3]["margins"] > 0
    assert valid[6]["loss"] < valid[3]["loss"] < valid[0]["loss"]
    assert valid[6]["chosen_rewards"] > 0 > valid[6]["rejected_rewards"]


def test_a_resumed_dpo_run_repeats_the_uninterrupted_one(runs):
    full, again = by_step(runs / "single"), by_step(runs / "crashed")
    assert sorted(again) == [4, 5, 6]
    for step, values in again.items():
        for key, value in values.items():
            assert value == pytest.approx(full[step][key], rel=1e-12, abs=1e-12), (step, key)
    state = json.loads((runs / "crashed" / "global_step6" / "neox_state.json").read_text())
    assert state["reference"] == "init"  # the seeded initial weights, not step 3's


def test_a_fine_tuning_run_takes_its_start_as_reference_and_keeps_it(
    runs, data_dir, pairs, tmp_path
):
    """finetune from a step (into a pipeline): the reference is that step (rewards 0 at the first
    step); resumed later, the run reads the reference from there again, and says so when it is
    gone."""
    origin = step_only(runs / "single", tmp_path / "origin", step=3)
    values = dict(train_iters=2, checkpoint_factor=1, load=str(origin), finetune=True)
    # in a pipeline: its reference runs stage by stage beside the policy's engine
    run_dpo(data_dir, pairs, tmp_path, "tuned", 2, dict(values, pipe_parallel_size=2))
    first = by_step(tmp_path / "tuned")[1]
    assert first["chosen_rewards"] == 0 and first["margins"] == 0
    assert first["train_loss"] == pytest.approx(np.log(2), rel=1e-6)
    state = json.loads((tmp_path / "tuned" / "global_step2" / "neox_state.json").read_text())
    assert state["reference"] == str((origin / "global_step3").resolve())
    as_if_killed_after(tmp_path / "tuned", 1, 2)
    shutil.move(origin, tmp_path / "moved")
    config = write_config(
        tmp_path / "resume.yml",
        dpo_config(data_dir, pairs, tmp_path / "tuned", train_iters=2, checkpoint_factor=1),
    )
    result = neox_train("train", config)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the reference model" in result.stderr and "global_step3" in result.stderr
    assert not (tmp_path / "tuned" / "global_step2").exists()  # nothing trained


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (dict(train_impl="dpo"), "train_impl dpo with dataset_impl gpt2"),
        (dict(dataset_impl="pairwise", pos_train_data_paths=["a"]), "neg_train_data_paths has 0"),
        (dict(train_impl="kto"), "train_impl kto without train_reward_data_paths"),
        (
            dict(
                train_impl="kto",
                train_data_paths=["a"],
                train_reward_data_paths=["r"],
                train_micro_batch_size_per_gpu=3,
            ),
            "train_micro_batch_size_per_gpu must be even, got 3",
        ),
        (dict(train_data_paths=["a"], train_reward_data_paths=["r"]), "only KTO reads reward"),
        (dict(train_data_paths=["a"], train_reward_data_paths=["r", "s"]), "2 files for 1"),
        (dict(train_impl="reinforce"), "online data server"),
        (dict(pos_train_data_paths=["a"], neg_train_data_paths=["b"]), "set dataset_impl"),
        (
            dict(PAIRS, pipe_parallel_size=2, model_parallel_size=2, sequence_parallel=True),
            "pipe_parallel_size 2 and sequence_parallel is not supported yet",
        ),
        (dict(PAIRS, train_impl="rm", sequence_parallel=True, model_parallel_size=2), "rm with"),
        (dict(value_head=True), "value_head"),
        (dict(PAIRS, moe_num_experts=4), "mixture-of-experts layers is not supported yet"),
        (dict(PAIRS, dpo_beta=0), "dpo_beta must be positive"),
        (
            dict(PAIRS, pos_train_label_data_paths=["c"]),
            "give pos_train_label_data_paths and neg_train_label_data_paths together",
        ),
    ],
)
def test_a_dpo_config_that_cannot_train_says_why(tmp_path, values, message):
    from neox_train import ConfigError, load_run_config

    config = write_config(tmp_path / "run.yml", dict(TINY, **values))
    with pytest.raises(ConfigError, match=message):
        load_run_config([config])


@pytest.mark.parametrize("name", ["rm-dp2-zero1", "rm-tp2", "rm-pp2", "rm-dp2-tp2-zero1"])
def test_a_layout_gives_the_single_process_reward_model(runs, name):
    """Fine-tuned from a language model's step at its own layout or another (whose weights are
    read through layout.json, ZeRO's fp32 copies of them refreshed), every layout trains the
    reward model of one process."""
    names = ("train_loss", *RM_METRICS)
    single, other = by_step(runs / "rm-single", names=names), by_step(runs / name, names=names)
    assert sorted(other) == sorted(single) == list(range(1, 11))
    for step, values in single.items():
        assert sorted(other[step]) == sorted(names)
        for key, value in values.items():
            assert other[step][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)


def test_a_reward_model_starts_from_a_language_models_weights_and_learns(runs):
    from neox_model import load_state_dict

    _, _, source = load_state_dict(runs / "single" / "global_step3")
    _, manifest, start = load_state_dict(runs / "rm-single" / "global_step0")
    assert manifest.config.value_head and "embed_out.weight" in source
    assert set(start) == set(source) - {"embed_out.weight"} | {"score.weight"}
    for name, tensor in start.items():
        assert name == "score.weight" or torch.equal(tensor, source[name]), name
    assert start["score.weight"].shape == (1, 32) and start["score.weight"].abs().sum() > 0
    valid = by_step(runs / "rm-single", "valid_", ("loss", *RM_METRICS))
    assert valid[10]["accuracy"] >= 0.8 and valid[10]["accuracy"] > valid[0]["accuracy"]
    assert valid[10]["margin"] > valid[5]["margin"] > valid[0]["margin"]
    assert valid[10]["loss"] < valid[5]["loss"] < valid[0]["loss"]
