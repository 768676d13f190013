"""Sugar's chat evaluations: a yes/no probe on absent objects and retrieval-augmented generation,
on held-out Fashion-MNIST items of data.eval (an item: an image and its sentence). Answers come
from LLaVA's own evaluation path (`LlavaTask.answer`: the prompt rendered with the template through
`encode_samples`, greedy, LlavaEval's max_new_tokens) and are scored as it scores them.

Yes/no probe (POPE-style): each image is asked "Is there {a name} in the image?" twice, for its
own class (answer yes) and for one other class drawn from a seeded generator (answer no). Reported:
accuracy, the share of yes answers (saying yes to everything scores 50 % / 100 %) and the share of
answers that are neither yes nor no.

Retrieval-augmented generation: the first eval.rag_store Fashion-MNIST items of data.train (the
training split: no held-out image) are embedded image alone through r, as the retrieval metrics
embed; each held-out image takes its eval.rag_k nearest by cosine, and they go before the question
as image and sentence ("<image>\\nA sandal.\\n" each, then "<image>\\nWhat is this item?").
"What is this item?" accuracy without references (`what_is_accuracy`, asked with eval.rag_store 0
too), with the retrieved ones, with k references of the image's own class (does the model read
references at all?), with k random ones, and with the retrieved sentences alone (no reference
image: the demo LLaVA never saw two images in one prompt); and the share of retrieved references
whose class is the query's."""
from __future__ import annotations

import os
import random
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..chat import IMAGE_PLACEHOLDER
from ..eval.finite import require_items
from ..data.instruct import FASHION_NAMES, WHAT_IS, with_article
from .interleaved_data import InterleavedSample, read_interleaved
from .sugar_eval import embed_samples, item_name, sample_items

PROBE = "Is there {} in the image?"
Item = Tuple[str, int, str]  # image path (relative to the data file's folder), class, sentence


def fashion_items(path: str, count: int) -> List[Item]:
    """The first `count` Fashion-MNIST items of an interleaved file (scenes are skipped)."""
    items: List[Item] = []
    for sample in read_interleaved(path):
        for image, text in sample_items(sample):
            if item_name(text) in FASHION_NAMES:
                items.append((image, FASHION_NAMES.index(item_name(text)), text))
                if len(items) == count:
                    return items
    return items


def answer_of(label: int) -> str:
    return with_article(FASHION_NAMES[label]).capitalize() + "."  # the instruction data's answer


def probe_questions(labels: Sequence[int], seed: int = 0) -> List[Tuple[int, int, bool]]:
    """(image index, class asked about, expected yes): per image its own class and one other."""
    rng = random.Random(seed)
    out = []
    for i, label in enumerate(labels):
        absent = rng.choice([c for c in range(len(FASHION_NAMES)) if c != label])
        out += [(i, label, True), (i, absent, False)]
    return out


def said_yes(answer: str) -> Optional[bool]:
    """True for a yes, False for a no, None for anything else (judged by the first word)."""
    from .llava_task import _normalise

    words = _normalise(answer).split()
    return {"yes": True, "no": False}.get(words[0] if words else "")


def probe_scores(answers: Sequence[str], expected: Sequence[bool]) -> Dict[str, float]:
    if not answers or len(answers) != len(expected):
        raise ValueError(f"probe: {len(answers)} answers for {len(expected)} questions (need as many, at least one)")
    said = [said_yes(a) for a in answers]
    n = len(said)
    return {"probe_accuracy": sum(s == e for s, e in zip(said, expected)) / n,
            "probe_yes_share": sum(s is True for s in said) / n,
            "probe_other_share": sum(s is None for s in said) / n}


def nearest(queries: torch.Tensor, store: torch.Tensor, k: int) -> torch.Tensor:
    """[Q, k] indices of each query's k most cosine-similar store rows, nearest first."""
    if len(store) == 0:
        raise ValueError("RAG: the reference store is empty (eval.rag_store > 0 and Fashion-MNIST items in data.train)")
    if not 1 <= k <= len(store):
        raise ValueError(f"RAG: k = {k} references asked for, the store holds {len(store)} (need 1 <= k <= store)")
    return (F.normalize(queries.float(), dim=-1) @ F.normalize(store.float(), dim=-1).T).topk(k, dim=1).indices


def rag_sample(sid: str, references: Sequence[Tuple[str, str]], image: str, question: str, answer: str,
               reference_images: bool = True) -> Dict:
    """A conversation whose one user turn holds each reference (image, sentence; the sentence
    alone without `reference_images`), then the image and the question; images in placeholder order."""
    mark = f"{IMAGE_PLACEHOLDER}\n" if reference_images else ""
    text = "".join(f"{mark}{sentence}\n" for _, sentence in references)
    return {"id": sid, "image": [p for p, _ in references if reference_images] + [image],
            "conversations": [{"from": "human", "value": f"{text}{IMAGE_PLACEHOLDER}\n{question}"},
                              {"from": "gpt", "value": answer}]}


def generate_answers(task, model, samples: List[Dict], data_file: str) -> List[str]:
    """Greedy answers through LLaVA's evaluation path (model: the SugarModel's LLaVA)."""
    from .conversation_data import encode_samples
    from .llava_task import LlavaEval

    new_tokens = LlavaEval().max_new_tokens
    room = int(task.config["text_config"]["max_position_embeddings"]) - new_tokens
    encoded = encode_samples(samples, data_file, task.tokenizer, task.template, task.image_token_id, task.image_tokens,
                             room, task.recipe.data.image_folder, supervise=False)
    return task.answer(model, encoded, new_tokens)


def accuracy(answers: Sequence[str], references: Sequence[str]) -> float:
    from .llava_task import _normalise

    return sum(_normalise(a) == _normalise(r) for a, r in zip(answers, references)) / require_items(
        len(answers), "answer accuracy: answers")


def yes_no_probe(task, model, items: Sequence[Item], data_file: str) -> Dict[str, float]:
    questions = probe_questions([label for _, label, _ in items])
    samples = [{"id": f"probe-{n}", "image": [items[i][0]],
                "conversations": [{"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n"
                                   + PROBE.format(with_article(FASHION_NAMES[c]))},
                                  {"from": "gpt", "value": "Yes." if yes else "No."}]}
               for n, (i, c, yes) in enumerate(questions)]
    out = probe_scores(generate_answers(task, model.llava, samples, data_file), [yes for *_, yes in questions])
    out["probe_questions"] = len(questions)
    return out


def store_path(task, item_image: str) -> str:
    """A training image's path relative to the held-out file's image folder (one folder for both)."""
    d = task.recipe.data
    train_folder = d.image_folder or os.path.dirname(os.path.abspath(d.train))
    eval_folder = d.image_folder or os.path.dirname(os.path.abspath(d.eval))
    rel = os.path.relpath(os.path.join(train_folder, item_image), eval_folder)
    if rel.startswith(".."):
        raise ValueError(f"RAG: {d.train}'s images are outside {d.eval}'s folder {eval_folder}; set data.image_folder")
    return rel


def image_alone(path: str, data_file: str) -> InterleavedSample:
    return InterleavedSample(path, [{"image": path}], data_file, f"{data_file}: {path}", {})


def rag(task, model, queries: Sequence[Item], data_file: str) -> Dict[str, float]:
    cfg, d = task.recipe.eval, task.recipe.data
    store = fashion_items(d.train, cfg.rag_store)
    r_store = embed_samples(task, model, [image_alone(p, d.train) for p, _, _ in store], cfg.batch_size)[0]
    r_query = embed_samples(task, model, [image_alone(p, data_file) for p, _, _ in queries], cfg.batch_size)[0]
    k = cfg.rag_k
    picked = nearest(r_query, r_store, k).tolist()
    rng = random.Random(0)
    by_class = {c: [j for j, (_, label, _) in enumerate(store) if label == c] for c in range(len(FASHION_NAMES))}
    choices = {"retrieved": picked,
               "same_class": [rng.sample(by_class[label], min(k, len(by_class[label]))) for _, label, _ in queries],
               "random": [rng.sample(range(len(store)), k) for _ in queries]}
    refs = {name: [[(store_path(task, store[j][0]), store[j][2]) for j in rows] for rows in chosen]
            for name, chosen in choices.items()}
    truth = [answer_of(label) for _, label, _ in queries]
    out = {}
    for name, source, images in (("retrieved", "retrieved", True),
                                 ("retrieved_sentences", "retrieved", False), ("same_class", "same_class", True),
                                 ("random", "random", True)):
        samples = [rag_sample(f"rag-{n}", refs[source][n], image, WHAT_IS, truth[n], images)
                   for n, (image, _, _) in enumerate(queries)]
        out[f"rag_accuracy_{name}"] = accuracy(generate_answers(task, model.llava, samples, data_file), truth)
    out["rag_reference_precision"] = sum(store[j][1] == q[1] for q, rows in zip(queries, picked) for j in rows) / (
        k * len(queries))
    out["rag_queries"] = len(queries)
    return out


def what_is(task, model, items: Sequence[Item], data_file: str) -> Dict[str, float]:
    """"What is this item?" with no reference: the chat format Sugar must keep (RAG's baseline)."""
    truth = [answer_of(label) for _, label, _ in items]
    samples = [rag_sample(f"what-{n}", [], image, WHAT_IS, truth[n]) for n, (image, _, _) in enumerate(items)]
    return {"what_is_accuracy": accuracy(generate_answers(task, model.llava, samples, data_file), truth),
            "what_is_questions": len(items)}


def evaluate_chat(task, model) -> Dict[str, float]:
    """The question alone, the probe and RAG on the first eval.chat_items held-out items (0: none)."""
    d, cfg = task.recipe.data, task.recipe.eval
    if not cfg.chat_items or not d.eval:
        return {}
    items = fashion_items(d.eval, cfg.chat_items)
    if not items:
        raise ValueError(f"{d.eval}: no Fashion-MNIST item (an image and a sentence naming a class) to ask about")
    out = what_is(task, model, items, d.eval)
    out.update(yes_no_probe(task, model, items, d.eval))
    if cfg.rag_store:
        out.update(rag(task, model, items, d.eval))
    return out
