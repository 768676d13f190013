"""A LLaVA projector type as the Python tools see it, beside its C++ module (registered there by
name, `list_projectors`): what `tessera plan` counts for it, and how the LLaVA task's
`init.projector` starts it from another run. A family that registers a C++ projector registers its
hooks here too, from its own Python module (BLIP-2's `qformer`: models/blip2_projector.py), so
no shared file names it; the built-in MLPs and resampler register theirs below. A type without
hooks (an extension's until it registers them) still builds, trains and generates; only the
planner and `init.projector` refuse it, by name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

from ..plan.params import (mlp_projector_activations, mlp_projector_params, resampler_activations,
                           resampler_params)


@dataclass(frozen=True)
class ProjectorHooks:
    #: (llava config, prefix) -> (parameters [(name, numel)], linear layers [(path, in, out)]).
    plan_params: Callable
    #: (ModelShape, llava config, images per sample, patches per image): adds to the shape what
    #: autograd keeps for the projector when gradients flow through it.
    plan_activations: Callable
    #: (model, folder, llava config): loads the projector's part of another run's checkpoint;
    #: None: `init.projector` is refused for this type.
    init_from_run: Optional[Callable] = None
    #: Said when `init.projector` holds no checkpoint ("train BLIP-2 stage 1 first: make blip2").
    init_hint: str = ""


_HOOKS: Dict[str, ProjectorHooks] = {}


def register_projector_hooks(name: str, hooks: ProjectorHooks) -> None:
    """Registers hooks for `name`, a projector the C++ registry builds (import its extension
    first), once: another set under a taken name is a ValueError (the same functions again, as on
    a module reload, replace)."""
    from .. import _C

    known = _C.llava.list_projectors()
    if name not in known:
        raise ValueError(f"register_projector_hooks: no projector {name!r} is registered in C++ (registered: "
                         f"{', '.join(known)}); import the extension that registers it first")
    old = _HOOKS.get(name)
    if old is not None and _identity(old) != _identity(hooks):
        raise ValueError(f"projector {name!r} already has Python hooks (from {_identity(old)[0][0]})")
    _HOOKS[name] = hooks


def projector_hooks(name: str, what: str) -> ProjectorHooks:
    """`name`'s hooks; a ValueError naming `what` needs them and the types that have them."""
    if name not in _HOOKS:
        raise ValueError(f"{what}: projector_type {name!r} has no Python hooks (types that have them: "
                         f"{', '.join(sorted(_HOOKS))}); register them with "
                         "tessera.models.projectors.register_projector_hooks")
    return _HOOKS[name]


def _identity(h: ProjectorHooks):
    """What a module reload keeps of each hook: where it is defined (a function's module, name
    and line; another callable's type)."""
    def where(f):
        if f is None:
            return None
        code = getattr(f, "__code__", None)
        owner = f if code is not None else type(f)
        return (getattr(owner, "__module__", None), getattr(owner, "__qualname__", None),
                code.co_firstlineno if code is not None else None)

    return tuple(where(f) for f in (h.plan_params, h.plan_activations, h.init_from_run))


def _init_mlp(model, path: str, config) -> None:
    from .llava_original import load_llava_projector

    load_llava_projector(model, path, config)


for _name in ("linear", "mlp2x_gelu"):  # init.projector: LLaVA's mm_projector.bin, or a LLaVA run
    register_projector_hooks(_name, ProjectorHooks(mlp_projector_params, mlp_projector_activations, _init_mlp,
                                                   "LLaVA's stage-1 mm_projector.bin, or a LLaVA run"))
register_projector_hooks("resampler", ProjectorHooks(resampler_params, resampler_activations))
