"""Sugar's chat evaluations (train/sugar_chat.py): the yes/no probe's questions and scores, the RAG
prompt, retrieval by cosine, an item's image paired with its own sentence, bad input as a
ValueError, and both evaluations end to end on a tiny random LLaVA."""
import os
import sys

import pytest
import torch

from tessera import _C
from tessera.chat import IMAGE_PLACEHOLDER
from tessera.train import build_task, recipe_from_dict
from tessera.train.interleaved_data import InterleavedSample
from tessera.train.conversation_data import encode_samples
from tessera.train.sugar_chat import (evaluate_chat, fashion_items, nearest, probe_questions, probe_scores, rag_sample,
                                      said_yes)
from tessera.train.sugar_eval import sample_items

sys.path.insert(0, os.path.dirname(__file__))
from _sugar_runs import FMNIST, make_runs, recipe  # noqa: E402



def test_probe_questions_are_balanced_and_the_absent_class_is_never_the_true_one():
    labels = [i % 10 for i in range(50)]
    questions = probe_questions(labels, seed=3)
    assert len(questions) == 2 * len(labels)
    assert sum(yes for *_, yes in questions) == len(labels)
    for image, asked, yes in questions:
        assert (asked == labels[image]) == yes
    assert len({asked for _, asked, yes in questions if not yes}) > 1  # drawn, not one fixed class


def test_probe_scores_are_the_formula():
    answers = ["Yes.", "No.", "yes", "A sandal.", "No, a bag.", "Yes.", "", "NO"]
    expected = [True, False, False, True, False, False, True, True]
    said = [True, False, True, None, False, True, None, False]
    assert [said_yes(a) for a in answers] == said
    scores = probe_scores(answers, expected)
    assert scores["probe_accuracy"] == pytest.approx(sum(s == e for s, e in zip(said, expected)) / 8)  # 3 / 8
    assert scores["probe_yes_share"] == pytest.approx(3 / 8)
    assert scores["probe_other_share"] == pytest.approx(2 / 8)
    always_yes = probe_scores(["Yes."] * 4, [True, False, True, False])
    assert (always_yes["probe_accuracy"], always_yes["probe_yes_share"]) == (0.5, 1.0)


def test_the_rag_prompt_has_one_placeholder_per_image_and_the_references_before_the_question():
    refs = [("a.png", "A sandal."), ("b.png", "The item is a bag.")]
    sample = rag_sample("q", refs, "q.png", "What is this item?", "A sandal.")
    text = sample["conversations"][0]["value"]
    assert sample["image"] == ["a.png", "b.png", "q.png"]
    assert text.count(IMAGE_PLACEHOLDER) == len(sample["image"])
    assert text.index("A sandal.") < text.index("The item is a bag.") < text.index("What is this item?")
    assert text.endswith(f"{IMAGE_PLACEHOLDER}\nWhat is this item?")
    plain = rag_sample("q", refs, "q.png", "What is this item?", "A sandal.", reference_images=False)
    assert plain["image"] == ["q.png"] and plain["conversations"][0]["value"].count(IMAGE_PLACEHOLDER) == 1
    none = rag_sample("q", [], "q.png", "What is this item?", "A sandal.")
    assert none["conversations"][0]["value"] == f"{IMAGE_PLACEHOLDER}\nWhat is this item?"


def test_retrieval_picks_the_nearest_reference_by_cosine():
    g = torch.Generator().manual_seed(0)
    queries, store = torch.randn(7, 5, generator=g), torch.randn(30, 5, generator=g) * 3
    cosine = (queries / queries.norm(dim=1, keepdim=True)) @ (store / store.norm(dim=1, keepdim=True)).T
    assert torch.equal(nearest(queries, store, 1)[:, 0], cosine.argmax(1))
    top2 = nearest(queries, store, 2)
    assert torch.equal(top2, cosine.sort(1, descending=True).indices[:, :2])
    assert torch.equal(nearest(queries, store * 10, 2), top2)  # cosine, not dot product


def test_an_item_is_an_image_and_its_own_sentence_in_either_order():
    image_first = InterleavedSample(0, [{"image": "1.png"}, {"text": "A bag."}, {"image": "2.png"},
                                        {"text": "A coat."}], "f", "f", {})
    text_first = InterleavedSample(1, [{"text": "A bag."}, {"image": "1.png"}, {"text": "A coat."},
                                       {"image": "2.png"}], "f", "f", {})
    assert sample_items(image_first) == sample_items(text_first) == [("1.png", "A bag."), ("2.png", "A coat.")]


def test_bad_input_is_a_value_error():
    store = torch.randn(3, 4)
    with pytest.raises(ValueError, match="holds 3"):
        nearest(torch.randn(2, 4), store, 4)
    with pytest.raises(ValueError, match="k = 0"):
        nearest(torch.randn(2, 4), store, 0)
    with pytest.raises(ValueError, match="empty"):
        nearest(torch.randn(2, 4), torch.empty(0, 4), 1)
    with pytest.raises(ValueError, match="answers"):
        probe_scores(["Yes."], [True, False])
    with pytest.raises(ValueError, match="answers"):
        probe_scores([], [])


@pytest.mark.parametrize("eval_section, match", [({"rag_k": 0}, "rag_k"), ({"chat_items": -1}, "chat_items"),
                                                 ({"template": "nope"}, "template")])
def test_bad_eval_settings_are_a_value_error(tmp_path, eval_section, match):
    with pytest.raises(ValueError, match=match):
        recipe_from_dict({**recipe(tmp_path), "eval": eval_section})


@pytest.mark.skipif(not _C.data.drawing_available(), reason="built without OpenCV")
@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
def test_both_evaluations_end_to_end(tmp_path):
    runs = make_runs(tmp_path)
    r = recipe(runs)
    task = build_task(recipe_from_dict({**r, "eval": {**r["eval"], "chat_items": 5, "rag_store": 12, "rag_k": 2}}))
    model = task.build_model().eval()
    out = evaluate_chat(task, model)
    assert out["probe_questions"] == 10 and out["rag_queries"] == 5
    for key in ("what_is_accuracy", "probe_accuracy", "probe_yes_share", "rag_accuracy_retrieved",
                "rag_accuracy_retrieved_sentences", "rag_accuracy_same_class", "rag_accuracy_random",
                "rag_reference_precision"):
        assert 0.0 <= out[key] <= 1.0, key
    # Without a store the question alone is still asked, on the same items, with the same answers.
    alone = evaluate_chat(build_task(recipe_from_dict({**r, "eval": {**r["eval"], "chat_items": 5, "rag_store": 0}})),
                          model)
    assert alone["what_is_accuracy"] == out["what_is_accuracy"] and alone["what_is_questions"] == 5
    assert not any(key.startswith("rag_") for key in alone)
    too_many = build_task(recipe_from_dict({**r, "eval": {**r["eval"], "chat_items": 2, "rag_store": 1,
                                                           "rag_k": 2}}))
    with pytest.raises(ValueError, match="the store holds 1"):
        evaluate_chat(too_many, model)
    # Through the prompt rendering: each placeholder becomes one image's tokens.
    items = fashion_items(r["data"]["eval"], 3)
    encoded = encode_samples([rag_sample("q", [(p, s) for p, _, s in items[:2]], items[2][0], "What is this item?",
                                         "A bag.")], r["data"]["eval"], task.tokenizer, task.template, task.image_token_id,
                             task.image_tokens, 116, supervise=False)
    assert int((encoded.input_ids == task.image_token_id).sum()) == 3 * task.image_tokens


@pytest.mark.skipif(not _C.data.drawing_available(), reason="built without OpenCV")
@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
def test_sugar_uses_the_template_its_llava_run_was_trained_with(tmp_path):
    """Sugar's chat evaluation and mixed conversations are in the LLaVA run's own template unless
    the recipe names one (its answers were trained in it)."""
    import json

    runs = make_runs(tmp_path)
    r = recipe(runs)
    (runs / "llava" / "recipe.json").write_text(json.dumps({"task": "llava", "data": {"template": "llava_v1"}}))
    resolved = build_task(recipe_from_dict({**r, "eval": {**r["eval"], "template": ""}}))
    assert resolved.template == "llava_v1"
    assert resolved.recipe.eval.template == "llava_v1"  # recipe.json names it: chat reads it from the Sugar run
    assert build_task(recipe_from_dict({**r, "eval": {**r["eval"], "template": "plain"}})).template == "plain"
    (runs / "llava" / "recipe.json").unlink()
    assert build_task(recipe_from_dict({**r, "eval": {**r["eval"], "template": ""}})).template == "v1"


@pytest.mark.skipif(not _C.data.drawing_available(), reason="built without OpenCV")
@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
def test_a_trained_run_retrieves_and_answers_outside_training(tmp_path):
    """Retrieval and RAG lived only inside Sugar's evaluation; SugarRetriever gives them to a user
    of a trained run: its embeddings are the evaluation's, each sample finds itself first, and
    ask() answers as the evaluation's RAG path does."""
    import json

    from tessera.train.distributed import DistInfo
    from tessera.train.interleaved_data import read_interleaved
    from tessera.train.sugar_chat import generate_answers
    from tessera.train.sugar_eval import embed_samples
    from tessera.train.sugar_retrieval import SugarRetriever
    from tessera.train.trainer import Trainer

    runs = make_runs(tmp_path)
    r = recipe(runs, steps=2)
    r["data"]["eval"] = r["data"]["pairs"] = ""
    task = build_task(recipe_from_dict(r))
    Trainer(recipe_from_dict(r), task, str(tmp_path / "run"), DistInfo(), progress=False).fit()
    sugar = SugarRetriever.from_run(str(tmp_path / "run"), image_folder=str(runs / "set"))
    rows = [json.loads(line) for line in open(runs / "set" / "train.jsonl")][:6]
    store = sugar.embed(rows, batch_size=4)
    model = task.load_model(str(tmp_path / "run" / "checkpoints" / "step-00000002"))
    want = embed_samples(task, model, read_interleaved(str(runs / "set" / "train.jsonl"), 6), 4)[0]
    torch.testing.assert_close(store, torch.nn.functional.normalize(want, dim=-1), atol=1e-5, rtol=1e-5)
    scores, picked = sugar.search(store, store, k=2)
    assert picked[:, 0].tolist() == list(range(6)) and torch.allclose(scores[:, 0], torch.ones(6), atol=1e-5)
    items = fashion_items(str(runs / "set" / "train.jsonl"), 3)
    refs = [(p, s) for p, _, s in items[:2]]
    from tessera.train.llava_task import LlavaEval

    got = sugar.ask(items[2][0], "What is this item?", refs, max_new_tokens=LlavaEval().max_new_tokens)
    task.template = sugar.template
    sample = rag_sample("q", refs, items[2][0], "What is this item?", "")
    assert [got] == generate_answers(task, model.llava, [sample], str(runs / "set" / "train.jsonl"))
    with pytest.raises(ValueError, match=r"search: k = 7, the store holds 6"):
        sugar.search(store, store, k=7)
    # Samples are checked as a data file's records are (a second key in a segment was dropped,
    # empty texts only crashed in max()); other misuse names what to change.
    for bad, message in (([{"text": "no segments"}], r"embed\[0\]: 'segments' must be a list"),
                         ([{"segments": [{"image": refs[0][0], "text": "x"}]}], r"embed\[0\]: segment 0: expected one"),
                         ([{"segments": [{"text": ""}]}], r"embed\[0\]: no slice with tokens"),
                         ([], "embed: no samples")):
        with pytest.raises(ValueError, match=message):
            sugar.embed(bad)
    with pytest.raises(ValueError, match=r"ask: the prompt \(2 reference\(s\), the image and the question\) does "
                                         r"not fit the model's context"):
        sugar.ask(items[2][0], "What is this item?", refs, max_new_tokens=120)
    with pytest.raises(ValueError, match="ask: references are \\(image path, sentence\\) pairs"):
        sugar.ask(items[2][0], "What is this item?", "abc")
    moved = json.load(open(tmp_path / "run" / "checkpoints" / "step-00000002" / "recipe.json"))
    with pytest.raises(FileNotFoundError, match=r"its tokenizer '/nowhere/t.model' is not there .* tokenizer=PATH"):
        SugarRetriever.from_run(str(tmp_path / "run"), tokenizer="/nowhere/t.model")
    assert moved["data"]["tokenizer"]
