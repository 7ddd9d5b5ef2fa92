"""Multi-LoRA: many adapters on one frozen base model, each row of a batch with its own.

Sheng et al., "S-LoRA: Serving Thousands of Concurrent LoRA Adapters", arXiv:2311.03285, and
Chen et al., "Punica: Multi-Tenant LoRA Serving", arXiv:2310.18547. The base matmul x W^T is
shared by the whole batch; each row b then adds its own low-rank term s_i B_i A_i x_b with
i = ids[b] (a gathered, batched matmul — Punica's SGMV kernel does this on a GPU). Adapters of
different ranks are zero-padded to the largest rank, which leaves B A unchanged.
Taught in chapter 05 (solutions/05_peft); chapter 09 serves it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.peft.inject import freeze, replace_modules


def multi_lora_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: torch.Tensor,
                       ids: torch.Tensor) -> torch.Tensor:
    """x W^T + b + s_i B_i A_i x for row b with i = ids[b] (ids[b] = -1: base model only).

    x: (batch, seq, in); weight: (out, in); lora_A: (n_adapters, r, in);
    lora_B: (n_adapters, out, r); scaling: (n_adapters,); ids: (batch,) long -> (batch, seq, out)
    """
    if ids.shape != (x.shape[0],):
        raise ValueError(f"ids must be (batch,) = ({x.shape[0]},), got {tuple(ids.shape)}")
    y = F.linear(x, weight, bias)
    use = ids >= 0
    i = ids.clamp(min=0)
    h = torch.einsum("bti,bri->btr", x, lora_A[i].to(x.dtype))  # (batch, seq, r)
    delta = torch.einsum("btr,bor->bto", h, lora_B[i].to(x.dtype))  # (batch, seq, out)
    s = (scaling[i] * use).to(x.dtype)  # (batch,): 0 for rows without an adapter
    return y + s[:, None, None] * delta


class MultiLoRALinear(nn.Module):
    """A frozen linear layer with ``n_adapters`` stacked LoRA adapters; ``adapter_ids`` picks
    the adapter of each batch row (set it with :func:`adapter_ids`). (b, t, in) -> (b, t, out)."""

    def __init__(self, base: nn.Module, lora_A: torch.Tensor, lora_B: torch.Tensor,
                 scaling: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("lora_A", lora_A)  # (n, r, in)
        self.register_buffer("lora_B", lora_B)  # (n, out, r)
        self.register_buffer("scaling", scaling)  # (n,)
        self.adapter_ids: torch.Tensor | None = None
        self.kernel = multi_lora_forward  # any function with multi_lora_forward's contract

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapter_ids is None:
            return self.base(x)
        return self.kernel(x, self.base.weight, getattr(self.base, "bias", None),
                                  self.lora_A, self.lora_B, self.scaling, self.adapter_ids)


def apply_multi_lora(model: nn.Module, adapters: Sequence[dict[str, torch.Tensor]],
                     scalings: Sequence[float]) -> nn.Module:
    """Load several LoRA adapters (as saved by ``llmlab.peft.adapter_state_dict`` from LoRA models
    of this base) into one frozen model; a module missing from an adapter gets zeros there.

    adapters[i]: {"<module>.lora_A": (r_i, in), "<module>.lora_B": (out, r_i)}; scalings[i]: s_i.
    """
    if len(adapters) != len(scalings) or not adapters:
        raise ValueError(f"need one scaling per adapter, got {len(adapters)} adapters and "
                         f"{len(scalings)} scalings")
    modules = sorted({k.rsplit(".", 1)[0] for a in adapters for k in a if k.endswith("lora_A")})
    if not modules:
        raise ValueError("the adapters hold no '<module>.lora_A' tensors")
    r = max(a[f"{m}.lora_A"].shape[0] for a in adapters for m in modules if f"{m}.lora_A" in a)
    freeze(model)

    def stack(name: str, base: nn.Module) -> MultiLoRALinear:
        out_f, in_f = base.weight.shape
        A = torch.zeros(len(adapters), r, in_f, device=base.weight.device)
        B = torch.zeros(len(adapters), out_f, r, device=base.weight.device)
        for i, a in enumerate(adapters):
            if f"{name}.lora_A" in a:
                ri = a[f"{name}.lora_A"].shape[0]
                A[i, :ri], B[i, :, :ri] = a[f"{name}.lora_A"], a[f"{name}.lora_B"]
        return MultiLoRALinear(base, A, B, torch.tensor(list(scalings), dtype=torch.float32))

    replace_modules(model, [rf"{m}" for m in modules], stack)
    return model


@contextlib.contextmanager
def adapter_ids(model: nn.Module, ids: torch.Tensor) -> Iterator[nn.Module]:
    """Within the block, row b of a batch uses adapter ``ids[b]`` (-1: none). ids: (batch,)."""
    layers = [m for m in model.modules() if isinstance(m, MultiLoRALinear)]
    if not layers:
        raise ValueError("the model has no MultiLoRALinear layers; call apply_multi_lora first")
    for m in layers:
        m.adapter_ids = ids
    try:
        yield model
    finally:
        for m in layers:
            m.adapter_ids = None
