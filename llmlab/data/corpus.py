"""The default corpus: the Python standard library's own source code and docstrings.

Every machine that runs llmlab has it, offline, and it is real text written by people: code,
English prose in docstrings and comments, and the doc topics of ``pydoc_data``. Tests and
generated tables (``test/``, ``encodings/`` codec maps, ``site-packages``) are left out.

The train/val split is by file, decided by a hash of the file's path relative to the stdlib
root, so it is the same on every machine and a file never straddles the split (no leakage of a
function's first half into training and its second half into validation). The stdlib differs a
little between Python versions; ``corpus_manifest`` records version, file count and a sha256.

The stdlib gives ~2.6 M tokens — too few to train even a 1.6 M-parameter model on 20 tokens per
parameter without repeating it a dozen times. ``package_documents("torch")`` adds the Python
source of an installed package (the pinned torch: ~46 MB of real code and docstrings), named
``torch/<path>`` and split by the same hash, so it too is deterministic and recorded by hash.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages",
                           "__pycache__", "encodings", "ensurepip", "lib2to3", "venv"})


@dataclass(frozen=True)
class Document:
    """One file of the corpus: its path relative to the root, and its text."""

    name: str
    text: str


def stdlib_root() -> Path:
    """Folder of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The corpus files, sorted by relative path (deterministic order)."""
    root = root or stdlib_root()
    files = [p for p in root.rglob("*.py")
             if not EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def split_of(name: str, val_fraction: float = 0.05) -> str:
    """"train" or "val" from a stable hash of a document name (same on every machine)."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64
    return "val" if h < val_fraction else "train"


def load_documents(
    root: Path | None = None, split: str | None = None, val_fraction: float = 0.05
) -> list[Document]:
    """Read the corpus (optionally one split). Undecodable files are skipped, not mangled."""
    if split not in (None, "train", "val"):
        raise ValueError(f"split must be None, 'train' or 'val', got {split!r}")
    root = root or stdlib_root()
    docs = []
    for path in stdlib_files(root):
        name = path.relative_to(root).as_posix()
        if split is not None and split_of(name, val_fraction) != split:
            continue
        try:
            docs.append(Document(name, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue
    return docs


def package_documents(package: str, split: str | None = None,
                      val_fraction: float = 0.05) -> list[Document]:
    """The ``.py`` files of an installed package (tests excluded), named ``<package>/<path>``.

    Same filter and split rule as :func:`load_documents`; the package's version belongs in the
    manifest of any corpus built from it (``corpus_manifest(..., packages=...)``)."""
    import importlib

    paths = list(getattr(importlib.import_module(package), "__path__", []))
    if len(paths) != 1:
        raise ValueError(f"{package!r} is not a package in one folder on disk")
    root = Path(paths[0])
    docs = []
    for d in load_documents(root, split=None):
        name = f"{package}/{d.name}"
        if split is None or split_of(name, val_fraction) == split:
            docs.append(Document(name, d.text))
    return docs


def corpus_manifest(docs: list[Document], packages: tuple[str, ...] = ()) -> dict:
    """What a corpus was: Python version (and the versions of any ``packages`` it includes),
    files, characters, and a sha256 of its names and contents."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.name.encode() + b"\0" + d.text.encode() + b"\0")
    out = {"python": sys.version.split()[0], "files": len(docs),
           "chars": sum(len(d.text) for d in docs), "sha256": h.hexdigest()}
    if packages:
        out["packages"] = {p: _version(p) for p in packages}
    return out


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:  # importable but not installed as a distribution
        import importlib

        return str(getattr(importlib.import_module(package), "__version__", "unknown"))
