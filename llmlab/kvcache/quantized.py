"""Quantized KV caches: int8 per token, and KIVI (int4/int2 keys per channel, values per token).

Asymmetric min-max quantization with ``bits`` bits and a float offset, chapter 07's
:func:`llmlab.quant.formats.minmax_quantize`: ``x ≈ q * scale + min``,
``q = round((x - min) / scale)`` in ``[0, 2^bits - 1]``, ``scale = (max - min) / (2^bits - 1)``,
with min and max taken along one axis.

- int8 per token: one scale/zero per token (and head), over its channels.
- KIVI, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache" (Liu et al.,
  arXiv 2402.02750): key channels have outliers that are fixed per channel, so keys are quantized
  *per channel* (statistics over a group of ``group_size`` tokens); values are quantized *per
  token*. The newest tokens that do not yet fill a group stay in full precision (the residual).

The codes are bit-packed (two int4 codes per byte) and scales/zeros stored in fp16, so
:meth:`QuantizedKVCache.nbytes` is what the cache really holds. ``update`` returns dequantized
tensors, so any attention kernel can use them (a fused kernel would dequantize on the fly).
Taught in chapter 08 (solutions/08_kvcache).
"""

from __future__ import annotations

import torch

from llmlab.kvcache.base import StepContext, check_update, step_positions
from llmlab.quant.formats import minmax_dequantize, minmax_quantize

AXES = ("token", "channel")


def kivi_quantize(k: torch.Tensor, v: torch.Tensor,
                  bits: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """KIVI fake-quantization of one group of tokens: keys per channel, values per token.

    k, v: (batch, tokens, n_kv_head, d_head) -> dequantized (k_hat, v_hat), same shapes. Keys
    take min/max over the tokens (dim 1), values over the channels (dim -1).
    """
    k_hat = minmax_dequantize(*minmax_quantize(k, bits, dim=1), dtype=k.dtype)
    v_hat = minmax_dequantize(*minmax_quantize(v, bits, dim=-1), dtype=v.dtype)
    return k_hat, v_hat


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``8 // bits`` codes per byte along the last dim (bits in 1, 2, 4; else unchanged)."""
    per = 8 // bits if bits in (1, 2, 4) else 1
    if per == 1:
        return codes
    if codes.shape[-1] % per:
        raise ValueError(f"last dim {codes.shape[-1]} must be a multiple of {per} to pack "
                         f"{bits}-bit codes")
    c = codes.view(*codes.shape[:-1], -1, per).to(torch.int32)
    shifts = torch.arange(per, device=codes.device, dtype=torch.int32) * bits
    return (c << shifts).sum(-1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`."""
    per = 8 // bits if bits in (1, 2, 4) else 1
    if per == 1:
        return packed
    shifts = torch.arange(per, device=packed.device, dtype=torch.int32) * bits
    c = (packed.to(torch.int32)[..., None] >> shifts) & (2 ** bits - 1)
    return c.flatten(-2).to(torch.uint8)


class QuantizedKVCache:
    """A cache that stores tensor ``i`` quantized to ``bits[i]`` along ``axes[i]``.

    ``axes`` entries: "token" (statistics over a token's channels) or "channel" (over a group of
    tokens, per channel). Tokens are quantized once ``group_size`` of them have arrived; until
    then they are the full-precision residual. Presets: :meth:`int8` and :meth:`kivi`.
    """

    def __init__(self, n_layer: int, bits: tuple[int, ...] = (8, 8),
                 axes: tuple[str, ...] = ("token", "token"), group_size: int = 1) -> None:
        if len(bits) != len(axes) or any(a not in AXES for a in axes):
            raise ValueError(f"need one bit width and one axis in {AXES} per tensor, got "
                             f"bits={bits}, axes={axes}")
        if group_size < 1 or ("channel" in axes and group_size < 2):
            raise ValueError(f"group_size must be >= 1 (>= 2 with per-channel), got {group_size}")
        self.n_layer, self.bits, self.axes, self.group_size = n_layer, bits, axes, group_size
        # per layer, per tensor: (packed codes, scale, zero) of all quantized groups, stacked
        # (batch, n_groups, group_size, ...); and the full-precision residual (batch, <G, ...)
        self._groups: list[list[tuple[torch.Tensor, ...] | None] | None] = [None] * n_layer
        self._residual: list[tuple[torch.Tensor, ...] | None] = [None] * n_layer
        self.length = 0  # committed tokens
        self._pending: list[tuple | None] = [None] * n_layer  # the step's (groups, residual)
        self._step: StepContext | None = None

    @classmethod
    def int8(cls, n_layer: int, n_tensors: int = 2) -> QuantizedKVCache:
        return cls(n_layer, (8,) * n_tensors, ("token",) * n_tensors, group_size=1)

    @classmethod
    def kivi(cls, n_layer: int, bits: int = 4, group_size: int = 32) -> QuantizedKVCache:
        return cls(n_layer, (bits, bits), ("channel", "token"), group_size=group_size)

    @property
    def offset(self) -> int:
        """Tokens committed before the next step (its first token's position)."""
        return self.length

    def prepare(self, input_ids: torch.Tensor) -> StepContext:
        """Positions continue from the committed tokens; attention is plain causal."""
        batch, t = input_ids.shape
        self._step = StepContext(step_positions(batch, t, input_ids.device, self.length), None,
                                 self)
        self._pending = [None] * self.n_layer
        return self._step

    def observe_queries(self, layer_idx: int, q: torch.Tensor) -> None:
        """Not needed: this cache keeps every token."""

    def update(self, layer_idx: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Quantize the groups the new tokens complete; return the dequantized past and the
        full-precision rest ``(batch, T, ...)``. The cache changes only on commit."""
        res = self._residual[layer_idx] if 0 <= layer_idx < self.n_layer else None
        check_update(self.n_layer, layer_idx, tensors,
                     None if res is None else tuple(r.shape[2:] for r in res))
        if len(tensors) != len(self.bits):
            raise ValueError(f"configured for {len(self.bits)} tensors, got {len(tensors)}")
        groups = list(self._groups[layer_idx] or [None] * len(tensors))
        res = tuple(t[:, :0] for t in tensors) if res is None else res
        res = tuple(torch.cat(p, 1) for p in zip(res, tensors))
        n_full = res[0].shape[1] // self.group_size * self.group_size
        if n_full:
            for i, r in enumerate(res):
                new = self._quantize(r[:, :n_full], i)
                old = groups[i]
                groups[i] = new if old is None else tuple(torch.cat(p, 1) for p in zip(old, new))
            res = tuple(r[:, n_full:] for r in res)
        self._pending[layer_idx] = (groups, res)
        return tuple(r if g is None else torch.cat([self._dequantize(g, i, r.dtype), r], 1)
                     for i, (g, r) in enumerate(zip(groups, res)))

    def commit(self, ctx: StepContext) -> None:
        """Keep the step's quantized groups and residual."""
        if ctx is not self._step:
            raise ValueError("commit the context the latest prepare() returned")
        missing = [i for i, p in enumerate(self._pending) if p is None]
        if missing:
            raise ValueError(f"layers {missing} did not store the step's tokens: run the model "
                             "with this context before committing it")
        for layer_idx, (groups, res) in enumerate(self._pending):
            self._groups[layer_idx], self._residual[layer_idx] = groups, res
        self.length += ctx.positions.shape[1]
        self._pending, self._step = [None] * self.n_layer, None

    def _quantize(self, x: torch.Tensor, i: int) -> tuple[torch.Tensor, ...]:
        """x: (batch, n_groups * G, ...) -> packed codes, scale, zero, (batch, n_groups, G, ...)."""
        x = x.view(x.shape[0], -1, self.group_size, *x.shape[2:])
        codes, scale, zero = minmax_quantize(x, self.bits[i],
                                             dim=2 if self.axes[i] == "channel" else -1)
        return pack_codes(codes, self.bits[i]), scale.half(), zero.half()  # stored in fp16

    def _dequantize(self, group: tuple[torch.Tensor, ...], i: int,
                    dtype: torch.dtype) -> torch.Tensor:
        packed, scale, zero = group
        x = minmax_dequantize(unpack_codes(packed, self.bits[i]), scale, zero, dtype)
        return x.flatten(1, 2)  # (batch, n_groups * G, ...)

    def nbytes(self, residual: bool = True) -> int:
        """Bytes held: packed codes, fp16 scales and zeros, and (with ``residual``) the
        full-precision residual — fewer than ``group_size`` tokens, whatever the context."""
        total = 0
        for groups, res in zip(self._groups, self._residual):
            for stacked in filter(None, groups or []):
                total += sum(t.numel() * t.element_size() for t in stacked)
            if residual:
                total += sum(r.numel() * r.element_size() for r in res or ())
        return total

    def quantized_tokens(self, layer_idx: int = 0) -> int:
        """Tokens of a layer stored quantized (the rest is the residual)."""
        res = self._residual[layer_idx]
        return self.length - (0 if res is None else res[0].shape[1])
