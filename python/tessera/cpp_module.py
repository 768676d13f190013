"""A torch.nn.Module over a C++ module: the Python parameters *are* the C++ tensors, and each
transformer layer runs through Python's `nn.Module.__call__`.

The tree is rebuilt node by node from the C++ module (`nodes()` of the binding): every C++ module
becomes a Python node of a class named after it (`CLIPEncoderLayer`, `CLIPAttention`, ...), and
every parameter is the very tensor C++ holds. Two rules make PyTorch's machinery work on it:

1. **Parameters are read at call time.** Before C++ runs a part of the tree, the tensors
   registered in Python *now* are pushed to C++ where their identity changed (FSDP2's unsharded
   parameters, `functional_call`, parametrizations, `load_state_dict(assign=True)`).
2. **Layers are called from C++ through Python.** The C++ encoder loop calls each layer via
   `layers[i](hidden_states, layer_args)`, so forward hooks, FSDP2's per-layer unsharding and
   activation-checkpoint wrappers apply, while the math stays in C++.

Nodes that C++ runs without Python (inside a layer, or the embeddings) refuse hooks and
replacement with a clear error: neither could ever take effect. A node may still offer methods
that are explicit calls into C++ (timm's feature API on a tower inside a parent, and the forward
of a part that is a model of its own: `clip.vision_model(pixel_values)` as in transformers): a
family attaches them to the node class by C++ name with `node_methods`, and they run on the node's
C++ module after the owning model pushed its rebound parameters (`_cpp_address`, `_cpp`).
"""
from __future__ import annotations

import copy
import weakref
from typing import Dict, List, Optional, Tuple, Type

import torch
from torch import nn

from . import _C
from .cpp_build import on_meta
from .cpp_sync import _NOT_CAPTURED, _LayerCaller, _Sync, refuse_capture, weight_hooks
from .opaque_to_compile import disable_when_dynamo_loads, opaque_to_compile


def _as_parameter(t: torch.Tensor) -> nn.Parameter:
    # Re-label the C++ tensor's Python object as a Parameter without copying: a Parameter is a
    # Tensor with no extra state, and keeping the same object keeps the same TensorImpl.
    if not isinstance(t, nn.Parameter):
        t.__class__ = nn.Parameter
    return t


class _no_swap:
    """torch.__future__'s swap_module_params_on_conversion off for the duration."""

    def __enter__(self):
        self.saved = torch.__future__.get_swap_module_params_on_conversion()
        torch.__future__.set_swap_module_params_on_conversion(False)

    def __exit__(self, *exc):
        torch.__future__.set_swap_module_params_on_conversion(self.saved)


class _MirroredNode(nn.Module):
    """A Python node of a C++ module's tree: its C++ address lives as long as the model that owns
    it, and only the node the model mirrored may act on it (a copy would compute with, or write
    into, the original's tensors). train()/eval() reach its C++ module (LAVIS's
    `visual_encoder.eval()` under a training model): C++ reads each module's own flag."""

    _cpp_path = ""
    _owner = None  # weakref to the CppModule whose tree holds this node (and owns its C++ module)
    _cpp_attributes: frozenset = frozenset()  # torch.nn attributes C++ fixed (a leaf's sizes, eps): read-only

    def _owning_model(self) -> "CppModule":
        owner = self._owner() if self._owner is not None else None
        if owner is None:  # its C++ module went with the model: the address would dangle
            raise RuntimeError(f"{self._cpp_path} ({type(self).__name__}) belongs to a model that no longer exists; "
                               "keep the model alive while using its parts")
        if id(self) not in owner._node_ids:
            raise RuntimeError(f"this {type(self).__name__} is not the module at {self._cpp_path} of the model that "
                               "mirrors it (a copy?); use the model's own module, or deep-copy the whole model")
        return owner

    def _apply(self, fn, recurse=True):  # converts in place, as CppModule._apply (a part's .double())
        with _no_swap():
            return super()._apply(fn, recurse)

    def train(self, mode: bool = True):
        super().train(mode)
        owner = self._owner() if self._owner is not None else None
        if owner is not None and id(self) in owner._node_ids:
            _C.nn.set_training(self._cpp_addr, mode)
        return self

    def __setattr__(self, name, value):
        if name in self._cpp_attributes and name in self.__dict__:
            raise AttributeError(f"{self._cpp_path}.{name} = {value!r}: C++ built this {type(self).__name__} with "
                                 f"{name}={self.__dict__[name]!r} and computes with that, so the new value would "
                                 "change nothing; build the model with it (its config)")
        _refuse_replacing(self, name, value)
        super().__setattr__(name, value)

    def register_parameter(self, name, param):
        if param is not None and name in self._parameters and self._parameters[name] is None and self._cpp_path:
            raise TypeError(f"{self._cpp_path} was built without a {name} in C++, which would never read one given in "
                            f"Python; build the model with it (its config's bias setting)")
        super().register_parameter(name, param)


def _refuse_replacing(parent: nn.Module, name: str, value) -> None:
    """A module (or None) assigned over a C++-run child (peft's LoRA layer) would be ignored by
    C++: refused where it is assigned, before the tree is half changed."""
    old = parent._modules.get(name)
    if old is None or old is value or not isinstance(old, CppNode):
        return
    model = old._owner() if old._owner is not None else None
    if model is not None and id(old) in model._node_ids:
        raise TypeError(f"{old._cpp_path} is run by C++ inside its parent, so the {type(value).__name__} assigned in "
                        "its place would be ignored. Change the C++ module, or wrap a whole layer (layers are called "
                        "through Python); LoRA adapters: tessera.lora.apply_lora (it reads and writes PEFT's files)")


class CppNode(_MirroredNode):
    """A C++ module that C++ itself calls (never Python): it holds parameters and children."""

    def __call__(self, *args, return_dict: Optional[bool] = None, **kwargs):
        """transformers' `return_dict=False` on a part called as a model (a tuple, as the model's
        own call gives: PreTrainedModel.__call__)."""
        out = super().__call__(*args, **kwargs)
        if return_dict is False:
            from .models.outputs import as_tuple

            return as_tuple(out)
        return out

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"{self._cpp_path or type(self).__name__} is run by C++ inside its parent; "
                           "call the model (or one of its layers)")

    def _cpp_address(self) -> int:
        """This node's C++ address, for a bound function to run on, after the owning model pushed
        its rebound parameters to C++ (as its own forward does)."""
        self._sync_parameters()
        return self._cpp_addr

    def _sync_parameters(self) -> None:
        """The owning model pushes its rebound parameters to C++, as before its own forward."""
        self._owning_model()._sync_parameters()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's call on a part that runs layers of its own (a tower inside a parent:
        `clip.vision_model`): activation checkpointing of that part's layers alone. A deep copy of
        the model keeps it; the model's own set_gradient_checkpointing sets every part."""
        try:
            switch = self._cpp.set_gradient_checkpointing
        except AttributeError:
            raise TypeError(f"{self._cpp_path} ({type(self).__name__}) has no layer stack of its own to checkpoint; "
                            "call set_grad_checkpointing on the model") from None
        switch(bool(enable))
        self.__dict__["_checkpointing"] = bool(enable)

    @property
    def _cpp(self):
        """This node's C++ module as its bound class, as a model holds its root: a part that is a
        model of its own (`clip.vision_model`, MAE's `vit`) runs that model's forward through it."""
        self._owning_model()
        try:
            return _C.nn.node_module(self._cpp_addr)
        except TypeError as e:  # an AttributeError, so hasattr() and introspection (torch.jit) see no attribute
            raise AttributeError(str(e)) from None

    def _refuse_hook(self, hook=None, *args, **kwargs):
        why = (f"a hook on {self._cpp_path} ({type(self).__name__}) would never fire: C++ runs this module inside "
               "its parent's forward. Hook a layer (e.g. `...encoder.layers[i]`) or the model instead.")
        source = getattr(hook, "__module__", "") or ""
        if source.startswith("torch.distributed.tensor"):
            self._undo_distribute()
            why += (" torch's tensor parallelism hooks such modules, so it cannot split a tessera model; shard it "
                    "with FSDP2 (train.strategy: fsdp2).")
        elif source.startswith("torch.distributed.fsdp"):
            # accelerate's FSDP2 plugin always makes the input embeddings and [final norm, head]
            # units of their own: their gathers would never run.
            why += (" FSDP2 shards a tessera model by its layers and its root: fully_shard(layer) for each layer, "
                    "then fully_shard(model) (tessera's trainer: train.strategy: fsdp2). accelerate's FSDP2 "
                    "plugin also shards the embeddings, final norm and head on their own, so it cannot prepare a "
                    "tessera model; use accelerate without FSDP (DDP), or fully_shard as above.")
        raise RuntimeError(why)

    def _undo_distribute(self) -> None:
        """torch's tensor parallelism (`distribute_module`) makes a leaf's parameters DTensors
        before it adds the hooks refused here: the tensors C++ holds go back, so the refusal leaves
        the model as it was."""
        held = dict(self._owning_model()._cpp.named_parameters())
        for name, p in list(self._parameters.items()):
            if p is not None and type(p).__name__ == "DTensor":
                self._parameters[name] = _as_parameter(held[f"{self._cpp_path}.{name}"])

    def register_forward_pre_hook(self, hook, **kwargs):
        """torch's weight-computing pre-hooks (torch.nn.utils.prune, weight_norm, spectral_norm)
        read only the module: the parameter sync runs them before C++ does (`_Sync.run`). Any
        other pre-hook would never fire, and is refused."""
        if isinstance(hook, weight_hooks()):
            return super().register_forward_pre_hook(hook, **kwargs)
        return self._refuse_hook(hook)

    register_forward_hook = _refuse_hook
    register_full_backward_hook = _refuse_hook
    register_full_backward_pre_hook = _refuse_hook


class CppLayer(_MirroredNode):
    """A transformer layer: the C++ encoder calls it through `__call__`; the math runs in C++."""

    @opaque_to_compile  # opaque to torch.compile (see CppModule.__init_subclass__)
    def forward(self, hidden_states: torch.Tensor, layer_args: "_C.nn.LayerArgs") -> torch.Tensor:
        self._owning_model()  # a layer kept past its model ran on a freed encoder (a segfault)
        self._sync.run()
        return _C.nn.run_layer(self._encoder_addr, self._index, hidden_states, layer_args)


_CLASSES: Dict[Tuple[str, type, Optional[type]], type] = {}
_METHODS: Dict[str, type] = {}  # C++ class name -> the mixin its nodes inherit

#: torch.nn's class of each tessera leaf: its nodes are instances of it, so code that finds modules
#: by type (`model.apply` initialisers, transformers' no-decay list, `reset_parameters` loops)
#: reaches them as in a pure-PyTorch model; they were silently passed over.
_TORCH_LEAVES: Dict[str, type] = {"Linear": nn.Linear, "Embedding": nn.Embedding, "LayerNorm": nn.LayerNorm,
                                  "RMSNorm": nn.RMSNorm, "Conv2d": nn.Conv2d}
#: What torch's class holds besides the attributes C++ reports (`_C.nn.leaf_attributes`).
_LEAF_DEFAULTS: Dict[type, Dict[str, object]] = {
    nn.Embedding: dict(max_norm=None, norm_type=2.0, scale_grad_by_freq=False, sparse=False),
    nn.LayerNorm: dict(elementwise_affine=True),
    nn.RMSNorm: dict(elementwise_affine=True),
    nn.Conv2d: dict(padding=(0, 0), dilation=(1, 1), transposed=False, output_padding=(0, 0), groups=1,
                    padding_mode="zeros", _reversed_padding_repeated_twice=(0, 0, 0, 0)),
}
#: The attributes `_C.nn.leaf_attributes` reports for each (what C++ built the leaf with).
_LEAF_ATTRIBUTES: Dict[type, Tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features"),
    nn.Embedding: ("num_embeddings", "embedding_dim", "padding_idx"),
    nn.LayerNorm: ("normalized_shape", "eps"),
    nn.RMSNorm: ("normalized_shape", "eps"),
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride"),
}
_HAS_BIAS = (nn.Linear, nn.LayerNorm, nn.Conv2d)  # torch registers `bias` as None when absent


def _node_init(self) -> None:
    nn.Module.__init__(self)  # not torch's leaf __init__: C++ built the module


def node_class(name: str, layer: bool = False, torch_class: Optional[type] = None) -> Type[nn.Module]:
    """The Python class of C++ nodes named `name` (one class per name, so wrap policies can use
    `isinstance(m, tessera.models.clip.CLIPEncoderLayer)`); `torch_class` (a tessera leaf's
    torch.nn twin) is a base too, after the node's own, so C++ still runs its forward."""
    base = CppLayer if layer else CppNode
    key = (name, base, torch_class)
    if key not in _CLASSES:
        bases = (_METHODS[name], base) if name in _METHODS else (base,)
        body = {"__module__": "tessera.nodes", "__qualname__": name}
        if torch_class is not None:
            bases, body["__init__"] = bases + (torch_class,), _node_init
            body["_cpp_attributes"] = frozenset(_LEAF_ATTRIBUTES[torch_class]) | set(_LEAF_DEFAULTS.get(torch_class, {}))
        _CLASSES[key] = type(name, bases, body)
    return _CLASSES[key]


def _torch_leaf(name: str, addr: int) -> Tuple[Optional[type], Dict[str, object]]:
    """torch.nn's twin of the node at `addr` and its attributes, if it is a tessera leaf."""
    twin = _TORCH_LEAVES.get(name)
    attrs = _C.nn.leaf_attributes(addr) if twin is not None else None
    if attrs is None:  # a user's C++ module that happens to share the name
        return None, {}
    return twin, {**_LEAF_DEFAULTS.get(twin, {}), **attrs}


def node_methods(name: str):
    """Class decorator: every mirrored C++ node of class `name` inherits the decorated mixin's
    methods. They are explicit calls (the node's forward still refuses), written against
    `self._cpp_address()`, so a model class that mixes them in too runs the very same code::

        @node_methods("CLIPVisionTransformer")
        class CLIPVisionFeatures:
            def forward_features(self, pixel_values):
                return _C.clip.vision_forward_intermediates(self._cpp_address(), pixel_values, [])["last_hidden_state"]

    One mixin per name: a second one is an error."""
    def register(mixin: type) -> type:
        if name in _METHODS:
            raise ValueError(f"nodes of {name} already take their methods from {_METHODS[name].__qualname__}")
        _METHODS[name] = mixin
        for (n, base, twin), cls in _CLASSES.items():
            if n == name:  # made before the family registered: give it the methods now
                cls.__bases__ = (mixin, base) + ((twin,) if twin else ())
        return mixin
    return register


@node_methods("Linear")
class _CallableLinear:
    """A linear node called from Python (transformers' get_output_embeddings()(hidden), a
    projection reused in a user's head) runs its C++ forward, its LoRA adapter included."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _C.nn.run_linear(self._cpp_address(), input)


@node_methods("Embedding")
class _CallableEmbedding:
    """An embedding node called from Python (transformers' get_input_embeddings()(ids), to build
    inputs_embeds): its C++ lookup, ids checked against its size."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _C.nn.run_embedding(self._cpp_address(), input)


#: The live Python model of each wrapped C++ module and of each of its parts, by address: a second
#: wrapper (of the model, or of a part's handle) took over the first one's layer callers, so hooks
#: and FSDP wrappers on the first were silently bypassed.
_WRAPPERS: "weakref.WeakValueDictionary[int, nn.Module]" = weakref.WeakValueDictionary()


class CppModule(nn.Module):
    """Wraps a bound C++ module (see `tessera/python/module_binding.h`).

    Example::

        block = tessera.CppModule(my_ext.MyBlock(64))
        opt = torch.optim.AdamW(block.parameters())
    """

    def __init_subclass__(cls, **kwargs):
        """torch.compile treats a tessera module as one opaque call: its forward runs C++ (which
        Dynamo cannot trace), and tracing the Python glue around it specialised on each layer's
        index and recompiled until Dynamo's limit. Code around the module still compiles."""
        super().__init_subclass__(**kwargs)
        # tessera's own forwards only (the class's or a mixin's it shares with a node): a user's
        # subclass that adds Python to forward compiles it (its call into the tessera forward stays
        # one opaque call).
        if cls.forward.__module__.startswith("tessera."):
            disable_when_dynamo_loads(cls)

    def __init__(self, cpp):
        super().__init__()
        if not callable(getattr(cpp, "nodes", None)):
            raise TypeError(f"CppModule wraps a C++ module bound with tessera::python::bind_module "
                            f"(tessera/python/module_binding.h), got {type(cpp).__name__}")
        buffers = [name for name, _ in cpp.named_buffers()]
        if buffers:  # only parameters are pushed to C++: .to(), load_state_dict and assignment left these behind
            raise TypeError(f"{type(cpp).__name__} holds buffers ({', '.join(buffers[:3])}): tessera modules keep none "
                            f"(compute constants in forward, or make them parameters with requires_grad=False)")
        if torch.get_default_device().type == "meta" and any(not p.is_meta for _, p in cpp.named_parameters()):
            raise RuntimeError(f"{type(cpp).__name__} was built with memory under `with torch.device('meta')`: build it "
                               f"with tessera.cpp_build.build_cpp({type(cpp).__name__}, *args) to make meta parameters")
        root = next(addr for path, _, _, addr in cpp.nodes() if not path)
        owner = _WRAPPERS.get(root)
        if owner is not None:  # its layer caller and hooks would move to the new one
            what = "wrapped by" if owner._cpp_addr == root else "a part of"
            raise RuntimeError(f"this {type(cpp).__name__} is already {what} a live {type(owner).__name__}; use "
                               "that module (or copy.deepcopy it)")
        object.__setattr__(self, "_cpp", cpp)
        self._mirror(cpp)
        device = torch.get_default_device()  # `with torch.device(...)`: where the model is wanted
        if device.type not in ("cpu", "meta") and any(p.device != device for p in self.parameters()):
            self.to(device)

    def __setattr__(self, name, value):
        if "_modules" in self.__dict__:
            _refuse_replacing(self, name, value)
        super().__setattr__(name, value)

    @property
    def cpp(self):
        """The underlying C++ module handle."""
        return self._cpp

    def _mirror(self, cpp, modes: Optional[Dict[str, bool]] = None) -> None:
        """Builds the Python tree of `cpp`'s nodes. `modes`: each path's train/eval flag to keep
        (default: this tree's own, so a re-mirror after apply_lora keeps a frozen tower in eval)."""
        modes = {n: m.training for n, m in self.named_modules()} if modes is None else modes
        checkpointing = {n: m.__dict__["_checkpointing"] for n, m in self.named_modules()
                         if n and "_checkpointing" in m.__dict__}  # a part's own switch; C++ keeps it
        nodes: Dict[str, nn.Module] = {"": self}
        kinds: Dict[str, Tuple[str, int]] = {}
        owner = weakref.ref(self)  # no cycle: the nodes live in this tree
        for path, cls, kind, addr in cpp.nodes():
            kinds[path] = (kind, addr)
            if not path:
                object.__setattr__(self, "_cpp_addr", addr)
                continue
            parent, _, name = path.rpartition(".")
            if kind == "list":
                node = nn.ModuleList()
            else:
                twin, attrs = _torch_leaf(cls, addr) if kind != "layer" else (None, {})
                node = node_class(cls, layer=kind == "layer", torch_class=twin)()
                node.__dict__.update(attrs)
                node._cpp_path, node._cpp_addr, node._owner = path, addr, owner
            nodes[parent]._modules[name] = node
            nodes[path] = node
        for name, tensor in cpp.named_parameters():
            owner, _, leaf = name.rpartition(".")
            nodes[owner]._parameters[leaf] = _as_parameter(tensor)
        for path, flag in checkpointing.items():
            if path in nodes:
                nodes[path].__dict__["_checkpointing"] = flag
        for addr in [a for a, m in _WRAPPERS.items() if m is self]:  # a re-mirror's old parts
            del _WRAPPERS[addr]
        for _, addr in kinds.values():  # the root and every part: none may be wrapped again
            _WRAPPERS[addr] = self
        for node in nodes.values():
            if isinstance(node, _HAS_BIAS) and "bias" not in node._parameters:
                node._parameters["bias"] = None  # as torch's leaf without one

        # Which Python call runs each node: the layer above it, or the root's forward.
        layer_paths = [p for p, (k, _) in kinds.items() if k == "layer"]

        def entry(path: str) -> str:
            for lp in layer_paths:
                if path == lp or path.startswith(lp + "."):
                    return lp
            return ""

        syncs: Dict[str, _Sync] = {p: _Sync() for p in ["", *layer_paths]}
        for name, tensor in cpp.named_parameters():
            owner, _, leaf = name.rpartition(".")
            s = syncs[entry(owner)]
            s.slots.append((nodes[owner], leaf, kinds[owner][1]))
            s.seen.append(tensor._cdata)
        for path, node in nodes.items():
            if not path or path in layer_paths:
                continue  # layers may be wrapped; their encoder's caller checks them
            parent, _, name = path.rpartition(".")
            syncs[entry(parent) if parent else ""].children.append((nodes[parent], name, node, path))
        for lp in layer_paths:
            nodes[lp]._sync = syncs[lp]
        object.__setattr__(self, "_node_ids", frozenset(id(n) for n in nodes.values()))
        object.__setattr__(self, "_root_sync", syncs[""])
        object.__setattr__(self, "_syncs", list(syncs.values()))

        # Route each encoder's layer loop through the Python layer nodes.
        object.__setattr__(self, "_layer_callers", [])
        for path, (kind, addr) in kinds.items():
            if kind != "encoder":
                continue
            lists = [p for p, (k, _) in kinds.items() if k == "list" and p.rpartition(".")[0] == path]
            if len(lists) != 1:
                continue
            layers = nodes[lists[0]]
            for i, layer in enumerate(layers):
                layer._encoder_addr, layer._index = addr, i
            caller = _LayerCaller(layers, list(layers), addr)
            _C.nn.set_layer_caller(addr, caller)
            self._layer_callers.append(caller)
        self.train(cpp.is_training())
        for name, module in self.named_modules():  # parents first: a child's own flag is set after its parent's
            if name and modes.get(name, module.training) != module.training:
                module.train(modes[name])

    def _added_in_python(self) -> List[str]:
        """The outermost modules Python added to the tree C++ mirrors (wrappers,
        parametrizations, replaced children), by name."""
        added: List[str] = []
        for name, m in self.named_modules():
            if id(m) not in self._node_ids and not any(name.startswith(a + ".") for a in added):
                added.append(name)
        return added

    def _edited_in_python(self) -> bool:
        """Whether Python changed the tree C++ mirrors: a module added or a layer list edited
        (another length, another order). C++ alone would run the tree as built; the layer lists'
        callers run, or refuse, what Python holds."""
        return bool(self._added_in_python()) or any(c.edited() for c in self._layer_callers)

    def _sync_parameters(self) -> None:
        """Call before handing control to C++: pushes rebound parameters of the root's part."""
        refuse_capture()
        self._root_sync.run()

    def __prepare_scriptable__(self):  # torch.jit.script asks this first
        raise RuntimeError(_NOT_CAPTURED.format(how="torch.jit.script cannot compile"))

    def _cpp_address(self) -> int:
        """The root's C++ address after pushing rebound parameters (what node methods use, so a
        model and a node of the same C++ class share one implementation)."""
        self._sync_parameters()
        return self._cpp_addr

    def _sync_all(self) -> None:
        """Pushes every rebound parameter to C++ now (after load_state_dict(assign=True))."""
        for s in self._syncs:
            s.run()

    def train(self, mode: bool = True):
        super().train(mode)
        self._cpp.train(mode)
        return self

    # torch.__future__.set_swap_module_params_on_conversion(True) makes .to()/.double() and
    # load_state_dict swap each parameter's TensorImpl for a new one, which C++ still holds: every
    # parameter failed ("Couldn't swap"). A tessera module converts in place, as with the flag off.
    def _apply(self, fn, recurse=True):
        with _no_swap():
            return super()._apply(fn, recurse)

    def load_state_dict(self, *args, **kwargs):
        with _no_swap():
            return super().load_state_dict(*args, **kwargs)

    @opaque_to_compile  # as every subclass's forward (__init_subclass__)
    def forward(self, *args, **kwargs):
        self._sync_parameters()
        return self._cpp.forward(*args, **kwargs)

    def __deepcopy__(self, memo):
        # A deep copy needs its own C++ module (clone() copies every tensor), whose Python tree is
        # mirrored afresh: modules added in Python (wrappers, parametrizations, replaced children)
        # would be dropped silently, so they are refused; hooks and flags are carried over by path.
        foreign = self._added_in_python()
        if foreign:
            raise TypeError(f"copy.deepcopy({type(self).__name__}): {len(foreign)} module(s) were added in Python "
                            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): wrappers, "
                            "parametrizations or replaced children, which a copy of the C++ module cannot hold; "
                            "copy the model before adding them")
        renamed = sorted(set(dict(self.named_parameters())) ^ {name for name, _ in self._cpp.named_parameters()})
        if renamed:  # prune's weight_orig, weight_norm's weight_g / weight_v in place of C++'s weight
            raise TypeError(f"copy.deepcopy({type(self).__name__}): its parameters differ from its C++ module's "
                            f"({', '.join(renamed[:3])}{', ...' if len(renamed) > 3 else ''}: pruning or weight "
                            "norm), which a copy of the C++ module cannot hold; copy the model before applying them")
        self._sync_all()  # C++ may still hold tensors a functional_call passed in
        clone = self.__class__.__new__(self.__class__)
        nn.Module.__init__(clone)
        meta = {p.is_meta for _, p in self._cpp.named_parameters()}
        if len(meta) > 1:  # C++ clones into parameters made on one device
            raise TypeError(f"copy.deepcopy({type(self).__name__}): some parameters are on the meta device and some "
                            "are not; materialise the model (to_empty) before copying it")
        with on_meta(meta == {True}):
            object.__setattr__(clone, "_cpp", self._cpp.clone())
        memo[id(self)] = clone  # a hook or attribute that refers to the model refers to the copy
        skip = {"_cpp", "_cpp_addr", "_root_sync", "_syncs"}
        for key, value in self.__dict__.items():
            if key not in clone.__dict__ and key not in skip:
                clone.__dict__[key] = copy.deepcopy(value, memo)
        clone._mirror(clone._cpp, {n: m.training for n, m in self.named_modules()})  # as torch's deepcopy keeps them
        flags = {name: p.requires_grad for name, p in self.named_parameters()}
        for name, q in clone.named_parameters():
            q.requires_grad_(flags[name])
        nodes = dict(clone.named_modules())
        for name, module in self.named_modules():  # hooks as torch's deepcopy copies them
            for key, value in module.__dict__.items():
                if key.startswith("_") and "hooks" in key and isinstance(value, dict) and value:
                    nodes[name].__dict__[key] = copy.deepcopy(value, memo)
        if clone.__dict__.get("_checkpointing"):  # the flag was copied; C++'s clone starts without it
            clone.set_gradient_checkpointing(True)
        for name, module in self.named_modules():  # a part's own switch, set after the model's
            if name and "_checkpointing" in module.__dict__:
                nodes[name].set_grad_checkpointing(module.__dict__["_checkpointing"])
        return clone

    def __reduce_ex__(self, protocol):
        saving = "save_pretrained(dir) / tessera.from_pretrained(dir) or " if hasattr(self, "save_pretrained") else ""
        raise TypeError(f"{type(self).__name__} wraps a C++ module and cannot be pickled; use {saving}state_dict()")

    def extra_repr(self) -> str:
        return f"cpp={type(self._cpp).__name__}"
