"""MAE (He et al. 2021) over the C++ modules in csrc/tessera/models/mae, with the interface of
transformers' ViTMAEForPreTraining and ViTMAEModel.

    mae = tessera.ViTMAEForPreTraining({"image_size": 28, "patch_size": 7, "num_channels": 1, ...})
    out = mae(pixel_values)                       # out.loss, out.logits, out.mask, out.ids_restore
    pictures = mae.unpatchify(out.logits)         # the reconstruction (normalised with norm_pix_loss)
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import _C
from ..cpp_module import node_class, node_methods
from ..opaque_to_compile import opaque_to_compile
from ..registry import register_model
from .family import FamilyModel
from .features import VisionFeatures, mean_patch_tokens
from .outputs import ModelOutput, make_output
from .timm_compat import MAE_DATA, MAE_NO_DECAY, EncoderPipeline
from ..schema import flag

#: Python classes of the mirrored C++ nodes (wrap policies: FSDP2, activation checkpointing).
ViTMAELayer = node_class("ViTMAELayer", layer=True)
ViTMAEAttention = node_class("ViTMAEAttention")


class ViTMAEModelOutput(ModelOutput):
    """last_hidden_state, mask, ids_restore, hidden_states."""
    fields = ("last_hidden_state", "mask", "ids_restore", "hidden_states", "attentions")


class ViTMAEForPreTrainingOutput(ModelOutput):
    """loss, logits, mask, ids_restore, hidden_states."""
    fields = ("loss", "logits", "mask", "ids_restore", "hidden_states", "attentions")


def _check_pixels(pixel_values, noise) -> None:
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if noise is not None and not isinstance(noise, torch.Tensor):
        raise TypeError(f"noise must be a torch.Tensor or None, got {type(noise).__name__}")


def _run(model, pixel_values, noise, output_hidden_states, interpolate_pos_encoding):
    """The C++ forward of an MAE model or of the encoder inside one (both take the same arguments)."""
    _check_pixels(pixel_values, noise)
    model._sync_parameters()
    return make_output(model._cpp.forward(pixel_values, noise, flag(output_hidden_states, "output_hidden_states"),
                                          flag(interpolate_pos_encoding, "interpolate_pos_encoding")))


class _MaeBase(FamilyModel):
    model_type = "vit_mae"
    main_input_name = "pixel_values"  # transformers'
    _family = _C.mae


@node_methods("ViTMAEModel")
class ViTMAEFeatures(VisionFeatures):
    """The forward (transformers', masking included) and timm's feature API of the MAE encoder:
    ViTMAEModel and `ViTMAEForPreTraining.vit`. The feature API masks nothing: every patch, in
    order, as timm's MAE-pretrained ViTs compute features (transformers' ViTMAEModel would drop
    mask_ratio of them; with mask_ratio 0 it keeps all, shuffled by its noise). The final norm is
    `layernorm`, so forward_features is transformers' last_hidden_state of an unmasked pass."""

    _forward_intermediates = staticmethod(_C.mae.forward_intermediates)
    _forward_head = staticmethod(_C.mae.forward_head)
    _no_decay, _data_config = MAE_NO_DECAY, MAE_DATA

    @opaque_to_compile
    def forward(self, pixel_values: torch.Tensor, noise: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False, interpolate_pos_encoding: bool = False) -> ViTMAEModelOutput:
        """transformers' ViTMAEModel forward (and `ViTMAEForPreTraining.vit`'s)."""
        return _run(self, pixel_values, noise, output_hidden_states, interpolate_pos_encoding)


def _unmasked_probe(model, prefix: str):
    """MAE's encoder without masking (every patch visible, the same weights): mean patch tokens."""
    encoder = ViTMAEModel({**model.config, "mask_ratio": 0.0})
    encoder.load_state_dict({k[len(prefix):]: v for k, v in model.state_dict().items() if k.startswith(prefix)})
    encoder.eval()
    return lambda px: mean_patch_tokens(encoder(px).last_hidden_state)


@register_model
class ViTMAEModel(ViTMAEFeatures, _MaeBase):
    """The MAE encoder: embeddings with random masking, ViT layers, final layernorm. Parameter
    names are the ViT checkpoint tree (`embeddings.cls_token`, `encoder.layer.N....`)."""

    architecture = "ViTMAEModel"
    input_embeddings = "embeddings.patch_embeddings"
    _cpp_class = "MaeModel"

    def probe_features(self):
        """`tessera eval --probe`'s feature function: unmasked, the mean of the patch tokens."""
        return _unmasked_probe(self, "")


@register_model
class ViTMAEForPreTraining(EncoderPipeline, _MaeBase):
    """MAE pretraining: the encoder sees only the visible patches (1 - mask_ratio of them), the
    decoder predicts every patch's pixels, the loss is their mean squared error on masked patches
    (per-patch normalised targets with `norm_pix_loss`). `noise` [B, N] fixes the masking.

    Checkpoints: the decoder's layers load from `decoder.decoder_encoder.layer.N` (transformers 5)
    and `decoder.decoder_layers.N` (the original release)."""

    architecture = "ViTMAEForPreTraining"
    input_embeddings = "vit.embeddings.patch_embeddings"
    default_for_model_type = True  # a config with only model_type builds the model the task trains
    _cpp_class = "MaeForPreTraining"
    _encoder = "vit"

    def forward(self, pixel_values: torch.Tensor, noise: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False,
                interpolate_pos_encoding: bool = False) -> ViTMAEForPreTrainingOutput:
        return _run(self, pixel_values, noise, output_hidden_states, interpolate_pos_encoding)

    def probe_features(self):
        """`tessera eval --probe`'s feature function: its encoder unmasked, mean patch tokens."""
        return _unmasked_probe(self, "vit.")

    def patchify(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """[B, C, H, W] -> [B, N, patch_size**2 * C], transformers' layout."""
        return self._cpp.patchify(pixel_values, interpolate_pos_encoding)

    def unpatchify(self, patches: torch.Tensor, original_image_size=None) -> torch.Tensor:
        """[B, N, patch_size**2 * C] -> [B, C, H, W] (H, W: `original_image_size` or the config's)."""
        h, w = original_image_size or (0, 0)
        return self._cpp.unpatchify(patches, int(h), int(w))
