"""Perplexity on the book's model where bits are few enough to matter: GPTQ beats RTN at 3 bits."""

from __future__ import annotations

import copy
import math

from llmlab.quant import gptq_quantize_model, perplexity, rtn_quantize_model


def test_gptq_beats_rtn_perplexity_at_3_bits(book, calib, eval_ids):
    model = book[0]
    tokens = eval_ids.reshape(-1).numpy()
    fp = perplexity(model, tokens, seq_len=255)
    rtn = perplexity(rtn_quantize_model(copy.deepcopy(model), 3, 64), tokens, seq_len=255)
    gptq = perplexity(gptq_quantize_model(copy.deepcopy(model), calib, 3, 64), tokens, seq_len=255)
    assert math.isfinite(fp) and rtn > fp
    assert gptq < rtn - 0.25 * (rtn - fp), (fp, rtn, gptq)
