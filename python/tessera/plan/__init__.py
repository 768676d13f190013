"""`tessera plan`: a recipe's peak memory per rank before it runs, and settings that fit a device.

    >>> from tessera.plan import plan_recipe
    >>> plan_recipe("recipes/fashion_mnist_clip.yaml").peak / 2**20      # MiB per rank
"""
from .estimate import MemoryPlan, Settings, plan_memory, suggest, variants
from .shapes import ModelShape, Stack


def settings_for(recipe, shape: ModelShape, world_size: int = 1, device: str = "cpu") -> Settings:
    t = recipe.train
    return Settings(world_size=world_size, strategy=t.strategy, precision=t.precision,
                    checkpointing=recipe.model.gradient_checkpointing, batch_size=shape.batch_size,
                    accumulation=recipe.optim.accumulation_steps, prefetch=shape.prefetch, device=device,
                    in_backward=recipe.optim.in_backward)


def model_shape(recipe) -> ModelShape:
    """The recipe's model as its task describes it (`Task.memory_shape`)."""
    from ..train.tasks import task_class

    cls = task_class(recipe.task)
    if not hasattr(cls, "memory_shape"):
        raise ValueError(f"task {recipe.task!r} ({cls.__name__}) does not describe its memory: "
                         f"it has no memory_shape(recipe) method")
    return cls.memory_shape(recipe)


def plan_recipe(path: str, overrides=None, world_size: int = 1, device: str = "cpu") -> MemoryPlan:
    from ..train import load_recipe

    recipe = load_recipe(path, overrides)
    shape = model_shape(recipe)
    return plan_memory(shape, settings_for(recipe, shape, world_size, device))


__all__ = ["MemoryPlan", "ModelShape", "Settings", "Stack", "model_shape", "plan_memory", "plan_recipe",
           "settings_for", "suggest", "variants"]
