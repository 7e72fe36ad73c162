"""neox-data: tokenizers, corpus readers and Megatron-compatible token files for neox (no torch)."""

from neox_data.atomic_file import NoSpaceError
from neox_data.blended_dataset import (
    BlendedDataset,
    blend_sample_counts,
    blending_index,
    weights_by_num_documents,
)
from neox_data.char_tokenizer import CharLevelTokenizer
from neox_data.corpus import DamagedInputError, Document, iter_documents
from neox_data.dependency import MissingDependencyError
from neox_data.gpt_dataset import (
    DEFAULT_SPLIT,
    IGNORE_INDEX,
    PACK_IMPLS,
    GPTDataset,
    PackImpl,
    split_documents,
)
from neox_data.hf_tokenizer import (
    GPT2BPETokenizer,
    HFGPT2Tokenizer,
    HFTokenizer,
    train_bpe_tokenizer,
    write_gpt2_files,
)
from neox_data.pairwise_dataset import PairwiseDataset, PairwiseSample
from neox_data.preprocess import PreprocessResult, preprocess
from neox_data.spm_tokenizer import SPMTokenizer
from neox_data.tiktoken_tokenizer import TiktokenTokenizer
from neox_data.token_file import TokenFile, TokenFileWriter, best_dtype
from neox_data.tokenizer import (
    SUPPORTED_TOKENIZER_TYPES,
    Tokenizer,
    TokenizerSpec,
    TokenizerType,
    build_tokenizer,
)

__all__ = [
    "DEFAULT_SPLIT",
    "IGNORE_INDEX",
    "PACK_IMPLS",
    "SUPPORTED_TOKENIZER_TYPES",
    "BlendedDataset",
    "CharLevelTokenizer",
    "DamagedInputError",
    "Document",
    "GPT2BPETokenizer",
    "GPTDataset",
    "HFGPT2Tokenizer",
    "HFTokenizer",
    "MissingDependencyError",
    "NoSpaceError",
    "PackImpl",
    "PairwiseDataset",
    "PairwiseSample",
    "PreprocessResult",
    "SPMTokenizer",
    "TiktokenTokenizer",
    "TokenFile",
    "TokenFileWriter",
    "Tokenizer",
    "TokenizerSpec",
    "TokenizerType",
    "best_dtype",
    "blend_sample_counts",
    "blending_index",
    "build_tokenizer",
    "iter_documents",
    "preprocess",
    "split_documents",
    "train_bpe_tokenizer",
    "weights_by_num_documents",
    "write_gpt2_files",
]
