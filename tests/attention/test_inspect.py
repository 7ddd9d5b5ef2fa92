import pytest
import torch

from llmlab.attention.inspect import attention_maps


def test_attention_maps_reproduce_the_layer_output():
    """Probabilities times the layer's values give exactly what the model's attention computed."""
    model_mod = pytest.importorskip("llmlab.model")
    torch.manual_seed(0)
    cfg = model_mod.GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_kv_head=2,
                              d_model=32)
    model = model_mod.GPT(cfg).eval()
    idx = torch.randint(0, 50, (2, 12))
    outputs = []
    attn = model.blocks[1].attn
    handle = attn.register_forward_hook(lambda m, a, out: outputs.append((a[0], out)))
    maps = attention_maps(model, idx)
    handle.remove()
    assert len(maps) == 2 and maps[0].shape == (2, 4, 12, 12)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, 4, 12))
    assert (maps[1].triu(1) == 0).all()
    x, out = outputs[0]
    v = attn.v_proj(x).view(2, 12, 2, 8).transpose(1, 2).repeat_interleave(2, 1)
    y = (maps[1] @ v).transpose(1, 2).reshape(2, 12, 32)
    torch.testing.assert_close(attn.o_proj(y), out, atol=1e-5, rtol=1e-4)


def test_attention_maps_need_attention_layers():
    with pytest.raises(ValueError, match="CausalSelfAttention"):
        attention_maps(torch.nn.Linear(3, 3), torch.zeros(1, 3))
