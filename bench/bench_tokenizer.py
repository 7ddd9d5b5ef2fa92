"""Tokenizer benchmark: llmlab's BPE next to Hugging Face ``tokenizers``, tiktoken and the
chapter's naive trainer, on Python standard-library source (text every machine has).

1. Training time, same corpus and vocabulary (full: 5 MB -> 8,000 tokens), llmlab ``train_bpe``
   vs HF ``BpeTrainer`` with the same GPT-2 pre-tokenization. Target: within 5x of HF.
2. Training time vs the naive trainer (``bpe_basics.train_bpe_naive``, which recounts every pair
   after each merge) on the same corpus for the first ``naive_merges`` merges: the naive run for
   all 7,743 merges would take most of an hour. Both learn identical merges (checked); the
   ratio only grows with more merges, since llmlab's late merges touch few words while each
   naive merge costs the same. Target: >= 20x faster.
3. Encoding throughput (MB/s, one thread each) vs tiktoken and HF on the same merges; ids are
   checked equal. Target: at least 1/10 of tiktoken.
4. Peak memory (RSS growth) of ``encode_iterable`` streaming 100 MB line by line, vs ``encode``
   of the same text at once, each in a fresh process.

    python -m bench.bench_tokenizer --size full    # ~5 min on 2 cores
    python -m bench.bench_tokenizer --size tiny    # seconds
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time
from itertools import cycle

from bench.common import interleaved as common_interleaved
from bench.common import measure, parser, ratio_columns, write_results
from llmlab.tokenizer import GPT2_PATTERN, Tokenizer, to_hf, to_tiktoken, train_bpe
from llmlab.tokenizer.bpe_basics import train_bpe_naive
from llmlab.tokenizer.samples import python_source

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
EOT = "<|endoftext|>"
SIZES = {  # corpus characters, vocab size, naive merges, streamed characters, timing repeats
    "tiny": dict(corpus=300_000, vocab=1000, naive_merges=30, stream=3_000_000, repeat=1),
    "full": dict(corpus=5_000_000, vocab=8000, naive_merges=1000, stream=100_000_000, repeat=3),
}


def corpus(chars: int) -> list[str]:
    """Standard-library source files as documents, about ``chars`` characters in all."""
    return python_source(chars, sep=EOT).split(EOT)


def hf_train(docs: list[str], vocab_size: int):
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    hf.train_from_iterator(docs, trainer)
    return hf


def interleaved(runs: dict, repeat: int) -> dict[str, float]:
    """Median seconds of each run, alternating so load on the machine hits all alike."""
    return {k: st["median"] for k, st in common_interleaved(runs, repeat, warmup=0).items()}


def row(what: str, ours: float, peer_name: str, peer: float, unit: str, target: str = "",
        met: bool | None = None) -> dict:
    """One result; ``met`` is computed from the measurement, and "—" when there is no target."""
    return {"measure": what, "llmlab": f"{ours:.3g} {unit}", "peer": f"{peer_name} {peer:.3g} {unit}",
            **ratio_columns(ours, peer, unit), "target": target or "—",
            "met": "—" if met is None else ("yes" if met else "no")}


def training_rows(docs: list[str], size: dict) -> list[dict]:
    mb = sum(len(d.encode()) for d in docs) / 1e6
    v = size["vocab"]
    t = interleaved({"llmlab": lambda: train_bpe(docs, v, [EOT]),
                     "hf": lambda: hf_train(docs, v)}, size["repeat"])
    rows = [row(f"train {mb:.1f} MB -> {v} tokens (s)", t["llmlab"], "HF tokenizers", t["hf"],
                "s", ">= 0.2", t["hf"] / t["llmlab"] >= 0.2)]
    n = size["naive_merges"]
    text = EOT.join(docs).replace(EOT, "\n")  # the naive trainer has no special tokens
    start = time.perf_counter()
    naive = train_bpe_naive(text, 256 + n)
    t_naive = time.perf_counter() - start
    t_fast = measure(lambda: train_bpe([text], 256 + n), repeat=size["repeat"], warmup=0)
    assert train_bpe([text], 256 + n) == naive, "fast and naive trainers disagree"
    rows.append(row(f"train {mb:.1f} MB, first {n} merges (s)", t_fast, "naive trainer", t_naive,
                    "s", ">= 20", t_naive / t_fast >= 20))
    return rows


def encoding_rows(docs: list[str], size: dict) -> tuple[list[dict], Tokenizer]:
    vocab, merges = train_bpe(docs, size["vocab"], [EOT])
    tok = Tokenizer(vocab, merges, [EOT])
    enc, hf = to_tiktoken(tok), to_hf(tok)
    text = EOT.join(docs)
    mb = len(text.encode()) / 1e6
    ids = Tokenizer(vocab, merges, [EOT]).encode(text)
    assert ids == enc.encode(text, allowed_special="all") == hf.encode(text).ids, \
        "ids differ between llmlab and its peers"
    runs = {  # document by document; a fresh Tokenizer each run: llmlab's cache starts cold
        "llmlab": lambda: [t.encode(d) for t in [Tokenizer(vocab, merges, [EOT])] for d in docs],
        "tiktoken": lambda: [enc.encode(d, allowed_special="all") for d in docs],
        "hf": lambda: [hf.encode(d) for d in docs],
    }
    t = interleaved(runs, size["repeat"])
    speed = {k: mb / s for k, s in t.items()}
    return [
        row(f"encode {mb:.1f} MB (MB/s)", speed["llmlab"], "tiktoken", speed["tiktoken"], "MB/s",
            ">= 0.1", speed["llmlab"] / speed["tiktoken"] >= 0.1),
        row(f"encode {mb:.1f} MB (MB/s)", speed["llmlab"], "HF tokenizers", speed["hf"], "MB/s"),
    ], tok


def _peak_rss_growth(path: str, lines: list[str], chars: int, stream: bool, out) -> None:
    """In a fresh process: RSS growth (MB) while encoding ``chars`` characters of ``lines``."""
    tok = Tokenizer.load(path)

    def text_lines():
        n = 0
        for line in cycle(lines):
            if n >= chars:
                return
            n += len(line)
            yield line

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if stream:
        count = sum(1 for _ in tok.encode_iterable(text_lines()))
    else:
        count = len(tok.encode("".join(text_lines())))
    out.put(((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, count))


def memory_rows(tok: Tokenizer, docs: list[str], size: dict, tmp: str) -> list[dict]:
    path = os.path.join(tmp, "tok.json")
    tok.save(path)
    lines = "\n".join(docs).splitlines(keepends=True)
    result = {}
    for stream in (True, False):
        q = mp.get_context("spawn").Queue()
        p = mp.get_context("spawn").Process(target=_peak_rss_growth,
                                            args=(path, lines, size["stream"], stream, q))
        p.start()
        result[stream] = q.get()
        p.join()
    assert result[True][1] == result[False][1], "streamed and whole-text token counts differ"
    mb = size["stream"] / 1e6
    stream_mb, whole_mb = result[True][0], max(result[False][0], 1.0)
    return [row(f"peak RSS growth, {mb:.0f} MB of text (MB)", stream_mb, "encode() at once",
                whole_mb, "MB", "constant memory", stream_mb < 100)]


def main() -> None:
    import tempfile

    args = parser(__doc__.split("\n\n")[0]).parse_args()
    size = SIZES[args.size]
    docs = corpus(size["corpus"])
    rows = training_rows(docs, size)
    enc_rows, tok = encoding_rows(docs, size)
    rows += enc_rows
    with tempfile.TemporaryDirectory() as tmp:
        rows += memory_rows(tok, docs, size, tmp)
    notes = ("Speed-ups read one way: peer time ÷ llmlab time (training) or llmlab MB/s ÷ peer "
             "MB/s (encoding), so > 1 means llmlab is faster; targets are on the speed-up. "
             "Measured in one run, interleaved. HF trains with "
             "its own threads and llmlab counts pre-tokens in two processes; encoding is one "
             "thread each, document by document. The naive row covers the first merges only (see "
             "bench/bench_tokenizer.py). Peak RSS growth is measured in a fresh process per "
             "method: 0 means the peak never rose above what loading needed.")
    path = write_results("tokenizer", rows, args.out, "Tokenizer: llmlab vs HF tokenizers, "
                         "tiktoken and the naive trainer", notes, args.size)
    print(path.read_text())


if __name__ == "__main__":
    main()
