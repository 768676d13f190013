"""BLIP-2 stage 1 for the Trainer (task `blip2_pretrain`): a Q-Former learns ITC, ITM and ITG
against a frozen CLIP vision tower (a CLIP run, as the feature-target tasks' teacher), on images
with captions made from class names and templates; the class is each caption's `image_id`, so a
same-class caption is a positive for ITC and never an ITM negative. The vocabulary is written from
the captions into the run folder (a WordPiece vocab whose words are whole tokens; [DEC] starts the
ITG text). Loss: ITG tokens + itc * ITC + itm * ITM in one step (a MixedLoss).
Evaluation on the held-out images: ITC zero-shot accuracy, ITM accuracy on balanced pairs, ITM
re-ranking of ITC's top classes, and greedy ITG captions naming the right class."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch

from ..eval import caption_retrieval_evaluate, zero_shot_evaluate
from ..eval.finite import require_finite, require_items
from ..models.blip2_pretraining import Blip2ForPretraining
from .clip_task import ClipData
from ..models.timm_compat import BLIP2_DATA
from .image_data import (batch_captions, caption_or_label, image_dataset, image_loader, labelled, pipeline_settings,
                         sample_ids)
from .tasks import MixedLoss, Task, TokenLoss, register_task
from .teacher import TeacherSection, load_teacher, teacher_statistics, tower_input

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


def best_query_score(image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
    """BLIP-2's ITC score [B, T]: the best of each image's query similarities [B, Q, E] to each text [T, E]."""
    return torch.einsum("bqe,te->btq", image_feats, text_feats).amax(-1)
PAD, UNK, CLS, SEP, MASK, DEC = range(len(SPECIALS))


@dataclass
class Blip2Loss:
    itc: float = 1.0
    itm: float = 1.0
    itg: bool = True

    def validate(self, where: str) -> None:
        if self.itc < 0 or self.itm < 0:
            raise ValueError(f"{where}: the weights itc and itm must be >= 0, got {self.itc}, {self.itm}")


@dataclass
class Blip2Eval:
    max_images: int = 0                     # 0: every held-out image
    rerank_top_k: int = 3                   # ITM re-ranks ITC's top k classes
    k_test: int = 128                       # caption-file retrieval: ITM re-ranks ITC's top k (LAVIS's k_test)

    def validate(self, where: str) -> None:
        if self.max_images < 0 or self.rerank_top_k < 1 or self.k_test < 1:
            raise ValueError(f"{where}: max_images >= 0, rerank_top_k >= 1 and k_test >= 1, got {self.max_images}, "
                             f"{self.rerank_top_k}, {self.k_test}")


def words(text: str) -> List[str]:
    """BERT's basic tokenisation of lower-cased ASCII text: words and single punctuation marks."""
    return re.findall(r"[a-z0-9]+|[^a-z0-9\s]", text.lower())


def _joined(tokens: List[str]) -> str:
    return " ".join(tokens).replace(" - ", "-").replace(" _ ", "_")  # compounds as one word again


def names_class(caption: List[str], class_name: str) -> bool:
    """Whether a caption's words name the class as a whole word: "t-shirt" is the words t, -,
    shirt, and a substring test of the decoded text missed every t-shirt and credited it to
    "shirt"; capitals and "_" in a class name were never found."""
    name = re.escape(_joined(words(class_name)))
    return re.search(rf"(?<![\w-]){name}(?![\w-])", _joined(caption)) is not None


class WordVocab:
    """A WordPiece vocabulary of whole words (no ## pieces: every caption word is in it)."""

    def __init__(self, tokens: List[str]):
        self.tokens = tokens
        self.ids = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def from_captions(cls, captions: List[str]) -> "WordVocab":
        return cls(SPECIALS + sorted({w for c in captions for w in words(c)}))

    def save(self, path: str) -> None:
        from ..io import write_atomic

        write_atomic(path, "\n".join(self.tokens) + "\n")

    def __call__(self, texts: List[str], max_length: int):
        """[CLS] words [SEP], truncated and padded to max_length: (input_ids, attention_mask)."""
        ids = torch.full((len(texts), max_length), PAD, dtype=torch.long)
        for i, t in enumerate(texts):
            row = [CLS] + [self.ids.get(w, UNK) for w in words(t)][: max_length - 2] + [SEP]
            ids[i, : len(row)] = torch.tensor(row)
        return ids, (ids != PAD).long()

    def decode(self, ids: List[int]) -> str:
        return " ".join(self.tokens[i] for i in ids if i >= len(SPECIALS)).replace(" .", ".")


@register_task("blip2_pretrain")
class Blip2PretrainTask(Task):
    sections = {"data": ClipData, "tower": TeacherSection, "loss": Blip2Loss, "eval": Blip2Eval}
    model_class = Blip2ForPretraining
    # LAVIS's blip2_image_train processor: RandomResizedCrop(scale=(0.5, 1.0), bicubic), flips.
    train_augmentation = {"scale": (0.5, 1.0), "hflip_prob": 0.5}
    batch_coupled = "ITC is contrastive over the batch, and ITM draws its negatives from it"
    image_pipeline = BLIP2_DATA  # LAVIS's and transformers' processors: resized whole to the square

    def __init__(self, recipe, rank: int = 0, world_size: int = 1):
        super().__init__(recipe, rank, world_size)
        if recipe.tower.target != "hidden":
            raise ValueError(f"tower.target {recipe.tower.target!r}: BLIP-2's Q-Former reads the tower's post-normed "
                             "tokens (LAVIS's ln_vision), not a projection; leave tower.target hidden")
        self.tower = load_teacher(recipe.tower, teacher_statistics(recipe.data, recipe.tower, self.image_pipeline))
        self.train_set = image_dataset(recipe.data, True)
        self.class_names = list(recipe.data.class_names or getattr(self.train_set, "classes", []) or [])
        if not self.class_names:
            raise ValueError("data.class_names: the dataset has no class names; list them in the recipe")
        self.captions = [[t.format(c) for t in recipe.data.templates] for c in self.class_names]
        self.vocab = WordVocab.from_captions([c for per_class in self.captions for c in per_class])

    # ---- model ------------------------------------------------------------------------------
    def build_model(self):
        """The recipe's config with the two sizes that come from elsewhere: the tower's width and
        the vocabulary's size."""
        config = self.model_config(self.recipe)
        config["qformer_config"]["vocab_size"] = len(self.vocab.tokens)
        t = self.tower.config  # the config records the tower the queries read (its width matters)
        config["vision_config"] = {k: t[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                      "num_attention_heads", "image_size", "patch_size")}
        return Blip2ForPretraining(config)

    @classmethod
    def model_config(cls, recipe) -> Dict[str, Any]:
        config = super().model_config(recipe)
        config["qformer_config"]["use_qformer_text_input"] = True
        return config

    @classmethod
    def memory_shape(cls, recipe):
        """Stage 1 for `tessera plan`: the Q-Former's passes per pair (ITC; ITM over the positive
        and two negatives; ITG) over the tower's tokens at `data.context_length` text columns (the
        captions are padded to it), the heads around it. The frozen tower counts its weights only
        (`frozen_beside`: it runs without gradients)."""
        from ..plan import ModelShape
        from ..plan.qformer import LABEL, fitted, pretraining_params, qformer_matrices, sample_passes

        task = cls(recipe)
        c = task.build_model().config  # the resolved config (cheap at planning sizes; nothing runs)
        q = c["qformer_config"]
        t = task.tower.config
        image = (t["image_size"] // t["patch_size"]) ** 2 + 1
        text, lc, d = recipe.data.context_length, recipe.loss, recipe.data
        passes = sample_passes(c, text, lc.itm > 0, lc.itg, image)
        n, h, e = c["num_query_tokens"], q["hidden_size"], c["image_text_hidden_size"]
        heads = (lambda k: k["logits"] * text * q["vocab_size"] + k["text"] * text * h + k["itc"] * n * e
                 if lc.itg else k["itc"] * n * e)
        params, _ = pretraining_params(c)
        pixels = 3 * d.image_size ** 2 * 4
        return ModelShape(recipe.task, [], other_params=sum(k for _, k in params), sample_bytes=pixels + 16 * text,
                          batch_size=d.batch_size, prefetch=d.prefetch, fitted=fitted(q, passes, "joint", heads),
                          fitted_label=LABEL,
                          autocast_matrices=qformer_matrices(q, text=True) + h * h + 2 * h * e + 2 * h,
                          frozen_beside=sum(p.numel() for p in task.tower.parameters()))

    @torch.no_grad()
    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen tower's post-normed tokens at `tower.layer` (LAVIS's ln_vision(ViT(x)))."""
        tower = self.tower.to(pixel_values.device)
        (feats,) = tower.forward_intermediates(tower_input(tower, pixel_values), indices=[self.recipe.tower.layer], norm=True,
                                               stop_early=True, intermediates_only=True)
        return feats

    # ---- data -------------------------------------------------------------------------------
    def train_loader(self, rank: int, world_size: int):
        return image_loader(self.recipe.data, self.train_set, True, self.recipe.train.seed, rank, world_size,
                            self.train_augmentation, select=caption_or_label(self.class_names),
                            pipeline=self.image_pipeline)

    def text_batch(self, batch: Dict[str, Any], step: int):
        """(input_ids, attention_mask) of the batch's captions (a shard's own, else a class
        template), made once per batch."""
        if "input_ids" not in batch:
            texts = batch_captions(self.recipe.data, self.class_names, batch, self.recipe.train.seed, step)
            batch["input_ids"], batch["attention_mask"] = self.vocab(texts, self.recipe.data.context_length)
        return batch["input_ids"], batch["attention_mask"]

    @staticmethod
    def text_ids(batch: Dict[str, Any]) -> torch.Tensor:
        """The contrastive identity of each pair: a templated caption is its class's (two images of
        one class have one text, so both are positives), a caption of its own is the sample's
        (negative numbers, so no class id can equal it)."""
        labels = batch["labels"]
        captions = list(batch.get("captions") or [])
        if not any(captions):
            return labels
        own = -1 - torch.tensor(sample_ids(batch), dtype=torch.long)
        return torch.where(torch.tensor([bool(c) for c in captions]), own, labels)

    def count_tokens(self, batch: Dict[str, Any], step: int) -> Optional[int]:
        if not self.recipe.loss.itg:
            return None
        return int(self.text_batch(batch, step)[1][:, 1:].sum())  # every real token after the first is predicted

    # ---- loss -------------------------------------------------------------------------------
    def compute_loss(self, wrapped, model, batch, step):
        px = batch["pixel_values"].to(model.device, non_blocking=True)  # pinned: the copy overlaps
        ids, mask = self.text_batch(batch, step)
        if step == 0 and self.out_dir and self.rank == 0:  # the vocabulary belongs with the run's checkpoints
            self.vocab.save(os.path.join(self.out_dir, "vocab.txt"))
        lc = self.recipe.loss
        out = wrapped(self.image_embeds(px), ids.to(px.device), mask.to(px.device), bos_token_id=DEC,
                      image_ids=self.text_ids(batch).to(px.device), seed=self.recipe.train.seed, step=step,
                      itm=lc.itm > 0, itg=lc.itg)
        means = {"itc": (lc.itc, out.loss_itc)}
        if lc.itm > 0:
            means["itm"] = (lc.itm, out.loss_itm)
        if not lc.itg:
            return {"loss": sum(w * m for w, m in means.values()), **{k: m for k, (_, m) in means.items()}}
        return {"loss": MixedLoss(TokenLoss(out.lm_loss_sum, out.lm_tokens), means, token_name="itg")}

    # ---- evaluation -------------------------------------------------------------------------
    def heldout(self, device):
        data = image_dataset(self.recipe.data, False)
        seen, limit = 0, self.recipe.eval.max_images or len(data)
        for batch in image_loader(self.recipe.data, data, False, self.recipe.train.seed,
                                  select=labelled(self.class_names), pipeline=self.image_pipeline):
            px, labels = batch["pixel_values"][: limit - seen], batch["labels"][: limit - seen]
            yield px.to(device), labels.to(device)
            seen += len(px)
            if seen >= limit:
                return

    @torch.no_grad()
    def evaluate_split(self, model, split) -> Dict[str, float]:
        """Retrieval on a caption split as the BLIP-2 paper reports it (LAVIS's evaluation): ITC
        (each image's query features against each caption's feature, the best query), then ITM
        re-ranking of each query's `eval.k_test` best (the match logit plus the ITC score), whose
        recalls are the `itm_` keys. The tower's output of every image is kept for ITM, as LAVIS
        keeps it."""
        d, device = self.recipe.data, model.device
        towers: List[torch.Tensor] = []

        def image_features(px):
            embeds = self.image_embeds(px)
            towers.append(embeds.cpu())
            return model.itc_image_features(embeds)

        def text_features(captions):
            ids, mask = self.vocab(captions, d.context_length)
            return model.itc_text_features(ids.to(device), mask.to(device))

        ids, mask = self.vocab(split.captions, d.context_length)

        def match(images, texts):
            if len(towers) > 1:  # once: every image is embedded before the first match
                towers[:] = [torch.cat(towers)]
            embeds = towers[0]
            return torch.cat([model.itm_logits(embeds[i].to(device), ids[t].to(device), mask[t].to(device))[:, 1].cpu()
                              for i, t in zip(images.split(d.batch_size), texts.split(d.batch_size))])

        return caption_retrieval_evaluate(model, split, None, d.image_size, batch_size=d.batch_size,
                                          image_features=image_features, text_features=text_features,
                                          score=best_query_score, rerank=match, k_test=self.recipe.eval.k_test,
                                          pipeline=pipeline_settings(d, self.image_pipeline))

    def evaluate(self, model, final: bool = False) -> Dict[str, Any]:
        """ITC zero-shot accuracy (each class: the mean of its templates' text features), ITM
        accuracy on balanced pairs (the true class's caption and another class's), ITM re-ranking
        of ITC's top-k classes, and greedy ITG captions that name the right class.

        ITM learns from one positive per two negatives, so its P(match) is calibrated to a prior of
        1/3: `itm_pair_acc` thresholds it at 1/2 as it stands, `itm_pair_acc_prior` at 1/3, Bayes'
        decision for pairs that are half positive. Re-ranking scores a candidate as LAVIS's
        `compute_sim_matrix` does: the match logit plus the ITC similarity."""
        device, L = model.device, self.recipe.data.context_length
        C, k = len(self.class_names), min(self.recipe.eval.rerank_top_k, len(self.class_names))
        flat = [c for per_class in self.captions for c in per_class]
        ids, mask = self.vocab(flat, L)
        text = model.itc_text_features(ids.to(device), mask.to(device))
        text = text.view(C, len(self.recipe.data.templates), -1)
        class_feats = torch.nn.functional.normalize(text.mean(1), dim=-1)                       # [C, E]
        first_ids, first_mask = (t.to(device) for t in self.vocab([p[0] for p in self.captions], L))
        itc = zero_shot_evaluate(model, ({"pixel_values": px, "labels": y.cpu()} for px, y in self.heldout(device)),
                                 class_feats, image_features=lambda px: model.itc_image_features(self.image_embeds(px)),
                                 score=best_query_score)
        g = torch.Generator().manual_seed(self.recipe.train.seed + 1)
        n = itm_right = itm_right_prior = rerank_right = captions_right = captioned = 0
        for px, labels in self.heldout(device):
            emb = self.image_embeds(px)
            scores = best_query_score(model.itc_image_features(emb), class_feats)                  # [B, C]
            other = (labels + torch.randint(1, C, labels.shape, generator=g).to(device)) % C
            pairs = torch.cat([labels, other])
            p = require_finite(model.itm_scores(emb.repeat(2, 1, 1), first_ids[pairs], first_mask[pairs]), "ITM scores")
            itm_right += int((p[: len(px)] > 0.5).sum() + (p[len(px):] <= 0.5).sum())
            itm_right_prior += int((p[: len(px)] > 1 / 3).sum() + (p[len(px):] <= 1 / 3).sum())
            top_sim, top = scores.topk(k, -1)                                                  # [B, k]
            match = model.itm_logits(emb.repeat_interleave(k, 0), first_ids[top.reshape(-1)],
                                     first_mask[top.reshape(-1)])[:, 1].view(-1, k)
            rerank = require_finite(match + top_sim, "ITM re-ranking scores")
            rerank_right += int((top.gather(1, rerank.argmax(-1, keepdim=True)).squeeze(1) == labels).sum())
            if captioned < 200:
                caps = model.caption(emb[:50], DEC, SEP, L)
                for row, c in zip(caps.tolist(), labels[:50].tolist()):
                    said = [self.vocab.tokens[i] for i in row if i >= len(SPECIALS)]
                    captions_right += int(names_class(said, self.class_names[c]))
                captioned += len(caps)
            n += len(px)
        require_items(n, "BLIP-2 evaluation: held-out images")
        return {"zero_shot_acc": itc["zero_shot_top1"], "zero_shot_top5": itc["zero_shot_top5"],
                "itm_pair_acc": itm_right / (2 * n), "itm_pair_acc_prior": itm_right_prior / (2 * n),
                "itm_rerank_r1": rerank_right / n, "caption_class_acc": captions_right / captioned,
                "eval_images": n}
