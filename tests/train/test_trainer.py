"""Trainer: learning happens, accumulation equals a big batch, bf16 autocast, exact resume,
atomic checkpoints, evaluation, MFU bookkeeping."""

import math

import numpy as np
import pytest
import torch

from llmlab.model import GPT, GPTConfig
from llmlab.nn import cross_entropy
from llmlab.train import (
    TrainConfig,
    Trainer,
    evaluate_loss,
    load_checkpoint,
    measure_matmul_peak,
    mfu,
    save_checkpoint,
    uniform_loss,
    unigram_loss,
)
from llmlab.train import checkpoint as checkpoint_module

CFG = GPTConfig.llama_style(vocab_size=32, block_size=16, d_model=32, n_head=4, n_kv_head=2,
                            n_layer=2)


def _tokens(n=4000, seed=0):
    """A learnable stream: a repeating pattern with noise."""
    rng = np.random.default_rng(seed)
    base = np.tile(np.arange(0, 32, 3), n // 11 + 1)[:n]
    noise = rng.random(n) < 0.1
    return np.where(noise, rng.integers(0, 32, n), base).astype(np.uint16)


@pytest.fixture
def one_thread():
    """Bitwise comparisons need one thread count throughout (fit() sets config.threads)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _trainer(seed=0, **kw):
    torch.manual_seed(seed)
    defaults = dict(max_steps=8, batch_size=4, warmup_steps=2, log_every=2, eval_every=4,
                    eval_batches=2, precision="fp32", threads=1)
    return Trainer(GPT(CFG), _tokens(), _tokens(600, 1), TrainConfig(**{**defaults, **kw}),
                   peak_flops=1e11)


def test_fit_restores_the_thread_count():
    before = torch.get_num_threads()
    _trainer(max_steps=1, warmup_steps=0, threads=1).fit(progress=False)
    assert torch.get_num_threads() == before


def test_loss_goes_well_below_unigram():
    tr = _trainer(max_steps=60, lr=1e-2, warmup_steps=5, eval_every=60)
    log = tr.fit(progress=False)
    val = [r["val_loss"] for r in log if "val_loss" in r][-1]
    assert val < 0.6 * unigram_loss(_tokens(), _tokens(600, 1), 32)
    row = [r for r in log if "tokens_per_s" in r][-1]
    assert row["tokens_per_s"] > 0 and 0 < row["mfu"]
    assert row["mfu"] == pytest.approx(mfu(row["tokens_per_s"], tr.flops_per_token, 1e11))


def test_grad_accumulation_equals_one_big_batch(one_thread):
    a = _trainer(batch_size=4, grad_accum=1, max_steps=1, warmup_steps=0)
    b = _trainer(batch_size=2, grad_accum=2, max_steps=1, warmup_steps=0)
    a.train_step()
    b.train_step()  # same generator stream: the 2+2 windows are the 4 windows of `a`
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)  # another BLAS sums in another order


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_gives_identical_continuation(tmp_path, precision, one_thread):
    straight = _trainer(precision=precision)
    straight.fit(progress=False)

    first = _trainer(precision=precision, max_steps=8)
    for _ in range(4):
        first.train_step()
    first.save(tmp_path / "ckpt.pt")
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint must restore it
    resumed = _trainer(seed=99, precision=precision)  # different init, overwritten by resume
    resumed.resume(tmp_path / "ckpt.pt")
    assert resumed.step == 4
    resumed.fit(progress=False)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


def test_a_run_stopped_by_until_saves_and_resumes_to_the_same_weights_and_log(tmp_path, one_thread):
    straight = _trainer(precision="fp32", eval_every=3)
    straight.fit(progress=False)

    path = str(tmp_path / "ckpt.pt")
    first = _trainer(precision="fp32", eval_every=3, checkpoint_path=path)
    first.fit(progress=False, until=5)  # a job stopped by its time limit
    assert first.step == 5 and (tmp_path / "ckpt.pt").exists()
    resumed = _trainer(seed=99, precision="fp32", eval_every=3, checkpoint_path=path)
    resumed.resume(path)
    resumed.fit(progress=False)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    keys = ("step", "loss", "grad_norm", "lr", "val_loss")
    assert [{k: r[k] for k in keys if k in r} for r in resumed.log] == \
        [{k: r[k] for k in keys if k in r} for r in straight.log]
    with pytest.raises(ValueError, match="until"):
        _trainer().fit(progress=False, until=first.config.max_steps + 1)


def test_bf16_autocast_runs_matmuls_in_bf16_and_keeps_fp32_master_weights():
    tr = _trainer(precision="bf16", max_steps=2)
    seen = []
    hook = tr.model.blocks[0].attn.q_proj.register_forward_hook(
        lambda m, i, o: seen.append(o.dtype))
    tr.train_step()
    hook.remove()
    assert seen == [torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())
    st = tr.optimizer.state[tr.model.tok_emb.weight]
    assert st["exp_avg"].dtype == torch.float32


def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(RuntimeError):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_evaluate_loss_is_the_mean_over_windows():
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    toks = _tokens(16 * 5 + 1)
    got = evaluate_loss(model, toks, batch_size=2, seq_len=16)
    x = torch.as_tensor(toks[:80].astype(np.int64)).view(5, 16)
    y = torch.as_tensor(toks[1:81].astype(np.int64)).view(5, 16)
    with torch.no_grad():
        assert got == pytest.approx(cross_entropy(model(x), y).item(), rel=1e-5)


def test_baselines_and_peak():
    train = np.array([0, 0, 0, 1], dtype=np.uint16)
    # add-one counts: [4, 2, 1] of 7
    assert unigram_loss(train, np.array([0, 1]), 3) == pytest.approx(
        -(math.log(4 / 7) + math.log(2 / 7)) / 2)
    assert uniform_loss(3) == pytest.approx(math.log(3))
    assert measure_matmul_peak(torch.float32, n=64, repeats=2) > 0


def test_config_validation():
    with pytest.raises(ValueError, match="lr_max"):
        TrainConfig(lr_max=1.0)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(max_steps=5, warmup_steps=10)
    with pytest.raises(ValueError, match="block_size"):
        Trainer(GPT(CFG), _tokens(), config=TrainConfig(seq_len=64))


def test_train_step_is_chapter_02s_accumulated_step(one_thread):
    """The Trainer runs the step chapter 02 teaches: the same micro-batches through
    accumulated_step give the same loss, norm and weights, bit for bit."""
    from llmlab.data.batches import random_windows
    from llmlab.train import accumulated_step

    ours, ref = _trainer(grad_accum=3), _trainer(grad_accum=3)
    out = ours.train_step()
    c = ref.config
    for group in ref.optimizer.param_groups:
        group["lr"] = ref.lr_at(0)
    batches = [random_windows(ref.train_tokens, c.batch_size, ref.seq_len, ref.generator)
               for _ in range(c.grad_accum)]
    loss, norm = accumulated_step(ref.model, ref.optimizer, batches, None, c.grad_clip,
                                  loss_of=ref.compute_loss)
    assert (out["loss"], out["grad_norm"]) == (loss, norm)
    for p, q in zip(ours.model.parameters(), ref.model.parameters()):
        assert torch.equal(p, q)
