"""QLoRA: LoRA on top of a base model frozen in 4-bit NormalFloat (NF4).

Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs", arXiv:2305.14314. Every linear
layer of the base model is stored as NF4 codes with double-quantized block scales (about 4.13
bits per weight, ``llmlab.quant.nf4``, chapter 07); the forward dequantizes on the fly and LoRA
adapters in 32/16-bit are the only trainable parameters. Gradients flow *through* the frozen NF4
weights to the adapters of earlier layers, never into them. The paper's third idea, paged
optimizers (optimizer states in CUDA unified memory, paged to the CPU under memory spikes), is a
GPU-memory manager and is only explained in chapter 05. Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.nn import Linear
from llmlab.peft.apply import apply_lora
from llmlab.peft.inject import LINEAR_TYPES, replace_modules
from llmlab.peft.lora import LoRAConfig, LoRALinear
from llmlab.quant import NF4Weight, nf4_linear, to_nf4


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight is stored as :class:`llmlab.quant.NF4Weight`.

    (..., in) -> (..., out). ``weight`` returns the dequantized (out, in) tensor (read-only).
    """

    linear_like = True  # LoRA/DoRA may wrap it (llmlab.peft.inject.is_kind)

    def __init__(self, linear: nn.Module, block_size: int = 64) -> None:
        super().__init__()
        self.nf4: NF4Weight = to_nf4(linear.weight.detach(), block_size)
        bias = getattr(linear, "bias", None)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @property
    def weight(self) -> torch.Tensor:
        return self.nf4.dequantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nf4_linear(x, self.nf4, self.bias)

    def nbytes(self) -> int:
        return self.nf4.nbytes() + (0 if self.bias is None else self.bias.numel() * 4)


def quantize_linears(model: nn.Module, target_modules=(r"blocks\..*",),
                     block_size: int = 64) -> nn.Module:
    """Replace the matching linear layers by frozen :class:`NF4Linear` in place; return the model."""
    replace_modules(model, target_modules, lambda _, m: NF4Linear(m, block_size), LINEAR_TYPES)
    return model


def apply_qlora(model: nn.Module, config: LoRAConfig | None = None, block_size: int = 64) -> nn.Module:
    """Quantize every linear layer of the blocks to NF4, then add LoRA adapters (``config``)."""
    return apply_lora(quantize_linears(model, block_size=block_size), config)


@torch.no_grad()
def merge_qlora(model: nn.Module) -> nn.Module:
    """Replace each LoRA-on-NF4 layer by a float ``Linear`` holding dequant(W) + s B A.

    (Re-quantizing the merged weight would add a second rounding error; serving stacks keep the
    merged model in 16 bits or quantize it again on purpose.)
    """
    def merged(_, m: LoRALinear) -> nn.Module:
        if not isinstance(m.base, NF4Linear):
            raise ValueError("merge_qlora merges LoRA layers over NF4 weights; use merge_and_unload")
        w = m.base.weight.float() + m.delta_weight()
        out = Linear(w.shape[1], w.shape[0], bias=m.base.bias is not None)
        out.weight.copy_(w)
        if m.base.bias is not None:
            out.bias.copy_(m.base.bias)
        return out.requires_grad_(False)

    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    replace_modules(model, names, merged, (LoRALinear,))
    return model
