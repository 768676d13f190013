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


def check_tower(model, folder: str, config: Dict) -> None:
    """The Q-Former learned stage 1 on one tower's tokens: stage 2 must feed it the same ones, that
    tower's layer, every token (the class token too), its weights (LAVIS and transformers keep the
    tower inside the one BLIP-2 model, so they cannot differ there)."""
    import torch

    from .._warn import warn
    from ..chat import run_recipe
    from .weights import load_weights

    recipe = run_recipe(folder)
    tower = recipe.get("tower")
    if recipe.get("task") != "blip2_pretrain" or not isinstance(tower, dict):
        return
    layer = tower.get("layer", -1)
    # stage 1's layer indexes forward_intermediates (0: the first block's output), LLaVA's
    # vision_feature_layer hidden_states (0: the embeddings); negative indices agree
    want = layer + 1 if isinstance(layer, int) and layer >= 0 else layer
    here = (config.get("vision_feature_layer"), config.get("vision_feature_select_strategy"))
    if here != (want, "full"):
        raise ValueError(f"init.projector {folder}: its Q-Former learned on tower layer {layer!r} (stage 1's "
                         f"tower.layer), every token; this config feeds it vision_feature_layer {here[0]!r}, "
                         f"{here[1]!r}: set model.config.vision_feature_layer: {want} and "
                         "vision_feature_select_strategy: full")
    source = tower.get("checkpoint")
    try:
        from ..train.checkpoint import resolve_checkpoint

        theirs = load_weights(resolve_checkpoint(source, "stage 1's tower.checkpoint")) if source else None
    except (FileNotFoundError, ValueError) as e:
        warn(f"init.projector {folder}: its tower ({source}) cannot be read to check it against init.vision_tower "
             f"({e})")
        return
    ours, theirs = model.state_dict(), theirs or {}
    if any(k.startswith("vision_model.") for k in theirs):  # a CLIPModel's (a CLIPVisionModel's has no prefix)
        theirs = {k[len("vision_model."):]: v for k, v in theirs.items() if k.startswith("vision_model.")}
    pairs = [(k, v, ours["vision_tower." + k]) for k, v in theirs.items() if "vision_tower." + k in ours]
    differ = [k for k, v, own in pairs if not torch.equal(v.to(own.dtype), own)] or (["every name"] if not pairs else [])
    if differ:
        raise ValueError(f"init.projector {folder}: its Q-Former learned on the tower {source}, whose weights differ "
                         f"from init.vision_tower's ({len(differ)} tensors, e.g. {differ[0]}): start the tower from "
                         "the one stage 1 read")


def init_from_stage1(model, folder: str, config: Dict) -> None:
    import os

    from .weights import load_part, load_weights

    if os.path.isfile(folder):
        raise ValueError(f"init.projector {folder}: a qformer projector starts from a BLIP-2 stage-1 run folder, "
                         "not a file")
    check_stage1(folder, config)
    check_tower(model, folder, config)
    load_part(model, load_weights(folder), folder, r"^(?=query_tokens$|qformer\.)", "multi_modal_projector.",
              fresh="multi_modal_projector.language_projection.")


register_projector_hooks("qformer", ProjectorHooks(projector_params, projector_activations, init_from_stage1,
                                                   init_hint="train BLIP-2 stage 1 first: make blip2"))
