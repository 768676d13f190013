"""LAVIS's BLIP-2 stage 1 in plain torch ops, for test_blip2_pretrain.py.

A from-scratch port of lavis/models/blip2_models/blip2_qformer.py `Blip2Qformer.forward` over
lavis/models/blip2_models/Qformer.py (BertEmbeddings, BertSelfAttention with past_key_value,
BertLayer's query/text branches, BertModel.get_extended_attention_mask, BertLMHeadModel). It reads
the weights by tessera's parameter names (a dict name -> tensor), so gradients can be compared
name by name. Each pass runs the way LAVIS runs it, not the way tessera does:

* ITC: the image pass (queries only, cross-attending to the image) and the text pass (text only)
  are two separate BertModel calls;
* ITM: one pass over [queries; text] with a 2-D padding mask;
* ITG: the text pass reads the image pass's per-layer self-attention key/value cache
  (past_key_values) and runs as a decoder (causal over text, every cached query visible).

Only what differs from LAVIS by design (documented in tessera.models.blip2_pretraining) follows
tessera: with `image_ids`, ITC targets are spread over same-id pairs; the hard negatives are given.
"""
import math

import torch
import torch.nn.functional as F

# LAVIS's additive mask value (BertModel.get_extended_attention_mask): (1 - mask) * -10000.
MASK_VALUE = -10000.0


def lavis_mask01(attention_mask, input_shape, is_decoder, has_query=False):
    """BertModel.get_extended_attention_mask for a 2-D padding mask, before the -10000 transform:
    [B, 1 or rows, columns] 0/1. `input_shape` is (B, T) of input_ids (LAVIS passes input_ids.shape
    for decoders, so the queries are the prefix that `attention_mask` has in addition)."""
    if not is_decoder:
        return attention_mask[:, None, :]
    batch, seq = input_shape
    ids = torch.arange(seq)
    causal = (ids[None, None, :].repeat(batch, seq, 1) <= ids[None, :, None]).to(attention_mask.dtype)
    if causal.shape[1] < attention_mask.shape[1]:
        prefix = attention_mask.shape[1] - causal.shape[1]
        if has_query:  # UniLM style: query rows see no text
            causal = torch.cat([torch.zeros(batch, prefix, seq, dtype=causal.dtype), causal], dim=1)
        causal = torch.cat([torch.ones(batch, causal.shape[1], prefix, dtype=causal.dtype), causal], dim=-1)
    return causal * attention_mask[:, None, :]


class LavisBlip2Reference:
    def __init__(self, params, config):
        q = config["qformer_config"]
        assert q.get("hidden_act", "gelu") == "gelu"
        self.p = params
        self.hidden, self.heads = q["hidden_size"], q["num_attention_heads"]
        self.layers, self.freq = q["num_hidden_layers"], q["cross_attention_frequency"]
        self.eps, self.pad = q["layer_norm_eps"], q.get("pad_token_id", 0)
        self.vocab, self.num_query = q["vocab_size"], config["num_query_tokens"]

    # -- building blocks ---------------------------------------------------------------------
    def linear(self, name, x):
        return F.linear(x, self.p[name + ".weight"], self.p[name + ".bias"])

    def norm(self, name, x):
        return F.layer_norm(x, (self.hidden,), self.p[name + ".weight"], self.p[name + ".bias"], self.eps)

    def embeddings(self, input_ids, query_embeds, past_length):
        """BertEmbeddings: word + absolute position (from past_length), queries first, then LayerNorm."""
        if input_ids is None:
            x = query_embeds
        else:
            positions = torch.arange(past_length, past_length + input_ids.shape[1])
            # padding_idx: the pad row of the word embeddings gets no gradient from the lookup.
            x = (F.embedding(input_ids, self.p["embeddings.word_embeddings.weight"], padding_idx=self.pad)
                 + F.embedding(positions, self.p["embeddings.position_embeddings.weight"])[None])
            if query_embeds is not None:
                x = torch.cat([query_embeds, x], dim=1)
        return self.norm("qformer.layernorm", x)

    def attention(self, prefix, x, mask_add=None, context=None, past=None):
        """BertAttention: BertSelfAttention (keys/values from `context` for cross-attention, or
        after the cached `past` ones) and BertSelfOutput (dense, residual, LayerNorm).
        Returns (output, (keys, values)) as LAVIS's present_key_value."""
        batch, head_dim = x.shape[0], self.hidden // self.heads

        def split(t):
            return t.view(batch, -1, self.heads, head_dim).transpose(1, 2)

        source = x if context is None else context
        k = split(self.linear(prefix + ".attention.key", source))
        v = split(self.linear(prefix + ".attention.value", source))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        q = split(self.linear(prefix + ".attention.query", x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
        if mask_add is not None:
            scores = scores + mask_add
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, -1, self.hidden)
        out = self.norm(prefix + ".output.LayerNorm", self.linear(prefix + ".output.dense", ctx) + x)
        return out, (k, v)

    def feed_forward(self, prefix, x, query):
        """feed_forward_chunk_query (intermediate_query/output_query) or feed_forward_chunk."""
        inner, outer = ("intermediate_query", "output_query") if query else ("intermediate", "output")
        h = F.gelu(self.linear(f"{prefix}.{inner}.dense", x))
        return self.norm(f"{prefix}.{outer}.LayerNorm", self.linear(f"{prefix}.{outer}.dense", h) + x)

    def bert(self, input_ids=None, attention_mask=None, query_embeds=None, image_embeds=None,
             past_key_values=None, is_decoder=False):
        """BertModel.forward -> (last_hidden_state, per-layer self-attention (keys, values))."""
        past_length = past_key_values[0][0].shape[2] - self.num_query if past_key_values is not None else 0
        query_length = query_embeds.shape[1] if query_embeds is not None else 0
        x = self.embeddings(input_ids, query_embeds, past_length)
        batch, length = x.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones(batch, length + past_length, dtype=torch.long)
        if is_decoder:
            mask = lavis_mask01(attention_mask, tuple(input_ids.shape), True, has_query=query_embeds is not None)
        else:
            mask = lavis_mask01(attention_mask, (batch, length), False)
        mask_add = (1.0 - mask[:, None].to(x.dtype)) * MASK_VALUE
        # The image attention mask is all ones (LAVIS's image_atts): no additive term for it.
        presents = []
        for i in range(self.layers):
            prefix = f"qformer.encoder.layer.{i}"
            past = past_key_values[i] if past_key_values is not None else None
            h, present = self.attention(prefix + ".attention", x, mask_add, past=past)
            presents.append(present)
            if query_length > 0:
                hq = h[:, :query_length]
                if i % self.freq == 0:  # only the queries cross-attend, every freq layers
                    hq, _ = self.attention(prefix + ".crossattention", hq, context=image_embeds)
                out = self.feed_forward(prefix, hq, query=True)
                if h.shape[1] > query_length:
                    out = torch.cat([out, self.feed_forward(prefix, h[:, query_length:], query=False)], dim=1)
            else:
                out = self.feed_forward(prefix, h, query=False)
            x = out
        return x, presents

    def lm_logits(self, h):
        """BertOnlyMLMHead with the decoder tied to the word embeddings."""
        t = self.norm("cls.predictions.transform.LayerNorm", F.gelu(self.linear("cls.predictions.transform.dense", h)))
        return F.linear(t, self.p["embeddings.word_embeddings.weight"], self.p["cls.predictions.bias"])

    # -- Blip2Qformer.forward ------------------------------------------------------------------
    def forward(self, image_embeds, input_ids, attention_mask, bos_token_id, neg_image, neg_text, image_ids=None):
        """One process. Returns loss_itc, loss_itm, lm_loss (mean), lm_loss_sum, lm_tokens, sim_i2t, sim_t2i."""
        B, Q = input_ids.shape[0], self.num_query
        query_tokens = self.p["query_tokens"].expand(B, -1, -1)

        # ITC: the image pass (its cache feeds ITG) and the text pass, separately.
        query_output, past_key_values = self.bert(query_embeds=query_tokens, image_embeds=image_embeds)
        image_feats = F.normalize(self.linear("vision_projection", query_output), dim=-1)
        text_output, _ = self.bert(input_ids, attention_mask=attention_mask)
        text_feat = F.normalize(self.linear("text_projection", text_output[:, 0, :]), dim=-1)
        temp = self.p["temp"]
        sim_q2t = torch.matmul(image_feats.unsqueeze(1), text_feat.unsqueeze(-1)).squeeze(-1)  # [B, N, Q]
        sim_i2t = sim_q2t.max(-1).values / temp
        sim_t2q = torch.matmul(text_feat.unsqueeze(1).unsqueeze(1), image_feats.permute(0, 2, 1)).squeeze(2)
        sim_t2i = sim_t2q.max(-1).values / temp
        if image_ids is None:
            targets = torch.arange(B)
            loss_itc = (F.cross_entropy(sim_i2t, targets, label_smoothing=0.1)
                        + F.cross_entropy(sim_t2i, targets, label_smoothing=0.1)) / 2
        else:  # LAVIS's retrieval targets (every same-id pair), smoothed by 0.1
            pos = torch.eq(image_ids.view(-1, 1), image_ids.view(1, -1)).to(sim_i2t.dtype)
            sim_targets = pos / pos.sum(1, keepdim=True)
            sim_targets = 0.9 * sim_targets + 0.1 * torch.ones_like(sim_targets) / sim_targets.size(1)
            loss_itc = (-(F.log_softmax(sim_i2t, 1) * sim_targets).sum(1).mean()
                        - (F.log_softmax(sim_t2i, 1) * sim_targets).sum(1).mean()) / 2

        # ITM: pos, pos, neg texts against pos, neg, pos images; bidirectional with padding.
        text_ids_all = torch.cat([input_ids, input_ids, input_ids[neg_text]])
        text_atts_all = torch.cat([attention_mask, attention_mask, attention_mask[neg_text]])
        query_tokens_itm = self.p["query_tokens"].expand(3 * B, -1, -1)
        attention_mask_all = torch.cat([torch.ones(3 * B, Q, dtype=torch.long), text_atts_all], dim=1)
        image_embeds_all = torch.cat([image_embeds, image_embeds[neg_image], image_embeds])
        output_itm, _ = self.bert(text_ids_all, attention_mask=attention_mask_all, query_embeds=query_tokens_itm,
                                  image_embeds=image_embeds_all)
        logits = self.linear("itm_head", output_itm[:, :Q, :]).mean(dim=1)
        itm_labels = torch.cat([torch.ones(B, dtype=torch.long), torch.zeros(2 * B, dtype=torch.long)])
        loss_itm = F.cross_entropy(logits, itm_labels)

        # ITG: [DEC] first, pad labels ignored, the image pass's cache as past_key_values.
        decoder_input_ids = input_ids.clone()
        decoder_input_ids[:, 0] = bos_token_id
        labels = decoder_input_ids.masked_fill(decoder_input_ids == self.pad, -100)
        query_atts = torch.ones(B, Q, dtype=torch.long)
        lm_output, _ = self.bert(decoder_input_ids, attention_mask=torch.cat([query_atts, attention_mask], dim=1),
                                 past_key_values=past_key_values, is_decoder=True)
        scores = self.lm_logits(lm_output)[:, :-1, :].reshape(-1, self.vocab)
        labels = labels[:, 1:].reshape(-1)
        lm_loss = F.cross_entropy(scores, labels, label_smoothing=0.1)
        lm_loss_sum = F.cross_entropy(scores, labels, label_smoothing=0.1, reduction="sum")
        return dict(loss_itc=loss_itc, loss_itm=loss_itm, lm_loss=lm_loss, lm_loss_sum=lm_loss_sum,
                    lm_tokens=labels.ne(-100).sum(), sim_i2t=sim_i2t, sim_t2i=sim_t2i)
