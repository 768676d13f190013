"""Where a batch-1 decoding step's time goes on a GPU (issue 18): launch cost, kernels per token,
device-busy time against wall time, for tessera's generate and transformers' on a ~1.1B LLaMA.

    python3 benchmarks/gpu_decode_probe.py [--smoke]

gpu_suite.py measured both at ~50 ms per token on an H200 (2026-12-04), where the weights' bytes
take ~0.5 ms: this says whether the host (launches, synchronisations) or the device is the limit.
"""
import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import tessera
from gpu_suite import FULL, SMOKE


CUDA = torch.cuda.is_available()


def sync():
    if CUDA:
        torch.cuda.synchronize()


def launch_us(device, n=2000) -> float:
    """Host microseconds per launch of a tiny kernel, back to back (the floor of one kernel's cost)."""
    x = torch.zeros(1, device=device)
    for _ in range(100):
        x.add_(1)
    sync()
    t = time.perf_counter()
    for _ in range(n):
        x.add_(1)
    sync()
    return (time.perf_counter() - t) / n * 1e6


def profile_generate(name, fn, tokens):
    fn(4)  # warm-up
    sync()
    t = time.perf_counter()
    fn(tokens)
    sync()
    wall = (time.perf_counter() - t) / tokens
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn(tokens)
        sync()
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    device_us = sum(e.self_device_time_total for e in kernels) / tokens
    count = sum(e.count for e in kernels) / tokens
    launches = [e for e in events if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")]
    launch_cpu = sum(e.cpu_time_total for e in launches) / max(1, sum(e.count for e in launches))
    syncs = sum(e.count for e in events if "Synchronize" in e.key or e.key == "cudaMemcpyAsync") / tokens
    print(f"{name}: wall {wall * 1e3:.2f} ms/token, device busy {device_us / 1e3:.2f} ms/token, "
          f"{count:.0f} kernels/token, {launch_cpu:.1f} us host per launch call, {syncs:.1f} syncs+copies/token")
    print(events.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=60))
    if CUDA:
        print(events.table(sort_by="self_device_time_total", row_limit=10, max_name_column_width=60))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--tokens", type=int, default=16)
    args = ap.parse_args()
    sizes = SMOKE if args.smoke else FULL
    device = torch.device("cuda" if CUDA else "cpu")  # the CPU only to check the script (--smoke)
    name = torch.cuda.get_device_name(0) if CUDA else "CPU"
    print(f"{name}: {launch_us(device):.1f} us per tiny launch, back to back")
    cfg, dtype = sizes["llama"], torch.bfloat16
    torch.manual_seed(0)
    # Random weights built on the device by transformers (no 1B-parameter init on the host), copied
    # into tessera's model built without its own init, as gpu_suite.py does.
    import transformers

    with torch.device(device):
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg, attn_implementation="sdpa"))
    hf = hf.to(dtype).eval()
    previous = tessera._C.nn.set_init_enabled(False)
    try:
        ours = tessera.LlamaForCausalLM(cfg)
    finally:
        tessera._C.nn.set_init_enabled(previous)
    ours = ours.to(device, dtype).eval()
    ours.load_state_dict(hf.state_dict(), strict=False)
    ids = torch.randint(3, cfg["vocab_size"], (1, sizes["llama_prompt"]), device=device)
    runs = {
        "tessera": lambda n: ours.generate(ids, max_new_tokens=n, eos_token_id=[]),
        "transformers": lambda n: hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                              min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0),
    }
    with torch.inference_mode():
        for name, fn in runs.items():
            profile_generate(name, fn, args.tokens)


if __name__ == "__main__":
    main()
