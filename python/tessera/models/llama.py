"""LLaMA (Touvron et al. 2023) over the C++ modules in csrc/tessera/models/llama, with the
interface of transformers' LlamaForCausalLM.

    lm = tessera.from_pretrained("path/to/llama")            # config.json + model.safetensors
    out = lm(input_ids, labels=input_ids)                     # out.loss, out.logits
    out.loss_sum, out.num_tokens                              # the same loss as (sum, count)
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from .. import _C
from ..cpp_module import node_class, node_methods
from ..opaque_to_compile import opaque_to_compile
from ..registry import register_model
from . import own_processors, stop_rules, token_rules
from .family import FamilyModel
from .generation_output import FLAGS as OUTPUT_FLAG_KEYS
from .generation_output import apply_flags, compute_transition_scores, generation_output, pop_flags
from .generation_view import effective_defaults, stops_in_vocabulary
from .generation_settings import (GENERATION_FILE, SAMPLING_ONLY, UNAPPLIED, GenerationConfig, check_length,
                                  generation_config, id_list, no_op_arguments, passed_config)
from .loss_kwargs import over_items
from .outputs import ModelOutput, make_output
from .._warn import warn
from ..schema import flag

#: Python classes of the mirrored C++ nodes (wrap policies: FSDP2, activation checkpointing).
LlamaDecoderLayer = node_class("LlamaDecoderLayer", layer=True)
LlamaAttention = node_class("LlamaAttention")


class _Unset:
    """An argument not passed (generate's defaults): it takes the model's generation_config.json
    value; None, passed, keeps its own meaning."""

    def __repr__(self) -> str:
        return "unset"


UNSET = _Unset()


class CausalLMOutputWithPast(ModelOutput):
    """loss, logits, hidden_states, loss_sum, num_tokens."""
    fields = ("loss", "logits", "past_key_values", "hidden_states", "attentions", "loss_sum", "num_tokens",
              "image_hidden_states")


def _check(**tensors) -> None:
    for name, value in tensors.items():
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(value).__name__}")


@node_methods("LlamaForCausalLM")
class LlamaForCausalLMCall:
    """The LM's forward: LlamaForCausalLM's, and the `language_model`'s of LLaVA and BLIP-2."""

    @opaque_to_compile
    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, inputs_embeds: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, output_hidden_states: bool = False,
                logits_to_keep: int = 0, num_items_in_batch=None) -> CausalLMOutputWithPast:
        _check(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
               inputs_embeds=inputs_embeds, labels=labels)
        self._sync_parameters()
        out = make_output(self._cpp.forward(input_ids, attention_mask, position_ids, inputs_embeds, labels,
                                            flag(output_hidden_states, "output_hidden_states"), int(logits_to_keep)))
        return over_items(out, num_items_in_batch)


@register_model
class LlamaForCausalLM(LlamaForCausalLMCall, FamilyModel):
    """A LLaMA language model. `labels` (usually the input ids, -100 where nothing is to be
    learned) give the next-token loss: `loss` (mean), and `loss_sum` / `num_tokens` for
    token-weighted accumulation. With `tie_word_embeddings` the head reads the embedding matrix
    and checkpoints hold it once."""

    model_type = "llama"
    architecture = "LlamaForCausalLM"
    input_embeddings, output_embeddings = "model.embed_tokens", "lm_head"
    accepts_loss_kwargs = True  # transformers' Trainer passes num_items_in_batch (models/loss_kwargs.py)
    loss_type = "ForCausalLM"  # transformers' name: Trainer counts num_items_in_batch over the shifted labels
    _family, _cpp_class = _C.llama, "LlamaForCausalLM"

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if self.config.get("tie_word_embeddings") and "lm_head.weight" in state_dict:
            state_dict = dict(state_dict)
            head, emb = state_dict.pop("lm_head.weight"), state_dict.get("model.embed_tokens.weight")
            if emb is not None and not torch.equal(head, emb):
                raise ValueError("tie_word_embeddings is true but the checkpoint's lm_head.weight differs from "
                                 "model.embed_tokens.weight; set tie_word_embeddings to false to load both")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ---- generation -----------------------------------------------------------------------------
    generation_defaults: Optional[dict] = None  # the folder's generation_config.json, as transformers reads it
    config_generation: Optional[dict] = None  # without that file, what transformers derives from config.json

    def _generation(self, kwargs, caller: str, generator=None, prompt_length: int = 0):
        """(the C++ options of a generate/stream call, its num_return_sequences, and for generate
        its streamer and output flags): its arguments over the model's generation_config.json over
        GenerationConfig's defaults (an argument left at None takes the default, as in
        transformers). transformers' `max_length` counts the prompt (`max_new_tokens`, when given
        too, wins as there)."""
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__} (seed one: "
                            f"torch.Generator().manual_seed(n))")
        if _own_hooks(self):
            raise ValueError(f"{caller}(): the model has forward hooks of its own, which generation cannot run (it "
                             "decodes in C++ without calling the model's forward); hook its decoder layers, which "
                             "generation calls, or call the model in a loop")
        own_defaults = effective_defaults(self)  # the model's generation config, or its config's
        streamer, flags = (kwargs.pop("streamer", None), pop_flags(kwargs, own_defaults)
                           ) if caller == "generate" else (None, {})  # a stream refuses them by name
        given = no_op_arguments({k: v for k, v in kwargs.items() if v is not UNSET})
        own = {k: given.pop(k) for k in ("logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn")
               if k in given}
        tokenizer = given.pop("tokenizer", None)  # for stop_strings, as in transformers
        defaults = {k: v for k, v in own_defaults.items() if k not in OUTPUT_FLAG_KEYS}  # what generate returns: its caller's (pop_flags)
        if caller == "stream":  # a stream decodes one token at a time: a file's beam settings do not apply
            for key in ("num_beams", "length_penalty", "early_stopping"):
                defaults.pop(key, None)
        # transformers' generation_config= argument: its set fields over the model's defaults
        passed = given.pop("generation_config", None)
        passed = passed_config(passed, caller) if passed is not None else {}
        defaults = {**defaults, **passed}
        sampling = given.get("do_sample", defaults.get("do_sample", False))
        blocked = [k for k in defaults if k in UNAPPLIED and (sampling or k not in SAMPLING_ONLY)]
        if blocked:
            source = ("the generation_config passed to it" if any(k in passed for k in blocked)
                      else f"the model's generation config ({_settings_file(self)})")
            raise ValueError(f"{caller}(): {source} sets {', '.join(f'{k}={defaults[k]!r}' for k in blocked)}, which "
                             "transformers applies and tessera's generate does not have; set "
                             "model.generation_config.<name> = None to generate without it")
        defaults = {k: v for k, v in defaults.items() if k not in UNAPPLIED}
        returns = given.pop("num_return_sequences", defaults.pop("num_return_sequences", 1))
        settings = {**defaults, **given}
        max_length = settings.pop("max_length", None)
        if max_length is not None and settings.get("max_new_tokens") is None:  # transformers' precedence
            check_length("max_length", max_length, f"{caller}(): ")
            if max_length <= prompt_length:
                source = "" if "max_length" in given else f" ({_settings_file(self)})"
                raise ValueError(f"{caller}(): max_length {max_length}{source} counts the prompt, as in transformers, "
                                 f"and the prompt has {prompt_length} tokens: raise it, or give max_new_tokens")
            settings["max_new_tokens"] = max_length - prompt_length
            context = _context_length(self.config)
            if "max_length" not in given and context is not None and max_length > context + 1:
                # A file's max_length past the context (transformers would decode past it): every
                # default call failed. Decoding stops at the context instead, said once per call.
                warn(f"{_settings_file(self)}: max_length {max_length} exceeds the model's context "
                     f"(max_position_embeddings {context}): decoding stops there")
                settings["max_new_tokens"] = max(context + 1 - prompt_length, 0)
        min_length = settings.pop("min_length", None)
        if min_length is not None:  # counts the prompt; with min_new_tokens both hold, as in transformers
            check_length("min_length", min_length, f"{caller}(): ")
            settings["min_new_tokens"] = max(settings.get("min_new_tokens") or 0, min_length - prompt_length)
        config = generation_config(settings, caller)
        _check_returns(returns, config, caller)
        o = _C.llama.GenerationOptions()
        o.max_new_tokens, o.do_sample, o.use_cache = config.max_new_tokens, config.do_sample, config.use_cache
        o.temperature, o.top_k, o.top_p = config.temperature, config.top_k or 0, config.top_p
        o.min_p, o.typical_p = config.min_p or 0.0, 1.0 if config.typical_p is None else config.typical_p
        o.epsilon_cutoff, o.eta_cutoff = config.epsilon_cutoff or 0.0, config.eta_cutoff or 0.0
        o.repetition_penalty, o.no_repeat_ngram_size = config.repetition_penalty, config.no_repeat_ngram_size or 0
        o.num_beams, o.length_penalty = config.num_beams, config.length_penalty
        o.early_stopping, o.min_new_tokens = config.early_stopping or False, config.min_new_tokens
        token_rules.apply(o, config)
        if config.num_beams > 1:  # the best beams, where sampling repeats the prompt rows
            o.num_return_sequences, returns = returns, 1
        _stop_and_pad_ids(self, o, config, given)
        # Layers run straight from C++ unless Python must see them: hooks, or a tree edited in
        # Python (a wrapper around a layer, FSDP's, a layer list changed), which the layer
        # list's caller runs or refuses.
        layers = [m for m in self.modules() if type(m).__name__ == "LlamaDecoderLayer"]
        o.direct_layer_calls = not self._edited_in_python() and all(
            not layer._forward_hooks and not layer._forward_pre_hooks for layer in layers)
        self._sync_all()
        apply_flags(flags, o, caller)
        # after the record, which stopping criteria read; max_time's clock starts here
        own_processors.attach(o, own, caller, stop_rules.criteria(config, tokenizer, caller))
        return o, returns, (streamer, flags)

    @torch.no_grad()
    def generate(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                 max_new_tokens=UNSET, do_sample=UNSET, temperature=UNSET, top_k=UNSET, top_p=UNSET,
                 repetition_penalty=UNSET, eos_token_id=UNSET, pad_token_id=UNSET,
                 generator: Optional[torch.Generator] = None, use_cache=UNSET,
                 inputs_embeds: Optional[torch.Tensor] = None, **beam) -> torch.Tensor:
        """transformers' generate for decoder-only models: the prompt followed by the new ids
        [B, P + n] (only the new ids [B, n] from `inputs_embeds` alone, as transformers). Prompts
        of different lengths are left-padded with `attention_mask` marking the real tokens;
        sampling draws from `generator` (reproducible with a seeded one); rows that produced a
        stop id are filled with the pad id until every row has stopped. `num_beams`
        > 1 runs transformers' beam search (with `length_penalty`, `early_stopping`); `min_new_tokens`
        holds the stop ids back in every mode. An argument not passed takes the value of the
        model's generation_config.json, else GenerationConfig's default (max_new_tokens 20, greedy,
        top_k 50); one passed is used as given, None as transformers' "unset" (top_k None or 0: no
        top-k filter; eos_token_id None: no stop ids; pad_token_id None: the first stop id; the
        others their defaults)."""
        _check(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)
        o, n, (streamer, flags) = self._generation(dict(
            max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
            use_cache=use_cache, **beam), "generate", generator,
            _prompt_length(input_ids, inputs_embeds, "generate"))
        ids = _stand_in_ids(input_ids, inputs_embeds, attention_mask, o, "generate")
        attention_mask = prompt_mask(self, input_ids, attention_mask, o)
        with named_allocation("generate", ids.shape[0] * n, o, ids.shape[1]):
            ids, attention_mask, inputs_embeds = (repeat_rows(t, n) for t in (ids, attention_mask, inputs_embeds))
            self._sync_all()  # generation runs every submodule in C++, past the Python forwards
            out = run_generation(lambda: self._cpp.generate(ids, attention_mask, o, generator, inputs_embeds),
                                 lambda: self._cpp.stream(ids, attention_mask, o, generator, inputs_embeds),
                                 streamer, ids, o, shown=ids if input_ids is not None else ids[:, :0])

        # from inputs_embeds alone, transformers returns the new ids only
        return generation_output(out if input_ids is not None else out[:, ids.shape[1]:], o, flags)

    def compute_transition_scores(self, sequences: torch.Tensor, scores, beam_indices=None,
                                  normalize_logits: bool = False) -> torch.Tensor:
        """transformers' GenerationMixin.compute_transition_scores (greedy, sampled and beam outputs)."""
        return compute_transition_scores(sequences, scores, beam_indices, normalize_logits)

    def stream(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None, **kwargs):
        """Like generate, one step at a time: yields each step's new ids [B] as they are made."""
        _check(input_ids=input_ids, attention_mask=attention_mask)
        generator, embeds = kwargs.pop("generator", None), kwargs.pop("inputs_embeds", None)
        o, n, _ = self._generation(kwargs, "stream", generator, _prompt_length(input_ids, embeds, "stream"))
        ids = _stand_in_ids(input_ids, embeds, attention_mask, o, "stream")
        attention_mask = prompt_mask(self, input_ids, attention_mask, o)
        with named_allocation("stream", ids.shape[0] * n, o, ids.shape[1]):
            ids, attention_mask, embeds = (repeat_rows(t, n) for t in (ids, attention_mask, embeds))
            self._sync_all()
            yield from drain(self._cpp.stream(ids, attention_mask, o, generator, embeds))


def _check_returns(n, config: GenerationConfig, caller: str) -> None:
    """transformers' num_return_sequences: n samples per prompt, or the best n beams of a beam
    search; greedy decoding would return n equal rows (transformers refuses it)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{caller}(): num_return_sequences must be an int >= 1, got {n!r}")
    if n > config.num_beams > 1:
        raise ValueError(f"{caller}(): num_return_sequences {n} must be <= num_beams {config.num_beams} (the best "
                         "finished beams are returned; transformers refuses it too)")
    if n > 1 and not config.do_sample and config.num_beams == 1:
        raise ValueError(f"{caller}(): num_return_sequences={n} needs do_sample=True or num_beams >= {n} (greedy "
                         "decoding gives one answer per prompt; transformers refuses it too)")


def _context_length(config) -> Optional[int]:
    """The language model's context (LLaVA and BLIP-2 keep its config as text_config); None with
    dynamic RoPE, which stretches it."""
    text = config.get("text_config") or config
    rope = text.get("rope_scaling") or text.get("rope_parameters") or {}  # the first wins, as in transformers
    if rope.get("rope_type", rope.get("type")) == "dynamic":
        return None
    return text.get("max_position_embeddings")


def _prompt_length(input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor], caller: str) -> int:
    """Positions of the prompt, its ranks checked first: ids [batch, prompt], embeddings
    [batch, prompt, hidden]; one of them is needed."""
    for name, value, rank in (("input_ids", input_ids, 2), ("inputs_embeds", inputs_embeds, 3)):
        if value is not None and (not isinstance(value, torch.Tensor) or value.dim() != rank):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{caller}(): {name} must be a tensor of {rank} dimensions, got {shape}")
    if input_ids is None and inputs_embeds is None:
        raise ValueError(f"{caller}(): give the prompt as input_ids [batch, prompt] or inputs_embeds "
                         "[batch, prompt, hidden]")
    return (input_ids if input_ids is not None else inputs_embeds).shape[1]


def _stop_and_pad_ids(model, o, config, given: dict) -> None:
    """The stop and pad ids: the call's, else the model's generation config's, else the model
    config's (C++). transformers reads an argument passed as None as "unset" over the model's
    generation config: eos_token_id=None means no stop ids (and no stop-id criterion, so rows the
    caller's criteria end are not padded), pad_token_id=None the first stop id, or no pad. A
    generation_config.json without them reads the same: transformers takes the config's ids only
    when the folder has no such file (GenerationConfig.from_model_config). tessera fell back to the
    model config's ids in both cases, and stopped where transformers ran on."""
    from_file = getattr(model, "generation_defaults", None) is not None
    if config.eos_token_id is not None:
        o.eos_token_ids = _in_vocabulary(model, id_list(config.eos_token_id))
    elif "eos_token_id" in given or from_file:
        o.eos_token_ids, o.pad_rows_without_stop_ids = [], False
    if config.pad_token_id is not None:
        o.pad_token_id = config.pad_token_id
    elif "pad_token_id" in given or from_file:
        stops = o.eos_token_ids if o.eos_token_ids is not None else _config_stop_ids(model)
        o.pad_token_id = stops[0] if stops else -1


def _settings_file(model) -> str:
    """Where the model's generation settings come from, for messages."""
    return GENERATION_FILE if getattr(model, "generation_defaults", None) is not None else "config.json"


def _in_vocabulary(model, stops: list) -> list:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return stops_in_vocabulary(stops, getattr(embeddings, "num_embeddings", None))


def _config_stop_ids(model) -> list:
    """The model config's stop ids (its text config's), which C++ takes when the options hold none."""
    return id_list(model.config.get("text_config", model.config).get("eos_token_id"))


def _stand_in_ids(input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor],
                  attention_mask: Optional[torch.Tensor], options, caller: str) -> torch.Tensor:
    """The prompt's ids for C++, which takes the ids the embeddings stand for. transformers also
    generates from inputs_embeds alone: its prompt ids are then empty, so it returns only the new
    ids and its repetition penalty reads only them. Zeros stand in for the missing ids (generate
    drops them from its result), exact unless a repetition penalty or n-gram ban would read them."""
    if input_ids is not None:
        return input_ids
    batch, prompt = inputs_embeds.shape[:2]
    if batch == 0 or prompt == 0:  # C++'s message would name the stand-in input_ids
        raise ValueError(f"{caller}(): inputs_embeds {tuple(inputs_embeds.shape)} has "
                         f"{'no rows' if batch == 0 else 'an empty prompt'}: generation continues a prompt of at "
                         "least one position")
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, prompt):
        raise ValueError(f"{caller}(): attention_mask must be [{batch}, {prompt}] like inputs_embeds' first two "
                         f"dimensions, got {tuple(attention_mask.shape)}")
    read = [f"{name} {getattr(options, name)} (off: {off})" for name, off in (("repetition_penalty", 1.0),
                                                                             ("no_repeat_ngram_size", 0))
            if getattr(options, name) != off] + token_rules.reads_prompt_ids(options)
    if read:
        one = len(read) == 1
        raise ValueError(f"{caller}(): {', '.join(read)} read{'s' if one else ''} the prompt's ids, and "
                         "inputs_embeds came without them: pass the input_ids the embeddings stand for, or "
                         f"{'its' if one else 'their'} off value{'' if one else 's'} (the call's settings, or "
                         f"{GENERATION_FILE}'s)")
    options._stand_in = prompt  # the caller's hooks see the new ids only, as transformers'
    return torch.zeros((batch, prompt), dtype=torch.long, device=inputs_embeds.device)


def prompt_mask(model, input_ids: Optional[torch.Tensor], attention_mask: Optional[torch.Tensor],
                options) -> Optional[torch.Tensor]:
    """transformers' mask for a prompt given without one: where the pad id (the call's, else the
    model's generation config's: generation_config.json's, else without that file the config's)
    occurs and is no stop id, those positions are padding; else every position is real.
    Generation attended to a left-padded batch's pads, silently."""
    if attention_mask is not None or input_ids is None:
        return attention_mask
    pad = options.pad_token_id
    if pad < 0:
        return None
    stops = options.eos_token_ids if options.eos_token_ids is not None else _config_stop_ids(model)
    if pad in stops or not bool((input_ids == pad).any()):
        return None
    return (input_ids != pad).long()


def repeat_rows(t: Optional[torch.Tensor], n: int) -> Optional[torch.Tensor]:
    """Each row n times in a row (transformers' expansion for num_return_sequences)."""
    return t if t is None or n == 1 else t.repeat_interleave(n, dim=0)


def _own_hooks(module) -> list:
    """Forward hooks put on the model itself, but not torch.distributed's (FSDP2's root hooks
    unshard around a forward; generation gathers what it needs without them)."""
    hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
    return [h for h in hooks if not getattr(getattr(h, "__func__", h), "__module__", "").startswith("torch.distributed")]


@contextlib.contextmanager
def named_allocation(caller: str, rows: int, options, prompt: int):
    """An allocation failure while generating (the KV cache of every row and beam, the logits) named
    with the sizes that made it, which the allocator's message does not: the same exception type,
    its message kept (accelerate's batch-size finders match it), the original chained."""
    try:
        yield
    except RuntimeError as e:
        if "allocate" not in str(e) and not isinstance(e, torch.OutOfMemoryError):
            raise
        beams = max(int(options.num_beams), 1)
        raise type(e)(f"{caller}(): {rows} rows x num_beams {beams} of up to {prompt + options.max_new_tokens} "
                      f"positions do not fit in memory; lower the batch, num_beams, num_return_sequences or "
                      f"max_new_tokens ({str(e).splitlines()[0]})") from e


def run_generation(generate, stream, streamer, prompt: torch.Tensor, options, shown: Optional[torch.Tensor] = None):
    """`generate()`'s ids, or with transformers' `streamer` (TextStreamer, TextIteratorStreamer)
    the same ids made step by step by `stream()`, handed to it as transformers' generate does:
    put(the prompt, or `shown`), put(each step's new ids), end()."""
    if streamer is None:
        return generate()
    if options.num_beams > 1:
        raise ValueError("generate(): streamer cannot be used with beam search (num_beams > 1), as in transformers")
    streamer.put((prompt if shown is None else shown).cpu())
    steps = []
    for step in drain(stream()):
        streamer.put(step.cpu())
        steps.append(step)
    streamer.end()
    return torch.cat([prompt, torch.stack(steps, 1).to(prompt)], 1) if steps else prompt


def drain(run):
    """Yields each step's new ids [B] of a C++ TextGeneration until every row has stopped. Only the
    step runs without autograd: around the yield, the caller's code kept grad off between steps."""
    while not run.done():
        with torch.no_grad():
            step = run.next()
        yield step
