"""Move weights between llmlab's ``GPT`` and Hugging Face GPT-2, Llama 1–3.x (SmolLM and
TinyLlama are Llama layouts), Mistral, Qwen2/2.5 and Qwen3 checkpoints.

``from_hf(model_or_state_dict, hf_config) -> GPT`` and ``to_hf(gpt) -> (state_dict, hf_config)``.
The families differ in a few switches of ``GPTConfig``: Qwen2 puts biases on q/k/v
(``qkv_bias``), Qwen3 RMS-normalises each query and key head (``qk_norm``), Llama 3.1 stretches
RoPE's frequencies (``rope_scaling``). A checkpoint feature llmlab cannot represent exactly (a
sliding window that binds, another RoPE scaling or activation, a head that contradicts
``tie_word_embeddings``, weights with no place in the model) raises ``ValueError`` naming it.
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
from llmlab.nn.rope import LLAMA3_KEYS, check_rope_scaling, interleaved_to_half_permutation

StateDict = dict[str, torch.Tensor]


def _cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    return cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)


_LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")  # RMSNorm, SwiGLU, RoPE, GQA
_FULL, _SLIDING = "full_attention", "sliding_attention"


def _rope(hf_config: Any) -> tuple[float, dict[str, Any]]:
    """(theta, llmlab ``rope_scaling``) from ``rope_parameters`` (transformers >= 5) or
    ``rope_theta`` + ``rope_scaling`` (older ``config.json`` files)."""
    params = dict(_cfg_get(hf_config, "rope_parameters") or _cfg_get(hf_config, "rope_scaling")
                  or {})
    kind = params.get("rope_type", params.get("type")) or "default"
    theta = float(params.get("rope_theta", _cfg_get(hf_config, "rope_theta", 10000.0)))
    if float(params.get("partial_rotary_factor",
                        _cfg_get(hf_config, "partial_rotary_factor", 1.0))) != 1.0:
        raise ValueError("partial_rotary_factor != 1 is not supported (RoPE on every channel)")
    if kind == "default":
        return theta, {}
    if kind != "llama3":
        raise ValueError(f"rope_scaling type {kind!r} is not implemented (default and 'llama3' "
                         "are); refusing rather than computing different positions")
    params.setdefault("original_max_position_embeddings",
                      _cfg_get(hf_config, "max_position_embeddings"))
    scaling = {"rope_type": "llama3", **{k: params[k] for k in LLAMA3_KEYS if k in params}}
    check_rope_scaling(scaling)
    return theta, scaling


def _check_window(hf_config: Any, kind: str) -> None:
    """Refuse a sliding window that would bind: llmlab attends to the whole sequence."""
    g = lambda k, d=None: _cfg_get(hf_config, k, d)  # noqa: E731
    window = g("sliding_window") if kind == "mistral" or g("use_sliding_window") else None
    layer_types = g("layer_types") or []
    unknown = sorted(set(layer_types) - {_FULL, _SLIDING})
    if unknown:
        raise ValueError(f"layer_types {unknown} are not supported (only {_FULL!r})")
    if kind != "mistral" and layer_types and _SLIDING not in layer_types:
        window = None  # Qwen: use_sliding_window, but max_window_layers covers every layer
    if window is not None and int(window) < int(g("max_position_embeddings")):
        raise ValueError(
            f"sliding_window={window} < max_position_embeddings={g('max_position_embeddings')}: "
            "llmlab attends to every earlier token, so sequences longer than the window would "
            "differ from the checkpoint; not supported")


def config_from_hf(hf_config: Any, rope_layout: str = "half") -> GPTConfig:
    """GPTConfig equivalent to a transformers ``GPT2Config``, ``LlamaConfig``,
    ``MistralConfig``, ``Qwen2Config`` or ``Qwen3Config`` (or its dict, e.g. a ``config.json``).

    Raises ``ValueError`` naming the field for anything llmlab cannot represent exactly.
    """
    kind = _cfg_get(hf_config, "model_type")
    g = lambda k, d=None: _cfg_get(hf_config, k, d)  # noqa: E731
    if kind == "gpt2":
        if g("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"GPT-2 activation_function {g('activation_function')!r} not "
                             "supported (gelu_new only)")
        if g("scale_attn_by_inverse_layer_idx") or g("reorder_and_upcast_attn") \
                or not g("scale_attn_weights", True):
            raise ValueError("GPT-2 attention-scaling variants (scale_attn_weights=False, "
                             "scale_attn_by_inverse_layer_idx, reorder_and_upcast_attn) are "
                             "not supported")
        return GPTConfig.gpt2_style(
            vocab_size=g("vocab_size"), block_size=g("n_positions"), n_layer=g("n_layer"),
            n_head=g("n_head"), d_model=g("n_embd"), d_ff=g("n_inner") or 4 * g("n_embd"),
            norm_eps=g("layer_norm_epsilon"), tie_embeddings=bool(g("tie_word_embeddings", True)),
        )
    if kind in _LLAMA_FAMILY:
        if g("hidden_act", "silu") != "silu":
            raise ValueError(f"{kind} hidden_act {g('hidden_act')!r} not supported (silu only)")
        attention_bias = bool(g("attention_bias", False))
        if kind == "llama" and attention_bias != bool(g("mlp_bias", False)):
            raise ValueError("attention_bias and mlp_bias must agree (one `bias` flag)")
        if kind == "qwen3" and attention_bias:
            raise ValueError("qwen3 attention_bias=True is not supported (its MLP has no bias, "
                             "llmlab's `bias` flag covers both)")
        _check_window(hf_config, kind)
        theta, scaling = _rope(hf_config)
        n_head = g("num_attention_heads")
        return GPTConfig.llama_style(
            vocab_size=g("vocab_size"), block_size=g("max_position_embeddings"),
            n_layer=g("num_hidden_layers"), n_head=n_head,
            n_kv_head=g("num_key_value_heads") or n_head, d_model=g("hidden_size"),
            d_head=g("head_dim") or g("hidden_size") // n_head, d_ff=g("intermediate_size"),
            norm_eps=g("rms_norm_eps"), rope_base=theta, rope_scaling=scaling,
            rope_layout=rope_layout, tie_embeddings=bool(g("tie_word_embeddings", False)),
            bias=attention_bias, qkv_bias=kind == "qwen2", qk_norm=kind == "qwen3",
        )
    raise ValueError(f"unsupported model_type {kind!r}; expected 'gpt2' or one of {_LLAMA_FAMILY}")


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


_QKV = ("attn.q_proj", "attn.k_proj", "attn.v_proj")


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
            names[f"{ours}{o}.weight"] = f"{theirs}{h}.weight"
            if c.bias or (c.qkv_bias and o in _QKV):
                names[f"{ours}{o}.bias"] = f"{theirs}{h}.bias"
        if c.qk_norm:
            for p in "qk":
                names[f"{ours}attn.{p}_norm.weight"] = f"{theirs}self_attn.{p}_norm.weight"
    return names


def _rope_permute(sd: StateDict, c: GPTConfig, inverse: bool) -> StateDict:
    """Convert q/k rows (and the q/k norms' per-channel gains) between the "half" (HF) and
    "interleaved" layouts."""
    perm = interleaved_to_half_permutation(c.d_head)
    if inverse:
        perm = torch.argsort(perm)
    out = dict(sd)
    for name, w in sd.items():
        for proj, heads in (("q_proj", c.n_head), ("k_proj", c.n_kv_head), ("q_norm", 1),
                            ("k_norm", 1)):
            if f"attn.{proj}." in name:
                out[name] = _permute_heads(w, heads, perm)
    return out


def from_hf(
    hf_model_or_state_dict: Any, hf_config: Any = None, rope_layout: str = "half"
) -> GPT:
    """Build a ``GPT`` holding the weights of a HF GPT-2, Llama, Mistral, Qwen2 or Qwen3
    causal LM.

    Pass the model (its ``.config`` is used) or a state dict plus its config (a transformers
    config or the dict of a ``config.json``).
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
    _check_tied(sd, c)
    if c.norm == "layernorm":
        if "wte.weight" in sd:  # GPT2Model's names, as OpenAI's hub checkpoint stores them
            sd = {k if k.startswith("lm_head.") else f"transformer.{k}": v for k, v in sd.items()}
        used = set(_gpt2_names(c))
        _check_present(sd, used)
        ours = _gpt2_to_llmlab(sd, c)
    else:
        names = _llama_names(c)
        used = set(names.values())
        _check_present(sd, used)
        ours = {o: sd[h] for o, h in names.items()}
        if rope_layout == "interleaved":
            ours = _rope_permute(ours, c, inverse=True)
    _check_unused(sd, used | {"lm_head.weight"}, hf_config)
    model = GPT(c)
    model.load_state_dict(ours, strict=False)
    _check_loaded(model, ours)
    return model


_BUFFERS = (".rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")  # derived, not weights


def _gpt2_names(c: GPTConfig) -> list[str]:
    """The HF GPT-2 weights ``_gpt2_to_llmlab`` reads."""
    names = [f"transformer.{n}" for n in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")]
    for i in range(c.n_layer):
        names += [f"transformer.h.{i}.{m}.{p}" for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                         "mlp.c_proj", "ln_1", "ln_2")
                  for p in ("weight", "bias")]
    return names


def _check_present(sd: StateDict, names: set[str]) -> None:
    missing = sorted(names - set(sd))
    if missing:
        raise ValueError(f"weights missing from the checkpoint: {missing[:5]}"
                         f"{' …' if len(missing) > 5 else ''}")


def _check_unused(sd: StateDict, used: set[str], hf_config: Any) -> None:
    """Refuse a checkpoint with weights llmlab would drop (a layer it has no place for)."""
    extra = sorted(k for k in set(sd) - used if not k.endswith(_BUFFERS))
    if extra:
        raise ValueError(f"the {_cfg_get(hf_config, 'model_type')} checkpoint has weights llmlab "
                         f"cannot represent: {extra[:5]}{' …' if len(extra) > 5 else ''}")


def _check_tied(sd: StateDict, c: GPTConfig) -> None:
    """tie_word_embeddings must describe the weights: a tied config with a different head (or an
    untied one without a head) would silently give other logits."""
    emb = sd.get("model.embed_tokens.weight", sd.get("transformer.wte.weight"))
    head = sd.get("lm_head.weight")
    if c.tie_embeddings and head is not None and emb is not None and not torch.equal(head, emb):
        raise ValueError("tie_word_embeddings=True but lm_head.weight differs from the token "
                         "embedding; set tie_word_embeddings=False to keep both")
    if not c.tie_embeddings and head is None:
        raise ValueError("tie_word_embeddings=False but the checkpoint has no lm_head.weight")


def _check_loaded(model: GPT, sd: StateDict) -> None:
    missing = set(model.state_dict()) - set(sd) - ({"lm_head.weight"}
                                                   if model.config.tie_embeddings else set())
    if missing:
        raise ValueError(f"weights missing from the checkpoint: {sorted(missing)[:5]} …")


def hf_model_type(c: GPTConfig) -> str:
    """The transformers ``model_type`` that holds a config exactly: ``"gpt2"`` (LayerNorm, GELU,
    learned positions, biases, tied, MHA), ``"qwen3"`` (q/k norm), ``"qwen2"`` (q/k/v biases
    only) or ``"llama"`` (RMSNorm, SwiGLU, RoPE); ``ValueError`` for anything else."""
    if c.attention != "gqa":
        raise ValueError(f"attention={c.attention!r}: only 'gqa' maps onto a transformers model")
    if (c.norm, c.mlp, c.position, c.bias, c.tie_embeddings) == \
            ("layernorm", "gelu", "learned", True, True) and c.n_kv_head == c.n_head \
            and not (c.qkv_bias or c.qk_norm):
        return "gpt2"
    if (c.norm, c.mlp, c.position) != ("rmsnorm", "swiglu", "rope"):
        raise ValueError(
            "to_hf: the config matches neither GPT-2 (layernorm, gelu, learned, bias, tied, MHA) "
            "nor Llama (rmsnorm, swiglu, rope)")
    if c.qk_norm:
        if c.bias or c.qkv_bias:
            raise ValueError("qk_norm with biases has no transformers model (Qwen3 has neither)")
        return "qwen3"
    if c.qkv_bias and not c.bias:
        return "qwen2"
    return "llama"


def _hf_config(c: GPTConfig, model_type: str | None = None):
    import transformers  # test-time / interop extra, not a runtime requirement

    kind = hf_model_type(c)
    if model_type not in (None, kind) and (model_type, kind) != ("mistral", "llama"):
        raise ValueError(f"to_hf: this config is a {kind!r} model, not {model_type!r}")
    if kind == "gpt2":
        return transformers.GPT2Config(
            vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.d_model,
            n_layer=c.n_layer, n_head=c.n_head, n_inner=c.d_ff,
            activation_function="gelu_new", layer_norm_epsilon=c.norm_eps,
            tie_word_embeddings=True,
        )
    kind = model_type or kind
    if kind == "mistral" and c.bias:
        raise ValueError("to_hf: Mistral has no biases; this config has bias=True")
    common = dict(
        vocab_size=c.vocab_size, max_position_embeddings=c.block_size,
        hidden_size=c.d_model, intermediate_size=c.d_ff, num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head, head_dim=c.d_head,
        rms_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_base, **c.rope_scaling},
    )
    if kind == "llama":
        return transformers.LlamaConfig(**common, attention_bias=c.bias, mlp_bias=c.bias)
    if kind == "mistral":
        return transformers.MistralConfig(**common, sliding_window=None)
    if kind == "qwen2":
        return transformers.Qwen2Config(**common, use_sliding_window=False)
    return transformers.Qwen3Config(**common, attention_bias=False, use_sliding_window=False)


def to_hf(model: GPT, model_type: str | None = None) -> tuple[StateDict, Any]:
    """``(state_dict, transformers config)`` loadable by the ``*ForCausalLM`` of
    ``hf_model_type(model.config)`` (``AutoModelForCausalLM.from_config(cfg)
    .load_state_dict(sd, strict=False)``). ``model_type="mistral"`` writes a Llama-shaped model
    as Mistral (the same architecture without a sliding window)."""
    c = model.config
    hf_cfg = _hf_config(c, model_type)
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
