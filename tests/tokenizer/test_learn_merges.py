"""train_bpe takes its merge learner as an option (chapter 01 passes the reader's own)."""

from llmlab.tokenizer import train_bpe
from llmlab.tokenizer.bpe_train import bpe_merges_from_counts

TEXT = "the cat sat on the mat; the cat ate the rat, and the rat ran"


def test_the_learner_gets_pretoken_counts_and_its_merges_are_used():
    seen = {}

    def learner(word_counts, num_merges, progress):
        seen.update(counts=dict(word_counts), n=num_merges)
        return bpe_merges_from_counts(word_counts, num_merges, progress)

    assert train_bpe([TEXT], 270, ["<|eot|>"], learn_merges=learner) == train_bpe([TEXT], 270, ["<|eot|>"])
    assert seen["n"] == 270 - 256 - 1 and seen["counts"][b" the"] == 4 and seen["counts"][b"the"] == 1
    bytes_only = {i: bytes([i]) for i in range(256)}
    vocab, merges = train_bpe([TEXT], 270, learn_merges=lambda wc, n, p: (dict(bytes_only), []))
    assert merges == [] and len(vocab) == 256
