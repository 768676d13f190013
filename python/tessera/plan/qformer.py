"""BLIP-2's Q-Former for `tessera plan`: its parameters by name from the config (LLaVA's `qformer`
projector and the stage-1 `Blip2ForPretraining`), and what autograd keeps for its passes.

A Q-Former layer is BERT's post-norm layer, not the pre-norm layer `Stack` describes: queries (and,
in stage 1, text) share self-attention, the queries alone cross-attend to the image every
`cross_attention_frequency` layers, and queries and text have their own feed-forward. Its saved
bytes were fitted with saved-tensor hooks over 17 shapes each (tests/python/test_plan_tasks.py
holds the plan to what autograd saves), per pass of `tokens` = queries + text positions:
- "hidden" per [B, tokens, H] and "mlp" per [B, tokens, I] element of every layer;
- "kv" per [B, image tokens, H] and "query" per [B, queries, H] of every cross-attention layer;
- "scores" per [B, heads, tokens, tokens] and "cross_scores" per [B, heads, queries, image tokens]
  element: attention dropout keeps the probabilities and their mask (SDPA's flash kernel, which
  keeps none of them, runs only without it);
- "image" per [B, image tokens, encoder width] (the key/value projections' input), "mask" per
  [B, tokens, tokens] of a masked pass, and the rest of stage 1 (the heads) per text token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from .params import LINEARS, Params, _linear, feature_width

# Least-squares fits without negative terms (residuals within 1 % in fp32 and 4 % in bf16
# autocast; autocast's bf16 copies of the weight matrices, fitted at 2 bytes per element, are per
# model: ModelShape.autocast_matrices), with dropout (True) or without: "queries" is LLaVA's projector (no text, no mask; "proj": the output
# projection's input per [B, queries, H]), "joint" stage 1's [queries; text] passes (its heads:
# "logits" per text token and vocabulary entry, "text" per text token and H, "itc" per query and
# ITC feature).
_Q = ("hidden", "mlp", "kv", "query", "scores", "cross_scores", "image", "proj")
_J = ("hidden", "mlp", "kv", "query", "scores", "cross_scores", "image", "mask", "logits", "text", "itc")
SAVED_QFORMER = {
    "queries": {("fp32", True): dict(zip(_Q, (40, 8, 8, 20.5, 12, 12, 4, 3.5))),
                ("fp32", False): dict(zip(_Q, (31, 8, 8, 17.5, 0, 0.5, 4, 0))),
                ("bf16", True): dict(zip(_Q, (29, 5.5, 12, 11.5, 12.5, 13.5, 2, 0))),
                ("bf16", False): dict(zip(_Q, (25.5, 6, 12, 14.5, 0.5, 2, 1.5, 0)))},
    "joint": {("fp32", True): dict(zip(_J, (42.5, 7.5, 5.5, 23.5, 11.5, 13, 5, 4, 2.75, 63.5, 34))),
              ("fp32", False): dict(zip(_J, (33, 8, 6.5, 19.5, 0, 0.5, 4.5, 4, 4, 47.5, 25.5))),
              ("bf16", True): dict(zip(_J, (31.5, 4.5, 10, 18.5, 12, 13.5, 4.5, 0, 3.75, 65, 0))),
              ("bf16", False): dict(zip(_J, (32, 5, 11.5, 19.5, 1, 0.5, 3.75, 0, 4.75, 33, 0)))},
}


LABEL = "Q-Former, all layers"  # its row in the plan


@dataclass
class QFormerPass:
    """One forward through the Q-Former: `batch` rows (per sample of the recipe's batch) of
    `queries` + `text` positions reading `image` tokens; `masked`: a [B, L, L] attention mask."""
    batch: int
    queries: int
    text: int
    image: int
    masked: bool = False


def qformer_params(q: Dict, prefix: str, text: bool) -> Tuple[Params, LINEARS]:
    """Blip2QFormerModel's encoder layers and embedding norm (text: the text feed-forward too)."""
    h, i, e = q["hidden_size"], q["intermediate_size"], q["encoder_hidden_size"]
    out: Params = [(prefix + "layernorm.weight", h), (prefix + "layernorm.bias", h)]
    lin: LINEARS = []

    def attention(p: str, width: int) -> None:
        for name, fan_in in (("query", h), ("key", width), ("value", width)):
            _linear(out, lin, f"{p}.attention.{name}", fan_in, h, True)
        _linear(out, lin, f"{p}.output.dense", h, h, True)
        out.extend([(f"{p}.output.LayerNorm.weight", h), (f"{p}.output.LayerNorm.bias", h)])

    def feed_forward(p: str, suffix: str) -> None:
        _linear(out, lin, f"{p}.intermediate{suffix}.dense", h, i, True)
        _linear(out, lin, f"{p}.output{suffix}.dense", i, h, True)
        out.extend([(f"{p}.output{suffix}.LayerNorm.weight", h), (f"{p}.output{suffix}.LayerNorm.bias", h)])

    for n in range(q["num_hidden_layers"]):
        p = f"{prefix}encoder.layer.{n}"
        attention(p + ".attention", h)
        if n % q["cross_attention_frequency"] == 0:
            attention(p + ".crossattention", e)
        if text:
            feed_forward(p, "")
        feed_forward(p, "_query")
    return out, lin


def projector_config(c: Dict) -> Dict:
    """The `qformer` projector's Q-Former config, reading the tower's features (feature_width)."""
    return dict(c["projector_config"], encoder_hidden_size=feature_width(c))


def projector_params(c: Dict, prefix: str) -> Tuple[Params, LINEARS]:
    """LLaVA's `qformer` projector: learned queries, the Q-Former, `language_projection`."""
    q = projector_config(c)
    out, lin = qformer_params(q, prefix + "qformer.", text=False)
    out.insert(0, (prefix + "query_tokens", c["projector_num_queries"] * q["hidden_size"]))
    _linear(out, lin, prefix + "language_projection", q["hidden_size"], c["text_config"]["hidden_size"],
            c.get("multimodal_projector_bias", True))
    return out, lin


def projector_activations(shape, c: Dict, images: int, patches: int) -> None:
    """What the `qformer` projector keeps when it trains (ProjectorHooks.plan_activations): its
    queries read every image's tokens (the class token too under `full` selection); LLaVA's
    checkpointing reaches the tower and the LM, not the projector."""
    q, n = projector_config(c), c["projector_num_queries"]
    tokens = patches + (1 if c.get("vision_feature_select_strategy") == "full" else 0)
    shape.fitted = fitted(q, [QFormerPass(images, n, 0, tokens)], "queries",
                          lambda k: k["proj"] * images * n * q["hidden_size"], checkpointable=False)
    shape.fitted_label = LABEL
    shape.autocast_matrices = qformer_matrices(q, text=False) + q["hidden_size"] * c["text_config"]["hidden_size"]


def pretraining_params(c: Dict) -> Tuple[Params, LINEARS]:
    """Blip2ForPretraining: queries, temperature, text embeddings, the Q-Former with text input,
    ITC projections, ITM head and BERT's LM head (its decoder tied to the word embeddings)."""
    q = c["qformer_config"]
    h, e, v = q["hidden_size"], c["image_text_hidden_size"], q["vocab_size"]
    out: Params = [("query_tokens", c["num_query_tokens"] * h), ("temp", 1),
                   ("embeddings.word_embeddings.weight", v * h),
                   ("embeddings.position_embeddings.weight", q["max_position_embeddings"] * h)]
    body, lin = qformer_params(q, "qformer.", text=True)
    out += body
    for name, fan_out in (("vision_projection", e), ("text_projection", e), ("itm_head", 2)):
        _linear(out, lin, name, h, fan_out, True)
    out.append(("cls.predictions.bias", v))
    _linear(out, lin, "cls.predictions.transform.dense", h, h, True)
    out += [("cls.predictions.transform.LayerNorm.weight", h), ("cls.predictions.transform.LayerNorm.bias", h)]
    return out, lin


def _dropout(q: Dict) -> bool:
    return (q.get("hidden_dropout_prob", 0.1) or 0) > 0 or (q.get("attention_probs_dropout_prob", 0.1) or 0) > 0


def constants(q: Dict, mode: str, kind: str) -> Dict[str, float]:
    """The fitted bytes for a Q-Former config under an activation mode (fp32, bf16, or
    bf16_params, FSDP2's bf16 parameters, estimated as bf16)."""
    return SAVED_QFORMER[kind][("fp32" if mode == "fp32" else "bf16", _dropout(q))]


def _cross_layers(q: Dict) -> int:
    """Layers with cross-attention: every `cross_attention_frequency`-th, the first included."""
    return len(range(0, q["num_hidden_layers"], q["cross_attention_frequency"]))


def qformer_activations(q: Dict, passes: Sequence[QFormerPass], mode: str, kind: str) -> int:
    """Bytes autograd keeps per sample for `passes` through a Q-Former that trains."""
    c = constants(q, mode, kind)
    h, i, heads = q["hidden_size"], q["intermediate_size"], q["num_attention_heads"]
    layers, cross = q["num_hidden_layers"], _cross_layers(q)
    total = 0.0
    for p in passes:
        tokens = p.queries + p.text
        total += p.batch * (layers * (c["hidden"] * tokens * h + c["mlp"] * tokens * i
                                      + c["scores"] * heads * tokens * tokens)
                            + cross * (c["kv"] * p.image * h + c["query"] * p.queries * h
                                       + c["cross_scores"] * heads * p.queries * p.image)
                            + c["image"] * p.image * q["encoder_hidden_size"]
                            + c.get("mask", 0) * (tokens * tokens if p.masked else 0))
    return int(total)


def checkpointed(q: Dict, passes: Sequence[QFormerPass], mode: str, kind: str, rebuild: bool = True) -> int:
    """The same under activation checkpointing: each layer keeps its input, the embeddings their
    output, and the image features are kept (what autograd saves, tested), and backward rebuilds
    one layer of the largest pass (an estimate)."""
    h, layers = q["hidden_size"], q["num_hidden_layers"]
    kept = sum(p.batch * ((layers + 1) * 4 * (p.queries + p.text) * h + 4 * p.image * q["encoder_hidden_size"])
               for p in passes)
    if not rebuild:
        return kept
    one = max(qformer_activations(dict(q, num_hidden_layers=1, cross_attention_frequency=1), [p], mode, kind)
              for p in passes)
    return kept + one


def qformer_matrices(q: Dict, text: bool) -> int:
    """Weight-matrix elements (what bf16 autocast copies)."""
    h, i, e = q["hidden_size"], q["intermediate_size"], q["encoder_hidden_size"]
    return q["num_hidden_layers"] * (4 * h * h + (4 if text else 2) * h * i) + _cross_layers(q) * (2 * h * h + 2 * e * h)


def sample_passes(c: Dict, text: int, itm: bool, itg: bool, image: int) -> List[QFormerPass]:
    """Stage 1's passes per sample: ITC (queries and text under one mask), ITM over three pairs
    (the positive, a negative image, a negative text), ITG."""
    n = c["num_query_tokens"]
    passes = [QFormerPass(1, n, text, image, True)]
    if itm:
        passes.append(QFormerPass(3, n, text, image, True))
    if itg:
        passes.append(QFormerPass(1, n, text, image, True))
    return passes


def fitted(q: Dict, passes: Sequence[QFormerPass], kind: str, outside, checkpointable: bool = True) -> Dict[str, int]:
    """`ModelShape.fitted`: per-sample bytes for every activation mode, with and without
    checkpointing (`checkpointable`: whether the model's set_gradient_checkpointing reaches the
    Q-Former; LLaVA's reaches its tower and LM, not the projector); `outside(constants)` adds what
    the heads around the Q-Former keep."""
    out = {}
    for mode in ("fp32", "bf16", "bf16_params"):
        extra = int(outside(constants(q, mode, kind)))
        out[mode] = qformer_activations(q, passes, mode, kind) + extra
        out[mode + "+ckpt"] = (checkpointed(q, passes, mode, kind) + extra) if checkpointable else out[mode]
    return out
