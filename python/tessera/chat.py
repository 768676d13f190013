"""Conversation templates as data files (`tessera/assets/templates/<name>.json`: LLaVA's `plain`
and `v1`) and their rendering into token ids and labels in which only the assistant's answers
are supervised.

Each segment (system prompt, role prefixes, messages, image placeholders) is tokenized on its
own and the ids are concatenated, so the labels line up with the tokens by construction — the
"tokenization mismatch" that makes LLaVA's loss silently 0 when a template and a tokenizer
disagree cannot happen; what can still go wrong (no answer to learn, placeholders that do not
match the images) is refused with the sample named.

    template = load_template("v1")
    ids, labels = render(template, [{"from": "human", "value": "<image>\\nWhat is this item?"},
                                    {"from": "gpt", "value": "A sneaker."}],
                         tokenizer, image_token_id=32000, image_tokens=576, images=1)
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

from .io import is_regular_file, read_json
from .bounded_encoding import encode_at_most
from .schema import from_mapping
from ._warn import warn

IGNORE = -100
IMAGE_PLACEHOLDER = "<image>"
_DIR = os.path.join(os.path.dirname(__file__), "assets", "templates")
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


@dataclass(frozen=True)
class ConversationTemplate:
    name: str
    about: str = ""
    system: str = ""
    system_suffix: str = ""
    user_prefix: str = ""
    user_suffix: str = ""
    assistant_prefix: str = ""
    assistant_suffix: str = ""
    add_eos_after_assistant: bool = True
    # A user turn with one image placeholder has it moved to the turn's start, then a newline, as
    # LLaVA's preprocess_multimodal does to every sample ("Describe it.\n<image>" trains as
    # "<image>\nDescribe it."). Turns with several placeholders keep their order (LLaVA would merge
    # them into one).
    image_first: bool = False
    # False: a user turn gives only its image placeholders, its words are dropped (LLaVA's
    # preprocess_plain keeps "<image>" and the caption, whatever the question said).
    user_text: bool = True


def list_templates() -> List[str]:
    return sorted(f[:-5] for f in os.listdir(_DIR) if f.endswith(".json"))


def load_template(name_or_path: str) -> ConversationTemplate:
    """A shipped template by name, or a JSON file with the same fields (data, never code)."""
    path = name_or_path if name_or_path.endswith(".json") else os.path.join(_DIR, f"{name_or_path}.json")
    if not is_regular_file(path):
        raise ValueError(f"unknown conversation template {name_or_path!r} (shipped: {', '.join(list_templates())}; "
                         "or give a .json file)")
    return from_mapping(ConversationTemplate, read_json(path, "a conversation template"), path)


def run_recipe(folder: str) -> Dict:
    """A run's recipe.json as a mapping ({} when it has none)."""
    path = os.path.join(folder, "recipe.json")
    recipe = read_json(path, "the run's recipe") if os.path.isfile(path) else {}
    return recipe if isinstance(recipe, dict) else {}


def run_template(folder: str) -> Optional[str]:
    """The template a run was trained with (its recipe.json: `data.template`, or Sugar's
    `eval.template`); None when the run names none."""
    recipe = run_recipe(folder)
    for section in ("data", "eval"):
        part = recipe.get(section)
        value = part.get("template") if isinstance(part, dict) else None
        if isinstance(value, str) and value:
            return value
    return None


def _text_ids(tokenizer, text: str, image_token_id: int, image_tokens: int,
              room: Optional[int] = None) -> Tuple[List[int], int, bool]:
    """Ids of `text` with each image placeholder expanded to `image_tokens` image ids; the count;
    whether text was left unencoded: with `room`, text past that many ids is not encoded
    (placeholders still are)."""
    ids: List[int] = []
    left_out = False
    parts = text.split(IMAGE_PLACEHOLDER)
    for i, part in enumerate(parts):
        if i:
            ids += [image_token_id] * image_tokens
        if part and room is None:
            ids += tokenizer.encode(part, add_bos=False)
        elif part:
            piece, cut = encode_at_most(tokenizer, part, room - len(ids))
            ids += piece
            left_out = left_out or cut
    return ids, len(parts) - 1, left_out


def bos_eos(tokenizer, where: str) -> Tuple[int, int]:
    """The tokenizer's bos and eos ids, which every rendered sample starts and ends with; a
    SentencePiece model trained without one says -1, which was written into ids and labels."""
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    for name, value in (("bos", bos), ("eos", eos)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}: the tokenizer has no {name} token ({name}_id {value}); LLaVA-style samples "
                             f"start with bos and end answers with eos (train_sentencepiece gives bos 1, eos 2)")
    return bos, eos


def render(template: ConversationTemplate, conversation: Sequence[Dict[str, str]], tokenizer, image_token_id: int,
           image_tokens: int, images: int = 0, where: str = "sample",
           add_generation_prompt: bool = False, max_tokens: Optional[int] = None,
           stats: Optional[Dict[str, bool]] = None) -> Tuple[List[int], List[int]]:
    """(input_ids, labels) of a conversation: a list of {"from": human|gpt, "value": text} turns
    (LLaVA's data format; "user"/"assistant" also accepted). Labels are -100 everywhere except the
    assistant's answers (and the end-of-sequence token after each, when the template says so).
    `add_generation_prompt`: the conversation ends with the user and the assistant's prefix is
    appended — the prompt to generate from, tokenized exactly as in training. `max_tokens`: text
    past that many ids (and one more, which tells a cut) is not encoded, for truncation to follow;
    `stats["capped"]` then says whether some was (the ids' count is a lower bound)."""
    bos, eos = bos_eos(tokenizer, where)
    ids, labels = [bos], [IGNORE]
    placeholders = 0
    # LLaVA tokenizes the conversation as one string: the unlearned text since the last answer is
    # kept and tokenized at once (the separators, " " after the system prompt and each question,
    # tokenized alone became a lone "▁" before USER / ASSISTANT with LLaMA's whitespace-keeping
    # tokenizer).
    pending: List[str] = []

    def emit(text: str, learn: bool) -> None:
        nonlocal placeholders
        if text:
            room = None if max_tokens is None else max_tokens + 1 - len(ids)
            piece, n, cut = _text_ids(tokenizer, text, image_token_id, image_tokens, room)
            if cut and stats is not None:
                stats["capped"] = True
            placeholders += n
            ids.extend(piece)
            labels.extend(piece if learn else [IGNORE] * len(piece))

    def flush() -> None:
        emit("".join(pending), False)
        pending.clear()

    def add(text: str, learn: bool) -> None:
        if learn:
            flush()
            emit(text, True)
        else:
            pending.append(text)

    if not template.user_text:
        _check_plain(template, conversation, where, add_generation_prompt)
    add(template.system + (template.system_suffix if template.system else ""), False)
    for turn_no, turn in enumerate(conversation):
        role = ROLES.get(str(turn.get("from", turn.get("role", ""))))
        if role is None or not isinstance(turn.get("value", turn.get("content")), str):
            raise ValueError(f"{where}: turn {turn_no} needs 'from' (human/gpt) and a text 'value', got {turn!r}")
        text = turn.get("value", turn.get("content"))
        if role == "user":
            if not template.user_text:
                text = IMAGE_PLACEHOLDER * text.count(IMAGE_PLACEHOLDER)
            elif template.image_first and text.count(IMAGE_PLACEHOLDER) == 1:
                text = (IMAGE_PLACEHOLDER + "\n" + text.replace(IMAGE_PLACEHOLDER, "").strip()).strip()
            add(template.user_prefix + text + template.user_suffix, False)
        else:
            if IMAGE_PLACEHOLDER in text:
                raise ValueError(f"{where}: turn {turn_no}: an answer may not hold an image placeholder")
            if not text.strip():
                raise ValueError(f"{where}: turn {turn_no}: empty answer (nothing to learn but the end of sequence)")
            add(template.assistant_prefix, False)
            add(text + template.assistant_suffix, True)
            if template.add_eos_after_assistant:
                flush()
                ids.append(eos)
                labels.append(eos)
    if add_generation_prompt:
        if not conversation or ROLES.get(str(conversation[-1].get("from", conversation[-1].get("role")))) != "user":
            raise ValueError(f"{where}: a generation prompt needs the conversation to end with the user's turn")
        add(template.assistant_prefix, False)
    flush()
    if placeholders != images:
        raise ValueError(f"{where}: {placeholders} image placeholder(s) {IMAGE_PLACEHOLDER!r} in the text but "
                         f"{images} image(s)")
    if not add_generation_prompt and labels.count(IGNORE) == len(labels):
        raise ValueError(f"{where}: no supervised token (no assistant answer, or an empty one): its loss would be 0")
    return ids, labels


def _check_plain(template: ConversationTemplate, conversation: Sequence[Dict[str, str]], where: str,
                 generation: bool) -> None:
    """A template that drops the question's words (LLaVA's preprocess_plain) takes what LLaVA
    asserts there: one question holding the image, and its answer. A later question would be
    dropped without a word; a prompt whose words are dropped is said once."""
    turns = [ROLES.get(str(t.get("from", t.get("role", "")))) for t in conversation]
    want = ["user"] if generation else ["user", "assistant"]
    if turns != want:
        raise ValueError(f"{where}: template {template.name!r} takes one question and its answer (LLaVA's "
                         f"preprocess_plain), got turns {turns}")
    text = str(conversation[0].get("value", conversation[0].get("content", "")))
    if IMAGE_PLACEHOLDER not in text:
        raise ValueError(f"{where}: template {template.name!r} drops the question's words and keeps its image; "
                         "this question has no image placeholder")
    if generation and text.replace(IMAGE_PLACEHOLDER, "").strip():
        warn(f"template {template.name!r} drops the question's words: prompts are the image alone "
             "(a run trained on captions answers with a caption)")


def stop_ids(template: ConversationTemplate, tokenizer) -> List[int]:
    """The ids that end a generated answer: eos, and for a template that learns no eos (LLaVA's
    `plain`: answers end with "\n") every piece whose text holds its answer suffix, as LAVIS stops
    BLIP-2's captions at the newline's id. A tokenizer may merge the newline into the answer's
    last piece (".\n"): that piece ends the answer too (`cut_answer` keeps what precedes it)."""
    suffix = template.assistant_suffix
    if template.add_eos_after_assistant or not suffix:
        return [tokenizer.eos_id]
    return [tokenizer.eos_id, *_pieces_holding(tokenizer, suffix)]


def answer_stops(template: Optional[ConversationTemplate], tokenizer, model) -> Tuple[List[int], Set[int]]:
    """(the ids that end a generated answer, those cut before rather than kept): the template's
    (`stop_ids`; eos without a template) and those generate would stop at by itself (the model's
    generation_config.json's `eos_token_id`, else the one transformers derives from config.json),
    which chat and evaluation would otherwise replace by passing their own. eos and the model's
    own ids are cut; a template's other stops stay for `cut_answer`."""
    from .models.generation_view import effective_defaults

    own = stop_ids(template, tokenizer) if template else [tokenizer.eos_id]
    eos = effective_defaults(model).get("eos_token_id")
    extra = [int(i) for i in (eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
             if int(i) not in own]
    return own + extra, {tokenizer.eos_id, *extra}


@functools.lru_cache(maxsize=8)
def _pieces_holding(tokenizer, text: str) -> Tuple[int, ...]:
    """Ids whose piece holds `text`: a scan of the vocabulary, done once per tokenizer (evaluation
    asks for every batch)."""
    return tuple(i for i in range(tokenizer.vocab_size) if i != tokenizer.eos_id and text in tokenizer.decode([i]))


def cut_answer(template: ConversationTemplate, text: str) -> str:
    """A generated answer up to where the template's next turn begins (its answer suffix and user
    prefix: `plain`'s newline; " USER:" for a template whose answers end with a space), when answers
    end there rather than with eos, and without a trailing suffix. (Cut at the suffix alone, a space
    suffix gave an answer's first word.)"""
    suffix = template.assistant_suffix
    if template.add_eos_after_assistant or not suffix:
        return text
    turn = (suffix + template.user_prefix).rstrip() or suffix
    if turn in text:
        text = text[:text.index(turn)]
    return text[:-len(suffix)] if text.endswith(suffix) else text


def prompt(template: ConversationTemplate, conversation: Sequence[Dict[str, str]], tokenizer, image_token_id: int,
           image_tokens: int, images: int = 0, where: str = "conversation") -> List[int]:
    """The ids to generate the assistant's next answer from (errors name `where`)."""
    return render(template, conversation, tokenizer, image_token_id, image_tokens, images, where=where,
                  add_generation_prompt=True)[0]


def render_text(template: ConversationTemplate, conversation: Sequence[Dict[str, str]]) -> str:
    """The conversation as the template lays it out, in plain text (image placeholders dropped):
    a language model's pretraining text in the chat format."""
    parts = [template.system + (template.system_suffix if template.system else "")]
    for turn in conversation:
        text = str(turn.get("value", turn.get("content", ""))).replace(IMAGE_PLACEHOLDER, "").strip()
        if ROLES.get(str(turn.get("from", turn.get("role", "")))) == "user":
            text = text if template.user_text else ""
            parts.append(template.user_prefix + text + template.user_suffix)
        else:
            parts.append(template.assistant_prefix + " " + text + template.assistant_suffix)
    return "".join(parts)
