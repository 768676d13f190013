"""Contrastive losses with open_clip's interface over the C++ math in csrc/tessera/losses.

    from tessera.losses import ClipLoss, SigLipLoss
    loss = ClipLoss(local_loss=True, gather_with_grad=True, rank=r, world_size=w)(img, txt, scale)

The modules own their distributed logic (gathering, label cache); see ``distributed`` for the
gradient equivalence with a single process on the combined batch.
"""
from .clip import ClipLoss, clamp_logit_scale
from .distributed import AllGatherWithGrad, all_gather_with_grad, gather_features
from .siglip import SigLipLoss

__all__ = ["ClipLoss", "SigLipLoss", "gather_features", "all_gather_with_grad", "AllGatherWithGrad",
           "clamp_logit_scale"]
