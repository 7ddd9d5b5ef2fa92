"""Pruning (magnitude, Wanda, 2:4, SparseGPT), SVD low rank, QAT's STE, distillation loss and
Hadamard rotations."""

from __future__ import annotations

import copy

import pytest
import torch

from llmlab.quant import (
    QATLinear,
    QuantLinear,
    collect_inputs,
    convert_qat,
    distill_loss,
    fake_quant_ste,
    fake_quantize,
    hadamard_matrix,
    hessian,
    kurtosis,
    lowrank_model,
    nm_mask,
    prepare_qat,
    prune_model,
    random_hadamard,
    relative_error,
    rotate,
    sparsegpt_prune,
    sparsity_of,
    svd_factors,
    unstructured_mask,
    wanda_score,
)
from tests.quant.conftest import tiny_model


@pytest.fixture(scope="module")
def layer(book, calib):
    name = "blocks.2.mlp.down_proj"
    x = collect_inputs(book[0], calib, [name])[name]
    return book[0].get_submodule(name).weight.detach().clone(), x


def test_masks():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.5, 0.1, 9.0, 8.0]])
    assert nm_mask(score, 2, 4).tolist() == [[True, False, True, False, False, False, True, True]]
    assert unstructured_mask(score, 0.5).sum() == 4
    with pytest.raises(ValueError, match="sparsity"):
        unstructured_mask(score, 1.0)
    with pytest.raises(ValueError, match="in_features"):
        nm_mask(torch.ones(2, 6), 2, 4)


def test_wanda_and_sparsegpt_beat_magnitude_on_real_inputs(layer):
    w, x = layer
    err = lambda wp: (x @ (wp - w).T).pow(2).mean().item()
    magnitude = w * unstructured_mask(w.abs(), 0.5)
    wanda = w * unstructured_mask(wanda_score(w, x), 0.5)
    sgpt = sparsegpt_prune(w, hessian(x), 0.5)
    assert abs((sgpt == 0).float().mean().item() - 0.5) < 0.01
    assert err(wanda) < err(magnitude) and err(sgpt) < err(wanda), (err(magnitude), err(wanda), err(sgpt))
    sgpt24 = sparsegpt_prune(w, hessian(x), nm=(2, 4))
    assert ((sgpt24 != 0).view(w.shape[0], -1, 4).sum(-1) <= 2).all()
    wanda24 = w * nm_mask(wanda_score(w, x), 2, 4)
    assert err(sgpt24) < err(wanda24)


def test_prune_model_reaches_the_sparsity():
    model = tiny_model()
    ids = torch.randint(0, 101, (2, 32))
    m = prune_model(copy.deepcopy(model), "wanda", 0.5, calib=ids)
    assert abs(sparsity_of(m) - 0.5) < 0.01
    m24 = prune_model(copy.deepcopy(model), "magnitude", nm=(2, 4))
    assert abs(sparsity_of(m24) - 0.5) < 1e-6
    with pytest.raises(ValueError, match="calib"):
        prune_model(copy.deepcopy(model), "wanda", 0.5)


def test_svd_is_optimal_and_error_formula():
    torch.manual_seed(0)
    w = torch.randn(64, 48)
    b, a = svd_factors(w, 10)
    assert b.shape == (64, 10) and a.shape == (10, 48)
    err = ((w - b @ a).norm() / w.norm()).item()
    assert err == pytest.approx(relative_error(w, 10), rel=1e-4)
    rand = torch.randn(64, 10) @ torch.linalg.lstsq(torch.randn(64, 10), w).solution
    assert err < ((w - rand).norm() / w.norm()).item()
    full = lowrank_model(tiny_model(), 1.0)
    ids = torch.randint(0, 101, (1, 16))
    torch.testing.assert_close(full(ids), tiny_model()(ids), atol=1e-4, rtol=1e-4)


def test_ste_forward_quantizes_backward_is_identity():
    torch.manual_seed(0)
    w = torch.randn(8, 64, requires_grad=True)
    q = fake_quant_ste(w, 4, 32)
    torch.testing.assert_close(q, fake_quantize(w.detach(), 4, False, "group", 32))
    g = torch.randn(8, 64)
    (q * g).sum().backward()
    torch.testing.assert_close(w.grad, g)


def test_qat_training_moves_weights_and_converts():
    model = prepare_qat(tiny_model(), bits=4, group_size=32)
    lin = model.blocks[0].attn.q_proj
    assert isinstance(lin, QATLinear)
    before = lin.weight.detach().clone()
    ids = torch.randint(0, 101, (2, 17))
    model.loss(ids[:, :-1], ids[:, 1:]).backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    with torch.no_grad():
        lin.weight -= 0.1 * lin.weight.grad
    assert not torch.equal(before, lin.weight)
    out = model(ids)
    convert_qat(model)
    assert isinstance(model.blocks[0].attn.q_proj, QuantLinear)
    torch.testing.assert_close(model(ids), out, atol=0.05 * out.abs().max().item(), rtol=0)


def test_distill_loss():
    torch.manual_seed(0)
    t, y = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    assert distill_loss(t, t, y, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(2, 5, 11)
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / 2, -1), torch.log_softmax(t / 2, -1),
                                    log_target=True, reduction="sum") / 10
    assert distill_loss(s, t, y, 2.0, 1.0).item() == pytest.approx(4 * kl.item(), rel=1e-5)


def test_hadamard_rotation_removes_outliers():
    h = hadamard_matrix(8)
    torch.testing.assert_close(h @ h.T, torch.eye(8))
    q = random_hadamard(192)
    torch.testing.assert_close(q @ q.T, torch.eye(192), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="power of two"):
        hadamard_matrix(12)
    torch.manual_seed(0)
    x, w = torch.randn(256, 192), torch.randn(64, 192)
    x[:, 5] *= 50
    xr, wr = rotate(x, w, q)
    torch.testing.assert_close(xr @ wr.T, x @ w.T, atol=1e-2, rtol=1e-4)
    assert kurtosis(x) > 50 and kurtosis(xr) < 10  # spread over its 64-wide Hadamard block
    err = lambda a: (fake_quantize(a, 4, True, "channel") - a).pow(2).mean() / a.pow(2).mean()
    assert err(xr) < err(x) / 5
