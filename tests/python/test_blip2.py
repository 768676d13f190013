"""BLIP-2 against transformers: the shared fixtures (Q-Former with and without text input, the
generation model with its greedy ids, the retrieval model's ITC and ITM logits), random
configurations side by side (cross-attention frequency 1-3, text input on/off, padding; forward
and every gradient), towers loaded from their parent's folder, save/load both ways, bad input."""
import pytest
import torch
from safetensors.torch import load_file

import tessera

transformers = pytest.importorskip("transformers")


def _io(d):
    return load_file(str(d / "io.safetensors"))


@pytest.mark.parametrize("name", ["qformer", "qformer_text"])
def test_qformer_fixture_parity(fixture_dir, name):
    d = fixture_dir(name)
    io = _io(d)
    model = tessera.from_pretrained(str(d))
    assert isinstance(model, tessera.Blip2QFormerModel)
    out = model(io["query_embeds"], encoder_hidden_states=io["encoder_hidden_states"])
    torch.testing.assert_close(out.last_hidden_state, io["last_hidden_state"], atol=1e-4, rtol=0)


def test_generation_fixture_parity(fixture_dir):
    d = fixture_dir("blip2")
    io = _io(d)
    model = tessera.from_pretrained(str(d))
    assert isinstance(model, tessera.Blip2ForConditionalGeneration)
    out = model(io["pixel_values"], io["input_ids"])
    torch.testing.assert_close(out.logits, io["logits"], atol=1e-4, rtol=0)
    ids = model.generate(io["pixel_values"], io["input_ids"], max_new_tokens=6)
    assert torch.equal(ids, io["greedy"])


def test_retrieval_fixture_parity(fixture_dir):
    d = fixture_dir("blip2_itr")
    io = _io(d)
    model = tessera.from_pretrained(str(d))
    assert isinstance(model, tessera.Blip2ForImageTextRetrieval)
    itc = model(io["pixel_values"], io["input_ids"], io["attention_mask"])
    torch.testing.assert_close(itc.logits_per_image, io["logits_per_image"], atol=1e-4, rtol=0)
    itm = model(io["pixel_values"], io["input_ids"], io["attention_mask"], use_image_text_matching_head=True)
    torch.testing.assert_close(itm.logits_per_image, io["itm_logits"], atol=1e-4, rtol=0)
    # int32 ids, as transformers' (and tessera's CLIP) take them: refused before
    itm32 = model(io["pixel_values"], io["input_ids"].int(), io["attention_mask"], use_image_text_matching_head=True)
    torch.testing.assert_close(itm32.logits_per_image, itm.logits_per_image, atol=0, rtol=0)


@pytest.mark.parametrize("family", ["blip2_itr", "llava"])
def test_image_token_id_is_read_as_image_token_index_as_transformers_does(fixture_dir, tmp_path, family):
    """LlavaConfig's and Blip2Config's attribute_map: `image_token_id` is image_token_index. tessera
    read only the latter: BLIP-2 retrieval then kept the query placeholders as text (ITC off by
    0.36, silently), LLaVA looked for id 32000."""
    import json
    import shutil

    d = fixture_dir(family)
    config = json.loads((d / "config.json").read_text())
    config.pop("image_token_index", None)
    config["image_token_id"] = token = 45
    shutil.copy(d / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config))
    ours = tessera.from_pretrained(str(tmp_path))
    assert ours.config["image_token_index"] == token and "image_token_id" not in ours.config
    hf = getattr(transformers, config["architectures"][0]).from_pretrained(str(tmp_path)).eval()
    assert hf.config.image_token_index == token
    vision = config["vision_config"]
    image_tokens = config["num_query_tokens"] if family == "blip2_itr" else \
        (vision["image_size"] // vision["patch_size"]) ** 2
    px = torch.randn(2, 3, vision["image_size"], vision["image_size"])
    ids = torch.tensor([[token] * image_tokens + [5, 6, 7]] * 2)
    with torch.no_grad():
        if family == "llava":
            torch.testing.assert_close(ours(ids, px).logits, hf(input_ids=ids, pixel_values=px).logits,
                                       atol=1e-4, rtol=0)
        else:
            mask = torch.ones_like(ids)
            for itm in (False, True):
                torch.testing.assert_close(ours(px, ids, mask, use_image_text_matching_head=itm).logits_per_image,
                                           hf(pixel_values=px, input_ids=ids, attention_mask=mask,
                                              use_image_text_matching_head=itm).logits_per_image, atol=1e-4, rtol=0)
    for key in ("image_token_id", "image_token_index"):  # an override under either name wins, as in transformers
        over = type(ours).from_pretrained(str(tmp_path), config_overrides={key: token + 2})
        assert over.config["image_token_index"] == token + 2 and "image_token_id" not in over.config
    config["image_token_index"] = token + 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="image_token_id 45 and image_token_index 46 differ"):
        tessera.from_pretrained(str(tmp_path))


QFORMER = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
               encoder_hidden_size=24, vocab_size=50, max_position_embeddings=16,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
VISION = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4, image_size=16,
              patch_size=4, initializer_range=0.02)
TEXT = dict(hidden_size=32, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=60, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)


def _perturbed(hf):
    with torch.no_grad():  # transformers zero-fills the queries and biases: make every value matter
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return hf


def _compare_grads(ours, hf):
    theirs = dict(hf.named_parameters())
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(theirs)
    for name, p in ours.named_parameters():
        q = theirs[name]
        if q.grad is None:  # a head this mode does not read (ITC leaves itm_head alone)
            assert p.grad is None or not p.grad.any(), name
            continue
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("frequency,text,tokens", [(1, True, 7), (2, False, 7), (3, True, 7), (2, True, 7),
                                                   (1, False, 40)])
def test_qformer_side_by_side(frequency, text, tokens, tmp_path):
    config = transformers.Blip2QFormerConfig(**QFORMER, cross_attention_frequency=frequency,
                                             use_qformer_text_input=text)
    hf = _perturbed(transformers.Blip2QFormerModel(config)).train()
    hf.save_pretrained(tmp_path)
    ours = tessera.from_pretrained(str(tmp_path)).train()
    B, Q, T = 3, 5, 4 if text else 0
    x = torch.randn(B, Q + T, 32)
    image = torch.randn(B, tokens, 24, requires_grad=True)
    image_ours = image.detach().clone().requires_grad_()
    mask = torch.ones(B, Q + T, dtype=torch.long)
    if text:
        mask[1, -2:] = 0  # a padded text
    image_mask = None  # transformers 5.17 expands it to queries + text and fails: only without text
    if not text:
        image_mask = torch.ones(B, tokens, dtype=torch.long)
        image_mask[2, -3:] = 0  # padded image tokens
    a = hf(query_embeds=x, query_length=Q, attention_mask=mask, encoder_hidden_states=image,
           encoder_attention_mask=image_mask)
    b = ours(x, query_length=Q, attention_mask=mask, encoder_hidden_states=image_ours,
             encoder_attention_mask=image_mask)
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=1e-5, rtol=1e-4)
    weights = torch.randn_like(a.last_hidden_state)
    (a.last_hidden_state * weights).sum().backward()
    (b.last_hidden_state * weights).sum().backward()
    _compare_grads(ours, hf)
    torch.testing.assert_close(image_ours.grad, image.grad, atol=1e-5, rtol=1e-4)


def test_qformer_runs_in_its_own_dtype_as_transformers(tmp_path):
    """fp64 or bf16 inputs to an fp32 Q-Former failed inside ATen ("mixed dtype"); transformers
    casts them to its layernorm's dtype and answers in fp32."""
    hf = _perturbed(transformers.Blip2QFormerModel(transformers.Blip2QFormerConfig(**QFORMER))).eval()
    hf.save_pretrained(tmp_path)
    ours = tessera.from_pretrained(str(tmp_path))
    x, image = torch.randn(2, 5, 32), torch.randn(2, 7, 24)
    for dtype in (torch.float64, torch.bfloat16):
        a = hf(query_embeds=x.to(dtype), encoder_hidden_states=image.to(dtype)).last_hidden_state
        b = ours(x.to(dtype), encoder_hidden_states=image.to(dtype)).last_hidden_state
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_qformer_text_only_pass_matches(tmp_path):
    """ITC's text pass: no queries, no image (query_length 0)."""
    config = transformers.Blip2QFormerConfig(**QFORMER, use_qformer_text_input=True)
    hf = _perturbed(transformers.Blip2QFormerModel(config)).eval()
    hf.save_pretrained(tmp_path)
    ours = tessera.from_pretrained(str(tmp_path))
    x, mask = torch.randn(2, 6, 32), torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    a = hf(query_embeds=x, query_length=0, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours(x, query_length=0, attention_mask=mask).last_hidden_state, a, atol=1e-5, rtol=1e-4)


def _blip2_config(**extra):
    return transformers.Blip2Config(vision_config=VISION, qformer_config={**QFORMER, **extra.pop("qformer", {})},
                                    text_config={**TEXT, "model_type": "llama"}, num_query_tokens=4, **extra)


def test_generation_side_by_side(tmp_path):
    hf = _perturbed(transformers.Blip2ForConditionalGeneration(_blip2_config(image_token_index=59))).train()
    hf.save_pretrained(tmp_path)
    ours = tessera.from_pretrained(str(tmp_path)).train()
    assert isinstance(ours, tessera.Blip2ForConditionalGeneration)
    px = torch.randn(2, 3, 16, 16)
    ids = torch.cat([torch.full((2, 4), 59), torch.randint(3, 50, (2, 5))], 1)
    mask = torch.ones_like(ids)
    mask[0, -1] = 0
    labels = ids.masked_fill(ids == 59, -100)
    a = hf(pixel_values=px, input_ids=ids, attention_mask=mask, labels=labels)
    b = ours(px, ids, attention_mask=mask, labels=labels)  # transformers' order
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-6, rtol=1e-5)
    a.loss.backward()
    b.loss.backward()
    _compare_grads(ours, hf)
    hf.eval(), ours.eval()
    prompt = ids[:1, :6]
    want = hf.generate(pixel_values=px[:1], input_ids=prompt, max_new_tokens=5, do_sample=False)
    assert torch.equal(ours.generate(px[:1], prompt, max_new_tokens=5), want)
    # A caption without a prompt: transformers builds the image tokens and bos itself.
    want = hf.generate(pixel_values=px, max_new_tokens=4, do_sample=False)
    assert torch.equal(ours.generate(px, max_new_tokens=4), want)
    with pytest.raises(TypeError, match=r"takes \(pixel_values, input_ids\), transformers' order"):
        ours(ids, px)


@pytest.mark.parametrize("itm", [False, True])
def test_retrieval_side_by_side(itm, tmp_path):
    config = _blip2_config(qformer={"use_qformer_text_input": True, "cross_attention_frequency": 1},
                           image_text_hidden_size=16)
    hf = _perturbed(transformers.Blip2ForImageTextRetrieval(config)).train()
    hf.save_pretrained(tmp_path)
    ours = tessera.from_pretrained(str(tmp_path)).train()
    px = torch.randn(3, 3, 16, 16)
    ids = torch.randint(3, 50, (3, 6))
    mask = torch.ones_like(ids)
    mask[2, -3:] = 0
    a = hf(pixel_values=px, input_ids=ids, attention_mask=mask, use_image_text_matching_head=itm)
    b = ours(px, ids, mask, use_image_text_matching_head=itm)
    torch.testing.assert_close(b.logits_per_image, a.logits_per_image, atol=1e-5, rtol=1e-4)
    weights = torch.randn_like(a.logits_per_image)
    (a.logits_per_image * weights).sum().backward()
    (b.logits_per_image * weights).sum().backward()
    _compare_grads(ours, hf)


def test_vision_model_side_by_side_and_other_resolution(tmp_path):
    hf = _perturbed(transformers.Blip2VisionModel(transformers.Blip2VisionConfig(**VISION))).eval()
    hf.save_pretrained(tmp_path)
    ours = tessera.from_pretrained(str(tmp_path))
    assert isinstance(ours, tessera.Blip2VisionModel)
    px = torch.randn(2, 3, 16, 16)
    a, b = hf(px), ours(px)
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b.pooler_output, a.pooler_output, atol=1e-5, rtol=1e-4)
    big = torch.randn(1, 3, 24, 24)
    torch.testing.assert_close(ours(big, interpolate_pos_encoding=True).last_hidden_state,
                               hf(big, interpolate_pos_encoding=True).last_hidden_state, atol=1e-5, rtol=1e-4)
    last, picked = ours.forward_intermediates(px, indices=[-1])
    torch.testing.assert_close(last, b.last_hidden_state)
    assert picked[0].shape == last.shape


@pytest.mark.parametrize("cls", ["Blip2VisionModel", "Blip2QFormerModel"])
def test_parts_load_from_the_parent_folder(fixture_dir, cls):
    """As transformers' CLIPVisionModel from a CLIPModel folder; the reference is the part inside
    transformers' parent model (its Blip2QFormerModel.from_pretrained(parent) loads no weights)."""
    d = fixture_dir("blip2")
    ours = getattr(tessera, cls).from_pretrained(str(d))
    parent = transformers.Blip2ForConditionalGeneration.from_pretrained(str(d)).eval()
    if cls == "Blip2VisionModel":
        px = torch.randn(1, 3, 32, 32)
        want = parent.vision_model(px).last_hidden_state
        torch.testing.assert_close(ours(px).last_hidden_state, want, atol=1e-5, rtol=1e-4)
    else:
        q, image = torch.randn(2, 8, 64), torch.randn(2, 17, 48)
        want = parent.qformer(query_embeds=q, encoder_hidden_states=image).last_hidden_state
        torch.testing.assert_close(ours(q, encoder_hidden_states=image).last_hidden_state, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name,cls", [("blip2", "Blip2ForConditionalGeneration"),
                                      ("blip2_itr", "Blip2ForImageTextRetrieval")])
def test_saved_model_loads_in_transformers(fixture_dir, tmp_path, name, cls):
    d = fixture_dir(name)
    ours = tessera.from_pretrained(str(d))
    ours.save_pretrained(str(tmp_path))
    assert set(load_file(str(tmp_path / "model.safetensors"))) == set(load_file(str(d / "model.safetensors")))
    hf = getattr(transformers, cls).from_pretrained(str(tmp_path)).eval()
    io = _io(d)
    if name == "blip2":
        torch.testing.assert_close(hf(pixel_values=io["pixel_values"], input_ids=io["input_ids"]).logits,
                                   io["logits"], atol=1e-4, rtol=0)
    else:
        out = hf(pixel_values=io["pixel_values"], input_ids=io["input_ids"], attention_mask=io["attention_mask"])
        torch.testing.assert_close(out.logits_per_image, io["logits_per_image"], atol=1e-4, rtol=0)


def test_bad_input_is_refused_by_name(fixture_dir):
    qformer = tessera.from_pretrained(str(fixture_dir("qformer")))
    with pytest.raises(ValueError, match="encoder_hidden_size=48"):
        qformer(torch.randn(1, 8, 64), encoder_hidden_states=torch.randn(1, 17, 40))
    with pytest.raises(ValueError, match="no text input"):
        qformer(torch.randn(1, 10, 64), query_length=8, encoder_hidden_states=torch.randn(1, 17, 48))
    with pytest.raises(ValueError, match="query_length 9 exceeds"):
        qformer(torch.randn(1, 8, 64), query_length=9, encoder_hidden_states=torch.randn(1, 17, 48))
    with pytest.raises(ValueError, match="cross-attend"):
        qformer(torch.randn(1, 8, 64))
    for bad in (-2, -4):  # read as "all queries" before
        with pytest.raises(ValueError, match=f"query_length must be -1 .* got {bad}"):
            qformer(torch.randn(1, 8, 64), query_length=bad, encoder_hidden_states=torch.randn(1, 17, 48))
    with pytest.raises(ValueError, match=r"tokens >= 1"):  # an IndexError from select() before
        qformer(torch.randn(1, 0, 64), encoder_hidden_states=torch.randn(1, 17, 48))
    with pytest.raises(ValueError, match="no image token"):  # the queries attended to nothing
        qformer(torch.randn(2, 8, 64), encoder_hidden_states=torch.randn(2, 0, 48))
    blip2 = tessera.from_pretrained(str(fixture_dir("blip2")))
    px = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="input_ids are required"):  # the binding's signature before
        blip2(px, None)
    itr_out = tessera.from_pretrained(str(fixture_dir("blip2_itr")))(px, torch.tensor([[5, 6, 7]]))
    with pytest.raises(AttributeError, match="no field 'vision_model_output'"):  # read as None before
        itr_out.vision_model_output
    with pytest.raises(ValueError, match="need 8 image tokens .* found 7"):
        blip2(px, torch.tensor([[990] * 7 + [5, 6]]))
    with pytest.raises(ValueError, match="found 16"):
        blip2(px, torch.tensor([[990] * 16 + [5]]))  # more queries than the model has
    itr = tessera.from_pretrained(str(fixture_dir("blip2_itr")))
    with pytest.raises(ValueError, match=r"input_ids must be int64 or int32 \[B, T >= 1\]"):
        itr(px, torch.zeros(1, 0, dtype=torch.long), use_image_text_matching_head=False)
    with pytest.raises(ValueError, match="use_qformer_text_input"):
        tessera.Blip2ForImageTextRetrieval({"qformer_config": {"use_qformer_text_input": False, "hidden_size": 32,
                                                               "num_attention_heads": 4, "num_hidden_layers": 1,
                                                               "intermediate_size": 8},
                                            "vision_config": VISION})


def test_generation_at_another_resolution_equals_transformers(fixture_dir):
    """generate()/stream() refused interpolate_pos_encoding, which forward and transformers' generate
    take (and generate's own size error advised it)."""
    d = str(fixture_dir("blip2"))
    ours, theirs = tessera.from_pretrained(d).eval(), transformers.Blip2ForConditionalGeneration.from_pretrained(d).eval()
    torch.manual_seed(0)
    px = torch.randn(2, 3, 48, 48)  # the model's image_size is 32
    ids = torch.cat([torch.full((2, 8), 990), torch.randint(3, 900, (2, 4))], 1)
    want = theirs.generate(pixel_values=px, input_ids=ids, max_new_tokens=4, interpolate_pos_encoding=True)
    got = ours.generate(px, ids, max_new_tokens=4, interpolate_pos_encoding=True)
    assert torch.equal(got[:, -4:], want[:, -4:])
    streamed = torch.stack(list(ours.stream(px, ids, max_new_tokens=4, interpolate_pos_encoding=True)), 1)
    assert torch.equal(streamed, got[:, -4:])


def test_the_folders_generation_config_is_not_read_as_in_transformers(fixture_dir, tmp_path):
    """transformers' BLIP-2 generates through its language model, whose defaults come from
    text_config: the folder's generation_config.json is not read. tessera read it, and a stop id or
    a length there gave other captions than transformers'; now it is said and left."""
    import json
    import shutil

    for name in ("config.json", "model.safetensors"):
        shutil.copy(fixture_dir("blip2") / name, tmp_path / name)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, "bos_token_id": 1}))
    tessera.from_pretrained(str(tmp_path))  # ids equal to text_config's: nothing to say
    (tmp_path / "generation_config.json").write_text(json.dumps({"max_new_tokens": 3, "repetition_penalty": 1.5}))
    with pytest.warns(UserWarning, match=r"max_new_tokens=3, repetition_penalty=1.5 not applied: .*does not read"):
        ours = tessera.from_pretrained(str(tmp_path))
    theirs = transformers.Blip2ForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    want = theirs.generate(pixel_values=px)
    assert want.shape[1] > 3 + 9 and torch.equal(ours.generate(px), want)
    # Nor does its language model take text_config's legacy generation keys (its config class drops them).
    import json as _json
    config = _json.loads((tmp_path / "config.json").read_text())
    config["text_config"].update(max_length=20, repetition_penalty=1.5)
    (tmp_path / "config.json").write_text(_json.dumps(config))
    (tmp_path / "generation_config.json").unlink()
    ours = tessera.from_pretrained(str(tmp_path))
    theirs = transformers.Blip2ForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    assert torch.equal(ours.generate(px), theirs.generate(pixel_values=px))
    # transformers' generate ignores the model's generation_config too: setting one is refused, not ignored.
    with pytest.raises(ValueError, match="transformers' generate does not read it .* pass the settings to generate"):
        ours.generation_config.max_new_tokens = 3


def test_generation_outputs_hold_each_part_as_transformers(tmp_path):
    """forward returned the LM's output only: a transformers user reading `out.vision_outputs` or
    `out.qformer_outputs`, unpacking `return_dict=False`, or scoring labels for the prompt's last
    T positions got an AttributeError, another tuple or a shape error."""
    hf = _perturbed(transformers.Blip2ForConditionalGeneration(_blip2_config(image_token_index=59))).eval()
    hf.save_pretrained(tmp_path)
    ours = tessera.from_pretrained(str(tmp_path)).eval()
    px = torch.randn(2, 3, 16, 16)
    ids = torch.cat([torch.full((2, 4), 59), torch.randint(3, 50, (2, 5))], 1)
    a = hf(pixel_values=px, input_ids=ids, output_hidden_states=True)
    b = ours(px, ids, output_hidden_states=True)
    assert type(b).__name__ == type(a).__name__ == "Blip2ForConditionalGenerationModelOutput"
    close = dict(atol=1e-5, rtol=1e-4)
    for part in ("vision_outputs", "qformer_outputs"):
        for field in ("last_hidden_state", "pooler_output"):
            torch.testing.assert_close(b[part][field], a[part][field], **close, msg=f"{part}.{field}")
    for part in ("vision_outputs", "qformer_outputs"):  # output_hidden_states is the LM's alone
        assert a[part].hidden_states is None and b[part].hidden_states is None
    for x, y in zip(b.language_model_outputs.hidden_states, a.language_model_outputs.hidden_states, strict=True):
        torch.testing.assert_close(x, y, **close)
    torch.testing.assert_close(b.language_model_outputs.logits, a.language_model_outputs.logits, **close)
    # return_dict=False: the parts become tuples in transformers' order (the LM part holds no cache).
    t_ours, t_hf = ours(px, ids, return_dict=False), hf(pixel_values=px, input_ids=ids, return_dict=False)
    torch.testing.assert_close(t_ours[0], t_hf[0], **close)
    for got, want in zip(t_ours[1:3], t_hf[1:3], strict=True):
        assert len(got) == len(want) == 2
        for x, y in zip(got, want):
            torch.testing.assert_close(x, y, **close)
    # labels for the last T positions: transformers scores those and returns their logits (its
    # fp32 loss then fails on the sliced logits' view, so the loss is checked by its formula).
    labels = torch.randint(3, 50, (2, 3))
    labels[0, 1] = -100
    want = hf(pixel_values=px, input_ids=ids).logits[:, -3:]
    b = ours(px, ids, labels=labels)
    assert b.logits.shape == (2, 3, 60)
    torch.testing.assert_close(b.logits, want, **close)
    loss = torch.nn.functional.cross_entropy(want[:, :-1].reshape(-1, 60), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(b.loss, loss, atol=1e-6, rtol=1e-5)
    assert int(b.num_tokens) == 3  # positions 0..1 predict labels 1..2, one of them ignored
    for width in (10, 0):  # 0 gave a NaN loss; transformers refuses it too
        with pytest.raises(ValueError, match=r"labels must be \[batch, T\] with 1 <= T <= the prompt's 9 tokens"):
            ours(px, ids, labels=torch.zeros(2, width, dtype=torch.long))


def test_fp16_loading_keeps_the_qformer_in_fp32_as_transformers(tmp_path):
    """transformers loads BLIP-2 in fp16 (its model cards' way) with the Q-Former and queries kept in
    fp32 (_keep_in_fp32_modules); tessera cast them to fp16 too, so its numbers parted."""
    config = _blip2_config(image_token_index=59, qformer={"use_qformer_text_input": True},
                           image_text_hidden_size=16)
    px = torch.randn(2, 3, 16, 16)
    ids = torch.cat([torch.full((2, 4), 59), torch.randint(3, 50, (2, 5))], 1)
    for cls, call in [(transformers.Blip2ForConditionalGeneration, lambda m: m(px.half(), ids).logits),
                      (transformers.Blip2ForImageTextRetrieval,
                       lambda m: torch.cat([m(px.half(), ids, torch.ones_like(ids),
                                              use_image_text_matching_head=itm).logits_per_image
                                            for itm in (False, True)], 1))]:
        folder = tmp_path / cls.__name__
        _perturbed(cls(config)).save_pretrained(folder)
        hf = cls.from_pretrained(folder, dtype=torch.float16).eval()
        ours = tessera.from_pretrained(str(folder), dtype=torch.float16)
        kinds = {k: v.dtype for k, v in ours.state_dict().items()}
        assert kinds == {k: v.dtype for k, v in hf.state_dict().items() if k in kinds}
        assert kinds["query_tokens"] == torch.float32 and kinds["vision_model.embeddings.class_embedding"] == torch.float16
        assert ours.dtype == hf.dtype  # the first parameter's, query_tokens: fp32 in both
        with torch.no_grad():
            a, b = call(hf).float(), call(ours).float()
        torch.testing.assert_close(b, a, atol=2e-3 * a.abs().max().item(), rtol=0, msg=cls.__name__)
        if cls is transformers.Blip2ForConditionalGeneration:
            want = hf.generate(pixel_values=px.half(), input_ids=ids, max_new_tokens=4, do_sample=False)
            assert torch.equal(ours.generate(px.half(), ids, max_new_tokens=4), want)
            ours.save_pretrained(tmp_path / "again")  # written as loaded: the fp32 parts stay fp32
            saved = load_file(str(tmp_path / "again" / "model.safetensors"))
            assert {k: v.dtype for k, v in saved.items()} == {k: kinds[k] for k in saved}


@pytest.mark.parametrize("name", ["blip2-itm-vit-g", "blip2-pretrain-vit-g"])
def test_named_variants_are_transformers_blip2_itm_vit_g(name, tmp_path):
    """Salesforce/blip2-itm-vit-g as transformers' conversion script builds it (ViT-g at 224 px,
    a BERT-base Q-Former with text input and [DEC] in its vocabulary); the stage-1 variant is its
    Q-Former under Blip2ForPretraining, for ViT-g's features (LAVIS's stage 1). Built with 1 tower layer and 2 Q-Former layers, every
    tensor has transformers' name and shape."""
    hf_config = transformers.Blip2Config(qformer_config=transformers.Blip2QFormerConfig(
        vocab_size=30523, use_qformer_text_input=True).to_dict())
    want = hf_config.to_dict()
    ours = getattr(tessera, name.replace("blip2-itm-vit-g", "Blip2ForImageTextRetrieval").replace(
        "blip2-pretrain-vit-g", "Blip2ForPretraining")).resolve_config(tessera.get_model_config(name))
    for part in ("vision_config", "qformer_config"):
        for key, value in ours[part].items():
            if key in want[part] and key not in ("architectures", "dtype", "transformers_version", "model_type"):
                assert value == want[part][key], f"{part}.{key}: {value!r}, transformers {want[part][key]!r}"
    assert (ours["num_query_tokens"], ours["image_text_hidden_size"]) == (32, 256)
    small = dict(vision_config={"num_hidden_layers": 1}, qformer_config={"num_hidden_layers": 2})
    model = tessera.create_model(name, config_overrides=small)
    hf_config.vision_config.num_hidden_layers, hf_config.qformer_config.num_hidden_layers = 1, 2
    with torch.device("meta"):
        hf = transformers.Blip2ForImageTextRetrieval(hf_config)
    theirs = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shared = {k: v for k, v in mine.items() if k in theirs}
    assert shared == {k: theirs[k] for k in shared}
    if name == "blip2-itm-vit-g":
        assert mine.keys() == theirs.keys()
    else:  # stage 1 reads the frozen tower's features, and adds the ITC temperature and BERT's LM head
        assert all(k.startswith("vision_model.") for k in theirs.keys() - mine.keys())
        assert {k.split(".")[0] for k in mine.keys() - theirs.keys()} == {"temp", "cls"}
