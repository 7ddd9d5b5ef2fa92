"""Install the pinned PyTorch build for this machine, before llmlab (``make setup`` runs it).

    python tools/install_torch.py            # the CPU build (default)
    python tools/install_torch.py --cuda     # PyPI's default build: CUDA on Linux and Windows
    python tools/install_torch.py --index-url https://download.pytorch.org/whl/cu128

The version is the ``torch==`` pin in ``constraints.txt``. On Linux and Windows, PyPI's torch
wheels are CUDA builds that pull several GB of NVIDIA libraries; the CPU build lives on
PyTorch's own index, which this script uses when it answers within a few seconds. Where it does
not (an offline mirror, a firewall), it says so and falls back to the default index: the build
you get there runs on a CPU too, it is only larger. On macOS, PyPI's wheels are the CPU (and
Apple GPU) builds already. A torch of the pinned version that is already installed is kept.
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import urllib.request
from importlib import metadata
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints.txt"


def pinned_version(constraints: Path = CONSTRAINTS) -> str:
    """The ``torch==X`` pin of the constraints file."""
    m = re.search(r"^torch==([\w.]+)\s*$", constraints.read_text(), re.MULTILINE)
    if not m:
        raise SystemExit(f"{constraints}: no `torch==VERSION` line")
    return m[1]


def installed_version() -> str | None:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether ``url`` answers within ``timeout`` seconds (any HTTP status counts as an answer)."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def plan(version: str, platform: str, cuda: bool, index_url: str | None,
         cpu_index_reachable) -> tuple[list[str], str]:
    """The pip arguments to install torch, and a line saying why (pure: testable anywhere)."""
    spec = [f"torch=={version}"]
    if index_url:
        return spec + ["--index-url", index_url], f"torch {version} from {index_url}"
    if cuda or platform == "darwin":
        why = "the CUDA build" if cuda else "the CPU build (macOS)"
        return spec, f"torch {version} from the default index: {why}"
    if cpu_index_reachable():
        return spec + ["--index-url", CPU_INDEX], f"torch {version}, CPU build, from {CPU_INDEX}"
    return spec, (f"{CPU_INDEX} did not answer; installing torch {version} from the default index "
                  "instead (on Linux and Windows that is the CUDA build, several GB; it runs on the "
                  "CPU too)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cuda", action="store_true", help="PyPI's default build (CUDA on Linux/Windows)")
    p.add_argument("--index-url", default=None, help="install torch from this index instead")
    args = p.parse_args(argv)
    if sys.version_info < (3, 11):  # noqa: UP036 (this script is what an older Python runs first)
        raise SystemExit(f"llmlab needs Python 3.11 or newer (3.11, 3.12 and 3.13 are tested); this is "
                         f"{sys.version.split()[0]}. Run `make setup PYTHON=python3.11` (or newer).")
    version = pinned_version()
    have = installed_version()
    if have is not None and have.split("+")[0] == version:
        print(f"torch {have} is installed; keeping it")
        return 0
    pip_args, why = plan(version, sys.platform, args.cuda, args.index_url,
                         lambda: reachable(CPU_INDEX + "/"))
    print(why, flush=True)
    return subprocess.call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                            *pip_args])


if __name__ == "__main__":
    sys.exit(main())
