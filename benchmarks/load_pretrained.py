"""from_pretrained on a ~1.2 GB checkpoint, fp32: peak memory added by loading (as a multiple of the
checkpoint size; goal <= 1.3x) and wall time, tessera vs transformers' from_pretrained on the same
folder, each in a fresh process. Models: CLIP (ViT-L/14 sizes, 14 vision layers) and LLaMA
(width 2048, 3 layers, 32000-token vocabulary: 283M parameters); `llama-bf16` is that LLaMA saved
in bf16, which both libraries load in bf16 by default (transformers 5's dtype="auto").

    .venv/bin/python benchmarks/load_pretrained.py [clip|llama|llama-bf16]
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key}")


def _measure(lib: str, folder: str, family: str) -> None:
    import torch  # imported before the clock: imports are not part of the load

    if lib == "tessera":
        import tessera

        load = tessera.from_pretrained
    else:
        import transformers

        load = (transformers.CLIPModel if family == "clip" else transformers.LlamaForCausalLM).from_pretrained
    # The peak from here on: clear_refs resets VmHWM, which ru_maxrss cannot (it kept import-time peaks).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    model = load(folder)
    seconds = time.perf_counter() - t0
    with torch.no_grad():  # read every weight once: mapped pages count from their first touch
        for p in model.parameters():
            p.sum()
    peak = _status_mb("VmHWM")
    assert family != "llama-bf16" or model.dtype == torch.bfloat16, model.dtype
    print(f"{seconds:.3f} {peak - base:.1f} {sum(p.numel() for p in model.parameters())}")


def _write_checkpoint(family: str, folder: str) -> None:
    import torch
    import transformers

    import tessera

    torch.manual_seed(0)
    if family == "clip":
        config = tessera.get_model_config("ViT-L-14")
        config["vision_config"]["num_hidden_layers"] = 14
        transformers.CLIPModel(transformers.CLIPConfig(**config)).save_pretrained(folder)
    else:
        config = transformers.LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5504,
                                          num_hidden_layers=3, num_attention_heads=16, num_key_value_heads=16)
        model = transformers.LlamaForCausalLM(config)
        (model.to(torch.bfloat16) if family == "llama-bf16" else model).save_pretrained(folder)


def main(family: str) -> None:
    folder = tempfile.mkdtemp(prefix="tessera-load-")
    try:
        _run(family, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(family: str, folder: str) -> None:
    _write_checkpoint(family, folder)
    size_mb = os.path.getsize(os.path.join(folder, "model.safetensors")) / 2**20
    results = {}
    for lib in ("tessera", "transformers", "tessera", "transformers"):  # round-robin, best of two
        out = subprocess.run([sys.executable, __file__, lib, folder, family], capture_output=True, text=True,
                             check=True)
        seconds, added, _ = out.stdout.split()
        best = results.get(lib)
        if best is None or float(seconds) < best[0]:
            results[lib] = (float(seconds), float(added))
    print(f"{family} checkpoint {size_mb:.0f} MiB")
    for lib, (seconds, added) in results.items():
        print(f"{lib:12s} {seconds:6.2f} s   peak memory added (load, then every weight read) {added:7.0f} MiB = "
              f"{added / size_mb:.2f}x the checkpoint")
    print(f"tessera is {results['transformers'][0] / results['tessera'][0]:.1f}x faster")


if __name__ == "__main__":
    if len(sys.argv) == 4:
        _measure(sys.argv[1], sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "clip")
