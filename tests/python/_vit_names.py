"""transformers 5 renames ViT-family modules in memory and converts on save; tessera's parameter
names are the saved ones. `hf_name` maps ours onto transformers' in-memory names (MAE, BEiT)."""
import re

_RENAMES = [(r"\.encoder\.layer\.", ".layers."), (r"^encoder\.layer\.", "layers."),
            (r"decoder\.decoder_encoder\.layer\.", "decoder.decoder_layers."),
            (r"attention\.attention\.relative_position_bias", "relative_position_bias"),
            (r"(^|\.)encoder\.relative_position_bias", r"\1shared_position_bias"),
            (r"attention\.attention\.query", "attention.q_proj"), (r"attention\.attention\.key", "attention.k_proj"),
            (r"attention\.attention\.value", "attention.v_proj"), (r"attention\.output\.dense", "attention.o_proj"),
            (r"intermediate\.dense", "mlp.fc1"), (r"output\.dense", "mlp.fc2")]


def hf_name(ours: str) -> str:
    for pattern, repl in _RENAMES:
        ours = re.sub(pattern, repl, ours)
    return ours
