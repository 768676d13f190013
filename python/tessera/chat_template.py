"""A conversation template as the Jinja chat template transformers renders (chat_template.jinja in
a checkpoint), so `processor.apply_chat_template(messages, add_generation_prompt=True)` prompts a
tessera-trained LLaVA with the ids it was trained on: the template's system prompt, roles and
separators, the answers with their end-of-sequence token, and its image rule (one image moved to
the turn's start; `plain` keeps a question's images alone).

tessera tokenizes a conversation in parts (the unlearned text since the last answer, each answer,
eos as an id); transformers tokenizes the rendered string at once. Whether a part after eos takes
a leading "▁" then depends on the tokenizer's whitespace rule, so the writer renders a probe
conversation both ways with the tokenizer itself, which reads a string with special tokens as
transformers reads its saved tokenizer.json, and keeps the spelling that gives the same ids.
llava-hf's own template prompts without LLaVA's system prompt and end-of-sequence tokens."""
from __future__ import annotations

import itertools
import json
from typing import Optional

from .chat import IMAGE_PLACEHOLDER, ConversationTemplate, render

_PROBE = [{"from": "human", "value": "What is shown?\n" + IMAGE_PLACEHOLDER},
          {"from": "gpt", "value": "A shirt, folded."},
          {"from": "human", "value": "And its colour?"}]


def _literal(text: str) -> str:
    return json.dumps(text)  # a Jinja string literal: Python's escapes, ASCII only


def jinja_source(template: ConversationTemplate, answer_space: str = "", after_eos: str = "",
                 after_image: str = "") -> str:
    """The Jinja text of `template`. Messages take transformers' keys and roles (role: user,
    assistant; content) or LLaVA's (from: human, gpt; value), and a string or a list of blocks
    ({"type": "image"}, {"type": "text", "text"}: in order, texts joined by a space). The three
    spellings (`chat_template` picks them) go between the assistant prefix and an answer, before a
    turn that follows an end-of-sequence token, and between an image and the text after it."""
    L, image = _literal, _literal(IMAGE_PLACEHOLDER)
    system = template.system + (template.system_suffix if template.system else "")
    if not template.user_text:
        user = f"{{%- set ns.text = {image} * ns.text.count({image}) -%}}"
    else:
        user = "".join([
            f"{{%- if ns.text.count({image}) == 1 -%}}"
            f"{{%- set ns.text = ({image} + '\\n' + (ns.text.replace({image}, '') | trim)) | trim -%}}"
            "{%- endif -%}" if template.image_first else "",
            f"{{%- set parts = ns.text.split({image}) -%}}{{%- set ns.text = parts[0] -%}}",
            f"{{%- for part in parts[1:] -%}}{{%- set ns.text = ns.text + {image} + ({L(after_image)} if part else '') "
            "+ part -%}{%- endfor -%}",
        ])
    eos = " + eos_token" if template.add_eos_after_assistant else ""
    refusal = f": the {template.name} template takes user and assistant turns (its system prompt is fixed)"
    return "".join([
        "{%- set ns = namespace(text='', after_eos=false) -%}",
        f"{{{{- {L(system)} -}}}}",
        "{%- for message in messages -%}",
        "{%- set role = message['role'] if 'role' in message else message['from'] -%}",
        "{%- set content = message['content'] if 'content' in message else message['value'] -%}",
        "{%- if content is string -%}{%- set ns.text = content -%}",
        "{%- else -%}{%- set ns.text = '' -%}{%- for block in content -%}",
        f"{{%- if block['type'] == 'image' -%}}{{%- set ns.text = ns.text + {image} -%}}",
        "{%- elif block['type'] == 'text' -%}",
        f"{{%- set ns.text = ns.text + (' ' if ns.text and not ns.text.endswith({image}) else '') + block['text'] -%}}",
        "{%- endif -%}{%- endfor -%}{%- endif -%}",
        f"{{%- if ns.after_eos -%}}{{{{- {L(after_eos)} -}}}}{{%- endif -%}}",
        "{%- if role in ('user', 'human') -%}",
        user,
        f"{{{{- {L(template.user_prefix)} + ns.text + {L(template.user_suffix)} -}}}}",
        "{%- set ns.after_eos = false -%}",
        "{%- elif role in ('assistant', 'gpt') -%}",
        f"{{%- if {image} in ns.text -%}}{{{{- raise_exception('an answer may not hold an image') -}}}}{{%- endif -%}}",
        f"{{{{- {L(template.assistant_prefix + answer_space)} + ns.text + {L(template.assistant_suffix)}{eos} -}}}}",
        f"{{%- set ns.after_eos = {'true' if template.add_eos_after_assistant else 'false'} -%}}",
        "{%- else -%}",
        f"{{{{- raise_exception('role ' + role + {L(refusal)}) -}}}}",
        "{%- endif -%}{%- endfor -%}",
        f"{{%- if add_generation_prompt -%}}{{{{- {L(template.assistant_prefix)} -}}}}{{%- endif -%}}",
    ])


def _rendered(source: str, messages, tokenizer, generation: bool) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source).render(messages=messages, add_generation_prompt=generation,
                                          eos_token=tokenizer.id_to_piece(tokenizer.eos_id))


def chat_template(template: ConversationTemplate, tokenizer, image_token_id: int) -> Optional[str]:
    """The Jinja chat template under which transformers, tokenizing the rendered prompt with
    `tokenizer`'s saved files, gives the ids tessera's `render` gives (probed with `tokenizer`);
    None when no spelling does (a template whose answers end without eos before another turn)."""
    # plain takes one question of images alone, and its answer
    turns, generation = (_PROBE, True) if template.user_text else (
        [{"from": "human", "value": IMAGE_PLACEHOLDER}, _PROBE[1]], False)
    want = render(template, turns, tokenizer, image_token_id, 1, images=1, add_generation_prompt=generation)[0]
    for spelling in itertools.product(("", " "), repeat=3):
        source = jinja_source(template, *spelling)
        text = _rendered(source, turns, tokenizer, generation)
        if [tokenizer.bos_id] + tokenizer.encode(text, add_bos=False) == want:
            return source
    return None
