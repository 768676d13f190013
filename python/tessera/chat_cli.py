"""`tessera chat RUN --image x.png -q "What is this item?"`: a LLaVA run answers about an image, the answer
printed as it is generated. Without a question, questions are read from stdin (one per line)
and the conversation continues turn by turn about the same images."""
from __future__ import annotations

import sys
from typing import Dict, List

import torch

from .chat import run_recipe


def _recipe_data(folder: str) -> Dict:
    data = run_recipe(folder).get("data", {})
    return data if isinstance(data, dict) else {}


def _stdin_lines():
    """Questions typed on stdin, stripped; a line that is not UTF-8 comes as its decoding error,
    reported by the loop (as a text stream, one such line ended the conversation)."""
    for raw in sys.stdin.buffer:
        try:
            yield raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            yield e


def _ask(conversation: List[Dict], question: str, args, model, template, tokenizer, turn: int) -> List[int]:
    """The prompt's ids with `question` added to the conversation (the images go with its first
    question); a question the prompt refuses is taken back out, and the ValueError raised."""
    from .chat import prompt

    if not conversation and args.image and "<image>" not in question:
        question = "<image>\n" * len(args.image) + question
    conversation.append({"from": "human", "value": question})
    try:
        return prompt(template, conversation, tokenizer, model.config["image_token_index"],
                      model.config["image_seq_length"], images=len(args.image), where=f"question {turn}")
    except ValueError:
        conversation.pop()
        raise


def run_chat(args) -> int:
    from .chat import answer_stops, cut_answer, load_template, run_template
    from .models.generation_view import effective_defaults
    from .factory import from_pretrained
    from .text import SentencePieceTokenizer
    from .train.checkpoint import resolve_checkpoint
    from .train.conversation_data import load_pixels, run_transform

    for flag, value in (("-q/--question", args.question), ("--template", args.template), ("--tokenizer", args.tokenizer)):
        if value is not None and not value.strip():  # an empty value was ignored or answered with nothing
            raise ValueError(f"{flag}: empty")
    folder = resolve_checkpoint(args.checkpoint, "chat checkpoint")
    data = _recipe_data(folder)
    tokenizer_path = args.tokenizer or data.get("tokenizer")
    if not tokenizer_path:
        raise ValueError(f"{folder}: no recipe.json naming the tokenizer; pass --tokenizer")
    tokenizer = SentencePieceTokenizer(tokenizer_path, special_tokens=["<image>"])
    template = load_template(args.template or run_template(folder) or "v1")
    model = from_pretrained(folder).eval()
    if model.model_type != "llava":
        raise ValueError(f"{folder}: chat needs a LLaVA model, got model_type {model.model_type!r}")
    rows = model.config["text_config"]["vocab_size"]
    if tokenizer.vocab_size > rows:  # its ids would index past the embedding table at the first question
        raise ValueError(f"tokenizer {tokenizer_path}: {tokenizer.vocab_size} tokens, but the model {folder} embeds "
                         f"{rows}: is it the tokenizer this model was trained with?")
    size = model.config["vision_config"]["image_size"]
    pixels = load_pixels(args.image, run_transform(folder, size))  # as trained
    generator = torch.Generator().manual_seed(args.seed)
    interactive = args.question is None
    questions = [args.question] if not interactive else _stdin_lines()
    conversation: List[Dict[str, str]] = []
    special = set(tokenizer.special_tokens.values())  # <image>: never text of an answer
    stops, ends = answer_stops(template, tokenizer, model)  # eos, `plain`'s newline, the run's file's
    if args.max_new_tokens is None:  # the model's generation settings (its file's, else config.json's), else 64
        args.max_new_tokens = int(effective_defaults(model).get("max_new_tokens") or 64)
    for turn, question in enumerate(questions, 1):
        if isinstance(question, UnicodeDecodeError):
            print(f"question {turn}: not UTF-8 text ({question.reason}); ask again", file=sys.stderr)
            continue
        if not question:
            continue
        try:
            ids = _ask(conversation, question, args, model, template, tokenizer, turn)
        except ValueError as e:  # one bad question does not end an interactive conversation
            if not interactive:
                raise
            print(f"{e}; ask again", file=sys.stderr)
            continue
        room = model.config["text_config"]["max_position_embeddings"] - len(ids)
        if room < 1 and interactive and len(conversation) > 1:  # it goes on: a new one, from this question
            print(f"the conversation ({len(ids)} tokens) fills the model's context; a new one starts with "
                  "this question", file=sys.stderr)
            conversation.clear()
            ids = _ask(conversation, question, args, model, template, tokenizer, turn)
            room = model.config["text_config"]["max_position_embeddings"] - len(ids)
        if room < 1:
            message = f"the conversation ({len(ids)} tokens) fills the model's context"
            if not interactive:
                raise ValueError(f"{message}; start a new one")
            print(f"{message}; ask a shorter question", file=sys.stderr)
            conversation.clear()
            continue
        new: List[int] = []
        printed = ""
        for step in model.stream(torch.tensor([ids]), pixel_values=pixels, generator=generator,
                                 max_new_tokens=min(args.max_new_tokens, room), do_sample=args.temperature > 0,
                                 temperature=args.temperature or 1.0, eos_token_id=stops):
            token = int(step[0])
            if token in ends:
                break
            if token >= tokenizer.vocab_size or token in special:  # a padded row without text, or <image>
                continue
            new.append(token)
            # Decode the whole answer (pieces join right), up to a template's answer suffix (plain's
            # newline, possibly inside the last piece); hold back a partial UTF-8 character.
            text = cut_answer(template, tokenizer.decode(new))
            if text.startswith(printed) and not text.endswith("\ufffd"):
                print(text[len(printed):], end="", flush=True)
                printed = text
            if token in stops:
                break
        answer = cut_answer(template, tokenizer.decode(new))
        print(answer[len(printed):] if answer.startswith(printed) else "", flush=True)
        if answer.strip():
            conversation.append({"from": "gpt", "value": answer.strip()})
        else:  # nothing to carry into the next turn: forget the unanswered question
            conversation.pop()
            print("(no answer)", file=sys.stderr)
    return 0
