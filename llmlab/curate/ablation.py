"""Data ablations: train the same tiny model on two datasets at equal tokens and compare.

This is how data work is judged in the industry (FineWeb, DCLM, Dolma): every pipeline choice is
an ablation — train identical small models on the data with and without the change, for the same
number of tokens, and compare them on the same held-out evaluation (Penedo et al., "The FineWeb
Datasets", arXiv:2406.17557; Li et al., "DataComp-LM", arXiv:2406.11794). Here the model is a
byte-level GPT (chapter 02's ``GPT``, vocabulary 256, so no tokenizer choice interferes) trained
by chapter 02's :class:`~llmlab.train.Trainer` in fp32, small enough to train in seconds on a CPU;
the evaluation is its loss on held-out text, per window, so two models scored on the same
windows are compared with a paired bootstrap (:func:`llmlab.evaluate.statistics.paired_bootstrap`).

- :func:`train_bytes` — one model, ``steps × batch_size × seq_len`` training bytes exactly;
- :func:`compare` — every dataset × every seed, the same held-out windows, the paired interval;
- :func:`mixture_sweep` — two domains mixed at several weights, each domain's held-out loss.

Memorisation against duplicate count is in :mod:`llmlab.curate.canaries`.
Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llmlab.data.batches import sequential_windows
from llmlab.evaluate.statistics import Interval, paired_bootstrap
from llmlab.model import GPT, GPTConfig
from llmlab.nn.functional import fast_cross_entropy
from llmlab.train import TrainConfig, Trainer
from llmlab.utils import reject_unknown_keys

SEPARATOR = b"\n\x00\n"  # between documents in a byte stream


@reject_unknown_keys
@dataclass
class AblationConfig:
    """The tiny model and its training (equal for every dataset compared)."""

    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    seq_len: int = 64
    batch_size: int = 16
    steps: int = 200
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("d_model", "n_layer", "n_head", "seq_len", "batch_size", "steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"AblationConfig.{key} must be >= 1, got {getattr(self, key)}")

    @property
    def tokens(self) -> int:
        """Training bytes every model sees: steps × batch_size × seq_len."""
        return self.steps * self.batch_size * self.seq_len


def to_bytes(texts: Sequence[str]) -> np.ndarray:
    """Documents as one uint8 array of UTF-8 bytes, separated by ``SEPARATOR``."""
    return np.frombuffer(SEPARATOR.join(t.encode("utf-8") for t in texts), dtype=np.uint8).copy()


def train_config(cfg: AblationConfig, seed: int | None = None) -> TrainConfig:
    """The chapter-02 ``TrainConfig`` of one ablation run (fp32, no evaluation during training)."""
    return TrainConfig(max_steps=cfg.steps, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                       lr=cfg.lr, warmup_steps=min(20, cfg.steps), weight_decay=0.0,
                       precision="fp32", eval_every=0, log_every=cfg.steps,
                       seed=cfg.seed if seed is None else seed)


def train_bytes(data: np.ndarray, cfg: AblationConfig | None = None,
                seed: int | None = None) -> tuple[GPT, int]:
    """A byte-level GPT trained by :class:`~llmlab.train.Trainer` on windows drawn at random from
    ``data`` (uint8). Returns the model and the number of training bytes it saw, which is
    ``cfg.tokens`` whatever the dataset (so two datasets are compared at equal tokens).
    ``seed`` (default ``cfg.seed``) sets both the initial weights and the window sampler."""
    cfg = cfg or AblationConfig()
    seed = cfg.seed if seed is None else seed
    data = np.asarray(data)
    if data.ndim != 1 or data.dtype != np.uint8:
        raise ValueError(f"data must be a 1-D uint8 byte array, got {data.dtype} {data.shape}")
    if len(data) <= cfg.seq_len + 1:
        raise ValueError(f"need more than seq_len + 1 = {cfg.seq_len + 1} bytes, got {len(data)}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT(GPTConfig(vocab_size=256, block_size=cfg.seq_len, n_layer=cfg.n_layer,
                              n_head=cfg.n_head, d_model=cfg.d_model))
        trainer = Trainer(model, data, config=train_config(cfg, seed), peak_flops=1.0)
        trainer.fit(progress=False)
    return model.eval(), int(trainer.log[-1]["tokens"])


@torch.no_grad()
def window_losses(model: GPT, data: np.ndarray, max_windows: int | None = None) -> np.ndarray:
    """(n_windows,) mean next-byte loss (nats) of each consecutive non-overlapping window of
    ``block_size`` bytes of ``data``: the items a bootstrap resamples."""
    seq = model.config.block_size
    n = (len(data) - 1) // seq if max_windows is None else min(max_windows, (len(data) - 1) // seq)
    if n < 2:
        raise ValueError(f"held-out data needs at least 2 windows of {seq} + 1 bytes, got "
                         f"{len(data)} bytes")
    out = []
    for x, y in sequential_windows(data[:n * seq + 1], 64, seq):
        loss = fast_cross_entropy(model(x), y, reduction="none").view(y.shape)
        out.append(loss.mean(1))
    return torch.cat(out).double().numpy()


@dataclass(frozen=True)
class Comparison:
    """Held-out loss of models trained on each dataset at equal tokens.

    ``tokens``: training bytes per dataset (each seed's run, identical); ``losses``: per dataset,
    the held-out mean loss of each seed's model; ``windows``: per dataset, the per-window loss
    averaged over seeds; ``difference``: paired bootstrap interval of the mean per-window loss
    of ``baseline`` minus ``treatment`` (> 0: the treatment is better)."""

    tokens: dict[str, int]
    losses: dict[str, list[float]]
    windows: dict[str, np.ndarray]
    baseline: str
    treatment: str
    difference: Interval


def compare(datasets: Mapping[str, np.ndarray], heldout: np.ndarray,
            cfg: AblationConfig | None = None, seeds: Sequence[int] = (0,),
            max_windows: int | None = 256, baseline: str | None = None,
            treatment: str | None = None) -> Comparison:
    """Train one model per dataset and seed (same config, same seeds, same token count) and
    score them all on the same held-out windows. ``baseline``/``treatment`` default to the first
    and second dataset."""
    cfg = cfg or AblationConfig()
    names = list(datasets)
    if len(names) < 2 or not seeds:
        raise ValueError(f"need at least two datasets and one seed, got {names} and {list(seeds)}")
    baseline, treatment = baseline or names[0], treatment or names[1]
    if baseline not in datasets or treatment not in datasets:
        raise ValueError(f"baseline and treatment must be among {names}")
    tokens: dict[str, int] = {}
    losses: dict[str, list[float]] = {n: [] for n in names}
    windows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for name in names:
        for seed in seeds:
            model, seen = train_bytes(datasets[name], cfg, seed)
            if tokens.setdefault(name, seen) != seen:
                raise RuntimeError(f"{name}: seeds saw {tokens[name]} and {seen} training bytes")
            w = window_losses(model, heldout, max_windows)
            windows[name].append(w)
            losses[name].append(float(w.mean()))
    mean_windows = {n: np.mean(windows[n], axis=0) for n in names}
    diff = paired_bootstrap(mean_windows[baseline], mean_windows[treatment], n_resamples=2000)
    return Comparison(tokens, losses, mean_windows, baseline, treatment, diff)


def mixture_tokens(a: np.ndarray, b: np.ndarray, weight: float, total: int,
                   seed: int = 0) -> tuple[np.ndarray, dict[str, int]]:
    """A training stream of ``total`` bytes: ``round(weight·total)`` from domain ``a``, the rest
    from ``b``, each taken as whole consecutive chunks of 256 bytes drawn at random (repeating
    a domain when its share exceeds its size), chunks shuffled. Returns the stream and the
    bytes per domain (``{"a": ..., "b": ...}``)."""
    if not 0 <= weight <= 1:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    chunk = 256
    if len(a) < chunk or len(b) < chunk or total < chunk:
        raise ValueError(f"domains and total need at least {chunk} bytes each")
    rng = np.random.default_rng(seed)
    n_a = int(round(weight * total / chunk))
    n_b = total // chunk - n_a
    pieces = [(0, int(s)) for s in rng.integers(0, len(a) - chunk + 1, n_a)]
    pieces += [(1, int(s)) for s in rng.integers(0, len(b) - chunk + 1, n_b)]
    order = rng.permutation(len(pieces))
    src = (a, b)
    stream = np.concatenate([src[pieces[i][0]][pieces[i][1]:pieces[i][1] + chunk] for i in order])
    return stream, {"a": n_a * chunk, "b": n_b * chunk}


def mixture_sweep(a: np.ndarray, b: np.ndarray, heldout_a: np.ndarray, heldout_b: np.ndarray,
                  weights: Sequence[float], cfg: AblationConfig | None = None,
                  max_windows: int | None = 128) -> list[dict[str, float]]:
    """For each weight of domain ``a``: train at ``cfg.tokens`` on :func:`mixture_tokens` and
    report the bytes of each domain in the stream and each domain's held-out loss."""
    cfg = cfg or AblationConfig()
    rows = []
    for w in weights:
        stream, counts = mixture_tokens(a, b, w, max(cfg.tokens, 1024), cfg.seed)
        model, _ = train_bytes(stream, cfg)
        rows.append({"weight": float(w), "bytes_a": counts["a"], "bytes_b": counts["b"],
                     "loss_a": float(window_losses(model, heldout_a, max_windows).mean()),
                     "loss_b": float(window_losses(model, heldout_b, max_windows).mean())})
    return rows
