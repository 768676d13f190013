"""A conversation template as the Jinja chat template transformers renders (chat_template.jinja in
a checkpoint), so `processor.apply_chat_template(messages, add_generation_prompt=True)` prompts a
tessera-trained LLaVA with the ids it was trained on: the template's system prompt, roles and
separators, the answers with their end-of-sequence token, and its image rule (one image moved to
the turn's start; `plain` keeps a question's images alone). llava-hf's own template prompts
without LLaVA's system prompt and end-of-sequence tokens.

tessera tokenizes a conversation in parts (LLaVA's chunks between images, each answer apart, eos as
an id); transformers tokenizes the rendered string at once. A part's leading "▁" then comes from
the tokenizer's whitespace rule: SentencePiece's dummy prefix puts one before every part, a
transformers 5 tokenizer.json's Metaspace (prepend_scheme "first") only at the text's start and
before a part that does not start with a space. The template spells a space at each of the three
boundaries (an image and the text after it, the assistant prefix and an answer, an answer and the
next turn) by one of three rules; the writer renders a set of probe conversations both ways with the
tokenizer itself (which reads a string with special tokens as transformers reads its saved files)
and keeps the rules under which every probe gives `render`'s ids, or none when no rule does: a
boundary inside a word's merges (an assistant prefix that ends with a space) has no spelling."""
from __future__ import annotations

import functools
import itertools
import json
from typing import Dict, List, Optional, Tuple

from .chat import IMAGE_PLACEHOLDER, ConversationTemplate, render

IMG = IMAGE_PLACEHOLDER
#: How a space is spelled before a part: never, always, or unless the part starts with one
#: (Metaspace's rule).
RULES = ("never", "always", "unless")
_Turns = List[Dict[str, str]]
# Conversations whose ids decide the rules: images at a turn's start, middle and end, adjacent and
# several; text after an image that starts with a letter, a space, a newline; answers that start
# with a letter, a space, a digit, a newline, CJK; a turn after an answer with and without an image.
_PROBES: List[Tuple[_Turns, bool]] = [
    ([{"from": "human", "value": f"What is shown?\n{IMG}"}, {"from": "gpt", "value": "A shirt, folded."},
      {"from": "human", "value": "And its colour?"}], True),
    ([{"from": "human", "value": f"{IMG}\nDescribe it."}, {"from": "gpt", "value": " Two spaces."},
      {"from": "human", "value": f"Compare {IMG} and {IMG}{IMG} now"}, {"from": "gpt", "value": "1984 items\nhere"},
      {"from": "human", "value": f"Image 1: {IMG}  two spaces"}], True),
    ([{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "\nNew line first."}], False),
    ([{"from": "human", "value": f"x{IMG}y"}, {"from": "gpt", "value": "日本 🙂"},
      {"from": "human", "value": f"\tTabbed {IMG}"}], True),
]
_PLAIN_PROBES: List[Tuple[_Turns, bool]] = [  # plain: one question of images alone, and its answer
    ([{"from": "human", "value": IMG}, {"from": "gpt", "value": "A shirt."}], False),
    ([{"from": "human", "value": IMG}, {"from": "gpt", "value": " spaced"}], False),
    ([{"from": "human", "value": IMG + IMG}, {"from": "gpt", "value": "1984"}], False),
    ([{"from": "human", "value": IMG}], True),
]


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a Jinja string literal (ASCII escapes split emoji in two)


def _space(rule: str, text: str) -> str:
    """A Jinja expression: the space `rule` puts before the Jinja expression `text`."""
    return {"never": "''", "always": "' '",
            "unless": f"('' if ({text})[:1] in (' ', {_literal(chr(0x2581))}) else ' ')"}[rule]


def jinja_source(template: ConversationTemplate, answer: str = "never", after_answer: str = "never",
                 after_image: str = "never") -> str:
    """The Jinja text of `template`. Messages take transformers' keys and roles (role: user,
    assistant; content) or LLaVA's (from: human, gpt; value), and a string or a list of blocks
    ({"type": "image"}, {"type": "text", "text"}: in order, texts joined by a space). It follows
    `render`: the unlearned text since the last answer is one run, cut at its images; each answer
    stands apart. The three rules (`RULES`; `chat_template` picks them) spell the space before an
    answer, before the run that follows an answer (after its eos, if any), and before a run's text
    after an image."""
    L, image = _literal, _literal(IMG)
    system = template.system + (template.system_suffix if template.system else "")
    if not template.user_text:
        user = f"{{%- set ns.text = {image} * ns.text.count({image}) -%}}"
    elif template.image_first:
        user = (f"{{%- if ns.text.count({image}) == 1 -%}}"
                f"{{%- set ns.text = ({image} + '\\n' + (ns.text.replace({image}, '') | trim)) | trim -%}}"
                "{%- endif -%}")
    else:
        user = ""
    flush = "".join([  # the run into the output, a space before each image's text as the rule says
        f"{{%- set parts = ns.run.split({image}) -%}}{{%- set ns.out = ns.out + parts[0] -%}}",
        f"{{%- for part in parts[1:] -%}}{{%- set ns.out = ns.out + {image} + "
        f"({_space(after_image, 'part')} if part else '') + part -%}}{{%- endfor -%}}",
        "{%- set ns.run = '' -%}",
    ])
    eos = " + eos_token" if template.add_eos_after_assistant else ""
    refusal = f": the {template.name} template takes user and assistant turns (its system prompt is fixed)"
    return "".join([
        f"{{%- set ns = namespace(text='', run={L(system)}, out='', after_answer=false) -%}}",
        "{%- for message in messages -%}",
        "{%- set role = message['role'] if 'role' in message else message['from'] -%}",
        "{%- set content = message['content'] if 'content' in message else message['value'] -%}",
        "{%- if content is string -%}{%- set ns.text = content -%}",
        "{%- else -%}{%- set ns.text = '' -%}{%- for block in content -%}",
        f"{{%- if block['type'] == 'image' -%}}{{%- set ns.text = ns.text + {image} -%}}",
        "{%- elif block['type'] == 'text' -%}",
        f"{{%- set ns.text = ns.text + (' ' if ns.text and not ns.text.endswith({image}) else '') + block['text'] -%}}",
        "{%- endif -%}{%- endfor -%}{%- endif -%}",
        "{%- if role in ('user', 'human') -%}",
        user,
        f"{{%- set turn = {L(template.user_prefix)} + ns.text + {L(template.user_suffix)} -%}}",
        f"{{%- set ns.run = ns.run + ({_space(after_answer, 'turn')} if ns.after_answer else '') + turn -%}}",
        "{%- set ns.after_answer = false -%}",
        "{%- elif role in ('assistant', 'gpt') -%}",
        f"{{%- if {image} in ns.text -%}}{{{{- raise_exception('an answer may not hold an image') -}}}}{{%- endif -%}}",
        f"{{%- set ns.run = ns.run + {L(template.assistant_prefix)} -%}}",
        flush,
        f"{{%- set turn = ns.text + {L(template.assistant_suffix)} -%}}",
        f"{{%- set ns.out = ns.out + {_space(answer, 'turn')} + turn{eos} -%}}",
        "{%- set ns.after_answer = true -%}",
        "{%- else -%}",
        f"{{{{- raise_exception('role ' + role + {L(refusal)}) -}}}}",
        "{%- endif -%}{%- endfor -%}",
        f"{{%- if add_generation_prompt -%}}{{%- set ns.run = ns.run + {L(template.assistant_prefix)} -%}}"
        "{%- endif -%}",
        flush,
        "{{- ns.out -}}",
    ])


@functools.lru_cache(maxsize=1)
def _environment():
    """A sandboxed Jinja environment set up as transformers renders chat templates."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env


@functools.lru_cache(maxsize=64)  # every candidate of a search (27), so the next search finds them all
def _compiled(source: str):
    """Compiling is most of a render's time, and chat_template renders each candidate once per probe."""
    return _environment().from_string(source)


def _rendered(source: str, messages, tokenizer, generation: bool) -> str:
    return _compiled(source).render(messages=messages, add_generation_prompt=generation,
                                    eos_token=tokenizer.id_to_piece(tokenizer.eos_id))


def chat_template(template: ConversationTemplate, tokenizer, image_token_id: int) -> Optional[str]:
    """The Jinja chat template under which transformers, tokenizing the rendered conversation with
    `tokenizer`'s saved files, gives the ids tessera's `render` gives on every probe conversation
    (checked with `tokenizer`); None when no rules do."""
    probes = []
    for turns, generation in (_PROBES if template.user_text else _PLAIN_PROBES):
        images = sum(t["value"].count(IMG) for t in turns if t["from"] == "human")
        probes.append((turns, generation, render(template, turns, tokenizer, image_token_id, 1, images=images,
                                                 add_generation_prompt=generation)[0]))
    for rules in itertools.product(RULES, repeat=3):
        source = jinja_source(template, *rules)
        if all([tokenizer.bos_id] + tokenizer.encode(_rendered(source, turns, tokenizer, generation), add_bos=False)
               == want for turns, generation, want in probes):
            return source
    return None
