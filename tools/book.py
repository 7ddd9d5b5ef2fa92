"""Build the book site into book/_build/html (what ``make book`` runs).

    python tools/book.py [--solutions DIR] [--out DIR] [--verbose]

The build itself lives in book/build.py (``python -m book.build`` is the same command).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from book.build import main  # noqa: E402

if __name__ == "__main__":
    main()
