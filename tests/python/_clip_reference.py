"""Helpers shared by the CLIP tests: tiny configurations, the transformers reference models, and
input batches that respect CLIP's pooling rule (the text is pooled at its end-of-text token).

Every comparison in the suite is against transformers (or a plain formula); tessera is never
its own reference.
"""
from __future__ import annotations

import copy
import contextlib
from typing import Any, Dict, Optional, Tuple

import torch

import tessera


def tiny_config(text: Optional[Dict[str, Any]] = None, vision: Optional[Dict[str, Any]] = None,
                **top: Any) -> Dict[str, Any]:
    """A CLIPModel config in Hugging Face's layout, small enough for a CPU test."""
    text_config = dict(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                       num_attention_heads=2, max_position_embeddings=8, hidden_act="quick_gelu",
                       bos_token_id=62, eos_token_id=63, pad_token_id=0)
    vision_config = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                         image_size=16, patch_size=8, num_channels=3, hidden_act="quick_gelu")
    text_config.update(text or {})
    vision_config.update(vision or {})
    config = dict(model_type="clip", architectures=["CLIPModel"], projection_dim=8,
                  text_config=text_config, vision_config=vision_config)
    config.update(top)
    return copy.deepcopy(config)


def hf_clip(config: Dict[str, Any], attn: str = "eager", seed: int = 0):
    """transformers' CLIPModel for `config`, randomly initialised by transformers itself."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel._from_config(CLIPConfig(**copy.deepcopy(config)), attn_implementation=attn)
    return model.eval()


def through_disk(hf_model, folder) -> "tessera.models.PreTrainedModel":
    """Saves a transformers model with save_pretrained and loads it with tessera.from_pretrained."""
    hf_model.save_pretrained(str(folder))
    return tessera.from_pretrained(str(folder))


def text_batch(text_config: Dict[str, Any], batch: int, seq_len: int, *, pad: str = "right",
               generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask with one end-of-text token per row and varied lengths.

    With the legacy eos_token_id == 2, transformers pools at the largest id of each row (the
    end-of-text token of CLIP's vocabulary), so that position gets vocab_size - 1 and every
    other token stays below it. Otherwise it pools at the first eos_token_id, so ordinary tokens
    avoid that id; padding uses pad_token_id (which may equal eos_token_id: the first one wins).
    """
    g = generator or torch.Generator().manual_seed(1234)
    vocab = text_config["vocab_size"]
    eos = text_config.get("eos_token_id", 2)
    pad_id = text_config.get("pad_token_id", 1)
    end_token = vocab - 1 if eos == 2 else eos
    reserved = {end_token, eos, pad_id}
    ids = torch.randint(3, vocab - 1, (batch, seq_len), generator=g)
    for r in reserved:
        ids[ids == r] = 3 if r != 3 else 4
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    for row in range(batch):
        length = seq_len - (row % 3) * max(1, seq_len // 4)  # full, shorter, shortest
        length = max(2, length)
        if pad == "right":
            ids[row, length - 1] = end_token
            ids[row, length:] = pad_id
            mask[row, length:] = 0
        else:  # left padding: the text sits at the end of the row
            ids[row, :seq_len - length] = pad_id
            ids[row, -1] = end_token
            mask[row, :seq_len - length] = 0
    return ids, mask


def pixel_batch(vision_config: Dict[str, Any], batch: int, size: Optional[Tuple[int, int]] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    g = generator or torch.Generator().manual_seed(4321)
    h, w = size or (vision_config["image_size"], vision_config["image_size"])
    return torch.randn(batch, vision_config.get("num_channels", 3), h, w, generator=g)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != reference shape {tuple(b.shape)}"
    return (a.detach().double() - b.detach().double()).abs().max().item() if a.numel() else 0.0


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str = "") -> None:
    """max |actual - expected| <= atol, with a message naming the tensor and the difference."""
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    diff = max_abs_diff(actual, expected)
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol:g}"


def assert_grads_match(model, reference, rel: float = 1e-4) -> None:
    """Every parameter of `model` has a gradient equal to the reference's parameter of the same
    state_dict name: max |g - g_ref| <= rel * max(1, max |g_ref|)."""
    ref = dict(reference.named_parameters())
    names = [n for n, _ in model.named_parameters()]
    assert set(names) == set(ref), set(names) ^ set(ref)
    for name, p in model.named_parameters():
        g_ref = ref[name].grad
        assert g_ref is not None, f"reference has no gradient for {name}"
        assert p.grad is not None, f"no gradient for {name}"
        scale = max(1.0, g_ref.abs().max().item())
        assert_close(p.grad, g_ref, rel * scale, f"grad of {name}")


@contextlib.contextmanager
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two spinning
    OpenMP threads made a 20-step training loop ~200x slower (0.07 s vs 18 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
