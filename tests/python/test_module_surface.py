"""tessera models are real torch.nn.Modules whose parameters are the C++ tensors.

References: transformers' CLIPModel for keys and float64 numerics, plain formulas elsewhere
(a linear layer scales with its weight; AdamW steps must lower the loss).
"""
from __future__ import annotations

import copy
import os
import tempfile

import pytest
import torch
from torch import nn

import tessera
from _clip_reference import assert_close, hf_clip, one_thread, pixel_batch, text_batch, tiny_config
from _spawn import spawn_ranks

pytest.importorskip("transformers")

CONFIG = tiny_config()


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


def _batch(config=CONFIG, batch=4, dtype=torch.float32):
    ids, mask = text_batch(config["text_config"], batch=batch, seq_len=config["text_config"]["max_position_embeddings"])
    px = pixel_batch(config["vision_config"], batch=batch).to(dtype)
    return ids, mask, px


def _tessera_from_hf(hf, tmp_path):
    hf.save_pretrained(str(tmp_path))
    return tessera.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("cls, config", [
    (tessera.CLIPModel, CONFIG),
    (tessera.CLIPVisionModel, CONFIG["vision_config"]),
    (tessera.CLIPTextModel, CONFIG["text_config"]),
])
def test_models_are_modules_with_parameters(cls, config):
    model = cls(dict(config))
    assert isinstance(model, nn.Module)
    params = list(model.parameters())
    assert params and all(isinstance(p, nn.Parameter) and p.requires_grad and p.is_leaf for p in params)
    # Parameters are the very tensors the C++ module holds (same Python object, same storage).
    cpp = dict(model.cpp.named_parameters())
    named = dict(model.named_parameters())
    assert set(cpp) == set(named)
    for k, p in named.items():
        assert cpp[k] is p, k
        assert cpp[k].data_ptr() == p.data_ptr()


def test_in_place_edit_changes_cpp_output():
    model = tessera.CLIPModel(CONFIG)
    ids, mask, px = _batch()
    with torch.no_grad():
        before_img = model.get_image_features(px)
        before_txt = model.get_text_features(ids, mask)
        model.visual_projection.weight.mul_(2.0)  # a bias-free linear map: output doubles
        model.text_projection.weight.zero_()
        after_img = model.get_image_features(px)
        after_txt = model.get_text_features(ids, mask)
    assert_close(after_img, 2.0 * before_img, 1e-6, "image features after doubling the projection")
    assert before_txt.abs().max() > 0 and torch.equal(after_txt, torch.zeros_like(after_txt))


def test_parameter_and_state_dict_keys_equal_transformers():
    hf = hf_clip(CONFIG)
    model = tessera.CLIPModel(CONFIG)
    assert set(model.state_dict()) == set(hf.state_dict())
    assert {k for k, _ in model.named_parameters()} == {k for k, _ in hf.named_parameters()}
    shapes_hf = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == shapes_hf
    # Sub-modules are reachable by the HF attribute path.
    assert model.get_submodule("vision_model.encoder.layers.0.self_attn.q_proj").weight.shape == (16, 16)


def test_load_state_dict_strict_names_missing_and_unexpected_keys():
    model = tessera.CLIPModel(CONFIG)
    sd = model.state_dict()
    sd.pop("logit_scale")
    sd.pop("text_model.final_layer_norm.bias")
    sd["vision_model.extra.weight"] = torch.zeros(3)
    with pytest.raises(RuntimeError) as e:
        model.load_state_dict(sd)
    msg = str(e.value)
    for key in ["logit_scale", "text_model.final_layer_norm.bias", "vision_model.extra.weight"]:
        assert key in msg
    assert "Missing" in msg and "Unexpected" in msg
    # Non-strict: reports the same keys and loads the rest.
    other = tessera.CLIPModel(CONFIG)
    sd = other.state_dict()
    sd.pop("logit_scale")
    sd["vision_model.extra.weight"] = torch.zeros(3)
    result = model.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["logit_scale"] and result.unexpected_keys == ["vision_model.extra.weight"]
    assert torch.equal(model.visual_projection.weight, other.visual_projection.weight)


def test_load_state_dict_wrong_shape_names_key_and_shapes():
    model = tessera.CLIPModel(CONFIG)
    sd = model.state_dict()
    sd["visual_projection.weight"] = torch.zeros(3, 5)
    with pytest.raises(RuntimeError) as e:
        model.load_state_dict(sd)
    msg = str(e.value)
    assert "visual_projection.weight" in msg and "[3, 5]" in msg and "[8, 16]" in msg


def test_load_state_dict_reaches_cpp_even_with_assign():
    model, source = tessera.CLIPModel(CONFIG), tessera.CLIPModel(CONFIG)
    ids, mask, px = _batch()
    with torch.no_grad():
        want = source(input_ids=ids, pixel_values=px, attention_mask=mask).logits_per_image
    for assign in (False, True):
        fresh = tessera.CLIPModel(CONFIG)
        fresh.load_state_dict(source.state_dict(), assign=assign)
        with torch.no_grad():
            got = fresh(input_ids=ids, pixel_values=px, attention_mask=mask).logits_per_image
        assert torch.equal(got, want), f"assign={assign}"
        # After a forward, C++ holds exactly the tensors the Python tree holds (assign=True rebinds).
        cpp = dict(fresh.cpp.named_parameters())
        assert all(cpp[k] is p for k, p in fresh.named_parameters())
    with torch.no_grad():
        assert not torch.equal(model(input_ids=ids, pixel_values=px, attention_mask=mask).logits_per_image, want)


def test_float64_matches_transformers(tmp_path):
    config = tiny_config(text=dict(num_hidden_layers=2), vision=dict(num_hidden_layers=2))
    # transformers' "eager" attention computes its softmax in float32 even for float64 inputs
    # (~1e-7 off); its SDPA path stays in float64 and is the reference here.
    hf = hf_clip(config, "sdpa")
    model = _tessera_from_hf(hf, tmp_path)
    assert model.to(torch.float64) is model
    hf = hf.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert all(p.dtype == torch.float64 for _, p in model.cpp.named_parameters())
    ids, mask, px = _batch(config, dtype=torch.float64)
    a = model(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
    b = hf(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
    for name in ["loss", "logits_per_image", "text_embeds", "image_embeds"]:
        assert a[name].dtype == torch.float64
        assert_close(a[name], b[name], 1e-10, name)
    assert_close(a.text_model_output.last_hidden_state, b.text_model_output.last_hidden_state, 1e-10, "text states")
    a.loss.backward()
    b.loss.backward()
    ref = dict(hf.named_parameters())
    for k, p in model.named_parameters():
        assert p.grad.dtype == torch.float64
        assert_close(p.grad, ref[k].grad, 1e-10 * max(1.0, ref[k].grad.abs().max().item()), f"grad {k}")


def test_bfloat16_runs_and_stays_near_float32():
    model = tessera.CLIPModel(CONFIG)
    ids, mask, px = _batch()
    with torch.no_grad():
        want = model(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
    model.to(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for _, p in model.cpp.named_parameters())
    out = model(input_ids=ids, pixel_values=px.bfloat16(), attention_mask=mask, return_loss=True)
    assert out.image_embeds.dtype == torch.bfloat16 and out.loss.dtype == torch.bfloat16
    # bf16 keeps ~3 significant digits; unit-norm embeddings agree to a few 1e-2.
    assert_close(out.image_embeds.float(), want.image_embeds, 5e-2, "image_embeds bf16")
    assert_close(out.text_embeds.float(), want.text_embeds, 5e-2, "text_embeds bf16")
    out.loss.float().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.bfloat16 for p in model.parameters())


def test_train_eval_propagate_to_cpp(tmp_path):
    # Attention dropout is the C++ behaviour that depends on the flag.
    config = tiny_config(text=dict(attention_dropout=0.5), vision=dict(attention_dropout=0.5))
    hf = hf_clip(config)
    model = _tessera_from_hf(hf, tmp_path)
    ids, mask, px = _batch(config)
    model.train()
    assert model.training and model.cpp.is_training()
    assert all(m.training for m in model.modules())
    with torch.no_grad():
        a = model.get_image_features(px)
        b = model.get_image_features(px)
    assert not torch.equal(a, b), "attention dropout is inactive in train mode"
    assert model.eval() is model
    assert not model.training and not model.cpp.is_training()
    assert not any(m.training for m in model.modules())
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=px, attention_mask=mask)
        ref = hf(input_ids=ids, pixel_values=px, attention_mask=mask)
    assert_close(out.logits_per_image, ref.logits_per_image, 1e-4, "eval logits vs transformers")
    # The towers' own classes follow the flag too.
    tower = tessera.CLIPVisionModel(config["vision_config"]).eval()
    assert not tower.cpp.is_training()
    tower.train()
    assert tower.cpp.is_training()


def test_train_eval_of_a_submodule_reaches_its_cpp_module():
    """LAVIS's pattern, a frozen tower kept in eval mode under a training model: the submodule's
    flag governs its C++ module (only the root's reached C++ before; dropout ran on without a word).
    Compared with the whole model's modes, which test_train_eval_propagate_to_cpp checks."""
    config = tiny_config(text=dict(attention_dropout=0.5), vision=dict(attention_dropout=0.5))
    model = tessera.CLIPModel(config)
    ids, mask, px = _batch(config)

    def image_features_twice():
        with torch.no_grad():
            return model.get_image_features(px), model.get_image_features(px)

    model.eval()
    want, _ = image_features_twice()
    model.train()
    model.vision_model.eval()
    a, b = image_features_twice()
    assert torch.equal(a, want) and torch.equal(b, want), "the tower's dropout ran in eval mode"
    assert model.text_model.training and model.cpp.is_training()
    # apply_lora and deepcopy rebuild the Python tree: the tower stays in eval (torch's deepcopy
    # keeps every module's flag; both put the whole tree in the root's mode before).
    tessera.lora.apply_lora(model, ["q_proj"], r=2)
    copied = copy.deepcopy(model)
    for m in (model, copied):
        assert not m.vision_model.training and m.text_model.training and m.training
    with torch.no_grad():
        assert torch.equal(copied.get_image_features(px), copied.get_image_features(px)), "the copy's tower dropped"
    model.eval()
    model.vision_model.encoder.layers[0].train()  # a layer alone (a CppLayer) is enough for dropout
    a, b = image_features_twice()
    assert not torch.equal(a, b), "the layer's dropout stayed off in train mode"


def test_requires_grad_false_freezes():
    model = tessera.CLIPModel(CONFIG)
    ids, mask, px = _batch()
    model.requires_grad_(False)
    out = model(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
    assert not out.loss.requires_grad
    assert all(p.grad is None for p in model.parameters())
    # Freezing one tower leaves the other trainable.
    model.requires_grad_(True)
    model.vision_model.requires_grad_(False)
    out = model(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
    out.loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("vision_model."):
            assert p.grad is None, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_adamw_from_python_trains_the_cpp_model():
    torch.manual_seed(0)
    model = tessera.CLIPModel(CONFIG)
    ids, mask, px = _batch(batch=8)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.01)
    with torch.no_grad():
        start = model(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = model(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if len(losses) == 1:
            with torch.no_grad():
                after_one = model(input_ids=ids, pixel_values=px, attention_mask=mask).logits_per_image
            assert not torch.equal(after_one, start.logits_per_image), "an optimizer step did not reach C++"
    with torch.no_grad():
        final = model(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True).loss.item()
    # 8 pairs with the initial logit scale (exp(2.6592) = 14.3) start near 4.5; memorising a
    # fixed batch must bring the loss far below that (observed: 5.07 -> 0.72 in 20 steps).
    assert losses[0] == pytest.approx(start.loss.item(), abs=1e-6)
    assert final < 0.25 * losses[0], (losses[0], final)


def test_adamw_trajectory_matches_transformers(tmp_path):
    """Same weights, same batch, same optimizer: the loss curves agree step by step."""
    config = tiny_config()
    hf = hf_clip(config)
    model = _tessera_from_hf(hf, tmp_path)
    ids, mask, px = _batch(config, batch=6)
    curves = []
    for m in (model, hf):
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        curve = []
        for _ in range(5):
            opt.zero_grad()
            loss = m(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True).loss
            loss.backward()
            opt.step()
            curve.append(loss.item())
        curves.append(curve)
    assert curves[0] == pytest.approx(curves[1], abs=1e-4)
    assert curves[0][-1] < curves[0][0]


def test_deepcopy_is_independent():
    model = tessera.CLIPModel(CONFIG).eval()
    model.vision_model.embeddings.requires_grad_(False)
    twin = copy.deepcopy(model)
    assert type(twin) is type(model) and twin.cpp is not model.cpp
    assert not twin.training and not twin.cpp.is_training()
    ids, mask, px = _batch()
    with torch.no_grad():
        assert torch.equal(twin.get_image_features(px), model.get_image_features(px))
    for (k, p), (k2, q) in zip(model.named_parameters(), twin.named_parameters()):
        assert k == k2 and p.data_ptr() != q.data_ptr() and p.requires_grad == q.requires_grad
    twin_cpp = dict(twin.cpp.named_parameters())
    assert all(twin_cpp[k] is q for k, q in twin.named_parameters())
    before = model.get_image_features(px).detach()
    with torch.no_grad():
        twin.visual_projection.weight.zero_()
    assert torch.equal(model.get_image_features(px).detach(), before)
    assert twin.get_image_features(px).abs().max() == 0
    twin.get_text_features(ids, mask).sum().backward()
    assert all(p.grad is None for p in model.parameters())


def test_gradient_checkpointing_keeps_outputs_and_gradients(tmp_path):
    """Activation checkpointing (training mode) recomputes the blocks in backward; loss and every
    gradient still equal transformers' (no checkpointing, dropout 0 so train == eval)."""
    config = tiny_config(text=dict(num_hidden_layers=2), vision=dict(num_hidden_layers=2))
    hf = hf_clip(config, "sdpa")
    model = _tessera_from_hf(hf, tmp_path).train()
    model.set_gradient_checkpointing(True)
    ids, mask, px = _batch(config)
    out = model(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
    ref = hf(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
    assert_close(out.loss, ref.loss, 1e-5, "loss")
    out.loss.backward()
    ref.loss.backward()
    from _clip_reference import assert_grads_match

    assert_grads_match(model, hf)


def test_pickling_is_refused_with_a_hint():
    import pickle

    with pytest.raises(TypeError, match="save_pretrained"):
        pickle.dumps(tessera.CLIPModel(CONFIG))


def test_gradcheck_float64():
    config = tiny_config(
        text=dict(vocab_size=20, hidden_size=8, intermediate_size=12, num_attention_heads=2,
                  max_position_embeddings=5, eos_token_id=19, bos_token_id=18),
        vision=dict(hidden_size=8, intermediate_size=12, num_attention_heads=2, image_size=8, patch_size=4,
                    num_channels=1, hidden_act="gelu"),
        projection_dim=4)
    model = tessera.CLIPModel(config).to(torch.float64).eval()
    g = torch.Generator().manual_seed(3)
    px = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=g, requires_grad=True)
    ids = torch.tensor([[18, 4, 7, 19, 0], [18, 9, 19, 0, 0]])
    mask = (ids != 0).long()
    assert torch.autograd.gradcheck(lambda x: model.get_image_features(x), (px,))
    assert torch.autograd.gradcheck(
        lambda x: model(input_ids=ids, pixel_values=x, attention_mask=mask, return_loss=True).loss, (px,))
    # Token ids are not differentiable; check the text tower through its parameters instead:
    # gradcheck perturbs the given tensors in place, and these are the tensors C++ reads.
    for name in ["text_model.final_layer_norm.weight", "text_model.encoder.layers.0.self_attn.q_proj.bias",
                 "text_model.embeddings.position_embedding.weight", "logit_scale"]:
        param = model.get_parameter(name)
        assert torch.autograd.gradcheck(
            lambda p: model(input_ids=ids, pixel_values=px.detach(), attention_mask=mask, return_loss=True).loss,
            (param,)), name


# --------------------------------------------------------------------------- DistributedDataParallel

DDP_CONFIG = tiny_config()
DDP_BATCH = 4  # per rank


def _ddp_objective(module, ids, mask, px):
    # Mean over samples of a per-sample term (logit_scale * cos(image_i, text_i)), so that the
    # average of the two ranks' objectives is the same objective over the concatenated batch.
    # It touches every parameter, so DDP needs no find_unused_parameters.
    out = module(input_ids=ids, pixel_values=px, attention_mask=mask)
    return out.logits_per_image.diagonal().mean()


def _ddp_data():
    ids, mask = text_batch(DDP_CONFIG["text_config"], batch=2 * DDP_BATCH, seq_len=8)
    px = pixel_batch(DDP_CONFIG["vision_config"], batch=2 * DDP_BATCH)
    return ids, mask, px


def _ddp_worker(rank, world, init_file, weights_file, out_dir):
    import torch.distributed as dist

    from tessera.train.distributed import shutdown_distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=__import__("datetime").timedelta(seconds=60))
    try:
        model = tessera.CLIPModel(DDP_CONFIG)
        if rank == 0:
            model.load_state_dict(torch.load(weights_file))
        # Rank 1 starts from other random weights: DDP must broadcast rank 0's.
        ddp = nn.parallel.DistributedDataParallel(model)
        ids, mask, px = _ddp_data()
        part = slice(rank * DDP_BATCH, (rank + 1) * DDP_BATCH)
        _ddp_objective(ddp, ids[part], mask[part], px[part]).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        torch.save({"grads": grads, "params": model.state_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
        shutdown_distributed()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_ddp_gloo_averages_gradients_like_one_process():
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with Gloo is not available")
    reference = tessera.CLIPModel(DDP_CONFIG)
    ids, mask, px = _ddp_data()
    _ddp_objective(reference, ids, mask, px).backward()
    with tempfile.TemporaryDirectory() as d:
        weights = os.path.join(d, "weights.pt")
        torch.save(reference.state_dict(), weights)
        spawn_ranks(_ddp_worker, (2, os.path.join(d, "init"), weights, d), 2, 180, "DDP workers")
        results = [torch.load(os.path.join(d, f"rank{r}.pt")) for r in range(2)]
    want = {k: p.grad for k, p in reference.named_parameters()}
    for r, res in enumerate(results):
        for k, v in reference.state_dict().items():
            assert torch.equal(res["params"][k], v), f"rank {r}: {k} was not broadcast from rank 0"
        for k, g in want.items():
            assert_close(res["grads"][k], g, 1e-5 * max(1.0, g.abs().max().item()), f"rank {r} grad {k}")
    for k in want:
        assert torch.equal(results[0]["grads"][k], results[1]["grads"][k]), k


def test_from_pretrained_returns_eval_mode_like_transformers(fixture_dir):
    model = tessera.from_pretrained(str(fixture_dir("clip")))
    assert not model.training and not model.cpp.is_training()


def test_a_layer_kept_past_its_model_or_copied_on_its_own_is_refused():
    """A layer kept after its model was freed ran on the freed C++ encoder (a segmentation fault);
    a deep copy of one layer pushed its tensors into the original model's C++ slots."""
    import gc

    model = tessera.CLIPVisionModel(CONFIG["vision_config"]).eval()
    layer = model.encoder.layers[0]
    h = torch.randn(1, 5, CONFIG["vision_config"]["hidden_size"])
    copied = copy.deepcopy(layer)
    with torch.no_grad():
        for p in copied.parameters():
            p.zero_()
    with pytest.raises(RuntimeError, match="is not the module at encoder.layers.0 of the model that mirrors it"):
        copied(h, tessera._C.nn.LayerArgs())
    with pytest.raises(RuntimeError, match="not the module at"):
        copied.train()(h, tessera._C.nn.LayerArgs())
    assert layer(h, tessera._C.nn.LayerArgs()).shape == h.shape
    del model
    gc.collect()
    with pytest.raises(RuntimeError, match="belongs to a model that no longer exists"):
        layer(h, tessera._C.nn.LayerArgs())


def test_a_cpp_module_is_wrapped_once():
    """A second wrapper over the same C++ module took over its layer caller: hooks on the first
    model stopped firing. Anything else is named as what CppModule does not wrap."""
    model = tessera.CLIPVisionModel(CONFIG["vision_config"])
    with pytest.raises(RuntimeError, match="already wrapped by a live CLIPVisionModel"):
        tessera.CppModule(model.cpp)
    tessera.CppModule(copy.deepcopy(model).cpp.clone())  # another C++ module: fine
    for bad in (nn.Linear(2, 2), 3):
        with pytest.raises(TypeError, match=r"CppModule wraps a C\+\+ module bound with"):
            tessera.CppModule(bad)


def test_a_cpp_module_with_buffers_is_refused():
    """Only parameters are pushed back to C++, so a buffer was left behind by .to(), load_state_dict
    and assignment while the Python copy moved: refused up front, by name."""
    class WithRunningMean:  # stands for an extension module that registered a buffer
        def nodes(self):
            return [("", "module", "Norm", 1)]

        def named_buffers(self):
            return [("norm.running_mean", torch.zeros(4))]

    with pytest.raises(TypeError, match=r"WithRunningMean holds buffers \(norm.running_mean\)"):
        tessera.CppModule(WithRunningMean())
    assert list(tessera.CLIPModel(CONFIG).cpp.named_buffers()) == []  # the contract test builds every family
