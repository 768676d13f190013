"""LoRA (Hu et al. 2021) on tessera models, in PEFT's names and files: adapters on linear layers
chosen by name (`target_modules`: PEFT's suffix list, or one regular expression over the module
path), rank, alpha, dropout, rsLoRA; merge and unmerge; adapter-only checkpoints as PEFT writes
them (`adapter_config.json`, `adapter_model.safetensors`, keys `base_model.model.<path>.lora_A.weight`)
that `peft` loads onto the transformers model, and the other way round; for LLaVA in either key
layout (transformers 5's module tree, the default, or the checkpoint files' names). The math is in C++
(`nn::LinearImpl::add_lora`).

    names = tessera.lora.apply_lora(lm, ["q_proj", "v_proj"], r=8, lora_alpha=16)
    tessera.lora.save_adapter(lm, "out/adapter")
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from . import _C
from .io import is_regular_file, read_json
from .models.weights import apply_key_aliases, check_saveable
from .schema import check_value, from_mapping, require

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."


def _linear_nodes(model) -> Dict[str, torch.nn.Module]:
    return {getattr(m, "_cpp_path", ""): m for m in model.modules() if type(m).__name__ == "Linear"
            and getattr(m, "_cpp_path", "")}


def _matches(path: str, targets: Union[str, Sequence[str]]) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, path) is not None
    return any(path == t or path.endswith("." + t) for t in targets)


def _in_modules(name: str, modules: Sequence[str]) -> bool:
    """Whether parameter `name` lies in one of `modules` (PEFT's rule: a module path equal to, or
    ending in, an entry)."""
    path = name.rsplit(".", 1)[0]
    return any(path == m or path.startswith(m + ".") or f".{m}." in f".{path}." for m in modules)


def _refuse_second_adapter(model, where: str) -> None:
    """One adapter config per model: a second call kept its r and alpha for every layer, so the
    first call's layers were saved and merged at the wrong scale (or at a shape no one loads)."""
    adapted = sorted(p for p, node in _linear_nodes(model).items() if ".lora_" not in p and hasattr(node, "lora_A"))
    if adapted or getattr(model, "lora_config", None) is not None:
        cfg = getattr(model, "lora_config", None) or {}
        raise ValueError(f"{where}: the model has LoRA adapters already ({', '.join(adapted[:3])}"
                         f"{', ...' if len(adapted) > 3 else ''}; r={cfg.get('r')}, lora_alpha={cfg.get('lora_alpha')}): "
                         "one adapter config per model; list every target in one apply_lora call, or start from "
                         "the model without adapters")


def apply_lora(model, target_modules: Union[str, Sequence[str]], r: int = 8, lora_alpha: float = 8.0,
               lora_dropout: float = 0.0, use_rslora: bool = False, freeze_base: bool = True,
               modules_to_save: Sequence[str] = (), every_target_matches: bool = True) -> List[str]:
    """Adds adapters to the matching linear layers; returns their paths. With `freeze_base` only
    the adapters train (PEFT's default), and the modules named in `modules_to_save` (PEFT's
    argument: LLaVA's `multi_modal_projector`), which train whole and are saved with the adapter."""
    checked = from_mapping(AdapterConfig, dict(target_modules=target_modules, r=r, lora_alpha=lora_alpha,
                                               lora_dropout=lora_dropout, use_rslora=use_rslora), "apply_lora()")
    if isinstance(modules_to_save, str):  # one name, not its characters
        modules_to_save = [modules_to_save]
    modules_to_save = check_value(List[str], list(modules_to_save), "apply_lora(): modules_to_save")
    r, lora_alpha, lora_dropout, use_rslora = checked.r, checked.lora_alpha, checked.lora_dropout, checked.use_rslora
    _refuse_second_adapter(model, "apply_lora()")
    meta = next((n for n, p in model.named_parameters() if p.is_meta), None)
    if meta is not None:  # the adapters would be made on the CPU beside meta weights, uninitialised after to_empty
        raise ValueError(f"apply_lora(): {meta} is on the meta device; materialise the model and initialise or load "
                         "it first (to_empty, then init_weights() or a load)")
    linears = _linear_nodes(model)
    names = [n for n, _ in model.named_parameters()]
    for m in modules_to_save:
        if not any(_in_modules(n, [m]) for n in names):
            raise ValueError(f"LoRA modules_to_save: {m!r} names no module with parameters")
    chosen = sorted(p for p in linears if _matches(p, target_modules))
    sample = ", ".join(sorted(linears)[:3])
    if not chosen:
        raise ValueError(f"LoRA target_modules {target_modules!r} match no linear layer (they look like {sample}, ...)")
    # Each listed name must match: one that matched nothing was dropped without a word (PEFT too),
    # e.g. lm_head on a model whose head is its tied embedding.
    # (`every_target_matches=False`: an adapter written elsewhere, whose list PEFT accepted as long
    # as one entry matched.)
    for name in ([] if isinstance(target_modules, str) or not every_target_matches else target_modules):
        if not any(_matches(p, [name]) for p in linears):
            config = dict(getattr(model, "config", None) or {})
            tied = name == "lm_head" and bool(config.get("tie_word_embeddings")
                                              or (config.get("text_config") or {}).get("tie_word_embeddings"))
            why = (": the model ties its output layer to the input embedding (tie_word_embeddings), so it has no "
                   "lm_head layer of its own" if tied else f" (they look like {sample}, ...)")
            raise ValueError(f"LoRA target_modules: {name!r} matches no linear layer{why}")
    for path in chosen:
        _C.nn.add_lora(linears[path]._cpp_addr, int(r), float(lora_alpha), float(lora_dropout), bool(use_rslora))
    model._mirror(model._cpp)  # the new lora_A / lora_B parameters join the Python tree
    if freeze_base:
        for name, p in model.named_parameters():
            p.requires_grad_(".lora_A." in name or ".lora_B." in name or _in_modules(name, modules_to_save))
    model.lora_config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": int(r), "lora_alpha": lora_alpha,
                         "lora_dropout": lora_dropout, "use_rslora": bool(use_rslora), "bias": "none",
                         "target_modules": (target_modules if isinstance(target_modules, str)
                                            else sorted(set(target_modules))),
                         "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
                         "modules_to_save": list(modules_to_save) or None}
    return chosen


def _set_merged(model, merge: bool) -> None:
    model._sync_all()  # C++ merges the tensors Python holds now
    for path, node in _linear_nodes(model).items():
        if ".lora_" not in path and hasattr(node, "lora_A"):
            _C.nn.merge_lora(node._cpp_addr, merge)
    model.lora_merged = merge


def merge_lora(model) -> None:
    """Folds every adapter into its weight (W += scale B A); the forward then skips them."""
    _set_merged(model, True)


def unmerge_lora(model) -> None:
    _set_merged(model, False)


def _is_adapter_key(model, key: str) -> bool:
    saved = (getattr(model, "lora_config", None) or {}).get("modules_to_save") or []
    return ".lora_A." in key or ".lora_B." in key or (".lora_" not in key and _in_modules(key, saved))


def adapter_state_dict(model) -> Dict[str, torch.Tensor]:
    """The adapters' tensors and those of `modules_to_save`, under the model's names."""
    return {k: v.detach() for k, v in model.state_dict().items() if _is_adapter_key(model, k)}


def _exported_path(path: str, model, layout: str) -> str:
    """A module path of ours in `layout`: "checkpoint" (ours, the checkpoint files' names) or
    "in_memory" (transformers 5's module tree, which PEFT on a transformers model uses)."""
    if layout == "checkpoint":
        return path
    for pattern, repl in getattr(model, "key_aliases", []):
        # Our aliases map the in-memory prefixes onto ours (r"^model\.language_model\." ->
        # "language_model.model."); export runs them backwards.
        alias = re.sub(r"\\(.)", r"\1", pattern.lstrip("^"))
        if (path + ".").startswith(repl):
            return (alias + (path + ".")[len(repl):]).rstrip(".")
    return path


def _split_key(key: str):
    """(module path, separator, leaf): "m.q_proj.lora_A.weight" -> ("m.q_proj", ".lora_",
    "A.weight"); a saved module's "m.linear_1.weight" -> ("m.linear_1", ".", "weight")."""
    if ".lora_" in key:
        return key.partition(".lora_")
    module, leaf = key.rsplit(".", 1)
    return module, ".", leaf


def save_adapter(model, path: str, base_model_name_or_path: Optional[str] = None,
                 state_dict: Optional[Dict[str, torch.Tensor]] = None, layout: str = "in_memory") -> None:
    """PEFT's adapter folder. `layout`: "in_memory" names modules as transformers 5's model tree
    does (`model.language_model.layers.N...` for LLaVA: what `peft.PeftModel.from_pretrained`
    on an installed transformers model loads), "checkpoint" as the checkpoint files do (ours;
    transformers 4's tree). The two differ only for models with key aliases (LLaVA). The config
    lists the adapted modules by full path, so PEFT adapts exactly these. `state_dict` replaces
    the model's own tensors (a consolidated FSDP state dict)."""
    if layout not in ("in_memory", "checkpoint"):
        raise ValueError(f"save_adapter: layout must be 'in_memory' or 'checkpoint', got {layout!r}")
    if not getattr(model, "lora_config", None):
        raise ValueError("save_adapter: the model has no LoRA adapters (apply_lora first)")
    state = adapter_state_dict(model) if state_dict is None else {
        k: v for k, v in state_dict.items() if _is_adapter_key(model, k)}
    check_saveable(state, "save_adapter")
    os.makedirs(path, exist_ok=True)
    tensors = {}
    for k, v in state.items():  # the module path mapped to the layout, the leaf kept
        module, sep, leaf = _split_key(k)
        tensors[PREFIX + _exported_path(module, model, layout) + sep + leaf] = v.detach().contiguous()
    _C.core.save_safetensors(os.path.join(path, WEIGHTS), tensors, {"format": "pt"})  # atomic
    adapted = sorted({k.partition(".lora_")[0] for k in state if ".lora_" in k})
    config = {**model.lora_config, "base_model_name_or_path": base_model_name_or_path,
              "target_modules": [_exported_path(m, model, layout) for m in adapted]}
    _C.core.write_file_atomic(os.path.join(path, CONFIG), (json.dumps(config, indent=2) + "\n").encode())


def _aliased_paths(model, paths) -> Dict[str, str]:
    """{path: our linear's path} for the paths that name one of our linears, directly or through
    the model's key aliases (suffix names such as "q_proj" are left out)."""
    own = {p + ".weight" for p in _linear_nodes(model)}
    renamed = apply_key_aliases({p + ".weight": p for p in paths}, own, getattr(model, "key_aliases", []))
    return {given: key[: -len(".weight")] for key, given in renamed.items() if key in own}


def _aliased_module(model, name: str) -> str:
    """A modules_to_save entry in our names (transformers 5's `model.multi_modal_projector` is our
    `multi_modal_projector`); a bare name such as the latter stays."""
    names = [n for n, _ in model.named_parameters()]
    if any(_in_modules(n, [name]) for n in names):
        return name
    for pattern, repl in getattr(model, "key_aliases", []):
        mapped = re.sub(pattern, repl, name + ".", count=1).rstrip(".")
        if mapped != name and any(_in_modules(n, [mapped]) for n in names):
            return mapped
    return name


@dataclass
class AdapterConfig:
    """The keys of PEFT's LoraConfig that tessera reads (`adapter_config.json`), strictly typed."""
    target_modules: Union[str, List[str]]
    r: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    use_rslora: bool = False
    peft_type: str = "LORA"
    modules_to_save: Optional[List[str]] = None

    def validate(self, where: str) -> None:
        require(self.peft_type == "LORA", f"{where}: peft_type {self.peft_type!r}: only LORA is supported")
        require(self.r >= 1, f"{where}: r must be >= 1, got {self.r}")
        require(math.isfinite(self.lora_alpha) and self.lora_alpha > 0,
                f"{where}: lora_alpha must be a finite number > 0, got {self.lora_alpha}")
        require(0 <= self.lora_dropout < 1, f"{where}: lora_dropout must be in [0, 1), got {self.lora_dropout}")
        require(bool(self.target_modules), f"{where}: target_modules is empty")
        if isinstance(self.target_modules, str):  # PEFT: a string is a regular expression
            try:
                re.compile(self.target_modules)
            except re.error as e:
                raise ValueError(f"{where}: target_modules {self.target_modules!r} is not a valid regular "
                                 f"expression ({e})") from None


#: PEFT options that change what an adapter computes; tessera implements only their defaults, so
#: another value is refused rather than silently ignored. Other keys (task_type, revision,
#: inference_mode, peft_version, ...) are bookkeeping and ignored, as PEFT's own loader does.
_UNSUPPORTED_UNLESS = {"fan_in_fan_out": (False, None), "bias": ("none", None), "use_dora": (False, None),
                       "rank_pattern": ({}, None), "alpha_pattern": ({}, None), "layers_to_transform": (None, []),
                       "layer_replication": (None, []), "lora_bias": (False, None), "exclude_modules": (None, []),
                       "trainable_token_indices": (None, []), "target_parameters": (None, []),
                       # Initialisations that change the base weights peft loads the adapter onto
                       # (PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA: W - A0 B0), and variants that change
                       # what the adapter computes (aLoRA from its invocation tokens on, the others'
                       # extras): loaded onto the plain weights they gave other logits, silently.
                       # EVA and orthogonal set only A and B: saved, they are plain LoRA.
                       "init_lora_weights": (True, False, "gaussian", "eva", "orthogonal", None),
                       "alora_invocation_tokens": (None, []), "loftq_config": ({}, None), "corda_config": (None,),
                       "lora_ga_config": (None,), "velora_config": (None,), "monteclora_config": (None,),
                       "use_bdlora": (None, False), "arrow_config": (None,), "kasa_config": (None,),
                       "megatron_config": (None,)}
_CONVERT = {"init_lora_weights": " (an adapter trained from PiSSA, OLoRA, CorDA or LoftQ loads once peft has converted "
                                 "it to a plain one: save it with path_initial_model_for_weight_conversion=...)"}


def read_adapter_config(path: str) -> AdapterConfig:
    data = read_json(path, "a PEFT adapter config")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key, allowed in _UNSUPPORTED_UNLESS.items():
        if key in data and not any(data[key] == a and type(data[key]) is type(a) for a in allowed):
            raise ValueError(f"{path}: {key}={data[key]!r} is not supported by tessera's LoRA (only "
                             f"{' or '.join(repr(a) for a in allowed)}){_CONVERT.get(key, '')}")
    return from_mapping(AdapterConfig, data, path, lenient=True)


def _target_paths(linears, targets) -> List[str]:
    return sorted(p for p in linears if _matches(p, targets))


def _base_weights(state: Dict[str, torch.Tensor], targeted, aliases) -> Dict[str, torch.Tensor]:
    """Takes out of `state` the base weights PEFT saves beside the adapter of a target named like an
    embedding layer (`lm_head.base_layer.weight`: the vocabulary may have been resized) and loads
    back; returned under the target's own weight key (one of `targeted` when it fits)."""
    bases = {k[: -len(".base_layer.weight")] + ".weight": state.pop(k)
             for k in [k for k in state if k.endswith(".base_layer.weight")]}
    return apply_key_aliases(bases, targeted, aliases)


def _planned_shapes(model, targets, r: int, saved: Sequence[str]) -> Dict[str, Tuple[int, ...]]:
    """The adapter tensors apply_lora would add for `targets` (and those of `modules_to_save`),
    with their shapes, computed without changing the model."""
    linears = _linear_nodes(model)
    shapes: Dict[str, Tuple[int, ...]] = {}
    for path in _target_paths(linears, targets):
        out_features, in_features = linears[path].weight.shape
        shapes[f"{path}.lora_A.weight"], shapes[f"{path}.lora_B.weight"] = (r, in_features), (out_features, r)
    for key, value in model.state_dict().items():
        if ".lora_" not in key and _in_modules(key, saved):
            shapes[key] = tuple(value.shape)
    return shapes


def load_adapter(model, path: str) -> List[str]:
    """Applies the folder's LoRA config to `model` and loads its weights (PEFT's files; either
    key layout the model's key aliases know). Everything is checked before the model changes: a
    refused adapter leaves it as it was."""
    config_path, weights_path = os.path.join(path, CONFIG), os.path.join(path, WEIGHTS)
    _refuse_second_adapter(model, f"load_adapter({path})")
    if not is_regular_file(config_path):
        raise FileNotFoundError(f"{path}: no {CONFIG} (not a PEFT adapter folder)")
    config = read_adapter_config(config_path)
    if not is_regular_file(weights_path):
        raise FileNotFoundError(f"{path}: no {WEIGHTS}")
    saved = [_aliased_module(model, m) for m in config.modules_to_save or []]
    raw, _ = _C.core.load_safetensors(weights_path)
    state = {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in raw.items()}
    state = {re.sub(r"\.(lora_[AB])\.default\.", r".\1.", k): v for k, v in state.items()}
    targets = config.target_modules
    if isinstance(targets, list):  # full paths in either layout map onto ours, as keys do
        mapped = _aliased_paths(model, targets)
        targets = sorted({mapped.get(t, t) for t in targets})
    elif not any(_matches(p, targets) for p in _linear_nodes(model)):
        # A regex in another layout's names (transformers 5's in-memory LLaVA): the modules of the
        # file it names, read in ours.
        adapted = sorted({k.split(".lora_A.")[0] for k in state if ".lora_A." in k})
        targets = sorted(set(_aliased_paths(model, [p for p in adapted if _matches(p, targets)]).values())) or targets
    targeted = {f"{p}.weight" for p in _target_paths(_linear_nodes(model), targets)}
    bases = _base_weights(state, targeted, getattr(model, "key_aliases", []))
    planned = _planned_shapes(model, targets, config.r, saved)
    state = apply_key_aliases(state, planned, getattr(model, "key_aliases", []))
    own = model.state_dict()
    missing = sorted(set(planned) - set(state))
    unexpected = sorted(set(state) - set(planned)) + [k[: -len(".weight")] + ".base_layer.weight" for k in bases
                                                      if k not in targeted]
    if missing or unexpected:
        raise ValueError(f"{weights_path}: adapter keys do not fit the model: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    bad = [k for k, shape in planned.items() if tuple(state[k].shape) != shape]
    bad += [k for k, v in bases.items() if v.shape != own[k].shape]
    if bad:  # copy_ would broadcast a [1, n] tensor into [r, n] without a word
        have = {**state, **bases}[bad[0]]
        want = planned[bad[0]] if bad[0] in planned else own[bad[0]].shape
        raise ValueError(f"{weights_path}: {bad[0]} has shape {list(have.shape)}, the model's "
                         f"{list(want)} (r={config.r}); {len(bad)} tensor(s) differ")
    chosen = apply_lora(model, targets, config.r, config.lora_alpha, config.lora_dropout, config.use_rslora,
                        modules_to_save=saved, every_target_matches=False)
    with torch.no_grad():
        for k, p in adapter_state_dict(model).items():
            p.copy_(state[k].to(p.dtype))
        for k, v in bases.items():
            model.get_parameter(k).copy_(v.to(model.get_parameter(k).dtype))
    return chosen


def merged_state_dict(model, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """`state` with every adapter folded into its base weight (W + scale · B A) and the adapter
    tensors dropped: the plain model's checkpoint, loadable without LoRA (transformers, eval)."""
    cfg = model.lora_config
    if getattr(model, "lora_merged", False):  # the weights hold the update already
        return {k: v for k, v in state.items() if ".lora_A." not in k and ".lora_B." not in k}
    scale = cfg["lora_alpha"] / (cfg["r"] ** 0.5 if cfg["use_rslora"] else cfg["r"])
    out = {k: v for k, v in state.items() if ".lora_A." not in k and ".lora_B." not in k}
    for key in [k for k in state if k.endswith(".lora_A.weight")]:
        base = key[: -len(".lora_A.weight")]
        a, b = state[key].float(), state[base + ".lora_B.weight"].float()
        w = out[base + ".weight"]
        out[base + ".weight"] = (w.float() + scale * (b @ a)).to(w.dtype)
    return out
