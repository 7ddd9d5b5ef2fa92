"""llmlab: the industrial LLM stack, one layer per sub-package, built to be read and graded.

Sub-packages (each is taught by one chapter of the book):

- ``llmlab.grading``   — instant-feedback checks and the notebook autograder (chapter 00)
- ``llmlab.tokenizer`` — byte-level BPE, WordPiece, Unigram, chat templates (chapter 01)
- ``llmlab.nn``, ``llmlab.model``, ``llmlab.train``, ``llmlab.data`` — a GPT and its training (02)
- ``llmlab.attention`` — attention variants and long context (chapter 03)
- ``llmlab.kvcache``   — contiguous, paged and prefix KV caches (chapter 08)
- ``llmlab.rag``       — chunking, BM25, dense retrieval, IVF/HNSW, fusion, RAG, CacheBlend (12)
- ``llmlab.agent``     — constrained tool calls, a ReAct loop, a sandboxed Python tool, MCP (12)

Sub-packages are imported lazily (``import llmlab.model``), so ``import llmlab`` stays cheap.
"""

__version__ = "0.1.0"
