"""Find the cell that kills or hangs the kernel, so grading can isolate it.

nbgrader interrupts a cell that runs past its time limit, but a kernel that dies (``os._exit``,
a segfault, running out of memory) or ignores the interrupt stops the whole notebook. The probe
runs the notebook cell by cell with a hard per-cell limit and returns the index of the first
cell that killed or hung the kernel.
"""

from __future__ import annotations

import os
from pathlib import Path

from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from llmlab.grading.checks import GRADER_ENV


def find_fatal_cell(nb: NotebookNode, cwd: Path, timeout: int) -> tuple[int, str] | None:
    """(index, reason) of the first cell that kills or hangs the kernel, or None."""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=False, resources={"metadata": {"path": str(cwd)}})
    with client.setup_kernel(env={**os.environ, GRADER_ENV: "1"}):
        for index, cell in enumerate(nb.cells):
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                return index, f"ran past the {timeout} s limit and ignored the interrupt"
            except DeadKernelError:
                return index, "crashed the Python kernel (os._exit, a segfault or out of memory)"
    return None
