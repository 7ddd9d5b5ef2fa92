"""llmlab: the industrial LLM stack, one layer per sub-package, built to be read and graded.

Sub-packages, each taught by one chapter of the book, in the order they build on each other
(a layer imports only layers above it in this list; ``tests/test_layers.py`` checks it):

- ``llmlab.data``      — corpora, token files and training windows (chapter 02)
- ``llmlab.tokenizer`` — byte-level BPE, WordPiece, Unigram, chat templates (chapter 01)
- ``llmlab.nn``        — the transformer's layers, the step context and KV-cache protocol (02)
- ``llmlab.model``     — the GPT, its config and checkpoints, sampling and ``generate`` (02)
- ``llmlab.train``     — the training step, the Trainer, optimizers, schedules (02)
- ``llmlab.attention`` — attention variants and long context (chapter 03)
- ``llmlab.parallel``  — data, tensor, pipeline, expert and context parallelism; ZeRO (04)
- ``llmlab.quant``     — number formats, PTQ, QAT, pruning, distillation (chapter 07)
- ``llmlab.kvcache``   — paged, prefix-cached, evicting and quantized KV caches (chapter 08)
- ``llmlab.peft``      — LoRA and its family, prefix and prompt tuning (chapter 05)
- ``llmlab.align``     — SFT, reward models, PPO, DPO, GRPO and their relatives (chapter 06)
- ``llmlab.serve``     — the engine, speculative decoding, an OpenAI-compatible server (09)
- ``llmlab.kernels``   — Triton kernels (chapter 03)

and the courseware, which no layer imports: ``llmlab.grading`` (instant-feedback checks and
the notebook autograder, chapter 00) with ``llmlab.chapters`` (the chapters' metadata).
``llmlab.utils`` holds the helpers every layer may use (seeding, ``reject_unknown_keys``).

Sub-packages are imported lazily (``import llmlab.model``), so ``import llmlab`` stays cheap.
"""

__version__ = "0.1.0"
