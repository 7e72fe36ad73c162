"""`neox demo`: the whole path on a laptop CPU, from raw text to a Hugging Face model.

1. corpus: the Python standard library's own .py files (present on every machine) as jsonl
2. tokenizer: byte-level BPE trained on that corpus
3. preprocess: jsonl -> Megatron token file (.bin/.idx)
4. train: the embedded `cpu_demo.yml` on 2 CPU worker processes (DeepSpeed ZeRO-1, gloo)
5. sample: greedy continuation of a prompt from the checkpoint
6. export: Hugging Face GPTNeoX directory; reload it with transformers and continue the same
   prompt; the continuations and the logits must agree
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neox_data import HFTokenizer
    from neox_model import Transformer

MARKER = ".neox-demo"
PROMPT = "class Stack:\n    def __init__(self):\n        self."


def demo_config() -> Path:
    return Path(str(resources.files("neox") / "configs" / "cpu_demo.yml"))


_SKIP = {"site-packages", "test", "tests", "idle_test", "encodings", "pydoc_data"}


def stdlib_sources(max_bytes: int) -> Iterator[tuple[Path, str]]:
    """(path, text) of standard-library modules, spread evenly over the library, to max_bytes.

    Test suites, codec tables and generated help text are left out: they are not code a
    model should learn from.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = [p for p in sorted(root.rglob("*.py")) if not _SKIP & set(p.relative_to(root).parts)]
    total_size = sum(p.stat().st_size for p in paths)
    stride = max(1, round(total_size / max_bytes))
    total = 0
    for path in paths[::stride]:
        text = path.read_text(encoding="utf-8", errors="replace")
        if total + len(text) > max_bytes:
            continue
        total += len(text)
        yield path, text


def write_corpus(path: Path, max_bytes: int) -> int:
    count = 0
    with path.open("w") as stream:
        for source, text in stdlib_sources(max_bytes):
            stream.write(json.dumps({"text": text, "meta": {"file": source.name}}) + "\n")
            count += 1
    return count


def prepare_workdir(workdir: Path) -> None:
    if workdir.exists():
        if not (workdir / MARKER).exists():
            raise FileExistsError(
                f"{workdir} exists and was not made by neox demo; choose --workdir"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / MARKER).write_text("made by neox demo; safe to delete\n")


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def prepare_data(workdir: Path, corpus_bytes: int, vocab_size: int) -> tuple[Path, Path]:
    """Corpus, tokenizer and token file; returns (token file prefix, tokenizer path)."""
    from neox_data import preprocess, train_bpe_tokenizer

    step("1. corpus: Python standard library sources")
    corpus = workdir / "stdlib.jsonl"
    docs = write_corpus(corpus, corpus_bytes)
    print(f"{docs} files, {corpus.stat().st_size / 1e6:.1f} MB -> {corpus}")
    step(f"2. tokenizer: byte-level BPE, {vocab_size} tokens")
    tokenizer_path = workdir / "tokenizer.json"
    texts = (json.loads(line)["text"] for line in corpus.open())
    tokenizer = train_bpe_tokenizer(texts, vocab_size, tokenizer_path)
    print(f"wrote {tokenizer_path}")
    step("3. preprocess: jsonl -> Megatron .bin/.idx")
    result = preprocess(
        [corpus], workdir / "data" / "stdlib", tokenizer.spec, append_eod=True, workers=2
    )
    prefix = result.outputs["text"]
    print(f"{result.documents} documents, {result.tokens:,} tokens -> {prefix}.bin/.idx")
    return prefix, tokenizer_path


def train(workdir: Path, prefix: Path, tokenizer_path: Path, train_iters: int | None) -> Path:
    """Run `neox train cpu_demo.yml paths.yml`; returns the checkpoint directory."""
    from neox.train_command import main as neox_train

    save = workdir / "checkpoints"
    paths: dict[str, object] = {
        "data_path": str(prefix),
        "vocab_file": str(tokenizer_path),
        "save": str(save),
    }
    if train_iters:
        paths["train_iters"] = train_iters
    paths_file = workdir / "paths.yml"
    paths_file.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in paths.items()))
    step(f"4. train: neox train {demo_config()} {paths_file}")
    code = neox_train([str(demo_config()), str(paths_file)])
    if code != 0:
        raise RuntimeError(f"training failed with exit code {code}")
    return save


def validation_losses(save: Path) -> tuple[float, float]:
    from neox_train.monitoring.metrics import read_metrics

    losses = [r["valid_loss"] for r in read_metrics(save / "metrics.jsonl") if "valid_loss" in r]
    return losses[0], losses[-1]


@dataclass(frozen=True)
class Sample:
    model: Transformer
    tokenizer: HFTokenizer
    prompt: list[int]
    new: list[int]


def sample(save: Path, max_new_tokens: int) -> Sample:
    """Greedy continuation of PROMPT by the trained neox model."""
    from neox_data import HFTokenizer
    from neox_model import load_model
    from neox_train.generation.sampling import generate

    step_dir, manifest, model = load_model(save)
    assert manifest.tokenizer is not None
    tokenizer = HFTokenizer(step_dir / manifest.tokenizer)
    prompt = tokenizer.encode(PROMPT)
    new = generate(
        model,
        prompt,
        max_new_tokens,
        vocab_size=tokenizer.vocab_size,
        stop=lambda ids: ids[-1] == tokenizer.eod_id,
    )
    step(f"5. sample: greedy continuation from {step_dir.name}")
    print(PROMPT + tokenizer.decode(new))
    return Sample(model, tokenizer, prompt, new)


def hugging_face_check(save: Path, out: Path, ours: Sample) -> bool:
    """Export, reload with transformers, and compare the continuation and the logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from neox_convert import export_to_hf

    step(f"6. export to Hugging Face: {out}")
    export_to_hf(save, out)
    hf_model = AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(out)
    ids = hf_tokenizer(PROMPT, return_tensors="pt").input_ids
    padding = list(range(ours.tokenizer.vocab_size, hf_model.config.vocab_size))
    with torch.no_grad():
        generated = hf_model.generate(
            ids,
            max_new_tokens=len(ours.new),
            do_sample=False,
            suppress_tokens=padding or None,
            pad_token_id=ours.tokenizer.eod_id,
        )[0, ids.shape[1] :].tolist()
        continuation = str(hf_tokenizer.decode(generated))
        full = torch.tensor([ours.prompt + ours.new])
        diff = (hf_model(full).logits - ours.model(full)).abs().max().item()
    print(f"transformers {type(hf_model).__name__} continuation:")
    print(PROMPT + continuation)
    same = ids[0].tolist() == ours.prompt and generated == ours.new
    print(f"same tokens as neox: {same}; max |logits difference| = {diff:.2e}")
    return same and diff <= 1e-4


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neox demo", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("demo_run"))
    parser.add_argument("--corpus-mb", type=float, default=4.0)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--train-iters", type=int, help="override the config's train_iters")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    try:
        prepare_workdir(args.workdir)
    except FileExistsError as err:
        print(f"neox demo: error: {err}", file=sys.stderr)
        return 2
    prefix, tokenizer_path = prepare_data(args.workdir, int(args.corpus_mb * 1e6), args.vocab_size)
    save = train(args.workdir, prefix, tokenizer_path, args.train_iters)
    before, after = validation_losses(save)
    agrees = hugging_face_check(save, args.workdir / "hf", sample(save, args.max_new_tokens))
    learned = after < 0.75 * before
    step("summary")
    print(
        f"validation loss: {before:.3f} before training -> {after:.3f} after "
        f"({'fell' if learned else 'did NOT fall'} well below the start)"
    )
    print(f"Hugging Face export {'matches' if agrees else 'does NOT match'} the neox model")
    return 0 if learned and agrees else 1
