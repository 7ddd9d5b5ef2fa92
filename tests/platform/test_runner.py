"""The notebook runner never sleeps through a kernel message (jupyter/nbclient#312)."""

from __future__ import annotations

import asyncio
import time
from queue import Empty

import nbformat
import pytest

from llmlab.grading.runner import NotebookRunner, in_slices


class MissedWakeup:
    """A socket whose message arrives at ``arrives`` s but whose first poll is never woken by it,
    as a ``zmq.asyncio`` poll can miss an edge-triggered signal: that poll runs to its timeout."""

    def __init__(self, arrives: float | None) -> None:
        self.start = time.monotonic()
        self.arrives = arrives
        self.polls: list[float | None] = []

    async def get_msg(self, timeout: float | None = None) -> dict:
        self.polls.append(timeout)
        here = self.arrives is not None and time.monotonic() - self.start >= self.arrives
        if here and len(self.polls) > 1:
            return {"msg": "reply"}
        await asyncio.sleep(timeout if timeout is not None else 3600)
        raise Empty


def test_a_message_missed_by_one_poll_is_taken_by_the_next():
    sock = MissedWakeup(arrives=0.05)
    start = time.monotonic()
    assert asyncio.run(in_slices(sock.get_msg, slice_s=0.1)(timeout=30)) == {"msg": "reply"}
    assert time.monotonic() - start < 2, "waited for the whole timeout"
    assert max(sock.polls) <= 0.1


def test_the_deadline_still_raises_empty():
    sock = MissedWakeup(arrives=None)
    start = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(in_slices(sock.get_msg, slice_s=0.1)(timeout=0.35))
    assert 0.3 < time.monotonic() - start < 1.5
    assert len(sock.polls) >= 3


def test_a_notebook_with_a_widget_runs_through(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import ipywidgets as w\n"
                                  "w.interact(lambda x: print(x * 2), x=w.IntSlider(value=3));"),
        nbformat.v4.new_code_cell("print('after')"),
    ])
    client = NotebookRunner(nb, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        assert client.kc.shell_channel.get_msg.__qualname__.startswith("in_slices")
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
    assert "6" in str(nb.cells[0].outputs) and nb.cells[1].outputs[0]["text"] == "after\n"
