"""A small random LLaMA with peaked next-token distributions (rows stop early and at different
steps), as transformers' model and as tessera's loaded from its folder: the pair the generation
tests compare side by side."""
import tessera
import torch

#: Two prompts for those models, the first left-padded with id 0; a bigram repeats in each.
IDS = torch.tensor([[0, 0, 14, 52, 9, 14], [33, 8, 71, 40, 2, 8]])
MASK = (IDS != 0).long()

SMALL = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def peaked_llama_pair(tmp_path_factory, seed: int, **config):
    import transformers

    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**SMALL, **config}))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    path = tmp_path_factory.mktemp("llama")
    hf.save_pretrained(path)
    return hf.eval(), tessera.from_pretrained(str(path))
