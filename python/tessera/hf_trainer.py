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

from ._warn import warn


class SavePretrainedCallback(TrainerCallback):
    """Writes the model's config beside each checkpoint's weights (`on_save`) and into the output
    folder, for `trainer.save_model()`, at the end of training, wherever Trainer writes weights
    (`args.should_save`). A model with LoRA adapters is saved whole with save_pretrained instead
    (merged weights both libraries load, the adapter in PEFT's files beside them): Trainer's file
    holds the adapters unmerged, which transformers would drop without a word."""

    def on_save(self, args, state, control, model=None, **kwargs):
        if args.should_save:
            _save(model, os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if args.should_save:
            _save(model, args.output_dir)
            if getattr(model, "lora_config", None):
                warn(f"{args.output_dir}: the LoRA model is saved merged; a trainer.save_model() after this would "
                     "write its adapters unmerged over it (transformers would load the base model): skip it")


def _save(model, folder: str) -> None:
    if getattr(model, "save_config", None) is None:
        raise TypeError(f"SavePretrainedCallback is for tessera models; {type(model).__name__} has no save_config "
                        "(transformers' own models save their config already)")
    if getattr(model, "lora_config", None):
        model.save_pretrained(folder)
    else:
        model.save_config(folder)
