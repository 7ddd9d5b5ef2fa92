"""Chat templates: render a conversation with role special tokens (ChatML, used by Qwen and
OpenAI's chat models), tokenize it, and mark the tokens the assistant wrote.

Supervised fine-tuning computes the loss only where ``assistant_mask`` is 1: the assistant's
reply and the ``<|im_end|>`` that closes it (the model must learn to stop), never the system
prompt, the user's turns or the role headers. Ouyang et al. 2022, "Training language models to
follow instructions with human feedback", arXiv:2203.02155, describes the SFT stage.
Taught in chapter 01 (solutions/01_tokenization).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmlab.tokenizer.bpe import Tokenizer

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHATML_SPECIAL_TOKENS = [IM_START, IM_END]
ROLES = ("system", "user", "assistant", "tool")


@dataclass
class ChatEncoding:
    """``ids`` and ``assistant_mask`` (1 where the token is trained on), the same length."""

    text: str
    ids: list[int]
    assistant_mask: list[int]


def render_chatml(messages: list[dict[str, str]], add_generation_prompt: bool = False
                  ) -> tuple[str, list[tuple[int, int]]]:
    """The ChatML text, and the character spans the assistant wrote (content + ``<|im_end|>``).

    Each message is ``{"role": ..., "content": ...}`` and renders as
    ``<|im_start|>{role}\\n{content}<|im_end|>\\n``; a generation prompt appends
    ``<|im_start|>assistant\\n`` for the model to continue.
    """
    text, spans = "", []
    for i, m in enumerate(messages):
        unknown = set(m) - {"role", "content"}
        if unknown or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must have exactly 'role' and 'content', got {sorted(m)}")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i}: unknown role {m['role']!r}; expected one of {ROLES}")
        text += f"{IM_START}{m['role']}\n"
        start = len(text)
        text += f"{m['content']}{IM_END}"
        if m["role"] == "assistant":
            spans.append((start, len(text)))
        text += "\n"
    if add_generation_prompt:
        text += f"{IM_START}assistant\n"
    return text, spans


def apply_chat_template(tok: Tokenizer, messages: list[dict[str, str]],
                        add_generation_prompt: bool = False) -> ChatEncoding:
    """Render ``messages`` as ChatML, encode the whole text with ``tok`` (which must know
    ``<|im_start|>`` and ``<|im_end|>`` as special tokens), and mark assistant tokens: a token
    is marked when its first byte lies in an assistant span."""
    missing = [t for t in CHATML_SPECIAL_TOKENS if t not in tok.special_ids]
    if missing:
        raise ValueError(f"the tokenizer lacks the special tokens {missing}; build it with "
                         "special_tokens=CHATML_SPECIAL_TOKENS")
    text, spans = render_chatml(messages, add_generation_prompt)
    ids = tok.encode(text)
    byte_spans = [(len(text[:a].encode()), len(text[:b].encode())) for a, b in spans]
    mask, pos = [], 0
    for i in ids:
        mask.append(int(any(a <= pos < b for a, b in byte_spans)))
        pos += len(tok.vocab[i])
    return ChatEncoding(text, ids, mask)


def render_chat_template(template: str, messages: list[dict[str, str]],
                         add_generation_prompt: bool = False, **variables: object) -> str:
    """Render a Hugging Face Jinja chat template (a checkpoint's ``chat_template``) as
    ``transformers``' ``apply_chat_template(tokenize=False)`` does: in a sandbox, with
    ``messages``, ``add_generation_prompt``, ``raise_exception`` and ``variables`` (e.g.
    ``bos_token``, ``tools``). Needs ``jinja2`` (a dependency of ``transformers``)."""
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ImportError("rendering a chat template needs jinja2: pip install jinja2") from None
    if not isinstance(template, str) or not template:
        raise ValueError(f"chat template must be a non-empty string, got {template!r}")

    def raise_exception(message: str) -> None:
        raise ValueError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages,
                                            add_generation_prompt=add_generation_prompt,
                                            **variables)
