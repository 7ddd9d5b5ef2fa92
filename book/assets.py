"""The scripts the book serves itself: MathJax and the Jupyter widget manager, from npm.

Jupyter Book's defaults load MathJax, RequireJS and ``@jupyter-widgets/html-manager`` from CDNs.
The site must work offline, so ``npm ci`` installs the versions pinned in ``book/package.json``
/ ``package-lock.json`` into a cache directory once, and the build copies them under
``_static/vendor/``. The widget manager used is ``dist/embed.js``, the bundle that needs no
RequireJS and renders the standard ipywidgets controls without fetching anything.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

BOOK = Path(__file__).resolve().parent
NPM_FILES = ("package.json", "package-lock.json")
# Paths are relative to the site's _static/ directory, as Sphinx reads `mathjax_path` and
# myst-nb's `nb_ipywidgets_js` keys.
MATHJAX_PATH = "vendor/mathjax/tex-chtml.js"
WIDGETS_JS = "vendor/widgets/embed.js"
# vendor name -> (folder inside node_modules, glob patterns not to copy)
VENDORED = {
    "mathjax": ("mathjax/es5", ("*.map",)),
    "widgets": ("@jupyter-widgets/html-manager/dist", ("*.map", "*amd.js", "*.LICENSE.txt")),
}


def install(cache: Path) -> Path:
    """Run ``npm ci`` into ``cache`` unless it already holds this lockfile; return node_modules."""
    cache.mkdir(parents=True, exist_ok=True)
    stamp, digest = cache / "installed.sha256", _digest(BOOK / name for name in NPM_FILES)
    node_modules = cache / "node_modules"
    if node_modules.is_dir() and stamp.is_file() and stamp.read_text() == digest:
        return node_modules
    if shutil.which("npm") is None:
        raise RuntimeError("the book needs npm (Node.js) to install MathJax and the widget manager")
    for name in NPM_FILES:
        shutil.copy2(BOOK / name, cache / name)
    subprocess.run(
        ["npm", "ci", "--prefer-offline", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=cache,
        check=True,
    )
    stamp.write_text(digest)
    return node_modules


def vendor(node_modules: Path, static: Path) -> None:
    """Copy the vendored packages into ``static/vendor/<name>`` (a site's ``_static``)."""
    for name, (folder, ignore) in VENDORED.items():
        source, target = node_modules / folder, static / "vendor" / name
        if not source.is_dir():
            raise RuntimeError(f"{source} is missing: delete {node_modules.parent} and build again")
        stamp = target / ".source.sha256"
        digest = hashlib.sha256(str(sorted(p.stat().st_mtime_ns for p in source.iterdir())).encode())
        if stamp.is_file() and stamp.read_text() == digest.hexdigest():
            continue
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(*ignore))
        stamp.write_text(digest.hexdigest())


def _digest(paths) -> str:
    sha = hashlib.sha256()
    for path in paths:
        sha.update(Path(path).read_bytes())
    return sha.hexdigest()
