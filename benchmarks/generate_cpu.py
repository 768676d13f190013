"""Text generation on CPU with a ~50M-parameter LLaMA (`llama-50m`, random weights), same run:
1. tessera with the KV cache vs recomputing the whole prefix each step (256 new tokens, goal >= 5x);
2. tessera vs transformers' generate on the same checkpoint, greedy, batch 1 and batch 8
   (goal >= 1.5x at batch 1, where the reference's Python loop costs most);
3. beam search with 4 beams against transformers' (same ids; goal >= 1.0x), and BLIP-2 (greedy
   and 4 beams) into the same LM; sampling through six of transformers' processors and warpers,
   with and without a processor of the caller's own (same ids from the same seed); stop_strings
   (a criterion per token) against transformers' and against tessera without it;
4. prefill (prompt forward) tokens/s, fp32, and bf16 where the CPU has native bf16;
5. the memory roofline of decoding at batch 1: this machine's bandwidth measured in the same run
   (a stream-like copy and a read-only sum over 1 GiB), and each decoder's achieved GB/s (weight
   bytes streamed per token x decoding steps/s, the prompt's forward left out) for fp32 and bf16 weights (`model.to(torch.bfloat16)`),
   tessera and transformers (goals: bf16 >= 1.8x fp32 tokens/s where bf16 is native, >= 70 % of
   the measured bandwidth), and tessera's int8 weight-only decoding (tessera.quantization).

    .venv/bin/python benchmarks/generate_cpu.py [--new 256] [--prompt 32] [--roofline [--size 350m]] [--stop-strings]

`--size 350m` (24 layers x 1024, 335M parameters) shows the roofline where a token's ~0.3 ms of
per-layer work outside the GEMVs no longer weighs against 2 ms of weight streaming.
"""
import argparse
import copy
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import tessera
from tessera.train.hardware import cpu_has_native_bf16

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vit_cpu import timed  # noqa: E402


# llama-50m as named; the larger one only changes its widths and depth.
SIZES = {"50m": {}, "350m": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24,
                                 num_attention_heads=16, num_key_value_heads=16)}


def rate(fn, tokens, iters=1):
    return tokens / timed(fn, iters, warmup=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--roofline", action="store_true", help="only part 5 (bandwidth, fp32 vs bf16 decoding)")
    ap.add_argument("--stop-strings", action="store_true", help="only part 2f (stop_strings against transformers)")
    ap.add_argument("--size", choices=sorted(SIZES), default="50m", help="the LLaMA's size (random weights)")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    import transformers

    config = dict(tessera.get_model_config("llama-50m"), **SIZES[args.size])
    ours = tessera.LlamaForCausalLM(config).eval()
    params = sum(p.numel() for p in ours.parameters()) / 1e6
    print(f"threads {torch.get_num_threads()}, llama-{args.size} ({params:.0f}M parameters), prompt {args.prompt}, "
          f"{args.new} new tokens, native bf16: {cpu_has_native_bf16()}, decode_linear on "
          f"{tessera._C.ops.decode_linear_isa()}")
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        hf = transformers.LlamaForCausalLM.from_pretrained(d, attn_implementation="sdpa").eval()
    greedy = dict(max_new_tokens=args.new, do_sample=False, eos_token_id=[])
    if args.roofline:
        return roofline(ours, hf, args)
    if args.stop_strings:
        return stop_strings(ours, hf, args)

    # 1. KV cache vs recomputing the whole prefix at every step.
    ids = torch.randint(3, 32000, (1, args.prompt))
    cached = rate(lambda: ours.generate(ids, **greedy), args.new)
    recompute = rate(lambda: ours.generate(ids, **greedy, use_cache=False), args.new)
    print(f"tessera batch 1: KV cache {cached:.1f} tokens/s, recomputing the prefix {recompute:.1f} tokens/s: "
          f"{cached / recompute:.1f}x (goal >= 5x)")

    # 2. vs transformers, same checkpoint, greedy.
    for batch in (1, 8):
        ids = torch.randint(3, 32000, (batch, args.prompt))
        a = ours.generate(ids, **greedy)
        b = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new, do_sample=False,
                        eos_token_id=None, pad_token_id=0)
        same = torch.equal(a, b)
        t = rate(lambda: ours.generate(ids, **greedy), batch * args.new)
        r = rate(lambda: hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new,
                                     do_sample=False, eos_token_id=None, pad_token_id=0), batch * args.new)
        print(f"batch {batch}: tessera {t:.1f} tokens/s, transformers {r:.1f} tokens/s: {t / r:.2f}x "
              f"(same ids: {same}; goal >= 1.5x at batch 1)")

    # 2b. A tiny model (the test fixture's size), where the per-token overhead is what remains.
    tiny_cfg = dict(config, hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=1000)
    tiny = tessera.LlamaForCausalLM(tiny_cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        tiny.save_pretrained(d)
        tiny_hf = transformers.LlamaForCausalLM.from_pretrained(d, attn_implementation="sdpa").eval()
    ids = torch.randint(3, 1000, (1, args.prompt))
    t = rate(lambda: tiny.generate(ids, **greedy), args.new)
    r = rate(lambda: tiny_hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new,
                                      do_sample=False, eos_token_id=None, pad_token_id=0), args.new)
    print(f"tiny model (0.2M parameters) batch 1: tessera {t:.0f} tokens/s, transformers {r:.0f} tokens/s: "
          f"{t / r:.2f}x")

    # 2c. Beam search (4 beams), same checkpoint: ids and speed against transformers.
    ids = torch.randint(3, 32000, (1, args.prompt))
    beams = dict(max_new_tokens=min(args.new, 64), num_beams=4, eos_token_id=[5, 7], pad_token_id=0)
    a = ours.generate(ids, **beams)
    b = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **beams)
    new = a.shape[1] - args.prompt
    t = rate(lambda: ours.generate(ids, **beams), new)
    r = rate(lambda: hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **beams), new)
    print(f"beam search (4 beams, {new} new tokens): tessera {t:.1f} tokens/s, transformers {r:.1f} tokens/s: "
          f"{t / r:.2f}x (same ids: {torch.equal(a, b)}; goal >= 1.0x)")

    # 2d. BLIP-2 (a small tower and Q-Former, 32 queries, into llama-50m): greedy and 4 beams.
    blip2 = tessera.Blip2ForConditionalGeneration(dict(
        vision_config=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                           image_size=64, patch_size=16),
        qformer_config=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4),
        text_config=dict(config, model_type="llama"), num_query_tokens=32, image_token_index=31999)).eval()
    with tempfile.TemporaryDirectory() as d:
        blip2.save_pretrained(d)
        blip2_hf = transformers.Blip2ForConditionalGeneration.from_pretrained(d, attn_implementation="sdpa").eval()
    px = torch.randn(1, 3, 64, 64)
    ids = torch.cat([torch.full((1, 32), 31999), torch.randint(3, 31000, (1, 8))], 1)
    for label, extra in (("greedy", {}), ("4 beams", dict(num_beams=4))):
        kw = dict(max_new_tokens=min(args.new, 64), eos_token_id=[5, 7], pad_token_id=0, **extra)
        a = blip2.generate(px, ids, **kw)
        b = blip2_hf.generate(pixel_values=px, input_ids=ids, do_sample=False, **kw)
        new = a.shape[1] - ids.shape[1]
        t = rate(lambda: blip2.generate(px, ids, **kw), new)
        r = rate(lambda: blip2_hf.generate(pixel_values=px, input_ids=ids, do_sample=False, **kw), new)
        print(f"BLIP-2 {label} ({new} new tokens): tessera {t:.1f} tokens/s, transformers {r:.1f} tokens/s: "
              f"{t / r:.2f}x (same ids: {torch.equal(a, b)})")

    # 2e. Sampling through transformers' processors and warpers (C++), and with a processor of the
    # caller's own (a Python call per token): ids from the same seed, and speed.
    ids = torch.randint(3, 32000, (1, args.prompt))
    rules = dict(max_new_tokens=min(args.new, 128), do_sample=True, top_k=0, min_p=0.02, typical_p=0.95,
                 no_repeat_ngram_size=3, repetition_penalty=1.1, suppress_tokens=[0, 1], eos_token_id=None,
                 pad_token_id=0)
    own = [transformers.TopKLogitsWarper(100)]  # a processor object, called from C++ each step
    for label, extra in (("settings", {}), ("settings + own processor", dict(logits_processor=own))):
        a = ours.generate(ids, generator=torch.Generator().manual_seed(0), **rules, **extra)
        torch.manual_seed(0)
        b = hf.generate(ids, attention_mask=torch.ones_like(ids), **rules, **extra)
        t = rate(lambda: ours.generate(ids, generator=torch.Generator().manual_seed(0), **rules, **extra),
                 rules["max_new_tokens"])
        r = rate(lambda: hf.generate(ids, attention_mask=torch.ones_like(ids), **rules, **extra), rules["max_new_tokens"])
        print(f"sampling with 6 processors ({label}): tessera {t:.1f} tokens/s, transformers {r:.1f} tokens/s: "
              f"{t / r:.2f}x (same ids: {torch.equal(a, b)})")

    # 2f. Stop strings.
    stop_strings(ours, hf, args)

    # 3. Prefill.
    ids = torch.randint(3, 32000, (4, 512))
    for prec in ["fp32"] + (["bf16"] if cpu_has_native_bf16() else []):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
            t = rate(lambda: ours(ids, logits_to_keep=1), ids.numel(), iters=2)
            r = rate(lambda: hf(ids, logits_to_keep=1), ids.numel(), iters=2)
        print(f"prefill 4x512 {prec}: tessera {t:.0f} tokens/s, transformers {r:.0f} tokens/s: {t / r:.2f}x")

    # 5. The memory roofline at batch 1.
    roofline(ours, hf, args)


def stop_strings(ours, hf, args):
    """Stop strings (a Python criterion per token, as transformers' StopStringCriteria): two strings
    that never occur, so both run the full length; transformers' tokenizer on both sides."""
    import transformers

    spm = Path(__file__).resolve().parents[2] / "shared" / "assets" / "llama2c_tokenizer.model"
    if spm.is_file():
        with tempfile.TemporaryDirectory() as d:
            shutil.copy(spm, os.path.join(d, "tokenizer.model"))
            Path(d, "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}')
            tok = transformers.AutoTokenizer.from_pretrained(d)
        for batch in (1, 8):
            ids = torch.randint(3, 32000, (batch, args.prompt))
            kw = dict(max_new_tokens=min(args.new, 128), eos_token_id=None, pad_token_id=0,
                      stop_strings=["\u2603\u2603\u2603", "zqxzqx"], tokenizer=tok)
            a = ours.generate(ids, **kw)
            b = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kw)
            plain = rate(lambda: ours.generate(ids, max_new_tokens=kw["max_new_tokens"], eos_token_id=[]),
                         batch * kw["max_new_tokens"])
            t = rate(lambda: ours.generate(ids, **kw), batch * kw["max_new_tokens"])
            r = rate(lambda: hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kw),
                     batch * kw["max_new_tokens"])
            print(f"stop_strings (2 strings, batch {batch}): tessera {t:.1f} tokens/s ({t / plain:.2f}x of without), "
                  f"transformers {r:.1f} tokens/s: {t / r:.2f}x (same ids: {torch.equal(a, b)})")


def step_rate(generate, new: int, best_of: int = 3) -> float:
    """Decoding steps per second without the prompt's forward: (time of 1 + new tokens - time
    of 1 token) / new, each the best of `best_of` runs: the estimator `read_rate` uses for the read
    rate it is compared with, so that the ratio compares like with like."""
    once = timed(lambda: generate(1), best_of, warmup=0)
    return new / (timed(lambda: generate(new + 1), best_of, warmup=0) - once)


def streamed_bytes(model) -> int:
    """Weight bytes one decoding step reads: every parameter but the input embedding (one row
    is gathered), which counts when it is also the LM head (tied)."""
    params = dict(model.named_parameters())
    embed = next(k for k in params if k.endswith("embed_tokens.weight"))
    tied = not any(k.endswith("lm_head.weight") for k in params)
    return sum(p.numel() * p.element_size() for k, p in params.items() if k != embed or tied)


def bandwidth(a) -> dict:
    """GB/s of a copy of `a` (read + write counted) and of a read-only sum over it, best of 3."""
    b = torch.empty_like(a)
    copy = min(timed(lambda: b.copy_(a), 1, warmup=1) for _ in range(3))
    return {"copy": 2 * a.numel() * 4 / copy / 1e9, "read": read_rate(a)}


def read_rate(a) -> float:
    """GB/s of a read-only sum over `a`, best of 3."""
    return a.numel() * 4 / min(timed(lambda: a.sum(), 1, warmup=1) for _ in range(3)) / 1e9


def median_range(values) -> str:
    v = sorted(values)
    return f"{statistics.median(v):.2f}x ({v[0]:.2f}-{v[-1]:.2f})"


def roofline(ours, hf, args, rounds: int = 5):
    """Every decoder once per round, the rounds interleaved, so that this VM's drifting memory
    rate (30-50 GB/s for the same sum) moves them together: medians over the rounds, and each
    ratio taken within a round."""
    from tessera.quantization import int8_decoding

    ids = torch.randint(3, 32000, (1, args.prompt))
    greedy = dict(max_new_tokens=args.new, do_sample=False, eos_token_id=[])
    mine = {"fp32": ours, "bf16": copy.deepcopy(ours).to(torch.bfloat16), "int8": copy.deepcopy(ours)}
    int8_decoding(mine["int8"])
    ref = {"fp32": hf, "bf16": copy.deepcopy(hf).to(torch.bfloat16)}
    nbytes = {"fp32": streamed_bytes(ours), "bf16": streamed_bytes(mine["bf16"]), "int8": int8_bytes(ours)}
    runs = {k: (lambda n, m=m: m.generate(ids, **dict(greedy, max_new_tokens=n))) for k, m in mine.items()}
    runs.update({"hf " + k: (lambda n, m=m: m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                                          do_sample=False, eos_token_id=None, pad_token_id=0))
                 for k, m in ref.items()})
    runs["bf16 modules"] = lambda n: modules_only(lambda: runs["bf16"](n))  # without nn::decode_layer
    for run in runs.values():
        run(2)
    # This VM's read rate moves within seconds (30-53 GB/s for the same sum in one run), so each
    # decoder is compared with a read measured right before it.
    rates, reads, buffer = {k: [] for k in runs}, {k: [] for k in runs}, torch.ones(2 ** 28)
    bw = bandwidth(buffer)
    print(f"1 GiB stream-like copy {bw['copy']:.1f} GB/s (read + write), read-only sum {bw['read']:.1f} GB/s")
    for _ in range(rounds):
        for k, run in runs.items():
            reads[k].append(read_rate(buffer))
            rates[k].append(step_rate(run, args.new))
    del buffer
    every = [r for v in reads.values() for r in v]
    print(f"memory bandwidth, read-only sum over 1 GiB right before each decoder: {min(every):.1f}-{max(every):.1f} "
          f"GB/s over {rounds} rounds; each decoder once per round, medians (range)")
    ids_of = {k: mine[k].generate(ids, **greedy) for k in mine}
    assert torch.equal(modules_only(lambda: mine["bf16"].generate(ids, **greedy)), ids_of["bf16"])
    for k in mine:
        gbs = [t * nbytes[k] / 1e9 for t in rates[k]]
        share = [g / r for g, r in zip(gbs, reads[k])]
        hf_part = ""
        if "hf " + k in rates:
            hf_part = (f"; transformers {statistics.median(rates['hf ' + k]):.1f} tokens/s, tessera "
                       + median_range([a / b for a, b in zip(rates[k], rates["hf " + k])]))
        same = (ids_of[k] == ids_of["fp32"])[0, args.prompt:].float().mean().item()
        print(f"decode {k} batch 1: tessera {statistics.median(rates[k]):.1f} tokens/s = "
              f"{statistics.median(gbs):.1f} GB/s = {100 * statistics.median(share):.0f} % "
              f"({100 * min(share):.0f}-{100 * max(share):.0f}) of the read rate before it{hf_part}; "
              f"{nbytes[k] / 2**20:.0f} MiB per token" + ("" if k == "fp32" else f"; new ids equal to fp32's "
                                                          f"position by position: {100 * same:.0f} %"))
    print("bf16, the fused decoding layer / the same step through the layer's modules (same ids): "
          + median_range([a / b for a, b in zip(rates["bf16"], rates["bf16 modules"])]))
    for k in ("bf16", "int8"):
        print(f"{k} / fp32 tokens/s: tessera " + median_range([a / b for a, b in zip(rates[k], rates["fp32"])])
              + ("" if k == "int8" else ", transformers "
                 + median_range([a / b for a, b in zip(rates["hf bf16"], rates["hf fp32"])])
                 + f" (goal >= 1.8x where bf16 is native: {cpu_has_native_bf16()})"))
    print("(a greedy sequence follows another only up to its first differing id: with random weights the logits"
          " are near-ties, and any change of rounding moves that point)")


def modules_only(fn):
    """fn() with every decoding step through the layers' modules (nn::decode_layer off)."""
    tessera._C.ops.set_fused_decoding_enabled(False)
    try:
        return fn()
    finally:
        tessera._C.ops.set_fused_decoding_enabled(True)


def int8_bytes(model) -> int:
    """What an int8 decoding step reads: each linear weight as int8 plus a scale per row; the
    rest as streamed_bytes counts it."""
    params = dict(model.named_parameters())
    linear = {k for k, p in params.items() if p.dim() == 2 and not k.endswith("embed_tokens.weight")}
    return streamed_bytes(model) - sum(params[k].numel() * params[k].element_size() - params[k].numel()
                                       - 4 * params[k].shape[0] for k in linear)


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"({time.time() - t0:.0f} s)")
