"""NeoxLM's three request types called directly, against the model's own log-softmax."""

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance

from neox_eval import NeoxLM

from conftest import SEQ_LENGTH, sentence


def requests(kind, *args):
    return [Instance(kind, {}, arguments, idx) for idx, arguments in enumerate(args)]


def reference(model, context_ids, continuation_ids):
    """log p(continuation | context) from one forward over the whole sequence."""
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logprobs = F.log_softmax(model(ids)[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    picked = logprobs.gather(1, targets[:, None])[:, 0]
    return float(picked[len(context_ids) - 1 :].sum())


@pytest.fixture(scope="module")
def lm(loaded):
    return NeoxLM(loaded.model, loaded.tokenizer, seq_length=SEQ_LENGTH, batch_size=3)


def always(model, token):
    """A copy of `model` that predicts `token` at every position with near certainty."""
    import copy

    fixed = copy.deepcopy(model)
    with torch.no_grad():
        fixed.final_layer_norm.weight.zero_()  # its output is now the bias, b, everywhere
        bias = fixed.final_layer_norm.bias
        fixed.embed_out.weight.zero_()
        fixed.embed_out.weight[token] = 100 * bias / bias.norm()
    return fixed


def test_loglikelihood_is_the_model_log_probability_of_the_continuation(lm, loaded):
    tok = loaded.tokenizer
    (got, greedy), (spaced, _) = lm.loglikelihood(
        requests("loglikelihood", ("the cat sat on", " a mat"), ("the cat sat on ", "a mat"))
    )
    context = tok.encode("the cat sat on")
    whole = tok.encode("the cat sat on a mat")
    assert got == pytest.approx(reference(loaded.model, context, whole[len(context) :]), abs=1e-5)
    # the context's trailing space belongs to the continuation, as lm-eval's HF backend has it
    assert spaced == got
    assert greedy is False


def test_an_empty_context_is_the_end_of_document_token(lm, loaded):
    tok = loaded.tokenizer
    [(got, _)] = lm.loglikelihood(requests("loglikelihood", ("", "the dog ran")))
    expected = reference(loaded.model, [tok.eod_id], tok.encode("the dog ran"))
    assert got == pytest.approx(expected, abs=1e-5)


def test_long_contexts_are_cut_from_the_left_to_seq_length(lm, loaded):
    long_tail, short_tail = sentence(1, 40), sentence(1, 5)
    assert len(loaded.tokenizer.encode(long_tail)) > SEQ_LENGTH
    contexts = [
        sentence(seed, 2) + " " + tail for tail in (long_tail, short_tail) for seed in (2, 3)
    ]
    results = lm.loglikelihood(requests("loglikelihood", *[(c, " the park") for c in contexts]))
    (a, _), (b, _), (c, _), (d, _) = results
    assert a == pytest.approx(b, abs=1e-5)  # the different beginnings are out of the window
    assert abs(c - d) > 1e-3  # inside the window they count


def test_results_do_not_depend_on_batch_size_or_order(loaded):
    pairs = [(sentence(i, 3 + 4 * i), " " + sentence(50 + i, 1 + i % 3)) for i in range(7)]
    one = NeoxLM(loaded.model, loaded.tokenizer, batch_size=1)
    four = NeoxLM(loaded.model, loaded.tokenizer, batch_size=4)
    by_one = one.loglikelihood(requests("loglikelihood", *pairs))
    by_four = four.loglikelihood(requests("loglikelihood", *reversed(pairs)))[::-1]
    for (x, gx), (y, gy) in zip(by_one, by_four, strict=True):
        assert x == pytest.approx(y, abs=1e-5) and gx == gy


def test_rolling_loglikelihood_of_a_short_text_is_one_forward_after_end_of_document(lm, loaded):
    tok, text = loaded.tokenizer, sentence(9, 8)
    [got] = lm.loglikelihood_rolling(requests("loglikelihood_rolling", (text,)))
    assert got == pytest.approx(reference(loaded.model, [tok.eod_id], tok.encode(text)), abs=1e-5)


def test_rolling_loglikelihood_predicts_every_token_of_a_long_text_once(loaded):
    """Windows of seq_length: a text of n tokens costs ceil(n / seq_length) windows and its
    total does not depend on how the windows are batched."""
    text = sentence(11, 60)
    n = len(loaded.tokenizer.encode(text))
    assert n > 2 * SEQ_LENGTH
    shapes = []
    hook = loaded.model.register_forward_pre_hook(lambda _, args: shapes.append(args[0].shape))
    try:
        lm = NeoxLM(loaded.model, loaded.tokenizer, batch_size=1)
        [total] = lm.loglikelihood_rolling(requests("loglikelihood_rolling", (text,)))
    finally:
        hook.remove()
    assert shapes == [(1, SEQ_LENGTH)] * -(-n // SEQ_LENGTH)
    lm_batched = NeoxLM(loaded.model, loaded.tokenizer, batch_size=8)
    [batched] = lm_batched.loglikelihood_rolling(requests("loglikelihood_rolling", (text,)))
    assert batched == pytest.approx(total, abs=1e-4)


def greedy_reference(model, ids, steps, rows):
    """Greedy decoding by recomputing the whole sequence each step (no cache)."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids]))[0, -1, :rows].argmax()))
    return ids


def test_greedy_generation_is_the_model_argmax_and_respects_max_gen_toks(lm, loaded):
    tok, context = loaded.tokenizer, "Q: the bird sang\nA:"
    options = {"until": [], "max_gen_toks": 6, "do_sample": False}
    [text] = lm.generate_until(requests("generate_until", (context, options)))
    ids = greedy_reference(loaded.model, tok.encode(context), 6, tok.vocab_size)
    assert text == lm.tok_decode(ids[len(tok.encode(context)) :])


def test_generation_stops_at_stop_strings_and_end_of_document(loaded):
    tok = loaded.tokenizer
    [cat] = tok.encode(" cat")
    cats = NeoxLM(always(loaded.model, cat), tok)
    calls = []
    cats.model.register_forward_hook(lambda *_: calls.append(1))
    ask = {"until": ["cat cat", "\n"], "max_gen_toks": 6}
    free, stopped = cats.generate_until(
        requests("generate_until", ("the dog", {"max_gen_toks": 4}), ("the dog", ask))
    )
    assert free == " cat cat cat cat"
    assert stopped == " "  # cut before the first stop string, after two tokens
    assert len(calls) == 4 + 2  # the second request stopped generating once it was done
    quiet = NeoxLM(always(loaded.model, tok.eod_id), tok)
    [nothing] = quiet.generate_until(requests("generate_until", ("the dog", {"max_gen_toks": 5})))
    assert nothing == ""


def test_sampled_generation_is_seeded(loaded):
    options = {"until": [], "max_gen_toks": 8, "do_sample": True, "temperature": 1.5}
    args = [("the cat", options)] * 3

    def sample(seed):
        lm = NeoxLM(loaded.model, loaded.tokenizer, batch_size=3, seed=seed)
        return lm.generate_until(requests("generate_until", *args))

    first = sample(1)
    assert sample(1) == first
    assert sample(2) != first
    assert len(set(first)) > 1  # rows of one batch draw different tokens


def test_generation_options_it_cannot_honour_are_errors(lm):
    with pytest.raises(ValueError, match="num_beams are not supported by neox-eval"):
        lm.generate_until(requests("generate_until", ("x", {"num_beams": 4})))
    with pytest.raises(ValueError, match="max_gen_toks \\(40\\) leaves no room"):
        lm.generate_until(requests("generate_until", ("x", {"max_gen_toks": 40})))


def test_seq_length_beyond_the_model_positions_is_refused(loaded):
    with pytest.raises(ValueError, match="seq_length 41 must be between 1 and the model's"):
        NeoxLM(loaded.model, loaded.tokenizer, seq_length=SEQ_LENGTH + 1)


def test_a_tokenizer_that_adds_a_bos_encodes_as_lm_evals_hf_backend(tmp_path, loaded):
    """Llama 3's tokenizer.json prepends <|begin_of_text|>: lm-eval's HF backend (its own
    `tok_encode` and `prefix_token_id`, on transformers' tokenizer of the same files) keeps it
    before a text unless asked not to or the text starts with it, and conditions an empty
    context on it; so does NeoxLM. GPT-NeoX's tokenizer has none: the prefix is end-of-document."""
    from types import SimpleNamespace

    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    from neox_data import HFTokenizer
    from neox_testing import write_tokenizer_files

    directory = write_tokenizer_files("llama3", tmp_path)
    ours = NeoxLM(loaded.model, HFTokenizer(directory / "tokenizer.json"), seq_length=SEQ_LENGTH)
    theirs = SimpleNamespace(
        tokenizer=AutoTokenizer.from_pretrained(directory),
        add_bos_token=None,
        custom_prefix_token_id=None,
    )
    theirs.prefix_token_id = HFLM.prefix_token_id.fget(theirs)
    assert ours.prefix_token_id == theirs.prefix_token_id == 384  # <|begin_of_text|>
    for text in ("the cat sat on a mat", "<|begin_of_text|>the cat", " x\n", ""):
        for special in (None, True, False):
            expected = HFLM.tok_encode(theirs, text, add_special_tokens=special)
            assert ours.tok_encode(text, add_special_tokens=special) == expected, (text, special)
    gpt_neox = NeoxLM(loaded.model, loaded.tokenizer, seq_length=SEQ_LENGTH)
    assert gpt_neox.prefix_token_id == loaded.tokenizer.eod_id
