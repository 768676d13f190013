"""Int8 weight-only decoding (tessera.quantization.int8_decoding, ops::decode_linear_int8): the
quantizer against its formula, a quantized model's greedy ids against a twin whose weights are the
dequantized ones, the copy following the weight when it changes, and everything but decoding left
on the weight itself. The kernels are tested against the formula, every instruction set, in
test_decode_linear.py."""
import pytest
import torch

import tessera
from tessera import _C
from tessera.quantization import int8_decoding

CONFIG = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64)


def test_the_quantizer_is_symmetric_per_row():
    w = torch.randn(5, 40)
    w[3] = 0
    q, scale = _C.ops.quantize_int8_rows(w)
    expected = w.abs().amax(1) / 127
    expected[3] = 1
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    torch.testing.assert_close(scale, expected, rtol=0, atol=0)
    assert torch.equal(q, torch.round(w / expected[:, None]).to(torch.int8))
    assert q.abs().max() == 127 and (q[3] == 0).all()


def twin_with_dequantized_weights(model):
    twin = tessera.LlamaForCausalLM(CONFIG).eval()
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, p in twin.named_parameters():
            if p.dim() == 2 and "embed_tokens" not in name:
                q, scale = _C.ops.quantize_int8_rows(p)
                p.copy_(q.float() * scale[:, None])
    return twin


def test_a_quantized_model_decodes_as_its_dequantized_twin_and_follows_its_weights():
    torch.manual_seed(0)
    model = tessera.LlamaForCausalLM(CONFIG).eval()
    with torch.no_grad():  # one outlier per row: int8 rounds the rest of the row to a few levels
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed_tokens" not in name:
                p[:, 0] = 40.0
    # 2 x 4 prompt rows: the prompt's forward is a decoding-sized step too, so the int8 model and
    # its twin differ in nothing but where the scale multiplies
    ids = torch.randint(3, 300, (2, 4), generator=torch.Generator().manual_seed(3))
    greedy = dict(max_new_tokens=12, do_sample=False, eos_token_id=[])
    fp32 = model.generate(ids, **greedy)
    assert int8_decoding(model) == 2 * 7 + 1  # every projection of both layers and the head
    int8 = model.generate(ids, **greedy)
    assert not torch.equal(int8, fp32)  # the int8 copy is what decoding read ...
    assert torch.equal(int8, twin_with_dequantized_weights(model).generate(ids, **greedy))  # ... and all it read
    with torch.no_grad():  # an in-place change of the weights: the int8 copy is remade from them
        for p in model.parameters():
            p.mul_(1.5)
    assert torch.equal(model.generate(ids, **greedy), twin_with_dequantized_weights(model).generate(ids, **greedy))
    with torch.no_grad():
        for p in model.parameters():
            p.div_(1.5)
    assert int8_decoding(model, enabled=False) == 15
    assert torch.equal(model.generate(ids, **greedy), fp32)


def test_training_and_full_forwards_keep_the_weights():
    torch.manual_seed(0)
    model = tessera.LlamaForCausalLM(CONFIG)
    ids = torch.randint(3, 300, (2, 6))
    with torch.no_grad():
        before = model(ids).logits
    int8_decoding(model)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)  # 12 rows: not a decoding step
    model(ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bad_int8_operands_are_refused_by_name():
    q, scale = _C.ops.quantize_int8_rows(torch.randn(4, 8))
    with pytest.raises(ValueError, match=r"scale must be fp32 \[4\]"):
        _C.ops.decode_linear_int8(torch.randn(1, 8), q, scale[:3])
    with pytest.raises(ValueError, match=r"q_weight must be a CPU int8"):
        _C.ops.decode_linear_int8(torch.randn(1, 8), q.float(), scale)
    with pytest.raises(ValueError, match=r"at most 8 CPU rows of 8"):
        _C.ops.decode_linear_int8(torch.randn(9, 8), q, scale)
    with pytest.raises(TypeError, match="needs a tessera model"):
        int8_decoding(torch.nn.Linear(2, 2))
