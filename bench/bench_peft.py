"""PEFT benchmark: LoRA vs full fine-tuning on the book's model, and llmlab's LoRA vs ``peft``'s.

1. One AdamW training step of the book's model (fp32, CPU): full fine-tuning vs LoRA r = 8 on
   every linear layer of the blocks — step time, and training memory measured on real tensors
   (parameters + gradients + optimizer state + the activations autograd saves, the latter from
   ``llmlab.model.counting.saved_activation_bytes``).
2. The same tiny random ``transformers`` Llama with the same LoRA (r = 8 on q, k, v, o, gate, up,
   down) through llmlab (``from_hf`` + ``apply_lora``) and through Hugging Face ``peft``
   (``get_peft_model``), same batch, step time interleaved in one run. Both compute the same
   logits (checked before timing).

    python -m bench.bench_peft --size full    # ~1 min of CPU
    python -m bench.bench_peft --size tiny    # seconds
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.common import interleaved, parse_args, parser, ratio_columns, write_results
from llmlab import peft
from llmlab.model import from_hf, load_book_model
from llmlab.model.counting import saved_activation_bytes

SIZES = {  # book-model batch, sequence, timing repeats; tiny HF model width and depth
    "tiny": dict(batch=2, seq=32, repeat=2, d_model=64, n_layer=2),
    "full": dict(batch=8, seq=128, repeat=5, d_model=192, n_layer=6),
}
TARGETS = peft.ALL_LINEAR


def row(measure_name: str, ours: float, peer: float, unit: str, spread: str = "") -> dict:
    return {"measure": measure_name, "llmlab": f"{ours:.4g} {unit}".strip(),
            "peer": f"{peer:.4g} {unit}".strip(), **ratio_columns(ours, peer, unit),
            "spread (llmlab / peer)": spread or "—"}


def timed(runs: dict, repeat: int) -> tuple[dict[str, float], str]:
    """Median step time (ms) per run, interleaved after a warm-up, and the spreads as text."""
    stats = interleaved(runs, repeat)
    return ({k: st["median"] * 1e3 for k, st in stats.items()},
            " / ".join(f"{st['spread']:.2f}" for st in stats.values()))


def trainer(model, idx, targets):
    """(one-step closure, optimizer) training the trainable parameters of ``model`` (an llmlab
    model, or a ``transformers``/``peft`` one whose output has ``.logits``)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        logits = model(idx)
        logits = getattr(logits, "logits", logits)
        F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # keep gradients allocated: they count as memory

    return step, opt


class HFLoss(torch.nn.Module):
    """A ``transformers``/``peft`` causal LM with llmlab's ``loss(idx, targets)`` (for counting)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=idx).logits
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def training_bytes(model, opt, idx, targets) -> int:
    """Peak training memory: parameters + gradients + optimizer state + the activations saved
    for the backward pass (all alive together when the backward starts), in bytes."""
    tensors = [p for p in model.parameters()] + [p.grad for p in model.parameters()
                                                 if p.grad is not None]
    tensors += [t for st in opt.state.values() for t in st.values()
                if isinstance(t, torch.Tensor) and t.dim() > 0]
    return sum(t.numel() * t.element_size() for t in tensors) + saved_activation_bytes(
        model, idx, targets)


def book_rows(size: dict) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    full, _ = load_book_model()
    lora = peft.apply_lora(load_book_model()[0], peft.LoRAConfig(r=8, target_modules=TARGETS))
    idx = torch.randint(0, full.config.vocab_size, (size["batch"], size["seq"] + 1), generator=g)
    idx, targets = idx[:, :-1], idx[:, 1:]
    steps = {k: trainer(m, idx, targets) for k, m in (("lora", lora), ("full", full))}
    t, sp = timed({k: s for k, (s, _) in steps.items()}, size["repeat"])
    mem = {k: training_bytes(m, steps[k][1], idx, targets) for k, m in (("lora", lora), ("full", full))}
    shape = f"book model, batch {size['batch']} x {size['seq']}"
    return [row(f"train step, {shape}: LoRA r=8 vs full fine-tuning", t["lora"], t["full"], "ms", sp),
            row(f"peak training memory, {shape}: LoRA r=8 vs full fine-tuning", mem["lora"] / 2**20,
                mem["full"] / 2**20, "MiB"),
            row("trainable parameters: LoRA r=8 vs full", peft.count_trainable(lora)[0],
                peft.count_trainable(full)[0], "")]


def hf_rows(size: dict) -> list[dict]:
    import peft as hf_peft
    import transformers

    torch.manual_seed(0)
    d = size["d_model"]
    cfg = transformers.LlamaConfig(vocab_size=4096, hidden_size=d, intermediate_size=int(8 / 3 * d),
                                   num_hidden_layers=size["n_layer"], num_attention_heads=d // 32,
                                   num_key_value_heads=2, max_position_embeddings=512)
    hf = transformers.LlamaForCausalLM(cfg)
    ours = peft.apply_lora(from_hf(hf), peft.LoRAConfig(r=8, alpha=16, target_modules=TARGETS))
    theirs = hf_peft.get_peft_model(hf, hf_peft.LoraConfig(r=8, lora_alpha=16,
                                                           target_modules=list(TARGETS)))
    peft.from_peft_state_dict(ours, hf_peft.get_peft_model_state_dict(theirs))
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 4096, (size["batch"], size["seq"] + 1), generator=g)
    idx, targets = idx[:, :-1], idx[:, 1:]
    with torch.no_grad():
        assert torch.allclose(ours(idx), theirs(input_ids=idx).logits, atol=1e-4)
    steps = {"llmlab": trainer(ours, idx, targets), "peft": trainer(theirs, idx, targets)}
    opts = {k: o for k, (_, o) in steps.items()}
    t, sp = timed({k: s for k, (s, _) in steps.items()}, size["repeat"])
    shape = f"tiny Llama d={d} x {size['n_layer']} layers, batch {size['batch']} x {size['seq']}"
    rows = [row(f"LoRA r=8 train step, {shape}: llmlab vs peft", t["llmlab"], t["peft"], "ms", sp)]
    mem = {k: training_bytes(m, o, idx, targets) / 2**20
           for k, (m, o) in (("llmlab", (ours, opts["llmlab"])), ("peft", (HFLoss(theirs), opts["peft"])))}
    return rows + [row(f"LoRA r=8 peak training memory, {shape}: llmlab vs peft", mem["llmlab"],
                       mem["peft"], "MiB")]


def main() -> None:
    args = parse_args(parser(__doc__.splitlines()[0], threads=True))
    size = SIZES[args.size]
    rows = book_rows(size) + hf_rows(size)
    notes = ("fp32 on CPU, AdamW. Memory = parameters + gradients + AdamW state + activations "
             "saved for the backward pass, summed over real tensors. Step times: median of "
             f"{size['repeat']} interleaved steps after a warm-up step, spread = (max - min) / "
             "median. The peft comparison uses random weights and identical LoRA weights in both "
             "(same logits).")
    path = write_results("peft", rows, args.out, title="Parameter-efficient fine-tuning",
                         notes=notes, size=args.size)
    print(path.read_text())


if __name__ == "__main__":
    main()
