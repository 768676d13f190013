"""The tiny LLaMA config the hostile-input and LoRA tests share (2 layers, grouped-query attention)."""
LLAMA = dict(vocab_size=60, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=32)
