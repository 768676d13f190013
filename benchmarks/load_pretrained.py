"""from_pretrained on a ~1.2 GB CLIP checkpoint (ViT-L/14 sizes, 14 vision layers, fp32): peak
memory added by loading (as a multiple of the checkpoint size; goal <= 1.3x) and wall time, tessera
vs transformers' CLIPModel.from_pretrained on the same folder, each in a fresh process."""
import os
import resource
import subprocess
import sys
import tempfile
import time


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _measure(lib: str, folder: str) -> None:
    import torch  # noqa: F401  (imports are not part of the load)

    if lib == "tessera":
        import tessera

        load = tessera.from_pretrained
    else:
        import transformers

        load = transformers.CLIPModel.from_pretrained
    base = _rss_mb()
    t0 = time.perf_counter()
    model = load(folder)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{seconds:.3f} {peak - base:.1f} {sum(p.numel() for p in model.parameters())}")


def main() -> None:
    import torch
    import transformers

    import tessera

    folder = tempfile.mkdtemp(prefix="tessera-load-")
    config = tessera.get_model_config("ViT-L-14")
    config["vision_config"]["num_hidden_layers"] = 14
    torch.manual_seed(0)
    transformers.CLIPModel(transformers.CLIPConfig(**config)).save_pretrained(folder)
    size_mb = os.path.getsize(os.path.join(folder, "model.safetensors")) / 2**20
    results = {}
    for lib in ("tessera", "transformers", "tessera", "transformers"):  # round-robin, best of two
        out = subprocess.run([sys.executable, __file__, lib, folder], capture_output=True, text=True, check=True)
        seconds, added, _ = out.stdout.split()
        best = results.get(lib)
        if best is None or float(seconds) < best[0]:
            results[lib] = (float(seconds), float(added))
    print(f"checkpoint {size_mb:.0f} MiB")
    for lib, (seconds, added) in results.items():
        print(f"{lib:12s} {seconds:6.2f} s   peak memory added {added:7.0f} MiB = {added / size_mb:.2f}x the checkpoint")
    print(f"tessera is {results['transformers'][0] / results['tessera'][0]:.1f}x faster")


if __name__ == "__main__":
    if len(sys.argv) == 3:
        _measure(sys.argv[1], sys.argv[2])
    else:
        main()
