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
        "train": {"steps": 8, "log_every": 1, "checkpoint_every": 4, "threads": 1, **train},
        "eval": {"max_images": 512},
    }
