"""transformers' generation settings and what tessera's generate does with each: the ones it
has (`GenerationConfig`: their defaults and ranges, one schema for `generate` and `stream` of every
causal LM), the ones transformers applies and it lacks (refused, never dropped), and the ones that
change no token (taken). Read by the models' generate, their generation_config.json and
`model.generation_config`."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, List, Literal, Optional, Union

from ..schema import from_mapping, require
from . import token_rules


@dataclass
class GenerationConfig:
    """transformers' generation keywords, their defaults and their ranges (one schema for
    `generate` and `stream` of every causal LM; C++ checks the ranges again for its own users)."""
    max_new_tokens: int = 20
    do_sample: bool = False
    temperature: float = 1.0                # > 0 when sampling; unused when greedy
    top_k: Optional[int] = 50               # 0 or None: no top-k filter
    top_p: float = 1.0                      # in (0, 1]
    min_p: Optional[float] = None           # in [0, 1]: drop below min_p x the top token's probability
    typical_p: Optional[float] = 1.0        # in (0, 1]: locally typical sampling; 1 or None: off
    epsilon_cutoff: Optional[float] = 0.0   # in [0, 1): drop tokens below this probability; 0 or None: off
    eta_cutoff: Optional[float] = 0.0       # in [0, 1): eta sampling; 0 or None: off
    repetition_penalty: float = 1.0         # > 0; 1: off
    no_repeat_ngram_size: Optional[int] = 0  # > 0: no n-gram of this size twice (prompt included); 0, None: off
    eos_token_id: Union[int, List[int], None] = None
    pad_token_id: Optional[int] = None
    use_cache: bool = True
    num_beams: int = 1                      # > 1: beam search (greedy only, generate only)
    length_penalty: float = 1.0             # finished beams: sum(log p) / new_tokens ** length_penalty
    # True: stop once num_beams beams have finished; False: once no running beam can beat them at its
    # length; "never": at max_new_tokens' length when length_penalty > 0 (canonical beam search)
    early_stopping: Union[bool, Literal["never"], None] = False  # None: False (transformers 5's unset)
    min_new_tokens: int = 0                 # stop ids are forbidden before this many new tokens
    # transformers' token rules (token_rules.py)
    sequence_bias: Any = None               # [[token ids], bias] pairs
    bad_words_ids: Optional[List[List[int]]] = None
    forced_bos_token_id: Optional[int] = None
    forced_eos_token_id: Union[int, List[int], None] = None
    exponential_decay_length_penalty: Optional[List[Any]] = None  # (start, factor)
    suppress_tokens: Optional[List[int]] = None
    begin_suppress_tokens: Optional[List[int]] = None
    # transformers' stopping settings (stop_rules.py): seconds since generate began, and strings
    # that end a row (they need generate's tokenizer=)
    max_time: Optional[float] = None
    stop_strings: Union[str, List[str], None] = None

    def validate(self, where: str) -> None:
        require(self.max_new_tokens >= 0, f"{where}: max_new_tokens must be >= 0, got {self.max_new_tokens}")
        require(math.isfinite(self.temperature) and self.temperature >= 0 and (self.temperature > 0 or not self.do_sample),
                f"{where}: temperature must be > 0{' when sampling' if self.do_sample else ' (or 0: greedy)'}, "
                f"got {self.temperature}")
        require(self.top_k is None or self.top_k >= 0, f"{where}: top_k must be >= 0 (0: no top-k filter), got {self.top_k}")
        require(0 < self.top_p <= 1, f"{where}: top_p must be in (0, 1], got {self.top_p}")
        require(self.min_p is None or 0 <= self.min_p <= 1, f"{where}: min_p must be in [0, 1], got {self.min_p}")
        require(self.typical_p is None or 0 < self.typical_p <= 1,
                f"{where}: typical_p must be in (0, 1], got {self.typical_p}")
        for name in ("epsilon_cutoff", "eta_cutoff"):
            value = getattr(self, name)
            require(value is None or 0 <= value < 1, f"{where}: {name} must be in [0, 1), got {value}")
        require((self.no_repeat_ngram_size or 0) >= 0,
                f"{where}: no_repeat_ngram_size must be >= 0 (0: off), got {self.no_repeat_ngram_size}")
        require(self.num_beams >= 1, f"{where}: num_beams must be >= 1, got {self.num_beams}")
        require(not (self.num_beams > 1 and self.do_sample),
                f"{where}: beam sampling (num_beams > 1 with do_sample=True) is not supported")
        require(math.isfinite(self.length_penalty), f"{where}: length_penalty must be finite, got {self.length_penalty}")
        require(self.min_new_tokens >= 0, f"{where}: min_new_tokens must be >= 0, got {self.min_new_tokens}")
        require(math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0,
                f"{where}: repetition_penalty must be > 0, got {self.repetition_penalty}")
        eos = id_list(self.eos_token_id)
        for token in eos + ([self.pad_token_id] if self.pad_token_id is not None else []):
            require(token >= 0, f"{where}: token ids must be >= 0, got eos/pad id {token}")
        # C++ takes int64: a larger int reached the binding as a pybind signature dump.
        counts = {"max_new_tokens": self.max_new_tokens, "min_new_tokens": self.min_new_tokens,
                  "top_k": self.top_k or 0, "num_beams": self.num_beams,
                  "no_repeat_ngram_size": self.no_repeat_ngram_size or 0, "eos/pad id": max(eos + [self.pad_token_id or 0])}
        for name, value in counts.items():
            require(value < 2 ** 63, f"{where}: {name} {value} does not fit in int64")
        token_rules.check(self, where)
        require(self.max_time is None or (math.isfinite(self.max_time) and self.max_time >= 0),
                f"{where}: max_time must be a number of seconds >= 0, got {self.max_time}")
        require(self.stop_strings != [], f"{where}: stop_strings [] names no string (None: none)")


def id_list(ids) -> List[int]:
    """An eos setting (one id, a list, or None) as a list of ids."""
    return [] if ids is None else [ids] if isinstance(ids, int) else list(ids)


#: The settings that cannot be None: passed as None, they take their default, as transformers'
#: "unset" does (max_new_tokens 20, greedy, temperature 1, ...); they were refused.
_NONE_IS_DEFAULT = tuple(f.name for f in fields(GenerationConfig)
                         if f.default is not None and "None" not in f.type and "Optional" not in f.type)


def generation_config(kwargs, caller: str) -> GenerationConfig:
    """The generation keywords of a `generate`/`stream` call, checked; an unknown one is a
    TypeError as for any Python call."""
    also = "max_length, min_length, num_return_sequences, generator, inputs_embeds, tokenizer, "
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k not in _NONE_IS_DEFAULT}
    return from_mapping(GenerationConfig, kwargs, f"{caller}()",
                        unknown=lambda message: TypeError(message.replace("unknown key(s)", "unexpected argument(s)")
                                                          .replace("valid keys: ", "valid keys: " + also)))


GENERATION_FILE = "generation_config.json"
#: What a generation_config.json (or `model.generation_config`) sets for generate: its settings,
#: transformers' lengths that count the prompt, and num_return_sequences.
GENERATION_KEYS = (*GenerationConfig.__dataclass_fields__, "max_length", "min_length", "num_return_sequences")
#: transformers' settings that change what it generates and that tessera's generate does not have,
#: with the values that change nothing (what files write for "off"). A file setting one loads, and
#: generate refuses until it is cleared: ignored, it would give other tokens than transformers.
UNAPPLIED = {"top_h": (), "num_beam_groups": (1,), "penalty_alpha": (0.0,), "force_words_ids": ([],),
             "constraints": ([],), "dola_layers": (),
             "watermarking_config": (), "guidance_scale": (1.0,), "token_healing": (False,),
             "encoder_repetition_penalty": (1.0,)}


#: Of those, the ones transformers applies only when sampling (greedy and beam search ignore them).
SAMPLING_ONLY = ("top_h",)
#: transformers' settings that change no token: output formats, caches, speed-ups (assisted
#: decoding gives greedy's tokens), metadata, and what applies to encoder-decoder models or to
#: group beam search alone. Taken and left out wherever a generation config is read or assigned.
NO_TOKEN_CHANGE = {
    "transformers_version", "_from_model_config", "bos_token_id", "decoder_start_token_id",
    "output_attentions", "output_hidden_states", "output_scores", "output_logits", "return_dict_in_generate",
    "renormalize_logits", "remove_invalid_values", "cache_implementation", "cache_config", "compile_config",
    "disable_compile", "low_memory", "max_cache_len", "prefill_chunk_size", "continuous_batching_config",
    "assistant_confidence_threshold", "assistant_early_exit", "assistant_ensemble_weight", "assistant_lookbehind",
    "target_lookbehind", "num_assistant_tokens", "num_assistant_tokens_schedule", "prompt_lookup_num_tokens",
    "max_matching_ngram_size", "is_assistant", "speculation_type", "use_mtp", "diversity_penalty", "synced_gpus",
    "encoder_no_repeat_ngram_size"}


#: transformers' generate arguments that pipelines and user code pass at values that change nothing.
#: (true: return_dict_in_generate, output_scores and output_logits are generation_output.py's; the others refused)
OUTPUT_FLAGS = ("output_attentions", "output_hidden_states", "output_scores", "output_logits",
                "return_dict_in_generate")
_NONE = ("streamer", "tokenizer", "past_key_values", "logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn",
         "assistant_model", "negative_prompt_ids", "negative_prompt_attention_mask", "custom_generate")


def no_op_arguments(given: dict) -> dict:
    """The call's arguments without those at a value that changes nothing (False or None, an empty
    LogitsProcessorList); other values stay, and an unknown argument is refused by name later."""
    def off(key, value) -> bool:
        if key in OUTPUT_FLAGS or key == "synced_gpus":
            return value is None or value is False
        return key in _NONE and (value is None or (hasattr(value, "__len__") and len(value) == 0))
    return {k: v for k, v in given.items() if not off(k, v)}


def passed_config(config, caller: str) -> dict:
    """The settings a `generation_config=` argument sets (transformers' GenerationConfig or a dict):
    its fields that are not None (transformers 5's "unset"), which go over the model's defaults as
    transformers merges them; the output flags it sets are refused as the keywords are."""
    config = config.to_dict() if hasattr(config, "to_dict") else config
    if not isinstance(config, dict):
        raise TypeError(f"{caller}(): generation_config must be transformers' GenerationConfig or a dict, got "
                        f"{type(config).__name__}")
    flags = [f"{k}={v!r}" for k, v in config.items() if k in OUTPUT_FLAGS and v not in (None, False)]
    if flags:
        raise TypeError(f"{caller}(): generation_config sets {', '.join(flags)}: give return_dict_in_generate, "
                        "output_scores and output_logits as generate's arguments (tessera reads them there; "
                        "attentions and hidden states are not returned)")
    return token_settings(config)


def token_settings(config: dict) -> dict:
    """A generation config's settings that change tokens: those set (not None), less the ones that
    change none, and transformers' settings generate lacks only where they are not "off"."""
    return {k: v for k, v in config.items()
            if v is not None and k not in NO_TOKEN_CHANGE and (k not in UNAPPLIED or unapplied(k, v))}


def unapplied(key: str, value) -> bool:
    """A transformers setting generate lacks, set to a value that would change the tokens."""
    return key in UNAPPLIED and value is not None and value not in UNAPPLIED[key]


def check_length(key: str, value, where: str) -> None:
    """transformers' max_length (an int >= 1) or min_length (>= 0): they count the prompt."""
    low = 1 if key == "max_length" else 0
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{where}{key} must be an int >= {low}, got {value!r}")
