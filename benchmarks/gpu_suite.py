"""tessera against its references on one GPU, side by side in one run, with ratios (issue 18).

clip_train    CLIP ViT-B/16 train step (forward, contrastive loss, backward, fused AdamW), bf16
              autocast: pairs/s, tessera vs transformers' CLIPModel (same weights) and open_clip
              (same architecture); MFU against the bf16 matmul rate measured in the same run.
vit_infer     ViT-B/16 image tower inference (CLIPVisionModel), bf16 autocast and fp32: img/s vs
              timm vit_base_patch16_224 and transformers' CLIPVisionModel (same weights); MFU.
mae_train     ViT-MAE base train step, bf16 autocast: img/s vs transformers' ViTMAEForPreTraining
              (same weights, same masking noise).
llama_generate  a ~1.1B LLaMA (hidden 2048, 16 layers, GQA 32/8 heads, random weights, bf16 on
              the GPU): greedy generate, prompt 32, 128 new tokens, batch 1 and 8: tokens/s vs
              transformers' LlamaForCausalLM.generate (same weights), as it comes and with SDPA's
              cuDNN backend left out (transformers_no_cudnn, on CUDA); whether the ids agree.
qformer_step  BLIP-2's base Q-Former (12 x 768, 32 queries on 257 ViT-g tokens) train step, bf16
              autocast: samples/s vs transformers' Blip2QFormerModel (same weights).

Timing: warm-up calls, then CUDA events around back-to-back timed calls (perf_counter on the
CPU). A missing reference package leaves its column out and says so. About 2 minutes on an H200.

    python3 benchmarks/gpu_suite.py [--json OUT.json] [--smoke]

--smoke: every benchmark at tiny sizes on whatever device exists (the CPU here), to check the
script itself in well under 2 minutes; its rates mean nothing.
"""
import argparse
import contextlib
import gc
import os
import platform
import tempfile
import time
import traceback

import torch
import torch.nn.functional as F

import tessera

# ---------------------------------------------------------------------------------------- sizes

FULL = dict(
    matmul=8192, matmul_iters=20,
    warmup=3, iters=10,
    clip_model="ViT-B-16", clip_batch=128,
    vit_batch=256,
    mae_model="mae-vit-base-patch16", mae_batch=128,
    llama=dict(vocab_size=32000, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=2048, rms_norm_eps=1e-5,
               bos_token_id=1, eos_token_id=2),
    llama_prompt=32, llama_new=128, llama_batches=(1, 8),
    qformer=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 cross_attention_frequency=2, encoder_hidden_size=1408, use_qformer_text_input=False,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    qformer_queries=32, qformer_image_tokens=257, qformer_batch=32,
)

_TOWER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, hidden_act="gelu")
SMOKE = dict(
    matmul=256, matmul_iters=3,
    warmup=1, iters=2,
    clip_model=dict(projection_dim=32,
                    text_config=dict(_TOWER, vocab_size=49408, max_position_embeddings=16, eos_token_id=49407,
                                     bos_token_id=49406, pad_token_id=0),
                    vision_config=dict(_TOWER, image_size=32, patch_size=8)),
    clip_batch=4,
    vit_batch=4,
    mae_model=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
                   patch_size=8, decoder_hidden_size=48, decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
                   decoder_intermediate_size=96, norm_pix_loss=True),
    mae_batch=4,
    llama=dict(vocab_size=1000, hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2),
    llama_prompt=8, llama_new=8, llama_batches=(1, 8),
    qformer=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 cross_attention_frequency=2, encoder_hidden_size=48, use_qformer_text_input=False,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    qformer_queries=8, qformer_image_tokens=17, qformer_batch=4,
)


# ---------------------------------------------------------------------------------------- timing

class Bench:
    def __init__(self, device: torch.device, sizes: dict):
        self.device, self.s = device, sizes
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def seconds(self, fn, warmup=None, iters=None) -> float:
        """Mean seconds per call of `iters` back-to-back calls after `warmup` calls."""
        warmup = self.s["warmup"] if warmup is None else warmup
        iters = self.s["iters"] if iters is None else iters
        for _ in range(warmup):
            fn()
        self.sync()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / iters
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t) / iters

    def autocast(self, enabled=True):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def adamw(self, model):
        return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)


def matmul_rate(b: Bench) -> float:
    """Measured bf16 matmul FLOP/s (n x n x n), the MFU denominator."""
    n = b.s["matmul"]
    x = torch.randn(n, n, device=b.device, dtype=torch.bfloat16)
    y = torch.randn(n, n, device=b.device, dtype=torch.bfloat16)
    sec = b.seconds(lambda: x @ y, warmup=3, iters=b.s["matmul_iters"])
    return 2 * n ** 3 / sec


def encoder_flops(layers: int, seq: int, width: int, mlp: int) -> float:
    """Forward FLOPs of a transformer encoder (matmuls only: projections, attention, MLP)."""
    per_layer = 2 * seq * 4 * width * width + 2 * 2 * seq * seq * width + 2 * 2 * seq * width * mlp
    return layers * per_layer


def vision_flops(v: dict) -> float:
    patches = (v["image_size"] // v["patch_size"]) ** 2
    return (encoder_flops(v["num_hidden_layers"], patches + 1, v["hidden_size"], v["intermediate_size"])
            + 2 * patches * v.get("num_channels", 3) * v["patch_size"] ** 2 * v["hidden_size"])


def _missing(name: str):
    """None if the package imports, else why not."""
    try:
        __import__(name)
        return None
    except Exception as e:  # ImportError, or a broken install
        return f"{name} not importable ({type(e).__name__}: {e})"


def _hf_from_tessera(model, cls_name: str, device, **kwargs):
    """transformers' class loaded from tessera's save_pretrained folder: the same weights."""
    import transformers

    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        return getattr(transformers, cls_name).from_pretrained(d, attn_implementation="sdpa", **kwargs).to(device)


def _config(spec):
    return tessera.get_model_config(spec) if isinstance(spec, str) else spec


def _free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _result(unit, rates, skipped, **extra):
    ratios = {f"tessera/{k}": rates["tessera"] / v for k, v in rates.items() if k != "tessera" and v > 0}
    return {"unit": unit, "rates": rates, "ratios": ratios, "skipped": skipped, **extra}


# ---------------------------------------------------------------------------------------- benchmarks

def clip_train(b: Bench, peak: float) -> dict:
    cfg = _config(b.s["clip_model"])
    n, t, v = b.s["clip_batch"], cfg["text_config"], cfg["vision_config"]
    torch.manual_seed(0)
    ours = tessera.CLIPModel(cfg)
    models, skipped = {}, {}
    if (why := _missing("transformers")) is None:
        models["transformers"] = _hf_from_tessera(ours, "CLIPModel", b.device)
    else:
        skipped["transformers"] = why
    if (why := _missing("open_clip")) is None:
        import open_clip

        if isinstance(b.s["clip_model"], str):
            oc = open_clip.create_model(b.s["clip_model"])
        else:  # the same tiny architecture in open_clip's spelling
            tower = lambda c: dict(width=c["hidden_size"], layers=c["num_hidden_layers"],  # noqa: E731
                                   mlp_ratio=c["intermediate_size"] / c["hidden_size"])
            oc = open_clip.model.CLIP(embed_dim=cfg["projection_dim"],
                                      vision_cfg=dict(tower(v), image_size=v["image_size"], patch_size=v["patch_size"],
                                                      head_width=v["hidden_size"] // v["num_attention_heads"]),
                                      text_cfg=dict(tower(t), heads=t["num_attention_heads"],
                                                    context_length=t["max_position_embeddings"],
                                                    vocab_size=t["vocab_size"]))
        models["open_clip"] = oc.to(b.device)
    else:
        skipped["open_clip"] = why
    models = {"tessera": ours.to(b.device), **models}
    g = torch.Generator().manual_seed(0)
    px = torch.randn(n, 3, v["image_size"], v["image_size"], generator=g).to(b.device)
    ctx = t["max_position_embeddings"]
    ids = torch.randint(1, t["vocab_size"] - 3, (n, ctx), generator=g)
    ids[:, -1] = t["vocab_size"] - 1  # <|endoftext|>: every library pools there (id and argmax alike)
    ids = ids.to(b.device)
    labels = torch.arange(n, device=b.device)

    def step_fn(lib, model, opt):
        def step():
            with b.autocast():
                if lib == "open_clip":
                    img, txt, scale = model(px, ids)[:3]
                    logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
                    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
                else:
                    loss = model(input_ids=ids, pixel_values=px, return_loss=True).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    rates = {}
    for lib, model in models.items():
        model.train()
        rates[lib] = n / b.seconds(step_fn(lib, model, b.adamw(model)))
    flops = 3 * (vision_flops(v) + encoder_flops(t["num_hidden_layers"], ctx, t["hidden_size"],
                                                 t["intermediate_size"]))  # per pair, forward + backward
    mfu = {lib: r * flops / peak for lib, r in rates.items()}
    return _result("pairs/s", rates, skipped, mfu=mfu, batch=n, precision="bf16 autocast",
                   model=b.s["clip_model"] if isinstance(b.s["clip_model"], str) else "tiny")


def vit_infer(b: Bench, peak: float) -> dict:
    v = _config(b.s["clip_model"])["vision_config"]
    n = b.s["vit_batch"]
    torch.manual_seed(0)
    ours = tessera.CLIPVisionModel(v)
    models, skipped = {}, {}
    if (why := _missing("timm")) is None:
        import timm

        models["timm"] = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0,
                                           img_size=v["image_size"], patch_size=v["patch_size"],
                                           embed_dim=v["hidden_size"], depth=v["num_hidden_layers"],
                                           num_heads=v["num_attention_heads"],
                                           mlp_ratio=v["intermediate_size"] / v["hidden_size"]).to(b.device)
    else:
        skipped["timm"] = why
    if (why := _missing("transformers")) is None:
        models["transformers"] = _hf_from_tessera(ours, "CLIPVisionModel", b.device)
    else:
        skipped["transformers"] = why
    models = {"tessera": ours.to(b.device), **models}
    px = torch.randn(n, 3, v["image_size"], v["image_size"], generator=torch.Generator().manual_seed(0)).to(b.device)
    out = {}
    for prec, on in (("bf16", True), ("fp32", False)):
        rates = {}
        for lib, model in models.items():
            model.eval()

            def run(model=model):
                with torch.inference_mode(), b.autocast(on):
                    model(px)
            rates[lib] = n / b.seconds(run)
        out[prec] = _result("img/s", rates, skipped)
        if prec == "bf16":
            out[prec]["mfu"] = {lib: r * vision_flops(v) / peak for lib, r in rates.items()}
    return {"unit": "img/s", "batch": n, **out}


def mae_train(b: Bench, peak: float) -> dict:
    cfg = _config(b.s["mae_model"])
    n = b.s["mae_batch"]
    torch.manual_seed(0)
    ours = tessera.ViTMAEForPreTraining(cfg)
    models, skipped = {}, {}
    if (why := _missing("transformers")) is None:
        models["transformers"] = _hf_from_tessera(ours, "ViTMAEForPreTraining", b.device)
    else:
        skipped["transformers"] = why
    models = {"tessera": ours.to(b.device), **models}
    c = ours.config
    g = torch.Generator().manual_seed(0)
    px = torch.randn(n, c.get("num_channels", 3), c["image_size"], c["image_size"], generator=g).to(b.device)
    noise = torch.rand(n, (c["image_size"] // c["patch_size"]) ** 2, generator=g).to(b.device)
    rates = {}
    for lib, model in models.items():
        model.train()
        opt = b.adamw(model)

        def step(model=model, opt=opt):
            with b.autocast():
                loss = model(px, noise=noise).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        rates[lib] = n / b.seconds(step)
    return _result("img/s", rates, skipped, batch=n, precision="bf16 autocast")


def llama_pair(cfg: dict, device, dtype):
    """tessera's and transformers' LLaMA with the same random weights: built on the device by
    transformers and copied into tessera's model, built without its own init (no 1B-parameter init
    on the CPU)."""
    import transformers

    with torch.device(device):
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg, attn_implementation="sdpa"))
    hf = hf.to(dtype).eval()
    previous = tessera._C.nn.set_init_enabled(False)
    try:
        ours = tessera.LlamaForCausalLM(cfg)
    finally:
        tessera._C.nn.set_init_enabled(previous)
    ours = ours.to(device, dtype)
    missing, _ = ours.load_state_dict(hf.state_dict(), strict=False)
    if missing:
        raise RuntimeError(f"transformers' LLaMA lacks tessera's weights {missing[:5]}")
    return ours.eval(), hf


def hf_greedy(hf, ids, tokens: int, cudnn: bool = True):
    """transformers' greedy generate of exactly `tokens` new ids (no stop token). cudnn=False leaves
    SDPA's cuDNN backend out, as tessera's decoding steps do (nn/step_attention_backend.h)."""
    context = contextlib.nullcontext()
    if not cudnn:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        context = sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
    with context:
        return hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, min_new_tokens=tokens,
                           do_sample=False, eos_token_id=None, pad_token_id=0)


def llama_generate(b: Bench, peak: float) -> dict:
    cfg = b.s["llama"]
    dtype = torch.bfloat16 if b.cuda else torch.float32
    skipped = {}
    torch.manual_seed(0)
    if (why := _missing("transformers")) is None:
        ours, hf = llama_pair(cfg, b.device, dtype)
        models = {"tessera": ours.eval(), "transformers": hf}
    else:
        skipped["transformers"] = why
        models = {"tessera": tessera.LlamaForCausalLM(cfg).to(b.device, dtype).eval()}
    params = sum(p.numel() for p in models["tessera"].parameters())
    new, prompt = b.s["llama_new"], b.s["llama_prompt"]

    if "transformers" in models and b.cuda:
        # transformers with SDPA's cuDNN backend left out, as tessera's steps leave it out: cuDNN builds
        # a plan per new key length (csrc/tessera/nn/step_attention_backend.h), so this is the fair pair.
        models["transformers_no_cudnn"] = models["transformers"]

    def generate(lib, model, ids, tokens):
        if lib == "tessera":
            return model.generate(ids, max_new_tokens=tokens, eos_token_id=[])
        return hf_greedy(model, ids, tokens, cudnn=lib != "transformers_no_cudnn")

    out = {"unit": "tokens/s", "params": params, "dtype": str(dtype).replace("torch.", ""), "prompt": prompt,
           "new_tokens": new}
    for batch in b.s["llama_batches"]:
        ids = torch.randint(3, cfg["vocab_size"], (batch, prompt), generator=torch.Generator().manual_seed(batch))
        ids = ids.to(b.device)
        rates, results = {}, {}
        with torch.inference_mode():
            for lib, model in models.items():
                generate(lib, model, ids, 4)  # warm-up (kernels, caches)
                b.sync()
                t = time.perf_counter()
                results[lib] = generate(lib, model, ids, new)
                b.sync()
                rates[lib] = batch * new / (time.perf_counter() - t)
        r = _result("tokens/s", rates, skipped)
        if "transformers" in results:
            a, h = results["tessera"], results["transformers"]
            r["same_ids"] = bool(a.shape == h.shape and torch.equal(a, h))
            if a.shape == h.shape:  # bf16 may break a near-tie differently; how far the ids agree
                r["agreeing_prefix_tokens"] = int((a[:, prompt:] == h[:, prompt:]).int().cumprod(1).sum(1).min())
        out[f"batch{batch}"] = r
    return out


def qformer_step(b: Bench, peak: float) -> dict:
    cfg = b.s["qformer"]
    n = b.s["qformer_batch"]
    torch.manual_seed(0)
    ours = tessera.Blip2QFormerModel(cfg)
    models, skipped = {}, {}
    if (why := _missing("transformers")) is None:
        models["transformers"] = _hf_from_tessera(ours, "Blip2QFormerModel", b.device)
    else:
        skipped["transformers"] = why
    models = {"tessera": ours.to(b.device), **models}
    g = torch.Generator().manual_seed(0)
    q = torch.randn(n, b.s["qformer_queries"], cfg["hidden_size"], generator=g).to(b.device)
    image = torch.randn(n, b.s["qformer_image_tokens"], cfg["encoder_hidden_size"], generator=g).to(b.device)
    rates = {}
    for lib, model in models.items():
        model.train()
        opt = b.adamw(model)

        def step(lib=lib, model=model, opt=opt):
            with b.autocast():
                if lib == "tessera":
                    h = model(q, encoder_hidden_states=image).last_hidden_state
                else:
                    h = model(query_embeds=q, encoder_hidden_states=image).last_hidden_state
                loss = h.float().pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        rates[lib] = n / b.seconds(step)
    return _result("samples/s", rates, skipped, batch=n, precision="bf16 autocast")


BENCHMARKS = {"clip_train": clip_train, "vit_infer": vit_infer, "mae_train": mae_train,
              "llama_generate": llama_generate, "qformer_step": qformer_step}


# ---------------------------------------------------------------------------------------- report

def _rows(results):
    """(benchmark, unit, rates, ratios, note) per table row."""
    for name, r in results["benchmarks"].items():
        if "error" in r:
            yield name, "", {}, {}, "ERROR " + r["error"].splitlines()[0][:80]
            continue
        parts = [(k, v) for k, v in r.items() if isinstance(v, dict) and "rates" in v] or [("", r)]
        for sub, p in parts:
            note = []
            if p.get("mfu"):
                note.append("MFU " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in p["mfu"].items()))
            if "same_ids" in p:
                note.append(f"same ids: {p['same_ids']}")
            for lib, why in p.get("skipped", {}).items():
                note.append(f"{lib} skipped: {why.split(' (')[0]}")
            yield f"{name} {sub}".strip(), p["unit"], p["rates"], p["ratios"], "; ".join(note)


def print_table(results):
    print(f"\ndevice: {results['device']}   torch {results['torch']}   "
          f"bf16 matmul: {results['matmul_bf16_tflops']:.3g} TFLOP/s{'   (SMOKE: tiny sizes)' if results['smoke'] else ''}")
    header = f"{'benchmark':26s} {'unit':10s} {'tessera':>10s}  {'references':40s} {'ratios (tessera/ref)':30s} notes"
    print(header)
    print("-" * len(header))
    for name, unit, rates, ratios, note in _rows(results):
        refs = ", ".join(f"{k} {v:.1f}" for k, v in rates.items() if k != "tessera")
        rat = ", ".join(f"{k.split('/')[1]} {v:.2f}x" for k, v in ratios.items())
        ours = f"{rates['tessera']:.1f}" if "tessera" in rates else "-"
        print(f"{name:26s} {unit:10s} {ours:>10s}  {refs:40s} {rat:30s} {note}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", metavar="PATH", help="write the results here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on whatever device exists (checks the script)")
    ap.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="run only these benchmarks")
    args = ap.parse_args()
    t0 = time.time()
    with contextlib.suppress(Exception):  # no weight-loading progress bars in the log
        import transformers

        transformers.logging.disable_progress_bar()
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cpu" and not args.smoke:
        print("warning: no CUDA device; the full sizes on the CPU take very long (use --smoke to check the script)")
    # Benchmarks use the libraries' defaults (no TF32 for fp32 matmuls unless torch enables it).
    b = Bench(device, SMOKE if args.smoke else FULL)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'}, " \
                                                                             f"{torch.get_num_threads()} threads)"
    peak = matmul_rate(b)
    results = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "smoke": args.smoke,
               "matmul_bf16_tflops": peak / 1e12, "matmul_size": b.s["matmul"], "benchmarks": {}}
    print(f"{name}: bf16 matmul {b.s['matmul']}^3: {peak / 1e12:.3g} TFLOP/s")
    for bench_name, fn in BENCHMARKS.items():
        if args.only and bench_name not in args.only:
            continue
        t = time.time()
        try:
            results["benchmarks"][bench_name] = fn(b, peak)
        except Exception as e:  # one failing benchmark does not lose the others' results
            traceback.print_exc()
            results["benchmarks"][bench_name] = {"error": f"{type(e).__name__}: {e}"}
        results["benchmarks"][bench_name].update(device=name, seconds=round(time.time() - t, 1))
        print(f"{bench_name}: {time.time() - t:.1f} s", flush=True)
        _free()
        results["seconds"] = round(time.time() - t0, 1)
        # After every benchmark (atomically): a run stopped at its time limit keeps what it measured.
        if args.json:
            tessera.io.write_json(args.json, results)
    print_table(results)
    print(f"\ntotal {results['seconds']:.0f} s")
    if args.json:
        print(f"wrote {args.json}")
    return 1 if any("error" in r for r in results["benchmarks"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
