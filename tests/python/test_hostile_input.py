"""Hostile input through every public surface, one test per class of defect (issue 14): a value
of the wrong type or out of range at any boundary, a loss with nothing to predict, ids outside a
vocabulary, masks without a token, text that is not UTF-8, a model larger than the machine. Each
must give a clear error naming the thing, before anything runs — never a hang, NaN or a silent
reinterpretation. Training's own classes (a batch that cannot fill, a non-finite step) are in
test_hostile_training.py."""
from __future__ import annotations

import json

import pytest
import torch

import tessera
from tessera import lora
from tessera.chat import load_template
from tessera.models.llama import generation_config
from tessera.schema import from_mapping
from tessera.train import recipe_from_dict
from tessera.train.config import TrainConfig
from tessera.train.conversation_data import check_sample
from _tiny_llama import LLAMA


# ---- class: a value of the wrong type or range at a boundary ---------------------------------
# The same schema checker runs behind every file kind and public call; each case names the key.
BOUNDARIES = [
    # (what, a callable reading a hostile mapping, the key the error must name)
    ("recipe section", lambda v: from_mapping(TrainConfig, v, "r.yaml: train"), {"steps": "10"}, "steps"),
    ("recipe bool", lambda v: from_mapping(TrainConfig, v, "r.yaml: train"), {"cpu_offload": "false"}, "cpu_offload"),
    ("recipe float as YAML 1.1 text", lambda v: recipe_from_dict({"task": "clip", "optim": v}),
     {"lr": "1e-3"}, "lr"),
    ("recipe list element", lambda v: recipe_from_dict({"task": "clip", "optim": v}), {"betas": [0.9, "x"]},
     "betas[1]"),
    ("recipe lr infinite", lambda v: recipe_from_dict({"task": "clip", "optim": v}), {"lr": float("inf")}, "lr"),
    ("recipe eps negative", lambda v: recipe_from_dict({"task": "clip", "optim": v}), {"eps": -1.0}, "eps"),
    ("recipe weight decay infinite", lambda v: recipe_from_dict({"task": "clip", "optim": v}),
     {"weight_decay": float("inf")}, "weight_decay"),
    ("generation keyword", lambda v: generation_config(v, "generate"), {"top_k": 2.5}, "top_k"),
    ("generation range", lambda v: generation_config(v, "generate"), {"top_k": -1}, "top_k"),
    ("generation temperature", lambda v: generation_config(v, "generate"), {"temperature": -1.0}, "temperature"),
    ("generation sampling", lambda v: generation_config(v, "generate"), {"do_sample": "yes"}, "do_sample"),
    ("generation NaN", lambda v: generation_config(v, "stream"), {"top_p": float("nan")}, "top_p"),
    ("conversation record", lambda v: check_sample(v, "data.json: sample 3"),
     {"id": "a", "conversations": "hello"}, "conversations"),
    ("conversation turn", lambda v: check_sample(v, "data.json: sample 3"),
     {"conversations": [{"from": "human", "value": 5}]}, "turn 0: 'value' must be a string, got int"),
    ("conversation role", lambda v: check_sample(v, "data.json: sample 3"),
     {"conversations": [{"from": "robot", "value": "hi"}]}, "turn 0: 'from' must be one of human, user, gpt"),
    # The file's keys, not the names of tessera's dataclass fields ("turn 0.text", "turn 0.speaker").
    ("conversation turn key", lambda v: check_sample(v, "data.json: sample 3"),
     {"conversations": [{"from": "human"}]}, "turn 0: no 'value' (a turn holds 'from' and 'value')"),
    ("conversation mixed keys", lambda v: check_sample(v, "data.json: sample 3"),
     {"conversations": [{"role": "user", "value": "q"}]}, "turn 0: no 'from' (a turn holds 'from' and 'value')"),
    ("conversation keys that disagree", lambda v: check_sample(v, "data.json: sample 3"),
     {"conversations": [{"from": "human", "value": "q", "role": "user", "content": "other"}]},
     "turn 0: its LLaVA keys ('from', 'value') and OpenAI keys ('role', 'content') disagree"),
    ("conversation role type", lambda v: check_sample(v, "data.json: sample 3"),
     {"conversations": [{"role": ["user"], "content": "q"}]}, "turn 0: 'role' must be one of"),
]


@pytest.mark.parametrize("what,read,value,key", BOUNDARIES, ids=[b[0] for b in BOUNDARIES])
def test_every_boundary_refuses_wrong_types_and_ranges_naming_the_key(what, read, value, key):
    with pytest.raises(ValueError) as e:
        read(value)
    assert key in str(e.value), str(e.value)


def test_unknown_generation_keyword_is_a_type_error(lm):
    with pytest.raises(TypeError, match="top_kk"):
        lm.generate(torch.tensor([[1, 2]]), top_kk=3)


def test_adapter_config_is_read_strictly(tmp_path, lm):
    good = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "bias": "none",
            "use_rslora": False, "task_type": "CAUSAL_LM", "revision": None}
    cases = [({"use_rslora": "false"}, "use_rslora"), ({"r": "4"}, "r"), ({"r": 0}, "r must be >= 1"),
             ({"use_dora": True}, "use_dora"), ({"fan_in_fan_out": True}, "fan_in_fan_out"),
             ({"rank_pattern": {"q_proj": 8}}, "rank_pattern"), ({"target_modules": 3}, "target_modules")]
    missing = dict(good)
    del missing["target_modules"]
    for i, (change, expect) in enumerate(cases + [(None, "target_modules")]):
        folder = tmp_path / f"a{i}"
        folder.mkdir()
        config = missing if change is None else {**good, **change}
        (folder / "adapter_config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError) as e:
            lora.load_adapter(tessera.LlamaForCausalLM(LLAMA), str(folder))
        assert expect in str(e.value) and "adapter_config.json" in str(e.value), str(e.value)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text("{\"r\": 4,")
    with pytest.raises(ValueError, match=r"adapter_config.json: not valid JSON at line 1"):
        lora.load_adapter(tessera.LlamaForCausalLM(LLAMA), str(tmp_path / "broken"))


def test_adapter_weights_of_another_shape_are_refused_not_broadcast(tmp_path):
    torch.manual_seed(0)
    model = tessera.LlamaForCausalLM(LLAMA)
    lora.apply_lora(model, ["q_proj"], r=4, lora_alpha=8)
    lora.save_adapter(model, str(tmp_path))
    weights = tmp_path / "adapter_model.safetensors"
    tensors, _ = tessera._C.core.load_safetensors(str(weights))
    key = next(k for k in tensors if k.endswith("lora_A.weight"))
    tensors = {k: v.clone() for k, v in tensors.items()}
    tensors[key] = tensors[key][:1].clone()  # [1, 32]: copy_ would broadcast it into [4, 32]
    tessera._C.core.save_safetensors(str(weights), tensors, {"format": "pt"})
    with pytest.raises(ValueError, match=r"has shape \[1, 32\].*\[4, 32\]"):
        lora.load_adapter(tessera.LlamaForCausalLM(LLAMA), str(tmp_path))


def test_template_file_fields_are_typed(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"name": "x", "user_prefix": 5}))
    with pytest.raises(ValueError, match=r"t.json: user_prefix: expected a string"):
        load_template(str(bad))
    bad.write_text(json.dumps({"user_prefix": "U: "}))
    with pytest.raises(ValueError, match=r"missing required key\(s\) name"):
        load_template(str(bad))


# ---- class: a loss with nothing to predict is refused, never NaN ------------------------------
def test_mae_with_nothing_masked_refuses_the_loss():
    model = tessera.ViTMAEForPreTraining(dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                              intermediate_size=48, image_size=24, patch_size=6,
                                              decoder_hidden_size=24, decoder_num_hidden_layers=1,
                                              decoder_num_attention_heads=3, decoder_intermediate_size=40,
                                              mask_ratio=0.0))
    with pytest.raises(ValueError, match="mask_ratio 0 masks none of the 16 patches"):
        model(torch.randn(1, 3, 24, 24))


def test_beit_without_a_labelled_masked_patch_refuses_the_loss():
    model = tessera.BeitForMaskedImageModeling(dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                    intermediate_size=48, image_size=16, patch_size=4,
                                                    vocab_size=24, use_mask_token=True))
    px, none = torch.randn(1, 3, 16, 16), torch.zeros(1, 16, dtype=torch.bool)
    with pytest.raises(ValueError, match="nothing to predict"):
        model(px, bool_masked_pos=none, labels=torch.zeros(1, 16, dtype=torch.long))
    some = none.clone()
    some[0, :3] = True
    with pytest.raises(ValueError, match="nothing to predict"):
        model(px, bool_masked_pos=some, labels=torch.full((1, 16), -100))


# ---- class: ids and masks that do not fit the model ------------------------------------------
def test_token_ids_outside_the_vocabulary_name_the_id(lm):
    with pytest.raises(IndexError, match="token id 60 is outside the embedding table of 60 rows"):
        lm(torch.tensor([[1, 60]]))
    with pytest.raises(IndexError, match="token id -3"):
        lm.generate(torch.tensor([[1, -3]]), max_new_tokens=1)
    from _clip_reference import tiny_config

    clip = tessera.CLIPModel(tiny_config())  # CLIP's text tower shares the embedding check
    vocab = clip.config["text_config"]["vocab_size"]
    with pytest.raises(IndexError, match=f"token id {vocab}\\b"):
        clip.get_text_features(torch.tensor([[0, vocab]]))


def test_attention_masks_without_a_token_or_not_binary_are_refused(lm):
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    for mask, expect in ((torch.tensor([[1, 1, 1], [0, 0, 0]]), "row 1 has no real token"),
                         (torch.tensor([[1, 1, 2], [1, 1, 1]]), "only 0 and 1")):
        with pytest.raises(ValueError, match=expect):
            lm(ids, attention_mask=mask)
        with pytest.raises(ValueError, match=expect):
            lm.generate(ids, attention_mask=mask, max_new_tokens=1)


def test_stop_and_pad_ids_outside_the_vocabulary_are_refused(lm):
    with pytest.raises(ValueError, match="eos_token_id 99 is not a token"):
        lm.generate(torch.tensor([[1, 2]]), max_new_tokens=1, eos_token_id=99)
    with pytest.raises(ValueError, match="token ids must be >= 0"):
        lm.generate(torch.tensor([[1, 2]]), max_new_tokens=1, pad_token_id=-5)


# ---- class: text that is not UTF-8 -----------------------------------------------------------
def test_text_that_is_not_utf8_is_refused_or_cleaned_as_the_reference_does(tmp_path):
    broken = b"what is \xff this?".decode("utf-8", "surrogateescape")  # as argv and C-locale stdin give it
    # CLIP cleans as open_clip's ftfy does: a surrogate pair is its character, a lone one U+FFFD.
    pair = "cat \ud83d\ude00"  # what a UTF-16 source (JSON's \u escapes read raw) leaves
    clip = tessera.ClipTokenizer()
    assert clip.encode(pair) == clip.encode("cat \U0001f600")
    assert clip.encode(broken) == clip.encode("what is \ufffd this?")
    assert torch.equal(tessera.tokenize([broken, pair]), tessera.tokenize(["what is \ufffd this?", "cat \U0001f600"]))
    open_clip = pytest.importorskip("open_clip")
    assert torch.equal(tessera.tokenize([broken, pair]), open_clip.tokenize([broken, pair]))
    from tessera.text import SentencePieceTokenizer, train_sentencepiece

    model = tmp_path / "sp.model"
    train_sentencepiece([f"sample line {i} with words" for i in range(200)], str(model), vocab_size=320)
    sp = SentencePieceTokenizer(str(model), special_tokens=["<image>"])
    with pytest.raises(ValueError, match="not valid UTF-8"):
        sp.encode(broken)
    with pytest.raises(ValueError, match="id 9999 is not a token"):
        sp.decode([1, 9999])


# ---- class: a model larger than the machine --------------------------------------------------
def test_a_config_too_large_for_the_machine_is_refused_before_init(monkeypatch):
    monkeypatch.setenv("TESSERA_MAX_PARAMETER_BYTES", str(64 << 20))
    with pytest.raises(ValueError, match=r"parameters would take at least .* GiB \(reached at .*of shape"):
        tessera.LlamaForCausalLM({**LLAMA, "hidden_size": 4096, "intermediate_size": 16384,
                                  "num_attention_heads": 32, "num_key_value_heads": 32})
    tessera.LlamaForCausalLM(LLAMA)  # a small one still builds under the same limit
    monkeypatch.delenv("TESSERA_MAX_PARAMETER_BYTES")
    # 10^9 hidden units: refused from the shape, before a 4 EB weight is even asked for.
    with pytest.raises(ValueError, match=r"of shape \[1000000000, 1000000000\]\), more than the .* GiB of memory"):
        tessera.LlamaForCausalLM({**LLAMA, "hidden_size": 10**9, "intermediate_size": 4 * 10**9})


# ---- class: command-line values --------------------------------------------------------------
@pytest.mark.parametrize("argv,flag,expect", [
    (["plan", "r.yaml", "--world-size", "0"], "--world-size", "must be >= 1"),
    (["plan", "r.yaml", "--device-memory", "abc"], "--device-memory", "cannot read 'abc'"),
    (["chat", "run", "--temperature", "-1"], "--temperature", "must be >= 0"),
    (["chat", "run", "--max-new-tokens", "0"], "--max-new-tokens", "must be >= 1"),
    (["inspect-data", "r.yaml", "--samples", "x"], "--samples", "expected an integer"),
])
def test_command_line_values_are_checked_where_they_are_read(argv, flag, expect, capsys):
    from tessera.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and expect in err, err


# ---- class: tessera.ops.attention's inputs, against SDPA's meaning ---------------------------
def test_attention_masks_mean_what_sdpa_means_and_bad_shapes_are_refused():
    import torch.nn.functional as F

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3, 8) for _ in range(3))
    keep = torch.tensor([True, True, False]).view(1, 1, 1, 3).expand(1, 1, 3, 3)
    assert torch.allclose(tessera.ops.attention(q, k, v, keep), F.scaled_dot_product_attention(q, k, v, keep),
                          atol=1e-6), "a boolean mask is SDPA's (True: attend), not +1/0 added to the scores"
    with pytest.raises(ValueError, match="additive .* or boolean"):
        tessera.ops.attention(q, k, v, keep.long())
    with pytest.raises(ValueError, match="must agree"):
        tessera.ops.attention(q, k, torch.randn(1, 2, 4, 8))
    for bad, key in (({"scale": float("nan")}, "scale must be finite"), ({"dropout_p": -1.0}, "dropout_p"),
                     ({"dropout_p": 1.5}, "dropout_p"), ({"dropout_p": float("nan")}, "dropout_p")):
        with pytest.raises(ValueError, match=key):
            tessera.ops.attention(q, k, v, **bad)


# ---- class: config values that load but compute garbage, or fail without naming the key -------
@pytest.mark.parametrize("family, config, key", [
    ("CLIPModel", {"vision_config": {"layer_norm_eps": -1.0}}, "layer_norm_eps must be > 0"),
    ("LlamaForCausalLM", dict(LLAMA, rms_norm_eps=0.0), "rms_norm_eps must be > 0"),
    ("Blip2QFormerModel", {"layer_norm_eps": -1.0}, "layer_norm_eps must be > 0"),
    ("CLIPModel", {"vision_config": {"image_size": -32, "patch_size": 8}}, "image_size -32 must be a positive"),
    ("ViTMAEModel", {"image_size": -32, "patch_size": 8}, "image_size -32 must be a positive"),
    ("CLIPModel", {"vision_config": {"layer_norm_eps": float("nan")}}, "vision_config.layer_norm_eps must be a finite"),
    ("LlamaForCausalLM", dict(LLAMA, initializer_range=float("inf")), "initializer_range must be a finite"),
    ("CLIPModel", {"text_config": 5}, "text_config must be a JSON object"),
    ("Blip2ForConditionalGeneration", {"qformer_config": "x"}, "qformer_config must be a JSON object"),
    # an activation tessera lacks named the value but not the key (transformers has tanh, mish, ...)
    ("CLIPModel", {"vision_config": {"hidden_act": "tanh"}}, r"vision_config: hidden_act: unknown activation 'tanh'"),
    ("CLIPModel", {"text_config": {"hidden_act": "mish"}}, r"text_config: hidden_act: unknown activation 'mish'"),
    ("ViTMAEModel", {"hidden_act": "tanh"}, "hidden_act: unknown activation 'tanh'"),
    ("BeitModel", {"hidden_act": "tanh"}, "hidden_act: unknown activation 'tanh'"),
    ("Blip2QFormerModel", {"hidden_act": "mish"}, "hidden_act: unknown activation 'mish'"),
    ("Blip2VisionModel", {"hidden_act": "mish"}, "hidden_act: unknown activation 'mish'"),
])
def test_config_values_that_would_compute_nan_or_fail_in_the_parser_name_their_key(family, config, key):
    with pytest.raises(ValueError, match=key):
        getattr(tessera, family)(config)


def test_a_config_file_with_nan_names_the_file_and_key(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, '
                                          '"intermediate_size": 48, "num_hidden_layers": 1, "vocab_size": 60, '
                                          '"rms_norm_eps": NaN}')
    with pytest.raises(ValueError, match="config.json.*rms_norm_eps must be a finite number"):
        tessera.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("config, key", [
    ({"vision_config": {"attention_dropout": 2.0}}, "attention_dropout is a probability"),
    ({"text_config": {"attention_dropout": -1.0}}, "attention_dropout is a probability"),
    ({"vision_config": {"initializer_range": -1.0}}, "initializer_range must be >= 0"),
])
def test_config_rules_every_family_shares_name_the_key(config, key):
    with pytest.raises(ValueError, match=key):
        tessera.CLIPModel(config)


def test_sugar_weights_must_be_finite():
    """inf passed validation and failed deep in training ("gak: delta must be > 0, got inf")."""
    from tessera.train.sugar_targets import SugarTargets
    from tessera.train.sugar_task import SugarLoss

    with pytest.raises(ValueError, match="alpha must be finite"):
        from_mapping(SugarLoss, {"alpha": float("inf")}, "r.yaml: loss").validate("r.yaml: loss")
    with pytest.raises(ValueError, match="delta must be finite"):
        from_mapping(SugarTargets, {"delta": float("inf")}, "r.yaml: targets").validate("r.yaml: targets")


# ---- class: a writer that leaves a folder inconsistent --------------------------------------------
def _clip_copy(fixture_dir, tmp_path):
    import shutil
    d = tmp_path / "clip"
    shutil.copytree(fixture_dir("clip"), d)
    for f in d.iterdir():
        f.chmod(0o644)
    return d


def test_convert_checks_everything_before_it_writes(fixture_dir, tmp_path):
    """`tessera convert` replaced model.safetensors and only then read --config: a missing or
    non-object config left another model's weights beside the old config."""
    import hashlib
    from tessera.cli import main
    dst = _clip_copy(fixture_dir, tmp_path)
    digest = lambda: hashlib.sha256((dst / "model.safetensors").read_bytes()).hexdigest()  # noqa: E731
    before = digest()
    weights = tmp_path / "llama.pt"
    torch.save({"w": torch.ones(2)}, weights)
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "garbage.pt").write_bytes(b"not a pickle")
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    for argv in ([str(weights), str(dst), "--config", str(tmp_path / "none.json")],
                 [str(weights), str(dst), "--config", str(tmp_path / "list.json")],
                 [str(tmp_path / "garbage.pt"), str(dst), "--config", str(dst / "config.json")],
                 [str(tmp_path / "list.pt"), str(dst), "--config", str(dst / "config.json")]):
        assert main(["convert", *argv]) == 2
        assert digest() == before
    tessera.from_pretrained(str(dst))


def test_saving_over_a_checkpoint_keeps_its_manifest_true(fixture_dir, tmp_path):
    """A trainer checkpoint lists every file's checksum: save_pretrained into it (load, change,
    save back) left the manifest stale, and the folder no longer loaded ("damaged")."""
    from tessera import checksums
    d = _clip_copy(fixture_dir, tmp_path)
    (d / "trainer_state.pt").write_bytes(b"state")
    checksums.write_manifest(str(d))
    model = tessera.from_pretrained(str(d))
    with torch.no_grad():
        model.logit_scale.add_(1.0)
    model.save_pretrained(str(d), max_shard_size=20000)  # sharded: the single file goes away
    again = tessera.from_pretrained(str(d))
    assert torch.equal(again.logit_scale, model.logit_scale)
    listed = checksums.read_manifest(str(d))
    assert "model.safetensors" not in listed and "model.safetensors.index.json" in listed
    (d / "trainer_state.pt").write_bytes(b"STATE")  # the rest of the folder is still protected
    with pytest.raises(checksums.CheckpointDamaged, match="trainer_state.pt"):
        checksums.verify_checkpoint(str(d))


@pytest.mark.parametrize("text", ["[]", "null", '"clip"', "3", b"\xff\xfe{}"])
def test_a_config_that_is_not_an_object_is_named(tmp_path, text):
    (tmp_path / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match="config.json"):
        tessera.from_pretrained(str(tmp_path))


def test_a_config_beyond_the_machine_is_named(fixture_dir, tmp_path):
    import json as _json
    d = _clip_copy(fixture_dir, tmp_path)
    config = _json.loads((d / "config.json").read_text())
    config["text_config"]["vocab_size"] = 10**12
    (d / "config.json").write_text(_json.dumps(config))
    # refused before any allocation, naming the tensor (CLIP now builds under the parameter budget too)
    with pytest.raises(ValueError, match="config.json: the model's parameters would take at least .* GiB "
                                         r"\(reached at Embedding.weight of shape \[1000000000000, "):
        tessera.from_pretrained(str(d))


# ---- class: a command-line value that was ignored, or failed without naming itself ---------------
def test_command_line_values_are_named(fixture_dir, shared_dir, tmp_path, capsys):
    import json as _json
    from tessera.cli import main
    from tessera.eval.caption_retrieval import load_retrieval_split
    from tessera.train import load_recipe

    split = tmp_path / "split.json"
    split.write_text(_json.dumps({"images": [{"filename": "a.png", "filepath": 3, "split": "test",
                                              "sentences": [{"raw": "a"}]}]}))
    with pytest.raises(ValueError, match="'filepath' must be a string"):
        load_retrieval_split(str(split))
    with pytest.raises(ValueError, match="no file named"):
        load_retrieval_split("coco:")
    recipe = "recipes/fashion_mnist_clip.yaml"
    assert main(["eval", str(fixture_dir("clip")), "--recipe", recipe, "--retrieval", ""]) == 2
    assert "--retrieval: an empty file name" in capsys.readouterr().err
    assert main(["eval", str(fixture_dir("mae")), "--recipe", "recipes/fashion_mnist_mae.yaml",
                 "--retrieval", str(split)]) == 2  # refused before the split is read
    assert "the MaeTask task has no image-text retrieval" in capsys.readouterr().err
    assert main(["eval", str(fixture_dir("clip")), "--recipe", recipe, "--captioning", str(split)]) == 2
    assert "the ClipTask task writes no captions" in capsys.readouterr().err
    for extra, message in ((["--captioning", " "], "--captioning: an empty file name"),
                           (["--prompt", "Describe it."], "--prompt goes with --captioning"),
                           (["--captioning", str(split), "--retrieval", str(split)], "one evaluation per call")):
        assert main(["eval", str(fixture_dir("clip")), "--recipe", recipe, *extra]) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "latin1.yaml").write_bytes(b"task: clip # caf\xe9\n")
    for path, message in ((tmp_path, "not a regular file \\(a folder"), (tmp_path / "latin1.yaml", "not UTF-8")):
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            load_recipe(str(path))
    with pytest.raises(ValueError, match="must look like section.key=value"):
        load_recipe(recipe, ["=1"])
    llava = str(fixture_dir("llava"))
    spm = str(shared_dir / "assets" / "llama2c_tokenizer.model")
    for argv, message in ((["-q", "", "--tokenizer", spm], "-q/--question: empty"),
                          (["-q", "hi", "--tokenizer", spm, "--template", ""], "--template: empty"),
                          (["-q", "hi", "--tokenizer", spm], "32001 tokens, but the model"),
                          (["-q", "hi", "--tokenizer", recipe], "not a valid SentencePiece model")):
        assert main(["chat", llava, *argv]) == 2
        assert message in capsys.readouterr().err


def test_model_files_refuse_values_that_fail_later(fixture_dir, tmp_path):
    import json as _json
    import shutil
    model = tessera.from_pretrained(str(fixture_dir("clip")))
    for size in (0, -1, "0MB"):
        with pytest.raises(ValueError, match="max_shard_size must be more than 0 bytes"):
            model.save_pretrained(str(tmp_path / "out"), max_shard_size=size)
    d = tmp_path / "llava"
    shutil.copytree(fixture_dir("llava"), d)
    config = _json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(_json.dumps({**config, "projector_hidden_act": "bogus"}))
    with pytest.raises(ValueError, match="config.json: .*projector_hidden_act: unknown activation 'bogus'"):
        tessera.from_pretrained(str(d))


# ---- class: an op or a loader that read past what it was given -------------------------------------
def test_decode_linear_checks_its_bias_and_out_dtype():
    """A 1-element or 0-d bias was read as out_features floats: heap garbage, NaN, and at 1M rows
    a segmentation fault."""
    from tessera import ops
    x, w = torch.rand(2, 8), torch.rand(3, 8)
    for bias in (torch.zeros(1), torch.tensor(1.0), torch.ones(4), torch.ones(1, 3), torch.ones(3, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"bias must be a CPU floating \[3\]"):
            ops.decode_linear(x, w, bias)
    with pytest.raises(ValueError, match="out_dtype must be a floating type"):
        ops.decode_linear(x, w, torch.ones(3), out_dtype=torch.int32)
    torch.testing.assert_close(ops.decode_linear(x, w, torch.ones(3)), torch.nn.functional.linear(x, w, torch.ones(3)))


def test_data_objects_refuse_what_they_would_misread(tmp_path):
    from tessera.data import DataLoader, FashionMNIST, ImageFolder
    from tessera.data.transforms import ImageTransform, clip_transform
    import os as _os
    if not _os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("no Fashion-MNIST")
    loader = DataLoader(FashionMNIST(split="test"), batch_size=64, num_workers=0, transform=clip_transform(28))
    state = loader.state_dict()
    for bad, error, message in (({}, ValueError, "no 'epoch'"), (None, TypeError, "a state dict"),
                                ({**state, "epoch": 0.9}, ValueError, "epoch must be an integer in"),
                                ({**state, "epoch": 2 ** 70, "batches": 0}, ValueError, None),
                                ({**state, "rank": 1, "world_size": 1}, ValueError, "rank=1")):
        with pytest.raises(error, match=message):
            loader.load_state_dict(bad)
    for kw in ({"std": (float("nan"), 1.0, 1.0)}, {"mean": (float("inf"), 0.0, 0.0)}):
        with pytest.raises(ValueError, match="must be finite"):
            ImageTransform(clip_transform(8, **kw))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolder"):
        ImageFolder(str(tmp_path / "empty"))
    (tmp_path / "one" / "a").mkdir(parents=True)
    (tmp_path / "one" / "a" / "x.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="no file with extension .png"):
        ImageFolder(str(tmp_path / "one"), extensions=".png")  # one extension, not the characters . p n g


def test_ops_and_datasets_name_what_torch_would_fail_on_deep_inside():
    from tessera import ops
    from tessera.data import DataLoader, FashionMNIST
    import os as _os
    x, y = torch.rand(2, 3, 5), torch.rand(2, 4, 5)
    for kw, message in ((dict(sigma=1e300), "gives 2 sigma\\^2 outside"), (dict(delta=1e300), "gives 2 sigma\\^2 outside"),
                        (dict(sigma=1e-20), "too small for these features")):
        with pytest.raises(ValueError, match=message):
            ops.gak(x, y, **kw)
    flags = torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(TypeError, match="one dtype and device"):
        ops.triple_kernel_cost(x.double(), x, flags[0], y, y, flags[1])
    with pytest.raises(TypeError, match="one dtype and device"):
        ops.triple_kernel_cost(x, x, flags[0], y.to("meta"), y, flags[1])
    with pytest.raises(TypeError, match="must be floating point"):
        ops.attention(torch.ones(1, 1, 2, 4, dtype=torch.long), torch.ones(1, 1, 2, 4), torch.ones(1, 1, 2, 4))
    with pytest.raises(ValueError, match="does not broadcast"):
        ops.attention(torch.rand(1, 2, 3, 4), torch.rand(1, 2, 5, 4), torch.rand(1, 2, 5, 4), mask=torch.rand(1, 1, 3, 4))
    with pytest.raises(TypeError, match="x_lengths must be an integer tensor, got Bool"):
        ops.soft_dtw(torch.rand(2, 3, 4), 1.0, (torch.tensor([True, True]), torch.tensor([1, 2])))
    if _os.path.isdir("/usr/share/datasets/fashion-mnist"):
        ds = FashionMNIST(split="test")
        with pytest.raises(IndexError, match="out of range"):
            ds.source(10 ** 9)
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got True"):
            DataLoader(ds, batch_size=True)


# ---- stop 38's surfaces, tried with hostile input (docs/reliability.md) ------------------------
@pytest.mark.parametrize("call, message", [
    (lambda m: m.generate(), "give the prompt as input_ids"),
    (lambda m: list(m.stream()), "give the prompt as input_ids"),
    (lambda m: m.generate(inputs_embeds=torch.zeros(32)), r"inputs_embeds must be a tensor of 3 dimensions, got \(32,\)"),
    (lambda m: m.generate(torch.tensor([1, 2])), r"input_ids must be a tensor of 2 dimensions, got \(2,\)"),
    (lambda m: list(m.stream(inputs_embeds=[[0.0]])), "inputs_embeds must be a tensor of 3 dimensions, got list"),
    (lambda m: m.generate(inputs_embeds=torch.zeros(2, 0, 32)), r"inputs_embeds \(2, 0, 32\) has an empty prompt"),
    (lambda m: m.generate(inputs_embeds=torch.zeros(0, 3, 32)), r"inputs_embeds \(0, 3, 32\) has no rows"),
    (lambda m: m.generate(inputs_embeds=torch.zeros(2, 3, 32), attention_mask=torch.ones(3, 3, dtype=torch.long)),
     r"attention_mask must be \[2, 3\] like inputs_embeds"),
    (lambda m: m.generate(inputs_embeds=torch.zeros(1, 3, 32), repetition_penalty=1.3),
     "repetition_penalty 1.3 .* pass the input_ids the embeddings stand for"),
])
def test_a_prompt_given_wrong_is_named_by_the_argument_given(lm, call, message):
    """input_ids became optional (inputs_embeds alone): a missing or misshapen prompt gave a
    pybind signature dump, an IndexError, or an error about input_ids nobody passed."""
    with pytest.raises(ValueError, match=message):
        call(lm)


def test_a_files_max_length_past_the_context_stops_there(tmp_path):
    model = tessera.LlamaForCausalLM(LLAMA).eval()
    model.save_pretrained(str(tmp_path))
    (tmp_path / "generation_config.json").write_text(json.dumps({"max_length": 500, "eos_token_id": []}))
    model = tessera.from_pretrained(str(tmp_path))
    with pytest.warns(UserWarning, match="max_length 500 exceeds the model's context .*32"):
        out = model.generate(torch.tensor([[1, 2, 3]]))
    assert out.shape == (1, 33)  # 32 positions run; the last new token is never fed back


def test_forward_head_refuses_features_of_another_dtype(fixture_dir):
    """Integer features were pooled into an integer tensor; float64 ones failed inside LayerNorm."""
    tower = tessera.from_pretrained(str(fixture_dir("clip"))).vision_model
    features = tower.forward_features(torch.randn(1, 3, 32, 32))
    for bad in (features.long(), features.double()):
        with pytest.raises(TypeError, match=f"features must be torch.float32 .*got {bad.dtype}"):
            tower.forward_head(bad)


def test_config_overrides_are_checked_for_every_class_and_shape(fixture_dir):
    clip = str(fixture_dir("clip"))
    tower = tessera.CLIPVisionModel.from_pretrained(clip, config_overrides={"attention_dropout": 0.2})
    assert tower.config["attention_dropout"] == 0.2
    with pytest.raises(ValueError, match="config_overrides: unknown key 'attention_dropoutt'"):
        tessera.CLIPVisionModel.from_pretrained(clip, config_overrides={"attention_dropoutt": 0.2})
    blip2 = str(fixture_dir("blip2"))
    assert tessera.Blip2VisionModel.from_pretrained(blip2, config_overrides={"attention_dropout": 0.1}) is not None
    for bad, error, message in (([], TypeError, "must be a dict, got list"), ({1: 2}, ValueError, "keys are strings"),
                                ({"attention_dropout": torch.tensor(0.1)}, TypeError, "attention_dropout must be a JSON")):
        with pytest.raises(error, match=message):
            tessera.CLIPVisionModel.from_pretrained(clip, config_overrides=bad)
    with pytest.raises(ValueError, match=r"config_overrides \{\"projection_dim\": 7\}\): its tensors do not fit"):
        tessera.CLIPModel.from_pretrained(clip, config_overrides={"projection_dim": 7})


def test_siglip_starts_from_a_clip_checkpoint_and_its_bias_must_fit_fp32(fixture_dir):
    clip = str(fixture_dir("clip"))
    with pytest.warns(UserWarning, match="no logit_bias: it starts at logit_bias_init_value -10.0"):
        model = tessera.CLIPModel.from_pretrained(clip, config_overrides={"logit_bias_init_value": -10.0})
    assert float(model.logit_bias) == -10.0
    for value, message in ((1e39, "finite in fp32"), (10 ** 50, "too large for a 64-bit integer")):
        with pytest.raises(ValueError, match=message):
            tessera.CLIPModel({"logit_bias_init_value": value})


def test_llava_refuses_a_projector_config_its_projector_would_ignore():
    config = {"text_config": LLAMA, "vision_config": {"hidden_size": 16, "intermediate_size": 32,
                                                      "num_hidden_layers": 1, "num_attention_heads": 2,
                                                      "image_size": 16, "patch_size": 8},
              "image_token_index": 59, "vision_feature_layer": -1, "projector_config": {"hidden_size": 8}}
    for kind in ("mlp2x_gelu", "linear"):
        with pytest.raises(ValueError, match=f"projector_type '{kind}' has no sizes of its own"):
            tessera.LlavaForConditionalGeneration({**config, "projector_type": kind})
