"""LLaVA's visual instruction tuning for the Trainer. One task, two stages chosen by the recipe:

- stage 1 (feature alignment): a CLIP run's vision tower and a language-model run's LLaMA, both
  frozen (`model.trainable: [multi_modal_projector]`), the projector learns on captions with the
  `plain` template;
- stage 2 (instruction tuning): from the stage-1 run (`init.checkpoint`), the projector and the
  LM train on questions and answers with the `v1` or `llava_v1` template, fully or with LoRA on the LM (`lora`).

The loss counts the answer tokens only, as a TokenLoss (every answer token weighs the same across
micro-batches and ranks). Evaluation answers held-out questions by greedy generation and reports
exact-match accuracy, overall and per sample `kind`."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import torch

from ..eval.finite import require_items
from ..models.llava import LlavaForConditionalGeneration
from ..models.pretrained import check_override_keys, merge_config, read_config
from ..models.projectors import projector_hooks
from ..models.timm_compat import CLIP_DATA
from ..models.weights import load_part, load_weights
from ..text import SentencePieceTokenizer
from .checkpoint import resolve_checkpoint
from .llava_processor import save_processor
from .conversation_data import (ConversationData, encode_samples, greedy_answers, idle_image_row, load_pixels,
                                read_samples)
from .conversation_index import ConversationSet, load_index, log_to_stderr
from .image_data import inherit_statistics
from .distributed import DistInfo, all_true
from .loaders import IndexLoader
from ..schema import require
from .._warn import warn
from .tasks import Task, TokenLoss, register_task

LM_LINEARS = r"language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class LlavaInit:
    checkpoint_fields: ClassVar[Tuple[str, ...]] = ("checkpoint", "vision_tower", "language_model", "projector")
    checkpoint: str = ""                    # a LLaVA run or checkpoint folder: every weight (stage 2)
    vision_tower: str = ""                  # a CLIP run or checkpoint folder: the tower (stage 1)
    language_model: str = ""                # a causal_lm run or checkpoint folder: the LLaMA (stage 1)
    projector: str = ""                     # what the projector starts from: a blip2_pretrain run (qformer),
    #                                         LLaVA's mm_projector.bin or a LLaVA run (mlp2x_gelu, linear)

    def validate(self, where: str) -> None:
        if self.checkpoint and (self.vision_tower or self.language_model or self.projector):
            raise ValueError(f"{where}: give checkpoint (every weight) or vision_tower/language_model/projector, "
                             "not both")


@dataclass
class LoraSection:
    r: int = 0                              # rank; 0: no LoRA
    alpha: float = 16.0
    dropout: float = 0.0
    use_rslora: bool = False
    target_modules: str = LM_LINEARS        # a regular expression over linear-layer paths
    modules_to_save: List[str] = field(default_factory=list)  # modules trained whole and saved with the adapter

    def validate(self, where: str) -> None:
        require(self.r >= 0, f"{where}.r must be >= 0 (0: no LoRA), got {self.r}")
        require(self.alpha > 0, f"{where}.alpha must be > 0, got {self.alpha}")
        require(0 <= self.dropout < 1, f"{where}.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class LlavaEval:
    max_samples: int = 0                    # held-out questions answered per evaluation (0: all)
    max_new_tokens: int = 12
    batch_size: int = 64
    caption_metrics: bool = False           # also BLEU-4 and CIDEr-D of the answers (pycocoevalcap)

    def validate(self, where: str) -> None:
        require(self.max_samples >= 0, f"{where}.max_samples must be >= 0 (0: all), got {self.max_samples}")
        require(self.max_new_tokens >= 1, f"{where}.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        require(self.batch_size >= 1, f"{where}.batch_size must be >= 1, got {self.batch_size}")
        if self.caption_metrics:  # refused now, not at the first evaluation after training has run
            try:
                import pycocoevalcap  # noqa: F401
            except ImportError:
                raise ValueError(f"{where}.caption_metrics needs the pycocoevalcap package (pip install "
                                 "pycocoevalcap)") from None


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", text.lower()).strip()


@register_task("llava")
class LlavaTask(Task):
    sections = {"data": ConversationData, "init": LlavaInit, "lora": LoraSection, "eval": LlavaEval}
    model_class = LlavaForConditionalGeneration
    evaluation_gathers_all = True  # generation runs the decoder layers in C++, past FSDP's hooks
    image_pipeline = CLIP_DATA  # the CLIP tower's; a tower's own checkpoint says otherwise (inherit_statistics)

    def __init__(self, recipe, rank: int = 0, world_size: int = 1):
        super().__init__(recipe, rank, world_size)
        d = recipe.data
        self._load_tokenizer_and_config()
        vocab = self.config["text_config"]["vocab_size"]
        if vocab < self.tokenizer.vocab_size:
            raise ValueError(f"the language model's vocab_size {vocab} is smaller than the tokenizer's "
                             f"{self.tokenizer.vocab_size} ({d.tokenizer}): they do not belong together")
        context = self.config["text_config"]["max_position_embeddings"]
        if d.eval and d.max_length + recipe.eval.max_new_tokens > context:
            raise ValueError(f"data.max_length {d.max_length} + eval.max_new_tokens {recipe.eval.max_new_tokens} "
                             f"exceed the language model's context ({context} positions): evaluation could not "
                             f"generate; lower one of them")
        if self.config.get("projector_type") == "qformer" and d.image_aspect_ratio == "square":
            warn("data.image_aspect_ratio square center-crops the image; BLIP-2's processor (and tessera's "
                 "stage 1) resizes it whole to the square: set data.image_aspect_ratio: squash")
        tower = recipe.init.checkpoint or recipe.init.vision_tower
        if tower:  # the tower's statistics, as LLaVA takes its tower's image processor
            inherit_statistics(d, resolve_checkpoint(tower, "init.checkpoint" if recipe.init.checkpoint
                                                     else "init.vision_tower"), self.image_pipeline)
        self.transform = d.transform()
        self.train_set = self.index(d.train)

    def _load_tokenizer_and_config(self) -> None:
        """The SentencePiece tokenizer with "<image>", the model config, and their agreement on the
        image token (LLaVA and the tasks built on a LLaVA run)."""
        d = self.recipe.data
        self.tokenizer = SentencePieceTokenizer(d.tokenizer, special_tokens=["<image>"])
        self.config = self._config()
        self.image_token_id = self.tokenizer.special_tokens["<image>"]
        if self.config["image_token_index"] != self.image_token_id:
            raise ValueError(f"model config image_token_index {self.config['image_token_index']} differs from the "
                             f"tokenizer's <image> id {self.image_token_id} ({d.tokenizer})")

    # ---- model ------------------------------------------------------------------------------
    def _config(self) -> Dict[str, Any]:
        init, overrides = self.recipe.init, self.recipe.model.config
        if init.checkpoint:
            base = read_config(resolve_checkpoint(init.checkpoint, "init.checkpoint"))
        else:
            base = {"model_type": "llava"}
            if init.vision_tower:
                clip = read_config(resolve_checkpoint(init.vision_tower, "init.vision_tower", "train CLIP first"))
                base["vision_config"] = clip.get("vision_config", clip)
            if init.language_model:
                base["text_config"] = read_config(resolve_checkpoint(init.language_model, "init.language_model"))
        config = merge_config(base, overrides)
        config.setdefault("image_token_index", self.tokenizer.special_tokens["<image>"])
        resolved = LlavaForConditionalGeneration.resolve_config(config)
        check_override_keys(LlavaForConditionalGeneration, resolved, overrides)
        return resolved

    def save_beside(self, folder: str) -> None:
        """The tokenizer, image processor and chat template, for transformers' LlavaProcessor."""
        save_processor(folder, self.tokenizer, self.recipe.data, self.config, self.image_tokens,
                       self.conversation_template)

    @property
    def conversation_template(self) -> str:
        """The conversation template the run's answers are trained in (a name or a JSON file)."""
        return self.recipe.data.template

    @property
    def image_tokens(self) -> int:
        return int(self.config["image_seq_length"])

    def build_model(self) -> LlavaForConditionalGeneration:
        init = self.recipe.init
        model = LlavaForConditionalGeneration(self.config)
        if init.checkpoint:
            folder = resolve_checkpoint(init.checkpoint, "init.checkpoint")
            model.load_state_dict(load_weights(folder), strict=True)
        if init.vision_tower:
            folder = resolve_checkpoint(init.vision_tower, "init.vision_tower")
            # The tower's post-norm is read only by a projector of normed features (BLIP-2's Q-Former).
            load_part(model, load_weights(folder), folder, r"^vision_model\.", "vision_tower.",
                      fresh=None if model.reads_normed_features() else "vision_tower.post_layernorm.")
        if init.language_model:
            folder = resolve_checkpoint(init.language_model, "init.language_model")
            load_part(model, load_weights(folder), folder, r"^", "language_model.")
        if init.projector:  # the projector's family says which runs start it (BLIP-2: a stage-1 run)
            kind = self.config.get("projector_type", "mlp2x_gelu")
            hooks = projector_hooks(kind, "init.projector")
            if hooks.init_from_run is None:
                raise ValueError(f"init.projector: a {kind!r} projector does not start from another run; "
                                 "train it from scratch (leave init.projector empty)")
            folder = init.projector if os.path.isfile(init.projector) else resolve_checkpoint(
                init.projector, "init.projector", hooks.init_hint)  # a file: LLaVA's mm_projector.bin
            hooks.init_from_run(model, folder, self.config)
        source = init.checkpoint or init.language_model
        if source:  # its generation_config.json goes on with its weights (stop ids, max_new_tokens)
            from ..models.generation_view import read_generation_defaults

            model.generation_defaults = read_generation_defaults(
                resolve_checkpoint(source, "init.checkpoint" if init.checkpoint else "init.language_model"),
                int(self.config["text_config"]["vocab_size"]))
        lora = self.recipe.lora
        if lora.r:
            from ..lora import apply_lora

            apply_lora(model, lora.target_modules, lora.r, lora.alpha, lora.dropout, lora.use_rslora,
                       modules_to_save=lora.modules_to_save)
        return model

    @classmethod
    def memory_shape(cls, recipe):
        """LLaVA for `tessera plan`: the config as build_model resolves it, the LM over the longest
        encoded training sample (image tokens included), the recipe's freezing and LoRA."""
        from ..plan.lm import llava_shape

        task = cls(recipe)
        m = recipe.model
        tokens, images = task.longest_sample()
        return llava_shape(task.config, tokens, images, recipe.data.batch_size, m.freeze, m.trainable, recipe.lora)

    def longest_sample(self):
        """(tokens, images) of the training data's longest sample, for the memory plan."""
        index = self.train_set.index
        return int(index.lengths.max()), max(1, int(index.images.max()))

    def load_model(self, path: str):
        from ..factory import from_pretrained

        return from_pretrained(path, dtype=torch.float32)  # checkpoints are written merged: a plain LLaVA

    # ---- data -------------------------------------------------------------------------------
    def index(self, path: str) -> ConversationSet:
        """The training samples through their index (built or checked once; see conversation_index)."""
        d = self.recipe.data
        index = load_index(path, self.tokenizer, d.template, self.image_token_id, self.image_tokens, d.max_length,
                           d.image_folder, limit=d.max_samples, skip_invalid=d.skip_invalid, cache_dir=d.index_cache,
                           log=log_to_stderr if self.rank == 0 else (lambda *a: None))
        return ConversationSet(index, self.tokenizer, d.template, self.image_token_id, self.image_tokens,
                               d.max_length, d.image_folder)

    def encode(self, path: str, supervise: bool, limit: Optional[int] = None):
        """`limit` samples (0: all; None: data.max_samples)."""
        d = self.recipe.data
        samples = read_samples(path, d.max_samples if limit is None else limit)
        return encode_samples(samples, path, self.tokenizer, d.template, self.image_token_id, self.image_tokens,
                              d.max_length, d.image_folder, supervise=supervise)

    def inspect(self, samples: int = 3) -> str:
        """`tessera inspect-data`: the first samples token by token (every sample was checked
        when the task was built)."""
        from .conversation_data import describe

        d, index = self.recipe.data, self.train_set.index
        s = self.train_set.encoded(range(min(samples, len(index))))
        parts = [f"{d.train}: {len(index)} samples pass the checks; template {d.template!r}, "
                 f"{self.image_tokens} image tokens per image, {int(index.lengths.sum())} tokens in all"]
        for i in range(len(s.samples)):
            parts.append(f"sample {i} (id {s.samples[i].get('id', i)!r}, images {s.images[i]}):\n"
                         + describe(s, self.tokenizer, i, self.image_token_id))
        return "\n\n".join(parts)

    def leaves_parameters_unused(self) -> bool:
        """A batch of text-only samples runs neither the tower nor the projector (LLaVA-1.5's mix
        has such samples; group_by_modality_length makes whole batches of them)."""
        return bool((self.train_set.index.images == 0).any())

    def train_loader(self, rank: int, world_size: int):
        d, s = self.recipe.data, self.train_set

        def fetch(rows: torch.Tensor) -> Dict[str, Any]:
            e = s.encoded(rows.tolist())  # padded to the batch's longest sample
            return {"input_ids": e.input_ids, "labels": e.labels, "attention_mask": e.attention_mask,
                    "image_paths": [p for paths in e.images for p in paths]}

        lengths = s.index.modality_lengths if d.group_by_modality_length else None
        return IndexLoader(len(s), fetch, d.batch_size, shuffle=True, seed=self.recipe.train.seed, rank=rank,
                           world_size=world_size, group_lengths=lengths,
                           accumulation_steps=self.recipe.optim.accumulation_steps)

    pads_unused_under_fsdp2 = True

    def needs_idle_row(self, pixels: Optional[torch.Tensor], device) -> bool:
        """Whether this rank must add an idle image row (conversation_data.idle_image_row): FSDP2
        gathers the tower's shards in its forward, so a rank without an image must run it too, or
        the ranks' collectives pair up wrongly (gloo aborts, NCCL hangs or mixes buffers). Every
        rank takes part in the vote, images or not."""
        sharded = self.recipe.train.strategy == "fsdp2" and self.world_size > 1
        return sharded and not all_true(pixels is None, DistInfo(self.rank, self.world_size, device=device)) \
            and pixels is None

    def compute_loss(self, wrapped, model, batch, step):
        device = model.device
        pixels = load_pixels(batch["image_paths"], self.transform)
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        if self.needs_idle_row(pixels, device):
            ids, mask, labels, pixels = idle_image_row(ids, mask, labels, self.image_token_id, self.image_tokens,
                                                       self.recipe.data.image_size)
        out = wrapped(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device),
                      pixel_values=None if pixels is None else pixels.to(device))
        return {"loss": TokenLoss(out.loss_sum, out.num_tokens)}

    # ---- evaluation -------------------------------------------------------------------------
    def answer(self, model, encoded, max_new_tokens: int) -> List[str]:
        """Greedy answers to every prompt of `encoded` (conversation_data.greedy_answers), the
        recipe's eval batch size at a time."""
        return greedy_answers(model, encoded, self.tokenizer, self.transform, max_new_tokens,
                              self.recipe.eval.batch_size)

    def evaluate_captions(self, model, split, prompt: str = "") -> Dict[str, Any]:
        """A greedy caption for each image of `split` (a RetrievalSplit: COCO's or Flickr30k's
        Karpathy JSON, LAVIS lists), from a user turn of the image and `prompt` (empty: the image
        alone, as stage 1 learns captions; LLaVA-1.5 asks "Provide a one-sentence caption for the
        provided image."), scored against all of that image's captions: BLEU-4 and CIDEr-D through
        pycocoevalcap, as the captioning papers report them."""
        from ..chat import IMAGE_PLACEHOLDER
        from ..eval.captioning import caption_metrics

        if not split.images:
            raise ValueError(f"--captioning: split {split.name!r} holds no image")
        folder = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in split.images])
        value = f"{IMAGE_PLACEHOLDER}\n{prompt}" if prompt else IMAGE_PLACEHOLDER
        samples = [{"id": i, "image": os.path.relpath(os.path.abspath(p), folder),
                    "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": ""}]}
                   for i, p in enumerate(split.images)]
        d, cfg = self.recipe.data, self.recipe.eval
        encoded = encode_samples(samples, f"captioning split {split.name!r}", self.tokenizer, d.template,
                                 self.image_token_id, self.image_tokens, d.max_length, folder, supervise=False)
        captions = dict(enumerate(self.answer(model, encoded, cfg.max_new_tokens)))
        references: Dict[int, List[str]] = {i: [] for i in captions}
        for caption, image in zip(split.captions, split.caption_image):
            references[image].append(caption)
        out = caption_metrics(captions, references)
        self.last_captions = [{"image": split.images[i], "caption": captions[i], "references": references[i]}
                              for i in captions]
        return {**out, "num_images": len(captions), "num_captions": len(split.captions)}

    def evaluate(self, model, final: bool = False) -> Dict[str, Any]:
        cfg, d = self.recipe.eval, self.recipe.data
        if not d.eval:
            return {}
        if getattr(self, "_eval_set", None) is None:
            self._eval_set = self.encode(d.eval, supervise=False, limit=cfg.max_samples)
        es = self._eval_set
        right: Dict[str, List[int]] = {}
        self.last_answers = []
        for r, (sample, answer) in enumerate(zip(es.samples, self.answer(model, es, cfg.max_new_tokens))):
            reference = sample["conversations"][-1]["value"]
            ok = int(_normalise(answer) == _normalise(reference))
            right.setdefault(sample.get("kind", "all"), []).append(ok)
            self.last_answers.append({"id": sample.get("id", r), "answer": answer, "reference": reference})
        answered = require_items(sum(len(v) for v in right.values()), "LLaVA evaluation: held-out answers")
        out = {"answer_accuracy": sum(sum(v) for v in right.values()) / answered}
        if len(right) > 1 or "all" not in right:
            out.update({f"accuracy_{k}": sum(v) / len(v) for k, v in sorted(right.items())})
        if cfg.caption_metrics:
            from ..eval.captioning import caption_metrics

            scores = caption_metrics({i: a["answer"] for i, a in enumerate(self.last_answers)},
                                     {i: [a["reference"]] for i, a in enumerate(self.last_answers)})
            out.update({k: v for k, v in scores.items() if k in ("BLEU-4", "CIDEr-D")})
        if final and self.out_dir and self.rank == 0:
            from ..io import write_json

            write_json(os.path.join(self.out_dir, "answers.json"), self.last_answers)
        return out
