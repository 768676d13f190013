"""transformers' Trainer on a tessera model: the callback that makes its checkpoints loadable.

Trainer saves a model that is not transformers' own as its weights alone (model.safetensors, no
config.json), so neither tessera nor transformers could load a checkpoint folder it wrote. With
the callback, every `checkpoint-N` folder and the output folder get the model's config.json (and
a language model's generation_config.json) beside the weights::

    from tessera.hf_trainer import SavePretrainedCallback
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   callbacks=[SavePretrainedCallback()])
    trainer.train(); trainer.save_model()
    tessera.from_pretrained(args.output_dir)   # transformers' from_pretrained loads it too

This module imports transformers (a test and integration dependency, never tessera's own).
"""
from __future__ import annotations

import os

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


class SavePretrainedCallback(TrainerCallback):
    """Writes the model's config beside each checkpoint's weights (`on_save`) and into the output
    folder, for `trainer.save_model()`, at the end of training. Only the main process writes."""

    def on_save(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            _save_config(model, os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            _save_config(model, args.output_dir)


def _save_config(model, folder: str) -> None:
    save = getattr(model, "save_config", None)
    if save is None:
        raise TypeError(f"SavePretrainedCallback is for tessera models; {type(model).__name__} has no save_config "
                        "(transformers' own models save their config already)")
    save(folder)
