"""Public corpora, fetched once when a network exists: checksum-verified and cached.

A ``RemoteFile`` pins a URL at a fixed revision and its SHA-256; ``fetch`` downloads to a
temporary file, verifies the hash, then renames into the cache (so an interrupted or tampered
download never lands), and afterwards serves the cached copy. ``local_path=`` uses a file the
learner already has, after the same check. The cache is ``$LLMLAB_CACHE`` or ``~/.cache/llmlab``.

- TinyShakespeare: Karpathy, char-rnn (2015), 1,115,394 bytes.
- TinyStories: Eldan & Li, "TinyStories: How Small Can Language Models Be and Still Speak
  Coherent English?", arXiv:2305.07759 (the validation file, ~19 MB).
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RemoteFile:
    """A file on the web pinned by content: cache name, URL and SHA-256 hex digest."""

    name: str
    url: str
    sha256: str


TINY_SHAKESPEARE = RemoteFile(
    "tinyshakespeare.txt",
    "https://raw.githubusercontent.com/karpathy/char-rnn/"
    "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)
TINY_STORIES_VALID = RemoteFile(
    "TinyStories-valid.txt",
    "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/"
    "f54c09fd23315a6f9c86f9dc80f725de7d8f9c64/TinyStories-valid.txt",
    "94e431816c4cce81ff71e4408ff8d3bda9a42e8d2663986697c3954288cb38b4",
)
STORY_SEPARATOR = "<|endoftext|>"


def cache_dir() -> Path:
    """Where downloads are kept: ``$LLMLAB_CACHE`` or ``~/.cache/llmlab``."""
    return Path(os.environ.get("LLMLAB_CACHE", Path.home() / ".cache" / "llmlab"))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, remote: RemoteFile) -> None:
    got = sha256_file(path)
    if got != remote.sha256:
        raise ValueError(
            f"{path} has sha256 {got}, expected {remote.sha256} for {remote.name}: the file is "
            "corrupt or a different version; delete it and fetch again"
        )


def fetch(remote: RemoteFile, cache: str | Path | None = None,
          local_path: str | Path | None = None) -> Path:
    """Path to a verified copy of ``remote`` (downloading it into the cache if needed)."""
    if local_path is not None:
        _verify(Path(local_path), remote)
        return Path(local_path)
    target = Path(cache or cache_dir()) / remote.name
    if target.exists():
        _verify(target, remote)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(remote.url, timeout=60) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
        _verify(tmp, remote)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(target)
    return target


def _split_text(text: str, val_fraction: float) -> dict[str, str]:
    cut = int(len(text) * (1 - val_fraction))
    return {"train": text[:cut], "val": text[cut:]}


def tiny_shakespeare(cache: str | Path | None = None, local_path: str | Path | None = None,
                     val_fraction: float = 0.1) -> dict[str, str]:
    """{"train": first 90% of the characters, "val": the rest} (the usual contiguous split)."""
    path = fetch(TINY_SHAKESPEARE, cache, local_path)
    return _split_text(path.read_text(encoding="utf-8"), val_fraction)


def tiny_stories(cache: str | Path | None = None, local_path: str | Path | None = None,
                 val_fraction: float = 0.1) -> dict[str, list[str]]:
    """The stories of the TinyStories validation file, split by story: {"train": […], "val": […]}."""
    path = fetch(TINY_STORIES_VALID, cache, local_path)
    stories = [s.strip() for s in path.read_text(encoding="utf-8").split(STORY_SEPARATOR)]
    stories = [s for s in stories if s]
    cut = int(len(stories) * (1 - val_fraction))
    return {"train": stories[:cut], "val": stories[cut:]}
