"""HFTokenizer reads Llama 3's and Qwen 2 / 2.5 / 3's tokenizer.json as transformers does: the
same ids, end-of-document the family's own, BOS where the file's post-processor adds it. The
files are built here in the families' layouts (neox_testing.write_tokenizer_files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import transformers
from tokenizers import AddedToken, models
from tokenizers import Tokenizer as RawTokenizer

from neox_data import HFTokenizer, TokenFile, TokenizerSpec, preprocess
from neox_testing import write_tokenizer_files

# family -> (its end of document, the BOS its post-processor prepends)
FAMILIES = {
    "llama3": ("<|end_of_text|>", "<|begin_of_text|>"),
    "qwen2": ("<|endoftext|>", None),
}
# Beside conftest's VARIED_TEXTS: the families' own tokens in text (Llama 3's chat headers,
# Qwen's turns and Qwen 3's non-special <think>), digit runs the two regexes split differently,
# decomposed and compatibility characters (Qwen's NFC), contractions in any case.
FAMILY_TEXTS = [
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n<think>\nok\n</think>\n\nyes",
    "a<|end_of_text|>b<|endoftext|>c</s>d",
    "1234567890 12 + 345 = 357, 0.5e-10 99999",
    "cafe\u0301 e\u0301t\u00e9 \uff26\uff55\uff4c\uff4c \u212b \ufb01",
    "IT'S they'RE We'Ve 'll 'd\r\n\r\n\n   \t",
    " x\n  y\n\n\n z   ",
]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(family name, the directory of its tokenizer.json and tokenizer_config.json)."""
    return request.param, write_tokenizer_files(request.param, tmp_path_factory.mktemp("tok"))


def transformers_tokenizers(directory: Path) -> list:
    """The file read by transformers both ways: as a bare tokenizer.json and as a model repo."""
    return [
        transformers.PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json")),
        transformers.AutoTokenizer.from_pretrained(str(directory)),
    ]


def test_ids_are_transformers_ids(family, varied_texts) -> None:
    _, directory = family
    ours = HFTokenizer(directory / "tokenizer.json")
    texts = [*varied_texts, *FAMILY_TEXTS]
    for theirs in transformers_tokenizers(directory):
        expected = [theirs.encode(text) for text in texts]
        assert [ours.encode(text) for text in texts] == expected, type(theirs).__name__
        assert ours.encode_batch(texts) == expected


def test_end_of_document_and_bos_are_the_familys(family) -> None:
    name, directory = family
    eod, bos = FAMILIES[name]
    ours = HFTokenizer(directory / "tokenizer.json")
    backend = ours.backend
    assert ours.eod_id == backend.token_to_id(eod)
    assert ours.decode([ours.eod_id]) == eod
    text_ids = backend.encode("hello", add_special_tokens=False).ids
    bos_ids = [] if bos is None else [backend.token_to_id(bos)]
    assert ours.encode("hello") == [*bos_ids, *text_ids]
    assert ours.bos_id == (None if bos is None else backend.token_to_id(bos))


def test_preprocess_writes_transformers_ids_then_eod(family, tmp_path: Path, write_jsonl) -> None:
    name, directory = family
    texts = [t for t in FAMILY_TEXTS if t]
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    spec = TokenizerSpec("HFTokenizer", str(directory / "tokenizer.json"))
    result = preprocess(corpus, tmp_path / "d", spec, append_eod=True, progress=False)
    theirs = transformers.AutoTokenizer.from_pretrained(str(directory))
    eod = theirs.convert_tokens_to_ids(FAMILIES[name][0])
    tokens = TokenFile(result.outputs["text"])
    assert tokens.dtype == np.uint16
    assert [tokens[i].tolist() for i in range(len(tokens))] == [
        [*theirs.encode(text), eod] for text in texts
    ]


@pytest.mark.parametrize(
    ("tokens", "eod"),
    [
        (["<|padding|>", "</s>", "<|end_of_text|>", "<|endoftext|>"], "<|endoftext|>"),
        (["</s>", "<|end_of_text|>", "<|eot_id|>"], "<|end_of_text|>"),
        (["<unk>", "<s>", "</s>"], "</s>"),
    ],
)
def test_the_first_known_end_of_document_spelling_wins(
    tmp_path: Path, tokens: list[str], eod: str
) -> None:
    raw = RawTokenizer(models.BPE())
    raw.add_special_tokens([AddedToken(token, normalized=False) for token in tokens])
    raw.save(str(tmp_path / "tokenizer.json"))
    tokenizer = HFTokenizer(tmp_path / "tokenizer.json")
    assert tokenizer.eod_id == tokens.index(eod)


def test_a_file_with_no_known_end_of_document_is_refused_in_one_line(tmp_path: Path) -> None:
    raw = RawTokenizer(models.BPE())
    raw.add_special_tokens(["<|eot_id|>", "<|im_end|>", "<eos>"])  # turn ends, or unknown
    raw.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError) as refused:
        HFTokenizer(tmp_path / "tokenizer.json")
    assert str(refused.value) == (
        f"{tmp_path / 'tokenizer.json'}: the vocabulary has no <|endoftext|> or <|end_of_text|> "
        "or </s> token"
    )
