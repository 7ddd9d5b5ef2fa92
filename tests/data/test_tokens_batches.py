"""Token memmaps and window batching."""

import numpy as np
import pytest
import torch

from llmlab.data import random_windows, read_tokens, sequential_windows, token_dtype, write_tokens


def _encode(text):
    return [ord(c) - ord("a") for c in text]


def test_write_read_round_trip_with_separators(tmp_path):
    arr = write_tokens(["abc", "de"], _encode, tmp_path / "t.bin", vocab_size=27, eot_id=26,
                       progress=False)
    assert arr.dtype == np.uint16 and not arr.flags.writeable
    assert arr.tolist() == [0, 1, 2, 26, 3, 4, 26]
    assert read_tokens(tmp_path / "t.bin").tolist() == arr.tolist()
    assert token_dtype(70000) == np.uint32
    with pytest.raises(ValueError, match="outside vocab"):
        write_tokens(["z"], lambda s: [99], tmp_path / "u.bin", vocab_size=27, progress=False)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_random_windows_are_shifted_and_reproducible(as_tensor):
    toks = np.arange(1000, dtype=np.uint16)
    src = torch.from_numpy(toks.astype(np.int64)) if as_tensor else toks
    x, y = random_windows(src, 8, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.long
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    assert int(y.max()) <= 999
    x2, _ = random_windows(src, 8, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="at least"):
        random_windows(toks[:10], 2, 16)


def test_random_windows_reach_both_ends():
    toks = np.arange(20, dtype=np.uint16)
    x, y = random_windows(toks, 2000, 4, torch.Generator().manual_seed(0))
    assert int(x.min()) == 0 and int(y.max()) == 19


def test_sequential_windows_tile_in_order():
    toks = np.arange(50, dtype=np.uint16)
    batches = list(sequential_windows(toks, 2, 10))
    xs = torch.cat([x for x, _ in batches])
    assert xs.shape == (4, 10) and xs.flatten().tolist() == list(range(40))
    assert len(list(sequential_windows(toks, 2, 10, max_batches=1))) == 1
