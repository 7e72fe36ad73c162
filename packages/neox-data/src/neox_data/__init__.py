"""neox-data: tokenizers, corpus readers and Megatron-compatible token files for neox (no torch)."""

from neox_data.corpus import Document, MissingDependencyError, iter_documents
from neox_data.gpt_dataset import GPTDataset, split_documents
from neox_data.preprocess import PreprocessResult, preprocess
from neox_data.token_file import TokenFile, TokenFileWriter, best_dtype
from neox_data.tokenizer import (
    SUPPORTED_TOKENIZER_TYPES,
    HFTokenizer,
    Tokenizer,
    TokenizerSpec,
    build_tokenizer,
    train_bpe_tokenizer,
)

__all__ = [
    "SUPPORTED_TOKENIZER_TYPES",
    "Document",
    "GPTDataset",
    "HFTokenizer",
    "MissingDependencyError",
    "PreprocessResult",
    "TokenFile",
    "TokenFileWriter",
    "Tokenizer",
    "TokenizerSpec",
    "best_dtype",
    "build_tokenizer",
    "iter_documents",
    "preprocess",
    "split_documents",
    "train_bpe_tokenizer",
]
