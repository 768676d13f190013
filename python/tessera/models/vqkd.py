"""VQ-KD, BEiT v2's visual tokenizer (Peng et al. 2022): a ViT encoder, a task layer down to the
codebook width, the L2-normalised EMA quantizer, and a ViT decoder (patch size 1 over the grid
of codes) with a task layer that regresses a frozen teacher's patch features; the loss is
1 - cosine(reconstruction, teacher) plus the commitment term. Its codes are the labels of BEiT
pretraining (`get_codebook_indices`). No transformers class exists; the layout follows BEiT v2's
names (`encoder`, `encode_task_layer`, `quantize`, `decoder`, `decode_task_layer`).

    vqkd = tessera.VQKD({"encoder_config": {"image_size": 28, "patch_size": 7, ...},
                         "codebook_size": 512, "codebook_dim": 32, "teacher_dim": 128})
    out = vqkd(pixel_values, target=teacher_patch_features)   # out.loss, out.indices
    tokens = vqkd.get_codebook_indices(pixel_values)            # [B, N] for BEiT's labels
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import _C
from ..registry import register_model
from .beit import BeitModel
from .features import mean_patch_tokens
from .outputs import ModelOutput
from .pretrained import PreTrainedModel, merge_config
from .quantizer import NormEMAQuantizer

_ENCODER = dict(use_absolute_position_embeddings=True, use_mean_pooling=False, use_mask_token=False,
                layer_scale_init_value=0.0, drop_path_rate=0.0)
# kmeans_init: BEiT v2's VQKD default (`quantize_kmeans_init=True`): the codebook starts from
# k-means over the first batch's encodings.
_DEFAULTS = dict(codebook_size=8192, codebook_dim=32, teacher_dim=512, decay=0.99, beta=1.0, dead_code_threshold=0.0,
                 kmeans_init=True)


class VQKDOutput(ModelOutput):
    """loss, rec_loss, commit_loss, indices, reconstruction."""
    fields = ("loss", "rec_loss", "commit_loss", "indices", "reconstruction")


def _task_layer(dim_in: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, dim_in), nn.Tanh(), nn.Linear(dim_in, dim_out))


@register_model
class VQKD(PreTrainedModel):
    model_type = "vqkd"
    architecture = "VQKD"
    transformers_class = None  # no Hugging Face counterpart: the contract test skips key parity

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.config = self.resolve_config(dict(config or {}))
        c = self.config
        self.encoder = BeitModel(c["encoder_config"], add_pooling_layer=False)
        self.encode_task_layer = _task_layer(c["encoder_config"]["hidden_size"], c["codebook_dim"])
        self.quantize = NormEMAQuantizer(c["codebook_size"], c["codebook_dim"], c["decay"], c["beta"],
                                         c["dead_code_threshold"], c["kmeans_init"])
        self.decoder = BeitModel(c["decoder_config"], add_pooling_layer=False)
        self.decode_task_layer = _task_layer(c["decoder_config"]["hidden_size"], c["teacher_dim"])
        for layer in (*self.encode_task_layer, *self.decode_task_layer):
            if isinstance(layer, nn.Linear):  # BEiT v2: trunc_normal(0.02) weights, zero biases
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)

    @classmethod
    def resolve_config(cls, config: Dict[str, Any]) -> Dict[str, Any]:
        """Defaults filled in and checked; the decoder reads the grid of codes (patch size 1,
        codebook_dim channels), so its image and patch sizes follow from the encoder's."""
        unknown = set(config) - {"model_type", "architectures", "encoder_config", "decoder_config", "dtype",
                                 "torch_dtype", *_DEFAULTS}  # the dtype keys are save_pretrained's record
        if unknown:
            raise ValueError(f"vqkd config: unknown keys {sorted(unknown)}")
        c = {**_DEFAULTS, **{k: v for k, v in config.items() if k in _DEFAULTS}}
        for key in ("codebook_size", "codebook_dim", "teacher_dim"):
            if isinstance(c[key], bool) or not isinstance(c[key], int) or c[key] <= 0:
                raise ValueError(f"vqkd config: {key} must be a positive integer, got {c[key]!r}")
        if not isinstance(c["kmeans_init"], bool):
            raise ValueError(f"vqkd config: kmeans_init must be true or false, got {c['kmeans_init']!r}")
        enc = json.loads(_C.beit.resolve_config(json.dumps(merge_config(_ENCODER, config.get("encoder_config")))))
        grid = enc["image_size"] // enc["patch_size"]
        dec_base = merge_config({**_ENCODER, "num_hidden_layers": 1}, {
            k: enc[k] for k in ("hidden_size", "num_attention_heads", "intermediate_size", "layer_norm_eps")})
        dec = merge_config(dec_base, config.get("decoder_config"))
        dec.update(image_size=grid, patch_size=1, num_channels=c["codebook_dim"])
        dec = json.loads(_C.beit.resolve_config(json.dumps(dec)))
        for d in (enc, dec):
            d["architectures"] = ["BeitModel"]
        return {"model_type": "vqkd", "architectures": ["VQKD"], "encoder_config": enc, "decoder_config": dec, **c}

    def _set_checkpointing(self, enable: bool) -> None:
        self.encoder.set_gradient_checkpointing(enable)
        self.decoder.set_gradient_checkpointing(enable)

    def probe_features(self):
        """`tessera eval --probe`'s feature function: the mean of its encoder's patch tokens."""
        return lambda px: mean_patch_tokens(self.encoder(px).last_hidden_state)

    def encode(self, pixel_values: torch.Tensor):
        h = self.encoder(pixel_values).last_hidden_state[:, 1:]
        return self.quantize(self.encode_task_layer(h))

    def forward(self, pixel_values: torch.Tensor, target: Optional[torch.Tensor] = None) -> VQKDOutput:
        """`target`: the teacher's patch features [B, N, teacher_dim]; without it only the codes
        and the reconstruction are returned."""
        q = self.encode(pixel_values)
        p = self.config["encoder_config"]["patch_size"]
        b, _, d = q.quantized.shape
        grid = q.quantized.transpose(1, 2).reshape(b, d, pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
        rec = self.decode_task_layer(self.decoder(grid).last_hidden_state[:, 1:])
        if target is None:
            return VQKDOutput(indices=q.indices, reconstruction=rec, commit_loss=q.loss)
        if target.shape != rec.shape:
            raise ValueError(f"target (teacher features) must be {list(rec.shape)} [batch, patches, teacher_dim], "
                             f"got {list(target.shape)}")
        rec_loss = (1 - F.cosine_similarity(rec.float(), target.float(), dim=-1)).mean()
        return VQKDOutput(loss=rec_loss + q.loss, rec_loss=rec_loss, commit_loss=q.loss, indices=q.indices,
                          reconstruction=rec)

    @torch.no_grad()
    def get_codebook_indices(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, N] visual tokens (the quantizer in eval mode: no EMA update)."""
        training = self.quantize.training
        self.quantize.eval()
        try:
            return self.encode(pixel_values).indices
        finally:
            self.quantize.train(training)
