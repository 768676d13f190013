"""A model call's on/off arguments are bools (schema.flag): bool() read "no" as on, and BLIP-2's
retrieval returned its matching head's logits for the similarity matrix asked for."""
import numpy as np
import pytest
import torch

import tessera


def test_an_on_off_argument_must_be_a_bool(lm, fixture_dir):
    """bool() read use_image_text_matching_head="no" as on: the call returned the matching head's
    [B, 2] logits for the similarity matrix asked for. None stays off, as transformers reads it."""
    ids = torch.tensor([[1, 5, 7]])
    with pytest.raises(TypeError, match="output_hidden_states must be True or False, got str 'no'"):
        lm(ids, output_hidden_states="no")
    assert lm(ids, output_hidden_states=None).hidden_states is None
    for on in (1, torch.tensor(True), np.bool_(True)):  # what bool() read right stays accepted
        assert len(lm(ids, output_hidden_states=on).hidden_states) == len(lm(ids, output_hidden_states=True).hidden_states)
    with pytest.raises(TypeError, match="output_hidden_states must be True or False, got int '2'"):
        lm(ids, output_hidden_states=2)
    clip = tessera.from_pretrained(str(fixture_dir("clip")))
    pixels = torch.zeros(1, 3, clip.config["vision_config"]["image_size"], clip.config["vision_config"]["image_size"])
    with pytest.raises(TypeError, match="intermediates_only must be True or False, got str 'no'"):
        clip.vision_model.forward_intermediates(pixels, intermediates_only="no")
    with pytest.raises(TypeError, match="normalize must be True or False"):
        clip.encode_image(pixels, normalize="no")
    with pytest.raises(TypeError, match="interpolate_pos_encoding must be True or False"):
        clip.vision_model(pixels, interpolate_pos_encoding="no")
    itr = tessera.from_pretrained(str(fixture_dir("blip2_itr")))
    size = itr.config["vision_config"]["image_size"]
    with pytest.raises(TypeError, match="use_image_text_matching_head must be True or False, got str 'no'"):
        itr(torch.zeros(1, 3, size, size), ids, use_image_text_matching_head="no")
    with pytest.raises(ValueError, match=r"image_size \d+ \(resize the images; Blip2VisionModel and "):
        itr(torch.zeros(1, 3, size + 8, size + 8), ids)  # it takes no interpolate_pos_encoding (nor transformers')
