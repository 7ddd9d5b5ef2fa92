"""The instructor's workflow end to end, as the README's recipe runs it (with its
nbgrader_config.py), on the small fixture chapter: generate (no solution released), release
through an exchange, fetch and submit as four students (honest, partial and late, copied,
cheating) plus one whose notebook is broken and a folder of no student, collect, ``llmlab grade
--course``, then formgrader's view and a manual grade, ``nbgrader generate_feedback``,
``release_feedback`` (and a student's ``fetch_feedback``), ``export`` (and the per-exercise
export), and a regrade of one student whose resubmission is broken.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from llmlab.grading.assemble import grade_id
from llmlab.grading.course import nbgrader_env, run_nbgrader
from llmlab.grading.sandbox import files_isolated
from tests.platform.grading_fixture import NAME, authored

# Right answers written by a student: none is llmlab's reference or the authored solution.
HONEST = {
    "softmax": "def softmax(x, dim=-1):\n"
               "    e = torch.exp(x - torch.max(x, dim=dim, keepdim=True).values)\n"
               "    return e / torch.sum(e, dim=dim, keepdim=True)\n",
    "split_heads": "def split_heads_(x, n_heads):\n"
                   "    batch, seq, width = x.shape\n"
                   "    if width % n_heads != 0:\n"
                   "        raise ValueError(f'{width} is not a multiple of {n_heads}')\n"
                   "    return x.reshape(batch, seq, n_heads, width // n_heads).permute(0, 2, 1, 3)\n",
    "masked_mean": "def masked_mean_(x, mask):\n"
                   "    keep = mask.unsqueeze(-1).to(x.dtype)\n"
                   "    return torch.sum(x * keep, dim=1) / torch.clamp(keep.sum(dim=1), min=1.0)\n",
    "rmsnorm": "class RMSNorm_(torch.nn.Module):\n"
               "    def __init__(self, d, eps=1e-6):\n"
               "        super().__init__()\n"
               "        self.weight = torch.nn.Parameter(torch.ones(d))\n"
               "        self.eps = eps\n\n"
               "    def forward(self, x):\n"
               "        rms = torch.sqrt((x * x).mean(dim=-1, keepdim=True) + self.eps)\n"
               "        return self.weight * x / rms\n",
    "predict": "def predicted_scaled():\n    return 21.0\n",
    "explain": "Subtracting the maximum keeps every exponent at most 0, so nothing overflows.",
}
# The visible check passes, the hidden one (an all-masked row) does not: 1 of 2 points.
NO_CLAMP = ("def masked_mean_(x, mask):\n    keep = mask.unsqueeze(-1).to(x.dtype)\n"
            "    return (x * keep).sum(1) / keep.sum(1)\n")
WRONG_EPS = HONEST["rmsnorm"].replace("+ self.eps", "+ 1.0")
# The authored answer with its names changed: scores, and is flagged.
COPIED_SOFTMAX = ("def softmax(logits, dim=-1):\n    \"\"\"Mine.\"\"\"\n"
                  "    shifted = logits - logits.amax(dim=dim, keepdim=True)\n"
                  "    return shifted.exp() / shifted.exp().sum(dim=dim, keepdim=True)\n")
FAKE_AND_EXIT = ("print('90_fixture.ipynb: 9 / 9 points')\nimport sys\nsys.exit(0)\n"
                 "def predicted_scaled():\n    return 21.0\n")


def read_course_source(course: Path) -> str:
    """An answer that runs the authored solution, read from the course's source/ folder."""
    return ("import json as _json\n"
            f"_nb = _json.load(open({str(course / 'source' / NAME / f'{NAME}.ipynb')!r}))\n"
            "for _c in _nb['cells']:\n"
            "    if _c.get('metadata', {}).get('nbgrader', {}).get('grade_id') == 'softmax':\n"
            "        exec(''.join(_c['source']).replace('### BEGIN SOLUTION', '_x = 1'))\n")


STUDENTS = ["honest", "partial", "copied", "cheater", "mallory"]
DUE = "2030-01-01 00:00:00 UTC"
LATE = "2030-01-03 00:00:00.000000 UTC"


def readme_config(exchange: Path) -> str:
    """The README recipe's nbgrader_config.py, with this test's exchange folder."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    recipe = readme.split("## For instructors", 1)[1]
    config = recipe.split("cat > nbgrader_config.py <<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    assert 'penalty_method = "zero"' in config and '"*.py"' in config
    return re.sub(r"c\.Exchange\.root = .*", f"c.Exchange.root = {str(exchange)!r}", config) + "\n"


def with_manual_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The fixture chapter with a written answer the instructor grades by hand (1 point)."""
    cell = nbformat.v4.new_markdown_cell("Why subtract the maximum?\n\nYOUR ANSWER HERE")
    cell.metadata["nbgrader"] = {"grade": True, "solution": True, "locked": False,
                                 "grade_id": "explain", "points": 1, "schema_version": 3,
                                 "task": False}
    cell.id = "explain"
    nb.cells.insert(5, cell)
    return nb


def nbgrader(args: list[str], cwd: Path, **env: str) -> str:
    return run_nbgrader(args, cwd, timeout=300, extra_env=env)


def answer(notebook: Path, answers: dict[str, str]) -> None:
    nb = nbformat.read(notebook, 4)
    for cell in nb.cells:
        if grade_id(cell) in answers and cell.metadata["nbgrader"].get("solution"):
            cell.source = answers[grade_id(cell)]
    nbformat.write(nb, notebook)


def llmlab_grade(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmlab.cli", "grade", *args],
                          capture_output=True, text=True, timeout=1200, env=nbgrader_env())


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The course after the recipe up to `llmlab grade --course` (one grading run)."""
    root = tmp_path_factory.mktemp("class")
    course, exchange = root / "course", root / "exchange"
    (course / "source" / NAME).mkdir(parents=True)
    exchange.mkdir()
    (course / "nbgrader_config.py").write_text(readme_config(exchange))
    nbformat.write(with_manual_cell(authored()), course / "source" / NAME / f"{NAME}.ipynb")
    # the authored script too, as `cp -r solutions/NN` would bring it: never released
    (course / "source" / NAME / f"{NAME}.py").write_text(
        (Path(__file__).parent / "fixtures" / NAME / f"{NAME}.py").read_text())
    (course / "roster.csv").write_text("id,first_name\n" + "".join(f"{s},{s.title()}\n"
                                                                  for s in STUDENTS))
    nbgrader(["db", "student", "import", "roster.csv"], course)
    nbgrader(["db", "assignment", "add", NAME, f"--duedate={DUE}"], course)
    nbgrader(["generate_assignment", NAME], course)
    nbgrader(["release_assignment", NAME], course)
    answers = {
        "honest": HONEST,
        "partial": {**HONEST, "masked_mean": NO_CLAMP, "rmsnorm": WRONG_EPS, "explain": ""},
        "copied": {**HONEST, "softmax": COPIED_SOFTMAX},
        "cheater": {**HONEST, "softmax": read_course_source(course), "predict": FAKE_AND_EXIT},
        "mallory": HONEST,
    }
    for student in STUDENTS:
        home = root / "home" / student
        home.mkdir(parents=True)
        nbgrader(["fetch_assignment", NAME, "--course=llm101", f"--Exchange.root={exchange}"],
                 home)
        answer(home / NAME / f"{NAME}.ipynb", {k: v for k, v in answers[student].items() if v})
        nbgrader(["submit", NAME, "--course=llm101", f"--student={student}",
                  f"--Exchange.root={exchange}", f"--Exchange.cache={home / 'cache'}"], home)
    nbgrader(["collect", NAME], course)
    submitted = course / "submitted"
    (submitted / "partial" / NAME / "timestamp.txt").write_text(LATE)   # two days late
    (submitted / "mallory" / NAME / f"{NAME}.ipynb").write_text('{"cells": [ broken')
    stranger = submitted / "stranger" / NAME
    stranger.mkdir(parents=True)
    (stranger / f"{NAME}.ipynb").write_text(
        (submitted / "honest" / NAME / f"{NAME}.ipynb").read_text())
    proc = llmlab_grade("--course", str(course), "--assignment", NAME, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SAWarning" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return course, exchange, json.loads(proc.stdout)


def rows_of(summary) -> dict[str, dict]:
    [result] = summary["assignments"]
    return {r["student"]: r for r in result["students"]}


def gradebook(course: Path):
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{course / 'gradebook.db'}", "llm101")


def test_the_release_holds_no_solution(course):
    root = course[0]
    solution_lines = {line.strip() for cell in authored().cells
                      for part in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION",
                                             cell.source, re.S)
                      for line in part.splitlines() if line.strip()}
    released = [p for p in (root / "release").rglob("*") if p.is_file()]
    assert [p.name for p in released] == [f"{NAME}.ipynb"]
    text = released[0].read_text()
    assert solution_lines and not [line for line in solution_lines if line in text]
    assert "BEGIN HIDDEN TESTS" not in text


def test_scores_late_penalty_flags_and_what_is_reported(course):
    root, _, summary = course
    rows = rows_of(summary)
    honest_exercises = {"softmax": 2, "split_heads": 2, "masked_mean": 2, "rmsnorm": 2,
                        "predict": 1}
    cheater_softmax = 0 if files_isolated() else 2  # without a private root, source/ is readable
    assert {s: r.get("exercises") for s, r in rows.items()} == {
        "honest": honest_exercises,
        "partial": {**honest_exercises, "masked_mean": 1, "rmsnorm": 0},
        "copied": honest_exercises,
        "cheater": {**honest_exercises, "softmax": cheater_softmax, "predict": 0},
        "mallory": {},
    }
    assert (rows["partial"]["raw_score"], rows["partial"]["late_penalty"]) == (6, 6)
    assert rows["partial"]["score"] == 0 and rows["honest"]["late_penalty"] == 0
    assert rows["honest"]["max_score"] == 10  # 9 autograded + 1 graded by hand
    assert "not a valid Jupyter notebook" in rows["mallory"]["error"]
    [result] = summary["assignments"]
    assert result["unknown_students"] == ["stranger"]
    flags = {(f["student"], f["exercise"]) for f in result["similarity"]}
    assert flags == {("copied", "softmax")}
    assert json.loads((root / "similarity" / f"{NAME}.json").read_text()) == result["similarity"]
    with gradebook(root) as gb:
        assert {s.id for s in gb.students} == set(STUDENTS)  # the stranger was not added
        partial = gb.find_submission(NAME, "partial")
        assert partial.late_submission_penalty == 6 and partial.total_seconds_late > 0
        copied = gb.find_submission_notebook(NAME, NAME, "copied")
        assert copied.flagged and not gb.find_submission_notebook(NAME, NAME, "honest").flagged
        grades = {(s, g.name): g for s in ("honest", "partial") for g in
                  gb.find_submission_notebook(NAME, NAME, s).grades}
        assert grades["partial", "masked_mean__check"].score == 1
        assert grades["partial", "masked_mean__hidden"].score == 0
        # only the written answer an author marked for grading by hand, and only once answered
        assert {k for k, g in grades.items() if g.needs_manual_grade} == {("honest", "explain")}
        comment = gb.find_comment("masked_mean", NAME, NAME, "partial").auto_comment
        assert comment.startswith("masked_mean: 1 / 2 points.")
        assert "✓ The visible check passed" in comment and "✗ The hidden tests failed" in comment
        assert "case 1 of 1 (all masked)" in comment and "NaN" in comment
        mallory = gb.find_submission_notebook(NAME, NAME, "mallory")
        assert mallory.flagged and mallory.score == 0
    assert not (root / "autograded" / "mallory").exists()
    autograded = root / "autograded" / "partial" / NAME
    assert {p.name for p in autograded.iterdir()} >= {f"{NAME}.ipynb", "timestamp.txt"}
    assert (autograded / "timestamp.txt").read_text().startswith("2030-01-03")


def test_formgrader_lists_opens_and_grades_by_hand(course):
    from nbconvert.exporters import HTMLExporter
    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.server_extensions.formgrader import handlers
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    root = course[0]
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    coursedir = CourseDirectory(config=config, root=str(root))
    api = NbGraderAPI(coursedir=coursedir, config=config)
    listed = {s["student"]: s for s in api.get_submissions(NAME)}
    assert {s for s, v in listed.items() if v["autograded"]} == {"honest", "partial", "copied",
                                                                  "cheater"}
    assert listed["honest"]["score"] == 9 and listed["honest"]["needs_manual_grade"]
    # open a submission as formgrader does, then grade the written answer by hand
    html_config = Config()
    html_config.HTMLExporter.template_name = "formgrade"
    html_config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    with gradebook(root) as gb:
        notebook = gb.find_submission_notebook(NAME, NAME, "honest")
        resources = {"assignment_id": NAME, "notebook_id": NAME, "submission_id": notebook.id,
                     "index": 0, "total": 4, "base_url": "", "student": "honest",
                     "last_name": None, "first_name": "Honest", "notebook_path": "x"}
        page, _ = HTMLExporter(config=html_config).from_filename(
            str(root / "autograded" / "honest" / NAME / f"{NAME}.ipynb"), resources=resources)
        assert "masked_mean__hidden" in page and "the hidden tests passed" in page
        grade = gb.find_grade("explain", NAME, NAME, "honest")
        grade.manual_score, grade.needs_manual_grade = 1.0, False  # formgrader's GradeHandler.put
        gb.db.commit()
        assert gb.find_submission(NAME, "honest").score == 10
    assert not api.get_submission(NAME, "honest")["needs_manual_grade"]


def test_feedback_generated_released_and_fetched(course):
    root, exchange, _ = course
    nbgrader(["generate_feedback", NAME], root)
    page = (root / "feedback" / "partial" / NAME / f"{NAME}.html").read_text()
    assert "the visible check passed" in page and "all masked" in page
    assert "NaN" in page and "solution markers" not in page
    assert (root / "feedback" / "partial" / NAME / "timestamp.txt").exists()
    nbgrader(["release_feedback", NAME], root)
    assert len(list((exchange / "llm101" / "feedback").glob("*.html"))) == 4
    home = root.parent / "home" / "partial"
    nbgrader(["fetch_feedback", NAME, "--course=llm101", "--student=partial",
              f"--Exchange.root={exchange}", f"--Exchange.cache={home / 'cache'}"], home)
    fetched = list((home / NAME / "feedback").rglob(f"{NAME}.html"))
    assert fetched and "all masked" in fetched[0].read_text()


def test_exports(course):
    root = course[0]
    nbgrader(["export"], root)
    grades = {r["student_id"]: r for r in csv.DictReader(open(root / "grades.csv"))}
    assert float(grades["partial"]["late_submission_penalty"]) == 6
    assert float(grades["partial"]["score"]) == 0 and float(grades["copied"]["raw_score"]) == 9
    nbgrader(["export", "--exporter=llmlab.grading.export.ExerciseCsvExport",
              "--to=exercises.csv"], root)
    rows = {(r["student_id"], r["exercise"]): r for r in csv.DictReader(open(root / "exercises.csv"))}
    assert (rows["partial", "masked_mean"]["score"], rows["partial", "masked_mean"]["max_score"]) \
        == ("1", "2")
    assert rows["honest", "explain"]["needs_manual_grade"] in ("true", "false")
    assert rows["mallory", "softmax"]["score"] == "0"


def test_regrading_one_student_with_a_broken_resubmission(course):
    """The resubmission is marked and its stale grade and feedback cleared; the other
    students' grades and similarity flags stay."""
    root = course[0]
    (root / "submitted" / "partial" / NAME / f"{NAME}.ipynb").write_text("not a notebook")
    proc = llmlab_grade("--course", str(root), "--assignment", NAME, "--student", "partial")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "partial" in proc.stdout and "not a valid Jupyter notebook" in proc.stdout
    with gradebook(root) as gb:
        partial = gb.find_submission_notebook(NAME, NAME, "partial")
        assert partial.score == 0 and partial.flagged
        assert all("could not be graded" in c.auto_comment for c in partial.comments)
        assert gb.find_submission(NAME, "copied").score == 9   # untouched
    assert not (root / "autograded" / "partial").exists()
    assert not (root / "feedback" / "partial" / NAME).exists()
    flags = json.loads((root / "similarity" / f"{NAME}.json").read_text())
    assert {(f["student"], f["exercise"]) for f in flags} == {("copied", "softmax")}


def test_a_forgotten_generate_assignment_is_a_clear_error_up_front(tmp_path):
    course = tmp_path / "course"
    (course / "source" / NAME).mkdir(parents=True)
    nbformat.write(authored(), course / "source" / NAME / f"{NAME}.ipynb")
    (course / "submitted" / "alice" / NAME).mkdir(parents=True)
    nbformat.write(authored(), course / "submitted" / "alice" / NAME / f"{NAME}.ipynb")
    proc = llmlab_grade("--course", str(course), "--assignment", NAME)
    assert proc.returncode == 1
    assert f"nbgrader generate_assignment {NAME}" in proc.stderr
    assert "Traceback" not in proc.stderr and not (course / "autograded").exists()


def test_all_means_every_assignment_in_source(tmp_path):
    """--all finds each assignment of source/ (here: not generated, a clear error naming it);
    an empty source/ is a clear error too."""
    course = tmp_path / "course"
    (course / "source" / "empty").mkdir(parents=True)   # no notebook: not an assignment
    proc = llmlab_grade("--course", str(course), "--all")
    assert proc.returncode == 1 and "no assignment in" in proc.stderr, proc.stderr
    (course / "source" / NAME).mkdir()
    nbformat.write(authored(), course / "source" / NAME / f"{NAME}.ipynb")
    proc = llmlab_grade("--course", str(course), "--all")
    assert proc.returncode == 1 and f"nbgrader generate_assignment {NAME}" in proc.stderr
    assert "Traceback" not in proc.stderr
