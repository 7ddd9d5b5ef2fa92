"""The default corpus: the Python standard library's own source code and docstrings.

It is real text written by people: code, English prose in docstrings and comments, and the doc
topics of ``pydoc_data``. Tests and generated tables (``test/``, ``encodings/`` codec maps,
``site-packages``) are left out.

The standard library differs between Python versions (3.13's is not 3.11's), so a book that read
the running interpreter's would print other numbers on another Python. llmlab therefore ships a
snapshot of one standard library (``assets/stdlib-<version>.jsonl.xz``, ~2 MB, its content's
sha256 checked on every load): ``load_documents()`` reads the snapshot, on every machine and
every Python; ``load_documents(root)`` reads the ``.py`` files under any folder, and
``python -m llmlab.data.snapshot`` rebuilds the snapshot from the running interpreter.

The train/val split is by file, decided by a hash of the file's path relative to the stdlib
root, so it is the same on every machine and a file never straddles the split (no leakage of a
function's first half into training and its second half into validation). The stdlib differs a
little between Python versions; ``corpus_manifest`` records version, file count and a sha256.

The stdlib gives ~2.6 M tokens — too few to train even a 1.6 M-parameter model on 20 tokens per
parameter without repeating it a dozen times. ``package_documents("torch")`` adds the Python
source of an installed package (the pinned torch: ~46 MB of real code and docstrings), named
``torch/<path>`` and split by the same hash, so it too is deterministic and recorded by hash (its source can
differ between builds of one torch version; ``llmlab pretrain`` checks it).
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
import sysconfig
from dataclasses import dataclass
from pathlib import Path

EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages",
                           "__pycache__", "encodings", "ensurepip", "lib2to3", "venv"})


# The shipped snapshot: which standard library it holds, and the sha256 of its content (the
# ``corpus_manifest`` hash of every document, in order). Rebuild with ``python -m llmlab.data.snapshot``.
SNAPSHOT_PYTHON = "3.11.7"
SNAPSHOT_SHA256 = "69de9bd7e5c62a8649f3741b6f1a81ac568dd9b00998e425055791d4c722799e"
SNAPSHOT_PATH = Path(__file__).parent / "assets" / f"stdlib-{SNAPSHOT_PYTHON}.jsonl.xz"


@dataclass(frozen=True)
class Document:
    """One file of the corpus: its path relative to the root, and its text."""

    name: str
    text: str


def stdlib_root() -> Path:
    """Folder of the running interpreter's standard library (what the snapshot is built from)."""
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
    """The corpus, sorted by name (optionally one split).

    ``root=None``: the shipped standard-library snapshot (the same on every machine and Python).
    ``root``: the ``.py`` files under that folder, read now; undecodable files are skipped, not
    mangled."""
    if split not in (None, "train", "val"):
        raise ValueError(f"split must be None, 'train' or 'val', got {split!r}")
    docs = list(snapshot_documents()) if root is None else read_folder(Path(root))
    if split is None:
        return docs
    return [d for d in docs if split_of(d.name, val_fraction) == split]


def read_folder(root: Path) -> list[Document]:
    """Every corpus file under ``root`` (see :func:`stdlib_files`), named relative to it."""
    docs = []
    for path in stdlib_files(root):
        try:
            docs.append(Document(path.relative_to(root).as_posix(), path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue
    return docs


@functools.cache
def snapshot_documents(path: Path = SNAPSHOT_PATH, sha256: str = SNAPSHOT_SHA256) -> tuple[Document, ...]:
    """The shipped snapshot's documents (read once per process), after checking its sha256.

    Raises ``ValueError`` when the file's content is not the recorded one (a damaged or edited
    asset): every number in the book rests on it."""
    if not path.exists():
        raise FileNotFoundError(f"the corpus snapshot {path} is missing: reinstall llmlab, or rebuild "
                                "it with `python -m llmlab.data.snapshot` (on Python "
                                f"{SNAPSHOT_PYTHON} for the book's numbers)")
    text = lzma.decompress(path.read_bytes()).decode("utf-8")
    docs = tuple(Document(**json.loads(line)) for line in text.splitlines())
    got = content_sha256(docs)
    if got != sha256:
        raise ValueError(f"the corpus snapshot {path.name} has sha256 {got[:16]}…, expected "
                         f"{sha256[:16]}…: the file is damaged or was rebuilt without updating "
                         "SNAPSHOT_SHA256")
    return docs


def content_sha256(docs) -> str:
    """sha256 of a corpus's names and contents, in order (what a manifest records)."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.name.encode() + b"\0" + d.text.encode() + b"\0")
    return h.hexdigest()


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
    for d in read_folder(root):
        name = f"{package}/{d.name}"
        if split is None or split_of(name, val_fraction) == split:
            docs.append(Document(name, d.text))
    return docs


def corpus_manifest(docs: list[Document], packages: tuple[str, ...] = (),
                    python: str = SNAPSHOT_PYTHON) -> dict:
    """What a corpus was: the Python whose standard library it holds (the snapshot's, unless the
    documents were read from a running interpreter), the versions of any ``packages`` it
    includes, files, characters, and a sha256 of its names and contents."""
    out = {"python": python, "files": len(docs),
           "chars": sum(len(d.text) for d in docs), "sha256": content_sha256(docs)}
    if packages:
        out["packages"] = {p: _version(p) for p in packages}
    return out


def _version(package: str) -> str:
    """The version the module reports (with a build label such as torch's ``+cpu``: builds of
    one release ship different sources), else its distribution's."""
    import importlib
    from importlib.metadata import PackageNotFoundError, version

    try:
        reported = getattr(importlib.import_module(package), "__version__", None)
    except ImportError:
        reported = None
    if reported:
        return str(reported)
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
