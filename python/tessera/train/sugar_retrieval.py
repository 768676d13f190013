"""Retrieval and retrieval-augmented answers from a trained Sugar run, outside training: the one
model that generates also embeds interleaved image-text samples (arXiv 2411.00304).

    sugar = SugarRetriever.from_run("runs/demo-sugar", image_folder="runs/data/interleaved")
    store = sugar.embed([{"segments": [{"image": "img/3.png"}, {"text": "A sneaker."}]}, ...])
    scores, rows = sugar.search(sugar.embed(queries), store, k=3)
    sugar.ask("img/9.png", "What is this item?", references=[("img/3.png", "A sneaker.")])

A sample is embedded at its last slice (the retrieval projector's r, unit length); the recipe the
run was trained with (recipe.json beside its weights) gives the tokenizer, template, image size
and length. Image paths are relative to `image_folder` and may not leave it.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..chat import load_template, run_template
from ..models.sugar import SugarModel
from ..text import SentencePieceTokenizer
from ..models.timm_compat import CLIP_DATA
from .checkpoint import resolve_checkpoint
from .conversation_data import aspect_transform, encode_samples, greedy_answers
from .image_data import checkpoint_data_config
from .interleaved_data import InterleavedSample, check_record, encode_interleaved
from .sugar_chat import rag_sample
from .sugar_eval import embed_encoded
from ..io import is_regular_file


class SugarRetriever:
    def __init__(self, model: SugarModel, tokenizer: SentencePieceTokenizer, template: str, image_size: int,
                 max_length: int, image_folder: str = ".", image_aspect_ratio: str = "square",
                 image_mean: Sequence[float] = (), image_std: Sequence[float] = ()):
        self.model, self.tokenizer, self.template = model.eval(), tokenizer, template
        self.image_token_id = tokenizer.special_tokens["<image>"]
        self.image_tokens = int(model.config["image_seq_length"])
        self.max_length, self.image_folder = max_length, os.path.abspath(image_folder)
        self.transform = aspect_transform(image_size, image_aspect_ratio, image_mean, image_std)  # as trained
        load_template(template)  # a bad name fails here, not at the first question

    @classmethod
    def from_run(cls, run: str, image_folder: str = ".", tokenizer: Optional[str] = None) -> "SugarRetriever":
        """The newest checkpoint of a Sugar run folder (or a checkpoint folder) with the recipe it
        was trained with; `tokenizer` overrides the recipe's path (a run moved elsewhere)."""
        folder = resolve_checkpoint(run, "Sugar run")
        recipe_file = os.path.join(folder, "recipe.json")
        if not is_regular_file(recipe_file):
            raise FileNotFoundError(f"{folder}: no recipe.json beside the weights (not a tessera training checkpoint)")
        with open(recipe_file, encoding="utf-8") as f:
            recipe: Dict[str, Any] = json.load(f)
        if recipe.get("task") != "sugar":
            raise ValueError(f"{recipe_file}: task {recipe.get('task')!r}, not sugar: no retrieval projector")
        d = recipe["data"]
        path = tokenizer or d["tokenizer"]
        if not is_regular_file(path):  # a run moved elsewhere: recipe.json holds the path it was trained with
            raise FileNotFoundError(f"{recipe_file}: its tokenizer {path!r} is not there (a run moved elsewhere?); pass "
                                    "SugarRetriever.from_run(..., tokenizer=PATH)")
        model = SugarModel.from_pretrained(folder)
        tok = SentencePieceTokenizer(path, special_tokens=["<image>"])
        template = recipe.get("eval", {}).get("template") or run_template(folder) or "v1"
        stats = checkpoint_data_config(folder, CLIP_DATA)  # the statistics it was trained with
        return cls(model, tok, template, int(d["image_size"]), int(d["max_length"]), image_folder,
                   d.get("image_aspect_ratio") or "square", stats["mean"], stats["std"])

    def _samples(self, samples: Sequence[Dict[str, Any]], where: str) -> List[InterleavedSample]:
        """The samples checked as a data file's records are (check_record; the id is optional)."""
        if isinstance(samples, dict) or not isinstance(samples, (list, tuple)):
            raise TypeError(f"{where}: give a list of samples ({{'segments': [...]}} each), got {type(samples).__name__}")
        if not samples:
            raise ValueError(f"{where}: no samples")
        out = []
        for i, s in enumerate(samples):
            record = {"id": i, **s} if isinstance(s, dict) else s
            check_record(record, f"{where}[{i}]")
            out.append(InterleavedSample(record["id"], record["segments"], where, f"{where}[{i}]", record))
        return out

    def embed(self, samples: Sequence[Dict[str, Any]], batch_size: int = 16) -> torch.Tensor:
        """[N, dim] unit retrieval vectors, each sample at its last slice."""
        encoded = encode_interleaved(self._samples(samples, "embed"), self.tokenizer, self.image_token_id,
                                     self.image_tokens, self.max_length, self.image_folder)
        return F.normalize(embed_encoded(self.model, encoded, self.transform, batch_size)[0], dim=-1)

    @staticmethod
    def search(queries: torch.Tensor, store: torch.Tensor, k: int = 5) -> Tuple[torch.Tensor, torch.Tensor]:
        """(cosine scores [Q, k], store rows [Q, k]) of each query's k nearest stored samples."""
        if store.dim() != 2 or queries.dim() != 2 or queries.shape[1] != store.shape[1]:
            raise ValueError(f"search: queries [Q, dim] and store [N, dim] of one dim, got {list(queries.shape)} and "
                             f"{list(store.shape)}")
        if not 1 <= k <= store.shape[0]:
            raise ValueError(f"search: k = {k}, the store holds {store.shape[0]} (need 1 <= k <= store)")
        return (F.normalize(queries.float(), dim=-1) @ F.normalize(store.float(), dim=-1).T).topk(k, dim=1)

    def ask(self, image: str, question: str, references: Sequence[Tuple[str, str]] = (),
            reference_images: bool = True, max_new_tokens: int = 32) -> str:
        """A greedy answer about `image`, the retrieved `references` (image, sentence) put before
        it in the user turn as Sugar's evaluation does (sugar_chat.rag_sample)."""
        context = int(self.model.config["text_config"]["max_position_embeddings"])
        if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens < context:
            raise ValueError(f"ask: max_new_tokens must be in [1, {context}) (the model's context), got {max_new_tokens!r}")
        if isinstance(references, (str, bytes)) or not all(
                isinstance(r, (list, tuple)) and len(r) == 2 and all(isinstance(x, str) for x in r) for r in references):
            raise ValueError(f"ask: references are (image path, sentence) pairs, got {str(references)[:80]!r}")
        sample = rag_sample("ask", references, image, question, "", reference_images)
        room = context - max_new_tokens
        try:
            encoded = encode_samples([sample], "ask", self.tokenizer, self.template, self.image_token_id,
                                     self.image_tokens, room, self.image_folder, supervise=False)
        except ValueError as e:
            if "more than max_length" not in str(e):
                raise
            raise ValueError(f"ask: the prompt ({len(references)} reference(s), the image and the question) does not "
                             f"fit the model's context of {context} positions with max_new_tokens {max_new_tokens}: "
                             "give fewer references or ask for fewer new tokens") from None
        return greedy_answers(self.model.llava, encoded, self.tokenizer, self.transform, max_new_tokens, 1)[0]
