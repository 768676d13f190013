"""BLIP-2's base Q-Former on CPU against transformers' Blip2QFormerModel, same weights, same run:
12 layers x 768, 32 queries cross-attending (every 2nd layer) to 257 image tokens of width 1408
(ViT-g), batch 8. Forward (no grad), a training step (forward + backward), and the peak memory a
training step adds (each library in a fresh process: Linux's VmHWM, and the allocator's live bytes
from the profiler's memory events, which glibc's page retention does not blur). Goals: forward >= 1.2x,
train step >= 1.0x, training peak <= 0.85x transformers'. The peak is measured twice: forward and
backward alone (both libraries must then hold every gradient), and a whole step with AdamW, where
transformers steps after backward as its Trainer does and tessera inside backward
(`optim.in_backward`); both updates are checked equal.

    .venv/bin/python benchmarks/qformer_cpu.py [--batch 8] [--iters 6]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch


CONFIG = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
              cross_attention_frequency=2, encoder_hidden_size=1408, use_qformer_text_input=False,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def load(lib: str, path: str):
    if lib == "tessera":
        import tessera

        return tessera.from_pretrained(path)
    import transformers

    return transformers.Blip2QFormerModel.from_pretrained(path, attn_implementation="sdpa")


def inputs(batch: int):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 32, 768, generator=g), torch.randn(batch, 257, 1408, generator=g)


def run(model, lib, queries, image):
    if lib == "tessera":
        return model(queries, encoder_hidden_states=image).last_hidden_state
    return model(query_embeds=queries, encoder_hidden_states=image).last_hidden_state


def train_step(model, lib, queries, image):
    model.zero_grad(set_to_none=True)
    run(model, lib, queries, image).pow(2).mean().backward()


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def live_peak_mib(step) -> float:
    """The most bytes held at once by tensors allocated during `step` (the profiler's allocation and
    free events in time order), the CPU's counterpart of torch.cuda.max_memory_allocated."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak / 2**20


def adamw(model, in_backward: bool):
    """The trainer's AdamW (fused), stepped after backward or inside it."""
    from tessera.train.config import OptimConfig
    from tessera.train.optim import build_optimizer

    cfg = OptimConfig(lr=1e-4, weight_decay=0.05, grad_clip=0.0, in_backward=in_backward)
    return build_optimizer([{"params": [p for p in model.parameters() if p.requires_grad]}], cfg)


def memory_child(lib: str, path: str, batch: int, optimizer: str) -> None:
    """One training step in this fresh process: prints the peak resident memory it added (MiB)
    over what the process held before it (Linux: the high-water mark is reset first), then the
    live-tensor peak of a second step and the gradients' size. `optimizer`: none (forward and
    backward only), after (AdamW after backward) or in_backward; AdamW's moments exist from a
    first step before the measured ones, as in a run."""
    torch.set_num_threads(os.cpu_count() or 1)
    model = load(lib, path).train()
    queries, image = inputs(batch)
    opt = adamw(model, optimizer == "in_backward") if optimizer != "none" else None
    start = [p.detach().clone() for p in model.parameters()] if opt else []

    def step():
        train_step(model, lib, queries, image)
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    if opt is not None:
        step()
    run(model, lib, queries[:1], image[:1])  # first-call allocations outside the measurement
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    base = _status_mib("VmRSS")
    step()
    rss = _status_mib("VmHWM") - base
    live = live_peak_mib(step)
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None) / 2**20
    update = sum(float((p.detach().double() - s.double()).pow(2).sum()) for p, s in zip(model.parameters(), start))
    print(json.dumps({"rss": rss, "live": live, "grads": grads, "update": update ** 0.5}))


def memory(path: str, batch: int, lib: str, optimizer: str):
    out = subprocess.run([sys.executable, __file__, "--batch", str(batch), "--memory-child", lib, path, optimizer],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("{")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=6, help="interleaved timing rounds")
    ap.add_argument("--memory-child", nargs=3, metavar=("LIB", "PATH", "OPTIMIZER"))
    args = ap.parse_args()
    if args.memory_child:
        lib, path, optimizer = args.memory_child
        return memory_child(lib, path, args.batch, optimizer)
    import tessera

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        tessera.Blip2QFormerModel(CONFIG).save_pretrained(d)
        models = {lib: load(lib, d) for lib in ("tessera", "transformers")}
        queries, image = inputs(args.batch)
        with torch.no_grad():
            a, b = (run(models[lib].eval(), lib, queries, image) for lib in ("tessera", "transformers"))
        params = sum(p.numel() for p in models["tessera"].parameters()) / 1e6
        print(f"threads {torch.get_num_threads()}, Q-Former {params:.0f}M parameters, batch {args.batch}, "
              f"max |difference| {(a - b).abs().max().item():.2e}")
        # Interleaved rounds (transformers, tessera with its oneDNN linear path off, then on), medians:
        # this machine's speed drifts by 10-30 % within a minute, which sequential best-ofs mistake
        # for differences between the libraries.
        import tessera.ops

        cases = {"transformers": (models["transformers"], "transformers", True),
                 "tessera, oneDNN off": (models["tessera"], "tessera", False),
                 "tessera": (models["tessera"], "tessera", True)}
        for name, fn, grad in (("forward", run, False), ("train step", train_step, True)):
            times = {case: [] for case in cases}
            for model, _, _ in cases.values():
                model.train(grad)
            for _ in range(args.iters + 1):  # the first round warms up
                for case, (model, lib, onednn) in cases.items():
                    with tessera.ops.onednn_linear(onednn), torch.set_grad_enabled(grad):
                        t = time.perf_counter()
                        fn(model, lib, queries, image)
                        times[case].append(time.perf_counter() - t)
            med = {case: statistics.median(v[1:]) for case, v in times.items()}
            ref = med["transformers"]
            print(f"{name:10s}: " + ", ".join(f"{case} {t * 1e3:.0f} ms" for case, t in med.items())
                  + f": {ref / med['tessera']:.2f}x ({ref / med['tessera, oneDNN off']:.2f}x with oneDNN off; "
                  f"medians of {args.iters} interleaved rounds)")
        peak = {lib: memory(d, args.batch, lib, "none") for lib in models}
        for key, what in (("rss", "resident (VmHWM)"), ("live", "live tensors")):
            t, r = peak["tessera"][key], peak["transformers"][key]
            print(f"training peak added, forward + backward, {what}: tessera {t:.0f} MiB, transformers {r:.0f} MiB: "
                  f"{t / r:.2f}x")
        print(f"  of which the gradients alone: {peak['tessera']['grads']:.0f} MiB "
              f"({peak['tessera']['grads'] / peak['transformers']['live']:.2f}x transformers' live peak)")
        whole = {case: memory(d, args.batch, lib, opt) for case, lib, opt in
                 (("transformers", "transformers", "after"), ("tessera, AdamW after backward", "tessera", "after"),
                  ("tessera", "tessera", "in_backward"))}
        # Live tensors only: after the first step the resident size mostly reflects which freed
        # pages glibc kept from it, not what the measured step needs.
        ref = whole["transformers"]["live"]
        print("training peak added, step with AdamW, live tensors: " + ", ".join(
            f"{case} {m['live']:.0f} MiB" for case, m in whole.items())
            + f": {whole['tessera']['live'] / ref:.2f}x (goal <= 0.85x; "
            f"{whole['tessera, AdamW after backward']['live'] / ref:.2f}x stepping after backward)")
        updates = [m["update"] for m in whole.values()]
        print("  size of the update: " + ", ".join(f"{u:.6e}" for u in updates)
              + f" (largest relative difference {(max(updates) - min(updates)) / max(updates):.1e})")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"({time.time() - t0:.0f} s)")
