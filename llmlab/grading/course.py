"""Run nbgrader on a course directory: one configuration for the repository and its release.

The repository itself is an nbgrader course whose source is ``solutions/`` and whose release is
``chapters/`` (see ``nbgrader_config.py`` at the root); ``tools/notebooks.py release`` builds a
throw-away course with the same settings to generate the release. nbgrader runs as a subprocess
with the interpreter's ``bin/`` on ``PATH`` (it shells out to ``alembic``), with no Jupyter server.
Grading does not use ``nbgrader autograde`` (see :mod:`llmlab.grading.autograde`); the classroom
flow writes nbgrader's gradebook itself (:mod:`llmlab.grading.classroom`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

# Settings shared by the repository's course and the grader's temporary ones.
COURSE_SETTINGS = """\
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "chapters"
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "*.py", "*.egg-info"]
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ExecutePreprocessor.interrupt_on_timeout = True
c.LimitOutput.max_lines = 200
c.LimitOutput.max_traceback = 60
c.Execute.execute_retries = 0
"""


class NbgraderError(RuntimeError):
    """nbgrader failed; the message holds the end of its log."""


def write_config(root: Path, db_url: str) -> None:
    """Write an ``nbgrader_config.py`` for a course rooted at ``root``."""
    text = "c = get_config()  # noqa: F821\n" + COURSE_SETTINGS
    text += f"c.CourseDirectory.root = {str(root)!r}\nc.CourseDirectory.db_url = {db_url!r}\n"
    (root / "nbgrader_config.py").write_text(text)


def nbgrader_env() -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONHASHSEED"] = "0"
    return env


def run_nbgrader(args: list[str], cwd: Path, timeout: float,
                 extra_env: dict[str, str] | None = None) -> str:
    """Run ``nbgrader ARGS`` in ``cwd``; return its log, or raise NbgraderError / TimeoutError.

    The process runs in its own session so a timeout kills it and its kernels together.
    """
    env = nbgrader_env()
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "nbgrader", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TimeoutError(f"nbgrader {args[0]} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise NbgraderError(f"nbgrader {' '.join(args)} failed:\n" + log[-4000:])
    return log
