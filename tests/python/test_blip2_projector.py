"""BLIP-2's Q-Former as a LLaVA projector (`projector_type: qformer`): the image tokens are the
learned queries read through the Q-Former and `language_projection` (checked against
Blip2QFormerModel with the same weights), it trains end to end and survives a save, and
`init.projector` starts it from a BLIP-2 stage-1 checkpoint."""
import pytest
import torch

import tessera
from tessera.models.blip2_pretraining import Blip2ForPretraining
from tessera.models.blip2_projector import check_stage1, init_from_stage1

from test_llava import IMAGE, _config, _prompt

QFORMER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _qformer_llava():
    return tessera.LlavaForConditionalGeneration(_config(projector_type="qformer", projector_num_queries=3,
                                                         vision_feature_layer=-1, projector_config=QFORMER))


def test_qformer_projector_equals_the_qformer_and_trains(tmp_path):
    torch.manual_seed(0)
    model = _qformer_llava()
    assert model.config["image_seq_length"] == 3
    p = {k.removeprefix("multi_modal_projector."): v for k, v in model.state_dict().items() if "projector" in k}
    qformer = tessera.Blip2QFormerModel(dict(QFORMER, encoder_hidden_size=24))
    qformer.load_state_dict({k.removeprefix("qformer."): v for k, v in p.items() if k.startswith("qformer.")})
    px = torch.randn(2, 3, 16, 16)
    tower = tessera.CLIPVisionModel(model.config["vision_config"])
    tower.load_state_dict({"vision_model." + k.removeprefix("vision_tower."): v
                           for k, v in model.state_dict().items() if k.startswith("vision_tower.")})
    # The Q-Former reads the tower's post-normed features, as BLIP-2 stage 1 trains it (LAVIS's ln_vision).
    hidden = tower(pixel_values=px, output_hidden_states=True).hidden_states[-1]
    own = model.state_dict()
    feats = torch.nn.functional.layer_norm(hidden, hidden.shape[-1:], own["vision_tower.post_layernorm.weight"],
                                           own["vision_tower.post_layernorm.bias"],
                                           model.config["vision_config"].get("layer_norm_eps", 1e-5))[:, 1:]
    want = torch.nn.functional.linear(
        qformer(p["query_tokens"].expand(2, -1, -1), encoder_hidden_states=feats).last_hidden_state,
        p["language_projection.weight"], p["language_projection.bias"])
    ids = _prompt(1, 3)
    got = model._cpp.embed(ids, px)[ids == IMAGE].view(2, 3, -1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    model(ids, pixel_values=px, labels=ids).loss.backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for k, v in model.named_parameters() if "projector" in k)
    model.save_pretrained(str(tmp_path))
    again = tessera.from_pretrained(str(tmp_path))
    assert again.config["projector_config"]["hidden_size"] == 32
    torch.testing.assert_close(again(ids, pixel_values=px).logits, model(ids, pixel_values=px).logits)


def test_bad_qformer_projector_configs_are_refused():
    with pytest.raises(ValueError, match="'qformer' needs projector_num_queries > 0"):
        tessera.LlavaForConditionalGeneration(_config(projector_type="qformer", projector_config=QFORMER))
    with pytest.raises(ValueError, match="projector_config.*hiden_size"):
        tessera.LlavaForConditionalGeneration(_config(projector_type="qformer", projector_num_queries=3,
                                                      projector_config=dict(QFORMER, hiden_size=32)))


def test_init_projector_loads_a_stage1_qformer(tmp_path):
    """The LLaVA task's init.projector: queries and Q-Former from stage 1 (its text feed-forward
    and heads stay behind), language_projection fresh."""
    stage1 = Blip2ForPretraining(dict(num_query_tokens=3, vision_config=dict(hidden_size=24, num_attention_heads=2),
                                      qformer_config=dict(QFORMER, use_qformer_text_input=True, vocab_size=30)))
    stage1.save_pretrained(str(tmp_path / "stage1"))
    model = _qformer_llava()
    before = model.state_dict()["multi_modal_projector.language_projection.weight"].clone()
    init_from_stage1(model, str(tmp_path / "stage1"), model.config)
    own, theirs = model.state_dict(), stage1.state_dict()
    loaded = [k for k in own if k.startswith("multi_modal_projector.") and "language_projection" not in k]
    assert loaded and all(torch.equal(own[k], theirs[k.removeprefix("multi_modal_projector.")]) for k in loaded)
    assert torch.equal(own["multi_modal_projector.language_projection.weight"], before)


def test_init_projector_refuses_another_qformer_architecture(tmp_path):
    """Tensors are matched by name and shape: a stage-1 run with other heads or cross-attention
    layers loaded silently and ran as another model."""
    def stage1(**changes):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        Blip2ForPretraining(dict(num_query_tokens=changes.pop("queries", 3),
                                 vision_config=dict(hidden_size=24, num_attention_heads=2),
                                 qformer_config=dict(QFORMER, use_qformer_text_input=True, vocab_size=30,
                                                     **changes))).save_pretrained(str(folder))
        return str(folder)

    config = _qformer_llava().config
    check_stage1(stage1(), config)
    for changes, message in [(dict(num_attention_heads=8), "num_attention_heads: 8 there, 4 here"),
                             (dict(cross_attention_frequency=1), "cross_attention_frequency: 1 there, 2 here"),
                             (dict(layer_norm_eps=1e-6), "layer_norm_eps"), (dict(queries=4), "queries")]:
        with pytest.raises(ValueError, match=f"its Q-Former is not the one projector_config describes.*{message}"):
            check_stage1(stage1(**changes), config)


def test_init_projector_refuses_other_tower_tokens_than_stage1_read(tmp_path):
    """Stage 1 trained the Q-Former on one tower's layer, every token; stage 2 fed it LLaVA's
    defaults (layer -2, the class token dropped) or another tower's weights without a word."""
    import json

    stage1 = tmp_path / "stage1"
    Blip2ForPretraining(dict(num_query_tokens=3, vision_config=dict(hidden_size=24, num_attention_heads=2),
                             qformer_config=dict(QFORMER, use_qformer_text_input=True, vocab_size=30))
                        ).save_pretrained(str(stage1))
    (stage1 / "recipe.json").write_text(json.dumps({"task": "blip2_pretrain",
                                                    "tower": {"checkpoint": str(tmp_path / "tower"), "layer": -1}}))
    model = tessera.LlavaForConditionalGeneration(_config(
        projector_type="qformer", projector_num_queries=3, vision_feature_layer=-1,
        vision_feature_select_strategy="full", projector_config=QFORMER))
    tower = tessera.CLIPVisionModel(model.config["vision_config"])
    tower.load_state_dict({"vision_model." + k.removeprefix("vision_tower."): v
                           for k, v in model.state_dict().items() if k.startswith("vision_tower.")})
    tower.save_pretrained(str(tmp_path / "tower"))
    init_from_stage1(model, str(stage1), model.config)  # the same tower, layer and tokens
    for changes, message in [(dict(vision_feature_layer=-2), "vision_feature_layer -2, 'full'"),
                             (dict(vision_feature_select_strategy="default"), "vision_feature_layer -1, 'default'")]:
        with pytest.raises(ValueError, match=f"tower layer -1 \\(stage 1's tower.layer\\), every token; this config "
                                             f"feeds it {message}"):
            init_from_stage1(model, str(stage1), {**model.config, **changes})
    # a positive stage-1 layer is one more hidden state: forward_intermediates' 1 is hidden_states[2]
    (stage1 / "recipe.json").write_text(json.dumps({"task": "blip2_pretrain",
                                                    "tower": {"checkpoint": str(tmp_path / "tower"), "layer": 1}}))
    with pytest.raises(ValueError, match="set model.config.vision_feature_layer: 2 and"):
        init_from_stage1(model, str(stage1), model.config)
    init_from_stage1(model, str(stage1), {**model.config, "vision_feature_layer": 2})
    px = torch.randn(1, 3, 16, 16)
    (inter,) = tower.forward_intermediates(px, indices=[1], norm=True, stop_early=True, intermediates_only=True)
    hidden = tower(pixel_values=px, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(inter, torch.nn.functional.layer_norm(
        hidden, hidden.shape[-1:], tower.post_layernorm.weight, tower.post_layernorm.bias,
        tower.config.get("layer_norm_eps", 1e-5)))
    (stage1 / "recipe.json").write_text(json.dumps({"task": "blip2_pretrain",
                                                    "tower": {"checkpoint": str(tmp_path / "tower"), "layer": -1}}))
    with torch.no_grad():
        model.vision_tower.post_layernorm.weight.add_(1.0)
    with pytest.raises(ValueError, match="whose weights differ from init.vision_tower's \\(1 tensors"):
        init_from_stage1(model, str(stage1), model.config)
