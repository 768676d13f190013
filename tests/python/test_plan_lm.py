"""`tessera plan` for causal_lm and llava: parameter names and sizes (and which train, under
freezing and LoRA) equal the built model's, the LLaMA activation constants equal what autograd
saves, and the planned peak agrees with the measured peak RSS of real runs within 20 % on the
demo recipes and two other shapes (docs/memory.md has the figures)."""
import os
import pathlib

import pytest
import torch

from _plan_measure import assert_plan_within_20_percent
from _autograd_saved import saved_bytes
from tessera.models.llama import LlamaForCausalLM
from tessera.models.llava import LlavaForConditionalGeneration
from tessera.plan import Settings, plan_memory
from tessera.plan.lm import causal_lm_shape, llava_shape
from tessera.models.projectors import projector_hooks
from tessera.plan.params import add_lora, clip_vision_params, llama_params, trainable
from tessera.train.freeze import apply_freezing
from tessera.train.llava_task import LM_LINEARS, LoraSection

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEXT = dict(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128)
VISION = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2, image_size=28,
              patch_size=7, num_channels=3)


def _llava_config(**extra):
    return LlavaForConditionalGeneration.resolve_config(dict(model_type="llava", text_config=dict(TEXT),
                                                             vision_config=dict(VISION), image_token_index=3,
                                                             **extra))


def _llava_params(c, lora):
    params, lin = clip_vision_params(c["vision_config"], "vision_tower.")
    projector = projector_hooks(c.get("projector_type", "mlp2x_gelu"), "test").plan_params
    for p, ln in (projector(c, "multi_modal_projector."),
                  llama_params(c["text_config"], "language_model.")):
        params, lin = params + p, lin + ln
    return add_lora(params, lin, lora.target_modules, lora.r)[0] if lora.r else params


RESAMPLER = {"projector_type": "resampler", "projector_num_queries": 5}


@pytest.mark.parametrize("text, lora, freeze, keep, projector", [
    ({}, LoraSection(), [], ["^multi_modal_projector\\."], {}),
    ({"attention_bias": True, "tie_word_embeddings": True}, LoraSection(), ["^vision_tower\\."], [], {}),
    ({"mlp_bias": True, "head_dim": 32}, LoraSection(r=4, modules_to_save=["multi_modal_projector"]), [], [], {}),
    ({}, LoraSection(r=2, target_modules=r".*\.(q_proj|v_proj|fc1)"), ["lm_head"], [], {}),
    ({}, LoraSection(), ["^vision_tower\\."], [], RESAMPLER),
    ({}, LoraSection(r=2, target_modules=r".*\.(q_proj|k_proj)"), [], [],
     {**RESAMPLER, "multimodal_projector_bias": False}),
])
def test_llava_parameters_and_trainable_are_exact(text, lora, freeze, keep, projector):
    c = _llava_config(**projector)
    c["text_config"].update(text)
    c = LlavaForConditionalGeneration.resolve_config(c)
    model = LlavaForConditionalGeneration(c)
    if lora.r:
        from tessera.lora import apply_lora

        apply_lora(model, lora.target_modules, lora.r, lora.alpha, modules_to_save=lora.modules_to_save)
    apply_freezing(model, freeze, keep)
    params = _llava_params(c, lora)
    assert dict(params) == {n: p.numel() for n, p in model.named_parameters()}
    assert trainable(params, freeze, keep, bool(lora.r), lora.modules_to_save) == {
        n: p.requires_grad for n, p in model.named_parameters()}
    shape = llava_shape(c, 40, 1, 8, freeze, keep, lora)
    assert shape.params() == sum(p.numel() for p in model.parameters())
    assert shape.trainable_params() == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_causal_lm_parameters_are_exact():
    model = LlamaForCausalLM(dict(TEXT))
    shape = causal_lm_shape(dict(TEXT), 32, 8, ["embed_tokens"], [])
    assert shape.params() == sum(p.numel() for p in model.parameters())
    assert shape.trainable_params() == shape.params() - TEXT["vocab_size"] * TEXT["hidden_size"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("setup", ["full", "stage1", "lora"])
def test_activations_equal_what_autograd_saves(setup, precision):
    """The LM alone (full training) and LLaVA with a frozen tower and LM (stage 1) or LoRA."""
    torch.manual_seed(0)
    B, L = 8, 40
    lora = LoraSection(r=8, modules_to_save=["multi_modal_projector"]) if setup == "lora" else LoraSection()
    keep = ["^multi_modal_projector\\."] if setup == "stage1" else []
    if setup == "full":
        model = LlamaForCausalLM(dict(TEXT)).train()
        shape = causal_lm_shape(dict(TEXT), L, B, [], [])
        ids = torch.randint(4, TEXT["vocab_size"], (B, L))
        run = lambda: model(input_ids=ids, labels=ids, attention_mask=torch.ones_like(ids))  # noqa: E731
    else:
        c = _llava_config()
        model = LlavaForConditionalGeneration(c).train()
        if lora.r:
            from tessera.lora import apply_lora

            apply_lora(model, LM_LINEARS, lora.r, modules_to_save=lora.modules_to_save)
        apply_freezing(model, [] if lora.r else ["^vision_tower\\."], keep)
        shape = llava_shape(c, L, 1, B, [] if lora.r else ["^vision_tower\\."], keep, lora)
        ids = torch.randint(4, TEXT["vocab_size"], (B, L))
        ids[:, :c["image_seq_length"]] = 3
        pixels = torch.randn(B, 3, 28, 28)
        run = lambda: model(input_ids=ids, pixel_values=pixels, labels=ids)  # noqa: E731
    saved = saved_bytes(model, run, precision == "bf16")
    planned = plan_memory(shape, Settings(precision=precision, batch_size=B)).activations
    print(f"\n{setup} {precision}: saved {saved / 2**20:.2f} MiB, planned {planned / 2**20:.2f} MiB")
    assert abs(planned - saved) <= 0.06 * saved


# The demo recipes and shapes the demo does not have: a 6-layer LM of width 256 with activation
# checkpointing, LLaVA with rank-16 LoRA in bf16 autocast, and LoRA under FSDP2 on 2 processes.
BIG_LM = ["model.config.hidden_size=256", "model.config.intermediate_size=704", "model.config.num_hidden_layers=6",
          "model.config.num_attention_heads=8", "data.batch_size=32", "model.gradient_checkpointing=true"]
MEASURED = {
    "lm demo": ("fashion_mnist_lm", []),
    "llava stage 1 demo": ("fashion_mnist_llava_stage1", []),
    "llava stage 2 demo": ("fashion_mnist_llava_stage2", []),
    "llava lora demo": ("fashion_mnist_llava_lora", []),
    "lm 6x256 checkpointed": ("fashion_mnist_lm", BIG_LM),
    "llava lora r16 bf16": ("fashion_mnist_llava_lora", ["lora.r=16", "train.precision=bf16"]),
    "llava lora fsdp2 x2": ("fashion_mnist_llava_lora", ["train.strategy=fsdp2", "data.batch_size=32"]),
    "llava stage 1 resampler": ("fashion_mnist_llava_stage1", ["model.config.projector_type=resampler",
                                                               "model.config.projector_num_queries=16"]),
}
needs_runs = pytest.mark.skipif(not all(os.path.isdir(ROOT / "runs" / r) for r in ("data/llava", "demo-lm",
                                                                                     "demo-llava1")),
                                reason="the LLaVA demo runs are missing (make llava-stages)")


@needs_runs
@pytest.mark.slow
@pytest.mark.parametrize("name", list(MEASURED))
def test_plan_agrees_with_measured_peak(name):
    recipe, overrides = MEASURED[name]
    if "train.precision=bf16" in overrides:
        from tessera.train.hardware import cpu_has_native_bf16

        if not cpu_has_native_bf16():
            pytest.skip("bf16 is emulated on this CPU")
    assert_plan_within_20_percent(name, ROOT / "recipes" / f"{recipe}.yaml", overrides,
                                  processes=2 if "train.strategy=fsdp2" in overrides else 1)
