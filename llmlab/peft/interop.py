"""Exchange adapters with Hugging Face ``peft``: llmlab adapter tensors <-> peft adapter files.

A ``peft`` adapter for a ``transformers`` model names each tensor after the HF module it adapts,
``base_model.model.<hf module>.lora_A.weight``; llmlab names it after its own module,
``<llmlab module>.lora_A``. The module names follow ``llmlab.model.hf`` (the same map that moves
the base weights). Shapes are identical except IA3's vector, which ``peft`` keeps 2-D, and the
prefix, which ``peft`` flattens to (P, n_layer · 2 · n_kv_head · d_head).

Covered: LoRA, rsLoRA and DoRA on any Llama linear layer and on GPT-2's ``c_proj``/``c_fc``;
IA3; AdaLoRA (P, λ, Q, without peft's rank pattern); prompt tuning; prefix tuning (without the
MLP). Not covered: GPT-2's fused ``c_attn``
(peft holds one adapter for q, k and v together), and q/k adapters of a model converted with
``rope_layout="interleaved"`` (their rows are permuted). Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from llmlab.model.config import GPTConfig
from llmlab.model.hf import _llama_names
from llmlab.peft.adalora import SVDLinear

PEFT_PREFIX = "base_model.model."
# llmlab tensor suffix -> peft tensor suffix
_SUFFIX = {"lora_A": "lora_A.weight", "lora_B": "lora_B.weight",
           "lora_magnitude": "lora_magnitude_vector", "ia3_l": "ia3_l"}
# AdaLoRA's P, Q, λ are bare parameters in peft (λ kept 2-D: (r, 1))
_ADALORA = {"lora_A": "lora_A", "lora_B": "lora_B", "lora_E": "lora_E"}
_GPT2 = {"attn.o_proj": "attn.c_proj", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}


def hf_module_names(c: GPTConfig) -> dict[str, str]:
    """llmlab linear-module name -> HF module name, for the config's family (Llama or GPT-2)."""
    if c.norm == "rmsnorm":
        return {k[: -len(".weight")]: v[: -len(".weight")] for k, v in _llama_names(c).items()
                if k.startswith("blocks.") and k.endswith("_proj.weight")}
    return {f"blocks.{i}.{o}": f"transformer.h.{i}.{h}" for i in range(c.n_layer)
            for o, h in _GPT2.items()}


def _module_and_kind(key: str) -> tuple[str, str]:
    module, _, kind = key.rpartition(".")
    if module.endswith(".base") or kind not in {**_SUFFIX, **_ADALORA}:
        raise ValueError(f"{key!r} is not a LoRA/DoRA/IA3/AdaLoRA tensor (expected a name ending "
                         f"in one of {sorted({**_SUFFIX, **_ADALORA})})")
    return module, kind


def _check_layout(c: GPTConfig, module: str) -> None:
    if c.rope_layout == "interleaved" and (".q_proj" in module or ".k_proj" in module):
        raise ValueError(f"{module}: q/k adapters of an interleaved-RoPE model cannot be "
                         "exported (convert the model with rope_layout='half')")


def to_peft_state_dict(model: nn.Module, config: GPTConfig | None = None) -> dict[str, torch.Tensor]:
    """The adapter of an adapted llmlab ``GPT`` (or a Prompt/PrefixTuning wrapper) as ``peft``
    would save it (``peft.set_peft_model_state_dict`` loads it)."""
    inner = getattr(model, "model", model)
    c = config or inner.config
    names = hf_module_names(c)
    out: dict[str, torch.Tensor] = {}
    for key, p in model.named_parameters():
        if not p.requires_grad:
            continue
        p = p.detach().clone()
        if key.endswith("tok_emb.prompt"):
            out["prompt_embeddings"] = p
            continue
        if key == "prefix":  # (L, 2, P, H, D) -> (P, L*2*H*D)
            out["prompt_embeddings"] = p.permute(2, 0, 1, 3, 4).reshape(p.shape[2], -1)
            continue
        module, kind = _module_and_kind(key)
        if module not in names:
            raise ValueError(f"{module!r} has no peft counterpart (GPT-2's fused c_attn?)")
        _check_layout(c, module)
        suffix = _SUFFIX.get(kind)
        if kind == "ia3_l":
            p = p[None, :] if inner.get_submodule(module).feedforward else p[:, None]
        elif isinstance(inner.get_submodule(module), SVDLinear):
            suffix, p = _ADALORA[kind], (p[:, None] if kind == "lora_E" else p)
        out[f"{PEFT_PREFIX}{names[module]}.{suffix}"] = p
    return out


def from_peft_state_dict(model: nn.Module, state: dict[str, torch.Tensor],
                         config: GPTConfig | None = None) -> nn.Module:
    """Load a ``peft`` adapter (``get_peft_model_state_dict`` output) into an llmlab model
    adapted with the same method and targets. Raises ``ValueError`` on any key that does not fit.
    """
    from llmlab.peft.io import load_adapter_state_dict

    inner = getattr(model, "model", model)
    c = config or inner.config
    theirs = {f"{PEFT_PREFIX}{h}.{s}": (o, k) for o, h in hf_module_names(c).items()
              for table in (_SUFFIX, _ADALORA) for k, s in table.items()}
    ours = {n: p for n, p in model.named_parameters() if p.requires_grad}
    out: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        if key == "prompt_embeddings":
            name = "prefix" if "prefix" in ours else "model.tok_emb.prompt"
            if name == "prefix":
                L, two, P, H, D = ours["prefix"].shape
                t = t.view(P, L, two, H, D).permute(1, 2, 0, 3, 4)
            out[name] = t
            continue
        if key not in theirs:
            raise ValueError(f"peft key {key!r} does not name an adapter of a module llmlab knows")
        module, kind = theirs[key]
        _check_layout(c, module)
        name = f"{module}.{kind}" if f"{module}.{kind}" in ours else f"model.{module}.{kind}"
        out[name] = t.reshape(-1) if kind in ("ia3_l", "lora_E") else t
    return load_adapter_state_dict(model, out)


ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"


def save_peft_adapter(model: nn.Module, directory: str | Path, r: int, alpha: float,
                      config: GPTConfig | None = None, **lora_config: object) -> Path:
    """Write a LoRA-adapted llmlab ``GPT``'s adapter as ``peft``'s ``save_pretrained`` does:
    ``adapter_model.safetensors`` (:func:`to_peft_state_dict`) and ``adapter_config.json`` (a
    ``LoraConfig`` targeting the HF names of the adapted modules), so that
    ``peft.PeftModel.from_pretrained(hf_model, directory)`` loads it onto the exported model
    (``llmlab.model.to_hf``). ``lora_config``: more ``LoraConfig`` fields (``use_rslora=True``).
    """
    from safetensors.torch import save_file

    inner = getattr(model, "model", model)
    state = to_peft_state_dict(model, config or inner.config)
    if not state or not all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in state):
        raise ValueError("save_peft_adapter writes LoRA adapters only; the model's trainable "
                         f"tensors are {sorted(state)[:4]}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / ADAPTER_WEIGHTS))
    modules = sorted({k[len(PEFT_PREFIX):].rsplit(".", 2)[0] for k in state})
    (directory / ADAPTER_CONFIG).write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
        "target_modules": modules, "lora_dropout": 0.0, "bias": "none", **lora_config}, indent=2))
    return directory


def load_peft_adapter(model: nn.Module, directory: str | Path,
                      config: GPTConfig | None = None) -> dict:
    """Load a ``peft`` LoRA adapter directory (``save_pretrained``'s layout) into an llmlab model
    adapted with the same targets and rank; return the adapter's config."""
    from safetensors.torch import load_file

    directory = Path(directory)
    settings = json.loads((directory / ADAPTER_CONFIG).read_text())
    if settings.get("peft_type") != "LORA":
        raise ValueError(f"{directory}: expected a LoRA adapter, got peft_type "
                         f"{settings.get('peft_type')!r}")
    from_peft_state_dict(model, load_file(str(directory / ADAPTER_WEIGHTS)), config)
    return settings
