"""BLIP-2's first stage (Li et al. 2023, section 3.2) as LAVIS's Blip2Qformer.forward computes it,
on a frozen tower's features `image_embeds`:

* ITC: each image's queries against each text's [CLS] feature, the best query's similarity over a
  learned temperature; cross-entropy both ways with label smoothing 0.1 against every text and
  image of every rank (features gathered *with* gradient, so N ranks equal one process). With
  `image_ids`, pairs of the same id are all positives (LAVIS's retrieval fine-tuning targets).
* ITM: every pair (image i, text i) is a positive; each text gets one hard negative image and each
  image one hard negative text, drawn from the ITC similarities with its positives (its own pair
  and same-id pairs) excluded; `itm_head` over [queries; text] in one bidirectional pass.
* ITG: [DEC] (`bos_token_id`) replaces [CLS]; text sees the queries and earlier text; the token
  loss is a (sum, count) so the trainer averages over every token of the step.

The negatives are drawn per sample of the global batch from a generator seeded by (seed, step,
sample), over the candidates in global order, so the draw does not depend on how the batch is split
across ranks (tessera's loaders deal a step's samples to the ranks in turn).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .. import _C
from ..losses.distributed import all_gather_with_grad
from ..registry import register_model
from ..seeds import stream_seed
from .blip2 import _Blip2Part
from .llama import _check
from .outputs import ModelOutput
from ..schema import flag


class Blip2PretrainingOutput(ModelOutput):
    """loss_itc, loss_itm (means), lm_loss_sum / lm_tokens (ITG token loss), sim_i2t, sim_t2i."""
    fields = ("loss_itc", "loss_itm", "lm_loss_sum", "lm_tokens", "sim_i2t", "sim_t2i")


def stage1_mask(pass_name: str, num_queries: int, text_mask: torch.Tensor) -> torch.Tensor:
    """[B, Q+T, Q+T] 0/1: what each token of [queries; text] may see in pass 'itc', 'itm' or 'itg'."""
    return _C.blip2.stage1_mask(pass_name, int(num_queries), text_mask)


def _world() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(t: torch.Tensor, world: int, grad: bool) -> torch.Tensor:
    if world == 1:
        return t
    if grad:
        return all_gather_with_grad(t)
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def _checked_temperature(temp: torch.Tensor) -> torch.Tensor:
    """The learned ITC temperature divides every similarity: at or below 0, or not finite, the
    softmax is undefined (LAVIS does not guard it), so a checkpoint holding such a value is refused
    by name rather than failing inside the ITM draw."""
    value = float(temp.detach())
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"Blip2ForPretraining: the ITC temperature `temp` is {value}; it must be a positive "
                         "finite number (a checkpoint or an update set it out of range)")
    return temp


def itc_loss(sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, positives: torch.Tensor,
             label_smoothing: float = 0.1) -> torch.Tensor:
    """Mean of both directions' cross-entropy against `positives` [B, N] (1: a positive pair),
    spread evenly over the positives and smoothed as F.cross_entropy(label_smoothing=...)."""
    targets = positives.float() / positives.float().sum(1, keepdim=True)
    targets = (1 - label_smoothing) * targets + label_smoothing / targets.shape[1]
    i2t = -(F.log_softmax(sim_i2t, 1) * targets).sum(1).mean()
    t2i = -(F.log_softmax(sim_t2i, 1) * targets).sum(1).mean()
    return (i2t + t2i) / 2


def hard_negatives(sim: torch.Tensor, positives: torch.Tensor, rows: torch.Tensor, seed: int, step: int,
                   columns: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One column index per row, drawn from softmax over the row's negatives (the positives masked
    out first, as LAVIS's blip2_qformer.py; ALBEF's and BLIP's +1e-4 floor is not BLIP-2's), from a
    generator seeded by (seed, step, row). `rows` and `columns` are the samples' places in
    the global batch (default: as given); the draw runs over the columns in that order, so it is the
    same however the batch is split across ranks."""
    with torch.no_grad():
        if bool(positives.bool().all(1).any()):
            raise ValueError("ITM needs a negative for every pair, and a row has none: every candidate shares "
                             "its image_id, or the global batch holds a single pair; use a batch of more than "
                             "one pair and more than one image_id")
        if not bool(torch.isfinite(sim).all()):
            raise ValueError("ITM hard negatives: the image-text similarities hold NaN or inf (non-finite "
                             "image_embeds, or diverged weights)")
        weights = F.softmax(sim.float().masked_fill(positives.bool(), float("-inf")), 1)
        order = torch.argsort(columns.cpu()) if columns is not None else torch.arange(sim.shape[1])
        weights = weights.cpu()[:, order]
        out = torch.empty(sim.shape[0], dtype=torch.long)
        for i, row in enumerate(rows.tolist()):
            g = torch.Generator().manual_seed(stream_seed(seed, step, row, 1_000_003))
            out[i] = order[torch.multinomial(weights[i], 1, generator=g)[0]]
        return out.to(sim.device)


@register_model
class Blip2ForPretraining(_Blip2Part):
    """The stage-1 Q-Former (Blip2ForImageTextRetrieval's parameters, BERT's LM head tied to the
    word embeddings, the ITC temperature `temp`) reading a frozen tower's `image_embeds`."""

    model_type = "blip-2"
    architecture = "Blip2ForPretraining"
    input_embeddings = "embeddings.word_embeddings"
    transformers_class = None  # transformers has no stage-1 model
    _cpp_class = "Blip2ForPretraining"

    def forward(self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                bos_token_id: int, image_ids: Optional[torch.Tensor] = None, seed: int = 0, step: int = 0,
                negatives: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, itm: bool = True,
                itg: bool = True) -> Blip2PretrainingOutput:
        """`negatives` (image index per text, text index per image, into the gathered batch) replaces
        the draw (tests); `itm`/`itg` False skip those passes (their terms are then absent)."""
        _check(image_embeds=image_embeds, input_ids=input_ids, attention_mask=attention_mask, image_ids=image_ids)
        self._sync_parameters()
        rank, world = _world()
        B = input_ids.shape[0]
        if B == 0:  # the smoothed targets divided by zero
            raise ValueError("Blip2ForPretraining: an empty batch (ITC needs at least one image-text pair)")
        image_feats, text_feat = self._cpp.itc_features(image_embeds, input_ids, attention_mask)
        image_all, text_all = _gather(image_feats, world, True), _gather(text_feat, world, True)
        temp = _checked_temperature(self.temp)  # an attribute: functional_call swaps it
        sim_i2t = torch.einsum("bqe,ne->bnq", image_feats, text_all).amax(-1) / temp   # [B, N]
        sim_t2i = torch.einsum("be,nqe->bnq", text_feat, image_all).amax(-1) / temp    # [B, N]
        own = torch.arange(B, device=input_ids.device) + rank * B  # this rank's pairs among the gathered
        if image_ids is not None and (image_ids.dim() != 1 or image_ids.numel() != B):
            raise ValueError(f"image_ids must hold one id per pair, shape [{B}], got {list(image_ids.shape)}")
        ids = image_ids if image_ids is not None else own
        ids_all = _gather(ids.to(input_ids.device), world, False)
        positives = ids.view(-1, 1).eq(ids_all.view(1, -1))
        positives[torch.arange(B), own] = True
        # tessera's loaders deal a step's samples to the ranks in turn: gathered column j is sample
        # (j % B) * world + j // B of the global batch, and local row b is sample b * world + rank.
        columns = torch.arange(B * world) % B * world + torch.arange(B * world) // B
        rows = torch.arange(B) * world + rank
        out = Blip2PretrainingOutput(loss_itc=itc_loss(sim_i2t, sim_t2i, positives), sim_i2t=sim_i2t, sim_t2i=sim_t2i)
        if flag(itm, "itm"):
            if negatives is None:
                negatives = (hard_negatives(sim_t2i, positives, rows, seed, 2 * step, columns),
                             hard_negatives(sim_i2t, positives, rows, seed, 2 * step + 1, columns))
            neg_image, neg_text = negatives
            embeds_all = _gather(image_embeds, world, True)
            ids_world, mask_world = _gather(input_ids, world, False), _gather(attention_mask, world, False)
            texts = torch.cat([input_ids, input_ids, ids_world[neg_text]])
            masks = torch.cat([attention_mask, attention_mask, mask_world[neg_text]])
            images = torch.cat([image_embeds, embeds_all[neg_image], image_embeds])  # pos, neg image, neg text
            logits = self._cpp.itm_logits(images, texts, masks)
            labels = torch.cat([torch.ones(B, dtype=torch.long), torch.zeros(2 * B, dtype=torch.long)]).to(logits.device)
            out["loss_itm"] = F.cross_entropy(logits, labels)
        if flag(itg, "itg"):
            out["lm_loss_sum"], out["lm_tokens"] = self._cpp.lm_loss(image_embeds, input_ids, attention_mask,
                                                                     int(bos_token_id), 0.1)
        return out

    # ---- evaluation: one modality at a time, scores and captions -------------------------------
    @torch.no_grad()
    def itc_image_features(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """ITC image features [B, Q, E]. Under the ITC mask the queries never see text, so a
        one-token text ([CLS]-like id 0) stands in for it."""
        self._sync_parameters()
        ids = torch.zeros(image_embeds.shape[0], 1, dtype=torch.long, device=image_embeds.device)
        return self._cpp.itc_features(image_embeds, ids, torch.ones_like(ids))[0]

    @torch.no_grad()
    def itc_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """ITC text features [B, E]; text never sees the image under the ITC mask (zeros stand in)."""
        self._sync_parameters()
        width = self.config["qformer_config"]["encoder_hidden_size"]
        image = torch.zeros(input_ids.shape[0], 1, width, device=input_ids.device)
        return self._cpp.itc_features(image, input_ids, attention_mask)[1]

    @torch.no_grad()
    def itm_logits(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
        """ITM logits [N, 2] (no match, match) of image_embeds[i] with text i, averaged over queries."""
        self._sync_parameters()
        return self._cpp.itm_logits(image_embeds, input_ids, attention_mask)

    @torch.no_grad()
    def itm_scores(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
        """P(match) [N] of image_embeds[i] with text i, at the training prior (1 positive : 2 negatives)."""
        return self.itm_logits(image_embeds, input_ids, attention_mask).softmax(-1)[:, 1]

    @torch.no_grad()
    def caption(self, image_embeds: torch.Tensor, bos_token_id: int, eos_token_id: int,
                max_length: int = 16) -> torch.Tensor:
        """Greedy ITG captions [B, <= max_length] starting with bos ([DEC]); rows end at eos."""
        self._sync_parameters()
        B = image_embeds.shape[0]
        ids = torch.full((B, 1), int(bos_token_id), dtype=torch.long, device=image_embeds.device)
        done = torch.zeros(B, dtype=torch.bool, device=ids.device)
        while ids.shape[1] < max_length and not bool(done.all()):
            logits = self._cpp.itg_logits(image_embeds, ids, torch.ones_like(ids))[:, -1]
            nxt = logits.argmax(-1).masked_fill(done, int(eos_token_id))
            ids = torch.cat([ids, nxt[:, None]], 1)
            done |= nxt == int(eos_token_id)
        return ids
