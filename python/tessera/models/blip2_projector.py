"""BLIP-2's Q-Former as a LLaVA projector (`projector_type: qformer`, C++:
models/blip2/qformer_projector.cpp): its hooks for the Python tools (models/projectors.py). The
planner counts it with plan/qformer.py; `init.projector` starts it from a BLIP-2 stage-1 run (its
queries and Q-Former; `language_projection` starts fresh, as BLIP-2's stage 2 does)."""
from __future__ import annotations

import json
from typing import Dict

from .. import _C
from ..plan.qformer import projector_activations, projector_params
from .projectors import ProjectorHooks, register_projector_hooks

#: What the Q-Former computes without changing a tensor's shape: loaded by name and shape alone, a
#: stage-1 run of other heads or cross-attention layers ran as another model.
ARCHITECTURE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "cross_attention_frequency", "hidden_act", "layer_norm_eps")


def check_stage1(folder: str, config: Dict) -> None:
    """The stage-1 run's Q-Former and the projector's must be one architecture (both resolved with
    their defaults), and its queries as many as projector_num_queries."""
    from .pretrained import read_config

    saved = read_config(folder)
    theirs = json.loads(_C.blip2.resolve_qformer_config(json.dumps(saved.get("qformer_config") or {})))
    ours = json.loads(_C.blip2.resolve_qformer_config(json.dumps(config.get("projector_config") or {})))
    differ = [f"{k}: {theirs[k]!r} there, {ours[k]!r} here" for k in ARCHITECTURE if theirs[k] != ours[k]]
    if saved.get("num_query_tokens") != config.get("projector_num_queries"):
        differ.append(f"queries: num_query_tokens {saved.get('num_query_tokens')!r} there, projector_num_queries "
                      f"{config.get('projector_num_queries')!r} here")
    if differ:
        raise ValueError(f"init.projector {folder}: its Q-Former is not the one projector_config describes "
                         f"({'; '.join(differ)}); give projector_config the stage-1 run's qformer_config")


def init_from_stage1(model, folder: str, config: Dict) -> None:
    from .weights import load_part, load_weights

    check_stage1(folder, config)
    load_part(model, load_weights(folder), folder, r"^(?=query_tokens$|qformer\.)", "multi_modal_projector.",
              fresh="multi_modal_projector.language_projection.")


register_projector_hooks("qformer", ProjectorHooks(projector_params, projector_activations, init_from_stage1,
                                                   init_hint="train BLIP-2 stage 1 first: make blip2"))
