"""The `llava` and `causal_lm` tasks: labels cover the answers only, the data checks refuse bad
samples naming them, `tessera inspect-data` shows the supervision, and LLaVA training under
torchrun (2 Gloo ranks, ddp and fsdp2, with and without LoRA) equals one process with every
trainable parameter changed and every frozen one untouched."""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

import tessera
from tessera.data import instruct
from tessera.train import build_task, recipe_from_dict
from tessera.train.distributed import seed_all
from tessera.train.conversation_data import encode_samples, read_samples
from tessera.train.freeze import apply_freezing
from tessera.models.weights import apply_key_aliases

FMNIST = "/usr/share/datasets/fashion-mnist"
pytestmark = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STEPS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory, png_codec):
    out = tmp_path_factory.mktemp("instruct") / "set"
    instruct.generate(str(out), fashion=48, scenes=16, heldout_fashion=8, heldout_scenes=4, vocab_size=600)
    return out


def llava_recipe(data, batch=8, strategy="ddp", lora=False, template="v1", train="instruct.json"):
    text = dict(vocab_size=1024, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=28,
                  patch_size=7)
    r = {"task": "llava",
         "model": {"config": {"text_config": text, "vision_config": vision, "vision_feature_layer": -1},
                   "freeze": ["^vision_tower\\."]},
         "data": {"train": str(data / train), "eval": str(data / "heldout.json"), "tokenizer": str(data / "tokenizer.model"),
                  "template": template, "max_length": 112, "batch_size": batch},
         "optim": {"lr": 0.01, "warmup_fraction": 0.0, "weight_decay": 0.0},
         "train": {"plots": False, "steps": STEPS, "log_every": 1, "checkpoint_every": STEPS, "threads": 1, "strategy": strategy},
         "eval": {"max_samples": 4, "max_new_tokens": 4}}
    if lora:
        r["lora"] = {"r": 4, "alpha": 8, "modules_to_save": ["multi_modal_projector"]}
        del r["model"]["freeze"]
    return r


def task_of(r):
    return build_task(recipe_from_dict(r))


def test_labels_are_the_answers_and_their_eos(data):
    task = task_of(llava_recipe(data))
    s, tok = task.train_set.encoded(range(4)), task.tokenizer
    for i in range(4):
        conv = s.samples[i]["conversations"]
        learned = s.labels[i][s.labels[i] != -100].tolist()
        answers = [t["value"] for t in conv if t["from"] == "gpt"]
        assert learned.count(tok.eos_id) == len(answers)
        pieces = tok.decode([x for x in learned if x != tok.eos_id])
        assert pieces.replace(" ", "") == "".join(answers).replace(" ", "")
        ids = s.input_ids[i][s.attention_mask[i].bool()]
        assert int((ids == task.image_token_id).sum()) == task.image_tokens == 16  # 4x4 patches, CLS dropped
        # Labels equal the ids where supervised: nothing shifted by a template/tokenizer mismatch.
        sup = s.labels[i] != -100
        assert torch.equal(s.labels[i][sup], s.input_ids[i][sup])


def _write(data, name, samples):
    path = data / name
    path.write_text(json.dumps(samples))
    return path.name


IMG = "images/fashion/train/00000.png"
QA = [{"from": "human", "value": "<image>\nWhat is this item?"}, {"from": "gpt", "value": "A bag."}]


@pytest.mark.parametrize("sample, message", [
    ({"id": "no-placeholder", "image": IMG, "conversations": [{"from": "human", "value": "What?"},
                                                               {"from": "gpt", "value": "A bag."}]},
     r"sample 1 \(id 'no-placeholder'\): 0 image placeholder\(s\) '<image>' in the text but 1 image"),
    ({"id": "two-images", "image": [IMG, IMG], "conversations": QA}, r"'two-images'.*1 image placeholder.*2 image"),
    ({"id": "no-answer", "image": IMG, "conversations": QA[:1]}, r"'no-answer'.*no supervised token"),
    ({"id": "empty-answer", "image": IMG, "conversations": [QA[0], {"from": "gpt", "value": " "}]},
     r"'empty-answer'.*empty answer"),
    ({"id": "gone", "image": "images/missing.png", "conversations": QA}, r"'gone'.*missing.png.*not found"),
    ({"id": "bad-role", "image": IMG, "conversations": [{"from": "robot", "value": "hi"}]}, r"'bad-role'.*turn 0"),
])
def test_bad_samples_are_refused_by_name(data, sample, message):
    good = {"id": "fine", "image": IMG, "conversations": QA}
    name = _write(data, "bad.json", [good, sample])
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        task_of(llava_recipe(data, train=name))


def test_truncation_that_leaves_no_answer_is_refused(data):
    long = [{"from": "human", "value": "<image>\n" + "What is this item? " * 30}, {"from": "gpt", "value": "A bag."}]
    name = _write(data, "long.json", [{"id": "long", "image": IMG, "conversations": long}])
    with pytest.raises(ValueError, match=r"'long'.*no supervised token left after truncation to max_length 112"):
        task_of(llava_recipe(data, train=name))
    # An image in a later turn (a question's own image moves to its start, as LLaVA moves it).
    late = [{"from": "human", "value": "What is this item? " * 30}, {"from": "gpt", "value": "A bag."},
            {"from": "human", "value": "And this one?\n<image>"}, {"from": "gpt", "value": "A shoe."}]
    name = _write(data, "late.json", [{"id": "late", "image": IMG, "conversations": late}])
    with pytest.raises(ValueError, match=r"'late'.*would cut image tokens"):
        task_of(llava_recipe(data, train=name))


def test_evaluation_that_could_not_run_is_refused_before_training(data):
    r = llava_recipe(data)
    r["eval"]["max_new_tokens"] = 40  # 112 + 40 > 128 positions
    with pytest.raises(ValueError, match=r"max_length 112 \+ eval.max_new_tokens 40 exceed the language model's "
                                         r"context \(128 positions\)"):
        task_of(r)
    # A prompt to generate from is never cut (that would cut the question): refused by name.
    task = task_of(llava_recipe(data))
    held = str(data / "heldout.json")
    with pytest.raises(ValueError, match=r"heldout.json: sample 0 .*the prompt has (at least )?\d+ tokens, more than max_length 40"):
        encode_samples(read_samples(held, 2), held, task.tokenizer, "v1", task.image_token_id, task.image_tokens, 40,
                       supervise=False)


def test_text_the_tokenizer_cannot_represent_is_refused(data, tmp_path):
    # A tokenizer without byte fallback maps unseen characters to <unk>: template and tokenizer disagree.
    from tessera.text import train_sentencepiece

    lines = open(data / "text.txt").read().splitlines()
    train_sentencepiece(lines, tmp_path / "nofallback.model", vocab_size=600, byte_fallback=False,
                        hard_vocab_limit=False)
    odd = [{"from": "human", "value": "<image>\nWhat is this item? ✓"}, {"from": "gpt", "value": "A bag."}]
    name = _write(data, "odd.json", [{"id": "odd", "image": IMG, "conversations": odd}])
    r = llava_recipe(data, train=name)
    r["data"]["tokenizer"] = str(tmp_path / "nofallback.model")
    with pytest.raises(ValueError, match=r"'odd'.*unknown token.*template 'v1' and the tokenizer disagree"):
        task_of(r)


def test_model_and_tokenizer_that_do_not_belong_together_are_refused(data):
    r = llava_recipe(data)
    r["model"]["config"]["text_config"]["vocab_size"] = 64
    with pytest.raises(ValueError, match="vocab_size 64 is smaller than the tokenizer's"):
        task_of(r)
    r = llava_recipe(data)
    r["model"]["config"]["image_token_index"] = 7
    with pytest.raises(ValueError, match="image_token_index 7 differs from the tokenizer's <image> id"):
        task_of(r)
    r = llava_recipe(data, template="chatml")
    with pytest.raises(ValueError, match="unknown conversation template 'chatml'"):
        recipe_from_dict(r)
    r = llava_recipe(data, lora=True)
    r["lora"]["target_modules"] = r"nothing\.here"
    with pytest.raises(ValueError, match="match no linear layer"):
        task_of(r).build_model()


def test_init_projector_is_the_projector_types_own(data, tmp_path):
    """init.projector goes through the projector type's hooks (models/projectors.py): an MLP starts
    from LLaVA's stage-1 mm_projector.bin (what --pretrain_mm_mlp_adapter takes) or a LLaVA run; a
    qformer's hint says where its run comes from."""
    r = llava_recipe(data)
    r["init"] = {"projector": str(tmp_path)}
    with pytest.raises(FileNotFoundError, match="LLaVA's stage-1 mm_projector.bin, or a LLaVA run"):
        task_of(r).build_model()
    own = task_of(llava_recipe(data)).build_model().state_dict()
    torch.manual_seed(1)
    llava = {f"model.mm_projector.{'0' if '.linear_1.' in k else '2'}.{k.rsplit('.', 1)[1]}": torch.randn_like(v)
             for k, v in own.items() if k.startswith("multi_modal_projector.")}
    torch.save(llava, tmp_path / "mm_projector.bin")
    r["init"] = {"projector": str(tmp_path / "mm_projector.bin")}
    got = task_of(r).build_model().state_dict()
    assert all(torch.equal(got[f"multi_modal_projector.linear_{1 if k.split('.')[2] == '0' else 2}."
                               f"{k.rsplit('.', 1)[1]}"], v) for k, v in llava.items())
    torch.save({"model.mm_projector.0.weight": torch.zeros(3, 3)}, tmp_path / "small.bin")
    r["init"] = {"projector": str(tmp_path / "small.bin")}
    with pytest.raises(ValueError, match="small.bin: no weights for 3 tensor"):
        task_of(r).build_model()
    r["init"] = {"projector": str(tmp_path)}
    r["model"]["config"].update(projector_type="qformer", projector_num_queries=3, projector_config=dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48))
    with pytest.raises(FileNotFoundError, match="train BLIP-2 stage 1 first"):
        task_of(r).build_model()


def test_inspect_data_shows_what_is_supervised(data, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(llava_recipe(data)))
    run = subprocess.run([sys.executable, "-m", "tessera.cli", "inspect-data", str(path), "--samples", "1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "samples pass the checks" in out and "<image> x 16" in out
    plus = [line for line in out.splitlines() if line.split()[1:2] == ["+"]]
    assert plus and any("</s>" in line for line in plus)
    assert all("ASSISTANT" not in line and "USER" not in line for line in plus)


def _train(tmp_path, name, r, procs):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    out = tmp_path / name
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
              if procs > 1 else [sys.executable])
    run = subprocess.run([*launch, "-m", "tessera.train", str(path), "--out", str(out), "--quiet"], env=ENV,
                         timeout=600, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    return out


def _losses(out):
    return [json.loads(line)["loss"] for line in open(out / "metrics.jsonl") if '"loss"' in line]


def _final(out, own):
    """The checkpoint's tensors under our names: the merged model plus, for LoRA, the adapter
    (written in transformers' in-memory names, mapped back by the model's key aliases)."""
    from safetensors.torch import load_file

    ckpt = out / "checkpoints" / f"step-{STEPS:08d}"
    state = tessera.models.weights.load_weights(str(ckpt))
    if (ckpt / "adapter").is_dir():
        raw = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
        raw = {k.removeprefix("base_model.model."): v for k, v in raw.items()}
        state.update(apply_key_aliases(raw, own, tessera.LlavaForConditionalGeneration.key_aliases))
    return state


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_two_ranks_equal_one_process(data, tmp_path, lora):
    one = _train(tmp_path, "one", llava_recipe(data, 8, lora=lora), 1)
    r0 = llava_recipe(data, 4, lora=lora)
    seed_all(0, 0)
    model = task_of(r0).build_model()
    apply_freezing(model, r0["model"].get("freeze", []), r0["model"].get("trainable", []))  # as the trainer does
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable and any("multi_modal_projector" in k for k in trainable)
    assert all(k.startswith("vision_tower.") is False for k in trainable)
    if lora:
        assert all(".lora_" in k or "multi_modal_projector" in k for k in trainable)
    ref = _final(one, start)
    for strategy in ("ddp", "fsdp2"):
        two = _train(tmp_path, strategy, llava_recipe(data, 4, strategy, lora), 2)
        torch.testing.assert_close(torch.tensor(_losses(two)), torch.tensor(_losses(one)), rtol=1e-5, atol=1e-5)
        final = _final(two, start)
        assert final.keys() == ref.keys()
        for k in final:
            torch.testing.assert_close(final[k], ref[k], rtol=1e-5, atol=1e-5, msg=f"{strategy}: {k}")
        unchanged = [k for k in trainable if torch.equal(final[k], start[k])]
        assert not unchanged, f"{strategy}: trainable parameters that did not move: {unchanged}"
        frozen = [k for k in start if k not in trainable and ".lora_" not in k and k.startswith("vision_tower.")]
        moved = [k for k in frozen if not torch.equal(final[k], start[k])]
        assert frozen and not moved, f"{strategy}: frozen parameters that moved: {moved}"
    summary = json.load(open(one / "summary.json"))
    assert summary["trainable_parameters"] == sum(start[k].numel() for k in trainable) < summary["total_parameters"]
    answers = json.load(open(one / "answers.json"))  # the evaluation generated for every held-out question asked
    assert len(answers) == 4 and all(set(a) == {"id", "answer", "reference"} for a in answers)


@pytest.mark.slow
def test_a_qformer_projector_with_lora_under_fsdp2_equals_one_process(data, tmp_path):
    """BLIP-2's Q-Former as LLaVA's projector (issue 15) under the LLaVA task's LoRA and FSDP2:
    two ranks equal one process, and every trainable parameter (adapters, the whole Q-Former
    projector) moves."""
    def qformer_recipe(batch, strategy="ddp"):
        r = llava_recipe(data, batch, strategy, lora=True)
        r["model"]["config"].update(projector_type="qformer", projector_num_queries=3, projector_config=dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
        return r

    one = _train(tmp_path, "one", qformer_recipe(8), 1)
    r0 = qformer_recipe(4)
    seed_all(0, 0)
    model = task_of(r0).build_model()
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    two = _train(tmp_path, "fsdp2", qformer_recipe(4, "fsdp2"), 2)
    torch.testing.assert_close(torch.tensor(_losses(two)), torch.tensor(_losses(one)), rtol=1e-5, atol=1e-5)
    ref, final = _final(one, start), _final(two, start)
    assert final.keys() == ref.keys() and any(".lora_" in k for k in final)
    for k in final:
        torch.testing.assert_close(final[k], ref[k], rtol=1e-5, atol=1e-5, msg=k)
    projector = [k for k in start if k.startswith("multi_modal_projector.")]
    assert any(".qformer." in k for k in projector)
    unchanged = [k for k in projector + [k for k in final if ".lora_" in k]
                 if k in start and torch.equal(final[k], start[k])]
    assert not unchanged, f"trainable parameters that did not move: {unchanged}"
    assert all(final[k].any() for k in final if ".lora_B" in k)  # adapters start at B = 0: all moved


def test_language_model_pretraining_learns(data, tmp_path):
    r = {"task": "causal_lm",
         "model": {"config": dict(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, max_position_embeddings=96)},
         "data": {"train": str(data / "text.txt"), "eval": str(data / "text.txt"), "tokenizer": str(data / "tokenizer.model"),
                  "max_length": 80, "batch_size": 16},
         "optim": {"lr": 0.01, "warmup_fraction": 0.0},
         "train": {"plots": False, "steps": 30, "log_every": 5, "checkpoint_every": 30, "threads": 1},
         "eval": {"max_documents": 64}}
    out = _train(tmp_path, "lm", r, 1)
    s = json.load(open(out / "summary.json"))
    assert s["final_loss"] < 0.6 * s["first_loss"], s
    assert s["perplexity"] < 100
    # `tessera eval` on the run folder (its newest checkpoint) gives the same held-out figures.
    recipe = tmp_path / "lm.yaml"
    run = subprocess.run([sys.executable, "-m", "tessera.cli", "eval", str(out), "--recipe", str(recipe)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert abs(json.loads(run.stdout)["perplexity"] - s["perplexity"]) < 1e-3 * s["perplexity"]


def test_caption_metrics_score_the_answers_themselves(data):
    pytest.importorskip("pycocoevalcap")
    from tessera.eval.captioning import caption_metrics

    r = llava_recipe(data)
    r["eval"]["caption_metrics"] = True
    task = task_of(r)
    out = task.evaluate(task.build_model())
    answers = task.last_answers
    expected = caption_metrics({i: a["answer"] for i, a in enumerate(answers)},
                               {i: [a["reference"]] for i, a in enumerate(answers)})
    assert out["BLEU-4"] == pytest.approx(expected["BLEU-4"]) and out["CIDEr-D"] == pytest.approx(expected["CIDEr-D"])


def test_captioning_a_karpathy_split_scores_every_reference_of_each_image(data, tmp_path):
    """`tessera eval RUN --captioning coco:FILE`: one greedy caption per image (the prompt chat
    builds for the image alone), scored by pycocoevalcap against all five captions of the image,
    as COCO captioning is reported; the LLaVA task scored one reference per answer only."""
    pytest.importorskip("pycocoevalcap")
    from tessera.chat import cut_answer, load_template, prompt, stop_ids
    from tessera.eval.caption_retrieval import load_retrieval_split
    from tessera.eval.captioning import caption_metrics
    from tessera.train.conversation_data import load_pixels

    images = {}  # three distinct images (a Karpathy split names each once)
    for s in json.load(open(data / "heldout.json")):
        if isinstance(s.get("image"), str) and len(images) < 3:
            images.setdefault(s["image"], s)
    heldout = list(images.values())
    entries = [{"filepath": "", "filename": s["image"], "split": "test", "imgid": i,
                "sentences": [{"raw": f"a photo of item {i} number {j}."} for j in range(5)]}
               for i, s in enumerate(heldout)]
    (data / "captions_karpathy.json").write_text(json.dumps({"images": entries}))
    r = llava_recipe(data)
    task = task_of(r)
    torch.manual_seed(0)
    task.build_model().save_pretrained(str(tmp_path / "ckpt"))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    run = subprocess.run([sys.executable, "-m", "tessera.cli", "eval", str(tmp_path / "ckpt"), "--recipe",
                          str(tmp_path / "r.yaml"), "--captioning", "coco:" + str(data / "captions_karpathy.json")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    model = task.load_model(str(tmp_path / "ckpt")).eval()
    template, tok = load_template(r["data"]["template"]), task.tokenizer
    captions = {}
    for i, s in enumerate(heldout):  # chat's own prompt and stop rule, one image at a time
        ids = prompt(template, [{"from": "human", "value": "<image>"}], tok, task.image_token_id, task.image_tokens, 1)
        pixels = load_pixels([str(data / s["image"])], task.transform)
        out = model.generate(torch.tensor([ids]), pixel_values=pixels, max_new_tokens=r["eval"]["max_new_tokens"],
                             do_sample=False, eos_token_id=stop_ids(template, tok))[0, len(ids):].tolist()
        stops = stop_ids(template, tok)
        end = next((k + (t != tok.eos_id) for k, t in enumerate(out) if t in stops), len(out))
        captions[i] = cut_answer(template, tok.decode([t for t in out[:end] if t < tok.vocab_size])).strip()
    want = caption_metrics(captions, {i: [e["raw"] for e in entries[i]["sentences"]] for i in captions})
    assert got["num_images"] == 3 and got["num_captions"] == 15
    assert got["BLEU-4"] == pytest.approx(want["BLEU-4"]) and got["CIDEr-D"] == pytest.approx(want["CIDEr-D"])
    task.evaluate_captions(model, load_retrieval_split("coco:" + str(data / "captions_karpathy.json")))
    assert [c["caption"] for c in task.last_captions] == [captions[i] for i in range(3)]


@pytest.mark.slow
def test_length_grouped_batches_on_two_ranks_equal_one_process(data, tmp_path):
    """LLaVA's group_by_modality_length deals each global batch to the ranks: the steps equal one
    process holding the whole global batch. Half the samples are text-only, so whole batches skip
    the tower and projector: DDP's all-reduce then never started, the ranks drifted apart and the
    next step failed ("Expected to have finished reduction"), until DDP looked for unused ones."""
    samples = json.load(open(data / "instruct.json"))[:16]  # 2 image batches, 4 text-only: 3 steps take one
    samples += [{"id": f"text-{i}", "conversations": [{"from": "human", "value": f"What is {i} plus one?"},
                                                     {"from": "gpt", "value": f"It is {i + 1}."}]} for i in range(32)]
    (data / "mixed.json").write_text(json.dumps(samples))
    assert task_of(llava_recipe(data, train="mixed.json")).leaves_parameters_unused()
    assert not task_of(llava_recipe(data)).leaves_parameters_unused()
    runs = {}
    for procs, batch in ((1, 8), (2, 4)):
        r = llava_recipe(data, batch, train="mixed.json")
        r["data"]["group_by_modality_length"] = True
        runs[procs] = _train(tmp_path, f"grouped{procs}", r, procs)
    torch.testing.assert_close(torch.tensor(_losses(runs[2])), torch.tensor(_losses(runs[1])), rtol=1e-5, atol=1e-5)
    one, two = _final(runs[1], {}), _final(runs[2], {})
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-5, msg=k)
    # 18 image samples: the tail megabatch (2 images, 6 texts, which LLaVA's order makes depend on
    # the world size) leaves rank 1 without an image. FSDP2 gathers the tower's shards in its
    # forward, so gloo aborted ("collective mismatch"); that rank now runs an idle image row,
    # which changes no loss and no gradient: FSDP2 equals DDP.
    (data / "mixed18.json").write_text(json.dumps(json.load(open(data / "instruct.json"))[:18] + samples[16:]))
    for strategy in ("ddp", "fsdp2"):
        r = llava_recipe(data, 4, strategy, train="mixed18.json")
        r["data"]["group_by_modality_length"] = True
        runs[strategy] = _train(tmp_path, f"tail-{strategy}", r, 2)
    torch.testing.assert_close(torch.tensor(_losses(runs["fsdp2"])), torch.tensor(_losses(runs["ddp"])),
                               rtol=1e-6, atol=1e-6)
    ddp, fsdp2 = _final(runs["ddp"], {}), _final(runs["fsdp2"], {})
    for k in ddp:
        torch.testing.assert_close(fsdp2[k], ddp[k], rtol=1e-5, atol=1e-5, msg=k)
    # DDP looking for unused parameters breaks reentrant checkpointing: each rank's setup refuses
    # it before building DDP (rank 0's, in this process: it raises before any collective).
    from tessera.train.distributed import DistInfo
    from tessera.train.trainer import Trainer

    r = llava_recipe(data, 4, train="mixed.json")
    r["model"]["gradient_checkpointing"] = True
    trainer = Trainer(recipe_from_dict(r), task_of(r), str(tmp_path / "ckpt"), DistInfo(world_size=2), progress=False)
    with pytest.raises(ValueError, match="does not work with reentrant gradient checkpointing"):
        trainer.setup()


@pytest.mark.parametrize("aspect", ["square", "pad"])
def test_a_checkpoint_is_a_folder_transformers_processes_and_generates_from(data, tmp_path, aspect):
    """A LLaVA checkpoint holds the tokenizer, image processor and chat template beside the
    weights: transformers' AutoProcessor gives tessera's ids (the image placeholder expanded to the
    image tokens) and pixels, apply_chat_template the prompt tessera's chat renders, and
    LlavaForConditionalGeneration's greedy answer equals tessera's. Before, it held the weights
    alone."""
    import numpy as np
    from PIL import Image

    from tessera.chat import _text_ids

    transformers = pytest.importorskip("transformers")
    r = llava_recipe(data)
    r["data"]["image_aspect_ratio"] = aspect
    r["data"]["image_mean"], r["data"]["image_std"] = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    out = _train(tmp_path, aspect, r, 1)
    ckpt = out / "checkpoints" / f"step-{STEPS:08d}"
    proc = transformers.AutoProcessor.from_pretrained(str(ckpt))
    task = task_of(r)
    rng = np.random.default_rng(0)
    # Not square: "pad" pads it; "square" resizes it to 39 x 28 and crops an odd margin (11 rows),
    # whose offset transformers rounds down where torchvision rounds half to even
    image = rng.integers(0, 256, (28, 20, 3), dtype=np.uint8)
    text = "<image>\nWhat is this item?"
    got = proc(text=text, images=Image.fromarray(image), return_tensors="pt")
    ids, _, _ = _text_ids(task.tokenizer, text, task.image_token_id, task.image_tokens)
    assert got["input_ids"][0].tolist() == [task.tokenizer.bos_id] + ids
    pixels = task.transform(torch.from_numpy(image))
    torch.testing.assert_close(got["pixel_values"][0], pixels, atol=1e-5, rtol=0)
    # and its chat template: apply_chat_template prompts with the ids tessera's chat renders
    from tessera.chat import load_template, render

    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this item?"},
                                             {"type": "image", "image": Image.fromarray(image)}]}]
    chat = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                    return_tensors="pt")
    want, _ = render(load_template(r["data"]["template"]), [{"from": "human", "value": "What is this item?\n<image>"}],
                     task.tokenizer, task.image_token_id, task.image_tokens, images=1, add_generation_prompt=True)
    assert chat["input_ids"][0].tolist() == want
    torch.testing.assert_close(chat["pixel_values"], got["pixel_values"], atol=0, rtol=0)
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(str(ckpt)).eval()
    ours = tessera.from_pretrained(str(ckpt)).eval()
    with torch.no_grad():
        theirs = hf.generate(**got, max_new_tokens=6, do_sample=False)[0, got["input_ids"].shape[1]:]
        mine = ours.generate(got["input_ids"], pixel_values=got["pixel_values"], max_new_tokens=6)[0]
    assert mine[-len(theirs):].tolist() == theirs.tolist()
    # transformers' image-text-to-text pipeline on the chat (template, processor, model) answers
    # as tessera does from the prompt its chat renders
    pipe = transformers.pipeline("image-text-to-text", model=str(ckpt))
    answer = pipe(text=messages, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    with torch.no_grad():
        mine = ours.generate(chat["input_ids"], pixel_values=chat["pixel_values"], max_new_tokens=6)[0]
    # (the pipeline cuts the decoded prompt off the decoded whole, which keeps the answer's leading space)
    assert answer.strip() == proc.tokenizer.decode(mine[chat["input_ids"].shape[1]:], skip_special_tokens=True)
