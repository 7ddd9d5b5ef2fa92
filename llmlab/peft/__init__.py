"""Parameter-efficient fine-tuning: LoRA and its family, on llmlab's GPT and on Hugging Face
models loaded with ``llmlab.model.from_hf``.

One file per method, named after it: ``lora`` (LoRA, rsLoRA, LoRA+), ``dora``, ``ia3``,
``adalora`` (SVD form, rank budget), ``bitfit``, ``prompt_tuning``, ``prefix_tuning`` (prefix
tuning and P-tuning v2, through the KV cache of chapter 08), ``adapters`` (bottleneck
adapters), ``multi_lora`` (one batch, many adapters), ``qlora`` (LoRA on an NF4 base),
``galore`` (low-rank projected Adam for full training); ``memory`` counts what each trains and
needs; ``io`` saves adapters only; ``interop`` exchanges them with Hugging Face ``peft``;
``apply`` wraps a model with LoRA or DoRA (``apply_lora``).
Taught in chapter 05 (solutions/05_peft).
"""

from llmlab.peft.adalora import (
    RankAllocator,
    SVDLinear,
    apply_adalora,
    budget_schedule,
    orthogonal_regularization,
)
from llmlab.peft.adapters import AdapterWrapped, BottleneckAdapter, apply_adapters
from llmlab.peft.apply import apply_lora
from llmlab.peft.bitfit import apply_bitfit
from llmlab.peft.dora import DoRALinear, dora_forward
from llmlab.peft.galore import GaLoreAdamW, galore_adam_step, galore_projector, galore_state_numbers
from llmlab.peft.ia3 import IA3Linear, apply_ia3
from llmlab.peft.inject import count_trainable, freeze, name_matches, replace_modules, targets
from llmlab.peft.interop import (
    from_peft_state_dict,
    hf_module_names,
    load_peft_adapter,
    save_peft_adapter,
    to_peft_state_dict,
)
from llmlab.peft.io import adapter_state_dict, load_adapter, load_adapter_state_dict, save_adapter
from llmlab.peft.lora import (
    LoRAConfig,
    LoRALinear,
    lora_forward,
    lora_scaling,
    loraplus_param_groups,
    merge,
    merge_and_unload,
    unmerge,
)
from llmlab.peft.memory import (
    ALL_LINEAR,
    METHODS,
    REAL_CONFIGS,
    finetune_memory,
    linear_shapes,
    trainable_params,
)
from llmlab.peft.multi_lora import (
    MultiLoRALinear,
    adapter_ids,
    apply_multi_lora,
    multi_lora_forward,
)
from llmlab.peft.prefix_tuning import PrefixTuning, prefill_cache
from llmlab.peft.prompt_tuning import PromptEmbedding, PromptTuning
from llmlab.peft.qlora import NF4Linear, apply_qlora, merge_qlora, quantize_linears

__all__ = [
    "ALL_LINEAR",
    "METHODS",
    "REAL_CONFIGS",
    "AdapterWrapped",
    "BottleneckAdapter",
    "DoRALinear",
    "GaLoreAdamW",
    "IA3Linear",
    "LoRAConfig",
    "LoRALinear",
    "MultiLoRALinear",
    "NF4Linear",
    "PrefixTuning",
    "PromptEmbedding",
    "PromptTuning",
    "RankAllocator",
    "SVDLinear",
    "adapter_ids",
    "adapter_state_dict",
    "apply_adalora",
    "apply_adapters",
    "apply_bitfit",
    "apply_ia3",
    "apply_lora",
    "apply_multi_lora",
    "apply_qlora",
    "budget_schedule",
    "count_trainable",
    "dora_forward",
    "finetune_memory",
    "freeze",
    "from_peft_state_dict",
    "galore_adam_step",
    "galore_projector",
    "galore_state_numbers",
    "hf_module_names",
    "linear_shapes",
    "load_adapter",
    "load_adapter_state_dict",
    "lora_forward",
    "lora_scaling",
    "loraplus_param_groups",
    "merge",
    "merge_and_unload",
    "merge_qlora",
    "multi_lora_forward",
    "name_matches",
    "orthogonal_regularization",
    "prefill_cache",
    "quantize_linears",
    "replace_modules",
    "save_adapter",
    "targets",
    "to_peft_state_dict",
    "save_peft_adapter",
    "load_peft_adapter",
    "trainable_params",
    "unmerge",
]
