"""Build the shipped standard-library snapshot: ``python -m llmlab.data.snapshot [--out PATH]``.

Reads the running interpreter's standard library (the files :func:`llmlab.data.corpus.stdlib_files`
keeps), writes them as JSON lines (``{"name", "text"}``, sorted by name) compressed with xz, and
prints the content sha256 to record as ``SNAPSHOT_SHA256`` in ``corpus.py``. The book's snapshot
was built with CPython 3.11.7; building it on another Python gives another corpus (and other
numbers everywhere in the book), which is why the snapshot ships instead.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
from pathlib import Path

from llmlab.data.corpus import SNAPSHOT_PATH, content_sha256, read_folder, stdlib_root


def write_snapshot(out: Path, root: Path | None = None) -> str:
    """Write the snapshot of ``root`` (default: this interpreter's stdlib); returns its sha256."""
    docs = read_folder(root or stdlib_root())
    out.parent.mkdir(parents=True, exist_ok=True)
    # preset 9 | extreme and no timestamps: the same input gives the same bytes
    with lzma.open(out, "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME) as f:
        for d in docs:
            f.write(json.dumps({"name": d.name, "text": d.text}, ensure_ascii=False) + "\n")
    return content_sha256(docs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None,
                   help=f"where to write (default: the package's stdlib-{sys.version.split()[0]}.jsonl.xz)")
    args = p.parse_args(argv)
    out = args.out or SNAPSHOT_PATH.with_name(f"stdlib-{sys.version.split()[0]}.jsonl.xz")
    sha = write_snapshot(out)
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB, content sha256 {sha}")


if __name__ == "__main__":
    main()
