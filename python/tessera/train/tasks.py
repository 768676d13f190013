"""The Trainer–Task contract and the task registry.

A task is everything objective-specific: the model, the data, the loss, evaluation and plots.
The trainer owns the rest (optimisation, wrapping, checkpoints, logging). A family registers its
task in its own module, `tessera/train/<name>_task.py` (found by that file name, no list to edit):

    @register_task("clip")
    class ClipTask(Task):
        sections = {"data": ClipData, "loss": ClipLossConfig, "eval": ClipEval}   # recipe sections
        ...

A recipe names it (`task: clip`). Tasks outside tessera are found by importing their module first
(`tessera train --import mypkg.tasks`) or through the `tessera.tasks` entry-point group.
"""
from __future__ import annotations

import importlib
from typing import (Any, Callable, ClassVar, Dict, Iterable, List, NamedTuple, Optional, Protocol, Tuple, Union,
                    runtime_checkable)

import torch
from torch import nn

from .optim import no_decay, param_groups
from .._warn import warn


class TokenLoss(NamedTuple):
    """A loss summed over `count` items (tokens, patches). The trainer divides by the count over
    every micro-batch and rank of the step (transformers' `num_items_in_batch`), so accumulation
    and data parallelism give the gradient of one big batch."""
    sum: torch.Tensor
    count: Union[torch.Tensor, int]


class MixedLoss(NamedTuple):
    """A token loss plus weighted mean terms, minimised together in one step (BLIP-2's ITG tokens
    with its ITC and ITM means): tokens.sum / (the step's token count over every micro-batch and
    rank) + sum of weight * mean (each mean averaged over micro-batches and ranks). The count must be
    known before the first backward (transformers' `num_items_in_batch`): the task implements
    `count_tokens(batch, step)`, which the trainer checks against `tokens.count`. Each term is logged by
    name (the token term as its mean per token)."""
    tokens: TokenLoss
    means: Dict[str, Tuple[float, torch.Tensor]]  # name -> (weight, mean)
    token_name: str = "tokens_loss"


LossTerms = Dict[str, Union[torch.Tensor, TokenLoss, MixedLoss]]


@runtime_checkable
class TaskProtocol(Protocol):
    """What the Trainer calls. `Task` below implements the optional parts."""
    sections: ClassVar[Dict[str, type]]

    def build_model(self) -> nn.Module: ...
    def train_loader(self, rank: int, world_size: int) -> Iterable[Dict[str, Any]]: ...
    def compute_loss(self, wrapped: Callable[..., Any], model: nn.Module, batch: Dict[str, Any],
                     step: int) -> LossTerms: ...
    def batch_size(self, batch: Dict[str, Any]) -> int: ...
    def param_groups(self, model: nn.Module) -> List[Dict[str, Any]]: ...
    def after_step(self, model: nn.Module) -> None: ...
    def evaluate(self, model: nn.Module, final: bool = False) -> Dict[str, Any]: ...
    def plot(self, out_dir: str, metrics_path: str, metrics: Dict[str, Any]) -> None: ...
    def load_model(self, path: str) -> nn.Module: ...


def pads_unused(task) -> bool:
    """Whether `task`'s compute_loss keeps the pads_unused_under_fsdp2 promise: only where the
    class that made it also wrote the compute_loss that runs (a subclass, a mixin, or an instance
    with another compute_loss makes it again or not at all: Sugar inherited LLaVA's promise while
    its own loss added no idle row, and FSDP2 aborted in gloo)."""
    if "compute_loss" in vars(task):
        return False
    mro = type(task).__mro__
    promiser = next(c for c in mro if "pads_unused_under_fsdp2" in vars(c))
    loss_owner = next((c for c in mro if "compute_loss" in vars(c)), None)
    return bool(promiser.pads_unused_under_fsdp2) and loss_owner is not None and \
        mro.index(loss_owner) >= mro.index(promiser)


def pin_checkpoints(recipe) -> None:
    """Each run folder a recipe names where a section declares `checkpoint_fields` (a teacher, a
    tower, a tokenizer, the run a stage starts from) replaced by the checkpoint it resolves to now,
    so recipe.json names the weights this run was built on: evaluation and resume rebuild the task
    from it, and a run folder that trained on meanwhile would give them other weights."""
    import os

    from .checkpoint import resolve_checkpoint

    for section in [getattr(recipe, "model", None), *getattr(recipe, "sections", {}).values()]:
        for name in getattr(type(section), "checkpoint_fields", ()):
            value = getattr(section, name)
            if isinstance(value, str) and value and os.path.isdir(value):
                try:
                    setattr(section, name, resolve_checkpoint(value, name))
                except FileNotFoundError:  # the task names what is missing, with its hint
                    pass


class Task:
    """Defaults for the optional parts of the contract.

    `compute_loss` must call `wrapped(...)` exactly once per micro-batch (the trainer checks):
    DDP's and FSDP's gradient synchronisation hangs on that call, and a forward that goes around
    it would train each rank on its own. It returns named terms; "loss" is a mean (a tensor), a
    `TokenLoss(sum, count)` or a `MixedLoss` (with `count_tokens`); other terms are logged.
    """
    sections: ClassVar[Dict[str, type]] = {}
    #: The model class built from `model.config` when the recipe names no variant or checkpoint.
    model_class: ClassVar[Optional[type]] = None
    #: Sharded training: gather every parameter for evaluation (it runs past the per-layer
    #: hooks, e.g. generation loops in C++), instead of gathering layer by layer as it runs.
    evaluation_gathers_all: ClassVar[bool] = False
    #: The run folder, set by the trainer before training (None outside a run): where a task may
    #: write pictures during training.
    out_dir: Optional[str] = None
    #: What couples a batch's samples in the loss ("" when nothing does): then accumulated
    #: micro-batches are separate, smaller batches, not one big one. Said at run time, and
    #: `tessera plan` keeps the recipe's micro-batch.
    batch_coupled: ClassVar[str] = ""

    def __init__(self, recipe, rank: int = 0, world_size: int = 1):
        pin_checkpoints(recipe)
        self.recipe = recipe
        self.rank, self.world_size = rank, world_size
        optim, data = getattr(recipe, "optim", None), getattr(recipe, "data", None)
        steps = getattr(optim, "accumulation_steps", 1)
        if self.batch_coupled and steps > 1:
            warn(f"optim.accumulation_steps {steps}: {self.batch_coupled}, so each micro-batch of "
                 f"{getattr(data, 'batch_size', '?')} is its own batch (the loss is their mean), not one "
                 "batch of their sum")

    def build_model(self) -> nn.Module:
        """`model.name` (a registered variant, with `pretrained` weights and `config` overrides),
        else the checkpoint folder `model.pretrained`, else `model_class(model.config)`."""
        from ..factory import create_model, from_pretrained

        m = self.recipe.model
        if m.name:
            return create_model(m.name, pretrained=m.pretrained, config_overrides=m.config)
        if m.pretrained:  # fp32 master weights whatever the folder was saved in (autocast makes bf16 copies)
            return from_pretrained(m.pretrained, dtype=torch.float32, config_overrides=m.config or None)
        if self.model_class is None:
            raise NotImplementedError(f"{type(self).__name__}: set model_class or override build_model")
        return self.model_class(self.model_config(self.recipe))

    @classmethod
    def model_config(cls, recipe) -> Dict[str, Any]:
        """The full config build_model would use (variant or checkpoint, overrides, C++ defaults),
        without building the model."""
        import os

        from ..models.pretrained import check_override_keys, merge_config, read_config
        from ..registry import variant

        m = recipe.model
        if m.name:
            base = variant(m.name)[1]
        elif m.pretrained:
            base = read_config(os.path.join(m.pretrained, "config.json"))
        else:
            base = {}
        resolved = cls.model_class.resolve_config(merge_config(base, m.config))
        check_override_keys(cls.model_class, resolved, m.config)
        return resolved

    def count_tokens(self, batch: Dict[str, Any], step: int) -> Optional[int]:
        """The items a micro-batch's MixedLoss token term will count, known before its forward;
        None (the default) for tasks that return a mean or a TokenLoss."""
        return None

    def batch_size(self, batch: Dict[str, Any]) -> int:
        for v in batch.values():
            if isinstance(v, torch.Tensor) and v.ndim > 0:
                return int(v.shape[0])
        raise ValueError(f"{type(self).__name__}.batch_size: no tensor in the batch (keys {sorted(batch)})")

    def param_groups(self, model: nn.Module) -> List[Dict[str, Any]]:
        return param_groups(model, self.recipe.optim, num_layers=self.num_layers(model), exclude=self.no_weight_decay)

    def no_weight_decay(self, name: str, param: torch.Tensor) -> bool:
        """Whether a parameter takes no weight decay: norms, biases, embeddings and learned tokens, as
        open_clip and timm exclude them (`optim.no_decay`); a task whose reference excludes fewer
        overrides it."""
        return no_decay(name, param)

    def save_beside(self, folder: str) -> None:
        """Files a checkpoint's Hugging Face folder needs beside the weights for transformers'
        processors (a tokenizer, an image processor), written before its checksums. None by
        default."""

    def evaluate_split(self, model: nn.Module, split) -> Dict[str, float]:
        """Image-text retrieval on a caption split (`tessera eval RUN --retrieval FILE`: COCO's or
        Flickr30k's Karpathy JSON, LAVIS lists): R@1/5/10 both ways, each image embedded once and
        a hit on any of its captions. Tasks whose model retrieves implement it."""
        raise ValueError(f"--retrieval FILE: the {type(self).__name__} task has no image-text retrieval "
                         "(the clip and blip2_pretrain tasks have)")

    def evaluate_captions(self, model: nn.Module, split, prompt: str = "") -> Dict[str, Any]:
        """Captions generated for a split's images, scored against all of each image's reference
        captions (`tessera eval RUN --captioning FILE`). Tasks whose model writes text implement it."""
        raise ValueError(f"--captioning FILE: the {type(self).__name__} task writes no captions "
                         "(the llava task and those built on it do)")

    def leaves_parameters_unused(self) -> bool:
        """Whether some steps leave trainable parameters out of the forward (DDP must then find
        them each step, or its gradient all-reduce never starts and the ranks drift apart)."""
        return False

    # Under FSDP2 a unit's shards are gathered in its forward, so a rank that skips it breaks the
    # ranks' collectives: a task whose steps leave parameters unused must run them on every rank
    # (LLaVA adds an idle image row) and say so here, or FSDP2 is refused for its data. Read it
    # through `pads_unused(task)`: the promise is about one compute_loss.
    pads_unused_under_fsdp2 = False

    def num_layers(self, model: nn.Module) -> int:
        """Depth for layer-wise LR decay (the deepest tower's layer count)."""
        config = getattr(model, "config", None) or {}
        depths = [c.get("num_hidden_layers", 0) for c in [config, *[v for v in config.values() if isinstance(v, dict)]]
                  if isinstance(c, dict)]
        return max(depths or [0])

    def after_step(self, model: nn.Module) -> None:
        pass

    def load_model(self, path: str) -> nn.Module:
        """The model of a checkpoint folder, for `tessera eval`: an HF-layout folder through
        `from_pretrained`, else this task's model with the folder's tensors."""
        import os

        from ..factory import from_pretrained
        from ..models.weights import check_state_fits, load_weights

        if os.path.isfile(os.path.join(path, "config.json")):
            return from_pretrained(path, dtype=torch.float32)
        model = self.build_model()
        state = load_weights(path)
        check_state_fits(state, model, path)
        model.load_state_dict(state, strict=True)
        return model.eval()

    def evaluate(self, model: nn.Module, final: bool = False) -> Dict[str, Any]:
        return {}

    def plot(self, out_dir: str, metrics_path: str, metrics: Dict[str, Any]) -> None:
        import os

        from ..viz import plot_training_curves, read_metrics

        plot_training_curves(read_metrics(metrics_path), os.path.join(out_dir, "loss.png"))


TASKS: Dict[str, type] = {}


def _builtin_modules() -> List[str]:
    """tessera's task modules, `tessera/train/<name>_task.py`: a family adds one, edits no list."""
    import os
    import pkgutil

    return sorted(f"{__package__}.{m.name}" for m in pkgutil.iter_modules([os.path.dirname(__file__)])
                  if m.name.endswith("_task") and not m.name.startswith("_"))


def register_task(name: str):
    """Class decorator: makes `task: name` in a recipe build this class."""
    def deco(cls):
        if name in TASKS and TASKS[name] is not cls:
            raise ValueError(f"task {name!r} is already registered by {TASKS[name].__module__}.{TASKS[name].__name__}")
        missing = [m for m in ("build_model", "train_loader", "compute_loss") if not callable(getattr(cls, m, None))]
        if missing:
            raise TypeError(f"task {name!r} ({cls.__name__}) lacks {', '.join(missing)}")
        TASKS[name] = cls
        return cls
    return deco


def _entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="tessera.tasks"):
        if ep.name not in TASKS:
            TASKS[ep.name] = ep.load()


def import_modules(modules: Optional[List[str]]) -> None:
    """Imports modules that register tasks (`--import`); a failure names the module."""
    for name in modules or []:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ValueError(f"--import {name}: {e}") from None


def task_class(name: str, where: str = "recipe: ") -> type:
    """The task registered as `name`: tessera's `<name>_task` module is imported on demand, then
    all of them (a module may register a task of another name), then the entry points."""
    own = f"{__package__}.{name}_task"
    if name not in TASKS and own in _builtin_modules():
        importlib.import_module(own)
    if name not in TASKS:
        _import_builtins()
    if name not in TASKS:
        _entry_points()
    if name not in TASKS:
        raise ValueError(f"{where}task: unknown task {name!r}; registered: {', '.join(sorted(TASKS))} "
                         f"(a task outside tessera: --import its module)")
    return TASKS[name]


def _import_builtins() -> None:
    for module in _builtin_modules():
        importlib.import_module(module)


def list_tasks() -> List[str]:
    _import_builtins()
    _entry_points()
    return sorted(TASKS)


def build_task(recipe, rank: int = 0, world_size: int = 1):
    return task_class(recipe.task)(recipe, rank, world_size)
