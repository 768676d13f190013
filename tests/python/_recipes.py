"""Tiny CLIP recipes shared by the trainer tests."""
FMNIST = "/usr/share/datasets/fashion-mnist"
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def tiny_recipe(layers: int = 1, batch_size: int = 32, **train):
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": layers, "num_attention_heads": 2,
             "hidden_act": "gelu"}
    return {
        "model": {"config": {
            "projection_dim": 32,
            "text_config": {**tower, "max_position_embeddings": 16},
            "vision_config": {**tower, "image_size": 28, "patch_size": 7}}},
        "data": {"root": FMNIST, "image_size": 28, "context_length": 16, "batch_size": batch_size, "num_workers": 1,
                 "class_names": CLASSES, "templates": ["a photo of a {}."]},
        "optim": {"lr": 2e-3, "warmup_fraction": 0.1},
        "train": {"plots": False, "steps": 8, "log_every": 1, "checkpoint_every": 4, "threads": 1, **train},
        "eval": {"max_images": 512},
    }


def blip2_recipe(strategy: str, per_rank_batch: int, steps: int = 3):
    """A tiny BLIP-2 stage 1 (task blip2_pretrain) on a 1-layer tower, checkpointed at the end."""
    return {
        "task": "blip2_pretrain",
        "model": {"config": {"num_query_tokens": 4, "image_text_hidden_size": 16,
                             "qformer_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                                "intermediate_size": 48, "max_position_embeddings": 16,
                                                "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}}},
        "tower": {"config": {"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "image_size": 28, "patch_size": 7}},
        "data": {"root": FMNIST, "image_size": 28, "batch_size": per_rank_batch, "num_workers": 1, "context_length": 10,
                 "class_names": CLASSES, "templates": ["a photo of a {}."]},  # one: captions do not depend on the rank
        # AdamW's eps well above the near-zero gradients of an untrained ITC: its updates then follow
        # the gradients instead of normalising their rounding noise, so weights compare closely.
        "optim": {"lr": 2e-3, "warmup_fraction": 0.0, "eps": 1e-3},
        "train": {"plots": False, "steps": steps, "log_every": 1, "checkpoint_every": steps, "threads": 1, "strategy": strategy},
        "eval": {"max_images": 16},
    }
