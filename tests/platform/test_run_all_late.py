"""Run All on the untouched releases of chapters 05-09 (the rest: test_run_all.py)."""

from __future__ import annotations

import pytest

from tests.platform.test_run_all import CHAPTERS, EARLY, check_reaches_the_end


@pytest.mark.slow
@pytest.mark.parametrize("name", [c for c in CHAPTERS if c not in EARLY])
def test_run_all_on_the_untouched_release_reaches_the_last_cell(name):
    check_reaches_the_end(name)
