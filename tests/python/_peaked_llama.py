"""A small random LLaMA with peaked next-token distributions (rows stop early and at different
steps), as transformers' model and as tessera's loaded from its folder: the pair the generation
tests compare side by side."""
import tessera
import torch

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
