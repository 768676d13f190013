"""LLaVA against transformers' LlavaForConditionalGeneration: the shared fixture (logits, greedy
ids), random configurations side by side (feature layer int or list, default/full selection,
several images per sample; logits, loss, every gradient, generate), the in-memory layout of
transformers 5, and the errors for mismatched image tokens and unknown projectors."""
import pytest
import torch
from safetensors.torch import load_file, save_file

import tessera

transformers = pytest.importorskip("transformers")
IMAGE = 90


def test_fixture_parity(fixture_dir):
    d = fixture_dir("llava")
    io = load_file(str(d / "io.safetensors"))
    model = tessera.from_pretrained(str(d))
    assert isinstance(model, tessera.LlavaForConditionalGeneration)
    out = model(io["input_ids"], pixel_values=io["pixel_values"])
    torch.testing.assert_close(out.logits, io["logits"], atol=1e-4, rtol=0)
    assert torch.equal(model.generate(io["input_ids"], pixel_values=io["pixel_values"], max_new_tokens=6), io["greedy"])


def _config(**extra):
    text = dict(vocab_size=100, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
    vision = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2, image_size=16,
                  patch_size=8, hidden_act="quick_gelu")
    return dict(text_config=text, vision_config=vision, image_token_index=IMAGE, **extra)


def _prompt(images, tokens_per_image, text=5, batch=2):
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(batch):
        parts = [torch.randint(3, 80, (2,), generator=g)]
        for _ in range(images):
            parts += [torch.full((tokens_per_image,), IMAGE), torch.randint(3, 80, (text,), generator=g)]
        rows.append(torch.cat(parts))
    return torch.stack(rows)


CASES = [
    dict(extra={}, images=1, tokens=4),
    dict(extra=dict(vision_feature_layer=[-3, -1], vision_feature_select_strategy="full"), images=1, tokens=5),
    dict(extra=dict(vision_feature_layer=2), images=2, tokens=4),
]


@pytest.mark.parametrize("case", CASES)
def test_side_by_side_with_transformers(case, tmp_path):
    torch.manual_seed(0)
    hf = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(**_config(**case["extra"])))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hf.save_pretrained(tmp_path)
    ours = tessera.from_pretrained(str(tmp_path))
    ids = _prompt(case["images"], case["tokens"])
    px = torch.randn(2 * case["images"], 3, 16, 16)
    labels = ids.masked_fill(ids == IMAGE, -100)
    a = hf(input_ids=ids, pixel_values=px, labels=labels)
    b = ours(ids, pixel_values=px, labels=labels)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-6, rtol=1e-5)
    a.loss.backward()
    b.loss.backward()
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert set(dict(ours.named_parameters())) == set(saved)
    hf_grads = {name: p.grad for name, p in hf.named_parameters()}
    for name, p in ours.named_parameters():  # match by value: transformers 5 renames in memory
        matches = [n for n, q in hf.named_parameters() if q.shape == p.shape and torch.equal(q.detach(), p.detach())]
        assert matches, name
        torch.testing.assert_close(p.grad, hf_grads[matches[0]], atol=1e-6, rtol=1e-4, msg=name)
    hf.eval()
    want = hf.generate(input_ids=ids[:1], pixel_values=px[:case["images"]], max_new_tokens=6, do_sample=False,
                       attention_mask=torch.ones_like(ids[:1]), pad_token_id=2)
    assert torch.equal(ours.generate(ids[:1], pixel_values=px[:case["images"]], max_new_tokens=6), want)


def test_in_memory_layout_of_transformers_5_loads(fixture_dir, tmp_path):
    d = fixture_dir("llava")
    io = load_file(str(d / "io.safetensors"))
    state = load_file(str(d / "model.safetensors"))
    renamed = {}
    for k, v in state.items():
        k = k.replace("language_model.model.", "model.language_model.").replace("language_model.lm_head.", "lm_head.")
        k = k.replace("vision_tower.", "model.vision_tower.", 1) if k.startswith("vision_tower.") else k
        k = k.replace("multi_modal_projector.", "model.multi_modal_projector.", 1) if k.startswith("multi_") else k
        renamed[k] = v
    save_file(renamed, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    model = tessera.from_pretrained(str(tmp_path))
    torch.testing.assert_close(model(io["input_ids"], pixel_values=io["pixel_values"]).logits, io["logits"],
                               atol=1e-4, rtol=0)


def test_image_tokens_and_images_must_agree():
    model = tessera.LlavaForConditionalGeneration(_config())
    ids = _prompt(1, 4, batch=1)
    with pytest.raises(ValueError, match="1 image\\(s\\) of 4 tokens need 4 image tokens .* found 3"):
        model(torch.cat([ids[:, :2], ids[:, 3:]], 1), pixel_values=torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="hold 4 image tokens .* but no pixel_values"):
        model(ids)
    with pytest.raises(ValueError, match="need 8 image tokens"):
        model(ids, pixel_values=torch.randn(2, 3, 16, 16))


def test_projectors_are_chosen_by_name():
    assert {"linear", "mlp2x_gelu"} <= set(tessera.models.llava.list_projectors())
    model = tessera.LlavaForConditionalGeneration(_config(projector_type="linear"))
    assert sorted(n for n, _ in model.named_parameters() if n.startswith("multi_modal")) == [
        "multi_modal_projector.linear_1.bias", "multi_modal_projector.linear_1.weight"]
    with pytest.raises(ValueError, match="unknown projector_type 'perceiver' \\(registered: .*linear"):
        tessera.LlavaForConditionalGeneration(_config(projector_type="perceiver"))
    with pytest.raises(ValueError, match="vision_feature_layer 7 is not a layer output"):
        tessera.LlavaForConditionalGeneration(_config(vision_feature_layer=7))


def _resampler_reference(p, feats, heads):
    """The resampler in plain PyTorch from its parameters: learned queries cross-attend once."""
    F = torch.nn.functional
    d = p["query"].shape[1]
    ln = lambda x, n: F.layer_norm(x, (d,), p[f"{n}.weight"], p[f"{n}.bias"])  # noqa: E731
    lin = lambda x, n: F.linear(x, p[f"{n}.weight"], p.get(f"{n}.bias"))  # noqa: E731
    kv = ln(lin(feats, "kv_proj"), "ln_kv")
    q = ln(p["query"], "ln_q").expand(len(feats), -1, -1)
    split = lambda x: x.view(x.shape[0], x.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
    w = torch.softmax(split(lin(q, "q_proj")) @ split(lin(kv, "k_proj")).transpose(-1, -2) / (d // heads) ** 0.5, -1)
    a = (w @ split(lin(kv, "v_proj"))).transpose(1, 2).reshape(len(feats), q.shape[1], d)
    return lin(ln(lin(a, "out_proj"), "ln_post"), "proj")


def test_resampler_projector_equals_its_formula_and_sets_the_image_tokens(tmp_path):
    torch.manual_seed(0)
    config = _config(projector_type="resampler", projector_num_queries=3, vision_feature_layer=-1)
    model = tessera.LlavaForConditionalGeneration(config)
    assert model.config["image_seq_length"] == 3 and "resampler" in tessera.models.llava.list_projectors()
    p = {k.removeprefix("multi_modal_projector."): v for k, v in model.state_dict().items() if "projector" in k}
    with torch.no_grad():  # non-trivial norms
        for k, v in p.items():
            if k.startswith("ln_"):
                v.add_(torch.randn_like(v) * 0.3)
    px = torch.randn(2, 3, 16, 16)
    tower = tessera.CLIPVisionModel(config["vision_config"])
    tower.load_state_dict({"vision_model." + k.removeprefix("vision_tower."): v
                           for k, v in model.state_dict().items() if k.startswith("vision_tower.")})
    feats = tower(pixel_values=px, output_hidden_states=True).hidden_states[-1][:, 1:]
    ids = _prompt(1, 3)
    embeds = model._cpp.embed(ids, px)
    got = embeds[ids == IMAGE].view(2, 3, -1)
    torch.testing.assert_close(got, _resampler_reference(p, feats, heads=4), atol=1e-5, rtol=1e-5)
    # Trains end to end, and the config survives a save (the queries set the token count).
    model(ids, pixel_values=px, labels=ids).loss.backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for k, v in model.named_parameters() if "projector" in k)
    model.save_pretrained(str(tmp_path))
    again = tessera.from_pretrained(str(tmp_path))
    assert again.config["projector_num_queries"] == 3
    torch.testing.assert_close(again(ids, pixel_values=px).logits, model(ids, pixel_values=px).logits)
    with pytest.raises(ValueError, match="found 8"):  # 4 tokens per image in the prompt, 3 expected
        model(_prompt(1, 4), pixel_values=px)
    with pytest.raises(ValueError, match="'resampler' needs projector_num_queries > 0"):
        tessera.LlavaForConditionalGeneration(_config(projector_type="resampler"))
    with pytest.raises(ValueError, match="projector_num_queries is for projectors that resample"):
        tessera.LlavaForConditionalGeneration(_config(projector_num_queries=3))


@pytest.mark.parametrize("top, text", [(True, False), (False, True), (False, False)])
def test_either_tie_flag_ties_the_head_as_transformers(tmp_path, top, text):
    """LlavaConfig ties the LM head when its own tie_word_embeddings or text_config's is true; the
    top-level flag was read by nobody, so such a checkpoint (no lm_head) failed to load."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlavaConfig(
        text_config=dict(vocab_size=100, hidden_size=32, intermediate_size=40, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=64, tie_word_embeddings=text),
        vision_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                           image_size=16, patch_size=8),
        image_token_index=99, tie_word_embeddings=top)
    torch.manual_seed(0)
    hf = transformers.LlavaForConditionalGeneration(config).eval()
    hf.save_pretrained(tmp_path)
    ours = tessera.LlavaForConditionalGeneration.from_pretrained(str(tmp_path))
    assert ours.config["text_config"]["tie_word_embeddings"] == (top or text)
    ids, px = torch.tensor([[5] + [99] * 4 + [6, 7]]), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids, pixel_values=px).logits,
                                   hf(input_ids=ids, pixel_values=px).logits, atol=1e-5, rtol=0)
