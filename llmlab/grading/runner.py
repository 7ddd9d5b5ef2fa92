"""A notebook client whose waits for kernel messages never sleep through one.

``nbclient`` waits for a cell's reply with one ``poll`` of the shell socket for the whole cell
timeout. Its sockets are ``zmq.asyncio`` sockets, whose readiness reaches the event loop through
ZeroMQ's edge-triggered file descriptor: when a burst of messages (a widget's comm messages, say)
leaves the descriptor signalled once for several messages, the reply that arrived can sit unread
until the poll times out (jupyter/nbclient#312). The cell then "succeeds" a whole timeout late:
10 minutes per stall, seen as Run All tests that took 620 s or 1,233 s instead of 20–30 s, only on
a busy machine. Here each wait is cut into one-second polls; every new poll reads the socket's
``EVENTS`` afresh, so a message that has arrived is taken within a second.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from queue import Empty
from typing import Any

from nbclient import NotebookClient
from nbclient.util import run_sync

SLICE_S = 1.0

GetMsg = Callable[..., Awaitable[dict[str, Any]]]


def in_slices(get_msg: GetMsg, slice_s: float = SLICE_S) -> GetMsg:
    """``get_msg(timeout=T)`` as polls of at most ``slice_s`` seconds until T has passed (no T:
    until a message comes). Raises ``queue.Empty`` at the deadline, as the original does."""

    async def get(timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = slice_s if deadline is None else min(slice_s, max(0.0, deadline - time.monotonic()))
            try:
                return await get_msg(timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    return get


class NotebookRunner(NotebookClient):
    """``nbclient.NotebookClient`` whose shell and IOPub waits poll in one-second slices."""

    async def async_start_new_kernel_client(self):  # type: ignore[override]
        kc = await super().async_start_new_kernel_client()
        for channel in (kc.shell_channel, kc.iopub_channel):
            channel.get_msg = in_slices(channel.get_msg)
        return kc

    start_new_kernel_client = run_sync(async_start_new_kernel_client)
