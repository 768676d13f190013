"""Where a batch-1 decoding step's time goes on a GPU (issue 18), for tessera's generate and
transformers' on a ~1.1B LLaMA in bf16: wall time per token on key lengths the process has not seen
(every real generation) and on lengths it has (plans and heuristics cached), device-busy time,
kernels per token, host time per launch; each with and without SDPA's cuDNN backend in the steps.

    python3 benchmarks/gpu_decode_probe.py [--smoke] [--tokens N]

On an H200 (2026-12-04) both generated at ~50 ms/token in gpu_suite.py, with 1.8 ms of device work
per token: 35 ms of it was cuDNN's attention building a plan for each new key length
(csrc/tessera/nn/step_attention_backend.h), the rest the host launching ~700 kernels per token.
"""
import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import tessera
from gpu_suite import FULL, SMOKE, hf_greedy, llama_pair

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


def measure(name, generate, prompt, tokens, show_tables):
    """generate(prompt_len, n) runs n steps after a prompt_len prompt; prompt_len picks key lengths
    no earlier call used, so the first timed run meets new shapes as a real generation does."""
    generate(prompt, 1)  # the prefill's shapes and one-time set-up
    sync()
    t = time.perf_counter()
    generate(prompt, tokens)
    sync()
    fresh = (time.perf_counter() - t) / tokens
    t = time.perf_counter()
    generate(prompt, tokens)
    sync()
    seen = (time.perf_counter() - t) / tokens
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA else [])) as prof:
        generate(prompt, tokens)
        sync()
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.self_device_time_total for e in kernels) / tokens / 1e3
    count = sum(e.count for e in kernels) / tokens
    launches = [e for e in events if "LaunchKernel" in e.key]
    per_launch = sum(e.cpu_time_total for e in launches) / max(1, sum(e.count for e in launches))
    cudnn = sum(e.count for e in events if "cudnn_attention" in e.key)
    print(f"{name:34s} {fresh * 1e3:8.2f} {seen * 1e3:8.2f} {busy:8.2f} {count:8.0f} {per_launch:8.1f} {cudnn:6d}")
    if show_tables:
        print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
    return fresh


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; runs on the CPU to check the script")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--tables", action="store_true", help="the profiler's op tables too")
    args = ap.parse_args()
    sizes = SMOKE if args.smoke else FULL
    device = torch.device("cuda" if CUDA else "cpu")
    print(f"{torch.cuda.get_device_name(0) if CUDA else 'CPU'}: {launch_us(device):.1f} us per tiny launch, back to back")
    cfg, dtype = sizes["llama"], torch.bfloat16
    torch.manual_seed(0)
    ours, hf = llama_pair(cfg, device, dtype)
    ids = torch.randint(3, cfg["vocab_size"], (1, cfg["max_position_embeddings"]), device=device)

    def tessera_generate(cudnn_steps):
        def run(prompt, n):
            tessera._C.ops.set_step_attention_avoids_cudnn(not cudnn_steps)
            try:
                return ours.generate(ids[:, :prompt], max_new_tokens=n, eos_token_id=[])
            finally:
                tessera._C.ops.set_step_attention_avoids_cudnn(True)
        return run

    def hf_generate(cudnn):
        return lambda prompt, n: hf_greedy(hf, ids[:, :prompt], n, cudnn)

    runs = {"tessera": tessera_generate(False), "tessera, cuDNN in the steps": tessera_generate(True),
            "transformers": hf_generate(True), "transformers, no cuDNN": hf_generate(False)}
    print(f"batch 1, {args.tokens} new tokens; ms/token on new key lengths ('fresh') and seen ones; device-busy"
          f" ms/token; kernels/token; host us per launch call; cuDNN attention calls in one profiled generate")
    print(f"{'':34s} {'fresh':>8s} {'seen':>8s} {'busy':>8s} {'kernels':>8s} {'launch':>8s} {'cudnn':>6s}")
    step = args.tokens + 2
    rates = {}
    with torch.inference_mode():
        for i, (name, fn) in enumerate(runs.items()):
            prompt = sizes["llama_prompt"] // 2 + i * step  # key lengths no earlier run met
            rates[name] = 1 / measure(name, fn, prompt, args.tokens, args.tables)
    base = rates["transformers"]
    print("tokens/s on new lengths against transformers' default:",
          ", ".join(f"{k} {v / base:.2f}x" for k, v in rates.items()))


if __name__ == "__main__":
    main()
