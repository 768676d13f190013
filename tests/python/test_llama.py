"""LLaMA against transformers' LlamaForCausalLM: the shared fixture (logits, greedy ids), random
configurations side by side (GQA ratios, rope types in both config spellings, tied embeddings,
biases; logits, loss, hidden states, every gradient, generate), KV cache against recomputation,
left-padded batches against one prompt at a time, seeded sampling, bad input."""
import pytest
import torch
from safetensors.torch import load_file

import tessera

transformers = pytest.importorskip("transformers")


def test_fixture_parity(fixture_dir):
    d = fixture_dir("llama")
    io = load_file(str(d / "io.safetensors"))
    model = tessera.from_pretrained(str(d))
    assert isinstance(model, tessera.LlamaForCausalLM)
    out = model(io["input_ids"], labels=io["input_ids"])
    torch.testing.assert_close(out.logits, io["logits"], atol=1e-4, rtol=0)
    # The loss is the shifted cross-entropy, written out.
    expect = torch.nn.functional.cross_entropy(io["logits"][:, :-1].reshape(-1, 1000), io["input_ids"][:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expect, atol=1e-5, rtol=0)
    assert int(out.num_tokens) == 22 and torch.allclose(out.loss_sum / 22, out.loss)
    assert torch.equal(model.generate(io["input_ids"][:1], max_new_tokens=8), io["greedy"])


SMALL = dict(vocab_size=97, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=64, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
CONFIGS = [
    dict(num_key_value_heads=4),
    dict(num_key_value_heads=2, rope_parameters={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0}),
    dict(num_key_value_heads=1, tie_word_embeddings=True, attention_bias=True, mlp_bias=True),
    dict(num_key_value_heads=2, head_dim=12, rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                                                               "factor": 8.0, "low_freq_factor": 1.0,
                                                               "high_freq_factor": 4.0,
                                                               "original_max_position_embeddings": 16}),
    dict(num_key_value_heads=2, rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
         max_position_embeddings=8),
]


def _pair(extra, tmp_path, seed=0):
    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**SMALL, **extra}))
    with torch.no_grad():  # RMSNorm weights start at one: move them too
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hf.save_pretrained(tmp_path)
    return hf, tessera.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("extra", CONFIGS)
def test_side_by_side_with_transformers(extra, tmp_path):
    hf, ours = _pair(extra, tmp_path)
    hf.train(), ours.train()
    ids = torch.randint(0, 97, (3, 12))
    labels = ids.clone()
    labels[0, :5] = -100
    a = hf(ids, labels=labels, output_hidden_states=True)
    b = ours(ids, labels=labels, output_hidden_states=True)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-6, rtol=1e-5)
    assert len(b.hidden_states) == len(a.hidden_states)
    for x, y in zip(b.hidden_states, a.hidden_states):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
    a.loss.backward()
    b.loss.backward()
    theirs = dict(hf.named_parameters())
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(theirs)
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("layers", [1, 3])
def test_left_padding_trains_on_the_loss_transformers_eager_computes(tmp_path, layers):
    """The usual labels (pads -100) still predict the first real token from the last pad row, a
    row that sees no key. Its loss was transformers' (eager), but torch's CPU SDPA backward gives
    such a row's keys weight 1 instead of 1/n: the gradient along v_proj was 2.58 where the loss
    moves by 0.24. From 2 layers on, a key masked twice (-inf) also made a pad row average fewer
    keys than transformers' and the loss differed. Now the loss is eager's and every gradient is
    its derivative (central differences; eager's own backward at such a row also sends its
    queries and keys a gradient the float forward has none of, and its sdpa path computes another
    loss altogether: neither is a reference there)."""
    hf, ours = _pair(dict(num_key_value_heads=1, num_hidden_layers=layers, pad_token_id=0,
                          attn_implementation="eager"), tmp_path)
    ids = torch.tensor([[0, 0, 0, 5, 6, 7, 8, 9], [4, 3, 5, 6, 7, 8, 9, 10]])
    mask = (ids != 0).long()
    labels = ids.masked_fill(mask == 0, -100)
    torch.testing.assert_close(ours.train()(input_ids=ids, attention_mask=mask, labels=labels).loss,
                               hf.train()(input_ids=ids, attention_mask=mask, labels=labels).loss, atol=1e-6, rtol=1e-5)

    def loss():
        return ours(input_ids=ids, attention_mask=mask, labels=labels).loss

    loss().backward()
    for name, p in ours.named_parameters():
        if "layers.0.self_attn" not in name and "embed" not in name:
            continue
        u = torch.randn_like(p)
        if "embed" in name:
            u[0] = 0  # the pad row: no gradient by design (padding_idx, as transformers)
        eps = 1e-2 / u.norm()
        with torch.no_grad():
            p.add_(eps * u)
            up = loss()
            p.sub_(2 * eps * u)
            down = loss()
            p.add_(eps * u)
        fd, autograd = float(up - down) / (2 * eps), float((p.grad * u).sum())
        assert abs(autograd - fd) <= 1e-3 + 0.02 * abs(fd), (name, autograd, fd)


@pytest.mark.parametrize("extra", [CONFIGS[0], CONFIGS[2], CONFIGS[4]])
def test_greedy_generation_equals_transformers(extra, tmp_path):
    hf, ours = _pair(extra, tmp_path, seed=1)
    hf.eval()
    ids = torch.randint(3, 97, (1, 5))
    kwargs = dict(max_new_tokens=10, do_sample=False, repetition_penalty=1.3)
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=2, **kwargs)
    assert torch.equal(ours.generate(ids, **kwargs), want)


def test_kv_cache_equals_recomputation_and_streaming_equals_generate(tmp_path):
    _, ours = _pair(CONFIGS[1], tmp_path)
    ids = torch.randint(3, 97, (2, 6))
    cached = ours.generate(ids, max_new_tokens=12, eos_token_id=[])
    assert torch.equal(ours.generate(ids, max_new_tokens=12, eos_token_id=[], use_cache=False), cached)
    steps = list(ours.stream(ids, max_new_tokens=12, eos_token_id=[]))
    assert torch.equal(torch.stack(steps, 1), cached[:, 6:])
    # A plain forward over the generated prefix picks the same last token.
    assert torch.equal(ours(cached[:, :-1]).logits[:, -1].argmax(-1), cached[:, -1])


def test_left_padded_batch_equals_one_prompt_at_a_time(tmp_path):
    _, ours = _pair(CONFIGS[0], tmp_path)
    prompts = [torch.randint(3, 97, (n,)) for n in (3, 7, 5)]
    width = max(len(p) for p in prompts)
    ids = torch.stack([torch.cat([torch.zeros(width - len(p), dtype=torch.long), p]) for p in prompts])
    mask = torch.stack([torch.cat([torch.zeros(width - len(p)), torch.ones(len(p))]) for p in prompts]).long()
    batch = ours.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[])
    for row, p in zip(batch, prompts):
        alone = ours.generate(p[None], max_new_tokens=8, eos_token_id=[])
        assert torch.equal(row[width:], alone[0, len(p):])


def test_sampling_is_reproducible_from_a_generator(tmp_path):
    _, ours = _pair(CONFIGS[0], tmp_path)
    ids = torch.randint(3, 97, (2, 4))

    def sample(seed, **kw):
        return ours.generate(ids, max_new_tokens=10, do_sample=True, temperature=1.5, top_p=0.9,
                             generator=torch.Generator().manual_seed(seed), eos_token_id=[], **kw)
    assert torch.equal(sample(0), sample(0))
    assert not torch.equal(sample(0), sample(1))
    assert torch.equal(sample(3, top_k=1), ours.generate(ids, max_new_tokens=10, eos_token_id=[]))


def test_stop_ids_end_rows_and_pad_them(tmp_path):
    _, ours = _pair(CONFIGS[0], tmp_path)
    ids = torch.randint(3, 97, (2, 4))
    free = ours.generate(ids, max_new_tokens=6, eos_token_id=[])
    stop = int(free[0, 5])  # row 0's second new token becomes a stop id
    out = ours.generate(ids, max_new_tokens=6, eos_token_id=stop, pad_token_id=0)
    assert out[0, 5] == stop and (out[0, 6:] == 0).all()
    row1_stop = (free[1, 4:] == stop).nonzero()
    if len(row1_stop) == 0:  # row 1 never stops: it runs to max_new_tokens
        assert out.shape[1] == 10 and torch.equal(out[1], free[1])


def test_legacy_rope_scaling_spelling_reads_the_same(tmp_path):
    new = tessera.LlamaForCausalLM({**SMALL, "rope_parameters": {"rope_type": "linear", "rope_theta": 500.0,
                                                                  "factor": 2.0}})
    old = tessera.LlamaForCausalLM({**SMALL, "rope_theta": 500.0, "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert new.config["rope_parameters"] == old.config["rope_parameters"]
    torch.testing.assert_close(tessera._C.llama.rope_inv_freq(__import__("json").dumps(old.config)),
                               transformers.LlamaForCausalLM(transformers.LlamaConfig(
                                   **{**SMALL, "rope_theta": 500.0, "rope_scaling": {"type": "linear", "factor": 2.0}})
                               ).model.rotary_emb.inv_freq)


def test_rope_scaling_beside_rope_parameters_wins_and_required_keys_are_required():
    """transformers 5 lets a non-empty rope_scaling replace rope_parameters (tessera kept the
    latter: unscaled logits, silently); a type without the keys transformers requires (linear
    without factor, a misspelt factor, llama3 without its frequency factors) was filled with
    defaults where transformers refuses it."""
    both = {**SMALL, "rope_parameters": {"rope_type": "default", "rope_theta": 500.0},
            "rope_scaling": {"rope_type": "linear", "factor": 2.0}}
    want = transformers.LlamaForCausalLM(transformers.LlamaConfig(**both)).model.rotary_emb.inv_freq
    ours = tessera.LlamaForCausalLM(both)
    torch.testing.assert_close(tessera._C.llama.rope_inv_freq(__import__("json").dumps(ours.config)), want)
    assert ours.config["rope_parameters"]["rope_type"] == "linear"
    for rope, key in [({"rope_type": "linear", "factr": 2.0}, "factor"),
                      ({"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0}, "low_freq_factor")]:
        with pytest.raises(KeyError, match=key):
            transformers.LlamaConfig(**{**SMALL, "rope_parameters": rope})
        with pytest.raises(ValueError, match=f"rope_parameters: rope type '{rope['rope_type']}' needs '{key}'"):
            tessera.LlamaForCausalLM({**SMALL, "rope_parameters": rope})


@pytest.mark.parametrize("call, message", [
    (lambda m: m.generate(torch.ones(1, 60, dtype=torch.long), max_new_tokens=10), "exceeds the model's context"),
    (lambda m: m(torch.ones(1, 70, dtype=torch.long)), "exceed max_position_embeddings 64"),
    (lambda m: m(torch.ones(2, 5, dtype=torch.long), labels=torch.ones(2, 4, dtype=torch.long)), r"labels must be \[2, 5\]"),
    (lambda m: m(torch.ones(2, 5, dtype=torch.long), labels=torch.full((2, 5), 500)), r"token ids in \[0, 97\)"),
    (lambda m: m(torch.ones(2, 5)), "input_ids must be int64"),
    (lambda m: m(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4)), r"attention_mask must be \[2, 5\]"),
    (lambda m: m.generate(torch.ones(1, 3, dtype=torch.long), do_sample=True, temperature=0.0), "temperature"),
    (lambda m: m.generate(torch.zeros(2, 0, dtype=torch.long)), "empty prompt"),
    (lambda m: m.generate(torch.zeros(0, 3, dtype=torch.long)), "has no rows"),
    (lambda m: m.generate(torch.ones(2, 3)), r"input_ids must be int64 \[batch, prompt\], got Float \[2, 3\]"),
])
def test_bad_input_is_a_clear_error(call, message):
    model = tessera.LlamaForCausalLM(SMALL)
    with pytest.raises(ValueError, match=message):
        call(model)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="rope type 'yarn' is not supported"):
        tessera.LlamaForCausalLM({**SMALL, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}})
    with pytest.raises(ValueError, match="not a multiple of num_key_value_heads 3"):
        tessera.LlamaForCausalLM({**SMALL, "num_key_value_heads": 3})
    # A rope_theta of 0 or below gave inf/NaN frequencies and finite garbage logits; a list where
    # rope_parameters belongs was ignored.
    for rope in ({"rope_parameters": {"rope_type": "default", "rope_theta": 0.0}}, {"rope_theta": -5.0}):
        with pytest.raises(ValueError, match="rope_theta must be > 0"):
            tessera.LlamaForCausalLM({**SMALL, **rope})
    with pytest.raises(ValueError, match="rope_parameters must be an object"):
        tessera.LlamaForCausalLM({**SMALL, "rope_parameters": [1]})
