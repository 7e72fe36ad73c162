"""`NeoxLM`: EleutherAI's lm-evaluation-harness `LM` over a neox `Transformer` and tokenizer.

Tokenization follows lm-eval's Hugging Face backend exactly, through lm-eval's own `TemplateLM`:
whitespace at the end of a context moves to the front of the continuation, context + continuation
are encoded together and split at the length of the encoded context, an empty context is the
tokenizer's BOS (else the end-of-document token). A tokenizer whose encoding puts a BOS before
every text (Llama 3's tokenizer.json) puts it before contexts, rolling texts and prompts too, as
transformers' `encode` does for that backend. Scoring (`scoring`) and generation (`generation`)
then read the model the way that backend reads a Hugging Face model, so a model exported to
Hugging Face and evaluated with lm-eval's `hf` backend gets the same numbers.

The log-softmax runs over the vocabulary as padded for one device (the rows an export to Hugging
Face keeps), whatever tensor-parallel layout the model was saved or loaded with; generation
chooses among the tokenizer's ids only. Under tensor parallelism every rank must make the same
calls: each computes the same gathered logits and returns the same results.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from neox_data import Tokenizer
from neox_eval.generation import continue_batch, equal_length_batches, sampling_of
from neox_eval.scoring import Score, TokenPair, score_pairs
from neox_model import Transformer

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's Hugging Face backend's default


class NeoxLM(TemplateLM):  # type: ignore[misc]  # lm-eval is untyped
    """lm-eval's three request types over a neox model (put in eval mode here)."""

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        *,
        seq_length: int | None = None,
        batch_size: int = 1,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        seed: int = 1234,
    ) -> None:
        """`seq_length` (default: the model's) bounds every window the model reads; longer
        contexts are cut from the left. `seed` seeds sampled generation (do_sample)."""
        super().__init__()
        self.seq_length = seq_length or model.config.seq_length
        if not 0 < self.seq_length <= model.config.max_positions:
            raise ValueError(
                f"seq_length {self.seq_length} must be between 1 and the model's positions "
                f"({model.config.max_positions})"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model.eval()
        self.neox_tokenizer = tokenizer
        self.batch_size = batch_size
        self._max_gen_toks = max_gen_toks
        self.seed = seed
        self._device = model.embed_in.weight.device

    # -- what TemplateLM asks for -----------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.neox_tokenizer.eod_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context and the first rolling window are conditioned on: the BOS the
        tokenizer puts before every text (Llama 3's <|begin_of_text|>), else end-of-document
        (GPT-NeoX's, Qwen's), as lm-eval's Hugging Face backend takes a tokenizer's BOS."""
        bos: int | None = getattr(self.neox_tokenizer, "bos_id", None)
        return self.eot_token_id if bos is None else bos

    @property
    def max_length(self) -> int:
        return self.seq_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    def tok_encode(
        self,
        string: str,
        add_special_tokens: bool | None = None,
        left_truncate_len: int | None = None,
        **kwargs: Any,
    ) -> list[int]:
        """The ids of `string`, the last `left_truncate_len` of them if given. As lm-eval's
        Hugging Face backend encodes for a causal model, a tokenizer.json's post-processor
        (Llama 3's <|begin_of_text|>) runs unless `add_special_tokens` is False or, left None,
        the string already starts with the prefix token's text; neox's other tokenizers add no
        special tokens."""
        if add_special_tokens is None:
            add_special_tokens = not string.startswith(self._prefix_text)
        backend = getattr(self.neox_tokenizer, "backend", None)  # a tokenizers.Tokenizer
        if backend is not None and not add_special_tokens:
            ids = list(backend.encode(string, add_special_tokens=False).ids)
        else:
            ids = self.neox_tokenizer.encode(string)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `tokens`; with `skip_special_tokens` without end-of-document and, for the
        Hugging Face `tokenizers` based tokenizers, any other special token (as transformers
        decodes for lm-eval's Hugging Face backend)."""
        if not skip_special_tokens:
            return self.neox_tokenizer.decode(tokens)
        ids = [i for i in tokens if i != self.eot_token_id]
        backend = getattr(self.neox_tokenizer, "backend", None)  # a tokenizers.Tokenizer
        if backend is not None:
            return str(backend.decode(ids, skip_special_tokens=True))
        return self.neox_tokenizer.decode(ids)

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records about the model in its results."""
        return {"model_dtype": str(self.model.embed_in.weight.dtype), "max_length": self.seq_length}

    # -- scoring ----------------------------------------------------------------------------

    def _loglikelihood_tokens(
        self,
        requests: Sequence[tuple[tuple[str, str] | None, list[int], list[int]]],
        disable_tqdm: bool = False,
        **kwargs: Any,
    ) -> list[tuple[float, bool]]:
        scores = self._score([(ctx, cont) for _, ctx, cont in requests], disable_tqdm)
        results = [(score.logprob, score.greedy) for score in scores]
        for (key, _, _), result in zip(requests, results, strict=True):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(
        self, requests: list[Instance], disable_tqdm: bool = False
    ) -> list[float]:
        """Each text's log-likelihood, read in windows of seq_length tokens that each predict
        tokens not predicted before (lm-eval's rolling windows over the encoded text, a BOS
        included; the first conditioned on `prefix_token_id`)."""
        per_text = [self._rolling_windows(request.args[0]) for request in requests]
        scores = iter(self._score([pair for pairs in per_text for pair in pairs], disable_tqdm))
        totals = []
        for request, pairs in zip(requests, per_text, strict=True):
            totals.append(sum(next(scores).logprob for _ in pairs))
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, totals[-1])
        return totals

    def _rolling_windows(self, text: str) -> list[TokenPair]:
        windows = get_rolling_token_windows(
            token_list=self.tok_encode(text),
            prefix_token=self.prefix_token_id,
            max_seq_len=self.max_length,
            context_len=1,
        )
        return [make_disjoint_window(pair) for pair in windows]

    def _score(self, pairs: Sequence[TokenPair], disable_tqdm: bool) -> list[Score]:
        with self._progress(len(pairs), "scoring", disable_tqdm) as progress:
            return score_pairs(
                self.model,
                pairs,
                max_length=self.max_length,
                batch_size=self.batch_size,
                rows=self.model.config.padded_vocab_size,
                device=self._device,
                on_batch=progress.update,
            )

    # -- generation -------------------------------------------------------------------------

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Each request's continuation, cut before its first stop string; requests with the
        same generation options run together."""
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            key = json.dumps(request.args[1], sort_keys=True, default=str)
            groups.setdefault(key, []).append(index)
        texts: list[str] = [""] * len(requests)
        with self._progress(len(requests), "generating", disable_tqdm) as progress:
            for indices in groups.values():
                contexts = [requests[i].args[0] for i in indices]
                outputs = self._generate(contexts, requests[indices[0]].args[1], progress)
                for index, text in zip(indices, outputs, strict=True):
                    texts[index] = text
                    self.cache_hook.add_partial("generate_until", requests[index].args, text)
        return texts

    def _generate(self, contexts: list[str], options: dict[str, Any], progress: Any) -> list[str]:
        settings = dict(normalize_gen_kwargs(options, self.max_gen_toks))
        until = handle_stop_sequences(settings.pop("until", None), eos=self._eos_text)
        max_new = int(settings.pop("max_gen_toks"))
        sampling = sampling_of(settings)
        room = self.max_length - max_new
        if room <= 0:
            raise ValueError(
                f"max_gen_toks ({max_new}) leaves no room for a context in seq_length "
                f"({self.max_length}); lower max_gen_toks or raise seq_length"
            )
        prompts = [self.tok_encode(context, left_truncate_len=room) for context in contexts]
        generator = torch.Generator(self._device).manual_seed(self.seed)
        rows = min(self.neox_tokenizer.vocab_size, self.model.vocab)
        texts = [""] * len(prompts)
        for batch in equal_length_batches([len(p) for p in prompts], self.batch_size):
            new = continue_batch(
                self.model,
                [prompts[i] for i in batch],
                max_new_tokens=max_new,
                rows=rows,
                sampling=sampling,
                finished=partial(self._finished, until),
                generator=generator,
            )
            for index, ids in zip(batch, new, strict=True):
                texts[index] = postprocess_generated_text(self.tok_decode(ids), until, None)
            progress.update(len(batch))
        return texts

    @property
    def _eos_text(self) -> str:
        return self.tok_decode([self.eot_token_id], skip_special_tokens=False)

    @property
    def _prefix_text(self) -> str:
        return self.tok_decode([self.prefix_token_id], skip_special_tokens=False)

    def _finished(self, until: list[str], new: list[int]) -> bool:
        if new[-1] == self.eot_token_id:
            return True
        text = self.tok_decode(new, skip_special_tokens=False)
        return any(stop in text for stop in until if stop)

    def _progress(self, total: int, what: str, disable: bool) -> Any:
        """A progress bar on the first tensor-parallel rank."""
        hidden = disable or self.model.tp.rank > 0
        return tqdm(total=total, desc=f"neox-eval {what}", disable=hidden)
