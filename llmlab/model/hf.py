"""Move weights between llmlab's ``GPT`` and Hugging Face ``GPT2LMHeadModel`` / ``LlamaForCausalLM``.

``from_hf(model_or_state_dict, hf_config) -> GPT`` and ``to_hf(gpt) -> (state_dict, hf_config)``.
Only names and layouts change, never values: GPT-2's ``Conv1D`` stores weights as (in, out) and
fuses q, k, v into ``c_attn``; Llama's checkpoints use the "half" RoPE layout, so a model built
with ``rope_layout="interleaved"`` has its W_q/W_k rows permuted on the way (the conversion
Meta's and Hugging Face's Llama checkpoints differ by). ``transformers`` is only needed by
``to_hf`` (to build the config object). Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

from typing import Any

import torch

from llmlab.model.config import GPTConfig
from llmlab.model.gpt import GPT
from llmlab.nn.rope import interleaved_to_half_permutation

StateDict = dict[str, torch.Tensor]


def _cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    return cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)


def _rope_theta(hf_config: Any) -> float:
    params = _cfg_get(hf_config, "rope_parameters") or _cfg_get(hf_config, "rope_scaling") or {}
    if params.get("rope_type", params.get("type", "default")) not in ("default", None):
        raise ValueError(f"RoPE scaling {params} is not supported (only the default rope)")
    return float(params.get("rope_theta", _cfg_get(hf_config, "rope_theta", 10000.0)))


def config_from_hf(hf_config: Any, rope_layout: str = "half") -> GPTConfig:
    """GPTConfig equivalent to a transformers ``GPT2Config`` or ``LlamaConfig`` (or its dict)."""
    kind = _cfg_get(hf_config, "model_type")
    g = lambda k, d=None: _cfg_get(hf_config, k, d)  # noqa: E731
    if kind == "gpt2":
        if g("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"GPT-2 activation {g('activation_function')!r} not supported")
        if g("scale_attn_by_inverse_layer_idx") or g("reorder_and_upcast_attn"):
            raise ValueError("GPT-2 attention-scaling variants are not supported")
        return GPTConfig.gpt2_style(
            vocab_size=g("vocab_size"), block_size=g("n_positions"), n_layer=g("n_layer"),
            n_head=g("n_head"), d_model=g("n_embd"), d_ff=g("n_inner") or 4 * g("n_embd"),
            norm_eps=g("layer_norm_epsilon"), tie_embeddings=bool(g("tie_word_embeddings", True)),
        )
    if kind == "llama":
        if g("hidden_act", "silu") != "silu":
            raise ValueError(f"Llama activation {g('hidden_act')!r} not supported (silu only)")
        if bool(g("attention_bias", False)) != bool(g("mlp_bias", False)):
            raise ValueError("attention_bias and mlp_bias must agree (one `bias` flag)")
        n_head = g("num_attention_heads")
        return GPTConfig.llama_style(
            vocab_size=g("vocab_size"), block_size=g("max_position_embeddings"),
            n_layer=g("num_hidden_layers"), n_head=n_head,
            n_kv_head=g("num_key_value_heads") or n_head, d_model=g("hidden_size"),
            d_head=g("head_dim") or g("hidden_size") // n_head, d_ff=g("intermediate_size"),
            norm_eps=g("rms_norm_eps"), rope_base=_rope_theta(hf_config),
            rope_layout=rope_layout, tie_embeddings=bool(g("tie_word_embeddings", False)),
            bias=bool(g("attention_bias", False)),
        )
    raise ValueError(f"unsupported model_type {kind!r}; expected 'gpt2' or 'llama'")


def _permute_heads(w: torch.Tensor, n_heads: int, perm: torch.Tensor) -> torch.Tensor:
    """Reorder the d_head rows of every head of a (n_heads*d_head, ...) weight or bias."""
    d_head = perm.numel()
    return w.reshape(n_heads, d_head, *w.shape[1:])[:, perm].reshape(w.shape)


def _gpt2_to_llmlab(sd: StateDict, c: GPTConfig) -> StateDict:
    out = {"tok_emb.weight": sd["transformer.wte.weight"],
           "pos_emb.weight": sd["transformer.wpe.weight"],
           "norm_f.weight": sd["transformer.ln_f.weight"],
           "norm_f.bias": sd["transformer.ln_f.bias"]}
    for i in range(c.n_layer):
        h, b = f"transformer.h.{i}.", f"blocks.{i}."
        q, k, v = sd[h + "attn.c_attn.weight"].t().chunk(3, dim=0)  # Conv1D (in, 3d) -> 3x(d, in)
        qb, kb, vb = sd[h + "attn.c_attn.bias"].chunk(3)
        out |= {b + "attn.q_proj.weight": q, b + "attn.k_proj.weight": k,
                b + "attn.v_proj.weight": v, b + "attn.q_proj.bias": qb,
                b + "attn.k_proj.bias": kb, b + "attn.v_proj.bias": vb,
                b + "attn.o_proj.weight": sd[h + "attn.c_proj.weight"].t(),
                b + "attn.o_proj.bias": sd[h + "attn.c_proj.bias"],
                b + "mlp.fc.weight": sd[h + "mlp.c_fc.weight"].t(),
                b + "mlp.fc.bias": sd[h + "mlp.c_fc.bias"],
                b + "mlp.proj.weight": sd[h + "mlp.c_proj.weight"].t(),
                b + "mlp.proj.bias": sd[h + "mlp.c_proj.bias"]}
        for ln, norm in (("ln_1", "norm1"), ("ln_2", "norm2")):
            out[f"{b}{norm}.weight"] = sd[f"{h}{ln}.weight"]
            out[f"{b}{norm}.bias"] = sd[f"{h}{ln}.bias"]
    if not c.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


_LLAMA_NORMS = {"norm1": "input_layernorm", "norm2": "post_attention_layernorm"}
_LLAMA_LINEARS = {  # llmlab block module -> HF layer module
    **{f"attn.{p}_proj": f"self_attn.{p}_proj" for p in "qkvo"},
    **{f"mlp.{p}_proj": f"mlp.{p}_proj" for p in ("gate", "up", "down")},
}


def _llama_names(c: GPTConfig) -> dict[str, str]:
    """llmlab parameter name -> HF parameter name for a Llama-style config."""
    names = {"tok_emb.weight": "model.embed_tokens.weight", "norm_f.weight": "model.norm.weight"}
    if not c.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(c.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        for o, h in _LLAMA_NORMS.items():
            names[f"{ours}{o}.weight"] = f"{theirs}{h}.weight"
        for o, h in _LLAMA_LINEARS.items():
            for kind in ("weight", "bias") if c.bias else ("weight",):
                names[f"{ours}{o}.{kind}"] = f"{theirs}{h}.{kind}"
    return names


def _rope_permute(sd: StateDict, c: GPTConfig, inverse: bool) -> StateDict:
    """Convert q/k rows between the "half" (HF) and "interleaved" layouts."""
    perm = interleaved_to_half_permutation(c.d_head)
    if inverse:
        perm = torch.argsort(perm)
    out = dict(sd)
    for name, w in sd.items():
        for proj, heads in (("q_proj", c.n_head), ("k_proj", c.n_kv_head)):
            if f"attn.{proj}." in name:
                out[name] = _permute_heads(w, heads, perm)
    return out


def from_hf(
    hf_model_or_state_dict: Any, hf_config: Any = None, rope_layout: str = "half"
) -> GPT:
    """Build a ``GPT`` holding the weights of a HF ``GPT2LMHeadModel`` or ``LlamaForCausalLM``.

    Pass the model (its ``.config`` is used) or a state dict plus its config.
    ``rope_layout="interleaved"`` returns the same function in the RoFormer layout.
    """
    if isinstance(hf_model_or_state_dict, dict):
        sd = hf_model_or_state_dict
        if hf_config is None:
            raise ValueError("from_hf(state_dict, hf_config): the config is required")
    else:
        sd = hf_model_or_state_dict.state_dict()
        hf_config = hf_config or hf_model_or_state_dict.config
    c = config_from_hf(hf_config, rope_layout=rope_layout)
    sd = {k: v.detach().float().clone() for k, v in sd.items()}
    if c.norm == "layernorm":
        ours = _gpt2_to_llmlab(sd, c)
    else:
        ours = {o: sd[h] for o, h in _llama_names(c).items()}
        if rope_layout == "interleaved":
            ours = _rope_permute(ours, c, inverse=True)
    model = GPT(c)
    model.load_state_dict(ours, strict=False)
    _check_loaded(model, ours)
    return model


def _check_loaded(model: GPT, sd: StateDict) -> None:
    missing = set(model.state_dict()) - set(sd) - ({"lm_head.weight"}
                                                   if model.config.tie_embeddings else set())
    if missing:
        raise ValueError(f"weights missing from the checkpoint: {sorted(missing)[:5]} …")


def _hf_config(c: GPTConfig):
    import transformers  # test-time / interop extra, not a runtime requirement

    if c.attention != "gqa":
        raise ValueError("only 'gqa' attention maps onto GPT-2 / Llama checkpoints")
    if (c.norm, c.mlp, c.position, c.bias, c.tie_embeddings) == \
            ("layernorm", "gelu", "learned", True, True) and c.n_kv_head == c.n_head:
        return transformers.GPT2Config(
            vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.d_model,
            n_layer=c.n_layer, n_head=c.n_head, n_inner=c.d_ff,
            activation_function="gelu_new", layer_norm_epsilon=c.norm_eps,
            tie_word_embeddings=True,
        )
    if (c.norm, c.mlp, c.position) == ("rmsnorm", "swiglu", "rope"):
        return transformers.LlamaConfig(
            vocab_size=c.vocab_size, max_position_embeddings=c.block_size,
            hidden_size=c.d_model, intermediate_size=c.d_ff, num_hidden_layers=c.n_layer,
            num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head, head_dim=c.d_head,
            rms_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_embeddings,
            attention_bias=c.bias, mlp_bias=c.bias,
            rope_parameters={"rope_type": "default", "rope_theta": c.rope_base},
        )
    raise ValueError(
        "to_hf: the config matches neither GPT-2 (layernorm, gelu, learned, bias, tied, MHA) "
        "nor Llama (rmsnorm, swiglu, rope)"
    )


def to_hf(model: GPT) -> tuple[StateDict, Any]:
    """``(state_dict, transformers config)`` loadable by ``GPT2LMHeadModel`` / ``LlamaForCausalLM``
    (``AutoModelForCausalLM.from_config(cfg).load_state_dict(sd, strict=False)``)."""
    c = model.config
    hf_cfg = _hf_config(c)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if c.norm == "layernorm":
        out = {"transformer.wte.weight": sd["tok_emb.weight"],
               "transformer.wpe.weight": sd["pos_emb.weight"],
               "transformer.ln_f.weight": sd["norm_f.weight"],
               "transformer.ln_f.bias": sd["norm_f.bias"],
               "lm_head.weight": sd["tok_emb.weight"]}
        for i in range(c.n_layer):
            h, b = f"transformer.h.{i}.", f"blocks.{i}."
            qkv = [sd[f"{b}attn.{p}_proj.weight"] for p in "qkv"]
            out |= {h + "attn.c_attn.weight": torch.cat(qkv, 0).t().contiguous(),
                    h + "attn.c_attn.bias": torch.cat([sd[f"{b}attn.{p}_proj.bias"]
                                                       for p in "qkv"]),
                    h + "attn.c_proj.weight": sd[b + "attn.o_proj.weight"].t().contiguous(),
                    h + "attn.c_proj.bias": sd[b + "attn.o_proj.bias"],
                    h + "mlp.c_fc.weight": sd[b + "mlp.fc.weight"].t().contiguous(),
                    h + "mlp.c_fc.bias": sd[b + "mlp.fc.bias"],
                    h + "mlp.c_proj.weight": sd[b + "mlp.proj.weight"].t().contiguous(),
                    h + "mlp.c_proj.bias": sd[b + "mlp.proj.bias"]}
            for ln, norm in (("ln_1", "norm1"), ("ln_2", "norm2")):
                out[f"{h}{ln}.weight"] = sd[f"{b}{norm}.weight"]
                out[f"{h}{ln}.bias"] = sd[f"{b}{norm}.bias"]
        return out, hf_cfg
    if c.rope_layout == "interleaved":
        sd = _rope_permute(sd, c, inverse=False)
    out = {h: sd[o] for o, h in _llama_names(c).items()}
    if c.tie_embeddings:
        out["lm_head.weight"] = sd["tok_emb.weight"]
    return out, hf_cfg
