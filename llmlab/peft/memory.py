"""How many parameters each fine-tuning method trains, and the memory its training step needs.

Counted from a ``GPTConfig`` alone, so it works for real 7-8B configs (``REAL_CONFIGS``) without
their weights; ``tests/peft`` checks each count against an adapted llmlab model. Conventions:

- frozen base weights in bf16 (2 bytes), or NF4 with double quantization for QLoRA (4.127 bits
  per weight of the linear layers; Dettmers et al., "QLoRA", arXiv:2305.14314, section 3);
- each trainable parameter in mixed-precision Adam costs 16 bytes: bf16 weight and gradient
  (2 + 2), fp32 master copy and two moments (12) (Rajbhandari et al., "ZeRO", arXiv:1910.02054);
  GaLore keeps the master copy but its moments live in the projected shape (arXiv:2403.03507);
- activations: what autograd keeps for one bf16 forward of (batch, seq) tokens
  (``llmlab.model.counting.memory_estimate``). Every method back-propagates through the frozen
  model, so they all need about as much; gradient checkpointing is what cuts this term.
Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

from llmlab.model.config import GPTConfig
from llmlab.model.counting import memory_estimate, param_count
from llmlab.peft.galore import galore_state_numbers

METHODS = ("full", "lora", "dora", "qlora", "ia3", "bitfit", "prompt", "prefix", "adapters",
           "galore")
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

REAL_CONFIGS: dict[str, GPTConfig] = {
    # huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json
    "Llama-3-8B": GPTConfig.llama_style(
        vocab_size=128256, block_size=8192, n_layer=32, n_head=32, n_kv_head=8, d_model=4096,
        d_ff=14336, rope_base=500000.0, tie_embeddings=False),
    # huggingface.co/Qwen/Qwen2-7B/blob/main/config.json (its q/k/v biases, 0.1 M numbers, left out)
    "Qwen2-7B": GPTConfig.llama_style(
        vocab_size=152064, block_size=32768, n_layer=28, n_head=28, n_kv_head=4, d_model=3584,
        d_ff=18944, rope_base=1000000.0, tie_embeddings=False),
}


def linear_shapes(c: GPTConfig) -> dict[str, tuple[int, int]]:
    """(out, in) of each linear layer of one block, by llmlab's module name."""
    d, q, kv, ff = c.d_model, c.n_head * c.d_head, c.n_kv_head * c.d_head, c.d_ff
    shapes = {"q_proj": (q, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, q)}
    if c.mlp == "swiglu":
        return shapes | {"gate_proj": (ff, d), "up_proj": (ff, d), "down_proj": (d, ff)}
    return shapes | {"fc": (ff, d), "proj": (d, ff)}


def trainable_params(c: GPTConfig, method: str, r: int = 16, targets=ALL_LINEAR,
                     n_virtual: int = 20, bottleneck: int = 64) -> int:
    """Trainable parameters of ``method`` on a model of config ``c``.

    lora/dora/qlora: r (in + out) per targeted linear (+ out for DoRA's magnitude); ia3: k, v
    outputs and the down projection's input; bitfit: one bias per linear output (added when the
    model has none); prompt: P·d_model; prefix: n_layer·2·P·n_kv_head·d_head; adapters: two
    bottleneck MLPs per block; full and galore: every parameter.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    shapes, L = linear_shapes(c), c.n_layer
    if method in ("full", "galore"):
        return param_count(c)["total"]
    if method in ("lora", "dora", "qlora"):
        unknown = set(targets) - set(shapes)
        if unknown:
            raise ValueError(f"unknown target modules {sorted(unknown)}; expected {sorted(shapes)}")
        per = sum(r * (shapes[t][0] + shapes[t][1]) + (shapes[t][0] if method == "dora" else 0)
                  for t in targets)
        return L * per
    if method == "ia3":
        down = "down_proj" if "down_proj" in shapes else "proj"
        return L * (shapes["k_proj"][0] + shapes["v_proj"][0] + shapes[down][1])
    if method == "bitfit":
        norm_bias = (2 * L + 1) * c.d_model if c.norm == "layernorm" and c.bias else 0
        return L * sum(out for out, _ in shapes.values()) + norm_bias
    if method == "prompt":
        return n_virtual * c.d_model
    if method == "prefix":
        return L * 2 * n_virtual * c.n_kv_head * c.d_head
    return L * 2 * (2 * c.d_model * bottleneck + bottleneck + c.d_model)  # adapters


def finetune_memory(c: GPTConfig, method: str, batch: int = 1, seq: int = 2048, r: int = 16,
                    targets=ALL_LINEAR, n_virtual: int = 20, bottleneck: int = 64,
                    galore_rank: int = 128) -> dict[str, float]:
    """Bytes of one training step by kind: ``weights`` (frozen + trainable copies), ``grads``,
    ``optimizer`` (fp32 master + Adam moments), ``activations``, ``total``; plus ``trainable``
    (a parameter count)."""
    n_total = param_count(c)["total"]
    n_train = trainable_params(c, method, r, targets, n_virtual, bottleneck)
    linear = c.n_layer * sum(o * i for o, i in linear_shapes(c).values())
    if method == "qlora":
        frozen = linear * 4.127 / 8 + (n_total - linear) * 2
    elif method in ("full", "galore"):
        frozen = 0.0
    else:
        frozen = n_total * 2.0
    extra = n_virtual if method in ("prompt", "prefix") else 0
    acts = memory_estimate(c, batch, seq + extra, act_bytes=2)["activations"]
    if method == "galore":
        moments = c.n_layer * sum(galore_state_numbers(o, i, galore_rank)
                                  for o, i in linear_shapes(c).values())
        moments += 2 * (n_total - linear)  # embeddings and norms keep plain Adam
        optimizer = 4.0 * n_total + 4.0 * moments
    else:
        optimizer = 12.0 * n_train
    out = {"trainable": float(n_train), "weights": frozen + 2.0 * n_train,
           "grads": 2.0 * n_train, "optimizer": optimizer, "activations": float(acts)}
    out["total"] = out["weights"] + out["grads"] + out["optimizer"] + out["activations"]
    return out
