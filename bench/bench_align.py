"""Alignment benchmark: time per DPO / GRPO / PPO step of llmlab vs ``trl`` on the same model.

A random ``transformers`` Llama and llmlab's ``GPT`` holding the same weights
(``llmlab.model.from_hf``). DPO: one optimiser step on the same preference batch (trl's
``DPOTrainer.compute_loss`` + backward + AdamW vs ``llmlab.align``'s log-probs + ``dpo_loss``).
GRPO: one full step — sample a group per prompt, score, update — of ``trl.GRPOTrainer.train``
vs ``llmlab.align.GRPOTrainer.step``, same group size, completion length and reward. PPO:
llmlab only (trl 1.x ships no PPO trainer). Then reward gained per minute by llmlab's GRPO on
the book model's verifiable task (a well-formed ``return`` line).

    python -m bench.bench_align --size full    # ~3 min on 2 cores
    python -m bench.bench_align --size tiny    # under a minute
"""

from __future__ import annotations

import copy
import os
import tempfile
import time

import torch

from bench.common import measure, parse_args, parser, speedup, speedup_label, write_results

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZES = {  # width, depth, prompts, group, new tokens, timed repeats, reward-run steps
    "tiny": dict(d=32, layers=1, prompts=2, group=4, new=4, repeat=1, reward_steps=3),
    "full": dict(d=192, layers=6, prompts=2, group=8, new=6, repeat=3, reward_steps=12),
}
PROMPTS = ["def get(self):\n        ", "def size(x):\n    ", "def name(self):\n        ",
           "def value(self):\n        "]
SPEEDUP_TRL = speedup_label("trl")


def setup(s: dict):
    import transformers

    from llmlab.model import from_hf, load_book_model
    from llmlab.tokenizer import to_hf

    book, tok = load_book_model()
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=to_hf(tok), eos_token="<|endoftext|>",
                                                  pad_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=s["d"],
                                   intermediate_size=2 * s["d"], num_hidden_layers=s["layers"],
                                   num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=256, tie_word_embeddings=True)
    hf = transformers.LlamaForCausalLM(cfg)
    return book, tok, hf_tok, hf, from_hf(hf)


def bench_dpo(s, tok, hf_tok, hf, ours, tmp):
    import trl
    from datasets import Dataset

    import llmlab.align as al

    prompts = PROMPTS[: s["prompts"]] * 2
    chosen, rejected = [" return self._x"] * len(prompts), [" pass"] * len(prompts)
    ds = Dataset.from_dict({"prompt": prompts, "chosen": chosen, "rejected": rejected})
    args = trl.DPOConfig(output_dir=tmp, report_to=[], use_cpu=True, save_strategy="no",
                         per_device_train_batch_size=len(prompts))
    model = copy.deepcopy(hf)
    tr = trl.DPOTrainer(model=model, ref_model=copy.deepcopy(hf), args=args, train_dataset=ds,
                        processing_class=hf_tok)
    batch = next(iter(tr.get_train_dataloader()))
    opt_hf = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def trl_step():
        loss = tr.compute_loss(model, batch)
        opt_hf.zero_grad()
        loss.backward()
        opt_hf.step()

    pol, ref = copy.deepcopy(ours), copy.deepcopy(ours).eval().requires_grad_(False)
    eos = tok.special_ids["<|endoftext|>"]
    pairs = [(tok.encode(p), tok.encode(c) + [eos], tok.encode(r) + [eos])
             for p, c, r in zip(prompts, chosen, rejected)]
    opt = torch.optim.AdamW(pol.parameters(), lr=1e-5)

    def ours_step():
        with torch.no_grad():
            rc, rr = al.preference_log_probs(ref, pairs, eos)
        pc, pr = al.preference_log_probs(pol, pairs, eos)
        loss = al.dpo_loss(pc, pr, rc, rr, 0.1)[0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return measure(ours_step, s["repeat"]), measure(trl_step, s["repeat"])


def bench_grpo(s, tok, hf_tok, hf, ours, tmp):
    import trl
    from datasets import Dataset

    import llmlab.align as al

    reward = al.return_statement_reward
    prompts = PROMPTS[: s["prompts"]]
    n = s["prompts"] * s["group"]
    ds = Dataset.from_dict({"prompt": prompts * (2 * (s["repeat"] + 1))})
    args = trl.GRPOConfig(output_dir=tmp, report_to=[], use_cpu=True, save_strategy="no",
                          logging_strategy="no",
                          per_device_train_batch_size=n, num_generations=s["group"],
                          max_completion_length=s["new"], max_steps=s["repeat"] + 1, beta=0.0,
                          learning_rate=1e-5, disable_tqdm=True)
    tr = trl.GRPOTrainer(model=copy.deepcopy(hf), args=args, train_dataset=ds, processing_class=hf_tok,
                         reward_funcs=lambda completions, **kw: [reward(c) for c in completions])
    from transformers import TrainerCallback

    times, t0 = [], [0.0]

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            t0[0] = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - t0[0])

    tr.add_callback(StepTimer())
    tr.train()
    trl_time = sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0]
    eos = tok.special_ids["<|endoftext|>"]
    ids = torch.tensor([tok.encode(p)[-6:] for p in prompts])
    g = al.GRPOTrainer(copy.deepcopy(ours), al.GRPOConfig(group_size=s["group"], max_new_tokens=s["new"],
                                                          lr=1e-5, beta=0.0), eos_token_id=eos)
    fn = al.text_reward(reward, tok)
    return measure(lambda: g.step(ids, fn), s["repeat"]), trl_time


def bench_ppo(s, tok, ours):
    import llmlab.align as al

    eos = tok.special_ids["<|endoftext|>"]
    ids = torch.tensor([tok.encode(p)[-6:] for p in PROMPTS[: s["prompts"]]]).repeat(s["group"], 1)
    tr = al.PPOTrainer(copy.deepcopy(ours), al.PPOConfig(max_new_tokens=s["new"]), eos_token_id=eos)
    fn = al.text_reward(al.return_statement_reward, tok)
    return measure(lambda: tr.step(ids, fn), s["repeat"])


def reward_per_minute(s, book, tok):
    import llmlab.align as al

    eos = tok.special_ids["<|endoftext|>"]
    ids = torch.tensor([tok.encode(p)[-6:] for p in PROMPTS[:2]])
    torch.manual_seed(0)
    tr = al.GRPOTrainer(copy.deepcopy(book), al.GRPOConfig(group_size=8, max_new_tokens=6, lr=1e-3, beta=0.0),
                        eos_token_id=eos)
    fn = al.text_reward(al.return_statement_reward, tok)
    start = time.perf_counter()
    rewards = [tr.step(ids, fn)["reward"] for _ in range(s["reward_steps"])]
    minutes = (time.perf_counter() - start) / 60
    k = max(1, len(rewards) // 4)
    gain = sum(rewards[-k:]) / k - sum(rewards[:k]) / k
    return gain, minutes, rewards


def main() -> None:
    args = parse_args(parser(__doc__.splitlines()[0], threads=True))
    s = SIZES[args.size]
    book, tok, hf_tok, hf, ours = setup(s)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        o, t = bench_dpo(s, tok, hf_tok, hf, ours, tmp)
        rows.append({"step": "DPO (optimiser step)", "llmlab s": o, "trl s": t,
                     SPEEDUP_TRL: speedup(o, t, "time"), "reward gained per minute": "—"})
        o, t = bench_grpo(s, tok, hf_tok, hf, ours, tmp)
        rows.append({"step": "GRPO (sample + score + update)", "llmlab s": o, "trl s": t,
                     SPEEDUP_TRL: speedup(o, t, "time"), "reward gained per minute": "—"})
    o = bench_ppo(s, tok, ours)
    rows.append({"step": "PPO (sample + score + 2 epochs)", "llmlab s": o, "trl s": "n/a",
                 SPEEDUP_TRL: "n/a", "reward gained per minute": "—"})
    gain, minutes, rewards = reward_per_minute(s, book, tok)
    rows.append({"step": f"GRPO on the book model, {len(rewards)} steps: reward gained per minute",
                 "llmlab s": minutes * 60, "trl s": "n/a", SPEEDUP_TRL: "n/a",
                 "reward gained per minute": gain / minutes})
    notes = (f"Model: random Llama d={s['d']}, {s['layers']} layer(s), {s['prompts']} prompts x group "
             f"{s['group']}, {s['new']} new tokens. trl 1.x has no PPO trainer. The last row: "
             f"the mean-reward gain per minute (rewards {', '.join(f'{r:.2f}' for r in rewards)}).")
    path = write_results("align", rows, args.out, title="Alignment steps", notes=notes, size=args.size)
    print(path.read_text())


if __name__ == "__main__":
    main()
