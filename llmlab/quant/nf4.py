"""NF4: 4-bit NormalFloat with block-wise absmax scaling and double quantization (QLoRA).

"QLoRA: Efficient Finetuning of Quantized LLMs" (Dettmers et al., arXiv 2305.14314), section 3 and
appendix E. Pretrained weights are close to zero-mean normal, so the 16 code values are placed at
quantiles of N(0, 1), rescaled to [-1, 1], with an exact zero: :data:`NF4_CODE` holds the paper's
constants and :func:`nf4_code_book` derives them.

A weight ``W`` is flattened and cut into blocks of ``block_size`` (64) values; each block is
divided by its absmax ``s_b`` and every value is rounded to the nearest code (a 4-bit index, two
per byte). *Double quantization* compresses the fp32 absmaxes themselves: subtract their mean,
cut them into blocks of ``scale_block_size`` (256) and store each as int8 with one fp32 factor per
block, which brings the scale overhead from 32/64 = 0.5 to about 8/64 + 32/(64*256) = 0.127 bits
per weight. The layout (high nibble = even element, ``factor = 256 / (2 * absmax)``) equals
torchao's ``NF4Tensor``. Taught in chapter 07 (solutions/07_quant); chapter 05 (QLoRA) freezes
base weights as :class:`NF4Weight`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# QLoRA appendix E (bitsandbytes ``create_normal_map``), in order of the 4-bit index.
NF4_CODE: tuple[float, ...] = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)

NF4_OFFSET = 0.9677083  # QLoRA: the outermost quantile, chosen so the end points are not infinite


def nf4_code_book(offset: float = NF4_OFFSET) -> torch.Tensor:
    """Derive the 16 NF4 values from normal quantiles -> (16,) float32, sorted, in [-1, 1].

    8 positive values are N(0,1) quantiles at ``linspace(offset, 0.5, 9)[:-1]`` and 7 negative ones
    at ``linspace(offset, 0.5, 8)[:-1]`` (asymmetric so that 0 is exactly representable), plus 0;
    all divided by the largest. Matches :data:`NF4_CODE` to ~1e-7.
    """
    p_pos = torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1]
    p_neg = torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1]
    pos, neg = torch.special.ndtri(p_pos), -torch.special.ndtri(p_neg)
    v = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    return (v / v.abs().max()).float()


def nf4_table(dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """:data:`NF4_CODE` as a (16,) tensor."""
    return torch.tensor(NF4_CODE, dtype=dtype, device=device)


def round_to_code(x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Index of the nearest value of a sorted code book. x: (...) in [-1, 1] -> (...) uint8.

    Uses the midpoints between neighbouring codes (``bucketize``), which picks the same code as
    ``argmin |x - code|`` without building a (numel, 16) distance matrix.
    """
    mids = (code[1:] + code[:-1]) / 2
    return torch.bucketize(x.contiguous(), mids.to(x.dtype), right=False).to(torch.uint8)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """(n,) uint8 codes in [0, 15], n even -> (n/2,) uint8, element 2i in the high nibble."""
    if codes.numel() % 2:
        raise ValueError(f"need an even number of 4-bit codes to pack, got {codes.numel()}")
    codes = codes.reshape(-1)
    return (codes[0::2] << 4) | codes[1::2]


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: (n/2,) uint8 -> (n,) uint8."""
    return torch.stack([packed >> 4, packed & 0xF], dim=-1).reshape(-1)


def double_quantize(scales: torch.Tensor, block_size: int = 256
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize fp32 absmax scales to int8 in blocks (QLoRA's double quantization).

    scales: (n,) float -> (q (m,) int8, factor (m / block_size,) float, mean () float), where
    m = n rounded up to a multiple of ``block_size`` (padded with the mean, i.e. code 0).
    ``scales ≈ q / factor + mean``.
    """
    mean = scales.mean()
    centred = scales - mean
    pad = (-centred.numel()) % block_size
    centred = torch.nn.functional.pad(centred, (0, pad))
    blocks = centred.view(-1, block_size)
    absmax = blocks.abs().amax(dim=1, keepdim=True).clamp(min=1e-30)
    factor = 256 / (2 * absmax)
    q = (blocks * factor).round().clamp(-128, 127).to(torch.int8)
    return q.reshape(-1), factor.reshape(-1), mean


def double_dequantize(q: torch.Tensor, factor: torch.Tensor, mean: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`double_quantize` -> (n,) float."""
    blocks = q.view(factor.numel(), -1).float() / factor.unsqueeze(-1)
    return (blocks.reshape(-1) + mean)[:n]


@dataclass
class NF4Weight:
    """A tensor stored as packed NF4 codes plus (double-quantized) block scales.

    Build with :meth:`from_float` (or :func:`to_nf4`); :meth:`dequantize` rebuilds the float
    tensor, :meth:`nbytes` is the storage it really holds.
    """

    packed: torch.Tensor  # (ceil(numel / block_size) * block_size / 2,) uint8
    scales: torch.Tensor  # (n_blocks,) float32, or int8 codes when double quantized
    scale_factor: torch.Tensor | None  # (n_scale_blocks,) float32, None without double quant
    scale_mean: torch.Tensor | None  # () float32
    shape: torch.Size
    dtype: torch.dtype
    block_size: int = 64
    scale_block_size: int = 256

    @classmethod
    @torch.no_grad()
    def from_float(cls, w: torch.Tensor, block_size: int = 64, scale_block_size: int = 256,
                   double_quant: bool = True, code: torch.Tensor | None = None) -> NF4Weight:
        """Quantize ``w`` (any shape, float). ``code`` overrides the 16-value code book."""
        if not torch.is_floating_point(w):
            raise ValueError(f"NF4 quantizes a float tensor, got dtype {w.dtype}")
        if block_size <= 0 or block_size % 2:
            raise ValueError(f"block_size must be a positive even number, got {block_size}")
        code = nf4_table(device=w.device) if code is None else code.to(w.device, torch.float32)
        flat = w.detach().reshape(-1).float()
        flat = torch.nn.functional.pad(flat, (0, (-flat.numel()) % block_size))
        blocks = flat.view(-1, block_size)
        absmax = blocks.abs().amax(dim=1)
        normed = blocks / absmax.clamp(min=torch.finfo(torch.float32).tiny).unsqueeze(-1)
        packed = pack_nibbles(round_to_code(normed, code).reshape(-1))
        if double_quant:
            q, factor, mean = double_quantize(absmax, scale_block_size)
            return cls(packed, q, factor, mean, w.shape, w.dtype, block_size, scale_block_size)
        return cls(packed, absmax, None, None, w.shape, w.dtype, block_size, scale_block_size)

    @property
    def n_blocks(self) -> int:
        return self.packed.numel() * 2 // self.block_size

    def block_scales(self) -> torch.Tensor:
        """The per-block absmax the codes are multiplied by -> (n_blocks,) float32."""
        if self.scale_factor is None:
            return self.scales.float()
        return double_dequantize(self.scales, self.scale_factor, self.scale_mean, self.n_blocks)

    def dequantize(self, code: torch.Tensor | None = None) -> torch.Tensor:
        """Rebuild the float tensor -> ``shape``, ``dtype``."""
        code = nf4_table(device=self.packed.device) if code is None else code.float()
        vals = code[unpack_nibbles(self.packed).long()].view(-1, self.block_size)
        w = (vals * self.block_scales().unsqueeze(-1)).reshape(-1)[: self.shape.numel()]
        return w.view(self.shape).to(self.dtype)

    def nbytes(self) -> int:
        """Bytes of storage: codes + scales (+ scale factors and mean)."""
        extra = [self.scale_factor, self.scale_mean] if self.scale_factor is not None else []
        return sum(t.numel() * t.element_size() for t in [self.packed, self.scales, *extra])

    def bits_per_weight(self) -> float:
        return 8 * self.nbytes() / self.shape.numel()


def to_nf4(w: torch.Tensor, block_size: int = 64, scale_block_size: int = 256,
           double_quant: bool = True) -> NF4Weight:
    """Quantize ``w`` to :class:`NF4Weight` (QLoRA defaults: blocks of 64, scales in blocks of 256)."""
    return NF4Weight.from_float(w, block_size, scale_block_size, double_quant)


def nf4_linear(x: torch.Tensor, weight: NF4Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W^T + b`` with ``W`` dequantized on the fly. x: (..., in) -> (..., out).

    Gradients flow to ``x`` (and ``bias``) but not to the frozen NF4 weight, as in QLoRA.
    """
    return torch.nn.functional.linear(x, weight.dequantize().to(x.dtype), bias)
