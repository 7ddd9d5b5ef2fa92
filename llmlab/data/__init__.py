"""Data for pretraining: the offline default corpus (the Python stdlib), token memmaps,
random-window batches, and checksum-verified loaders for TinyShakespeare and TinyStories.

Taught in chapter 02 (solutions/02_gpt).
"""

from llmlab.data.batches import random_windows, sequential_windows
from llmlab.data.corpus import (
    Document,
    corpus_manifest,
    load_documents,
    package_documents,
    split_of,
    stdlib_files,
    stdlib_root,
)
from llmlab.data.downloads import (
    TINY_SHAKESPEARE,
    TINY_STORIES_VALID,
    RemoteFile,
    fetch,
    sha256_file,
    tiny_shakespeare,
    tiny_stories,
)
from llmlab.data.tokens import read_tokens, token_dtype, write_tokens

__all__ = [
    "TINY_SHAKESPEARE",
    "TINY_STORIES_VALID",
    "Document",
    "RemoteFile",
    "corpus_manifest",
    "fetch",
    "load_documents",
    "package_documents",
    "random_windows",
    "read_tokens",
    "sequential_windows",
    "sha256_file",
    "split_of",
    "stdlib_files",
    "stdlib_root",
    "tiny_shakespeare",
    "tiny_stories",
    "token_dtype",
    "write_tokens",
]
