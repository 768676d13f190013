"""Sugar (arXiv 2411.00304) on tessera's LLaVA, task `sugar`: one model trained to generate and to
retrieve, L = L_g + alpha * L_d.

- L_g: the language-model loss on the interleaved samples' text (a TokenLoss: every text token
  weighs the same across micro-batches and ranks).
- L_d: points per sample (slice ends drawn by `sample_points`, seeded per (seed, step, sample) so
  any number of ranks draws what one process draws); a point's vector is the mean of the last
  layer's hidden states over its image's tokens, or the state at its text's last token; the
  retrieval projector maps it to r; M_r = cosine over the batch's points (every rank's, gathered
  with gradient); M_l = normalised GAK over the triple-kernel cost of the points' prefixes, from
  frozen encoders cached per data file (`sugar_targets`), 1 within a sample;
  L_d = (1/n) sum_ij (M_r - M_l)^2 (`losses.sugar`).
- Both go into one MixedLoss. L_g is exact across ranks and accumulation; L_d is exact across
  ranks (points gathered) but compares the points of one micro-batch, so accumulation gives
  separate, smaller L_d batches (`batch_coupled`: said at run time, kept by `tessera plan`).
- `data.instruct` mixes LLaVA conversation samples into training (the paper continues on its
  interleaved data together with LLaVA-1.5's instruction data): they take L_g on their answers and
  have no points, so L_d sees the interleaved samples only.

The model: the LLaVA demo run (`init.checkpoint`), LoRA on the LM's q_proj/v_proj (the paper's)
with the multimodal projector trained whole (ours: docs/design.md), and the retrieval projector, in one
`SugarModel` (why: tessera/models/sugar.py). Evaluation (`sugar_eval`): interleaved retrieval and
Winoground-style scores through r on the held-out data."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..chat import IGNORE, load_template, run_recipe, run_template
from ..models.llava import LlavaForConditionalGeneration
from ..models.sugar import RetrievalProjector, SugarModel
from ..schema import require
from ..seeds import stream_seed
from .checkpoint import resolve_checkpoint
from .conversation_data import ASPECT_MODES, EncodedSamples, aspect_transform, encode_samples, read_samples
from .image_data import check_statistics, inherit_statistics
from .interleaved_data import EncodedInterleaved, encode_interleaved, read_interleaved, sample_points
from .llava_task import LlavaInit, LlavaTask, LoraSection
from .loaders import IndexLoader
from .sugar_targets import SugarTargets, slice_vectors, target_matrix
from .tasks import MixedLoss, Task, TokenLoss, register_task

@dataclass
class SugarData:
    train: str = ""                         # interleaved JSON lines (python -m tessera.data.interleaved)
    eval: str = ""                          # held-out interleaved samples: retrieval
    pairs: str = ""                         # held-out minimal pairs: Winoground-style scores
    image_folder: str = ""                  # image paths are relative to it (default: each file's folder)
    tokenizer: str = ""                     # the LLaVA run's SentencePiece model
    max_length: int = 112                   # tokens per sample: 4 items of 16 image tokens and a sentence fit
    batch_size: int = 16                    # samples per process
    image_size: int = 28
    max_samples: int = 0                    # training samples read (0: all)
    instruct: str = ""                      # LLaVA conversation JSON mixed into training (L_g only; "": none)
    instruct_samples: int = 0               # its first samples used (0: all)
    image_aspect_ratio: str = ""            # square | pad (LLaVA's); "": the LLaVA run's, as it was trained
    image_mean: List[float] = field(default_factory=list)  # empty: the LLaVA run's statistics
    image_std: List[float] = field(default_factory=list)

    def validate(self, where: str) -> None:
        require(bool(self.train), f"{where}.train: interleaved training data (JSON lines) is required")
        require(self.image_aspect_ratio in ("", *ASPECT_MODES),
                f"{where}.image_aspect_ratio must be square, pad or squash (or empty: the LLaVA run's), got "
                f"{self.image_aspect_ratio!r}")
        require(bool(self.tokenizer), f"{where}.tokenizer: a SentencePiece model file is required")
        check_statistics(self.image_mean, self.image_std, where)
        for name in ("max_length", "batch_size", "image_size"):
            require(getattr(self, name) >= 1, f"{where}.{name} must be >= 1, got {getattr(self, name)}")
        require(self.max_samples >= 0, f"{where}.max_samples must be >= 0 (0: all), got {self.max_samples}")
        require(self.instruct_samples >= 0,
                f"{where}.instruct_samples must be >= 0 (0: all), got {self.instruct_samples}")


@dataclass
class SugarLoss:
    alpha: float = 1.0                      # weight of L_d; L_d is O(1) per point, as L_g per token
    points_per_sample: int = 4              # k slice ends per sample: within- and across-sample pairs
    projector_hidden: int = 256             # retrieval MLP width (2x the demo LM's 128)
    projector_dim: int = 128                # r's size; cosine needs no more at this scale

    def validate(self, where: str) -> None:
        require(0 <= self.alpha < float("inf"), f"{where}.alpha must be finite and >= 0 (0: L_g only), got {self.alpha}")
        require(self.points_per_sample >= 1, f"{where}.points_per_sample must be >= 1, got {self.points_per_sample}")
        require(self.projector_hidden >= 1 and self.projector_dim >= 1,
                f"{where}: projector_hidden and projector_dim must be >= 1")


@dataclass
class SugarEval:
    max_samples: int = 0                    # held-out samples and pairs evaluated (0: all)
    target_fit_samples: int = 128           # held-out samples whose points' M_r is compared with M_l (n^2 GAKs)
    batch_size: int = 64
    chat_items: int = 150                   # held-out items asked about: question, probe, RAG (0: none)
    rag_store: int = 2000                   # training items RAG retrieves from (0: no RAG)
    rag_k: int = 2                          # references per question (3 would overflow the demo's 128 positions)
    template: str = ""                      # chat template; "": the one init.checkpoint was trained with

    def validate(self, where: str) -> None:
        require(self.max_samples >= 0, f"{where}.max_samples must be >= 0 (0: all), got {self.max_samples}")
        require(self.batch_size >= 1, f"{where}.batch_size must be >= 1, got {self.batch_size}")
        require(self.target_fit_samples >= 2, f"{where}.target_fit_samples must be >= 2, got {self.target_fit_samples}")
        require(min(self.chat_items, self.rag_store) >= 0, f"{where}: chat_items and rag_store must be >= 0")
        require(self.rag_k >= 1, f"{where}.rag_k must be >= 1, got {self.rag_k}")
        if self.template:
            load_template(self.template)  # an unknown template fails here, before any model is loaded


def point_seed(seed: int, step: int, sample: int) -> int:
    """A sample's point draw depends on the sample, never on the rank or its place in a batch."""
    return stream_seed(seed, step, sample, 1_000_033)


def point_weights(spans: Sequence[Sequence[tuple]], kinds: Sequence[Sequence[str]], points: torch.Tensor,
                  width: int) -> torch.Tensor:
    """[B * k, B, width] pooling weights of the points [B, k] (slice indices, -1: none): an image
    point averages its image's tokens, a text point is its last token. Padding points are zero."""
    B, k = points.shape
    w = torch.zeros(B * k, B, width)
    for b in range(B):
        for p in range(k):
            j = int(points[b, p])
            if j < 0:
                continue
            start, end = spans[b][j]
            if end <= start:
                raise ValueError(f"sample {b}: a point in an empty slice {j} (no tokens at {start})")
            if end > width:
                raise ValueError(f"sample {b}: slice {j} ends at {end}, past the batch's {width} positions")
            if kinds[b][j] == "image":
                w[b * k + p, b, start:end] = 1.0 / (end - start)
            else:
                w[b * k + p, b, end - 1] = 1.0
    return w


@register_task("sugar")
class SugarTask(LlavaTask):
    sections = {"data": SugarData, "init": LlavaInit, "lora": LoraSection, "loss": SugarLoss,
                "targets": SugarTargets, "eval": SugarEval}
    model_class = LlavaForConditionalGeneration
    evaluation_gathers_all = True
    batch_coupled = "L_d compares every point of the batch with every other (M_r, M_l)"

    def __init__(self, recipe, rank: int = 0, world_size: int = 1):
        Task.__init__(self, recipe, rank, world_size)

        d = recipe.data
        if not recipe.init.checkpoint:
            raise ValueError("init.checkpoint: Sugar continues a LLaVA run (the demo's: runs/demo-llava2)")
        # The LLaVA run's own template unless the recipe names one: its answers were trained in it.
        self.template = (recipe.eval.template or run_template(resolve_checkpoint(recipe.init.checkpoint, "init.checkpoint"))
                         or "v1")
        load_template(self.template)
        recipe.eval.template = self.template  # recipe.json names it: chat and a Sugar run continued from this one read it
        self._load_tokenizer_and_config()
        # The LLaVA run's image layout unless the recipe names one (recipe.json keeps it for retrieval).
        init = resolve_checkpoint(recipe.init.checkpoint, "init.checkpoint")
        d.image_aspect_ratio = d.image_aspect_ratio or (run_recipe(init).get("data") or {}).get(
            "image_aspect_ratio") or "square"
        inherit_statistics(d, init, self.image_pipeline)  # and its statistics
        self.transform = aspect_transform(d.image_size, d.image_aspect_ratio, d.image_mean, d.image_std)
        self.train_set = self.encode_file(d.train, d.max_samples)
        self.targets = slice_vectors(d.train, recipe.targets, d.image_folder,
                                     log=print if rank == 0 else (lambda *a: None))
        if len(self.targets.offsets) - 1 < len(self.train_set.samples):
            raise ValueError(f"{d.train}: the target cache holds fewer samples than the data")
        # Training rows: the interleaved samples, then the instruction samples (no points).
        self.instruct = self.encode_instruct(d.instruct, d.instruct_samples) if d.instruct else None

    @property
    def conversation_template(self) -> str:
        return self.template

    def encode_instruct(self, path: str, limit: int) -> EncodedSamples:
        d = self.recipe.data
        return encode_samples(read_samples(path, limit), path, self.tokenizer, self.template,
                              self.image_token_id, self.image_tokens, d.max_length, d.image_folder)

    def leaves_parameters_unused(self) -> bool:
        """Text-only rows (sentences alone, text conversations) skip the tower and projector."""
        rows = len(self.train_set.samples) + (len(self.instruct.samples) if self.instruct else 0)
        return any(not self.row_images(i) for i in range(rows))

    def row_images(self, i: int) -> List[str]:
        n = len(self.train_set.samples)
        return self.train_set.images[i] if i < n else self.instruct.images[i - n]

    def encode_file(self, path: str, limit: int = 0) -> EncodedInterleaved:
        return self.encode_samples(read_interleaved(path, limit))

    def encode_samples(self, samples) -> EncodedInterleaved:
        d = self.recipe.data
        return encode_interleaved(samples, self.tokenizer, self.image_token_id, self.image_tokens, d.max_length,
                                  d.image_folder)

    # ---- model ------------------------------------------------------------------------------
    def build_model(self) -> SugarModel:
        llava = super().build_model()
        lc = self.recipe.loss
        hidden = int(self.config["text_config"]["hidden_size"])
        with torch.random.fork_rng():  # the projector's init does not shift the run's other draws
            torch.manual_seed(self.recipe.train.seed)
            projector = RetrievalProjector(hidden, lc.projector_hidden, lc.projector_dim)
        return SugarModel(llava, projector)

    @classmethod
    def memory_shape(cls, recipe):
        """LLaVA's plan plus the retrieval MLP (trainable) and the points: each is pooled from the
        last hidden states through a [points, B x L] weight matrix the matmul keeps for backward."""
        shape = super().memory_shape(recipe)
        lc = recipe.loss
        h = shape.stacks[-1].hidden
        mlp = h * lc.projector_hidden + lc.projector_hidden + lc.projector_hidden * lc.projector_dim + lc.projector_dim
        shape.other_params += mlp
        shape.trainable = (shape.trainable or 0) + mlp
        k = lc.points_per_sample
        shape.other_activations_per_sample += 4 * k * (h + 2 * lc.projector_hidden + lc.projector_dim)
        shape.pairwise_activations = 4 * k * shape.stacks[-1].tokens  # [k B, B L] pooling weights
        return shape

    def load_model(self, path: str) -> SugarModel:
        return SugarModel.from_pretrained(path)

    # ---- data -------------------------------------------------------------------------------
    def inspect(self, samples: int = 3) -> str:
        s, d = self.train_set, self.recipe.data
        mixed = "" if self.instruct is None else (f"; {len(self.instruct.samples)} instruction samples from "
                                                  f"{d.instruct} ({int((self.instruct.labels != IGNORE).sum())} "
                                                  "supervised tokens)")
        return (f"{d.train}: {len(s.samples)} interleaved samples pass the checks; "
                f"{int((s.labels != IGNORE).sum())} supervised tokens; slices of sample 0: {s.spans[0]} {s.kinds[0]}"
                + mixed)

    def longest_sample(self):
        parts = [self.train_set] + ([self.instruct] if self.instruct is not None else [])
        return (max(int(s.attention_mask.sum(1).max()) for s in parts),
                max((len(i) for s in parts for i in s.images), default=1))

    def train_loader(self, rank: int, world_size: int):
        """Rows of the interleaved samples, then of the instruction samples, gathered per batch
        (a concatenated copy of every encoded row cost as much memory as the data itself)."""
        parts = [self.train_set] + ([self.instruct] if self.instruct is not None else [])
        starts = torch.tensor([0] + [len(s.input_ids) for s in parts]).cumsum(0)

        def fetch(rows: torch.Tensor) -> Dict[str, torch.Tensor]:
            part = torch.searchsorted(starts, rows.contiguous(), right=True) - 1
            out = {"index": rows}
            for key in ("input_ids", "labels", "attention_mask"):
                first = getattr(parts[0], key)
                batch = first.new_empty((len(rows),) + tuple(first.shape[1:]))
                for p, s in enumerate(parts):
                    mine = part == p
                    batch[mine] = getattr(s, key)[rows[mine] - starts[p]]
                out[key] = batch
            return out

        return IndexLoader(int(starts[-1]), fetch, self.recipe.data.batch_size, shuffle=True,
                           seed=self.recipe.train.seed, rank=rank, world_size=world_size)

    def count_tokens(self, batch: Dict[str, Any], step: int) -> Optional[int]:
        return int((batch["labels"][:, 1:] != IGNORE).sum())  # the LM predicts each label from the token before

    def draw_points(self, indices: List[int], step: int) -> torch.Tensor:
        """[B, k] slice indices of each sample's points, -1 where a sample has fewer slices (and for
        every instruction row)."""
        k, n = self.recipe.loss.points_per_sample, len(self.train_set.samples)
        out = torch.full((len(indices), k), -1, dtype=torch.long)
        for b, i in enumerate(indices):
            if i >= n:
                continue
            g = torch.Generator().manual_seed(point_seed(self.recipe.train.seed, step, i))
            chosen = sample_points([self.train_set.spans[i]], k, g, names=[self.train_set.samples[i].where])[0]
            out[b, :len(chosen)] = torch.tensor(chosen)
        return out

    # ---- loss -------------------------------------------------------------------------------
    pads_unused_under_fsdp2 = True  # text-only rows get LLaVA's idle image row

    def compute_loss(self, wrapped, model, batch, step):
        from ..losses.sugar import discriminative_loss, gather_rows
        from .conversation_data import idle_image_row, load_pixels

        device = model.device
        indices = batch["index"].tolist()
        width = int(batch["attention_mask"].sum(1).max())
        points = self.draw_points(indices, step)                                        # [B, k]
        n = len(self.train_set.samples)
        spans = [self.train_set.spans[i] if i < n else [] for i in indices]
        kinds = [self.train_set.kinds[i] if i < n else [] for i in indices]
        weights = point_weights(spans, kinds, points, width)
        pixels = load_pixels([p for i in indices for p in self.row_images(i)], self.transform)
        ids, mask, labels = batch["input_ids"][:, :width], batch["attention_mask"][:, :width], batch["labels"][:, :width]
        if self.needs_idle_row(pixels, device):  # text-only rows under FSDP2: the idle row holds no point
            ids, mask, labels, pixels = idle_image_row(ids, mask, labels, self.image_token_id, self.image_tokens,
                                                       self.recipe.data.image_size)
            weights = torch.nn.functional.pad(weights, (0, ids.shape[1] - width, 0, 1))
        out = wrapped(input_ids=ids.to(device), pixel_values=None if pixels is None else pixels.to(device),
                      attention_mask=mask.to(device), labels=labels.to(device), point_weights=weights.to(device))
        # Every rank's points as (sample, slice), in rank order: M_l's columns.
        local = torch.stack([batch["index"].repeat_interleave(points.shape[1]), points.reshape(-1)], 1)
        every = gather_rows(local.to(device), self.world_size).cpu()
        valid_local, valid_all = local[:, 1] >= 0, every[:, 1] >= 0
        if valid_all.any():
            targets = torch.zeros(len(local), len(every))
            rows = [tuple(p) for p in local[valid_local].tolist()]
            cols = [tuple(p) for p in every[valid_all].tolist()]
            block = target_matrix(self.targets, rows, cols, self.recipe.targets)
            targets[valid_local.nonzero()[:, 0][:, None], valid_all.nonzero()[:, 0][None, :]] = block
            l_d = discriminative_loss(out["r"], targets.to(device), self.world_size, valid_local.to(device),
                                      valid_all.to(device))
        else:  # a step of instruction rows only (data.instruct): no point anywhere, L_d adds nothing
            l_d = out["r"].sum() * 0.0
        return {"loss": MixedLoss(TokenLoss(out["loss_sum"], out["num_tokens"]),
                                  {"discriminative": (self.recipe.loss.alpha, l_d)}, token_name="generative")}

    # ---- evaluation -------------------------------------------------------------------------
    def evaluate(self, model, final: bool = False) -> Dict[str, Any]:
        from .sugar_eval import evaluate_sugar

        return evaluate_sugar(self, model, final)
