"""A small authored chapter (tests/platform/fixtures/90_fixture) and submissions built from it.

The grading tests grade these instead of the book's chapters: five exercises (functions, a
module with gradients, an ``expect``, a predict-first value), 9 points, a few seconds a grade.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import notebooks  # noqa: E402

from llmlab.grading.assemble import grade_id  # noqa: E402

SCRIPT = Path(__file__).parent / "fixtures" / "90_fixture" / "90_fixture.py"
NAME = "90_fixture"
MAX = {"softmax": 2, "split_heads": 2, "masked_mean": 2, "rmsnorm": 2, "predict": 1}

SOFTMAX = """def softmax(x, dim=-1):
    z = x - x.amax(dim=dim, keepdim=True)
    return z.exp() / z.exp().sum(dim=dim, keepdim=True)
"""
SPLIT = """def split_heads_(x, n_heads):
    if x.shape[-1] % n_heads:
        raise ValueError("no")
    return x.reshape(x.shape[0], x.shape[1], n_heads, -1).permute(0, 2, 1, 3)
"""
MEAN = """def masked_mean_(x, mask):
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)
"""
RMSNORM = """class RMSNorm_(torch.nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
"""
PREDICT = "def predicted_scaled():\n    return 21.0\n"
RIGHT = {"softmax": SOFTMAX, "split_heads": SPLIT, "masked_mean": MEAN, "rmsnorm": RMSNORM,
         "predict": PREDICT}
STUB = re.compile(r"### BEGIN SOLUTION\n.*?### END SOLUTION\n?", re.DOTALL)


def authored() -> nbformat.NotebookNode:
    return notebooks.from_script(SCRIPT)


def write_solutions(folder: Path) -> Path:
    """solutions/90_fixture/90_fixture.ipynb under ``folder``; returns the solutions root."""
    target = folder / "solutions" / NAME
    target.mkdir(parents=True, exist_ok=True)
    nbformat.write(authored(), target / f"{NAME}.ipynb")
    return folder / "solutions"


def release() -> nbformat.NotebookNode:
    """What a learner gets: answers stubbed, hidden tests removed."""
    nb = copy.deepcopy(authored())
    nb.cells = [c for c in nb.cells if not (grade_id(c) or "").endswith("__hidden")]
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = STUB.sub("raise NotImplementedError()\n", cell.source)
    return nb


def submission(folder: Path, answers: dict[str, str], edit=None, added=None,
               name: str = f"{NAME}.ipynb") -> Path:
    """A learner notebook with ``answers`` (by exercise id) and ``added`` cells after the
    setup cell; ``edit(nb)`` may change anything else."""
    nb = release()
    for cell in nb.cells:
        if grade_id(cell) in answers:
            cell.source = answers[grade_id(cell)]
    for i, source in enumerate(added or []):
        nb.cells.insert(3 + i, nbformat.v4.new_code_cell(source))
    if edit:
        edit(nb)
    out = folder / NAME
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out / name)
    return out / name


def scores(report) -> dict[str, float]:
    return {e.id: e.score for e in report.exercises}


def feedback(report) -> dict[str, str]:
    return {e.id: e.feedback for e in report.exercises}
