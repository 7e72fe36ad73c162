"""The public corpora GPT-NeoX's ``prepare_data.py`` knows by name, and downloading them.

The URLs are GPT-NeoX's (``tools/datasets/corpora.py``); several hosts have since gone away, so
``mirror`` replaces every URL's location with another base URL, keeping the file name. Files
land in ``DATA_DIR/NAME/`` under a temporary name and are renamed when complete; files already
there are kept. ``neox-data preprocess --input DATA_DIR/NAME`` then reads the directory.
"""

from __future__ import annotations

import logging
import shutil
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from neox_data.atomic_file import is_full_disk, replacing

logger = logging.getLogger(__name__)

_EYE = "https://the-eye.eu/public/AI/pile_preliminary_components"
_TIMEOUT_S = 60
_COPY_BUFFER = 1 << 20


@dataclass(frozen=True)
class PublicCorpus:
    """A named corpus: where its files are, and its document count when GPT-NeoX records it."""

    name: str
    urls: tuple[str, ...]
    num_docs: int | None = None


def _corpus(name: str, *urls: str, num_docs: int | None = None) -> tuple[str, PublicCorpus]:
    return name, PublicCorpus(name, urls, num_docs)


PUBLIC_CORPORA: Mapping[str, PublicCorpus] = dict(
    [
        _corpus("enwik8", "https://data.deepai.org/enwik8.zip"),
        _corpus("enron", "http://eaidata.bmk.sh/data/enron_emails.jsonl.zst", num_docs=517401),
        _corpus("pile_subset", "https://the-eye.eu/public/AI/pile/train/00.jsonl.zst"),
        _corpus(
            "pile",
            *(f"https://the-eye.eu/public/AI/pile/train/{i:02}.jsonl.zst" for i in range(30)),
        ),
        _corpus("github", "http://eaidata.bmk.sh/data/github_small.jsonl.zst"),
        _corpus("arxiv", f"{_EYE}/2020-09-08-arxiv-extracts-nofallback-until-2007-068.tar.gz"),
        _corpus("europarl", f"{_EYE}/EuroParliamentProceedings_1996_2011.jsonl.zst"),
        _corpus("freelaw", f"{_EYE}/FreeLaw_Opinions.jsonl.zst"),
        _corpus("nih", f"{_EYE}/NIH_ExPORTER_awarded_grant_text.jsonl.zst"),
        _corpus("pubmed", f"{_EYE}/PMC_extracts.tar.gz"),
        _corpus("books1", f"{_EYE}/books1.tar.gz"),
        _corpus("books3", f"{_EYE}/books3.tar.gz"),
        _corpus("hackernews", f"{_EYE}/hn.tar.gz", num_docs=373000),
        _corpus("openwebtext2", f"{_EYE}/openwebtext2.jsonl.zst.tar", num_docs=17103000),
        _corpus("stackexchange", f"{_EYE}/stackexchange_dataset.tar"),
        _corpus("ubuntu_irc", f"{_EYE}/ubuntu_irc_until_2020_9_1.jsonl.zst"),
        _corpus("youtube_subtitles", f"{_EYE}/yt_subs.jsonl.zst"),
        _corpus(
            "c4_openwebtext",
            *(
                "https://the-eye.eu/eleuther_staging/c4/realnewslike/"
                f"c4-train.{i:05}-of-00512.json.gz"
                for i in range(512)
            ),
        ),
    ]
)


def corpus_named(name: str) -> PublicCorpus:
    corpus = PUBLIC_CORPORA.get(name.lower())
    if corpus is None:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(sorted(PUBLIC_CORPORA))}")
    return corpus


def source_url(url: str, mirror: str | None) -> str:
    """``url``, or the same file name under ``mirror``."""
    if mirror is None:
        return url
    name = Path(urllib.parse.urlparse(url).path).name
    return f"{mirror.rstrip('/')}/{name}"


def download_corpus(name: str, data_dir: str | Path, *, mirror: str | None = None) -> list[Path]:
    """Download every file of corpus ``name`` into ``data_dir/name``; return their paths."""
    corpus = corpus_named(name)
    directory = Path(data_dir) / corpus.name
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for url in corpus.urls:
        target = directory / Path(urllib.parse.urlparse(url).path).name
        if target.exists():
            logger.info("%s already downloaded", target)
        else:
            fetch(source_url(url, mirror), target)
        paths.append(target)
    return paths


def fetch(url: str, target: Path) -> None:
    """Stream ``url`` to a temporary file beside ``target``, renamed into place when complete."""
    logger.info("downloading %s to %s", url, target)
    with replacing(target, ".part") as temp:
        try:
            with temp.open("wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as body:
                shutil.copyfileobj(body, out, _COPY_BUFFER)
        except OSError as err:  # urllib's URLError and HTTPError are OSErrors
            if is_full_disk(err):
                raise  # `replacing` names the file
            raise OSError(f"cannot download {url}: {err}") from err
