"""nbgrader configuration of this repository: source = solutions/, release = chapters/.

The shared settings live in llmlab/grading/course.py so the grader's temporary courses match.
"""

from pathlib import Path

from llmlab.grading.course import COURSE_SETTINGS

c = get_config()  # noqa: F821
exec(COURSE_SETTINGS)
ROOT = Path(__file__).resolve().parent
c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.db_url = "sqlite:///" + str(ROOT / "gradebook.db")
