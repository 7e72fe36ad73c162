"""Local task YAMLs (multiple choice, perplexity, generation) through lm-eval's simple_evaluate."""

import math
import random

import pytest
import torch

from neox_eval import NeoxLM, evaluate_tasks, resolve_tasks, run_tasks, task_metrics

from conftest import GEN_DOCS, MC_DOCS, PPL_DOCS, TASKS


@pytest.fixture(scope="module")
def results(loaded, tasks):
    lm = NeoxLM(loaded.model, loaded.tokenizer, batch_size=4)
    selection = resolve_tasks([str(tasks[name]) for name in TASKS])
    return run_tasks(lm, selection, log_samples=True, bootstrap_iters=0)


def per_doc(results, task):
    return {s["doc_id"]: s["filtered_resps"] for s in results["samples"][task]}


def test_multiple_choice_scores_each_choice_after_the_question(results, loaded):
    lm = NeoxLM(loaded.model, loaded.tokenizer)
    doc = MC_DOCS[4]
    context = f"Question: {doc['question']}\nAnswer:"
    direct = [lm.loglikelihood([_request(context, " " + choice)])[0] for choice in doc["choices"]]
    harness = per_doc(results, "neox_mc")[4]
    assert [x[0] for x in harness] == pytest.approx([x[0] for x in direct], abs=1e-5)
    assert [x[1] for x in harness] == [x[1] for x in direct]
    correct = [
        max(range(3), key=lambda c: per_doc(results, "neox_mc")[i][c][0]) == d["label"]
        for i, d in enumerate(MC_DOCS)
    ]
    assert results["results"]["neox_mc"]["acc,none"] == pytest.approx(sum(correct) / len(correct))


def _request(context, continuation):
    from lm_eval.api.instance import Instance

    return Instance("loglikelihood", {}, (context, continuation), 0)


def test_perplexity_is_the_rolling_loglikelihood_per_word(results):
    lls = per_doc(results, "neox_ppl")
    words = sum(len(d["text"].split()) for d in PPL_DOCS)
    expected = math.exp(-sum(lls[i][0] for i in range(len(PPL_DOCS))) / words)
    assert results["results"]["neox_ppl"]["word_perplexity,none"] == pytest.approx(expected)


def test_generation_answers_every_document(results):
    answers = per_doc(results, "neox_gen")
    assert sorted(answers) == list(range(len(GEN_DOCS)))
    assert all(len(a) == 1 and a[0] and "\n" not in a[0] for a in answers.values())
    assert results["results"]["neox_gen"]["exact_match,none"] == 0.0  # a random model


def test_task_metrics_reads_lm_evals_results(results):
    metrics = task_metrics(results)
    assert set(metrics) == set(TASKS)
    assert set(metrics["neox_mc"]) == {"acc", "acc_norm"}  # bootstrap_iters 0: no stderr
    assert (
        metrics["neox_ppl"]["bits_per_byte"] == results["results"]["neox_ppl"]["bits_per_byte,none"]
    )


def test_evaluate_tasks_in_training_leaves_the_model_mode_and_random_states(loaded, tasks):
    model = loaded.model.train()
    random.seed(5)
    torch.manual_seed(5)
    expected = (random.random(), torch.rand(1))
    random.seed(5)
    torch.manual_seed(5)
    try:
        metrics = evaluate_tasks(
            model,
            loaded.tokenizer,
            [str(tasks["neox_mc"])],
            seq_length=32,
            limit=3,
            num_fewshot=1,
            batch_size=2,
        )
        assert model.training
    finally:
        model.eval()
    assert (random.random(), torch.rand(1)) == expected
    assert set(metrics) == {"neox_mc"} and 0.0 <= metrics["neox_mc"]["acc"] <= 1.0


def test_a_directory_is_every_task_in_it(tasks):
    selection = resolve_tasks([str(tasks["neox_mc"].parent)])
    assert sorted(selection.specs) == sorted(TASKS)
