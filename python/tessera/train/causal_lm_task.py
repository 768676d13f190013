"""Next-token pretraining of a LLaMA-style language model for the Trainer: one document per line
of a text file, framed by bos/eos, truncated to `max_length`; the loss is a TokenLoss over every
real token (padding ignored). Evaluation: loss and perplexity on a held-out text file."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Dict

import torch

from ..eval.finite import require_items
from ..chat import IGNORE
from ..models.llama import LlamaForCausalLM
from ..bounded_encoding import encode_at_most
from ..text import SentencePieceTokenizer
from ..schema import require
from .loaders import TensorLoader
from .tasks import Task, TokenLoss, register_task
from ..io import is_regular_file


@dataclass
class TextData:
    train: str = ""                         # a text file, one document per line
    eval: str = ""                          # held-out documents (optional)
    tokenizer: str = ""                     # a SentencePiece model, tokenizer.json or their folder
    max_length: int = 64
    batch_size: int = 64                    # per process

    def validate(self, where: str) -> None:
        if not self.train or not self.tokenizer:
            raise ValueError(f"{where}: train (a text file) and tokenizer (a SentencePiece model) are required")
        if self.max_length < 2 or self.batch_size < 1:
            raise ValueError(f"{where}: max_length must be >= 2 and batch_size >= 1")


@dataclass
class TextEval:
    max_documents: int = 2048               # held-out documents per evaluation (0: all)

    def validate(self, where: str) -> None:
        require(self.max_documents >= 0, f"{where}.max_documents must be >= 0 (0: all), got {self.max_documents}")


def encode_lines(path: str, tokenizer, max_length: int, limit: int = 0) -> Dict[str, torch.Tensor]:
    if not is_regular_file(path):
        raise FileNotFoundError(f"text file {path!r} not found")
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    if limit:
        lines = lines[:limit]
    if not lines:
        raise ValueError(f"{path}: no text")
    ids = torch.zeros(len(lines), max_length, dtype=torch.long)
    labels = torch.full((len(lines), max_length), IGNORE, dtype=torch.long)
    for i, line in enumerate(lines):
        # = encode(line, add_bos=True, add_eos=True)[:max_length], without encoding what is cut
        head = [tokenizer.bos_id] if tokenizer.bos_id >= 0 else []
        body, _ = encode_at_most(tokenizer, line, max_length - len(head))
        row = (head + body + ([tokenizer.eos_id] if tokenizer.eos_id >= 0 else []))[:max_length]
        ids[i, :len(row)] = torch.tensor(row)
        labels[i, :len(row)] = ids[i, :len(row)]
    return {"input_ids": ids, "labels": labels, "attention_mask": (labels != IGNORE).long()}


@register_task("causal_lm")
class CausalLmTask(Task):
    sections = {"data": TextData, "eval": TextEval}
    model_class = LlamaForCausalLM

    def __init__(self, recipe, rank: int = 0, world_size: int = 1):
        super().__init__(recipe, rank, world_size)
        d = recipe.data
        self.tokenizer = SentencePieceTokenizer(d.tokenizer)  # text only: no added tokens
        # The model's own user-defined pieces cut out as LLaVA's task cuts <image>: the next stage reads
        # the same ids, and the saved tokenizer (transformers cuts added tokens) gives them too.
        self.tokenizer.add_special_tokens(self.tokenizer.user_defined)
        vocab = self.model_config(recipe).get("vocab_size")
        if vocab < self.tokenizer.vocab_size:
            raise ValueError(f"model vocab_size {vocab} is smaller than the tokenizer's {self.tokenizer.vocab_size} "
                             f"({d.tokenizer})")
        self.train_set = encode_lines(d.train, self.tokenizer, d.max_length)

    def save_beside(self, folder: str) -> None:
        """The tokenizer, so AutoTokenizer reads the checkpoint with tessera's ids."""
        self.tokenizer.save_pretrained(folder)

    def train_loader(self, rank: int, world_size: int):
        return TensorLoader(self.train_set, self.recipe.data.batch_size, shuffle=True, seed=self.recipe.train.seed,
                            rank=rank, world_size=world_size)

    def compute_loss(self, wrapped, model, batch, step):
        width = int(batch["attention_mask"].sum(1).max())
        device = model.device
        out = wrapped(input_ids=batch["input_ids"][:, :width].to(device),
                      attention_mask=batch["attention_mask"][:, :width].to(device),
                      labels=batch["labels"][:, :width].to(device))
        return {"loss": TokenLoss(out.loss_sum, out.num_tokens)}

    @classmethod
    def memory_shape(cls, recipe):
        """The LM for `tessera plan`, over the longest document of the training file (the width a
        batch is trimmed to), or data.max_length when the file cannot be read yet."""
        from ..plan.lm import causal_lm_shape

        d, m = recipe.data, recipe.model
        tokens = d.max_length
        try:
            ids = encode_lines(d.train, SentencePieceTokenizer(d.tokenizer), d.max_length)["attention_mask"]
            tokens = int(ids.sum(1).max())
        except (OSError, ValueError, RuntimeError):
            pass
        return causal_lm_shape(cls.model_config(recipe), tokens, d.batch_size, m.freeze, m.trainable)

    @torch.no_grad()
    def evaluate(self, model, final: bool = False) -> Dict[str, Any]:
        d = self.recipe.data
        if not d.eval:
            return {}
        held = encode_lines(d.eval, self.tokenizer, d.max_length, self.recipe.eval.max_documents)
        total, count = 0.0, 0.0
        for start in range(0, len(held["input_ids"]), d.batch_size):
            b = {k: v[start:start + d.batch_size].to(model.device) for k, v in held.items()}
            out = model(**b)
            total, count = total + float(out.loss_sum), count + float(out.num_tokens)
        loss = total / require_items(count, f"{d.eval}: held-out tokens")
        try:  # as transformers' run_clm: inf only past float range
            perplexity = math.exp(loss)
        except OverflowError:
            perplexity = math.inf
        return {"eval_loss": loss, "perplexity": perplexity}
