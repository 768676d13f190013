"""tessera's own kernels (decoding kernels, the oneDNN linear) step aside for whatever cannot see
into them (csrc/tessera/ops/kernel_guard.h): PyTorch's FLOP counter counts a tessera LLaMA as it
counts transformers' (before, a one-token forward counted a tenth of its FLOPs: the decoding
kernels hid the linear layers), and a forward-mode tangent is never dropped."""
import tempfile

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import tessera
import tessera.ops


def flops(model, ids):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    return counter.get_total_flops()


@pytest.mark.parametrize("hidden, shape", [(32, (1, 1)), (32, (1, 4)), (256, (2, 96))])
def test_the_flop_counter_sees_every_product(hidden, shape):
    """(1, 1) and (1, 4): decoding kernels' sizes; (2, 96) at width 256: the oneDNN linear's."""
    transformers = pytest.importorskip("transformers")
    config = dict(vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        ours = tessera.from_pretrained(folder).eval()
    ids = torch.randint(0, 64, shape)
    expected = flops(reference, ids)
    # Equal to 0.1 % (the two count a few of the attention's small products differently).
    assert abs(flops(ours, ids) - expected) <= 1e-3 * expected


def test_kernels_refuse_a_forward_mode_tangent():
    import torch.autograd.forward_ad as fwAD

    x, w = torch.randn(4, 64), torch.randn(32, 64)
    assert tessera._C.ops.decode_linear_applies(x, w)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.randn(4, 64))
        assert not tessera._C.ops.decode_linear_applies(dual, w)
        assert not tessera.ops.onednn_linear.applies(fwAD.make_dual(torch.randn(256, 256), torch.randn(256, 256)),
                                                     torch.randn(256, 256))
