"""Tiny stand-ins for the demo runs Sugar starts from (interleaved data, the instruction set's
tokenizer, random CLIP, MAE and LLaVA checkpoints) and a Sugar recipe over them."""
import torch

import tessera
from tessera.data import instruct, interleaved

FMNIST = "/usr/share/datasets/fashion-mnist"
TOWER = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2)


def make_runs(root):
    interleaved.generate(str(root / "set"), sequences=40, scenes=8, heldout_sequences=12, pairs=6,
                         single_modality=10)
    instruct.generate(str(root / "instruct"), fashion=40, scenes=10, heldout_fashion=2, heldout_scenes=2,
                      vocab_size=600)
    torch.manual_seed(0)
    tessera.CLIPModel({"projection_dim": 16, "text_config": {**TOWER, "max_position_embeddings": 16},
                       "vision_config": {**TOWER, "image_size": 28, "patch_size": 7}}).save_pretrained(str(root / "clip"))
    tessera.ViTMAEForPreTraining({**TOWER, "image_size": 28, "patch_size": 7, "decoder_hidden_size": 16,
                                  "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2,
                                  "decoder_intermediate_size": 32}).save_pretrained(str(root / "mae"))
    tok = tessera.text.SentencePieceTokenizer(str(root / "instruct" / "tokenizer.model"), special_tokens=["<image>"])
    text = dict(vocab_size=1024, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
    tessera.LlavaForConditionalGeneration({
        "text_config": text, "vision_config": {**TOWER, "image_size": 28, "patch_size": 7},
        "vision_feature_layer": -1, "image_token_index": tok.special_tokens["<image>"]}).save_pretrained(str(root / "llava"))
    return root


def recipe(root, alpha=1.0, steps=3, batch_size=8, **targets):
    return {"task": "sugar", "init": {"checkpoint": str(root / "llava")},
            "lora": {"r": 4, "alpha": 8, "target_modules": "language_model\\..*\\.(q_proj|v_proj)",
                     "modules_to_save": ["multi_modal_projector"]},
            "data": {"train": str(root / "set" / "train.jsonl"), "eval": str(root / "set" / "heldout.jsonl"),
                     "pairs": str(root / "set" / "pairs.jsonl"),
                     "tokenizer": str(root / "instruct" / "tokenizer.model"), "batch_size": batch_size},
            "loss": {"alpha": alpha, "points_per_sample": 2, "projector_hidden": 32, "projector_dim": 16},
            "targets": {"clip": str(root / "clip"), "image_encoder": str(root / "mae"),
                        "cache_dir": str(root / "cache"), **targets},
            "optim": {"lr": 0.01, "warmup_fraction": 0.0, "weight_decay": 0.0},
            "train": {"plots": False, "steps": steps, "log_every": 1, "checkpoint_every": steps, "threads": 2},
            "eval": {"max_samples": 6, "target_fit_samples": 6, "batch_size": 16, "template": "llava_v1"}}
