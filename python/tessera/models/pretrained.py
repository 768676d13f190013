"""Base class for tessera models: Hugging Face config dicts, from_pretrained / save_pretrained."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from .. import _C
from ..io import is_regular_file, read_json
from .config import ModelConfig
from .dtypes import DType, config_with_dtype, load_dtype
from .outputs import as_tuple
from .weights import apply_key_aliases, check_saveable, fill_tied, load_fitting, load_weights, save_weights
from .._warn import warn


def read_config(path: str) -> Dict[str, Any]:
    """Reads config.json (a folder or the file itself) with an error that names the file."""
    file = config_source(path)
    if not os.path.exists(file):
        weights_alone = os.path.isdir(path) and any(n.startswith("model") and n.endswith(".safetensors")
                                                    for n in os.listdir(path))
        raise FileNotFoundError(f"no config.json at {file}" + (
            ": a folder of weights alone (transformers' Trainer writes one for a model that is not its own; "
            "tessera.hf_trainer.SavePretrainedCallback adds the config). Load it with "
            "from_pretrained(folder, config=<the model's config, or a folder or config.json>)" if weights_alone else ""))
    config = read_json(file, "a model config (a JSON object)")
    if not isinstance(config, dict):
        raise ValueError(f"{file}: a model config must be a JSON object, got {type(config).__name__} "
                         f"{json.dumps(config)[:60]}")
    return config


def config_source(path: str, config: Union[None, str, Dict[str, Any]] = None) -> str:
    """What checkpoint_config(path, config) reads, for messages: a config.json (a folder's, or the
    file given), or "the config given" for a dict or a config object."""
    if config is not None and not isinstance(config, (str, os.PathLike)):
        return "the config given"
    source = os.fspath(path if config is None else config)
    return os.path.join(source, "config.json") if os.path.isdir(source) else source


def checkpoint_config(path: str, config: Union[None, str, Dict[str, Any]] = None) -> Dict[str, Any]:
    """The config a checkpoint folder loads with: its config.json, or `config` when given
    (transformers' argument, for a folder of weights alone): a config dict (a model's `.config`),
    transformers' config object, or a folder or config.json to read."""
    if config is None:
        return read_config(path)
    if isinstance(config, (str, os.PathLike)):
        return read_config(os.fspath(config))
    if not isinstance(config, dict) and callable(getattr(config, "to_dict", None)):
        config = config.to_dict()  # transformers' config object
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (a model's .config), a transformers config or a folder or "
                        f"config.json path, got {type(config).__name__}")
    try:
        return json.loads(json.dumps(config))  # plain data, as a file would give
    except (TypeError, ValueError) as e:
        raise TypeError(f"config: not a JSON object ({e})") from None


def refuse_file(path) -> None:
    """from_pretrained takes a folder: a checkpoint file given instead is named, with what converts
    it where its layout is an original repository's."""
    if isinstance(path, (str, os.PathLike)) and os.path.isfile(path):
        from .weights import original_layout, read_state_file

        try:
            how = original_layout(read_state_file(path))
        except ValueError:
            how = ""
        raise ValueError(f"{path} is a file; from_pretrained loads a checkpoint folder (config.json and "
                         "model.safetensors): `python -m tessera.cli convert FILE FOLDER --config config.json` "
                         f"makes one of a state dict{f'; this file is {how}' if how else ''}")


def newest_checkpoint_of_run(path: str) -> str:
    """`path` itself, or for a training run's folder (no config.json, a checkpoints/ folder) its
    newest checkpoint."""
    if isinstance(path, (str, os.PathLike)) and os.path.isdir(os.path.join(path, "checkpoints")) and \
            not is_regular_file(os.path.join(path, "config.json")):
        from ..train.checkpoint import latest_checkpoint

        return latest_checkpoint(os.fspath(path)) or path
    return path


class PreTrainedModel(nn.Module):
    """Mixin for models built from a Hugging Face config dict.

    Subclasses set `model_type` and implement `__init__(config)`; `self.config` is the dict.
    Loading is declarative: `key_aliases` are (regex, replacement) pairs that map another layout
    of the same checkpoint onto the model's keys, and `tied_weights` maps each tied key to the key
    it shares storage with (stored once, as transformers does). A class over a C++ module takes
    these rules (and `base_config_key`, `base_model_prefix`) from the ones its family declared in
    C++ for that module (core/weight_loading.h), so the C++ loader and this one agree; a class
    that sets one itself keeps its own.
    """

    model_type: str = ""
    architecture: str = ""
    #: The class a config with this model_type and no known architecture builds (tessera.registry).
    default_for_model_type: bool = False
    #: A part loads from its parent's folder, as in transformers (CLIPVisionModel from a CLIPModel
    #: folder): its config is the parent config's `base_config_key` entry, its weights the parent's
    #: keys that are the part's own after `key_aliases`; the parent's other weights are ignored.
    base_config_key: str = ""
    #: transformers' base_model_prefix: the attribute under which a task model holds this base
    #: model (MAE's `vit`, BEiT's `beit`). A checkpoint of the task model loads into the base
    #: model: its keys under the prefix are the base model's, the task head's are left out (said).
    base_model_prefix: str = ""
    key_aliases: List[Tuple[str, str]] = []
    tied_weights: Dict[str, str] = {}
    #: transformers' _keep_in_fp32_modules: names of parts (a key component: `qformer`,
    #: `query_tokens`) that from_pretrained keeps in fp32 when it loads in fp16, against overflow.
    _keep_in_fp32_modules: Tuple[str, ...] = ()
    #: The C++ module whose declared weight-loading rules this class takes: its class name when
    #: that is the module's transformers name (Blip2QFormerModel), else set (CLIPVisionTransformer).
    _cpp_module_name: str = ""
    #: Whether from_pretrained reads the folder's generation_config.json into generate's defaults.
    reads_generation_file: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        from ..cpp_module import CppModule

        module = cls.__dict__.get("_cpp_module_name") or cls.__name__
        if not issubclass(cls, CppModule) or module not in _C.core.list_weight_loading():
            return  # a Python-only class that shares a transformers name takes nothing
        declared = _C.core.weight_loading(module)
        for attr in ("key_aliases", "tied_weights", "base_config_key", "base_model_prefix"):
            if attr not in cls.__dict__:
                setattr(cls, attr, declared[attr])

    @classmethod
    def config_fields(cls) -> Dict[str, Dict[str, Any]]:
        """The config keys this class reads, each declared once in C++ with its default and meaning:
        {key: {"default": ..., "meaning": ...}} in declaration order; a sub-config's keys are dotted
        (`text_config.hidden_size`). Defaults are as config.json holds them."""
        cpp = cls._cpp_type()
        if cpp is None:
            raise NotImplementedError(f"{cls.__name__} has no C++ options table")
        return {f["key"]: {"default": f["default"], "meaning": f["meaning"]} for f in json.loads(cpp.config_fields())}

    @classmethod
    def _cpp_type(cls) -> Any:
        """The bound C++ class the model wraps (its static config_fields); None for Python-only models."""
        return None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        own = self.state_dict(keep_vars=True)
        state = fill_tied(apply_key_aliases(state_dict, own, self.key_aliases), self.tied_weights)
        result = super().load_state_dict(state, strict=strict, assign=assign)
        if assign and hasattr(self, "_sync_all"):
            self._sync_all()  # C++ sees the assigned tensors now, not only at the next forward
        return result

    @classmethod
    def from_pretrained(cls, path: str, dtype: DType = "auto", torch_dtype: DType = None,
                        config_overrides: Optional[Dict[str, Any]] = None,
                        config: Union[None, str, Dict[str, Any]] = None, **kwargs):
        """Builds the model from `path/config.json` and loads `path/model.safetensors` strictly.
        A tessera checkpoint's files are checked against its checksums.json first. A training run's
        folder loads its newest checkpoint, as chat and eval take it. `dtype` is transformers 5's
        (`torch_dtype` its old name): "auto" loads in the dtype the folder was saved in
        (tessera.models.dtypes), a dtype or its name in that one. `config_overrides` updates the
        folder's config (dropout rates, say; keys checked strictly), as transformers' config
        keywords do; one that changes a shape fails the strict load. `config` (transformers'
        argument) replaces config.json: a config dict, or a folder or config.json to read, for a
        folder of weights alone (what transformers' Trainer saves for a model not its own)."""
        from ..checksums import verify_model_files
        from .image_processor import read_image_processor
        from .load_keywords import split_keywords

        if torch.get_default_device().type == "meta":  # as transformers refuses it
            raise ValueError("from_pretrained() under `with torch.device('meta')` would read every weight: build the "
                             "model there with its class (cls(config)), shard it, then load, or load outside the "
                             "context")

        refuse_file(path)
        path = newest_checkpoint_of_run(os.path.join(path, kwargs.pop("subfolder", None) or ""))
        verify_model_files(path)
        folder_config = checkpoint_config(path, config)
        file = config_source(path, config)
        config, from_parent = cls._own_config(folder_config, file)
        if config_overrides is not None and not isinstance(config_overrides, dict):
            raise TypeError(f"config_overrides must be a dict, got {type(config_overrides).__name__}")
        keyed, kwargs, device = split_keywords(cls, config, kwargs)  # transformers' config keywords update it
        config_overrides = {**keyed, **(config_overrides or {})} or None
        if config_overrides is not None:
            config = merge_config(config, config_overrides)
            if hasattr(cls, "resolve_config"):
                check_override_keys(cls, cls.resolve_config(config), config_overrides, "config_overrides")
        default = torch.get_default_device()  # `with torch.device("cuda")`: moved there once loaded
        previous = _C.nn.set_init_enabled(False)  # every parameter is loaded next: skip random init
        try:
            with torch.device("cpu"):  # not moved empty: the checkpoint's tensors replace these
                model = cls(config, **kwargs)
        except ValueError as e:  # name the file: the C++ message names only the key
            raise ValueError(f"{file}: {e}") from e
        except RuntimeError as e:  # sizes beyond the machine: the allocator's message names no key
            if "allocate" not in str(e):
                raise
            raise ValueError(f"{file}: the model it describes does not fit in memory ({str(e).splitlines()[0][:160]}); "
                             "check its sizes (vocab_size, hidden_size, intermediate_size, layers)") from None
        finally:
            _C.nn.set_init_enabled(previous)
        # Assign the memory-mapped tensors instead of copying them (peak memory ~1x the
        # checkpoint; pages are copied on write only), converted where the dtype differs.
        dtypes = {k: v.dtype for k, v in model.state_dict().items()}
        state = apply_key_aliases(load_weights(path, verified=True), dtypes, cls.key_aliases)  # renamed first: converted below too
        whole = state
        state = cls._strip_base_model_prefix(state, dtypes, path)
        # From a task model's checkpoint, a part the task model lacks (BeitModel's mean-pooling norm
        # from BeitForMaskedImageModeling's) starts as a new model's, said, as transformers does.
        fresh = [k for k in dtypes if k not in state] if state is not whole else []
        if from_parent:
            state = {k: v for k, v in state.items() if k in dtypes}
            if not state:
                raise ValueError(f"{path}: no weights of {cls.__name__} in this {from_parent!r} checkpoint")
        target = load_dtype(dtype, torch_dtype, folder_config, state, file)
        if target != model.dtype:
            # Before loading, and without converting: the uninitialised fp32 tensors become
            # uninitialised ones of the target dtype (neither is ever written, so neither takes
            # memory; the strict load below overwrites every one), and the checkpoint's tensors
            # in that dtype are then assigned uncopied.
            model._apply(lambda t: torch.empty_like(t, dtype=target) if t.is_floating_point() else t)
            if target == torch.float16:
                model._keep_parts_in_fp32()
            dtypes = {k: v.dtype for k, v in model.state_dict().items()}
        state = {k: v.to(dtypes[k]) if k in dtypes and v.dtype != dtypes[k] else v for k, v in state.items()}
        if fresh and len(fresh) < len(dtypes):
            model.init_weights()  # the loaded tensors replace the rest below
            own = model.state_dict()
            state.update({k: own[k] for k in fresh})
            warn(f"{path}: {', '.join(fresh[:4])}{', ...' if len(fresh) > 4 else ''} are not in this task model's "
                 f"checkpoint: initialised as a new {cls.__name__}'s, as transformers does")
        given = f" and config_overrides {json.dumps(config_overrides, sort_keys=True)}" if config_overrides else ""
        load_fitting(model, state, f"{path} (with {file}{given})", assign=True)
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        try:  # pretrained_cfg's statistics (features.py); the weights load whatever the file says
            model.preprocessing = read_image_processor(folder)
        except ValueError as e:
            warn(f"{e}; the model's family's statistics stand in")
            model.preprocessing = None
        if callable(getattr(model, "generate", None)):  # a causal LM reads its generation defaults too
            from .generation_file import read_generation

            read_generation(model, folder)
        device = device if device is not None else default if default.type != "cpu" else None
        if device is not None:  # device_map naming one device, or the default device
            model.to(device)
        return model.eval()  # as transformers does: call .train() to fine-tune

    def _keep_parts_in_fp32(self) -> None:
        """The parts named in _keep_in_fp32_modules back to (uninitialised) fp32, in place as
        _apply converts, so that C++ holds the same tensors; their consumers cast at the seams."""
        keep = set(self._keep_in_fp32_modules)
        for name, t in [*self.named_parameters(), *self.named_buffers()]:
            if t.is_floating_point() and keep & set(name.split(".")):
                t.data = torch.empty_like(t, dtype=torch.float32)

    @classmethod
    def _strip_base_model_prefix(cls, state: Dict[str, torch.Tensor], dtypes: Dict[str, Any],
                                 path: str) -> Dict[str, torch.Tensor]:
        """A task model's checkpoint (ViTMAEForPreTraining: `vit.*` and `decoder.*`) as this base
        model's (ViTMAEModel: the `vit.*` keys without the prefix), as transformers loads it."""
        prefix = cls.base_model_prefix + "."
        if not cls.base_model_prefix or any(k.startswith(prefix) for k in dtypes) or \
                not any(k.startswith(prefix) for k in state):
            return state
        head = sorted({k.split(".")[0] for k in state if not k.startswith(prefix)})
        if head:
            warn(f"{path}: {cls.__name__} loads the {cls.base_model_prefix!r} part of this checkpoint; "
                 f"its {', '.join(head)} weights are not used (a task head)")
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    @classmethod
    def _own_config(cls, config: Dict[str, Any], path: str) -> Tuple[Dict[str, Any], str]:
        """The folder's config for this class (the folder's own, or its parent's `base_config_key`
        entry) and the parent's model_type ("" for the class's own folder)."""
        model_type = config.get("model_type")
        if not cls.base_config_key or model_type in (None, cls.model_type):
            return config, ""
        sub = config.get(cls.base_config_key)
        if not isinstance(sub, dict) or sub.get("model_type", cls.model_type) != cls.model_type:
            raise ValueError(f"{path}: a {model_type!r} checkpoint, with no {cls.base_config_key!r} of model_type "
                             f"{cls.model_type!r}: {cls.__name__} cannot load from it")
        return sub, model_type

    def _write_generation_config(self, path: str) -> None:
        from .generation_file import write_generation_config

        write_generation_config(self, path)

    def transformers_difference(self) -> Optional[str]:
        """Why transformers' class of this architecture would compute otherwise with the folder
        save_pretrained writes (a tessera-only part or setting), or None. Said when saving."""
        return None

    def save_pretrained(self, path: str, max_shard_size: Union[int, str] = "5GB",
                        state_dict: Optional[Dict[str, torch.Tensor]] = None, is_main_process: bool = True,
                        save_function=None, safe_serialization: bool = True, push_to_hub: bool = False) -> None:
        """Writes config.json and model.safetensors (HF layout, each file atomically), sharded with
        an index above `max_shard_size`; tied weights are stored once; a model with LoRA adapters
        is written merged, its adapter beside it in `adapter/` (PEFT's files). `state_dict` replaces the
        module's own tensors (as transformers' argument: e.g. a consolidated FSDP state dict).
        transformers' `is_main_process` (False: nothing is written) and `save_function` (unused
        with safetensors, as in transformers: accelerate's `save_function=accelerator.save`) are
        taken; transformers 4's `safe_serialization` is accepted and safetensors written whatever it
        says, as transformers 5 does; the Hub is refused."""
        del safe_serialization
        if push_to_hub:
            raise ValueError("save_pretrained(push_to_hub=True): tessera writes to a local folder only")
        state = self.state_dict() if state_dict is None else state_dict
        check_saveable(state, "save_pretrained()")  # on every rank, before anything is written
        del save_function
        if not is_main_process:
            return
        difference = self.transformers_difference()
        if difference:
            warn(f"save_pretrained({path!r}): {difference}; tessera loads the folder as it is")
        # Serialise the config first: a config that cannot be written must fail before the
        # weights file is replaced, or the folder would pair new weights with an old config.
        # config.json's dtype is the written weights' (a given state_dict's own, else the model's).
        tensors_in = state_dict.values() if state_dict is not None else self.parameters()
        data = self._config_file(next((t.dtype for t in tensors_in if t.is_floating_point()), None))
        if getattr(self, "lora_config", None):
            # The plain model (adapters folded in: transformers and from_pretrained load it) and
            # the adapter alone in PEFT's files under adapter/.
            from ..lora import merged_state_dict, save_adapter

            save_adapter(self, os.path.join(path, "adapter"), state_dict=state)
            state = merged_state_dict(self, state)
        tensors = {k: v.detach().contiguous() for k, v in state.items() if k not in self.tied_weights}
        save_weights(path, tensors, max_shard_size)
        _C.core.write_file_atomic(os.path.join(path, "config.json"), data)
        if callable(getattr(self, "generate", None)):
            self._write_generation_config(path)
        from ..checksums import refresh_model_files

        refresh_model_files(path)  # a trainer checkpoint's manifest now lists the new files

    def init_weights(self) -> None:
        """transformers' and torchtitan's name: every parameter initialised again, in place, as a
        new model of this config starts (C++'s init, on the tensors the model holds now). The
        step after `to_empty` for a model built under `with torch.device("meta")`."""
        if getattr(self, "lora_config", None):
            raise ValueError("init_weights() would re-draw the LoRA adapters' weights too (B starts at zero); "
                             "initialise before tessera.lora.apply_lora")
        sharded = [n for n, p in self.named_parameters() if type(p).__name__ == "DTensor"]
        if sharded:
            raise ValueError(f"init_weights() on sharded parameters ({sharded[0]}, ...): C++ initialises whole "
                             "tensors; initialise before fully_shard, or load weights into the sharded model "
                             "(torch.distributed.checkpoint.state_dict.set_model_state_dict)")
        meta = [n for n, p in self.named_parameters() if p.is_meta]
        if meta:
            raise ValueError(f"init_weights(): {meta[0]} is on the meta device; materialise the model first "
                             "(model.to_empty(device=...))")
        self._sync_all()  # C++ initialises what Python holds (a rebound or assigned tensor included)
        self._cpp.init_weights()

    def save_config(self, path: str) -> None:
        """config.json (and a causal LM's generation_config.json) alone, beside weights written
        by other code: transformers' Trainer saves only the weights of a model that is not its own
        (tessera.hf_trainer.SavePretrainedCallback calls this)."""
        data = self._config_file(self.dtype)
        os.makedirs(path, exist_ok=True)
        _C.core.write_file_atomic(os.path.join(path, "config.json"), data)
        if callable(getattr(self, "generate", None)):
            self._write_generation_config(path)

    def _config_file(self, dtype: Optional[torch.dtype]) -> bytes:
        """config.json's bytes for weights of `dtype`."""
        from .generation_file import without_generation_keys

        config = without_generation_keys(config_with_dtype(self.config, dtype))
        config.setdefault("architectures", [self.architecture])
        config.setdefault("model_type", self.model_type)
        return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ---- transformers' and timm's conveniences ---------------------------------------------------
    #: Module paths of get_input_embeddings / get_output_embeddings, as transformers answers for
    #: the class ("": it raises NotImplementedError there too; None: it returns None).
    input_embeddings: Optional[str] = ""
    output_embeddings: Optional[str] = None
    #: transformers' name of the input a batch is counted by (Trainer's token count, pipelines).
    main_input_name = "input_ids"

    @classmethod
    def can_generate(cls) -> bool:
        return callable(getattr(cls, "generate", None))

    @property
    def generation_config(self):
        """transformers' attribute over the model's generation defaults (models/generation_view.py)."""
        if not self.can_generate():
            raise AttributeError(f"{type(self).__name__} does not generate: it has no generation_config")
        from .generation_view import GenerationConfigView

        return GenerationConfigView(self)

    @generation_config.setter
    def generation_config(self, value) -> None:
        from .generation_view import set_generation_defaults

        set_generation_defaults(self, value)

    @property
    def supports_gradient_checkpointing(self) -> bool:
        return type(self)._set_checkpointing is not PreTrainedModel._set_checkpointing

    def enable_input_require_grads(self) -> None:
        """transformers' (peft's prepare_model_for_kbit_training calls it): there, checkpointed
        layers over frozen embeddings would pass no gradient to adapters unless the embeddings'
        output requires one. tessera's C++ checkpointing passes it either way: nothing to enable."""

    def disable_input_require_grads(self) -> None:
        """See enable_input_require_grads."""

    def __call__(self, *args, return_dict: Optional[bool] = None, **kwargs):
        """transformers' `return_dict=False`: the output as a tuple of its set fields (nested
        outputs too), in the class's field order."""
        out = super().__call__(*args, **kwargs)
        return as_tuple(out) if return_dict is False else out

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """transformers' count: every parameter once, or those that train; without the weights
        of the Embedding modules (token and position tables) if asked."""
        skip = {f"{name}.weight" for name, m in self.named_modules()
                if isinstance(m, nn.Embedding)} if exclude_embeddings else set()
        return sum(p.numel() for name, p in self.named_parameters()
                   if name not in skip and (p.requires_grad or not only_trainable))

    def get_input_embeddings(self) -> Optional[nn.Module]:
        if self.input_embeddings is None:
            return None
        if not self.input_embeddings:
            raise NotImplementedError(f"{type(self).__name__} has no single input embedding (transformers' "
                                      "get_input_embeddings raises too); take it from one of its towers")
        return self.get_submodule(self.input_embeddings)

    @property
    def config(self) -> ModelConfig:
        """The config dict, also read by attribute (`config.hidden_size`), as transformers'."""
        return self.__dict__["_config"]

    @config.setter
    def config(self, value: Dict[str, Any]) -> None:
        self.__dict__["_config"] = value if isinstance(value, ModelConfig) else ModelConfig(value)

    def resize_token_embeddings(self, new_num_tokens: Optional[int] = None, pad_to_multiple_of: Optional[int] = None,
                                mean_resizing: bool = True) -> nn.Module:
        """transformers' resize_token_embeddings: the vocabulary becomes `new_num_tokens` rows
        (rounded up to `pad_to_multiple_of`), old rows kept, new ones drawn near the old rows' mean
        (`mean_resizing`, transformers' default) or from the model's init; the LM head follows
        (or stays tied) and `vocab_size` in the config with it. Returns the input embeddings.
        Resize before adding LoRA adapters or building an optimizer (the tables change size)."""
        from .resize_embeddings import resize_token_embeddings

        return resize_token_embeddings(self, new_num_tokens, pad_to_multiple_of, mean_resizing)

    def get_output_embeddings(self) -> Optional[nn.Module]:
        """The LM head; with tie_word_embeddings there is no head module, and the input embedding
        (whose weight the head uses, as transformers' tied lm_head does) is returned."""
        if not self.output_embeddings:
            return None
        try:
            return self.get_submodule(self.output_embeddings)
        except AttributeError:  # tied: no module at that path
            return self.get_input_embeddings()

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of every transformer layer stack (C++; the layers keep their
        inputs and rebuild the rest in backward)."""
        self._set_checkpointing(bool(enable))
        self.__dict__["_checkpointing"] = bool(enable)
        for part in self.modules():  # C++ set every part: a part's own flag (CppNode.set_grad_checkpointing) is stale
            if part is not self:
                part.__dict__.pop("_checkpointing", None)

    def _set_checkpointing(self, enable: bool) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no activation checkpointing")

    @property
    def is_gradient_checkpointing(self) -> bool:
        return bool(self.__dict__.get("_checkpointing", False))

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Optional[Dict[str, Any]] = None,
                                      every_n_layers: int = 1, offload: bool = False) -> None:
        """transformers' name and arguments (its Trainer passes all three). tessera checkpoints every
        layer in C++ (torch.utils.checkpoint is not called), so `use_reentrant` has nothing to
        choose; other keys, other layer strides and offloading are refused."""
        extra = set(gradient_checkpointing_kwargs or {}) - {"use_reentrant"}
        if extra:
            raise ValueError(f"gradient_checkpointing_kwargs: {sorted(extra)} do not apply to tessera's C++ "
                             "checkpointing (only use_reentrant is accepted, and it has nothing to choose)")
        if every_n_layers != 1 or offload:
            raise ValueError(f"gradient_checkpointing_enable(every_n_layers={every_n_layers!r}, offload={offload!r}): "
                             "tessera checkpoints every layer and keeps what it saves where it computed it "
                             "(every_n_layers=1, offload=False)")
        self.set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        self.set_gradient_checkpointing(False)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's name."""
        self.set_gradient_checkpointing(enable)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def check_override_keys(model_class, resolved: Dict[str, Any], overrides: Optional[Dict[str, Any]],
                        where: str = "model.config") -> None:
    """A recipe's model.config is the user's own text, so its keys are read strictly, as tessera's
    variant files are (a config.json stays lenient, as in transformers): a misspelt key silently
    left its default in place, a 768-wide model for `hiden_size: 64`. The overrides are laid back
    over the config they resolved to, so only their keys are judged (legacy names such as
    `rope_theta` included); an unknown one is a ValueError listing the valid keys."""
    from .. import _C
    from ..registry import validate

    if overrides is None:
        return
    if not isinstance(overrides, dict):
        raise TypeError(f"{where} must be a mapping of config keys, got {type(overrides).__name__}")
    bad = [k for k in overrides if not isinstance(k, str)]
    if bad:
        raise ValueError(f"{where}: config keys are strings, got {bad[0]!r}")
    from .generation_file import generation_keys_in

    settings = generation_keys_in(overrides)
    if settings:  # transformers' from_pretrained refuses them as config keywords (a TypeError)
        one = len(settings) == 1
        raise ValueError(f"{where}: {', '.join(settings)} {'is a generation setting, not a model config key' if one else 'are generation settings, not model config keys'}: "
                         "set model.generation_config.<name>, or pass it to generate")
    family = getattr(model_class, "key_family", None) or \
        getattr(getattr(model_class, "_family", None), "__name__", "").rsplit(".", 1)[-1]
    if not overrides or family not in _C.core.list_families():
        return
    checked = merge_config(resolved, overrides)  # transformers' file keys pass the strict read
    part = getattr(model_class, "base_config_key", None)  # a part (a tower) is its parent's sub-config
    try:
        validate(family, {part: checked} if part else checked, where)
    except ValueError as e:
        raise ValueError(str(e).replace(f"{where}.{part}", where) if part else str(e)) from None


def merge_config(base: Dict[str, Any], overrides: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Recursive dict update (`text_config.hidden_size` style overrides). An override under one of
    transformers' attribute aliases (`image_token_id`) sets its key, as transformers' setattr does."""
    out = json.loads(json.dumps(base))
    aliases = dict(_C.core.attribute_aliases())
    for key, value in (overrides or {}).items():
        key = aliases.get(key, key)
        for alias in [a for a, k in aliases.items() if k == key]:
            out.pop(alias, None)  # the base's alias of an overridden key goes with it
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out
