"""llmlab.model.load / resolve: the book model, Hugging Face directories (a tiny Qwen3 and a tiny
Llama saved locally with a locally trained tokenizer), the hub cache, and the offline error."""

import shutil

import pytest
import torch

from llmlab.model import GPT, load, load_book_model, resolve
from llmlab.tokenizer import render_chat_template
from llmlab.tokenizer.chat import render_chatml

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytestmark = pytest.mark.parity

CHATML_TEMPLATE = (  # Qwen's template, reduced to its ChatML core
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
TEXT = ["def add(a, b):\n    return a + b\n", "import os\nprint(os.path.join('a', 'b'))\n",
        "for i in range(10):\n    total += i * i\n"] * 20


def _tokenizer():
    """A byte-level BPE trained here on a few lines of Python, as transformers saves one."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                                chat_template=CHATML_TEMPLATE)


def _save(directory, config_cls, **extra):
    hf_tok = _tokenizer()
    cfg = config_cls(vocab_size=len(hf_tok), max_position_embeddings=64, hidden_size=32,
                     intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, bos_token_id=None, eos_token_id=None,
                     pad_token_id=None, **extra)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    model.save_pretrained(directory)
    hf_tok.save_pretrained(directory)
    return model, hf_tok


@pytest.mark.parametrize("family", ["qwen3", "llama"])
def test_load_hf_directory(tmp_path, family):
    config_cls = {"qwen3": transformers.Qwen3Config, "llama": transformers.LlamaConfig}[family]
    hf, hf_tok = _save(tmp_path, config_cls, **({"head_dim": 16} if family == "qwen3" else {}))
    model, tok = load(tmp_path, device="cpu")
    assert isinstance(model, GPT) and not model.training
    assert model.config.qk_norm == (family == "qwen3")
    text = "def add(a, b):\n    return os.path.join(a, b)\n"
    ids = tok.encode(text)
    assert ids == hf_tok.encode(text) and tok.decode(ids) == text
    idx = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, atol=1e-5, rtol=1e-4)
    messages = [{"role": "user", "content": "what does os.path.join do?"}]
    rendered = render_chat_template(tok.chat_template, messages, add_generation_prompt=True)
    assert rendered == hf_tok.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
    assert rendered == render_chatml(messages, add_generation_prompt=True)[0]
    assert tok.encode(rendered)[0] == tok.special_ids["<|im_start|>"]
    bf16, _ = load(str(tmp_path), device="cpu", dtype=torch.bfloat16)
    assert bf16.tok_emb.weight.dtype == torch.bfloat16


def test_sentencepiece_style_tokenizer_is_refused_clearly(tmp_path):
    """Llama 2 / TinyLlama tokenizers are Metaspace BPE, not byte-level: a clear error."""
    from tokenizers import models, pre_tokenizers, trainers

    _save(tmp_path, transformers.LlamaConfig)
    sp = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    sp.pre_tokenizer = pre_tokenizers.Metaspace()
    sp.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"]))
    sp.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="SentencePiece-style BPE"):
        load(tmp_path, device="cpu")


def test_load_book_and_unknown_specs(tmp_path):
    model, tok = load("book", device="cpu")
    book, book_tok = load_book_model()
    idx = torch.tensor([book_tok.encode("import os\n")])
    with torch.no_grad():
        assert torch.equal(model(idx), book(idx))
    assert tok.encode("x = 1") == book_tok.encode("x = 1")
    chat, chat_tok = load("book-chat", device="cpu")
    assert chat.config.vocab_size == book.config.vocab_size + 2
    assert chat_tok.encode("<|im_start|>") == [chat_tok.special_ids["<|im_start|>"]]
    with pytest.raises(ValueError, match="neither 'book'"):
        load("no such model")
    with pytest.raises(ValueError, match="no config.json"):
        load(tmp_path)


def test_hub_id_offline_not_cached_names_the_cache(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as error:
        load("someone/tiny-model-not-here")
    message = str(error.value)
    assert str(tmp_path / "hub") in message and "hf download someone/tiny-model-not-here" in message


def test_hub_id_resolves_from_the_cache(tmp_path, monkeypatch):
    """A snapshot laid out as huggingface_hub caches it is found offline by its hub id."""
    pytest.importorskip("huggingface_hub")
    commit = "0" * 40
    snapshot = tmp_path / "hub" / "models--someone--tiny-qwen3" / "snapshots" / commit
    hf, _ = _save(snapshot, transformers.Qwen3Config, head_dim=8)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, _ = load("someone/tiny-qwen3", device="cpu")
    idx = torch.arange(10)[None]
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, atol=1e-5, rtol=1e-4)
    shutil.rmtree(snapshot)
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        load("someone/tiny-qwen3")


def test_resolve_reads_the_environment(monkeypatch):
    monkeypatch.delenv("LLMLAB_MODEL", raising=False)
    monkeypatch.delenv("LLMLAB_DEVICE", raising=False)
    default = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve() == ("book", torch.device(default))
    monkeypatch.setenv("LLMLAB_MODEL", "/models/qwen3")
    monkeypatch.setenv("LLMLAB_DEVICE", "cpu")
    assert resolve() == ("/models/qwen3", torch.device("cpu"))
    assert resolve("book", "meta") == ("book", torch.device("meta"))  # arguments win
    monkeypatch.setenv("LLMLAB_DEVICE", "gpu0")
    with pytest.raises(ValueError, match="LLMLAB_DEVICE"):
        resolve()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve(device="cuda")
