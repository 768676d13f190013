"""Recipe configuration: YAML -> nested dataclasses. The trainer owns the `model`, `optim` and
`train` sections; the recipe's `task` names a registered task, which declares its own sections
(CLIP: `data`, `loss`, `eval`). A key that does not exist is an error listing the valid keys, and
a value out of range is an error naming it (a typo must never be silently ignored)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from ..schema import from_mapping, require

STRATEGIES = ("ddp", "fsdp2")
PRECISIONS = ("fp32", "bf16")


@dataclass
class ModelConfig:
    checkpoint_fields: ClassVar[Tuple[str, ...]] = ("pretrained",)  # run folders pinned (tasks.pin_checkpoints)
    name: Optional[str] = None              # a registered config (tessera.list_models())
    config: Dict[str, Any] = field(default_factory=dict)  # HF config dict, or overrides of `name`
    pretrained: Optional[str] = None        # checkpoint folder to start from
    gradient_checkpointing: bool = False    # recompute each layer in backward
    trainable: List[str] = field(default_factory=list)  # regexes: train only matching parameters
    freeze: List[str] = field(default_factory=list)     # regexes: freeze matching parameters


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    accumulation_steps: int = 1
    layer_decay: float = 1.0                # layer-wise LR decay (BEiT fine-tuning); 1: off
    lr_scales: Dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> LR factor
    # Update each parameter inside backward as soon as its gradient is ready, then free that gradient
    # (torchtune's optimizer_in_bwd): a step never holds every gradient at once. Same AdamW update;
    # needs grad_clip 0, accumulation_steps 1, and fsdp2 on several processes (optim_in_backward.py).
    in_backward: bool = False

    def validate(self, where: str) -> None:
        # inf passes the schema (grad_clip: .inf means "log the norm, never clip"); here it would
        # make every weight inf or NaN at the first update.
        _check(math.isfinite(self.lr) and self.lr > 0, f"{where}.lr must be a finite number > 0, got {self.lr}")
        _check(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
               f"{where}.weight_decay must be a finite number >= 0, got {self.weight_decay}")
        _check(math.isfinite(self.eps) and self.eps > 0, f"{where}.eps must be a finite number > 0, got {self.eps}")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
               f"{where}.betas must be two numbers in [0, 1), got {self.betas}")
        _check(0 <= self.warmup_fraction <= 1, f"{where}.warmup_fraction must be in [0, 1], got {self.warmup_fraction}")
        _check(0 <= self.min_lr_ratio <= 1, f"{where}.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.grad_clip >= 0, f"{where}.grad_clip must be >= 0 (0: off), got {self.grad_clip}")
        _check(self.accumulation_steps >= 1, f"{where}.accumulation_steps must be >= 1, got {self.accumulation_steps}")
        _check(0 < self.layer_decay <= 1, f"{where}.layer_decay must be in (0, 1], got {self.layer_decay}")
        for k, v in self.lr_scales.items():
            _check(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0,
                   f"{where}.lr_scales.{k} must be a finite number >= 0, got {v!r}")
        if self.in_backward:  # both need every gradient of the step at once
            _check(self.grad_clip == 0, f"{where}.in_backward needs grad_clip: 0 (clipping by the global norm needs "
                   f"every gradient before the first update), got grad_clip {self.grad_clip}")
            _check(self.accumulation_steps == 1, f"{where}.in_backward needs accumulation_steps: 1 (each backward "
                   f"updates the weights), got {self.accumulation_steps}")


@dataclass
class TrainConfig:
    steps: int = 400
    seed: int = 0
    precision: str = "fp32"                 # fp32 | bf16 (autocast; FSDP2: bf16 params, fp32 reduce)
    strategy: str = "ddp"                   # ddp | fsdp2 (used when launched on several processes)
    cpu_offload: bool = False               # fsdp2 on CUDA: keep sharded params/grads/optimizer on CPU
    log_every: int = 10
    eval_every: int = 0                     # 0: only at the end
    checkpoint_every: int = 100             # 0: never
    keep_checkpoints: int = 2
    max_bad_steps: int = 5                  # consecutive non-finite losses before stopping
    threads: int = 0                        # torch threads per process (0: cores / processes)
    # From the second step on, seconds a rank waits for the others in one collective before the
    # run fails naming this setting (a stalled rank; 0: torch's default, 30 min on Gloo, 10 on
    # NCCL); and, apart, how long the other ranks wait while rank 0 works alone (evaluating,
    # writing and hashing a checkpoint's files, the summary and plots).
    timeout_s: int = 0
    rank0_timeout_s: int = 7200
    log_to: List[str] = field(default_factory=lambda: ["jsonl"])  # jsonl | tensorboard | wandb (tracking.py)
    plots: bool = True                      # the task's PNGs at the end (curves, confusion, predictions): 2-4 s

    def validate(self, where: str) -> None:
        _check(self.steps >= 1, f"{where}.steps must be >= 1, got {self.steps}")
        _check(self.seed >= 0, f"{where}.seed must be >= 0, got {self.seed}")
        _check(self.precision in PRECISIONS, f"{where}.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _check(self.strategy in STRATEGIES, f"{where}.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        _check(self.log_every >= 1, f"{where}.log_every must be >= 1, got {self.log_every}")
        _check(self.rank0_timeout_s >= 1, f"{where}.rank0_timeout_s must be >= 1, got {self.rank0_timeout_s}")
        for name in ("eval_every", "checkpoint_every", "threads", "timeout_s"):
            _check(getattr(self, name) >= 0, f"{where}.{name} must be >= 0, got {getattr(self, name)}")
        _check(self.keep_checkpoints >= 1, f"{where}.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        _check(self.max_bad_steps >= 1, f"{where}.max_bad_steps must be >= 1, got {self.max_bad_steps}")
        from .tracking import check_log_to

        check_log_to(self.log_to, f"{where}.log_to")


@dataclass
class Recipe:
    """The trainer's sections plus the task's (`recipe.data`, `recipe.loss`, ... reach them)."""
    task: str = "clip"
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sections: Dict[str, Any] = field(default_factory=dict)  # the task's, by name

    def __getattr__(self, name: str):
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"recipe has no section {name!r} (task {self.__dict__.get('task')!r} has: "
                             f"{', '.join(sections) or 'none'})")


_check = require


def build_section(cls, values: Any, where: str):
    """A recipe section from its mapping (`tessera.schema.from_mapping`: unknown keys listed,
    types checked strictly, `validate(where)` called)."""
    return from_mapping(cls, values, where)


_TRAINER_SECTIONS = {"model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}


def recipe_from_dict(values: Dict[str, Any], where: str = "recipe") -> Recipe:
    from .tasks import task_class

    values = dict(values or {})
    task_name = values.pop("task", "clip")
    if not isinstance(task_name, str):
        raise ValueError(f"{where}: task: expected a task name, got {task_name!r}")
    task_sections = dict(getattr(task_class(task_name, f"{where}: "), "sections", {}))
    valid = ["task", *_TRAINER_SECTIONS, *task_sections]
    unknown = sorted(str(k) for k in set(values) - set(valid))  # a YAML key may be a number
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {', '.join(unknown)} for task {task_name!r}; "
                         f"valid: {', '.join(valid)}")
    built = {k: build_section(cls, values.get(k), f"{where}: {k}") for k, cls in _TRAINER_SECTIONS.items()}
    sections = {k: build_section(cls, values.get(k), f"{where}: {k}") for k, cls in task_sections.items()}
    return Recipe(task=task_name, sections=sections, **built)


def apply_overrides(values: Dict[str, Any], overrides: Optional[List[str]]) -> Dict[str, Any]:
    """`section.key=value` strings (YAML-parsed values) applied to a recipe mapping."""
    import yaml

    from .recipe_yaml import load_yaml

    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not all(part.strip() for part in key.split(".")):
            raise ValueError(f"override {item!r} must look like section.key=value")
        node = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p} is not a section")
        try:
            node[leaf] = load_yaml(raw)
        except (yaml.YAMLError, ValueError) as e:
            raise ValueError(f"override {item!r}: its value is not valid YAML: {str(e).splitlines()[0]}") from None
    return values


def load_recipe(path: str, overrides: Optional[List[str]] = None) -> Recipe:
    """Reads a YAML recipe (train/recipe_yaml.py: YAML 1.2 scalars, duplicate keys refused), or a
    run's recipe.json (as JSON); `overrides` are `section.key=value` strings (YAML-parsed values)."""
    import json

    import yaml

    from ..io import read_text
    from .recipe_yaml import load_yaml

    text = read_text(path, "a recipe (YAML)")  # a folder or bytes that are not UTF-8 are named, not a traceback
    try:
        values = json.loads(text) if str(path).endswith(".json") else load_yaml(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON: {e}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    except (ValueError, RecursionError) as e:  # nested past the reader's depth
        raise ValueError(f"{path}: {e}") from None
    if values is None:  # an empty file, or comments only: CLIP's defaults would fail on something else
        raise ValueError(f"{path}: the recipe is empty (a mapping of sections: task, model, data, ...)")
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a recipe is a mapping of sections, got {type(values).__name__}")
    return recipe_from_dict(apply_overrides(values, overrides), path)


def recipe_defaults(recipe: Recipe) -> Dict[str, Any]:
    """Each section's defaults, as recipe_to_dict lays the recipe out: what a recipe.json written
    before a key existed meant by leaving it out."""
    def default(f):
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default

    from .tasks import task_class

    sections = {**{name: getattr(recipe, name) for name in _TRAINER_SECTIONS}, **recipe.sections}
    out = {name: {f.name: default(f) for f in dataclasses.fields(section) if f.init and (
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)}
           for name, section in sections.items()}
    pipeline, data = getattr(task_class(recipe.task), "image_pipeline", None), out.get("data", {})
    if pipeline and "image_mean" in data:  # before image_mean existed, a run trained on its family's
        data["image_mean"], data["image_std"] = [float(v) for v in pipeline["mean"]], [float(v) for v in pipeline["std"]]
    return out


def fill_older_keys(recipe: Recipe, saved: Dict[str, Any]) -> None:
    """A run's own recipe (`saved`, its recipe.json) read for evaluation: the image statistics it
    leaves out (written before they existed) set to what it trained on (recipe_defaults), where
    nothing set them, so building the task does not take a tower's in their place."""
    data, written = getattr(recipe, "data", None), saved.get("data") if isinstance(saved.get("data"), dict) else {}
    defaults = recipe_defaults(recipe).get("data", {})
    for key in ("image_mean", "image_std"):
        if key not in written and hasattr(data, key) and not getattr(data, key):
            setattr(data, key, list(defaults[key]))


def recipe_to_dict(recipe: Recipe) -> Dict[str, Any]:
    out: Dict[str, Any] = {"task": recipe.task}
    for name in _TRAINER_SECTIONS:
        out[name] = dataclasses.asdict(getattr(recipe, name))
    for name, section in recipe.sections.items():
        out[name] = dataclasses.asdict(section)
    return out
