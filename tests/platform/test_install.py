"""The install works where learners install: the pinned set resolves from the public index alone.

The machines this project is developed on have a local wheel cache that pip is configured to
search; a learner's machine has only PyPI (and PyPI's torch is the CUDA build on Linux). So the
resolution test ignores every pip configuration (``PIP_CONFIG_FILE=/dev/null``, ``--isolated``)
and asks PyPI for the whole set — torch at its pin, the core dependencies and every extra, under
``constraints.txt`` — once per supported Python, as wheels for Linux x86-64. A pin that cannot be
installed together with the others (as ``triton==3.9.0`` once could not beside torch 2.13.0's
CUDA build) fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import install_torch  # noqa: E402

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SUPPORTED = ("3.11", "3.12", "3.13")
# what pip accepts on a Linux x86-64 machine with glibc 2.28 (e.g. Debian 10, RHEL 8 and later)
MANYLINUX = tuple(f"manylinux_2_{minor}" for minor in range(28, 4, -1)) + \
    ("manylinux2014", "manylinux2010", "manylinux1")


def test_requires_python_and_the_supported_versions_agree():
    assert PROJECT["requires-python"] == f">={SUPPORTED[0]}"
    readme = (ROOT / "README.md").read_text()
    assert "Python 3.11, 3.12 or 3.13" in readme


def test_the_torch_pin_is_one_line_and_the_installer_reads_it():
    pins = re.findall(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert pins == [install_torch.pinned_version()]


@pytest.mark.parametrize(("platform", "cuda", "index", "reachable", "expect_index", "words"), [
    ("linux", False, None, True, install_torch.CPU_INDEX, "CPU build"),
    ("win32", False, None, True, install_torch.CPU_INDEX, "CPU build"),
    ("linux", False, None, False, None, "did not answer"),
    ("darwin", False, None, True, None, "CPU build (macOS)"),
    ("linux", True, None, True, None, "CUDA build"),
    ("linux", False, "https://example.org/whl/cu128", True, "https://example.org/whl/cu128", "example"),
])
def test_install_plan(platform, cuda, index, reachable, expect_index, words):
    asked = []

    def probe():
        asked.append(1)
        return reachable

    args, why = install_torch.plan("2.13.0", platform, cuda, index, probe)
    assert args[0] == "torch==2.13.0" and words in why
    assert (args[args.index("--index-url") + 1] if "--index-url" in args else None) == expect_index
    # the CPU index is asked only where PyPI's wheel would be the CUDA build
    assert bool(asked) == (platform != "darwin" and not cuda and index is None)


def test_an_unreachable_index_is_given_up_quickly():
    import time

    t = time.perf_counter()
    assert not install_torch.reachable("http://192.0.2.1/whl/cpu/", timeout=1.0)  # TEST-NET-1
    assert time.perf_counter() - t < 5


def _requirements() -> list[str]:
    reqs = [f"torch=={install_torch.pinned_version()}", *PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        reqs += [r for r in extra if not r.startswith("llmlab")]
    return reqs


def _pypi_answers() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10).close()
        return True
    except OSError:
        return False


# Pure-Python dependencies published as a source archive only (no wheel on PyPI): pip builds each
# into one universal wheel on a user's machine; the check builds them the same way first.
SDIST_ONLY = ("sqlitedict", "word2number")  # both from lm-eval


def _public_env() -> dict[str, str]:
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    return {k: v for k, v in env.items() if not k.startswith("PIP_") or k == "PIP_CONFIG_FILE"}


def _build_sdist_only(wheels: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--isolated", "--no-deps", "--no-cache-dir",
                    "--disable-pip-version-check", "--quiet", "--no-binary=:all:", "-w", str(wheels),
                    "-c", str(ROOT / "constraints.txt"), *SDIST_ONLY],
                   check=True, capture_output=True, text=True, env=_public_env(), timeout=600)
    built = sorted(p.name for p in wheels.glob("*.whl"))
    assert len(built) == len(SDIST_ONLY) and all(n.endswith("-py3-none-any.whl") for n in built), built


def _resolve(python: str, target: Path, wheels: Path) -> subprocess.CompletedProcess:
    platforms = [a for tag in MANYLINUX for a in ("--platform", f"{tag}_x86_64")]
    cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed",
           "--disable-pip-version-check", "--quiet", "--python-version", python,
           # metadata by HTTP range requests, not whole wheels (CUDA torch's NVIDIA wheels are GBs)
           "--use-feature=fast-deps", "--no-cache-dir", "--find-links", str(wheels),
           "--only-binary=:all:", *platforms, "--target", str(target),
           "-c", str(ROOT / "constraints.txt"), *_requirements()]
    return subprocess.run(cmd, capture_output=True, text=True, env=_public_env(), timeout=900)


@pytest.mark.network
@pytest.mark.slow
def test_the_pinned_set_resolves_from_the_public_index_on_every_supported_python(tmp_path):
    if not _pypi_answers():
        pytest.skip("PyPI does not answer from this machine: the install check needs the public index")
    wheels = tmp_path / "sdist-only"
    _build_sdist_only(wheels)
    with ThreadPoolExecutor(len(SUPPORTED)) as pool:
        runs = dict(zip(SUPPORTED, pool.map(lambda v: _resolve(v, tmp_path / v, wheels), SUPPORTED)))
    failed = {v: (r.stderr or r.stdout)[-2000:] for v, r in runs.items() if r.returncode != 0}
    assert not failed, f"the pinned set does not resolve from PyPI alone on {sorted(failed)}:\n" + \
        "\n".join(f"--- Python {v}\n{err}" for v, err in failed.items())
