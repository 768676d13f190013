"""Generation around the decoding loop, side by side with transformers: which id pads finished
rows, how far the context reaches, the folder's generation_config.json, a config without stop ids,
and what generation leaves behind for the caller's own code (autograd, layer hooks) and refuses
(hooks on the model itself, a LoRA target that matches nothing)."""
import json

import pytest
import torch

import tessera
from tessera import lora

from _peaked_llama import IDS, MASK, peaked_llama_pair

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)


def _pair(tmp_path, edit_generation=None, **config):
    torch.manual_seed(3)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**SMALL, **config}))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    hf.save_pretrained(tmp_path)
    if edit_generation:
        path = tmp_path / "generation_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **edit_generation}))
        hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path)
    return hf.eval(), tessera.from_pretrained(str(tmp_path))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return _pair(tmp_path_factory.mktemp("llama"))


@pytest.mark.parametrize("extra", [dict(), dict(num_beams=3), dict(num_beams=3, pad_token_id=0)])
def test_finished_rows_are_padded_with_the_first_stop_id_as_given(pair, extra):
    """The stop ids were sorted first, so the smallest padded finished rows, not the first."""
    hf, ours = pair
    ids = torch.randint(3, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    kwargs = dict(max_new_tokens=12, eos_token_id=[37, 5, 11, 17, 23, 29, 31], **extra)
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kwargs)
    assert torch.equal(ours.generate(ids, **kwargs), want)


@pytest.mark.parametrize("prompt, new, beams", [(64, 1, 1), (63, 2, 1), (63, 2, 2), (62, 3, 2)])
def test_the_context_holds_the_prompt_and_every_token_fed_back(pair, prompt, new, beams):
    """P + n ids run the model on P + n - 1 positions: the last token is never fed in, so a
    64-token prompt of a 64-position model still gives one token (it was refused)."""
    hf, ours = pair
    ids = torch.randint(3, 97, (1, prompt), generator=torch.Generator().manual_seed(prompt))
    kwargs = dict(max_new_tokens=new, eos_token_id=[], pad_token_id=1, num_beams=beams)
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kwargs)
    assert torch.equal(ours.generate(ids, **kwargs), want)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        ours.generate(ids, max_new_tokens=new + 1, num_beams=beams)


def test_the_folders_generation_config_is_read_as_transformers_reads_it(tmp_path):
    """Llama-3-Instruct ships its second stop id and its sampling settings in
    generation_config.json; config.json alone decoded past the stop, greedily."""
    hf, ours = _pair(tmp_path / "a")
    ids = torch.randint(3, 97, (1, 5), generator=torch.Generator().manual_seed(1))
    free = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                       eos_token_id=None, pad_token_id=0)
    stop = int(free[0, 7])
    hf, ours = _pair(tmp_path / "b", edit_generation=dict(eos_token_id=[2, stop], pad_token_id=0))
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10)
    assert torch.equal(ours.generate(ids, max_new_tokens=10), want) and want.shape[1] < 15
    # Sampling settings too, and an argument given still wins over the file.
    hf, ours = _pair(tmp_path / "c", edit_generation=dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9))
    torch.manual_seed(5)
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12)
    assert torch.equal(ours.generate(ids, max_new_tokens=12, generator=torch.Generator().manual_seed(5)), want)
    assert torch.equal(ours.generate(ids, max_new_tokens=12, do_sample=False),
                       hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False))
    # Kept by save_pretrained; a value generate refuses is left out with a warning; a file that is
    # not a generation config is named.
    ours.save_pretrained(str(tmp_path / "d"))
    assert tessera.from_pretrained(str(tmp_path / "d")).generation_defaults == ours.generation_defaults
    (tmp_path / "d" / "generation_config.json").write_text(json.dumps({"top_p": 2.0, "top_k": 7}))
    with pytest.warns(UserWarning, match=r"generation_config.json: top_p 2.0 left out .*top_p must be in \(0, 1\]"):
        assert tessera.from_pretrained(str(tmp_path / "d")).generation_defaults == {"top_k": 7}
    (tmp_path / "d" / "generation_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="generation_config.json: a generation config is a JSON object"):
        tessera.from_pretrained(str(tmp_path / "d"))


def test_a_config_without_stop_ids_decodes_to_max_new_tokens(tmp_path):
    """"eos_token_id": null is no stop id in transformers; it was read as the default 2."""
    hf, ours = _pair(tmp_path, eos_token_id=None)
    (tmp_path / "generation_config.json").unlink()  # config.json alone
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ours = tessera.from_pretrained(str(tmp_path))
    ids = torch.tensor([[5, 2, 9]])
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(ids, max_new_tokens=16, pad_token_id=0), want) and want.shape[1] == 19
    assert ours.config["eos_token_id"] is None


def test_a_generation_file_without_stop_ids_decodes_past_the_configs_eos(tmp_path):
    """transformers takes config.json's stop and pad ids only when the folder has no
    generation_config.json (from_model_config); a file without them means none. tessera fell back
    to config.json's eos and ended rows where transformers ran on."""
    hf, ours = _pair(tmp_path / "a")
    g = torch.Generator().manual_seed(7)
    prompts = torch.randint(3, 97, (64, 4), generator=g)
    free = hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=12, do_sample=False,
                       eos_token_id=None, pad_token_id=0)
    ends = (free[:, 4:-1] == 2).any(1)  # rows whose greedy path passes the config's eos
    assert ends.any(), "no prompt reaches eos: pick another seed"
    ids = prompts[ends][:2]
    hf, ours = _pair(tmp_path / "b", edit_generation=dict(eos_token_id=None, pad_token_id=None))
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12)
    assert want.shape[1] == 16 and bool((want[:, 4:-1] == 2).any())
    assert torch.equal(ours.generate(ids, max_new_tokens=12), want)
    assert ours.generation_config.eos_token_id is None
    # Without the file the config's ids hold, and stay when one setting is changed, as on
    # transformers' derived config.
    (tmp_path / "b" / "generation_config.json").unlink()
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "b").eval()
    ours = tessera.from_pretrained(str(tmp_path / "b"))
    assert ours.generation_config.eos_token_id == hf.generation_config.eos_token_id == 2
    ours.generation_config.max_new_tokens = hf.generation_config.max_new_tokens = 12
    want = hf.generate(ids, attention_mask=torch.ones_like(ids))
    assert want.shape[1] < 16 and torch.equal(ours.generate(ids), want)
    # Clearing the stop id, or a whole config without ids (an empty one included), runs on there.
    ours.generation_config.eos_token_id = hf.generation_config.eos_token_id = None
    runs_on = hf.generate(ids, attention_mask=torch.ones_like(ids))
    assert runs_on.shape[1] == 16 and torch.equal(ours.generate(ids), runs_on)
    for config in (transformers.GenerationConfig(), transformers.GenerationConfig(max_new_tokens=12)):
        ours.generation_config = hf.generation_config = config
        assert torch.equal(ours.generate(ids, max_new_tokens=12), runs_on)
    # Saved and loaded again by either library, a config without stop ids still has none.
    ours.save_pretrained(str(tmp_path / "saved"))
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "saved").eval()
    assert torch.equal(back.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12), runs_on)
    assert torch.equal(tessera.from_pretrained(str(tmp_path / "saved")).generate(ids, max_new_tokens=12), runs_on)
    # A stop list naming an id past the vocabulary keeps the others, as transformers stops at them.
    hf, ours = _pair(tmp_path / "c", edit_generation=dict(eos_token_id=[2, 500]))
    with pytest.warns(UserWarning, match=r"eos_token_id \[500\] left out"):
        ours = tessera.from_pretrained(str(tmp_path / "c"))
    assert torch.equal(ours.generate(ids, max_new_tokens=12), want)
    assert torch.equal(ours.generate(ids, max_new_tokens=12, eos_token_id=[2, 500]), want)  # passed, the same


def test_without_a_generation_file_config_json_settings_apply_as_transformers_derives_them(tmp_path):
    """Without generation_config.json transformers derives the generation config from config.json
    (from_model_config), where older checkpoints keep max_length (which counts the prompt) and
    the like. tessera read only the stop and pad ids there: 20 new tokens, no penalty."""
    hf, _ = _pair(tmp_path)
    (tmp_path / "generation_config.json").unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    ids = torch.randint(3, 97, (2, 4), generator=torch.Generator().manual_seed(3))
    for legacy in (dict(max_length=9, repetition_penalty=1.5, no_repeat_ngram_size=2),
                   dict(max_length=20, num_beams=1, do_sample=False, temperature=1.0, top_k=50, use_cache=True)):
        (tmp_path / "config.json").write_text(json.dumps({**config, **legacy}))
        hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
        ours = tessera.from_pretrained(str(tmp_path))
        want = hf.generate(ids, attention_mask=torch.ones_like(ids))
        assert want.shape[1] == legacy["max_length"] and torch.equal(ours.generate(ids), want), legacy
        assert ours.generation_config.max_length == hf.generation_config.max_length
    assert torch.equal(ours.generate(ids, max_new_tokens=6),  # an argument still wins
                       hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6))
    # Saved into a folder that has a generation_config.json already: the settings go into it.
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "generation_config.json").write_text('{"bos_token_id": 1}')
    ours.save_pretrained(str(tmp_path / "again"))
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "again").eval()
    want = hf.generate(ids, attention_mask=torch.ones_like(ids))
    assert torch.equal(back.generate(ids, attention_mask=torch.ones_like(ids)), want)
    assert torch.equal(tessera.from_pretrained(str(tmp_path / "again")).generate(ids), want)
    # Derived from the folder's own config.json, whatever config= says; overrides cannot set them
    # (transformers refuses them as config keywords).
    given = tessera.from_pretrained(str(tmp_path / "again"), config=config)
    assert torch.equal(given.generate(ids), want)
    with pytest.raises(ValueError, match=r"config_overrides: repetition_penalty is a generation setting, not a "
                                         r"model config key: set model.generation_config"):
        tessera.from_pretrained(str(tmp_path), config_overrides=dict(repetition_penalty=1.5))
    # Built from a config (no folder), transformers' config class keeps no such key: ids only.
    built = {**config, **legacy}
    hf_built = transformers.LlamaForCausalLM(transformers.LlamaConfig(**built)).eval()
    ours_built = tessera.LlamaForCausalLM(built).eval()
    ours_built.load_state_dict(hf_built.state_dict(), strict=False)
    want = hf_built.generate(ids, attention_mask=torch.ones_like(ids))
    assert want.shape[1] == 4 + 20 and torch.equal(ours_built.generate(ids), want)
    ours_built.save_pretrained(str(tmp_path / "built"))  # transformers' config class drops them: so does the save
    assert "max_length" not in json.loads((tmp_path / "built" / "config.json").read_text())
    assert torch.equal(tessera.from_pretrained(str(tmp_path / "built")).generate(ids), want)
    # A mapping of data is not a sub-config: its keys are no settings.
    tessera.from_pretrained(str(tmp_path / "built"), config_overrides={"label2id": {"temperature": 0}})


def test_a_stream_leaves_autograd_and_layer_hooks_to_the_callers_code(pair):
    """Between steps, grad was off in the caller's code, and layer hooks skipped in its own
    forwards; two streams ending out of order skipped them for good."""
    _, ours = pair
    ids = torch.randint(3, 97, (1, 4), generator=torch.Generator().manual_seed(2))
    calls = []
    hook = ours.model.layers[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        first = ours.stream(ids, max_new_tokens=4, eos_token_id=[])
        next(first)
        assert torch.is_grad_enabled()
        second = ours.stream(ids, max_new_tokens=4, eos_token_id=[])
        next(second)
        calls.clear()
        ours(ids)
        assert calls, "a layer hook was skipped while a stream was open"
        list(first)
        del first
        list(second)
        del second
        calls.clear()
        ours(ids)
        assert calls
    finally:
        hook.remove()


def test_hooks_on_the_model_itself_are_refused_not_skipped(pair):
    """Generation decodes in C++ without calling the model's forward: transformers ran such a
    hook every step; here it never ran."""
    _, ours = pair
    handle = ours.register_forward_hook(lambda m, i, o: o)
    try:
        for call in (lambda: ours.generate(torch.tensor([[5, 6]]), max_new_tokens=2),
                     lambda: next(ours.stream(torch.tensor([[5, 6]]), max_new_tokens=2))):
            with pytest.raises(ValueError, match="forward hooks of its own.*hook its decoder layers"):
                call()
    finally:
        handle.remove()
    ours.generate(torch.tensor([[5, 6]]), max_new_tokens=2)


def test_every_listed_lora_target_must_match(tmp_path):
    """A tied model has no lm_head layer: listed with q_proj, it was dropped without a word."""
    _, tied = _pair(tmp_path, tie_word_embeddings=True)
    with pytest.raises(ValueError, match="'lm_head' matches no linear layer: the model ties its output layer"):
        lora.apply_lora(tied, ["q_proj", "lm_head"], r=2)
    with pytest.raises(ValueError, match="'k_projj' matches no linear layer"):
        lora.apply_lora(tied, ["q_proj", "k_projj"], r=2)


def test_an_argument_passed_as_none_keeps_its_meaning(pair):
    """Generate's defaults are "not passed", not None: top_k=None turns the filter off, as in
    transformers (dropping every None made it 50)."""
    hf, ours = pair
    ids = torch.tensor([[5, 6, 7]])
    draws = {k: ours.generate(ids, do_sample=True, max_new_tokens=8, top_k=k, generator=torch.Generator().manual_seed(3))
             for k in (None, 0, 50)}
    assert torch.equal(draws[None], draws[0])
    torch.manual_seed(3)
    assert torch.equal(draws[None], hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                               max_new_tokens=8, top_k=None))


#: Every setting transformers reads that may be passed as None (num_beams and num_return_sequences
#: fail there; use_cache=None makes transformers decode without its cache but feed one back).
NONE_KEYS = ("eos_token_id", "pad_token_id", "max_new_tokens", "temperature", "top_k", "top_p", "do_sample",
             "repetition_penalty", "length_penalty", "min_new_tokens", "no_repeat_ngram_size", "typical_p", "min_p",
             "epsilon_cutoff", "eta_cutoff", "early_stopping", "max_length", "min_length", "sequence_bias",
             "bad_words_ids", "forced_bos_token_id", "forced_eos_token_id", "suppress_tokens", "begin_suppress_tokens",
             "exponential_decay_length_penalty")


@pytest.fixture(scope="module")
def stopping_pair(tmp_path_factory):
    """Rows of IDS stop at different steps on id 30 (its eos), pad 0."""
    return peaked_llama_pair(tmp_path_factory, 0, eos_token_id=30, pad_token_id=0)


@pytest.mark.parametrize("sample", [False, True])
def test_every_setting_passed_as_none_means_what_it_means_to_transformers(stopping_pair, sample):
    """None is transformers' "unset", over the model's generation config too: eos_token_id None
    decodes past the stop id (tessera stopped at the config's), pad_token_id None pads with the stop
    id (tessera used the config's pad), and the settings that cannot be None take their defaults
    (max_new_tokens=None, temperature=None, ... were refused)."""
    hf, ours = stopping_pair
    for key in NONE_KEYS:
        kwargs = {"max_new_tokens": 12, "do_sample": sample, key: None}
        torch.manual_seed(0)
        want = hf.generate(IDS, attention_mask=MASK, **kwargs)
        torch.manual_seed(0)
        assert torch.equal(ours.generate(IDS, attention_mask=MASK, **kwargs), want), key
    plain = ours.generate(IDS, attention_mask=MASK, max_new_tokens=12)
    for key in ("eos_token_id", "pad_token_id"):  # each changes the ids here
        assert not torch.equal(ours.generate(IDS, attention_mask=MASK, max_new_tokens=12, **{key: None}), plain), key


def test_a_generation_config_transformers_accepts_loads(tmp_path):
    """Values generate refuses are left out with a warning, never a failed load; a file's beam
    settings do not reach a stream; saving keeps HF's other keys and drops what the model lacks."""
    _, ours = _pair(tmp_path / "a", edit_generation=dict(repetition_penalty=0.0, max_new_tokens=6.0, num_beams=2))
    with pytest.warns(UserWarning, match="repetition_penalty 0.0 left out"):
        ours = tessera.from_pretrained(str(tmp_path / "a"))
    assert ours.generation_defaults["max_new_tokens"] == 6 and ours.generation_defaults["num_beams"] == 2
    ids = torch.tensor([[5, 6, 7]])
    assert ours.generate(ids).shape[1] == 3 + 6
    assert len(list(ours.stream(ids))) <= 6  # greedy, one token at a time: num_beams 2 does not apply
    _pair(tmp_path / "b", edit_generation=dict(do_sample=True, temperature=0.0))
    with pytest.warns(UserWarning, match="sampling settings .* left out"):
        sampled = tessera.from_pretrained(str(tmp_path / "b"))
    assert "do_sample" not in sampled.generation_defaults
    # Saved into a folder with HF's file: its other keys stay; a model without defaults removes ours.
    ours.save_pretrained(str(tmp_path / "b"))
    kept = json.loads((tmp_path / "b" / "generation_config.json").read_text())
    assert kept["num_beams"] == 2 and "transformers_version" in kept and "temperature" not in kept
    plain = tessera.LlamaForCausalLM(SMALL)
    plain.save_pretrained(str(tmp_path / "b"))
    # (the file keeps the config's stop id, which transformers reads there alone)
    assert tessera.from_pretrained(str(tmp_path / "b")).generation_defaults == {"eos_token_id": 2}


def test_the_files_max_length_counts_the_prompt_and_yields_to_max_new_tokens(tmp_path):
    """generation_config.json's max_length was dropped: 20 new tokens instead of the file's total."""
    hf, ours = _pair(tmp_path, edit_generation=dict(max_length=30, eos_token_id=[], pad_token_id=0))
    ids = torch.randint(3, 97, (1, 5), generator=torch.Generator().manual_seed(2))
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False)
    assert want.shape[1] == 30 and torch.equal(ours.generate(ids), want)
    for kw in (dict(max_new_tokens=4), dict(max_length=12)):  # an argument wins, as in transformers
        assert torch.equal(ours.generate(ids, **kw), hf.generate(ids, attention_mask=torch.ones_like(ids), **kw))
    assert sum(len(step) for step in ours.stream(ids)) == 25
    with pytest.raises(ValueError, match=r"max_length 30 \(generation_config.json\) counts the prompt.*31 tokens"):
        ours.generate(torch.ones(1, 31, dtype=torch.long))


@pytest.mark.parametrize("beams", [1, 3])
def test_embeddings_alone_give_the_new_ids_as_transformers(pair, beams):
    """transformers generates from inputs_embeds alone (greedy; its beam search fails there, so
    beams are checked against its call with the ids the embeddings stand for)."""
    hf, ours = pair
    ids = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(4))
    kwargs = dict(max_new_tokens=7, num_beams=beams, eos_token_id=[], pad_token_id=1)  # 0: transformers' beams fail
    with torch.no_grad():
        embeds = hf.get_input_embeddings()(ids)
        want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kwargs)[:, 6:]
        assert torch.equal(hf.generate(inputs_embeds=embeds, do_sample=False, **kwargs), want)
        if beams == 1:
            assert torch.equal(torch.stack(list(ours.stream(inputs_embeds=embeds, **kwargs)), 1), want)
        assert torch.equal(ours.generate(inputs_embeds=embeds, **kwargs), want)
        with pytest.raises(ValueError, match="repetition_penalty 1.2 .* inputs_embeds came without them"):
            ours.generate(inputs_embeds=embeds, repetition_penalty=1.2)
        # Every setting that reads the prompt is named at once, each with the value that turns it off.
        with pytest.raises(ValueError, match=r"no_repeat_ngram_size 2 \(off: 0\), forced_bos_token_id 5 \(off: None\) "
                                             "read the prompt's ids.* or their off values"):
            ours.generate(inputs_embeds=embeds, no_repeat_ngram_size=2, forced_bos_token_id=5)


def test_a_padded_prompt_without_a_mask_is_read_as_transformers_reads_it(fixture_dir):
    """Without attention_mask, transformers takes the pad id's positions as padding (when the pad
    id occurs and is no stop id); tessera attended to them, so a left-padded row continued otherwise."""
    d = str(fixture_dir("llama"))
    ours, theirs = tessera.from_pretrained(d), transformers.LlamaForCausalLM.from_pretrained(d).eval()
    ids = torch.randint(3, 1000, (2, 8), generator=torch.Generator().manual_seed(0))
    ids[0, :3] = 0  # row 0 left-padded with pad id 0
    want = theirs.generate(ids, pad_token_id=0, max_new_tokens=6, do_sample=False)
    assert torch.equal(want, theirs.generate(ids, attention_mask=(ids != 0).long(), pad_token_id=0, max_new_tokens=6,
                                             do_sample=False))  # the reference did read row 0 as padded
    assert torch.equal(ours.generate(ids, pad_token_id=0, max_new_tokens=6), want)
    stepped = torch.stack(list(ours.stream(ids, pad_token_id=0, max_new_tokens=6)), 1)
    assert torch.equal(stepped, want[:, 8:])
    eos = theirs.generation_config.eos_token_id
    eos = eos if isinstance(eos, int) else eos[0]
    same = ids.clone()
    same[0, :3] = eos  # a pad id that is a stop id: every position is real, in both
    assert torch.equal(ours.generate(same, pad_token_id=eos, max_new_tokens=4),
                       theirs.generate(same, pad_token_id=eos, max_new_tokens=4, do_sample=False))


def test_llava_reads_a_padded_prompt_without_a_mask_as_transformers(fixture_dir):
    d = str(fixture_dir("llava"))
    ours, theirs = tessera.from_pretrained(d), transformers.LlavaForConditionalGeneration.from_pretrained(d).eval()
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(3, 900, (2, 24), generator=torch.Generator().manual_seed(1))
    ids[:, 4:20] = ours.config["image_token_index"]
    ids[0, :2] = 0
    want = theirs.generate(input_ids=ids, pixel_values=px, pad_token_id=0, max_new_tokens=5, do_sample=False)
    assert torch.equal(ours.generate(input_ids=ids, pixel_values=px, pad_token_id=0, max_new_tokens=5), want)


def test_llava_without_a_generation_file_takes_the_outer_configs_ids_first(fixture_dir, tmp_path):
    """transformers derives LLaVA's ids from the outer config first, then text_config: tessera read
    text_config's alone, and saving into a folder with a generation_config.json wrote those."""
    import shutil

    src = fixture_dir("llava")
    shutil.copy(src / "model.safetensors", tmp_path / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(3, 900, (2, 24), generator=torch.Generator().manual_seed(1))
    ids[:, 4:20] = config["image_token_index"]
    free = tessera.from_pretrained(str(src)).generate(input_ids=ids, pixel_values=px, max_new_tokens=8,
                                                      eos_token_id=[])
    stop = int(free[0, 24 + 2])  # the first row ends after three new tokens
    (tmp_path / "config.json").write_text(json.dumps({**config, "eos_token_id": [2, stop], "pad_token_id": 7}))
    theirs = transformers.LlavaForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    want = theirs.generate(input_ids=ids, pixel_values=px, max_new_tokens=8, do_sample=False)
    assert want[0, -1] == 7  # stopped, padded with the outer pad id
    ours = tessera.from_pretrained(str(tmp_path))
    assert torch.equal(ours.generate(input_ids=ids, pixel_values=px, max_new_tokens=8), want)
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "generation_config.json").write_text('{"bos_token_id": 1}')
    ours.save_pretrained(str(tmp_path / "saved"))
    for back in (tessera.from_pretrained(str(tmp_path / "saved")),
                 transformers.LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "saved")).eval()):
        got = back.generate(input_ids=ids, pixel_values=px, max_new_tokens=8, do_sample=False)
        assert torch.equal(got, want), type(back).__module__


def test_generation_config_attribute_as_transformers(fixture_dir, tmp_path):
    """`model.generation_config.x = v` and assigning transformers' GenerationConfig set the
    defaults generate uses and save_pretrained writes (an AttributeError before); a setting tessera
    lacks is refused by name, since transformers' generate would apply it."""
    d = str(fixture_dir("llama"))
    ours, theirs = tessera.from_pretrained(d), transformers.LlamaForCausalLM.from_pretrained(d).eval()
    ids = torch.randint(3, 1000, (2, 5), generator=torch.Generator().manual_seed(0))
    ours.generation_config.max_new_tokens = theirs.generation_config.max_new_tokens = 7
    ours.generation_config.repetition_penalty = theirs.generation_config.repetition_penalty = 1.3
    assert torch.equal(ours.generate(ids), theirs.generate(ids, do_sample=False))
    ours.save_pretrained(str(tmp_path))
    saved = transformers.GenerationConfig.from_pretrained(str(tmp_path))
    assert saved.max_new_tokens == 7 and saved.repetition_penalty == 1.3
    ours.generation_config = transformers.GenerationConfig(max_new_tokens=3, eos_token_id=2)
    assert ours.generate(ids).shape[1] <= 8 and ours.generation_config.max_new_tokens == 3
    with pytest.raises(ValueError, match="guidance_scale would change what transformers generates"):
        ours.generation_config = transformers.GenerationConfig(guidance_scale=1.5)
    with pytest.raises(ValueError, match="guidance_scale"):
        ours.generation_config.guidance_scale = 1.5
    with pytest.raises(ValueError, match="top_p must be in"):
        ours.generation_config.top_p = 2.0
    with pytest.raises(AttributeError, match="generation_config"):  # not a generating model
        tessera.from_pretrained(str(fixture_dir("clip"))).generation_config


def test_without_a_generation_file_the_configs_pad_id_marks_the_padding(tmp_path):
    """transformers derives the generation settings from config.json when the folder has no
    generation_config.json: its pad_token_id then marks a prompt's padding."""
    theirs, ours = _pair(tmp_path, pad_token_id=0)
    (tmp_path / "generation_config.json").unlink()
    theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ours = tessera.from_pretrained(str(tmp_path))
    ids = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    ids[0, :3] = 0
    want = theirs.generate(ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(want, theirs.generate(ids, attention_mask=(ids != 0).long(), max_new_tokens=6, do_sample=False))
    assert torch.equal(ours.generate(ids, max_new_tokens=6), want)


def test_a_files_setting_generate_lacks_is_refused_until_cleared(tmp_path):
    """A generation_config.json setting transformers applies and tessera's generate lacks
    (guidance_scale, constraints, ...) was dropped at load: other tokens than
    transformers' without a word. The model loads; generate refuses by name until it is cleared;
    an "off" value changes nothing and is accepted. min_length and num_return_sequences, which
    generate has, are read from the file as transformers reads them."""
    hf, ours = _pair(tmp_path / "a", edit_generation={"guidance_scale": 1.5, "typical_p": 1.0})
    ids = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"generation_config.json\) sets guidance_scale=1.5, which transformers "
                                         r"applies"):
        ours.generate(ids, max_new_tokens=8)
    assert ours.generation_config.guidance_scale == 1.5 and ours.generation_config.typical_p == 1.0
    ours.generation_config.max_new_tokens = 8  # another setting keeps the file's own
    with pytest.raises(ValueError, match=r"guidance_scale=1.5"):
        next(ours.stream(ids))
    ours.generation_config.guidance_scale = None
    hf.generation_config.guidance_scale, hf.generation_config.max_new_tokens = None, 8
    assert torch.equal(ours.generate(ids), hf.generate(ids, attention_mask=torch.ones_like(ids)))
    ours.save_pretrained(str(tmp_path / "saved"))  # cleared in the file too
    assert "guidance_scale" not in json.loads((tmp_path / "saved" / "generation_config.json").read_text())

    hf, ours = _pair(tmp_path / "b", edit_generation={"min_length": 12, "eos_token_id": 5})
    for kwargs in (dict(), dict(min_length=9), dict(min_length=14, min_new_tokens=3)):
        want = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, **kwargs)
        assert torch.equal(ours.generate(ids, max_new_tokens=10, **kwargs), want), kwargs
    hf, ours = _pair(tmp_path / "c", edit_generation={"num_return_sequences": 3, "do_sample": True})
    assert ours.generate(ids, max_new_tokens=4).shape == hf.generate(ids, max_new_tokens=4).shape == (6, 10)
    with pytest.raises(TypeError, match="valid keys: max_length, min_length, num_return_sequences"):
        ours.generate(ids, force_words_ids=[[5]])


def test_sampling_only_and_output_settings_never_block_what_transformers_generates(tmp_path):
    """A file's typical_p / min_p / epsilon_cutoff apply in transformers only when sampling: a
    greedy call ignores them (it was refused), a sampled one applies them as transformers does (it
    was refused by name until stop 51). transformers' own GenerationConfig for the folder, with
    output_attentions and the like, assigns (it was refused as settings that change tokens)."""
    hf, ours = _pair(tmp_path, edit_generation={"typical_p": 0.5, "min_p": 0.0, "epsilon_cutoff": 1e-3})
    ids = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(1))
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
    assert torch.equal(ours.generate(ids, max_new_tokens=6), want)
    sampled = ours.generate(ids, max_new_tokens=6, do_sample=True, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(2)
    assert torch.equal(sampled, hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                            do_sample=True))
    config = transformers.GenerationConfig(max_new_tokens=4, eos_token_id=2, output_attentions=False,
                                           output_scores=True, return_dict_in_generate=True, renormalize_logits=True)
    ours.generation_config = config
    assert ours.generation_config.max_new_tokens == 4


def test_a_saved_generation_config_carries_the_stop_ids_transformers_reads_there(tmp_path):
    """Once generation_config.json exists transformers reads eos there alone: tessera wrote only
    the defaults set (`max_new_tokens`), and transformers decoded past the end of text."""
    hf, ours = _pair(tmp_path / "a")
    ours.generation_config.max_new_tokens = 12
    ours.save_pretrained(str(tmp_path / "saved"))
    saved = json.loads((tmp_path / "saved" / "generation_config.json").read_text())
    assert saved["max_new_tokens"] == 12 and saved["eos_token_id"] == 2 and saved["bos_token_id"] == 1
    back = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "saved")).eval()
    ids = torch.randint(3, 97, (4, 5), generator=torch.Generator().manual_seed(2))
    want = back.generate(ids, attention_mask=torch.ones_like(ids))
    assert torch.equal(ours.generate(ids), want)


def test_transformers_generate_arguments_at_their_off_values_and_a_passed_generation_config(pair):
    """Pipelines pass output_attentions=False, streamer=None, synced_gpus=False, an empty
    LogitsProcessorList...: refused before as unexpected arguments. transformers'
    `generation_config=` replaces the model's for the call, keywords over it."""
    hf, ours = pair
    ids = torch.randint(3, 97, (2, 5), generator=torch.Generator().manual_seed(4))
    off = dict(output_attentions=False, output_hidden_states=False, output_scores=False, return_dict_in_generate=False,
               streamer=None, synced_gpus=False, past_key_values=None,
               logits_processor=transformers.LogitsProcessorList(), stopping_criteria=None)
    mask = torch.ones_like(ids)
    assert torch.equal(ours.generate(ids, max_new_tokens=5, **off),
                       hf.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, **off))
    config = transformers.GenerationConfig(max_new_tokens=3, repetition_penalty=1.5, eos_token_id=2)
    want = hf.generate(ids, attention_mask=mask, generation_config=config, repetition_penalty=1.2)
    assert torch.equal(ours.generate(ids, generation_config=config, repetition_penalty=1.2), want)
    with pytest.raises(ValueError, match=r"the generation_config passed to it sets guidance_scale=1.5"):
        ours.generate(ids, generation_config=transformers.GenerationConfig(guidance_scale=1.5))
    with pytest.raises(TypeError, match="unexpected argument"):
        ours.generate(ids, output_attentions=True)  # a value that would change what is returned
    with pytest.raises(TypeError, match="generation_config sets output_scores=True"):
        ours.generate(ids, generation_config=transformers.GenerationConfig(output_scores=True))
    none = dict(synced_gpus=None, custom_generate=None, output_attentions=None, return_dict_in_generate=None)
    assert torch.equal(ours.generate(ids, max_new_tokens=3, **none), ours.generate(ids, max_new_tokens=3))
    with pytest.raises(ValueError, match="num_beams|stream"):  # a passed config's beams are not silently greedy
        next(ours.stream(ids, generation_config=transformers.GenerationConfig(num_beams=3, max_new_tokens=3)))


def test_a_passed_generation_config_fills_in_from_the_models_file_as_transformers(tmp_path):
    """transformers merges a passed GenerationConfig over the model's generation_config.json (its
    unset fields come from the file): tessera replaced the file's settings (its eos, a penalty)."""
    hf, ours = _pair(tmp_path, edit_generation={"repetition_penalty": 3.0, "eos_token_id": [2, 40]})
    ids = torch.randint(3, 97, (2, 5), generator=torch.Generator().manual_seed(5))
    config = transformers.GenerationConfig(max_new_tokens=8)
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    assert torch.equal(ours.generate(ids, generation_config=config), want)
    hf2, ours2 = _pair(tmp_path / "bos", edit_generation={"forced_bos_token_id": 7})  # applied by transformers
    one = torch.tensor([[1]])
    got = ours2.generate(one, max_new_tokens=3)
    assert torch.equal(got, hf2.generate(one, attention_mask=torch.ones_like(one), max_new_tokens=3)) and got[0, 1] == 7
