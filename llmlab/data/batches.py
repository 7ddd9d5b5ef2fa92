"""Random-window batches for next-token prediction.

A batch is ``batch_size`` windows of ``seq_len + 1`` consecutive tokens at uniformly random
offsets; inputs are the first ``seq_len``, targets the last ``seq_len`` (shifted by one).
Sampling with a ``torch.Generator`` makes the stream reproducible and resumable: save the
generator's state in a checkpoint and the continuation is identical.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import numpy as np
import torch


def random_windows(
    tokens: np.ndarray | torch.Tensor,
    batch_size: int,
    seq_len: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens: (n,) ids -> x, y: (batch_size, seq_len) long, y[:, i] = tokens[start + i + 1]."""
    n = len(tokens)
    if n < seq_len + 1:
        raise ValueError(f"need at least seq_len + 1 = {seq_len + 1} tokens, have {n}")
    starts = torch.randint(0, n - seq_len, (batch_size,), generator=generator)
    window = torch.arange(seq_len + 1)
    if isinstance(tokens, torch.Tensor):
        chunk = tokens[starts[:, None] + window].long()
    else:
        chunk = torch.from_numpy(tokens[(starts[:, None] + window).numpy()].astype(np.int64))
    return chunk[:, :-1], chunk[:, 1:]


def sequential_windows(
    tokens: np.ndarray | torch.Tensor, batch_size: int, seq_len: int, max_batches: int | None = None
):
    """Non-overlapping windows in order (for evaluation): yields (x, y) (≤batch_size, seq_len)."""
    n_windows = (len(tokens) - 1) // seq_len
    if n_windows == 0:
        raise ValueError(f"need at least seq_len + 1 = {seq_len + 1} tokens, have {len(tokens)}")
    starts = torch.arange(n_windows) * seq_len
    for i, s in enumerate(starts.split(batch_size)):
        if max_batches is not None and i >= max_batches:
            return
        idx = (s[:, None] + torch.arange(seq_len + 1)).numpy()
        chunk = torch.as_tensor(np.asarray(tokens)[idx].astype(np.int64))
        yield chunk[:, :-1], chunk[:, 1:]
