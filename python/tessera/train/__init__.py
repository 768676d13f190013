"""Training: recipes (YAML), the Trainer loop, tasks, wrap strategies, checkpoints.

    python -m tessera.train recipes/fashion_mnist_clip.yaml --out runs/demo
    torchrun --nproc_per_node 2 -m tessera.train recipes/fashion_mnist_clip.yaml --out runs/ddp
"""
from .config import Recipe, load_recipe, recipe_from_dict
from .loaders import TensorLoader
from .tasks import MixedLoss, Task, TaskProtocol, TokenLoss, build_task, list_tasks, register_task
from .trainer import Trainer, TrainingDiverged


def run(recipe_path: str, out_dir: str, resume: bool = False, overrides=None, progress: bool = True,
        overwrite: bool = False):
    """Trains the recipe at `recipe_path` into `out_dir`; returns the summary dict. An earlier
    run's checkpoints there need `resume` or `overwrite` (Trainer.fit)."""
    from .distributed import init_distributed

    recipe = load_recipe(recipe_path, overrides)
    info = init_distributed()
    trainer = Trainer(recipe, build_task(recipe, info.rank, info.world_size), out_dir, info, progress)
    return trainer.fit(resume=resume, overwrite=overwrite)


__all__ = ["Recipe", "load_recipe", "recipe_from_dict", "Trainer", "TrainingDiverged", "run", "Task",
           "TaskProtocol", "TokenLoss", "MixedLoss", "TensorLoader", "register_task", "build_task", "list_tasks"]
