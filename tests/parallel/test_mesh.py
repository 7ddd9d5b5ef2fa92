"""A 2-D mesh on 4 processes: data parallel over tensor-parallel replicas, and over pipelines,
equals one process."""

from __future__ import annotations

from llmlab.parallel import launch
from llmlab.parallel import workers as W


def test_dp_by_tp_mesh_equals_single_process():
    outs = launch(W.mesh_check, 4, 2, timeout=90)
    assert sorted((o["dp_rank"], o["tp_rank"]) for o in outs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(o["diff"] < 1e-4 for o in outs), outs


def test_dp_by_pp_mesh_equals_single_process():
    outs = launch(W.mesh_pp_check, 4, 2, timeout=90)
    assert sorted((o["dp_rank"], o["pp_rank"]) for o in outs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    n_params = sum(1 for _ in W.tiny_gpt(tie_embeddings=False).parameters())
    assert outs[0]["n_params"] + outs[1]["n_params"] == n_params  # the two stages hold every weight
    assert all(o["diff"] < 1e-4 for o in outs), outs
